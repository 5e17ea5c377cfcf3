//! One member: the Raft node plus the operations the client and admin APIs offer on it.
//! Followers forward writes, compare-and-sets and linearizable reads to the leader over the
//! peer port, so any member accepts any operation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::api::error::{ApiError, Forwarded};
use crate::faults::{FaultCounters, FaultSet, Faults};
use crate::metrics::Metrics;
use crate::network::PeerClient;
use crate::store::SharedState;
use crate::types::{Command, CommandResult, NodeId, Raft};

pub const FORWARD_WRITE_PATH: &str = "/raft/forward/write";
pub const FORWARD_READ_PATH: &str = "/raft/forward/read";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Local,
}

/// The result of an operation: a register value, or the leader's own answer when forwarded.
pub enum Reply {
    Value(i64),
    Forwarded(Forwarded),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub match_index: Option<u64>,
    pub lag_entries: u64,
    pub last_contact_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub id: NodeId,
    pub replication: &'static str,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub peers: BTreeMap<NodeId, PeerStatus>,
    pub paused: bool,
    /// Milliseconds since the Unix epoch by this member's clock (clock skew included).
    pub clock_ms: u64,
    pub faults: FaultSet,
    pub fault_counters: BTreeMap<NodeId, FaultCounters>,
}

pub struct Member {
    pub id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub faults: Arc<Faults>,
    pub peers: Arc<PeerClient>,
    pub metrics: Arc<Metrics>,
    pub committed: Arc<AtomicU64>,
    pub request_timeout: Duration,
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

impl Member {
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// Waits out a pause (a paused member answers nobody until resumed or the deadline).
    pub async fn gate(&self, deadline: Instant) -> Result<(), ApiError> {
        if self.faults.wait_unpaused(deadline).await {
            Ok(())
        } else {
            Err(ApiError::NotApplied(
                "member is paused by an injected fault".into(),
            ))
        }
    }

    pub async fn write(&self, command: Command, may_forward: bool) -> Result<Reply, ApiError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        let result = match tokio::time::timeout_at(
            deadline,
            self.raft.client_write(command.clone()),
        )
        .await
        {
            Err(_) => {
                return Err(ApiError::Unknown(
                    "deadline passed after the write was proposed; it may or may not take effect"
                        .into(),
                ))
            }
            Ok(result) => result,
        };
        match result {
            Ok(response) => match response.data {
                CommandResult::Applied { value } => Ok(Reply::Value(value)),
                CommandResult::CasMismatch { current } => Err(ApiError::CasMismatch { current }),
                CommandResult::None => {
                    Err(ApiError::Unknown("log entry carried no command".into()))
                }
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) if may_forward => {
                self.forward(to, FORWARD_WRITE_PATH, &command, deadline, true)
                    .await
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                ApiError::NotApplied("this member is no longer the leader".into()),
            ),
            Err(e) => Err(ApiError::NotApplied(e.to_string())),
        }
    }

    pub async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        may_forward: bool,
    ) -> Result<Reply, ApiError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        if consistency == Consistency::Local {
            return Ok(Reply::Value(self.state.read().registers.read(key)));
        }
        let confirmed = tokio::time::timeout_at(deadline, self.raft.ensure_linearizable())
            .await
            .map_err(|_| ApiError::Unknown("deadline passed while confirming leadership".into()))?;
        match confirmed {
            Ok(_) => Ok(Reply::Value(self.state.read().registers.read(key))),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) if may_forward => {
                let request = ReadRequest {
                    key: key.to_string(),
                };
                self.forward(to, FORWARD_READ_PATH, &request, deadline, false)
                    .await
            }
            Err(e) => Err(ApiError::NotApplied(e.to_string())),
        }
    }

    /// Sends an operation to the leader and relays its answer. `effectful` operations whose
    /// request may have reached the leader end as "unknown" when no answer comes back.
    async fn forward(
        &self,
        to: ForwardToLeader<NodeId, BasicNode>,
        path: &str,
        body: &impl Serialize,
        deadline: Instant,
        effectful: bool,
    ) -> Result<Reply, ApiError> {
        let Some(leader) = to.leader_id else {
            return Err(ApiError::NotApplied("no leader is known".into()));
        };
        let fallback = to.leader_node.as_ref().map(|n| n.addr.as_str());
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .peers
            .post(leader, fallback, path, body, remaining)
            .await
        {
            Ok(response) => Ok(Reply::Forwarded(Forwarded::from_response(response).await?)),
            Err(e) if e.not_sent() || !effectful => Err(ApiError::NotApplied(e.to_string())),
            Err(e) => Err(ApiError::Unknown(e.to_string())),
        }
    }

    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let contacts = self.peers.last_contact_ms();
        let peers = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, matched)| {
                let match_index = matched.map(|l| l.index);
                let status = PeerStatus {
                    match_index,
                    lag_entries: last_log_index.saturating_sub(match_index.unwrap_or(0)),
                    last_contact_ms: contacts.get(id).copied(),
                };
                (*id, status)
            })
            .collect();
        Status {
            id: self.id,
            replication: "raft",
            role: role_name(m.state),
            term: m.current_term,
            leader: m.current_leader,
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            peers,
            paused: self.faults.is_paused(),
            clock_ms: self
                .faults
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            faults: self.faults.current(),
            fault_counters: self.faults.counters(),
        }
    }

    /// Ready to serve: a leader is known and everything known committed has been applied.
    pub fn is_ready(&self) -> bool {
        let s = self.status();
        s.leader.is_some() && s.applied_index >= s.commit_index && !s.paused
    }

    pub fn refresh_gauges(&self) {
        let s = self.status();
        self.metrics.term.set(s.term as i64);
        self.metrics.commit_index.set(s.commit_index as i64);
        self.metrics.applied_index.set(s.applied_index as i64);
    }

    /// Every member id this node knows of: membership plus address book.
    pub fn known_members(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        let mut ids: BTreeSet<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        ids.extend(self.peers.addresses.all().into_keys());
        ids.remove(&self.id);
        ids
    }

    pub fn set_faults(&self, faults: FaultSet) -> Result<FaultSet, ApiError> {
        faults
            .validate(&self.known_members())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        // A paused member's Raft timers stand still, like a stopped process.
        let runtime = self.raft.runtime_config();
        runtime.tick(!faults.pause);
        runtime.heartbeat(!faults.pause);
        runtime.elect(!faults.pause);
        self.faults.replace(faults.clone());
        Ok(faults)
    }

    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), ApiError> {
        if !members.contains_key(&self.id) {
            return Err(ApiError::BadRequest(format!(
                "members must include this member (id {})",
                self.id
            )));
        }
        self.peers.addresses.merge(members.clone());
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(nodes.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                let m = self.raft.metrics().borrow().clone();
                let voters: BTreeSet<NodeId> =
                    m.membership_config.membership().voter_ids().collect();
                if voters == nodes.keys().copied().collect() {
                    Ok(())
                } else {
                    Err(ApiError::Conflict(format!(
                        "already initialized with voters {voters:?}; change membership instead"
                    )))
                }
            }
            Err(e) => Err(ApiError::BadRequest(e.to_string())),
        }
    }

    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
    ) -> Result<Option<Forwarded>, ApiError> {
        self.peers.addresses.merge([(id, addr.clone())]);
        let result = tokio::time::timeout_at(
            self.deadline(),
            self.raft
                .add_learner(id, BasicNode { addr: addr.clone() }, true),
        )
        .await
        .map_err(|_| ApiError::Unknown("deadline passed while adding the learner".into()))?;
        let body = serde_json::json!({ "id": id, "addr": addr });
        self.membership_outcome(result, "/v1/admin/learners", &body)
            .await
    }

    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
    ) -> Result<Option<Forwarded>, ApiError> {
        if voters.is_empty() {
            return Err(ApiError::BadRequest("voters must not be empty".into()));
        }
        let result = tokio::time::timeout_at(
            self.deadline(),
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false),
        )
        .await
        .map_err(|_| ApiError::Unknown("deadline passed while changing voters".into()))?;
        let body = serde_json::json!({ "voters": voters });
        self.membership_outcome(result, "/v1/admin/voters", &body)
            .await
    }

    /// Maps a membership change result; on a follower, relays the request to the leader.
    async fn membership_outcome<T>(
        &self,
        result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Option<Forwarded>, ApiError> {
        match result {
            Ok(_) => Ok(None),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                match self.forward(to, path, body, self.deadline(), true).await? {
                    Reply::Forwarded(f) => Ok(Some(f)),
                    Reply::Value(_) => Ok(None),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ApiError::Conflict(e.to_string()))
            }
            Err(e) => Err(ApiError::NotApplied(e.to_string())),
        }
    }
}
