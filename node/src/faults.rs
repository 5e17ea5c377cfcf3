//! The fault layer: every peer message, outgoing or incoming, passes through [`Faults`], which
//! drops, delays or loses it according to the member's fault set. Faults live in memory only
//! (a restart clears them; the operator re-applies them), revert exactly when replaced, and
//! count what they did so a test can prove they took effect. The fault set's wire shape and
//! its validation are `caplab_api::faults`.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

pub use caplab_api::faults::{
    CutDirection, DelayFault, FaultCounters, FaultSet, FaultSpecError, LossFault, PeerFilter,
};
use rand::Rng;
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

/// Whether a partition cutting `direction` cuts a message travelling `way`.
fn cuts(direction: CutDirection, way: Direction) -> bool {
    match way {
        Direction::Outgoing => direction.cuts_outgoing(),
        Direction::Incoming => direction.cuts_incoming(),
    }
}

/// What the fault layer decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    /// Dropped by a partition or by random loss.
    Drop,
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
                .is_some_and(|p| cuts(p.direction, way) && p.applies_to(peer));
            let lost = !drop
                && set
                    .loss
                    .as_ref()
                    .is_some_and(|l| l.applies_to(peer) && rand::rng().random_bool(l.probability));
            let delay = set.delay.as_ref().filter(|d| d.applies_to(peer)).map(|d| {
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

    /// 2pc mode: whether to veto (vote no on) a PREPARE from `coordinator`, as the `veto`
    /// fault decides; a veto is counted against that peer.
    pub fn veto(&self, coordinator: NodeId) -> bool {
        let probability = {
            let set = self.set.read().unwrap_or_else(|p| p.into_inner());
            set.veto.as_ref().map_or(0.0, |v| v.probability)
        };
        let vetoed = probability > 0.0 && rand::rng().random_bool(probability.min(1.0));
        if vetoed {
            self.count(coordinator, "vetoed", |c| c.vetoed += 1);
        }
        vetoed
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

    #[tokio::test]
    async fn certain_veto_vetoes_and_counts() {
        let faults = Faults::default();
        assert!(!faults.veto(1));
        faults.replace(serde_json::from_str(r#"{"veto": {"probability": 1.0}}"#).unwrap());
        assert!(faults.veto(1));
        assert_eq!(faults.counters()[&1].vetoed, 1);
    }

    #[tokio::test]
    async fn certain_loss_drops_everything() {
        let faults = Faults::default();
        faults.replace(serde_json::from_str(r#"{"loss": {"probability": 1.0}}"#).unwrap());
        assert_eq!(faults.filter(7, Direction::Incoming).await, Verdict::Drop);
        assert_eq!(faults.counters()[&7].lost, 1);
    }
}
