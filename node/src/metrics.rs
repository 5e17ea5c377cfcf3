//! Prometheus metrics of one member, rendered in the text exposition format at `/metrics`.

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
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
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
