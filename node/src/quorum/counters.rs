//! What a quorum replica counts, for the status and as Prometheus metrics: the writes that
//! arrived older than what it held (lost to last-writer-wins, by the member that coordinated
//! them), the values replaced by read repair and by anti-entropy, and how long the last
//! convergence after a heal took.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::types::NodeId;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The member whose clock stamped the write.
    pub source: String,
}

/// The Prometheus side of [`Counters`]; clones share the same series.
#[derive(Clone, Default)]
pub struct QuorumMetrics {
    lost_writes: Family<SourceLabels, Counter>,
    read_repairs: Counter,
    anti_entropy_keys: Counter,
    convergence_ms: Gauge,
}

impl QuorumMetrics {
    /// Registers the series (prefix from `registry`): `quorum_lww_lost_writes{source}`,
    /// `quorum_read_repairs`, `quorum_anti_entropy_repaired_keys` (counters) and
    /// `quorum_convergence_milliseconds` (gauge).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "quorum_lww_lost_writes",
            "Quorum mode: writes that arrived older than the value this replica held and were dropped by last-writer-wins, by the member that stamped them",
            self.lost_writes.clone(),
        );
        registry.register(
            "quorum_read_repairs",
            "Quorum mode: values this replica replaced because a read found it behind",
            self.read_repairs.clone(),
        );
        registry.register(
            "quorum_anti_entropy_repaired_keys",
            "Quorum mode: values this replica replaced through anti-entropy",
            self.anti_entropy_keys.clone(),
        );
        registry.register(
            "quorum_convergence_milliseconds",
            "Quorum mode: how long anti-entropy took to converge after the last heal (from the first answer of a returning replica to every replica in sync)",
            self.convergence_ms.clone(),
        );
    }
}

/// The counters as `/v1/status` shows them (the wire type).
pub use caplab_api::status::QuorumCounters as CounterView;

pub struct Counters {
    view: Mutex<CounterView>,
    metrics: QuorumMetrics,
}

impl Counters {
    pub fn new(metrics: QuorumMetrics) -> Self {
        Self {
            view: Mutex::default(),
            metrics,
        }
    }

    fn update(&self, change: impl FnOnce(&mut CounterView)) {
        change(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn lost_write(&self, source: NodeId) {
        self.metrics
            .lost_writes
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc();
        self.update(|v| *v.lww_lost_writes.entry(source).or_default() += 1);
    }

    pub fn read_repaired(&self, keys: usize) {
        self.metrics.read_repairs.inc_by(keys as u64);
        self.update(|v| v.read_repairs += keys as u64);
    }

    pub fn anti_entropy_repaired(&self, keys: usize) {
        self.metrics.anti_entropy_keys.inc_by(keys as u64);
        self.update(|v| v.anti_entropy_repaired_keys += keys as u64);
    }

    pub fn converged_after(&self, ms: u64) {
        self.metrics.convergence_ms.set(ms as i64);
        self.update(|v| v.last_convergence_ms = Some(ms));
    }

    pub fn view(&self) -> CounterView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
