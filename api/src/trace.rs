//! `GET /v1/trace` (both ports): the member's record of recent peer messages, as
//! [`TraceView`]. Each member records the messages it sends (one [`MessageEvent`] with
//! `sentMs` on its own clock) and the messages it receives (one event carrying the sender's
//! `sentMs`, read from the [`SENT_HEADER`], and `receivedMs` on the receiver's clock), and
//! whether an injected fault dropped or delayed each at its end. A message is named by its
//! sender and the sender's sequence number ([`MESSAGE_HEADER`]), so the two ends' events of one
//! message can be joined. Clock times include the member's injected skew (`skewMs`), which is
//! the point: under skew a message may be received before it was sent, by the clocks'
//! account. Lamport's space-time diagrams ("Time, Clocks, and the Ordering of Events in a
//! Distributed System", 1978) draw exactly this.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The query parameter: only events recorded at or after this time (milliseconds since the
/// Unix epoch on the member's own, skewed clock).
pub const SINCE_PARAM: &str = "since";
/// Header of a peer message: the sender's sequence number for it (decimal).
pub const MESSAGE_HEADER: &str = "x-caplab-message";
/// Header of a peer message: when it was sent, milliseconds since the Unix epoch on the
/// sender's clock (skew included).
pub const SENT_HEADER: &str = "x-caplab-sent-ms";

/// What happened to a message at the member that recorded the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// It left the sender (recorded by the sender).
    Sent,
    /// It was handed to the receiver's handler (recorded by the receiver).
    Received,
    /// It was held back by an injected delay, then handled (recorded where the delay acted).
    Delayed,
    /// An injected partition, loss or pause dropped it (recorded where it was dropped).
    Dropped,
}

/// One end of one peer message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    /// Sender id.
    pub from: NodeId,
    /// Receiver id.
    pub to: NodeId,
    /// The sender's sequence number of the message (0: a sender that does not number).
    pub number: u64,
    /// The message kind, from its route: `append`, `vote`, `pre-vote`, `leader-syncing`,
    /// `snapshot`, `forward-write`, `forward-read`, `replicate`, `epoch`, `quorum-store`,
    /// `quorum-fetch`, `quorum-sync`, `2pc-prepare`, `2pc-decide`, `2pc-members`, `2pc-query`,
    /// `healthz` or `other`.
    pub kind: String,
    /// The Raft term (or epoch) the message carries, when the sender knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// First and last log index the message carries (Raft AppendEntries), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<(u64, u64)>,
    /// Sent, on the sender's clock (ms since the Unix epoch); absent when the receiver got
    /// no [`SENT_HEADER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<u64>,
    /// Received (after any injected delay), on the receiver's clock; receiver's events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<u64>,
    pub fate: Fate,
    /// The recording member's injected clock skew when it recorded the event (ms; subtract it
    /// to read the time on an unskewed clock).
    pub skew_ms: i64,
}

/// `GET /v1/trace[?since=MS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceView {
    /// The recording member.
    pub id: NodeId,
    /// Its clock (skew included) when it answered.
    pub clock_ms: u64,
    /// Events the ring holds at most; older ones are overwritten.
    pub capacity: usize,
    /// Events recorded since the member started, overwritten ones included.
    pub recorded: u64,
    /// Oldest first.
    pub events: Vec<MessageEvent>,
}
