//! What a 2pc member counts, for the status and as Prometheus metrics: outcomes (committed,
//! aborted by cause), messages per phase, heuristic decisions, and each participant's last vote.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use caplab_api::status::{AbortCounts, HeuristicCounts, LastVote, PhaseMessages};

use super::wire::{Decision, NoCause};
use crate::types::NodeId;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `committed` or `aborted`.
    pub outcome: String,
    /// Aborts: `veto`, `conflict` or `timeout`; commits: `none`.
    pub cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `prepare`, `vote`, `decision`, `ack` or `query`.
    pub phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: String,
}

/// The Prometheus side of [`Counters`]; clones share the same series.
#[derive(Clone, Default)]
pub struct TwoPcMetrics {
    transactions: Family<OutcomeLabels, Counter>,
    messages: Family<PhaseLabels, Counter>,
    heuristic: Family<DecisionLabels, Counter>,
    in_doubt: Gauge,
}

impl TwoPcMetrics {
    /// Registers `twopc_transactions{outcome,cause}`, `twopc_messages{phase}`,
    /// `twopc_heuristic_decisions{decision}` (counters) and `twopc_in_doubt` (gauge).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "twopc_transactions",
            "2pc mode: transactions this coordinator decided, by outcome and abort cause",
            self.transactions.clone(),
        );
        registry.register(
            "twopc_messages",
            "2pc mode: messages this member sent or received, by phase (prepare, vote, decision, ack, query)",
            self.messages.clone(),
        );
        registry.register(
            "twopc_heuristic_decisions",
            "2pc mode: decisions forced by a person on in-doubt transactions",
            self.heuristic.clone(),
        );
        registry.register(
            "twopc_in_doubt",
            "2pc mode: prepared transactions whose coordinator this participant cannot reach",
            self.in_doubt.clone(),
        );
    }
}

/// An abort's cause, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    Veto,
    Conflict,
    Timeout,
}

impl AbortCause {
    pub fn of(cause: Option<NoCause>) -> Self {
        match cause {
            Some(NoCause::Conflict) => AbortCause::Conflict,
            Some(NoCause::Veto | NoCause::CasMismatch | NoCause::Aborted) | None => {
                AbortCause::Veto
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            AbortCause::Veto => "veto",
            AbortCause::Conflict => "conflict",
            AbortCause::Timeout => "timeout",
        }
    }
}

/// A message phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prepare,
    Vote,
    Decision,
    Ack,
    Query,
}

#[derive(Default)]
struct View {
    committed: u64,
    aborted: AbortCounts,
    heuristic: HeuristicCounts,
    messages: PhaseMessages,
    last_votes: BTreeMap<NodeId, LastVote>,
}

pub struct Counters {
    view: Mutex<View>,
    metrics: TwoPcMetrics,
}

impl Counters {
    pub fn new(metrics: TwoPcMetrics) -> Self {
        Self {
            view: Mutex::default(),
            metrics,
        }
    }

    fn update(&self, change: impl FnOnce(&mut View)) {
        change(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn committed(&self) {
        self.outcome("committed", "none");
        self.update(|v| v.committed += 1);
    }

    pub fn aborted(&self, cause: AbortCause) {
        self.outcome("aborted", cause.label());
        self.update(|v| match cause {
            AbortCause::Veto => v.aborted.veto += 1,
            AbortCause::Conflict => v.aborted.conflict += 1,
            AbortCause::Timeout => v.aborted.timeout += 1,
        });
    }

    fn outcome(&self, outcome: &str, cause: &str) {
        let labels = OutcomeLabels {
            outcome: outcome.into(),
            cause: cause.into(),
        };
        self.metrics.transactions.get_or_create(&labels).inc();
    }

    /// `n` messages of `phase`.
    pub fn messages(&self, phase: Phase, n: u64) {
        let (name, field): (&str, fn(&mut PhaseMessages) -> &mut u64) = match phase {
            Phase::Prepare => ("prepare", |m| &mut m.prepare),
            Phase::Vote => ("vote", |m| &mut m.vote),
            Phase::Decision => ("decision", |m| &mut m.decision),
            Phase::Ack => ("ack", |m| &mut m.ack),
            Phase::Query => ("query", |m| &mut m.query),
        };
        let labels = PhaseLabels { phase: name.into() };
        self.metrics.messages.get_or_create(&labels).inc_by(n);
        self.update(|v| *field(&mut v.messages) += n);
    }

    pub fn heuristic(&self, decision: Decision) {
        let labels = DecisionLabels {
            decision: decision.as_str().into(),
        };
        self.metrics.heuristic.get_or_create(&labels).inc();
        self.update(|v| match decision {
            Decision::Commit => v.heuristic.commit += 1,
            Decision::Abort => v.heuristic.abort += 1,
        });
    }

    pub fn heuristic_mismatch(&self) {
        self.update(|v| v.heuristic.mismatches += 1);
    }

    pub fn last_votes(&self, votes: BTreeMap<NodeId, LastVote>) {
        self.update(|v| v.last_votes = votes);
    }

    pub fn set_in_doubt(&self, n: usize) {
        self.metrics.in_doubt.set(n as i64);
    }

    /// Fills the counted fields of `status`.
    pub fn fill(&self, status: &mut caplab_api::status::TwoPcStatus) {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        status.committed = v.committed;
        status.aborted = v.aborted;
        status.heuristic = v.heuristic;
        status.messages = v.messages;
        status.last_votes = v.last_votes.clone();
    }
}
