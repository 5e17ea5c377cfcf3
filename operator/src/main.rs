//! `caplab-operator`: runs the controller, or checks an operator's health.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{predicates, reflector, watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

use caplab_operator::controller::{self, Context};
use caplab_operator::crd::RegisterCluster;
use caplab_operator::lease::LeaseLock;
use caplab_operator::member_client::MemberClient;
use caplab_operator::metrics::Metrics;
use caplab_operator::resources::LABEL_CLUSTER;
use caplab_operator::telemetry::{self, LogFormat};

const LEASE_NAME: &str = "caplab-operator";
const LEASE_SECS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "caplab-operator",
    version,
    about = "Operator for caplab RegisterClusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Default member image.
    #[arg(long, env = "CAPLAB_NODE_IMAGE", default_value = "caplab/node:0.1.0")]
    node_image: String,
    /// Image of the `caplab` CLI that runs experiments (`spec.workload`) as Jobs.
    #[arg(long, env = "CAPLAB_CLI_IMAGE", default_value = "caplab/cli:0.1.0")]
    cli_image: String,
    /// Address for /metrics, /healthz, /readyz.
    #[arg(long, env = "CAPLAB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Leader election through a Lease (default: on when running in a pod).
    #[arg(long, env = "CAPLAB_LEADER_ELECTION", action = clap::ArgAction::Set)]
    leader_election: Option<bool>,
    /// Log format.
    #[arg(long, env = "CAPLAB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the operator (the default).
    Run,
    /// Exit 0 when the URL answers 200 (for probes and `helm test`).
    Check {
        /// URL to fetch.
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(
    State(s): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.cmd {
        Some(Cmd::Check { ref url }) => check(url).await,
        _ => run(cli).await,
    }
}

async fn check(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building HTTP client")?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        bail!("GET {url}: {}", resp.status());
    }
    println!("{url}: {}", resp.status());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    info!(listen = %cli.listen, "serving /metrics, /healthz, /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = res {
            error!(error = %e, "HTTP server failed");
        }
    });

    let client = Client::try_default()
        .await
        .context("building Kubernetes client")?;
    // Readiness: the CRD is served and we can list it.
    let rcs: Api<RegisterCluster> = Api::all(client.clone());
    loop {
        match rcs.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "cannot list RegisterClusters yet (is the CRD installed?)");
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
    }
    ready.store(true, Ordering::Relaxed);

    // Leader election.
    let namespace = std::env::var("POD_NAMESPACE").ok();
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("caplab-operator-{}", std::process::id()));
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").is_ok();
    let want_election = cli.leader_election.unwrap_or(in_cluster);
    let lock = match (want_election, namespace) {
        (true, Some(ns)) => Some(Arc::new(LeaseLock::new(
            client.clone(),
            &ns,
            LEASE_NAME,
            &identity,
            LEASE_SECS,
        ))),
        (true, None) => {
            warn!("leader election requested but POD_NAMESPACE is unset: running without it");
            None
        }
        (false, _) => None,
    };
    let mut shutdown = Box::pin(shutdown_signal());
    if let Some(lock) = &lock {
        info!(%identity, "waiting for the leader lease");
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    let _ = server.await;
                    return Ok(());
                }
                r = lock.try_acquire_or_renew() => match r {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "lease acquisition failed"),
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        info!(%identity, "acquired the leader lease");
        metrics.leader.set(1);
        let lock = lock.clone();
        let tx = stop_tx.clone();
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match lock.try_acquire_or_renew().await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => {
                        error!("lost the leader lease");
                        let _ = tx.send(true);
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, "lease renewal failed");
                        if last_ok.elapsed()
                            > Duration::from_secs(u64::try_from(LEASE_SECS).unwrap_or(15))
                        {
                            error!("could not renew the leader lease in time");
                            let _ = tx.send(true);
                            return;
                        }
                    }
                }
            }
        });
    } else {
        metrics.leader.set(1);
    }

    let reporter = Reporter {
        controller: "caplab-operator".into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        members: MemberClient::new().context("building member client")?,
        node_image: cli.node_image.clone(),
        cli_image: cli.cli_image.clone(),
        written: Default::default(),
        backoff: Default::default(),
        announced: Default::default(),
    });

    let (reader, writer) = reflector::store();
    let (live, memory) = (reader.clone(), ctx.clone());
    let trigger = watcher(rcs, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        // The store already holds the event: what it no longer holds was deleted.
        .inspect_ok(move |_| memory.forget_deleted(&live.state()))
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let pods: Api<Pod> = Api::all(client.clone());
    let mut stop_ctrl = stop_tx.subscribe();
    let lost = async move {
        let _ = stop_ctrl.wait_for(|s| *s).await;
    };
    let stop_all = stop_tx.clone();
    let stop_signal = async move {
        tokio::select! {
            _ = shutdown => {},
            _ = lost => {},
        }
        let _ = stop_all.send(true);
    };
    info!(node_image = %cli.node_image, "starting controller");
    Controller::for_stream(trigger, reader)
        .owns(pods, watcher::Config::default().labels(LABEL_CLUSTER))
        .graceful_shutdown_on(stop_signal)
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    info!("controller stopped");
    let _ = stop_tx.send(true);
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            warn!(error = %e, "releasing the lease failed");
        }
    }
    let _ = server.await;
    Ok(())
}
