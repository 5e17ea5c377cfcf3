//! What quorum members send each other on the peer port (JSON over HTTP, through the fault
//! layer like every peer message): versioned values, the store/fetch messages of the
//! coordinator, and the digest exchange of anti-entropy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A coordinator asks a replica for its version of one key: [`FetchRequest`] →
/// [`FetchResponse`].
pub use caplab_api::paths::QUORUM_FETCH as FETCH_PATH;
/// A replica stores a batch of versioned values (a client write, a read repair or an
/// anti-entropy push): [`StoreRequest`] → [`StoreResponse`].
pub use caplab_api::paths::QUORUM_STORE as STORE_PATH;
/// Anti-entropy: a replica sends its digest, the other answers what it holds newer and which
/// keys it wants: [`SyncRequest`] → [`SyncResponse`].
pub use caplab_api::paths::QUORUM_SYNC as SYNC_PATH;

/// A last-writer-wins timestamp: milliseconds since the Unix epoch by the coordinating
/// member's clock (an injected clock skew included), then that member's id to break ties.
/// Ordered by `ms`, then `node`. The all-zero stamp is the register's initial 0.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    pub ms: u64,
    pub node: NodeId,
}

/// A register value with the stamp of the write that set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: i64,
    pub stamp: Stamp,
}

/// Why a replica is asked to store a value; decides which counter a stored value moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A client write coordinated by `stamp.node`.
    Write,
    /// A coordinator found this replica behind while reading.
    ReadRepair,
    /// Another replica's background comparison found this one behind.
    AntiEntropy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRequest {
    pub kind: StoreKind,
    /// key → the version to store (kept only where it is newer than the one held).
    pub entries: BTreeMap<String, Versioned>,
}

/// Sent once the batch is durable (fsynced): every key now holds the version sent or a newer
/// one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreResponse {
    /// Keys whose held version was newer than the one sent: those writes lost to
    /// last-writer-wins on this replica.
    pub superseded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchResponse {
    /// `None`: never written on this replica (reads as 0).
    pub version: Option<Versioned>,
}

/// Most keys in one [`SyncRequest`]: keys are at most 256 bytes, so a page stays well under
/// the peer port's 2 MB request body limit however many keys a replica holds.
pub const SYNC_PAGE_KEYS: usize = 1000;

/// Every key the sender holds in a key range, with its stamp. A full digest is O(keys) per
/// round, sent in pages of at most [`SYNC_PAGE_KEYS`] keys; Dynamo (DeCandia et al., SOSP
/// 2007, §4.7) exchanges Merkle trees instead, which a register cluster of this size does not
/// need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub digest: BTreeMap<String, Stamp>,
    /// The range covers keys after this one (unset: from the first key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The range covers keys up to and including this one (unset: to the last key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// Keys the answering replica holds newer (or the sender lacks), with their versions.
    pub newer: BTreeMap<String, Versioned>,
    /// Keys the sender holds newer: it should push them.
    pub wanted: Vec<String>,
}
