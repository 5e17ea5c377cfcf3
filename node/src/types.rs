//! The Raft type configuration and the commands replicated through the log.

use std::io::Cursor;

use caplab_api::identity::Incarnation;
use serde::{Deserialize, Serialize};

/// Members are identified by a positive integer that is never reused for a member whose data
/// was lost (a new identity is required to rejoin, as Raft demands).
pub use caplab_api::NodeId;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum CommandResult {
    /// The register now holds `value`.
    Applied { value: i64 },
    /// A compare-and-set found `current` instead of the expected value and changed nothing.
    CasMismatch { current: i64 },
}

/// The commands one Raft log entry carries: the writes that were waiting at the leader when
/// it proposed the entry, applied in this order. openraft 0.9 makes each entry durable on the
/// leader before taking the next, so one entry per write would cost one fsync per write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Batch(pub Vec<Command>);

impl Batch {
    /// About how many bytes the batch takes as JSON (keys dominate; numbers and field names
    /// are bounded).
    pub fn approx_bytes(&self) -> usize {
        self.0.iter().map(|c| c.key().len() + 64).sum()
    }
}

impl Command {
    pub fn key(&self) -> &str {
        match self {
            Command::Write { key, .. } | Command::Cas { key, .. } => key,
        }
    }
}

/// One result per command of a [`Batch`], in the same order (none for entries that carry no
/// commands: blank and membership entries).
pub type BatchResults = Vec<CommandResult>;

/// A member as the Raft membership records it: its peer address and, once known, its
/// incarnation, so that a member that lost its data and came back under the same id is never
/// taken for the voter it replaced (messages to it carry the recorded incarnation and are
/// refused with 421).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `host:port` of the member's peer listener.
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Incarnation>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = BatchResults,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
