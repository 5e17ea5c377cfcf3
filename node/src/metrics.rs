//! Prometheus metrics of one member, rendered in the text exposition format at `/metrics`,
//! and the client-operation counts the status carries ([`ClientOps`]) for the live view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use caplab_api::status::ClientOps;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::identity::Misdirection;
use crate::quorum::counters::QuorumMetrics;
use crate::twopc::counters::TwoPcMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub peer: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub term: Gauge,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub leader_changes: Counter,
    pub discarded_writes: Gauge,
    pub fault_messages: Family<FaultLabels, Counter>,
    /// Peer-port requests refused with 421, by reason (`wrong-cluster`, `wrong-member`,
    /// `wrong-incarnation`).
    pub misdirected: Family<ReasonLabels, Counter>,
    /// Quorum mode's counters (registered in every mode; zero elsewhere).
    pub quorum: QuorumMetrics,
    /// 2pc mode's counters (registered in every mode; zero elsewhere).
    pub twopc: TwoPcMetrics,
    /// The same client requests as `requests` and `latency`, readable for the status
    /// (prometheus-client keeps its histograms' buckets private).
    client_ops: ClientOpCounts,
}

/// Latency buckets: 0.25 ms doubling up to ~8 s.
const LATENCY_BUCKETS: u16 = 16;

/// The latency buckets' upper bounds, in seconds.
fn latency_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.00025, 2.0, LATENCY_BUCKETS)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_bounds())
}

/// Client operations by outcome and latency bucket, since the member started.
#[derive(Default)]
struct ClientOpCounts {
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// One per bound of [`latency_bounds`], and one for slower operations.
    buckets: [AtomicU64; LATENCY_BUCKETS as usize + 1],
}

impl ClientOpCounts {
    fn observe(&self, outcome: &str, seconds: f64) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        *outcomes.entry(outcome.to_string()).or_default() += 1;
        drop(outcomes);
        let bucket = latency_bounds()
            .position(|bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS as usize);
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn view(&self) -> ClientOps {
        ClientOps {
            outcomes: self
                .outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            latency_bounds_ms: latency_bounds().map(|s| s * 1000.0).collect(),
            latency_counts: self
                .buckets
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("caplab");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let term = Gauge::default();
        let commit_index = Gauge::default();
        let applied_index = Gauge::default();
        let leader_changes = Counter::default();
        let discarded_writes = Gauge::default();
        let fault_messages = Family::<FaultLabels, Counter>::default();
        let misdirected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by operation and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Client request latency",
            latency.clone(),
        );
        registry.register(
            "raft_term",
            "Current Raft term (epoch in primary-secondary modes)",
            term.clone(),
        );
        registry.register(
            "commit_index",
            "Highest log index known committed",
            commit_index.clone(),
        );
        registry.register(
            "applied_index",
            "Highest log index applied",
            applied_index.clone(),
        );
        registry.register(
            "leader_changes",
            "Times this member saw the leader change",
            leader_changes.clone(),
        );
        registry.register(
            "discarded_writes",
            "Primary-secondary: acknowledged writes dropped when this member rejoined a newer epoch",
            discarded_writes.clone(),
        );
        registry.register(
            "fault_messages",
            "Peer messages affected by injected faults, by peer and kind (dropped, delayed, lost; vetoed: 2pc prepares vetoed)",
            fault_messages.clone(),
        );
        registry.register(
            "misdirected_messages",
            "Peer messages refused because they named another cluster, member or incarnation",
            misdirected.clone(),
        );
        let quorum = QuorumMetrics::default();
        quorum.register(&mut registry);
        let twopc = TwoPcMetrics::default();
        twopc.register(&mut registry);
        Self {
            registry,
            requests,
            latency,
            term,
            commit_index,
            applied_index,
            leader_changes,
            discarded_writes,
            fault_messages,
            misdirected,
            quorum,
            twopc,
            client_ops: ClientOpCounts::default(),
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, op: &str, outcome: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                op: op.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op: op.to_string() })
            .observe(seconds);
        self.client_ops.observe(outcome, seconds);
    }

    /// The client operations answered so far, for `/v1/status`.
    pub fn client_ops(&self) -> ClientOps {
        self.client_ops.view()
    }

    fn misdirected_counter(&self, kind: Misdirection) -> Counter {
        self.misdirected
            .get_or_create(&ReasonLabels {
                reason: kind.reason().to_string(),
            })
            .clone()
    }

    /// Counts a peer message refused with 421.
    pub fn count_misdirected(&self, kind: Misdirection) {
        self.misdirected_counter(kind).inc();
    }

    /// Peer messages refused with 421, all reasons together.
    pub fn misdirected_total(&self) -> u64 {
        Misdirection::ALL
            .into_iter()
            .map(|kind| self.misdirected_counter(kind).get())
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ops_count_outcomes_and_latency_buckets() {
        let m = Metrics::default();
        m.observe_request("write", "ok", 0.0002);
        m.observe_request("read", "ok", 0.003);
        m.observe_request("write", "unknown", 60.0);
        let ops = m.client_ops();
        assert_eq!(ops.outcomes["ok"], 2);
        assert_eq!(ops.outcomes["unknown"], 1);
        assert_eq!(ops.latency_counts.len(), ops.latency_bounds_ms.len() + 1);
        assert_eq!(ops.latency_bounds_ms[0], 0.25);
        // 0.2 ms in the first bucket, 3 ms in (2, 4], a minute past every bound.
        assert_eq!(ops.latency_counts[0], 1);
        assert_eq!(ops.latency_counts[4], 1);
        assert_eq!(ops.latency_counts.last(), Some(&1));
    }
}
