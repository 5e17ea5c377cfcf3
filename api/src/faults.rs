//! The fault set a member takes at `PUT /v1/admin/faults` (and reports in its status): which
//! peer messages it drops, delays or loses, whether it is paused, how far its clock is
//! skewed. Faults act on member-to-member messages only, never on clients.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;

/// Which messages a partition cuts: those this member sends, those it receives, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutDirection {
    Outgoing,
    Incoming,
    #[default]
    Both,
}

impl CutDirection {
    /// Whether messages this member sends are cut.
    pub fn cuts_outgoing(self) -> bool {
        self != CutDirection::Incoming
    }

    /// Whether messages this member receives are cut.
    pub fn cuts_incoming(self) -> bool {
        self != CutDirection::Outgoing
    }
}

/// Whether a fault naming `peers` acts on `peer` (an empty set names every peer).
fn names(peers: &BTreeSet<NodeId>, peer: NodeId) -> bool {
    peers.is_empty() || peers.contains(&peer)
}

/// A partition: the peers it cuts this member from (empty: every peer), and in which
/// direction (default both). A cut is by request: a message that goes through gets its
/// answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFilter {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    #[serde(default)]
    pub direction: CutDirection,
}

impl PeerFilter {
    /// Whether the partition names `peer`.
    pub fn applies_to(&self, peer: NodeId) -> bool {
        names(&self.peers, peer)
    }
}

/// A delay of every message to or from `peers` (empty: every peer): `latencyMs` ± a uniform
/// `jitterMs`, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelayFault {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    pub latency_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
}

impl DelayFault {
    /// Whether the delay names `peer`.
    pub fn applies_to(&self, peer: NodeId) -> bool {
        names(&self.peers, peer)
    }
}

/// Random loss of messages to or from `peers` (empty: every peer), each with `probability`
/// (0 to 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossFault {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    pub probability: f64,
}

impl LossFault {
    /// Whether the loss names `peer`.
    pub fn applies_to(&self, peer: NodeId) -> bool {
        names(&self.peers, peer)
    }
}

/// 2pc mode: the member votes no on each PREPARE with `probability` (0 to 1), as a
/// participant that cannot or will not apply the change would.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VetoFault {
    pub probability: f64,
}

/// The whole fault set of a member, as `PUT /v1/admin/faults` takes it. `{}` heals everything.
///
/// ```json
/// {"partition": {"peers": [2, 3], "direction": "outgoing"},
///  "delay": {"peers": [2], "latencyMs": 200, "jitterMs": 50},
///  "loss": {"peers": [], "probability": 0.2},
///  "pause": true, "clockSkewMs": 3000, "veto": {"probability": 0.5}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PeerFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossFault>,
    /// 2pc mode: vote no on a share of prepares (ignored by the other modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<VetoFault>,
    /// The member holds every peer message and its timers stand still (a stopped process).
    #[serde(default)]
    pub pause: bool,
    /// Milliseconds added to the member's wall clock (negative: behind).
    #[serde(default)]
    pub clock_skew_ms: i64,
}

/// The largest delay (latency + jitter) accepted, in milliseconds: anything larger only turns
/// a demonstration into a hang.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The largest clock skew accepted either way, in milliseconds (one day).
pub const MAX_SKEW_MS: i64 = 24 * 3600 * 1000;

/// Why a fault set is refused (the member answers 400 with this message).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum FaultSpecError {
    #[error("loss.probability must be within [0, 1], got {0}")]
    Probability(f64),
    #[error("veto.probability must be within [0, 1], got {0}")]
    VetoProbability(f64),
    #[error("delay.latencyMs + delay.jitterMs must be at most {MAX_DELAY_MS}")]
    DelayTooLarge,
    #[error("delay.jitterMs ({jitter}) must not exceed delay.latencyMs ({latency})")]
    JitterAboveLatency { latency: u64, jitter: u64 },
    #[error("clockSkewMs must be within ±{MAX_SKEW_MS}")]
    SkewTooLarge,
    #[error("unknown peer {0}: not a member this node knows")]
    UnknownPeer(NodeId),
}

impl FaultSet {
    /// Checks ranges and that every named peer is one of `known_peers`.
    pub fn validate(&self, known_peers: &BTreeSet<NodeId>) -> Result<(), FaultSpecError> {
        if let Some(loss) = &self.loss {
            if !(0.0..=1.0).contains(&loss.probability) {
                return Err(FaultSpecError::Probability(loss.probability));
            }
        }
        if let Some(veto) = &self.veto {
            if !(0.0..=1.0).contains(&veto.probability) {
                return Err(FaultSpecError::VetoProbability(veto.probability));
            }
        }
        if let Some(delay) = &self.delay {
            if delay.jitter_ms > delay.latency_ms {
                return Err(FaultSpecError::JitterAboveLatency {
                    latency: delay.latency_ms,
                    jitter: delay.jitter_ms,
                });
            }
            if delay.latency_ms.saturating_add(delay.jitter_ms) > MAX_DELAY_MS {
                return Err(FaultSpecError::DelayTooLarge);
            }
        }
        if self.clock_skew_ms.unsigned_abs() > MAX_SKEW_MS.unsigned_abs() {
            return Err(FaultSpecError::SkewTooLarge);
        }
        match self.named_peers().find(|peer| !known_peers.contains(peer)) {
            Some(peer) => Err(FaultSpecError::UnknownPeer(peer)),
            None => Ok(()),
        }
    }

    /// Every peer a partition, delay or loss names (with repeats).
    pub fn named_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.partition
            .iter()
            .flat_map(|p| &p.peers)
            .chain(self.delay.iter().flat_map(|d| &d.peers))
            .chain(self.loss.iter().flat_map(|l| &l.peers))
            .copied()
    }

    /// Whether nothing is injected (`{}`).
    pub fn is_empty(&self) -> bool {
        *self == FaultSet::default()
    }
}

/// How many messages each fault affected, for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    /// Dropped by a partition.
    pub dropped: u64,
    /// Held back by a delay.
    pub delayed: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// 2pc mode: prepares from this peer (the coordinator) vetoed by an injected fault.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vetoed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The answer of `GET` and `PUT /v1/admin/faults`: the fault set in force and the counters
/// per peer id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultsView {
    pub counters: BTreeMap<NodeId, FaultCounters>,
    pub faults: FaultSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<NodeId> {
        [1, 2, 3].into()
    }

    #[test]
    fn parses_the_documented_shape() {
        let set: FaultSet = serde_json::from_str(
            r#"{"partition": {"peers": [2, 3]},
                "delay": {"peers": [2], "latencyMs": 200, "jitterMs": 50},
                "loss": {"peers": [], "probability": 0.2},
                "pause": true, "clockSkewMs": 3000}"#,
        )
        .unwrap();
        assert!(set.validate(&known()).is_ok());
        assert_eq!(set.delay.as_ref().map(|d| d.latency_ms), Some(200));
        assert!(!set.is_empty());
        assert!(FaultSet::default().is_empty());
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(serde_json::from_str::<FaultSet>(r#"{"bogus": 1}"#).is_err());
        assert!(serde_json::from_str::<FaultSet>(r#"{"delay": {"latencyMs": -5}}"#).is_err());
        let loss: FaultSet = serde_json::from_str(r#"{"loss": {"probability": 1.5}}"#).unwrap();
        assert_eq!(
            loss.validate(&known()),
            Err(FaultSpecError::Probability(1.5))
        );
        let unknown: FaultSet = serde_json::from_str(r#"{"partition": {"peers": [9]}}"#).unwrap();
        assert_eq!(
            unknown.validate(&known()),
            Err(FaultSpecError::UnknownPeer(9))
        );
        let veto: FaultSet = serde_json::from_str(r#"{"veto": {"probability": -0.1}}"#).unwrap();
        assert_eq!(
            veto.validate(&known()),
            Err(FaultSpecError::VetoProbability(-0.1))
        );
        let jitter: FaultSet =
            serde_json::from_str(r#"{"delay": {"latencyMs": 5, "jitterMs": 6}}"#).unwrap();
        assert!(matches!(
            jitter.validate(&known()),
            Err(FaultSpecError::JitterAboveLatency { .. })
        ));
        // The most negative skew has no absolute value in i64: refused, not a panic.
        let skew: FaultSet =
            serde_json::from_str(&format!(r#"{{"clockSkewMs": {}}}"#, i64::MIN)).unwrap();
        assert!(skew.validate(&known()).is_err());
    }

    #[test]
    fn an_unknown_direction_names_the_allowed_ones() {
        let e = serde_json::from_str::<FaultSet>(r#"{"partition": {"direction": "sideways"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`outgoing`, `incoming`, `both`"), "{e}");
    }

    #[test]
    fn directions_and_peers() {
        assert!(CutDirection::Both.cuts_outgoing() && CutDirection::Both.cuts_incoming());
        assert!(!CutDirection::Outgoing.cuts_incoming());
        assert!(!CutDirection::Incoming.cuts_outgoing());
        let every = PeerFilter::default();
        assert!(every.applies_to(7));
        let two = PeerFilter {
            peers: [2].into(),
            ..PeerFilter::default()
        };
        assert!(two.applies_to(2) && !two.applies_to(3));
    }
}
