//! The fault layer: every peer message, outgoing or incoming, passes through [`Faults`], which
//! drops, delays or loses it according to the member's fault set. Faults live in memory only
//! (a restart clears them; the operator re-applies them), revert exactly when replaced, and
//! count what they did so a test can prove they took effect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::{FaultLabels, Metrics};
use crate::types::NodeId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Which way a message travels, seen from this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by this member to a peer.
    Outgoing,
    /// Sent by a peer to this member.
    Incoming,
}

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
    fn cuts(self, way: Direction) -> bool {
        match self {
            CutDirection::Both => true,
            CutDirection::Outgoing => way == Direction::Outgoing,
            CutDirection::Incoming => way == Direction::Incoming,
        }
    }
}

/// The peers a partition cuts this member from (empty: every peer), and in which direction
/// (default both). A cut is by request: a message that goes through gets its answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFilter {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    #[serde(default)]
    pub direction: CutDirection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelayFault {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    pub latency_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossFault {
    #[serde(default)]
    pub peers: BTreeSet<NodeId>,
    pub probability: f64,
}

/// The whole fault set of a member, as `PUT /v1/admin/faults` takes it. `{}` heals everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PeerFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossFault>,
    #[serde(default)]
    pub pause: bool,
    #[serde(default)]
    pub clock_skew_ms: i64,
}

/// The largest delay or skew accepted: anything larger only turns a demonstration into a hang.
const MAX_DELAY_MS: u64 = 60_000;
const MAX_SKEW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Error, PartialEq)]
pub enum FaultSpecError {
    #[error("loss.probability must be within [0, 1], got {0}")]
    Probability(f64),
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
        if self.clock_skew_ms.abs() > MAX_SKEW_MS {
            return Err(FaultSpecError::SkewTooLarge);
        }
        let named = self
            .partition
            .iter()
            .flat_map(|p| &p.peers)
            .chain(self.delay.iter().flat_map(|d| &d.peers))
            .chain(self.loss.iter().flat_map(|l| &l.peers));
        for peer in named {
            if !known_peers.contains(peer) {
                return Err(FaultSpecError::UnknownPeer(*peer));
            }
        }
        Ok(())
    }
}

fn applies(peers: &BTreeSet<NodeId>, peer: NodeId) -> bool {
    peers.is_empty() || peers.contains(&peer)
}

/// What the fault layer decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    /// Dropped by a partition or by random loss.
    Drop,
}

/// How many messages each fault affected, per peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounters {
    pub dropped: u64,
    pub delayed: u64,
    pub lost: u64,
}

pub struct Faults {
    set: RwLock<FaultSet>,
    counters: Mutex<BTreeMap<NodeId, FaultCounters>>,
    paused: watch::Sender<bool>,
    exported: Family<FaultLabels, Counter>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new(&Metrics::default())
    }
}

impl Faults {
    /// A fault layer whose counters are also exported through `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            set: RwLock::default(),
            counters: Mutex::default(),
            paused: watch::channel(false).0,
            exported: metrics.fault_messages.clone(),
        }
    }

    pub fn current(&self) -> FaultSet {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the fault set (already validated); returns the previous one.
    pub fn replace(&self, new: FaultSet) -> FaultSet {
        self.paused.send_replace(new.pause);
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *set, new)
    }

    pub fn counters(&self) -> BTreeMap<NodeId, FaultCounters> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, peer: NodeId, kind: &str, bump: impl FnOnce(&mut FaultCounters)) {
        self.exported
            .get_or_create(&FaultLabels {
                peer: peer.to_string(),
                kind: kind.to_string(),
            })
            .inc();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        bump(counters.entry(peer).or_default());
    }

    /// Passes one message to or from `peer` (as `way` says) through the filters: returns
    /// whether to deliver it, after waiting out any injected delay.
    pub async fn filter(&self, peer: NodeId, way: Direction) -> Verdict {
        let (drop, lost, delay) = {
            let set = self.set.read().unwrap_or_else(|p| p.into_inner());
            let drop = set
                .partition
                .as_ref()
                .is_some_and(|p| p.direction.cuts(way) && applies(&p.peers, peer));
            let lost = !drop
                && set.loss.as_ref().is_some_and(|l| {
                    applies(&l.peers, peer) && rand::rng().random_bool(l.probability)
                });
            let delay = set
                .delay
                .as_ref()
                .filter(|d| applies(&d.peers, peer))
                .map(|d| {
                    let jitter = d.jitter_ms as i64;
                    let offset = if jitter > 0 {
                        rand::rng().random_range(-jitter..=jitter)
                    } else {
                        0
                    };
                    Duration::from_millis((d.latency_ms as i64 + offset).max(0) as u64)
                });
            (drop, lost, delay)
        };
        if drop {
            self.count(peer, "dropped", |c| c.dropped += 1);
            return Verdict::Drop;
        }
        if lost {
            self.count(peer, "lost", |c| c.lost += 1);
            return Verdict::Drop;
        }
        if let Some(delay) = delay {
            self.count(peer, "delayed", |c| c.delayed += 1);
            tokio::time::sleep(delay).await;
        }
        Verdict::Deliver
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits while the member is paused. Returns false if `deadline` passed first.
    pub async fn wait_unpaused(&self, deadline: Instant) -> bool {
        let mut rx = self.paused.subscribe();
        let resumed = tokio::time::timeout_at(deadline, rx.wait_for(|paused| !paused)).await;
        resumed.is_ok()
    }

    /// The member's own wall clock, shifted by the injected skew.
    pub fn now(&self) -> SystemTime {
        let skew = self
            .set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clock_skew_ms;
        let base = SystemTime::now();
        let shift = Duration::from_millis(skew.unsigned_abs());
        if skew >= 0 {
            base + shift
        } else {
            base.checked_sub(shift).unwrap_or(base)
        }
    }
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
        assert_eq!(set.delay.unwrap().latency_ms, 200);
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
    }

    #[tokio::test]
    async fn partition_drops_and_counts_only_named_peers() {
        let faults = Faults::default();
        faults.replace(serde_json::from_str(r#"{"partition": {"peers": [2]}}"#).unwrap());
        assert_eq!(faults.filter(2, Direction::Outgoing).await, Verdict::Drop);
        assert_eq!(faults.filter(2, Direction::Incoming).await, Verdict::Drop);
        assert_eq!(
            faults.filter(3, Direction::Outgoing).await,
            Verdict::Deliver
        );
        assert_eq!(faults.counters()[&2].dropped, 2);
        faults.replace(FaultSet::default());
        assert_eq!(
            faults.filter(2, Direction::Outgoing).await,
            Verdict::Deliver
        );
    }

    #[tokio::test]
    async fn a_one_way_partition_cuts_only_its_direction() {
        let faults = Faults::default();
        let outgoing = r#"{"partition": {"peers": [2], "direction": "outgoing"}}"#;
        faults.replace(serde_json::from_str(outgoing).unwrap());
        assert_eq!(faults.filter(2, Direction::Outgoing).await, Verdict::Drop);
        assert_eq!(
            faults.filter(2, Direction::Incoming).await,
            Verdict::Deliver
        );
        let incoming = r#"{"partition": {"peers": [2], "direction": "incoming"}}"#;
        faults.replace(serde_json::from_str(incoming).unwrap());
        assert_eq!(
            faults.filter(2, Direction::Outgoing).await,
            Verdict::Deliver
        );
        assert_eq!(faults.filter(2, Direction::Incoming).await, Verdict::Drop);
    }

    #[test]
    fn an_unknown_direction_names_the_allowed_ones() {
        let e = serde_json::from_str::<FaultSet>(r#"{"partition": {"direction": "sideways"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`outgoing`, `incoming`, `both`"), "{e}");
    }

    #[tokio::test]
    async fn certain_loss_drops_everything() {
        let faults = Faults::default();
        faults.replace(serde_json::from_str(r#"{"loss": {"probability": 1.0}}"#).unwrap());
        assert_eq!(faults.filter(7, Direction::Incoming).await, Verdict::Drop);
        assert_eq!(faults.counters()[&7].lost, 1);
    }
}
