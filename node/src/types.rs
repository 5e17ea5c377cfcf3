//! The Raft type configuration and the commands replicated through the log.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Members are identified by a positive integer that is never reused for a member whose data
/// was lost (a new identity is required to rejoin, as Raft demands).
pub type NodeId = u64;

/// A change to one register, as stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
    Write {
        key: String,
        value: i64,
    },
    Cas {
        key: String,
        expected: i64,
        new: i64,
    },
}

/// The outcome of applying a [`Command`] to the state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum CommandResult {
    /// The register now holds `value`.
    Applied { value: i64 },
    /// A compare-and-set found `current` instead of the expected value and changed nothing.
    CasMismatch { current: i64 },
    /// Entries that carry no command (blank and membership entries).
    #[default]
    None,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
