//! The quorum engine behind the member's engine interface ([`ReplicationEngine`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::error::QuorumError;
use super::QuorumEngine;
use crate::engine::{Consistency, EngineError, Outcome, ReplicationEngine, Unsupported};
use crate::types::{Command, Node, NodeId};
use caplab_api::status::{EngineStatus, PeerStatus, Replication, Role, Status};

impl EngineError for QuorumError {
    fn outcome(&self) -> Outcome {
        match self {
            QuorumError::BadRequest(_) => Outcome::Invalid,
            QuorumError::NotApplied(_) | QuorumError::Storage(_) => Outcome::NotApplied,
            QuorumError::Unknown(_) => Outcome::Unknown,
            QuorumError::Unsupported(u) => u.outcome(),
        }
    }
}

impl From<Unsupported> for QuorumError {
    fn from(u: Unsupported) -> Self {
        QuorumError::Unsupported(u)
    }
}

impl ReplicationEngine for Arc<QuorumEngine> {
    type Error = QuorumError;

    fn mode(&self) -> &'static str {
        "quorum"
    }

    async fn write(&self, command: Command, deadline: Instant) -> Result<i64, QuorumError> {
        match command {
            Command::Write { key, value } => QuorumEngine::write(self, &key, value, deadline).await,
            Command::Cas { .. } => Err(QuorumError::cas_refused()),
        }
    }

    async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<i64, QuorumError> {
        match consistency {
            Consistency::Linearizable => QuorumEngine::read(self, key, deadline).await,
            Consistency::Local => self.read_local(key).await,
        }
    }

    async fn log_tail(&self, limit: usize) -> Vec<caplab_api::tail::TailEntry> {
        let stored = self.replica.recent.last(limit);
        stored.iter().map(|s| s.entry()).collect()
    }

    async fn status(&self, _contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        let replicas = self.quorum_status().replicas;
        let members: Vec<NodeId> = replicas.keys().copied().collect();
        let peers = replicas
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, reach)| {
                let peer = PeerStatus {
                    match_index: None,
                    lag_entries: 0,
                    lag_ms: None,
                    last_contact_ms: reach.last_contact_ms,
                };
                (*id, peer)
            })
            .collect();
        EngineStatus {
            replication: Replication::Quorum,
            // Every member coordinates and stores: no leader, no followers.
            role: Role::Replica,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            snapshot_index: 0,
            voters: members,
            learners: Vec::new(),
            peers,
            discarded_writes: None,
        }
    }

    async fn members(&self) -> BTreeSet<NodeId> {
        QuorumEngine::members(self)
    }

    /// The `quorum` section: N, R, W, reachability and the counters.
    fn extend_status(&self, status: &mut Status) {
        status.quorum = Some(self.quorum_status());
    }

    /// Leaderless: ready while enough replicas answer to serve R and W.
    fn ready(&self, _status: &Status) -> Result<(), String> {
        self.readiness()
    }

    /// Every member must hold the membership: it is what a coordinator sends to.
    fn init_every_member(&self) -> bool {
        true
    }

    async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<(), QuorumError> {
        self.set_members(members.into_keys().collect()).await
    }

    async fn add_learner(
        &self,
        id: NodeId,
        _node: Node,
        _deadline: Instant,
    ) -> Result<(), QuorumError> {
        let mut members = QuorumEngine::members(self);
        members.insert(id);
        self.set_members(members).await
    }

    async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        _deadline: Instant,
    ) -> Result<(), QuorumError> {
        self.set_members(voters).await
    }
}
