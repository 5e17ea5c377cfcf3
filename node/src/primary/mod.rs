//! Primary–secondary replication, asynchronous or synchronous.
//!
//! The primary orders every change with a sequence number, makes it durable (group commit:
//! one fsync per batch of concurrent writes) and streams the change log to each secondary,
//! which appends it durably and applies it strictly in order. Every message carries the
//! primary's epoch: a member that hears of a newer epoch stops acting as primary, and a
//! rejoining member drops the entries the new primary never had, counting them as discarded
//! (in async mode those were acknowledged to clients: that is the lesson). Entries every
//! member has acknowledged are compacted into a snapshot (see `log.rs`).
//!
//! Layout: `writer` (the primary's write path and reads), `replicator` (shipping the log to
//! secondaries, acknowledgements), `follower` (a secondary applying it), `roles` (init,
//! promote, switchover, follow, member set, fencing), `status`; `log` is the in-memory change
//! log over `store` (durable: a write-ahead log file), both over `entries`; `wire` holds the peer messages.

mod entries;
mod error;
mod follower;
mod log;
mod redb_import;
mod replicator;
mod roles;
mod status;
mod store;
mod wire;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use entries::LogEntry;
use error::store_error;
pub use error::{PrimaryError, PrimaryResult};
use log::ChangeLog;
pub use store::Role;
use store::{Change, Meta, Store, StoreError};
pub use wire::{EpochView, ReplicateRequest, ReplicateResponse};
use writer::{WriteRequest, GROUP_COMMIT};

use crate::data_files;
use crate::engine::{Consistency, ReplicationEngine};
use crate::network::PeerClient;
use crate::types::{Command, Node, NodeId};
use caplab_api::status::{EngineStatus, Replication};

/// Heartbeats a replication round may take before it is abandoned and retried: a round trip
/// to a secondary under an injected delay (one delay each way) must still fit.
const ROUND_DEADLINE_HEARTBEATS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Async,
    Sync,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    match_seq: u64,
    next_seq: u64,
    last_contact: Option<Instant>,
}

struct State {
    meta: Meta,
    log: ChangeLog,
    progress: BTreeMap<NodeId, Progress>,
    /// A planned switchover to this member is under way: new writes go to it.
    handing_over: Option<NodeId>,
    /// This member was the primary when it stopped: it serves nothing until a majority of
    /// the members confirmed no newer epoch exists (or the operator promotes it), since a
    /// failover may have happened while it was down.
    fenced: bool,
}

impl State {
    fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    /// The last entry every secondary acknowledged (as far as this primary knows).
    fn stable_seq(&self, me: NodeId) -> u64 {
        self.secondaries(me)
            .map(|id| self.progress.get(&id).map_or(0, |p| p.match_seq))
            .min()
            .unwrap_or_else(|| self.last_seq())
    }

    fn secondaries(&self, me: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.meta
            .members
            .iter()
            .copied()
            .filter(move |id| *id != me)
    }

    fn redirect(&self) -> PrimaryError {
        PrimaryError::NotPrimary {
            primary: self.handing_over.or(self.meta.primary),
        }
    }

    /// Ok when this member serves as the primary now; else a redirect, or a refusal while
    /// it is fenced.
    fn serving(&self) -> PrimaryResult<()> {
        if self.meta.role != Role::Primary || self.handing_over.is_some() {
            return Err(self.redirect());
        }
        if self.fenced {
            return Err(self.fence_error());
        }
        Ok(())
    }

    fn fence_error(&self) -> PrimaryError {
        PrimaryError::Fenced {
            epoch: self.meta.epoch,
        }
    }
}

pub struct PrimaryEngine {
    id: NodeId,
    mode: Mode,
    store: Store,
    state: Mutex<State>,
    peers: Arc<PeerClient>,
    heartbeat: Duration,
    /// Compact the change log once this many stable entries are past the snapshot.
    compact_every: u64,
    writes: mpsc::Sender<WriteRequest>,
    /// Bumped whenever the log grows or a secondary acknowledges: wakes replicators and
    /// synchronous writers.
    changed: watch::Sender<u64>,
    replicators: std::sync::Mutex<BTreeMap<NodeId, JoinHandle<()>>>,
}

impl PrimaryEngine {
    pub fn open(
        id: NodeId,
        mode: Mode,
        data_dir: &Path,
        peers: Arc<PeerClient>,
        heartbeat: Duration,
        compact_every: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let legacy = data_dir.join(data_files::LEGACY_PRIMARY_STORE);
        let store = Store::open(&data_dir.join(data_files::PRIMARY_STORE), || {
            redb_import::read(&legacy)
        })?;
        redb_import::set_aside(&legacy)?;
        let (meta, snapshot, log) = store.load();
        peers.addresses.merge(meta.addresses.clone());
        let state = State {
            fenced: meta.role == Role::Primary,
            meta,
            log: ChangeLog::new(snapshot, log),
            progress: BTreeMap::new(),
            handing_over: None,
        };
        let (writes, queue) = mpsc::channel(GROUP_COMMIT * 4);
        let engine = Arc::new(Self {
            id,
            mode,
            store,
            state: Mutex::new(state),
            peers,
            heartbeat,
            compact_every,
            writes,
            changed: watch::channel(0).0,
            replicators: Default::default(),
        });
        tokio::spawn(Self::group_commit(Arc::downgrade(&engine), queue));
        let resume = engine.clone();
        tokio::spawn(async move { resume.restart_replication().await });
        Ok(engine)
    }

    fn replication(&self) -> Replication {
        match self.mode {
            Mode::Async => Replication::Async,
            Mode::Sync => Replication::Sync,
        }
    }

    fn reload(&self, state: &mut State) {
        let (meta, snapshot, log) = self.store.load();
        state.meta = meta;
        state.log = ChangeLog::new(snapshot, log);
    }

    /// Folds the entries up to `stable` into the snapshot once enough of them piled up
    /// (failures are logged: the entries stay, which is only less compact).
    async fn compact(&self, state: &mut State, stable: u64) {
        if stable < state.log.base().seq.saturating_add(self.compact_every) {
            return;
        }
        let Some(snapshot) = state.log.compact_to(stable) else {
            return;
        };
        let change = Change {
            snapshot: Some(snapshot),
            ..Change::default()
        };
        match self.store.commit(change).await {
            Ok(()) => tracing::debug!(seq = stable, "compacted the change log"),
            Err(e) => tracing::error!(error = %e, "cannot record the compacted change log"),
        }
    }

    /// Makes `change` durable; after a failure it may or may not take effect.
    async fn commit(&self, change: Change) -> PrimaryResult<()> {
        self.store.commit(change).await.map_err(store_error)
    }

    /// Makes `meta` durable (with the current address book) when it changed.
    async fn persist_meta(&self, state: &mut State, mut meta: Meta) -> PrimaryResult<()> {
        meta.addresses = self.peers.addresses.all();
        if meta != state.meta {
            let change = Change {
                meta: Some(meta.clone()),
                ..Change::default()
            };
            self.commit(change).await?;
            state.meta = meta;
        }
        Ok(())
    }
}

/// Primary–secondary replication, asynchronous or synchronous (see the module docs).
impl ReplicationEngine for Arc<PrimaryEngine> {
    type Error = PrimaryError;

    fn mode(&self) -> &'static str {
        self.replication().as_str()
    }

    async fn write(&self, command: Command, deadline: Instant) -> PrimaryResult<i64> {
        self.submit(command, deadline).await
    }

    async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        _deadline: Instant,
    ) -> PrimaryResult<i64> {
        match consistency {
            Consistency::Local => Ok(self.read_local(key).await),
            Consistency::Linearizable => self.read_linearizable(key).await,
        }
    }

    async fn status(&self, _contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        self.report().await
    }

    async fn log_tail(&self, limit: usize) -> Vec<caplab_api::tail::TailEntry> {
        let state = self.state.lock().await;
        // Entries folded into the snapshot are gone: the tail starts after it at the earliest.
        let first =
            (state.log.last_seq().saturating_sub(limit as u64) + 1).max(state.log.base().seq + 1);
        let entries = state.log.entries_from(first, limit).unwrap_or_default();
        (first..)
            .zip(entries)
            .map(|(seq, e)| {
                let op = crate::tail::describe(&e.command);
                caplab_api::tail::TailEntry::new(seq, Some(e.epoch), op)
            })
            .collect()
    }

    async fn fenced(&self) -> bool {
        self.is_fenced().await
    }

    async fn members(&self) -> BTreeSet<NodeId> {
        self.state.lock().await.meta.members.clone()
    }

    async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> PrimaryResult<()> {
        self.start_epoch_one(members.into_keys().collect()).await
    }

    async fn add_learner(&self, id: NodeId, _node: Node, _deadline: Instant) -> PrimaryResult<()> {
        self.set_members(|m| {
            m.insert(id);
        })
        .await
    }

    async fn set_voters(&self, voters: BTreeSet<NodeId>, _deadline: Instant) -> PrimaryResult<()> {
        self.set_members(move |m| *m = voters).await
    }

    async fn transfer_leader(&self, to: NodeId, deadline: Instant) -> PrimaryResult<u64> {
        self.hand_over(to, deadline).await
    }

    async fn promote(&self, at_least: Option<u64>) -> PrimaryResult<u64> {
        self.become_primary(at_least).await
    }

    async fn follow(&self, primary: NodeId) -> PrimaryResult<()> {
        self.follow_primary(primary).await
    }
}
