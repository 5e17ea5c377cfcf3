//! The status a member reports at `/v1/status` (JSON, camelCase): the engine's part and what
//! every mode shares.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::faults::{FaultCounters, FaultSet};
use crate::identity::Incarnation;
use crate::quorum::QuorumStatus;
use crate::types::NodeId;

/// How far one peer is behind, as the leader or primary sees it (the wire type).
pub use caplab_api::status::PeerStatus;

/// The part of the status an engine knows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    pub replication: &'static str,
    pub role: &'static str,
    /// Raft term, or the primary's epoch.
    pub term: u64,
    /// The Raft leader or the primary.
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The last entry folded into the snapshot the log is compacted behind (0: none).
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub peers: BTreeMap<NodeId, PeerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded_writes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub id: NodeId,
    /// Drawn when the data directory was first initialised; 16 lowercase hex characters.
    pub incarnation: Incarnation,
    /// The cluster id this member accepts peer messages for (`None`: any).
    pub cluster_id: Option<String>,
    /// Whether this member is a voter (Raft) or in the primary's member set; a member removed
    /// from the voters reports `false` and role `learner` or `removed`, never `leader`.
    pub voter: bool,
    /// Primary modes: this member was the primary before it restarted and serves nothing
    /// until it has confirmed its epoch with a majority (role `fenced` meanwhile).
    pub fenced: bool,
    #[serde(flatten)]
    pub engine: EngineStatus,
    /// Peer messages refused with 421 because they named another cluster, member or
    /// incarnation.
    pub misdirected_messages: u64,
    pub paused: bool,
    /// Milliseconds since the Unix epoch by this member's clock (clock skew included).
    pub clock_ms: u64,
    pub faults: FaultSet,
    pub fault_counters: BTreeMap<NodeId, FaultCounters>,
    /// Quorum mode: N, R, W, reachability and the last-writer-wins counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
}
