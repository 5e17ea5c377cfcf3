//! The Raft engine: register operations and membership through openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::time::Instant;

use crate::api::error::ApiError;
use crate::engine::{EngineError, EngineResult};
use crate::member::{EngineStatus, PeerStatus};
use crate::store::SharedState;
use crate::types::{Command, CommandResult, NodeId, Raft};

pub struct RaftEngine {
    pub raft: Raft,
    pub state: SharedState,
    pub committed: Arc<AtomicU64>,
}

fn redirect(to: ForwardToLeader<NodeId, BasicNode>) -> EngineError {
    EngineError::NotLeader {
        leader: to.leader_id,
        addr: to.leader_node.map(|n| n.addr),
    }
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

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> EngineError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => redirect(to),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::Conflict(e.to_string()).into()
        }
        e => ApiError::NotApplied(e.to_string()).into(),
    }
}

impl RaftEngine {
    pub async fn write(&self, command: Command, deadline: Instant) -> EngineResult<i64> {
        let result = tokio::time::timeout_at(deadline, self.raft.client_write(command))
            .await
            .map_err(|_| {
                ApiError::Unknown(
                    "deadline passed after the write was proposed; it may or may not take effect"
                        .into(),
                )
            })?;
        match result {
            Ok(response) => match response.data {
                CommandResult::Applied { value } => Ok(value),
                CommandResult::CasMismatch { current } => {
                    Err(ApiError::CasMismatch { current }.into())
                }
                CommandResult::None => {
                    Err(ApiError::Unknown("log entry carried no command".into()).into())
                }
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => Err(redirect(to)),
            Err(e) => Err(ApiError::NotApplied(e.to_string()).into()),
        }
    }

    pub fn read_local(&self, key: &str) -> i64 {
        self.state.read().registers.read(key)
    }

    pub async fn read_linearizable(&self, key: &str, deadline: Instant) -> EngineResult<i64> {
        let confirmed = tokio::time::timeout_at(deadline, self.raft.ensure_linearizable())
            .await
            .map_err(|_| ApiError::Unknown("deadline passed while confirming leadership".into()))?;
        match confirmed {
            Ok(_) => Ok(self.read_local(key)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => Err(redirect(to)),
            Err(e) => Err(ApiError::NotApplied(e.to_string()).into()),
        }
    }

    pub fn status(&self, contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        let m = self.raft.metrics().borrow().clone();
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
        let runtime = self.raft.runtime_config();
        runtime.tick(!paused);
        runtime.heartbeat(!paused);
        runtime.elect(!paused);
    }

    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> EngineResult<()> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
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

    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
        deadline: Instant,
    ) -> EngineResult<()> {
        let result = tokio::time::timeout_at(
            deadline,
            self.raft.add_learner(id, BasicNode { addr }, true),
        )
        .await
        .map_err(|_| ApiError::Unknown("deadline passed while adding the learner".into()))?;
        result.map(|_| ()).map_err(membership_error)
    }

    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        deadline: Instant,
    ) -> EngineResult<()> {
        let change = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false);
        let result = tokio::time::timeout_at(deadline, change)
            .await
            .map_err(|_| ApiError::Unknown("deadline passed while changing voters".into()))?;
        result.map(|_| ()).map_err(membership_error)
    }
}
