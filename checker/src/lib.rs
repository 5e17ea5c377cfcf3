//! caplab's history model and linearizability checker.
//!
//! * [`history`]: the JSON history a workload records, validated entry by entry.
//! * [`linearizability`]: the per-key Wing–Gong/Lowe search with memoisation, unknown
//!   outcomes, violation reports and per-key deadlines.
//! * `search_ops`: the operations of a key both searches consider, and the register's step.
//! * [`sequential`]: sequential consistency per key (the same kind of search, without real
//!   time).
//! * [`ladder`]: the strongest of linearizable, sequential, converged, per key and overall.
//! * [`anomalies`]: stale reads, lost acknowledged writes, reads going backwards and members
//!   that did not converge, in plain words.
//! * [`generate`]: linearizable histories from random sequential executions, for benchmarks
//!   and tests.

pub mod anomalies;
pub mod generate;
pub mod history;
pub mod ladder;
pub mod linearizability;
mod search_ops;
pub mod sequential;

pub use anomalies::{anomalies, Anomaly, AnomalyKind};
pub use history::{Entry, FinalRead, History, HistoryError, Op, Status};
pub use ladder::{ladder, KeyLadder, Ladder};
pub use linearizability::{check, CheckOptions, KeyReport, Overall, Report, Verdict, Violation};
