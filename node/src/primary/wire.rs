//! The messages between members of a primary–secondary cluster (JSON on the peer port).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::entries::{LogEntry, Snapshot};
use crate::types::NodeId;

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

/// A member's answer to [`EPOCH`](caplab_api::paths::EPOCH): the epoch it knows and the primary it follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochView {
    pub epoch: u64,
    pub primary: Option<NodeId>,
}
