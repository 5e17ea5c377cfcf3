//! Primary–secondary replication, asynchronous or synchronous.
//!
//! The primary orders every change with a sequence number, makes it durable (group commit:
//! one fsync per batch of concurrent writes) and streams the change log to each secondary,
//! which appends it durably and applies it strictly in order. Every message carries the
//! primary's epoch: a member that hears of a newer epoch stops acting as primary, and a
//! rejoining member drops the entries the new primary never had, counting them as discarded
//! (in async mode those were acknowledged to clients: that is the lesson). Entries every
//! member has acknowledged are compacted into a snapshot (see `log.rs`).

mod log;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use log::{ChangeLog, Snapshot};
use store::{Change, Meta, Store, StoreError};
pub use store::{LogEntry, Role};

use crate::engine::{Consistency, EngineError, Outcome, ReplicationEngine, Unsupported};
use crate::network::PeerClient;
use crate::status::{EngineStatus, PeerStatus};
use crate::types::{Command, CommandResult, Node, NodeId};

pub const REPLICATE_PATH: &str = "/v1/internal/replicate";
pub const PROMOTE_PATH: &str = "/v1/admin/promote";
pub const EPOCH_PATH: &str = "/v1/internal/epoch";

/// Entries per replication message.
const BATCH: usize = 512;
/// Writes collected into one group commit.
const GROUP_COMMIT: usize = 1024;

/// Heartbeats a replication round may take before it is abandoned and retried: a round trip
/// to a secondary under an injected delay (one delay each way) must still fit.
const ROUND_DEADLINE_HEARTBEATS: u32 = 10;

/// Why the primary–secondary engine did not serve an operation.
#[derive(Debug, Clone, Error)]
pub enum PrimaryError {
    /// Not the primary, or handing the role over: `primary` (if known) serves it. Nothing
    /// was done.
    #[error("this member is not the primary")]
    NotPrimary { primary: Option<NodeId> },
    /// A primary restarted in its epoch, confirming it with a majority; nothing was done.
    #[error(
        "this member was the primary of epoch {epoch} before it restarted and is confirming its \
         epoch with the other members (a failover may have happened meanwhile); retry shortly"
    )]
    Fenced { epoch: u64 },
    #[error("member is shutting down")]
    ShuttingDown,
    #[error("compare-and-set failed: the current value is {current}")]
    CasMismatch { current: i64 },
    /// A change could not be made durable, so it did not happen.
    #[error("{0}")]
    NotDurable(String),
    /// Refused before anything changed (e.g. a switchover target that did not catch up).
    #[error("{0}")]
    NotApplied(String),
    /// May or may not take effect: a sync write not confirmed by every secondary in time, a
    /// write still queued at the deadline, a switchover whose promotion got no answer.
    #[error("{0}")]
    Unknown(String),
    /// Conflicts with this member's state (initialised otherwise, a switchover under way).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

impl EngineError for PrimaryError {
    fn outcome(&self) -> Outcome {
        match self {
            PrimaryError::NotPrimary { primary } => Outcome::Redirect {
                leader: *primary,
                addr: None,
            },
            PrimaryError::Fenced { .. }
            | PrimaryError::ShuttingDown
            | PrimaryError::NotDurable(_)
            | PrimaryError::NotApplied(_) => Outcome::NotApplied,
            PrimaryError::Unknown(_) => Outcome::Unknown,
            PrimaryError::CasMismatch { current } => Outcome::CasMismatch { current: *current },
            PrimaryError::Conflict(_) => Outcome::Conflict,
            PrimaryError::Invalid(_) => Outcome::Invalid,
            PrimaryError::Unsupported(u) => u.outcome(),
        }
    }
}

pub type PrimaryResult<T> = Result<T, PrimaryError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Async,
    Sync,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateRequest {
    pub epoch: u64,
    pub primary: NodeId,
    pub prev_seq: u64,
    pub prev_epoch: u64,
    /// The primary's last sequence number: entries a member holds beyond it are not in the
    /// primary's history.
    pub last_seq: u64,
    pub entries: Vec<LogEntry>,
    /// The state up to `prev_seq`, sent instead of entries the primary has compacted away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// Every member holds the entries up to here: they may be compacted.
    #[serde(default)]
    pub stable_seq: u64,
    /// The member set and the primary's address book, so that any secondary can take over.
    pub members: BTreeSet<NodeId>,
    pub addresses: BTreeMap<NodeId, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicateResponse {
    pub ok: bool,
    pub epoch: u64,
    /// The receiver's last sequence number after handling the request.
    pub last_seq: u64,
    /// On a refusal because the receiver's entry at `prev_seq` has another epoch: that epoch
    /// (absent when the receiver lacks `prev_seq`, or from members before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_epoch: Option<u64>,
    /// On a refusal over `prev_seq`: where the primary should resume. The first sequence
    /// number the receiver holds in `conflict_epoch` (after its snapshot), or its last
    /// sequence number + 1 when it lacks `prev_seq`. Lets the primary skip a whole divergent
    /// epoch in one round trip (Raft §5.3) instead of backing off one entry per round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_seq: Option<u64>,
}

/// A member's answer to [`EPOCH_PATH`]: the epoch it knows and the primary it follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochView {
    pub epoch: u64,
    pub primary: Option<NodeId>,
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

struct WriteRequest {
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<PrimaryResult<i64>>,
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

fn store_error(e: StoreError) -> PrimaryError {
    PrimaryError::NotDurable(format!("could not make the change durable: {e}"))
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
        let store = Store::open(&data_dir.join("primary-secondary.redb"))?;
        let (meta, snapshot, log) = store.load()?;
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

    fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Async => "async",
            Mode::Sync => "sync",
        }
    }

    async fn submit(&self, command: Command, deadline: Instant) -> PrimaryResult<i64> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest {
                command,
                deadline,
                reply,
            })
            .await
            .map_err(|_| PrimaryError::ShuttingDown)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PrimaryError::Unknown(
                "the write was dropped while in flight".into(),
            )),
            Err(_) => Err(PrimaryError::Unknown(
                "deadline passed after the write was queued".into(),
            )),
        }
    }

    /// The single writer: takes every queued write, applies them in order, makes the batch
    /// durable with one fsync, then answers (sync mode: once every secondary has it).
    async fn group_commit(engine: std::sync::Weak<Self>, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(GROUP_COMMIT);
        while queue.recv_many(&mut batch, GROUP_COMMIT).await > 0 {
            let batch = std::mem::take(&mut batch);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.commit_batch(batch).await;
        }
    }

    async fn commit_batch(&self, batch: Vec<WriteRequest>) {
        let mut state = self.state.lock().await;
        if let Err(e) = state.serving() {
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
            return;
        }
        let first_seq = state.last_seq() + 1;
        let epoch = state.meta.epoch;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut appended = Vec::new();
        for w in batch {
            let outcome = match state.log.registers_mut().apply(&w.command) {
                CommandResult::Applied { value } => {
                    let key = w.command.key().to_string();
                    // A successful CAS is logged as the write it amounts to: replay is then
                    // independent of the secondary's state.
                    let entry = LogEntry {
                        epoch,
                        command: Command::Write { key, value },
                    };
                    state.log.push(entry.clone());
                    appended.push((state.last_seq(), entry));
                    Ok((value, state.last_seq()))
                }
                CommandResult::CasMismatch { current } => {
                    Err(PrimaryError::CasMismatch { current })
                }
            };
            outcomes.push((w, outcome));
        }
        if !appended.is_empty() {
            let change = Change {
                append: appended,
                ..Change::default()
            };
            if let Err(e) = self.store.commit(change).await {
                tracing::error!(error = %e, "group commit failed; reloading the durable state");
                self.reload(&mut state);
                for (w, _) in outcomes {
                    let _ = w
                        .reply
                        .send(Err(store_error(StoreError::Redb(e.to_string()))));
                }
                return;
            }
        }
        let stable = state.stable_seq(self.id);
        self.compact(&mut state, stable).await;
        drop(state);
        self.changed.send_modify(|v| *v += 1);
        tracing::trace!(first_seq, "group commit");
        for (w, outcome) in outcomes {
            match (outcome, self.mode) {
                (Ok((value, seq)), Mode::Sync) => {
                    let engine_changed = self.changed.subscribe();
                    let acked = self.wait_for_secondaries(seq, w.deadline, engine_changed);
                    let result = match acked.await {
                        true => Ok(value),
                        false => Err(PrimaryError::Unknown(
                            "not every secondary confirmed the write before the deadline; it is durable on \
                             the primary and may or may not survive a failover"
                                .into(),
                        )),
                    };
                    let _ = w.reply.send(result);
                }
                (Ok((value, _)), Mode::Async) => {
                    let _ = w.reply.send(Ok(value));
                }
                (Err(e), _) => {
                    let _ = w.reply.send(Err(e));
                }
            }
        }
    }

    /// Waits until every current secondary has made `seq` durable.
    async fn wait_for_secondaries(
        &self,
        seq: u64,
        deadline: Instant,
        mut changed: watch::Receiver<u64>,
    ) -> bool {
        loop {
            {
                let state = self.state.lock().await;
                let all = state
                    .secondaries(self.id)
                    .all(|id| state.progress.get(&id).is_some_and(|p| p.match_seq >= seq));
                if all {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    fn reload(&self, state: &mut State) {
        match self.store.load() {
            Ok((meta, snapshot, log)) => {
                state.meta = meta;
                state.log = ChangeLog::new(snapshot, log);
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the change log"),
        }
    }

    async fn read_local(&self, key: &str) -> i64 {
        self.state.lock().await.log.registers().read(key)
    }

    /// Linearizable reads are served by the primary only (as far as it knows it is one).
    async fn read_linearizable(&self, key: &str) -> PrimaryResult<i64> {
        let state = self.state.lock().await;
        match state.meta.role {
            Role::Primary if state.fenced => Err(state.fence_error()),
            Role::Primary => Ok(state.log.registers().read(key)),
            _ => Err(state.redirect()),
        }
    }

    /// Handles a replication message from a primary (as a secondary).
    pub async fn replicate(&self, request: ReplicateRequest) -> PrimaryResult<ReplicateResponse> {
        let mut state = self.state.lock().await;
        if request.epoch < state.meta.epoch {
            return Ok(ReplicateResponse {
                ok: false,
                epoch: state.meta.epoch,
                last_seq: state.last_seq(),
                conflict_epoch: None,
                conflict_seq: None,
            });
        }
        self.peers.addresses.merge(request.addresses.clone());
        let mut meta = state.meta.clone();
        meta.members = request.members.clone();
        meta.addresses = self.peers.addresses.all();
        if request.epoch > meta.epoch
            || meta.role != Role::Secondary
            || meta.primary != Some(request.primary)
        {
            if meta.role == Role::Primary {
                tracing::warn!(
                    epoch = request.epoch,
                    primary = request.primary,
                    "deposed by a newer primary"
                );
            }
            meta.epoch = request.epoch;
            meta.role = Role::Secondary;
            meta.primary = Some(request.primary);
        }
        let base = state.log.base().clone();
        let (prev_seq, prev_epoch, entries) = match &request.snapshot {
            // Entries up to our own snapshot are stable, hence the ones we hold.
            Some(snapshot) if snapshot.seq <= base.seq => {
                after_snapshot(&base, request.prev_seq, &request.entries)
            }
            Some(snapshot) if state.log.epoch_at(snapshot.seq) != Some(snapshot.epoch) => {
                // Without the snapshot's epoch history (an older primary), count what
                // lies beyond it.
                let kept = state.log.agreement_with(snapshot).unwrap_or(snapshot.seq);
                let replaced = state.last_seq().saturating_sub(kept);
                if replaced > 0 {
                    meta.discarded += replaced;
                    tracing::warn!(replaced, "entries replaced by the primary's snapshot");
                }
                let change = Change {
                    truncate_after: Some(0),
                    snapshot: Some(snapshot.clone()),
                    meta: Some(meta.clone()),
                    ..Change::default()
                };
                self.commit(change).await?;
                state.meta = meta.clone();
                state.log.install(snapshot.clone());
                tracing::info!(seq = snapshot.seq, "installed the primary's snapshot");
                (snapshot.seq, Some(snapshot.epoch), &request.entries[..])
            }
            _ => after_snapshot(&base, request.prev_seq, &request.entries),
        };
        let prev_epoch = prev_epoch.unwrap_or(request.prev_epoch);
        if prev_seq > state.last_seq() || state.log.epoch_at(prev_seq) != Some(prev_epoch) {
            self.persist_meta(&mut state, meta).await?;
            return Ok(conflict(&state.log, prev_seq, state.meta.epoch));
        }
        // Entries held with the same epoch at the same position are identical: skip them. At
        // the first conflict our tail goes; so does anything beyond the primary's last entry.
        let held = state.last_seq();
        let mut matched = prev_seq;
        let mut skip = 0;
        while skip < entries.len()
            && matched < held
            && state.log.epoch_at(matched + 1) == Some(entries[skip].epoch)
        {
            matched += 1;
            skip += 1;
        }
        let keep = if skip < entries.len() {
            matched
        } else {
            request.last_seq.max(matched)
        };
        let truncate_after = (held > keep).then_some(keep);
        if let Some(after) = truncate_after {
            meta.discarded += held - after;
            tracing::warn!(
                discarded = held - after,
                epoch = request.epoch,
                "discarding entries the new primary never had"
            );
        }
        let append: Vec<(u64, LogEntry)> = entries[skip..]
            .iter()
            .cloned()
            .zip(matched + 1..)
            .map(|(e, seq)| (seq, e))
            .collect();
        let change = Change {
            truncate_after,
            append: append.clone(),
            meta: (meta != state.meta).then(|| meta.clone()),
            ..Change::default()
        };
        self.commit(change).await?;
        state.meta = meta;
        if let Some(after) = truncate_after {
            state.log.truncate_after(after);
        }
        for (_, entry) in append {
            state.log.append(entry);
        }
        self.stop_replicators();
        let stable = request.stable_seq.min(state.last_seq());
        self.compact(&mut state, stable).await;
        Ok(ReplicateResponse {
            ok: true,
            epoch: state.meta.epoch,
            last_seq: state.last_seq(),
            conflict_epoch: None,
            conflict_seq: None,
        })
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

    /// Makes `change` durable; a failure means it did not happen.
    async fn commit(&self, change: Change) -> PrimaryResult<()> {
        self.store
            .commit(change)
            .await
            .map_err(|e| PrimaryError::NotDurable(e.to_string()))
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

    /// `POST /v1/admin/init`: this member becomes the primary of epoch 1.
    async fn start_epoch_one(self: &Arc<Self>, members: BTreeSet<NodeId>) -> PrimaryResult<()> {
        let mut state = self.state.lock().await;
        if state.meta.epoch > 0 {
            return if state.meta.members == members && state.meta.primary == Some(self.id) {
                Ok(())
            } else {
                Err(PrimaryError::Conflict(format!(
                    "already initialized (epoch {}, members {:?})",
                    state.meta.epoch, state.meta.members
                )))
            };
        }
        let meta = Meta {
            epoch: 1,
            role: Role::Primary,
            primary: Some(self.id),
            members,
            ..Meta::default()
        };
        self.persist_meta(&mut state, meta).await?;
        self.start_replicators(&mut state);
        Ok(())
    }

    /// `POST /v1/admin/promote`: become the primary of a newer epoch.
    /// On a primary fenced after a restart, the operator's word that it is the primary:
    /// it serves again in its epoch.
    async fn become_primary(self: &Arc<Self>, at_least: Option<u64>) -> PrimaryResult<u64> {
        let mut state = self.state.lock().await;
        if state.meta.role == Role::Primary {
            if state.fenced {
                self.unfence(&mut state, "promoted by the operator");
            }
            return Ok(state.meta.epoch);
        }
        let mut meta = state.meta.clone();
        meta.epoch = (meta.epoch + 1).max(at_least.unwrap_or(0));
        meta.role = Role::Primary;
        meta.primary = Some(self.id);
        meta.members.insert(self.id);
        self.persist_meta(&mut state, meta).await?;
        state.fenced = false;
        tracing::info!(epoch = state.meta.epoch, "promoted to primary");
        self.start_replicators(&mut state);
        Ok(state.meta.epoch)
    }

    /// `POST /v1/admin/transfer-leader` on the primary: a planned switchover to `to` that
    /// loses no write. New writes are refused (redirected to `to`) until `to` holds every
    /// entry; then this member steps down to follow `to` and asks it to become the primary of
    /// the next epoch. Returns that epoch.
    async fn hand_over(self: &Arc<Self>, to: NodeId, deadline: Instant) -> PrimaryResult<u64> {
        {
            let mut state = self.state.lock().await;
            if state.meta.role != Role::Primary {
                return Err(state.redirect());
            }
            if state.fenced {
                return Err(state.fence_error());
            }
            if let Some(other) = state.handing_over {
                return Err(PrimaryError::Conflict(format!(
                    "a switchover to member {other} is already under way"
                )));
            }
            if to == self.id || !state.meta.members.contains(&to) {
                return Err(PrimaryError::Invalid(format!(
                    "member {to} is not a secondary of this primary (members {:?})",
                    state.meta.members
                )));
            }
            state.handing_over = Some(to);
        }
        if !self.caught_up(to, deadline).await {
            self.state.lock().await.handing_over = None;
            return Err(PrimaryError::NotApplied(format!(
                "member {to} did not catch up before the deadline; this member stays the primary"
            )));
        }
        let epoch = {
            let mut state = self.state.lock().await;
            let mut meta = state.meta.clone();
            meta.role = Role::Secondary;
            meta.primary = Some(to);
            let stepped_down = self.persist_meta(&mut state, meta).await;
            state.handing_over = None;
            stepped_down?;
            state.meta.epoch
        };
        self.stop_replicators();
        tracing::info!(to, epoch, "stepped down for a switchover");
        let request = serde_json::json!({ "epoch": epoch + 1 });
        let wait = deadline.saturating_duration_since(Instant::now());
        let promoted = self
            .peers
            .post(to, None, PROMOTE_PATH, &request, wait)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| match r.status().is_success() {
                true => Ok(()),
                false => Err(format!("answered {}", r.status())),
            });
        // Not undone on failure: `to` may have been promoted all the same, and a primary that
        // took its writes back could then lose them. With no primary, the operator's failover
        // promotes the most caught-up member, and every member has every entry.
        promoted.map(|()| epoch + 1).map_err(|e| {
            PrimaryError::Unknown(format!(
                "stepped down, but promoting member {to} failed ({e}); a failover will pick the next primary"
            ))
        })
    }

    /// Waits until `to` has acknowledged every entry this primary holds.
    async fn caught_up(&self, to: NodeId, deadline: Instant) -> bool {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let state = self.state.lock().await;
                let last = state.last_seq();
                if state.progress.get(&to).is_some_and(|p| p.match_seq >= last) {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// `PUT /v1/admin/primary`: follow another member.
    async fn follow_primary(&self, primary: NodeId) -> PrimaryResult<()> {
        if primary == self.id {
            return Err(PrimaryError::Invalid(
                "to make this member the primary, use /v1/admin/promote".into(),
            ));
        }
        let mut state = self.state.lock().await;
        let mut meta = state.meta.clone();
        meta.role = Role::Secondary;
        meta.primary = Some(primary);
        self.persist_meta(&mut state, meta).await?;
        self.stop_replicators();
        Ok(())
    }

    /// Sets the member set (on the primary; others redirect).
    async fn set_members(
        self: &Arc<Self>,
        change: impl FnOnce(&mut BTreeSet<NodeId>),
    ) -> PrimaryResult<()> {
        let mut state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return Err(state.redirect());
        }
        if state.fenced {
            return Err(state.fence_error());
        }
        let mut meta = state.meta.clone();
        change(&mut meta.members);
        meta.members.insert(self.id);
        self.persist_meta(&mut state, meta).await?;
        self.start_replicators(&mut state);
        Ok(())
    }

    async fn restart_replication(self: Arc<Self>) {
        let mut state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return;
        }
        if state.fenced {
            drop(state);
            self.confirm_epoch().await;
        } else {
            self.start_replicators(&mut state);
        }
    }

    /// What this member answers at [`EPOCH_PATH`].
    pub async fn epoch_view(&self) -> EpochView {
        let state = self.state.lock().await;
        EpochView {
            epoch: state.meta.epoch,
            primary: state.meta.primary,
        }
    }

    /// Run by a primary fenced after a restart: asks every other member for its epoch, every
    /// heartbeat, until a majority of the member set (this member included) confirms it: in
    /// this very epoch, following this member. A member at an older epoch does not count (a
    /// wiped member answers epoch 0 and knows nothing of a failover). Then it serves. When a
    /// member knows a newer epoch, it steps down and follows that primary.
    async fn confirm_epoch(self: Arc<Self>) {
        loop {
            let (epoch, others) = {
                let state = self.state.lock().await;
                if !state.fenced || state.meta.role != Role::Primary {
                    return;
                }
                let others: Vec<NodeId> = state.secondaries(self.id).collect();
                (state.meta.epoch, others)
            };
            let views = futures::future::join_all(others.iter().map(|id| self.ask_epoch(*id)));
            let mut confirmed = 1;
            for view in views.await.into_iter().flatten() {
                if view.epoch > epoch {
                    self.step_down_to(view).await;
                    return;
                }
                if view.epoch == epoch && view.primary == Some(self.id) {
                    confirmed += 1;
                }
            }
            let members = others.len() + 1;
            if confirmed > members / 2 {
                let mut state = self.state.lock().await;
                self.unfence(&mut state, "a majority confirmed its epoch");
                return;
            }
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    async fn ask_epoch(&self, member: NodeId) -> Option<EpochView> {
        let deadline = self.heartbeat * ROUND_DEADLINE_HEARTBEATS;
        let body = serde_json::json!({});
        let answer = self
            .peers
            .post(member, None, EPOCH_PATH, &body, deadline)
            .await;
        match answer {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        }
    }

    fn unfence(self: &Arc<Self>, state: &mut State, why: &str) {
        if state.fenced && state.meta.role == Role::Primary {
            state.fenced = false;
            tracing::info!(
                epoch = state.meta.epoch,
                why,
                "serving as the primary again"
            );
            self.start_replicators(state);
        }
    }

    /// A fenced primary learnt of a newer epoch: it becomes a secondary of that primary,
    /// whose replication then drops any entry it never had.
    async fn step_down_to(&self, view: EpochView) {
        let mut state = self.state.lock().await;
        if !state.fenced || state.meta.role != Role::Primary {
            return;
        }
        tracing::warn!(
            epoch = view.epoch,
            primary = ?view.primary,
            "a newer epoch exists: the member that was primary before its restart steps down"
        );
        let mut meta = state.meta.clone();
        meta.epoch = view.epoch;
        meta.role = Role::Secondary;
        meta.primary = view.primary.filter(|p| *p != self.id);
        if let Err(e) = self.persist_meta(&mut state, meta).await {
            tracing::error!(error = %e, "cannot record stepping down; still fenced");
        }
    }

    /// A primary fenced after a restart, not serving yet.
    async fn is_fenced(&self) -> bool {
        let state = self.state.lock().await;
        state.fenced && state.meta.role == Role::Primary
    }

    fn stop_replicators(&self) {
        let mut replicators = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in std::mem::take(&mut *replicators) {
            task.abort();
        }
    }

    /// One replication task per secondary; tasks of removed members stop.
    fn start_replicators(self: &Arc<Self>, state: &mut State) {
        let secondaries: BTreeSet<NodeId> = state.secondaries(self.id).collect();
        let last = state.last_seq();
        state.progress.retain(|id, _| secondaries.contains(id));
        let mut replicators = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        replicators.retain(|id, task| {
            let keep = secondaries.contains(id) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for id in secondaries {
            state.progress.entry(id).or_insert(Progress {
                next_seq: last + 1,
                ..Default::default()
            });
            replicators
                .entry(id)
                .or_insert_with(|| tokio::spawn(self.clone().replicate_to(id)));
        }
    }

    /// Streams the log to one secondary, as a heartbeat when there is nothing new.
    async fn replicate_to(self: Arc<Self>, target: NodeId) {
        let mut changed = self.changed.subscribe();
        loop {
            if self.peers.faults.is_paused() {
                self.peers
                    .faults
                    .wait_unpaused(Instant::now() + Duration::from_secs(3600))
                    .await;
            }
            let Some(request) = self.next_request(target).await else {
                return;
            };
            let sent = request.entries.len() as u64;
            let answer = self
                .peers
                .post(
                    target,
                    None,
                    REPLICATE_PATH,
                    &request,
                    self.heartbeat * ROUND_DEADLINE_HEARTBEATS,
                )
                .await
                .ok()
                .filter(|r| r.status().is_success());
            let response = match answer {
                Some(r) => r.json::<ReplicateResponse>().await.ok(),
                None => None,
            };
            match response {
                Some(response) => {
                    if !self.record(target, &request, response).await {
                        return;
                    }
                }
                None => {
                    tokio::time::sleep(self.heartbeat / 2).await;
                    continue;
                }
            }
            if sent == 0 {
                let _ = tokio::time::timeout(self.heartbeat, changed.changed()).await;
            }
        }
    }

    async fn next_request(&self, target: NodeId) -> Option<ReplicateRequest> {
        let state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return None;
        }
        let next = state
            .progress
            .get(&target)?
            .next_seq
            .clamp(1, state.last_seq() + 1);
        // Entries compacted away travel as the snapshot they were folded into.
        let base = state.log.base();
        let (prev_seq, snapshot) = if next <= base.seq {
            (base.seq, Some(base.clone()))
        } else {
            (next - 1, None)
        };
        Some(ReplicateRequest {
            epoch: state.meta.epoch,
            primary: self.id,
            prev_seq,
            prev_epoch: state.log.epoch_at(prev_seq).unwrap_or_default(),
            last_seq: state.last_seq(),
            entries: state
                .log
                .entries_from(prev_seq + 1, BATCH)
                .unwrap_or_default(),
            snapshot,
            stable_seq: state.stable_seq(self.id),
            members: state.meta.members.clone(),
            addresses: self.peers.addresses.all(),
        })
    }

    /// Applies a secondary's answer; returns false when this member must stop replicating.
    async fn record(
        &self,
        target: NodeId,
        request: &ReplicateRequest,
        response: ReplicateResponse,
    ) -> bool {
        let mut state = self.state.lock().await;
        if response.epoch > state.meta.epoch {
            tracing::warn!(
                epoch = response.epoch,
                "a newer epoch exists: stepping down"
            );
            let mut meta = state.meta.clone();
            meta.epoch = response.epoch;
            meta.role = Role::Secondary;
            meta.primary = None;
            if let Err(e) = self.persist_meta(&mut state, meta).await {
                tracing::error!(error = %e, "cannot record stepping down");
            }
            return false;
        }
        let resume = resume_at(&state.log, request.prev_seq, &response);
        let Some(progress) = state.progress.get_mut(&target) else {
            return false;
        };
        progress.last_contact = Some(Instant::now());
        if response.ok {
            progress.match_seq = response
                .last_seq
                .min(request.prev_seq + request.entries.len() as u64);
            progress.next_seq = progress.match_seq + 1;
            let stable = state.stable_seq(self.id);
            self.compact(&mut state, stable).await;
        } else {
            progress.next_seq = resume;
        }
        drop(state);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    async fn report(&self) -> EngineStatus {
        let state = self.state.lock().await;
        let last = state.last_seq();
        let now = Instant::now();
        let peers = if state.meta.role == Role::Primary {
            state
                .progress
                .iter()
                .map(|(id, p)| {
                    let lag_ms = state
                        .log
                        .appended_at(p.match_seq + 1)
                        .map_or(0, |at| now.duration_since(at).as_millis() as u64);
                    let status = PeerStatus {
                        match_index: Some(p.match_seq),
                        lag_entries: last.saturating_sub(p.match_seq),
                        lag_ms: Some(lag_ms),
                        last_contact_ms: p
                            .last_contact
                            .map(|at| now.duration_since(at).as_millis() as u64),
                    };
                    (*id, status)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        EngineStatus {
            replication: self.mode_name(),
            role: match state.meta.role {
                Role::Primary if state.fenced => "fenced",
                Role::Primary => "primary",
                Role::Secondary | Role::Uninitialized => "secondary",
            },
            term: state.meta.epoch,
            leader: state.meta.primary,
            commit_index: last,
            applied_index: last,
            last_log_index: last,
            snapshot_index: state.log.base().seq,
            voters: state.meta.members.iter().copied().collect(),
            learners: Vec::new(),
            peers,
            discarded_writes: Some(state.meta.discarded),
        }
    }
}

/// Primary–secondary replication, asynchronous or synchronous (see the module docs).
impl ReplicationEngine for Arc<PrimaryEngine> {
    type Error = PrimaryError;

    fn mode(&self) -> &'static str {
        self.mode_name()
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

/// A secondary's refusal of entries after `prev_seq`, which it lacks or holds with another
/// epoch: says where its log stops matching, for [`resume_at`].
fn conflict(log: &ChangeLog, prev_seq: u64, epoch: u64) -> ReplicateResponse {
    let conflict_epoch = log.epoch_at(prev_seq);
    let conflict_seq = match conflict_epoch {
        Some(held) => log.epoch_start(held).min(prev_seq),
        None => log.last_seq() + 1,
    };
    ReplicateResponse {
        ok: false,
        epoch,
        last_seq: prev_seq.saturating_sub(1).min(log.last_seq()),
        conflict_epoch,
        conflict_seq: Some(conflict_seq),
    }
}

/// Where the primary resumes replicating to a secondary that refused entries after
/// `prev_seq`: past the secondary's whole conflicting epoch at once. When the primary holds
/// that epoch too, right after its last entry of it (the logs agree up to there); otherwise
/// at the first entry the secondary holds in it. Always below `prev_seq + 1`, so every
/// refusal makes progress; a result inside the primary's snapshot sends the snapshot. A
/// secondary without hints (an older version) gets the old one-entry back-off.
fn resume_at(log: &ChangeLog, prev_seq: u64, response: &ReplicateResponse) -> u64 {
    let hinted = match (response.conflict_epoch, response.conflict_seq) {
        (Some(epoch), Some(first)) => log.epoch_end(epoch).map_or(first, |end| end + 1),
        (None, Some(first)) => first,
        (_, None) => response.last_seq + 1,
    };
    hinted.min(prev_seq).max(1)
}

/// The part of a replication message after our own snapshot (entries up to it are stable,
/// so the ones we hold): the previous sequence number, its epoch when the snapshot decided
/// it, and the entries left.
fn after_snapshot<'a>(
    base: &Snapshot,
    prev_seq: u64,
    entries: &'a [LogEntry],
) -> (u64, Option<u64>, &'a [LogEntry]) {
    if prev_seq >= base.seq {
        return (prev_seq, None, entries);
    }
    let inside = usize::try_from(base.seq - prev_seq).unwrap_or(usize::MAX);
    let rest = entries.get(inside..).unwrap_or_default();
    (base.seq, Some(base.epoch), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(epochs: &[u64]) -> Vec<LogEntry> {
        epochs
            .iter()
            .map(|&epoch| LogEntry {
                epoch,
                command: Command::Write {
                    key: "k".into(),
                    value: 1,
                },
            })
            .collect()
    }

    /// A deposed primary holding entries 1..=50 of epoch 1, rejoining a primary whose log is
    /// 1..=10 of epoch 1 then 11..=100 of epoch 2: one refusal for the missing tail, one for
    /// the divergent epoch, then the logs agree.
    #[test]
    fn a_divergent_epoch_is_skipped_in_one_round_trip() {
        let secondary = ChangeLog::new(Snapshot::default(), entries(&[1; 50]));
        let mut epochs = vec![1; 10];
        epochs.extend([2; 90]);
        let primary = ChangeLog::new(Snapshot::default(), entries(&epochs));

        let lacking = conflict(&secondary, 100, 2);
        assert_eq!(
            (lacking.conflict_epoch, lacking.conflict_seq),
            (None, Some(51))
        );
        let next = resume_at(&primary, 100, &lacking);
        assert_eq!(next, 51);

        let diverging = conflict(&secondary, next - 1, 2);
        assert_eq!(
            (diverging.conflict_epoch, diverging.conflict_seq),
            (Some(1), Some(1))
        );
        let next = resume_at(&primary, 50, &diverging);
        assert_eq!(next, 11, "right after the primary's last entry of epoch 1");
        assert_eq!(secondary.epoch_at(next - 1), primary.epoch_at(next - 1));

        // Without the epoch on the primary (compacted away, or never held), the secondary's
        // first entry of it; an old secondary without hints, one entry back.
        let compacted = ChangeLog::new(
            Snapshot {
                seq: 20,
                epoch: 2,
                ..Snapshot::default()
            },
            entries(&[2; 80]),
        );
        assert_eq!(resume_at(&compacted, 50, &diverging), 1);
        let old = ReplicateResponse {
            conflict_epoch: None,
            conflict_seq: None,
            ..diverging
        };
        assert_eq!(resume_at(&primary, 50, &old), 50);
    }

    #[test]
    fn entries_inside_our_snapshot_are_skipped() {
        let base = Snapshot {
            seq: 10,
            epoch: 2,
            ..Snapshot::default()
        };
        let sent = entries(&[2, 2, 2, 3]);
        // prev 8: entries 9 and 10 are ours already; 11 and 12 remain.
        let (prev, epoch, rest) = after_snapshot(&base, 8, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, Some(2), 2));
        // Everything sent is inside the snapshot.
        let (prev, epoch, rest) = after_snapshot(&base, 2, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, Some(2), 0));
        // At or past the snapshot nothing changes; the sender's epoch is checked as usual.
        let (prev, epoch, rest) = after_snapshot(&base, 10, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, None, 4));
    }
}
