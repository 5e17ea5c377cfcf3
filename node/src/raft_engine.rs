//! The Raft engine: register operations and membership through openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{ChangeMembers, ServerState};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::api::error::ApiError;
use crate::election::{Election, ElectionTiming};
use crate::engine::{EngineError, EngineResult};
use crate::member::{EngineStatus, PeerStatus};
use crate::network::PeerClient;
use crate::store::SharedState;
use crate::types::{Batch, Command, CommandResult, Node, NodeId, Raft, TypeConfig};

pub struct RaftEngine {
    pub raft: Raft,
    pub state: SharedState,
    pub committed: Arc<AtomicU64>,
    reads: mpsc::Sender<oneshot::Sender<EngineResult<()>>>,
    writes: mpsc::Sender<PendingWrite>,
    /// Pre-vote and check-quorum (openraft's own election timer is off).
    pub election: Arc<Election>,
}

/// Confirmations of leadership collected into one round.
const READ_BATCH: usize = 4096;

/// How often the writes applied since the last snapshot are compared with the limit.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(250);

/// Writes proposed together as one log entry, at most.
const WRITE_BATCH: usize = 1024;

/// Log entries proposed and not yet applied, at most. openraft 0.9's core waits for each
/// entry's fsync before it takes the next, so while a few entries are in flight the writes
/// arriving meanwhile queue up and go into one entry; two in flight let one entry replicate
/// while the next is written.
const PROPOSALS_IN_FLIGHT: usize = 2;

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<EngineResult<CommandResult>>,
}

fn redirect(to: ForwardToLeader<NodeId, Node>) -> EngineError {
    EngineError::NotLeader {
        leader: to.leader_id,
        addr: to.leader_node.map(|n| n.addr),
    }
}

/// `Some(redirect)` when this member is not the leader now (to the leader it knows, if any).
fn not_leader(raft: &Raft) -> Option<EngineError> {
    let m = raft.metrics();
    let m = m.borrow();
    if m.state == ServerState::Leader {
        return None;
    }
    let leader = m.current_leader;
    let addr = leader
        .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
        .map(|n| n.addr);
    Some(EngineError::NotLeader { leader, addr })
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> EngineError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => redirect(to),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::Conflict(e.to_string()).into()
        }
        e => ApiError::NotApplied(e.to_string()).into(),
    }
}

impl RaftEngine {
    pub fn new(
        raft: Raft,
        state: SharedState,
        committed: Arc<AtomicU64>,
        peers: Arc<PeerClient>,
        round_timeout: Duration,
        timing: ElectionTiming,
        snapshot_writes: u64,
    ) -> Self {
        let election = Election::start(raft.clone(), peers.id, peers, timing);
        let (reads, read_queue) = mpsc::channel(READ_BATCH);
        tokio::spawn(confirm_reads(
            raft.clone(),
            election.clone(),
            read_queue,
            round_timeout,
        ));
        let (writes, write_queue) = mpsc::channel(WRITE_BATCH * PROPOSALS_IN_FLIGHT);
        tokio::spawn(propose_writes(raft.clone(), election.clone(), write_queue));
        tokio::spawn(snapshot_by_writes(
            raft.clone(),
            state.clone(),
            snapshot_writes,
        ));
        Self {
            raft,
            state,
            committed,
            reads,
            writes,
            election,
        }
    }

    /// Hands a leader's AppendEntries to openraft; one it accepts restarts the election timer.
    pub fn append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> + 'static
    {
        let (raft, election) = (self.raft.clone(), self.election.clone());
        async move {
            let response = raft.append_entries(request).await?;
            if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
                election.heard_from_leader();
            }
            Ok(response)
        }
    }

    /// Answers a (real) vote request; granting one restarts the election timer.
    pub fn vote(
        &self,
        request: VoteRequest<NodeId>,
    ) -> impl Future<Output = Result<VoteResponse<NodeId>, RaftError<NodeId>>> + 'static {
        let (raft, election) = (self.raft.clone(), self.election.clone());
        async move {
            let response = raft.vote(request).await?;
            if response.vote_granted {
                election.granted_vote();
            }
            Ok(response)
        }
    }

    pub async fn write(&self, command: Command, deadline: Instant) -> EngineResult<i64> {
        let (reply, applied) = oneshot::channel();
        self.writes
            .send(PendingWrite { command, reply })
            .await
            .map_err(|_| ApiError::NotApplied("member is shutting down".into()))?;
        let unknown = |why: &str| -> EngineError {
            ApiError::Unknown(format!("{why}; the write may or may not take effect")).into()
        };
        match tokio::time::timeout_at(deadline, applied).await {
            Ok(Ok(Ok(CommandResult::Applied { value }))) => Ok(value),
            Ok(Ok(Ok(CommandResult::CasMismatch { current }))) => {
                Err(ApiError::CasMismatch { current }.into())
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(unknown("the write was dropped while in flight")),
            Err(_) => Err(unknown("deadline passed after the write was queued")),
        }
    }

    pub fn read_local(&self, key: &str) -> i64 {
        self.state.read().registers.read(key)
    }

    /// Waits for a leadership confirmation round that started after this call (rounds are
    /// shared by every read waiting for one), then reads the applied state.
    pub async fn read_linearizable(&self, key: &str, deadline: Instant) -> EngineResult<i64> {
        let (reply, confirmed) = oneshot::channel();
        self.reads
            .send(reply)
            .await
            .map_err(|_| ApiError::NotApplied("member is shutting down".into()))?;
        match tokio::time::timeout_at(deadline, confirmed).await {
            Ok(Ok(result)) => result.map(|()| self.read_local(key)),
            Ok(Err(_)) => Err(ApiError::NotApplied("member is shutting down".into()).into()),
            Err(_) => {
                Err(ApiError::Unknown("deadline passed while confirming leadership".into()).into())
            }
        }
    }

    /// The member's status; a leader that stepped aside for lack of a quorum reports itself
    /// as a follower that knows no leader, which is how it behaves, and a follower cut off
    /// from its leader for two election timeouts knows no leader either (pre-vote keeps it
    /// from campaigning, so openraft would go on naming the leader it cannot reach).
    pub fn status(&self, contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        let mut m = self.raft.metrics().borrow().clone();
        if self.election.stepped_aside() {
            m.state = ServerState::Follower;
            m.current_leader = None;
        } else if m.state != ServerState::Leader && self.election.leader_out_of_reach() {
            m.current_leader = None;
        }
        let membership = m.membership_config.membership();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let peers = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let match_index = matched.map(|l| l.index);
                let status = PeerStatus {
                    match_index,
                    lag_entries: last_log_index.saturating_sub(match_index.unwrap_or(0)),
                    lag_ms: None,
                    last_contact_ms: contacts.get(id).copied(),
                };
                (*id, status)
            })
            .collect();
        EngineStatus {
            replication: "raft",
            role: role_name(m.state),
            term: m.current_term,
            leader: m.current_leader,
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index,
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            peers,
            discarded_writes: None,
        }
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// A paused member's Raft timers stand still, like a stopped process.
    pub fn set_paused(&self, paused: bool) {
        self.election.set_paused(paused);
    }

    pub async fn initialize(&self, nodes: BTreeMap<NodeId, Node>) -> EngineResult<()> {
        match self.raft.initialize(nodes.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                let voters: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                if voters == nodes.keys().copied().collect() {
                    Ok(())
                } else {
                    Err(ApiError::Conflict(format!(
                        "already initialized with voters {voters:?}; change membership instead"
                    ))
                    .into())
                }
            }
            Err(e) => Err(ApiError::BadRequest(e.to_string()).into()),
        }
    }

    pub async fn add_learner(&self, id: NodeId, node: Node, deadline: Instant) -> EngineResult<()> {
        self.election.check_serving()?;
        let result = tokio::time::timeout_at(deadline, self.raft.add_learner(id, node, true))
            .await
            .map_err(|_| ApiError::Unknown("deadline passed while adding the learner".into()))?;
        result.map(|_| ()).map_err(membership_error)
    }

    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        deadline: Instant,
    ) -> EngineResult<()> {
        self.election.check_serving()?;
        let change = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false);
        let result = tokio::time::timeout_at(deadline, change)
            .await
            .map_err(|_| ApiError::Unknown("deadline passed while changing voters".into()))?;
        result.map(|_| ()).map_err(membership_error)
    }
}

/// openraft's snapshot policy counts log entries, and an entry carries a whole batch of
/// writes: this also builds a snapshot (after which openraft compacts the log) once `every`
/// writes were applied since the last one, so the log kept in memory is bounded in writes.
async fn snapshot_by_writes(raft: Raft, state: SharedState, every: u64) {
    let mut tick = tokio::time::interval(SNAPSHOT_CHECK);
    loop {
        tick.tick().await;
        if state.read().writes_since_snapshot >= every && raft.trigger().snapshot().await.is_err() {
            return; // Raft has shut down.
        }
    }
}

/// The proposer: takes every write waiting (once a proposal slot is free), proposes them as
/// one log entry and answers each with its own result.
async fn propose_writes(
    raft: Raft,
    election: Arc<Election>,
    mut queue: mpsc::Receiver<PendingWrite>,
) {
    let slots = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT));
    let mut waiting = Vec::with_capacity(WRITE_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut waiting, WRITE_BATCH).await == 0 {
            return;
        }
        // A writer whose deadline passed has stopped waiting: its write is left out (it was
        // answered "unknown", and not applying it is one of the outcomes that allows).
        let (commands, replies): (Vec<_>, Vec<_>) = waiting
            .drain(..)
            .filter(|w| !w.reply.is_closed())
            .map(|w| (w.command, w.reply))
            .unzip();
        if commands.is_empty() {
            continue;
        }
        // A leader that stepped aside proposes nothing: its entries could reach a follower
        // that still hears it, renewing the lease that holds the connected majority back.
        if let Err(e) = election.check_serving() {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            continue;
        }
        // Only a leader proposes: a member that is not one redirects before anything is
        // appended, so "not applied" (or forwarding) is true of every write it refuses.
        if let Some(e) = not_leader(&raft) {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            continue;
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let outcome = raft.client_write(Batch(commands)).await;
            drop(slot);
            match outcome {
                Ok(response) => {
                    for (reply, result) in replies.into_iter().zip(response.data) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    // The entry may have been appended and replicated before leadership moved
                    // (openraft answers ForwardToLeader when this member truncates it, yet a
                    // follower holding it can still win an election and commit it): the
                    // outcome is unknown, and forwarding would apply the write twice.
                    let e: EngineError = ApiError::Unknown(format!(
                        "{e} after the write was proposed; it may or may not take effect"
                    ))
                    .into();
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// The read confirmer: takes every waiting read, runs one round, answers them all.
async fn confirm_reads(
    raft: Raft,
    election: Arc<Election>,
    mut queue: mpsc::Receiver<oneshot::Sender<EngineResult<()>>>,
    round_timeout: Duration,
) {
    let mut waiting = Vec::with_capacity(READ_BATCH);
    while queue.recv_many(&mut waiting, READ_BATCH).await > 0 {
        let round = async {
            election.check_serving()?;
            confirm_once(&raft).await
        };
        let result = match tokio::time::timeout(round_timeout, round).await {
            Ok(result) => result,
            Err(_) => {
                Err(ApiError::Unknown("deadline passed while confirming leadership".into()).into())
            }
        };
        for w in waiting.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// Confirms leadership with a quorum (read index), then waits until everything in the
/// leader's log when the round began is applied. Waiting for the last log index rather than
/// the committed one keeps reads linearizable on a leader restored after a restart, whose
/// committed index may lag what it had acknowledged (the committed index is not fsynced).
async fn confirm_once(raft: &Raft) -> EngineResult<()> {
    let last_log_index = raft.metrics().borrow().last_log_index;
    match raft.ensure_linearizable().await {
        Ok(_) => {}
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
            return Err(redirect(to))
        }
        Err(e) => return Err(ApiError::NotApplied(e.to_string()).into()),
    }
    raft.wait(None)
        .applied_index_at_least(last_log_index, "linearizable read")
        .await
        .map(|_| ())
        .map_err(|e| ApiError::NotApplied(e.to_string()).into())
}
