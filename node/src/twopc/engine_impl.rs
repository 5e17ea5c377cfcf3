//! The 2pc engine behind the member's engine interface ([`ReplicationEngine`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::error::TwoPcError;
use super::TwoPcEngine;
use crate::engine::{Consistency, ReplicationEngine};
use crate::types::{Command, Node, NodeId};
use caplab_api::status::{EngineStatus, PeerStatus, Replication, Role, Status};

impl ReplicationEngine for Arc<TwoPcEngine> {
    type Error = TwoPcError;

    fn mode(&self) -> &'static str {
        "2pc"
    }

    async fn write(&self, command: Command, deadline: Instant) -> Result<i64, TwoPcError> {
        TwoPcEngine::write(self, command, deadline).await
    }

    async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<i64, TwoPcError> {
        let linearizable = consistency == Consistency::Linearizable;
        TwoPcEngine::read(self, key, linearizable, deadline).await
    }

    /// Like a Raft leader, only the coordinator reports peers: per participant, the last
    /// transaction it acknowledged (`matchIndex`) and when it last answered.
    async fn status(&self, _contacts: &BTreeMap<NodeId, u64>) -> EngineStatus {
        let twopc = self.twopc_status();
        let coordinates = twopc.coordinator == Some(self.id);
        let role = if coordinates {
            Role::Coordinator
        } else {
            Role::Participant
        };
        let heard = self.contacts();
        let peers = twopc
            .participants
            .iter()
            .filter(|id| coordinates && **id != self.id)
            .map(|id| {
                let contact = heard.get(id);
                let peer = PeerStatus {
                    match_index: contact.map(|(_, acked)| *acked),
                    lag_entries: 0,
                    lag_ms: None,
                    last_contact_ms: contact.map(|(ms, _)| *ms),
                };
                (*id, peer)
            })
            .collect();
        EngineStatus {
            replication: Replication::TwoPc,
            role,
            term: 0,
            leader: twopc.coordinator,
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            snapshot_index: 0,
            voters: twopc.participants,
            learners: Vec::new(),
            peers,
            discarded_writes: None,
        }
    }

    async fn log_tail(&self, limit: usize) -> Vec<caplab_api::tail::TailEntry> {
        self.participant.recent.last(limit)
    }

    fn extend_status(&self, status: &mut Status) {
        status.twopc = Some(self.twopc_status());
    }

    fn ready(&self, _status: &Status) -> Result<(), String> {
        self.readiness()
    }

    async fn members(&self) -> BTreeSet<NodeId> {
        TwoPcEngine::members(self)
    }

    async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<(), TwoPcError> {
        TwoPcEngine::initialize(self, members.into_keys().collect()).await
    }

    async fn add_learner(
        &self,
        id: NodeId,
        _node: Node,
        _deadline: Instant,
    ) -> Result<(), TwoPcError> {
        let mut members = TwoPcEngine::members(self);
        members.insert(id);
        self.set_members(members).await
    }

    async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        _deadline: Instant,
    ) -> Result<(), TwoPcError> {
        self.set_members(voters).await
    }
}
