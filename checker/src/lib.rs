//! caplab's history model and linearizability checker.
//!
//! * [`history`]: the JSON history a workload records, validated entry by entry.
//! * [`linearizability`]: the per-key Wing–Gong/Lowe search with memoisation, unknown
//!   outcomes, violation reports and per-key deadlines.
//! * [`generate`]: linearizable histories from random sequential executions, for benchmarks
//!   and tests.

pub mod generate;
pub mod history;
pub mod linearizability;

pub use history::{Entry, History, HistoryError, Op, Status};
pub use linearizability::{check, CheckOptions, KeyReport, Overall, Report, Verdict, Violation};
