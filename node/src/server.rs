//! Starts a member: storage, the replication engine, both listeners; stops it gracefully on SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ReplicationSettings};
use crate::election::ElectionTiming;
use crate::faults::Faults;
use crate::identity::{load_or_create_incarnation, Identity};
use crate::member::{Engine, Member};
use crate::metrics::Metrics;
use crate::network::{AddressBook, Network, PeerClient};
use crate::primary::PrimaryEngine;
use crate::quorum::QuorumEngine;
use crate::raft_engine::RaftEngine;
use crate::twopc::TwoPcEngine;
use crate::types::Raft;
use crate::{api, store};

/// A running member with its bound addresses (useful when listening on port 0).
pub struct Running {
    pub member: Arc<Member>,
    pub client_addr: std::net::SocketAddr,
    pub peer_addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let token = config.admin_token()?;
    // Every flag combination is refused before anything is written to the data directory.
    let settings = config.replication_settings()?;
    config.check_data_dir()?;
    let metrics = Arc::new(Metrics::default());
    let faults = Arc::new(Faults::new(&metrics));
    let identity = Identity {
        cluster: config.cluster_id.clone(),
        id: config.id,
        incarnation: load_or_create_incarnation(&config.data_dir)?,
    };
    let peers = Arc::new(PeerClient::new(
        identity,
        token,
        AddressBook::default(),
        faults.clone(),
    ));
    let engine = open_engine(config, settings, &peers, &metrics).await?;
    let member = Arc::new(Member {
        id: config.id,
        engine,
        faults,
        peers,
        metrics,
        request_timeout: config.request_timeout(),
    });

    let client = TcpListener::bind(config.client_listen)
        .await
        .with_context(|| format!("binding the client port {}", config.client_listen))?;
    let peer = TcpListener::bind(config.peer_listen)
        .await
        .with_context(|| format!("binding the peer port {}", config.peer_listen))?;
    let (shutdown, _) = watch::channel(false);
    let running = Running {
        member: member.clone(),
        client_addr: client.local_addr()?,
        peer_addr: peer.local_addr()?,
        tasks: vec![
            serve(
                client,
                api::client::router(member.clone()),
                shutdown.subscribe(),
            ),
            serve(
                peer,
                api::peer::router(member.clone()),
                shutdown.subscribe(),
            ),
            tokio::spawn(watch_leader(member)),
        ],
        shutdown,
    };
    tracing::info!(id = config.id, client = %running.client_addr, peer = %running.peer_addr, "member started");
    Ok(running)
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // Replies are small: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "listener failed");
        }
    })
}

/// Opens the replication engine `settings` describe on the data directory.
async fn open_engine(
    config: &Config,
    settings: ReplicationSettings,
    peers: &Arc<PeerClient>,
    metrics: &Metrics,
) -> anyhow::Result<Engine> {
    let opening = || format!("opening {}", config.data_dir.display());
    let dir = &config.data_dir;
    Ok(match settings {
        ReplicationSettings::Raft { raft, timing } => {
            Engine::Raft(start_raft(config, raft, timing, peers).await?)
        }
        ReplicationSettings::Primary(mode) => Engine::Primary(
            PrimaryEngine::open(
                config.id,
                mode,
                dir,
                peers.clone(),
                config.heartbeat(),
                config.snapshot_logs,
            )
            .with_context(opening)?,
        ),
        ReplicationSettings::Quorum(quorum) => Engine::Quorum(
            QuorumEngine::open(
                config.id,
                quorum,
                dir,
                peers.clone(),
                metrics.quorum.clone(),
            )
            .with_context(opening)?,
        ),
        ReplicationSettings::TwoPc(twopc) => Engine::TwoPc(
            TwoPcEngine::open(config.id, dir, peers.clone(), metrics.twopc.clone(), twopc)
                .with_context(opening)?,
        ),
    })
}

/// Opens the Raft log and state machine and starts openraft with the validated `raft` and
/// `timing`.
async fn start_raft(
    config: &Config,
    raft: openraft::Config,
    timing: ElectionTiming,
    peers: &Arc<PeerClient>,
) -> anyhow::Result<RaftEngine> {
    let (log_store, state_machine) = store::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let log = log_store.clone();
    let state = state_machine.shared();
    let raft = Raft::new(
        config.id,
        Arc::new(raft),
        Network(peers.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;
    Ok(RaftEngine::new(
        raft,
        state,
        log,
        peers.clone(),
        config.request_timeout(),
        timing,
        config.snapshot_logs,
    ))
}

/// Logs leader changes and counts them in the metrics.
async fn watch_leader(member: Arc<Member>) {
    let Engine::Raft(raft) = &member.engine else {
        return;
    };
    let mut rx = raft.raft.metrics();
    let mut last = (None, 0);
    while rx.changed().await.is_ok() {
        let now = {
            let m = rx.borrow();
            (m.current_leader, m.current_term)
        };
        if now.0 != last.0 {
            member.metrics.leader_changes.inc();
            tracing::info!(leader = ?now.0, term = now.1, previous = ?last.0, "leader changed");
        }
        last = now;
    }
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        if let Engine::Raft(raft) = &self.member.engine {
            if let Err(e) = raft.raft.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown");
            }
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}
