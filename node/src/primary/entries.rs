//! What a primary–secondary member's log is made of: entries, and the snapshot the log is
//! compacted behind. Kept apart so that the in-memory log (`log.rs`) and the durable store
//! (`store.rs`) both build on them without depending on each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::register::Registers;
use crate::types::Command;

/// One replicated change, stamped with the epoch of the primary that ordered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub epoch: u64,
    pub command: Command,
}

/// The registers after applying every entry up to `seq` (whose epoch was `epoch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub seq: u64,
    pub epoch: u64,
    /// Where each epoch folded into the snapshot began: first sequence number → epoch. A
    /// member whose entries the snapshot replaces can then tell exactly which of them the
    /// primary never had. Snapshots from before this field lack the start of their history:
    /// epochs before the first start recorded are unknown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub epoch_starts: BTreeMap<u64, u64>,
    pub registers: Registers,
}

impl Snapshot {
    /// The epoch of entry `seq` folded into this snapshot (0 for seq 0); `None` past the
    /// snapshot or where its history is unknown.
    pub fn epoch_at(&self, seq: u64) -> Option<u64> {
        match seq {
            0 => Some(0),
            s if s == self.seq => Some(self.epoch),
            s if s > self.seq => None,
            s => self.epoch_starts.range(..=s).next_back().map(|(_, e)| *e),
        }
    }
}
