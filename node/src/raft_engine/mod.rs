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

use crate::election::{Election, ElectionTiming};
use crate::election_clock::ElectionClock;
use crate::engine::{Consistency, ReplicationEngine, Unsupported};
use crate::network::PeerClient;
use crate::read_lease::{Leadership, ReadLease};
use crate::store::{LogStore, SharedState};
use crate::types::{Batch, Command, CommandResult, Entry, Node, NodeId, Raft, TypeConfig};
use caplab_api::status::{EngineStatus, PeerStatus, Replication, Role};
use caplab_api::tail::TailEntry;

mod error;

pub use error::RaftEngineError;

type RaftResult<T> = Result<T, RaftEngineError>;

pub struct RaftEngine {
    pub raft: Raft,
    pub state: SharedState,
    pub committed: Arc<AtomicU64>,
    /// The log openraft writes, read for `GET /v1/log`.
    log: LogStore,
    reads: mpsc::Sender<oneshot::Sender<RaftResult<()>>>,
    /// Granted by the read confirmer's successful rounds; reads under it need no round.
    lease: Arc<ReadLease>,
    writes: mpsc::Sender<PendingWrite>,
    /// Pre-vote and check-quorum (openraft's own election timer is off).
    pub election: Arc<Election>,
}

/// Confirmations of leadership collected into one round.
const READ_BATCH: usize = 4096;

/// Writes proposed together as one log entry, at most.
const WRITE_BATCH: usize = 1024;

/// Log entries proposed and not yet applied, at most. openraft 0.9's core waits for each
/// entry's fsync before it takes the next, so while a few entries are in flight the writes
/// arriving meanwhile queue up and go into one entry; two in flight let one entry replicate
/// while the next is written.
const PROPOSALS_IN_FLIGHT: usize = 2;

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<RaftResult<CommandResult>>,
}

fn redirect(to: ForwardToLeader<NodeId, Node>) -> RaftEngineError {
    RaftEngineError::NotLeader {
        leader: to.leader_id,
        addr: to.leader_node.map(|n| n.addr),
    }
}

/// `Some(redirect)` when this member is not the leader now (to the leader it knows, if any).
fn not_leader(raft: &Raft) -> Option<RaftEngineError> {
    let m = raft.metrics();
    let m = m.borrow();
    if m.state == ServerState::Leader {
        return None;
    }
    let leader = m.current_leader;
    let addr = leader
        .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
        .map(|n| n.addr);
    Some(RaftEngineError::NotLeader { leader, addr })
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> RaftEngineError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => redirect(to),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            RaftEngineError::MembershipConflict(e.to_string())
        }
        e => RaftEngineError::NotApplied(e.to_string()),
    }
}

impl RaftEngine {
    pub fn new(
        raft: Raft,
        state: SharedState,
        log: LogStore,
        peers: Arc<PeerClient>,
        round_timeout: Duration,
        timing: ElectionTiming,
        snapshot_writes: u64,
    ) -> Self {
        let clock = ElectionClock::new(log.sync_time());
        let election = Election::start(raft.clone(), peers.id, peers, timing, clock);
        let (reads, read_queue) = mpsc::channel(READ_BATCH);
        let lease = Arc::new(ReadLease::new(timing.read_lease));
        tokio::spawn(confirm_reads(
            Confirmer {
                raft: raft.clone(),
                election: election.clone(),
                lease: lease.clone(),
                round_timeout,
            },
            read_queue,
        ));
        let (writes, write_queue) = mpsc::channel(WRITE_BATCH * PROPOSALS_IN_FLIGHT);
        tokio::spawn(propose_writes(raft.clone(), election.clone(), write_queue));
        tokio::spawn(crate::store::snapshot_by_writes(
            raft.clone(),
            state.clone(),
            snapshot_writes,
        ));
        Self {
            raft,
            state,
            committed: log.committed_index(),
            log,
            reads,
            lease,
            writes,
            election,
        }
    }

    /// Hands a leader's AppendEntries to openraft; one it accepts restarts the election timer.
    /// One from the leader this member already follows restarts it on arrival too: openraft
    /// answers only after this member's sync, and when that outlasts the leader's deadline
    /// (a heartbeat) the leader hangs up and this future is dropped before it could.
    pub fn append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> + 'static
    {
        let (raft, election) = (self.raft.clone(), self.election.clone());
        let from_own_leader =
            request.vote.is_committed() && raft.metrics().borrow().vote == request.vote;
        if from_own_leader {
            election.heard_from_leader();
        }
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

    async fn propose(&self, command: Command, deadline: Instant) -> RaftResult<i64> {
        let (reply, applied) = oneshot::channel();
        self.writes
            .send(PendingWrite { command, reply })
            .await
            .map_err(|_| RaftEngineError::ShuttingDown)?;
        let unknown = |why: &str| {
            RaftEngineError::Unknown(format!("{why}; the write may or may not take effect"))
        };
        match tokio::time::timeout_at(deadline, applied).await {
            Ok(Ok(Ok(CommandResult::Applied { value }))) => Ok(value),
            Ok(Ok(Ok(CommandResult::CasMismatch { current }))) => {
                Err(RaftEngineError::CasMismatch { current })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(unknown("the write was dropped while in flight")),
            Err(_) => Err(unknown("deadline passed after the write was queued")),
        }
    }

    fn read_local(&self, key: &str) -> i64 {
        self.state.read().registers.read(key)
    }

    /// Reads the applied state under the read lease when this leader holds one; otherwise
    /// waits for a leadership confirmation round that started after this call (rounds are
    /// shared by every read waiting for one), then reads it.
    async fn read_linearizable(&self, key: &str, deadline: Instant) -> RaftResult<i64> {
        if let Some(value) = self.read_under_lease(key) {
            return Ok(value);
        }
        let (reply, confirmed) = oneshot::channel();
        self.reads
            .send(reply)
            .await
            .map_err(|_| RaftEngineError::ShuttingDown)?;
        match tokio::time::timeout_at(deadline, confirmed).await {
            Ok(Ok(result)) => result.map(|()| self.read_local(key)),
            Ok(Err(_)) => Err(RaftEngineError::ShuttingDown),
            Err(_) => Err(confirm_timeout()),
        }
    }

    /// The applied value of `key` when this member leads under a read lease (see
    /// `read_lease.rs`: every acknowledged write is applied here, and no other leader can
    /// exist yet); `None` otherwise. A lease past its middle asks for a renewal round that no
    /// read waits for.
    fn read_under_lease(&self, key: &str) -> Option<i64> {
        let remaining = self.lease.remaining(|| {
            self.election.check_serving().ok()?;
            Leadership::of(&self.raft)
        })?;
        if self.lease.wants_renewal(remaining) {
            let (renewal, _) = oneshot::channel();
            let _ = self.reads.try_send(renewal);
        }
        Some(self.read_local(key))
    }

    /// The leader openraft names (`current`, with this member in `state`), unless this member
    /// stepped aside as leader, or follows a leader it has not heard from for two election
    /// timeouts (openraft names a leader until a newer vote replaces it, dead or not).
    fn reachable_leader(&self, state: ServerState, current: Option<NodeId>) -> Option<NodeId> {
        let out_of_reach = if state == ServerState::Leader {
            self.election.stepped_aside()
        } else {
            self.election.leader_out_of_reach()
        };
        current.filter(|_| !out_of_reach)
    }

    /// The member's status; a leader that stepped aside for lack of a quorum reports itself
    /// as a follower that knows no leader, which is how it behaves, and a follower cut off
    /// from its leader for two election timeouts knows no leader either (pre-vote keeps it
    /// from campaigning, so openraft would go on naming the leader it cannot reach).
    fn raft_status(&self, contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        let mut m = self.raft.metrics().borrow().clone();
        m.current_leader = self.reachable_leader(m.state, m.current_leader);
        if self.election.stepped_aside() {
            m.state = ServerState::Follower;
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
            replication: Replication::Raft,
            role: role(m.state),
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

    fn voters(&self) -> BTreeSet<NodeId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().voter_ids().collect()
    }
}

/// A log entry in words: its writes, `membership` or `blank` (a new leader's first entry).
fn tail_entry(entry: &Entry) -> TailEntry {
    let op = match &entry.payload {
        openraft::EntryPayload::Blank => "blank".to_string(),
        openraft::EntryPayload::Normal(Batch(commands)) => crate::tail::describe_all(commands),
        openraft::EntryPayload::Membership(m) => {
            format!("membership {:?}", m.voter_ids().collect::<Vec<_>>())
        }
    };
    TailEntry::new(entry.log_id.index, Some(entry.log_id.leader_id.term), op)
}

/// Raft through openraft 0.9: writes are batched into log entries by one proposer,
/// linearizable reads share leadership-confirmation rounds (read index, Raft thesis §6.4),
/// membership changes are openraft's joint consensus.
impl ReplicationEngine for RaftEngine {
    type Error = RaftEngineError;

    fn mode(&self) -> &'static str {
        "raft"
    }

    async fn write(&self, command: Command, deadline: Instant) -> RaftResult<i64> {
        self.propose(command, deadline).await
    }

    async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        deadline: Instant,
    ) -> RaftResult<i64> {
        match consistency {
            Consistency::Local => Ok(self.read_local(key)),
            Consistency::Linearizable => self.read_linearizable(key, deadline).await,
        }
    }

    async fn status(&self, contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        self.raft_status(contacts)
    }

    async fn log_tail(&self, limit: usize) -> Vec<TailEntry> {
        self.log.tail(limit, tail_entry)
    }

    async fn members(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    fn set_paused(&self, paused: bool) {
        self.election.set_paused(paused);
    }

    /// Only while no reachable leader is known (none, or one out of reach): a leader brings
    /// the others in by replicating the membership, and an `init` passed on then would do
    /// harm, as openraft's `initialize` always starts an election: a blank member would
    /// campaign at term 1 and, its vote ordering above the leader's (openraft orders a
    /// term's votes by member id), depose it.
    fn init_every_member(&self) -> bool {
        let (state, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_leader)
        };
        self.reachable_leader(state, leader).is_none()
    }

    async fn initialize(&self, nodes: BTreeMap<NodeId, Node>) -> RaftResult<()> {
        match self.raft.initialize(nodes.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                let voters = self.voters();
                if voters == nodes.keys().copied().collect() {
                    Ok(())
                } else {
                    Err(RaftEngineError::AlreadyInitialized(voters))
                }
            }
            Err(e) => Err(RaftEngineError::InitRefused(e.to_string())),
        }
    }

    async fn add_learner(&self, id: NodeId, node: Node, deadline: Instant) -> RaftResult<()> {
        self.election.check_serving()?;
        let result = tokio::time::timeout_at(deadline, self.raft.add_learner(id, node, true))
            .await
            .map_err(|_| {
                RaftEngineError::Unknown("deadline passed while adding the learner".into())
            })?;
        result.map(|_| ()).map_err(membership_error)
    }

    async fn set_voters(&self, voters: BTreeSet<NodeId>, deadline: Instant) -> RaftResult<()> {
        self.election.check_serving()?;
        let change = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false);
        let result = tokio::time::timeout_at(deadline, change)
            .await
            .map_err(|_| {
                RaftEngineError::Unknown("deadline passed while changing voters".into())
            })?;
        result.map(|_| ()).map_err(membership_error)
    }

    async fn transfer_leader(&self, _to: NodeId, _deadline: Instant) -> RaftResult<u64> {
        Err(Unsupported::NotImplemented(
            "openraft 0.9 has no leadership transfer; remove the leader from the voters \
             instead (it steps down once the change commits)"
                .into(),
        )
        .into())
    }
}

fn confirm_timeout() -> RaftEngineError {
    RaftEngineError::Unknown("deadline passed while confirming leadership".into())
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
            let e = RaftEngineError::from(e);
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
                    let e = RaftEngineError::Unknown(format!(
                        "{e} after the write was proposed; it may or may not take effect"
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// What the read confirmer works with.
struct Confirmer {
    raft: Raft,
    election: Arc<Election>,
    lease: Arc<ReadLease>,
    round_timeout: Duration,
}

/// The read confirmer: takes every waiting read, runs one round, answers them all; a
/// successful round grants the read lease from the moment it began.
async fn confirm_reads(c: Confirmer, mut queue: mpsc::Receiver<oneshot::Sender<RaftResult<()>>>) {
    let mut waiting = Vec::with_capacity(READ_BATCH);
    while queue.recv_many(&mut waiting, READ_BATCH).await > 0 {
        let started = Instant::now();
        let leadership = Leadership::of(&c.raft);
        let round = async {
            c.election.check_serving()?;
            confirm_once(&c.raft).await
        };
        let result = match tokio::time::timeout(c.round_timeout, round).await {
            Ok(result) => result,
            Err(_) => Err(confirm_timeout()),
        };
        if let (Ok(()), Some(leadership)) = (&result, leadership) {
            c.lease.grant(leadership, started);
        }
        for w in waiting.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// Confirms leadership with a quorum (read index), then waits until everything in the
/// leader's log when the round began is applied. Waiting for the last log index rather than
/// the committed one keeps reads linearizable on a leader restored after a restart, whose
/// committed index may lag what it had acknowledged (the committed index is not fsynced).
async fn confirm_once(raft: &Raft) -> RaftResult<()> {
    let last_log_index = raft.metrics().borrow().last_log_index;
    match raft.ensure_linearizable().await {
        Ok(_) => {}
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
            return Err(redirect(to))
        }
        Err(e) => return Err(RaftEngineError::NotApplied(e.to_string())),
    }
    raft.wait(None)
        .applied_index_at_least(last_log_index, "linearizable read")
        .await
        .map(|_| ())
        .map_err(|e| RaftEngineError::NotApplied(e.to_string()))
}
