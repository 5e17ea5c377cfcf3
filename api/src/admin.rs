//! The admin API on the peer port (bearer token; identity headers, see
//! [`crate::identity`]): bodies and answers.
//!
//! | call | path | body | answer |
//! |---|---|---|---|
//! | bootstrap | `POST /v1/admin/init` | [`InitRequest`] | [`Ack`] |
//! | add a learner (leader) | `POST /v1/admin/learners` | [`MemberEntry`] | [`Ack`] |
//! | set the voters (leader) | `PUT /v1/admin/voters` | [`VotersRequest`] | [`Ack`] |
//! | hand over leadership | `POST /v1/admin/transfer-leader` | [`TransferRequest`] | [`Ack`] with `epoch` (Raft: 501) |
//! | become primary | `POST /v1/admin/promote` | [`PromoteRequest`] (optional) | [`Ack`] with `epoch` |
//! | follow a primary | `PUT /v1/admin/primary` | [`MemberEntry`] | [`Ack`] |
//! | address book | `PUT`/`GET /v1/admin/peers` | [`PeersRequest`] | [`PeersView`] |
//! | faults | `PUT`/`GET /v1/admin/faults` | [`crate::faults::FaultSet`] | [`crate::faults::FaultsView`] |
//! | force a 2pc decision | `POST /v1/admin/2pc/decide` | [`HeuristicRequest`] | [`Ack`] |

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::{Incarnation, PeerAddr};
use crate::NodeId;

/// `POST /v1/admin/init`: the first members, the receiver among them (member id → entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    pub members: BTreeMap<NodeId, PeerAddr>,
}

/// One member and where it is: the body of `POST /v1/admin/learners` (the member to add) and
/// of `PUT /v1/admin/primary` (the primary to follow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub id: NodeId,
    pub addr: PeerAddr,
}

/// `PUT /v1/admin/voters`: the Raft voters, or in the primary modes the member set (every
/// secondary in it receives the log; sync writes wait for all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotersRequest {
    pub voters: BTreeSet<NodeId>,
}

/// `POST /v1/admin/transfer-leader`: `{"to": 3}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub to: NodeId,
}

/// `POST /v1/admin/promote`: the new epoch must be at least `epoch` (default, or no body: one
/// more than the member's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `PUT /v1/admin/peers`: the whole address book (member id → entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersRequest {
    pub peers: BTreeMap<NodeId, PeerAddr>,
}

/// The answer of `GET`/`PUT /v1/admin/peers`: the address book (`host:port` per member id)
/// and the incarnations known, given or pinned from answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersView {
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    pub peers: BTreeMap<NodeId, String>,
}

/// A decision on a two-phase-commit transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Commit,
    Abort,
}

impl Decision {
    /// The wire name: `commit` or `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        }
    }
}

/// `POST /v1/admin/2pc/decide`: a person forces `decision` on transaction `txid`, which this
/// member holds in doubt (a *heuristic* decision, as XA and other transaction managers allow:
/// it may differ from the coordinator's, and is counted and reported as such). `{"txid": 7,
/// "decision": "abort"}`; the transaction ids in doubt are in the status
/// (`twopc.inDoubtTransactions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeuristicRequest {
    pub txid: u64,
    pub decision: Decision,
}

/// A successful admin call: `{"ok": true}`, with the member's epoch after a transfer or a
/// promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub ok: bool,
}

impl Ack {
    /// `{"ok": true}`.
    pub const OK: Ack = Ack {
        epoch: None,
        ok: true,
    };

    /// `{"ok": true, "epoch": epoch}`.
    pub fn with_epoch(epoch: u64) -> Self {
        Ack {
            epoch: Some(epoch),
            ok: true,
        }
    }
}

/// An address book the member refuses (400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("member ids start at 1")]
    ZeroId,
    #[error("address {0:?} is not host:port")]
    NotHostPort(String),
    #[error("members {first} and {second} share the address {addr}: give each member its own")]
    Shared {
        first: NodeId,
        second: NodeId,
        addr: String,
    },
}

/// Checks `host:port` with a non-empty host and a port from 1 to 65535.
pub fn validate_addr(addr: &str) -> Result<(), AddressError> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        Err(AddressError::NotHostPort(addr.to_string()))
    }
}

/// Checks an address book: ids from 1, every address `host:port`, no address twice.
pub fn validate_members(members: &BTreeMap<NodeId, PeerAddr>) -> Result<(), AddressError> {
    if members.contains_key(&0) {
        return Err(AddressError::ZeroId);
    }
    members.values().try_for_each(|e| validate_addr(e.addr()))?;
    let mut seen: BTreeMap<&str, NodeId> = BTreeMap::new();
    for (id, entry) in members {
        if let Some(first) = seen.insert(entry.addr(), *id) {
            return Err(AddressError::Shared {
                first,
                second: *id,
                addr: entry.addr().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(validate_addr("10.0.0.5:7000").is_ok());
        assert!(validate_addr("demo-0.demo:7000").is_ok());
        assert!(validate_addr("10.0.0.5").is_err());
        assert!(validate_addr(":7000").is_err());
        assert!(validate_addr("h:99999").is_err());
        assert!(validate_addr("h:0").is_err());
    }

    #[test]
    fn address_books() {
        let book = |entries: &[(NodeId, &str)]| {
            entries
                .iter()
                .map(|(id, a)| (*id, PeerAddr::Plain(a.to_string())))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(validate_members(&book(&[(1, "a:1"), (2, "b:1")])).is_ok());
        assert_eq!(
            validate_members(&book(&[(0, "a:1")])),
            Err(AddressError::ZeroId)
        );
        let shared = validate_members(&book(&[(1, "a:1"), (2, "a:1")])).unwrap_err();
        assert_eq!(
            shared.to_string(),
            "members 1 and 2 share the address a:1: give each member its own"
        );
    }

    #[test]
    fn acks_and_optional_promote_bodies() {
        assert_eq!(serde_json::to_string(&Ack::OK).unwrap(), r#"{"ok":true}"#);
        assert_eq!(
            serde_json::to_string(&Ack::with_epoch(3)).unwrap(),
            r#"{"epoch":3,"ok":true}"#
        );
        assert_eq!(
            serde_json::to_string(&PromoteRequest::default()).unwrap(),
            "{}"
        );
    }
}
