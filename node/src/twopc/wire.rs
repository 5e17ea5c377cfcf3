//! What 2pc members send each other on the peer port (JSON over HTTP, through the fault layer
//! like every peer message): PREPARE and its vote, the decision and its acknowledgement, and
//! the question an in-doubt participant asks (cooperative termination).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use caplab_api::admin::Decision;

use crate::types::{Command, NodeId};

/// A transaction id, drawn by the coordinator from its durable log (1, 2, …).
pub type TxId = u64;

/// Coordinator → participant ([`caplab_api::paths::TWOPC_PREPARE`]): can you apply `command`?
/// Answered with a [`Vote`] once the prepare record is durable (yes) or at once (no).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    pub txid: TxId,
    pub coordinator: NodeId,
    /// Every participant, the coordinator included (an in-doubt participant asks them).
    pub participants: BTreeSet<NodeId>,
    pub command: Command,
}

/// Why a participant voted no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoCause {
    /// An injected `veto` fault.
    Veto,
    /// The compare-and-set precondition does not hold against the committed value.
    CasMismatch,
    /// The key is held by another prepared transaction (no waiting: no deadlocks).
    Conflict,
    /// The participant already knows this transaction aborted (it was asked about it by an
    /// in-doubt peer before the PREPARE arrived, and promised to refuse it).
    Aborted,
}

/// A participant's answer to PREPARE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vote {
    pub yes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<NoCause>,
    /// Why not, in words (names the key and what holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The committed value, when a compare-and-set precondition failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
}

impl Vote {
    pub fn yes() -> Self {
        Vote {
            yes: true,
            cause: None,
            reason: None,
            current: None,
        }
    }

    pub fn no(cause: NoCause, reason: String) -> Self {
        Vote {
            yes: false,
            cause: Some(cause),
            reason: Some(reason),
            current: None,
        }
    }
}

/// Coordinator → participant ([`caplab_api::paths::TWOPC_DECIDE`]): apply or release;
/// answered with [`DecisionAck`] once the outcome is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub txid: TxId,
    pub decision: Decision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionAck {
    pub txid: TxId,
}

/// Participant → any member ([`caplab_api::paths::TWOPC_QUERY`]): what do you know of `txid`?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub txid: TxId,
}

/// What a member knows of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxState {
    /// Decided: commit.
    Committed,
    /// Decided: abort (or never prepared here, which this member now refuses for good).
    Aborted,
    /// This member voted yes and knows no decision either.
    Prepared,
    /// The coordinator is deciding (it answers so while its transaction runs).
    Pending,
}

impl TxState {
    /// The decision this state settles, if any.
    pub fn decision(self) -> Option<Decision> {
        match self {
            TxState::Committed => Some(Decision::Commit),
            TxState::Aborted => Some(Decision::Abort),
            TxState::Prepared | TxState::Pending => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryResponse {
    pub state: TxState,
}

/// Coordinator → member ([`caplab_api::paths::TWOPC_MEMBERS`]): the membership, sent at init,
/// on every change, and again to members that have not acknowledged it. Answered with
/// `caplab_api::admin::Ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersRequest {
    pub coordinator: NodeId,
    pub members: BTreeSet<NodeId>,
    /// member id → `host:port` of its peer listener.
    pub addresses: std::collections::BTreeMap<NodeId, String>,
}
