//! The experiment a `RegisterCluster` may declare (`spec.workload`) and what became of it
//! (`status.experiment`): one run of clients against the members while the spec's faults
//! follow their schedule, recorded, checked and reported by a Job.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest run the operator accepts (seconds): one hour.
pub const MAX_DURATION_SECONDS: u64 = 3600;

/// `spec.workload`: clients run against the members for `durationSeconds`, then settle, and
/// the history is checked (linearizable, sequential, converged). Changing any field, or
/// `runId`, starts a new run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Concurrent clients (processes in the history), 1-64.
    #[schemars(range(min = 1, max = 64))]
    pub clients: u32,
    /// How long the clients run, 1-3600 seconds.
    #[schemars(range(min = 1, max = 3600))]
    pub duration_seconds: u64,
    /// Number of registers (fresh keys each run), 1-1000.
    #[schemars(range(min = 1, max = 1000))]
    pub keys: u32,
    /// Operation mix in percent (they must sum to 100).
    #[x_kube(validation = Rule::new("(has(self.read) ? self.read : 0) + (has(self.write) ? self.write : 0) + (has(self.cas) ? self.cas : 0) == 100").message("workload.mix must sum to 100 percent (read + write + cas)"))]
    pub mix: OperationMix,
    /// Operations per second over all clients (omitted: as fast as the members answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub rate_per_second: Option<u32>,
    /// Seconds to wait after the clients stop for every member to agree on every key before
    /// the final reads (default 5; 0: no final reads, convergence unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600))]
    pub settle_seconds: Option<u64>,
    /// Any label; changing it starts a new run with the same workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub run_id: Option<String>,
}

impl WorkloadSpec {
    /// Settle period in seconds (default 5).
    pub fn settle(&self) -> u64 {
        self.settle_seconds.unwrap_or(5)
    }
}

/// Operation mix in percent, summing to 100. Where the replication has no compare-and-set
/// (quorum), `cas` is dropped and reads and writes keep their proportions, re-normalised to
/// 100 (`status.experiment.mix` and a note say so).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OperationMix {
    /// Reads, percent.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub read: u32,
    /// Writes, percent.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub write: u32,
    /// Compare-and-set, percent.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub cas: u32,
}

/// Where a run is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExperimentPhase {
    /// The Job is created; its pod is not running yet (or waits for the cluster).
    Pending,
    /// The clients run (and the faults follow their schedule).
    Running,
    /// The clients stopped; settling, checking and rendering the report.
    Checking,
    /// The verdict is in.
    Done,
    /// The run could not finish (see `reason`); it is not retried.
    Failed,
}

/// Counts of a run's operations by outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OperationCounts {
    /// Acknowledged.
    pub ok: u64,
    /// Certainly not applied.
    pub failed: u64,
    /// May or may not have been applied.
    pub unknown: u64,
}

/// A fault as the members saw it during the run, and how the clients fared meanwhile.
///
/// `since`/`until` are the operator's observations of the members (once a second during a
/// run, so at most about a second late): the first time a target member reported the fault in
/// force in its status (a crash: the first time a target did not answer), and the first time
/// after the fault was lifted that none did. A fault that began and ended between two
/// observations keeps the operator's own times, with `seenByMembers: false`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultWindow {
    /// Fault name.
    pub name: String,
    /// Fault kind (`partition`, `crash`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// When it became active (RFC 3339, milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When it ended (RFC 3339, milliseconds); unset while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Whether `since`/`until` are what the members reported (false: the operator's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by_members: Option<bool>,
    /// Seconds from the start of the run's history to `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_seconds: Option<f64>,
    /// Share of the operations invoked in the window that were acknowledged (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    /// Operations acknowledged per second in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Anomalies attributed to the window, by kind: those whose first operation completed in
    /// it, and lost acknowledged writes acknowledged before it (and after any earlier one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomaly_counts: BTreeMap<String, u64>,
}

/// The verdict per consistency model, as `caplab check --json` reports it: true (holds),
/// false (violated), unset (unknown: a deadline passed, or no final reads).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The run the verdict is about.
    pub run_id: String,
    /// Linearizable (Herlihy & Wing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linearizable: Option<bool>,
    /// Sequential, per key (Lamport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<bool>,
    /// Converged after the settle period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged: Option<bool>,
    /// The strongest rung that holds: linearizable | sequential | converged | none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strongest: Option<String>,
    /// The first anomalies, in plain words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
    /// Every anomaly counted by kind (`stale-read`, `lost-acknowledged-write`,
    /// `reads-went-backwards`, `did-not-converge`), as `caplab check --json` reports them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub anomaly_counts: BTreeMap<String, u64>,
    /// Operations by outcome.
    #[serde(default)]
    pub operations: OperationCounts,
    /// Acknowledged operations per second over the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Availability per fault window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<FaultWindow>,
}

/// `status.experiment`: the current run, and the last verdict (kept until a new run's
/// verdict replaces it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// Pending | Running | Checking | Done | Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExperimentPhase>,
    /// Why the run failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The current run's id: `spec.workload.runId`, or a fingerprint of the workload.
    // An Option, not a String with a default: Helm's re-serialised CRD turned the schema's
    // `default: ''` into null, which the API server refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The Job running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the clients started (RFC 3339): fault `startAfterSeconds` count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The mix the run uses, in percent: `spec.workload.mix`, with `cas` dropped and the
    /// rest re-normalised where the replication has no compare-and-set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<OperationMix>,
    /// What the operator changed about the workload, and why (e.g. cas dropped in quorum mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Fault windows of the current run, as the members saw them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<FaultWindow>,
    /// The last verdict (possibly of an earlier run: see its `runId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// One word or two for the VERDICT column: linearizable, NOT linearizable, unknown, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Where the history, report and verdict of the last run are, and how to fetch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
}

impl ExperimentStatus {
    /// The current run's id, or "" before the first run.
    pub fn run(&self) -> &str {
        self.run_id.as_deref().unwrap_or_default()
    }
}
