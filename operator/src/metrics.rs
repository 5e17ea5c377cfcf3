//! Prometheus metrics.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label for errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error kind.
    pub kind: String,
}

/// Label for membership actions and events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Action name.
    pub action: String,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciliations run.
    pub reconciles: Counter,
    /// Reconcile errors by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Membership/fault actions taken.
    pub actions: Family<ActionLabels, Counter>,
    /// 1 when this replica holds the leader lease.
    pub leader: Gauge,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("caplab_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let actions = Family::<ActionLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciliations", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register("actions", "Membership and fault actions", actions.clone());
        registry.register(
            "is_leader",
            "1 when holding the leader lease",
            leader.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            actions,
            leader,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Starts timing a reconcile.
    pub fn start(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            hist: self.duration.clone(),
        }
    }

    /// Counts an error.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    /// Counts an action.
    pub fn action(&self, action: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.into(),
            })
            .inc();
    }
}

/// Observes the duration on drop.
pub struct ReconcileTimer {
    start: Instant,
    hist: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed().as_secs_f64());
    }
}
