//! Jepsen-style nemesis runs (issue 18 §5): concurrent clients read, write (unique values) and
//! compare-and-set a few registers, and write write-once keys, through random members, while
//! a seeded nemesis (`caplab_testkit::nemesis`) cycles partitions (halves, bridges, rings,
//! one-way cuts), pauses, loss, delay, clock skew, SIGKILL + restart and membership changes or
//! failovers. Each history is checked for linearizability with `caplab-checker`, and every
//! acknowledged write-once key must still be readable once the cluster is healed.
//!
//! * Raft: seeded runs until the checker was given at least [`RAFT_OPERATIONS`] workload
//!   operations (the final reads not counted); no violation and no lost acknowledged write is
//!   allowed.
//! * async / sync: failovers through `POST /v1/admin/promote` + `PUT /v1/admin/primary`;
//!   acknowledged writes may be lost, and the history may be non-linearizable, only around a
//!   failover. Both are counted and printed.
//!
//! The seed comes from `CAPLAB_NEMESIS_SEED` or is drawn, and is printed. A failed run prints
//! its seed and keeps, under this test's target tmp directory, the history (checker JSON), the
//! fault windows (`caplab report history.json --events history.events.json`) and the members'
//! data directories and logs.

mod common;
mod nemesis_common;

use std::collections::HashMap;
use std::time::Duration;

use caplab_checker::{Report, Verdict};
use caplab_testkit::nemesis::{self, Replication, Rng};
use nemesis_common::{check_history, drive, final_reads, keep_and_fail, Op, Record, Shape};

/// Workload operations (any outcome) the Raft test checks in one `cargo test` (issue 18 §5).
const RAFT_OPERATIONS: usize = 100_000;
/// Raft runs stop once [`RAFT_OPERATIONS`] is reached (about 5 runs on a quiet machine; the
/// rest is room for a busy one), and fail the test if this many did not.
const RAFT_MAX_RUNS: u64 = 16;
/// How long clients run in one Raft run, and in one run of a primary mode.
const RAFT_RUN: Duration = Duration::from_secs(25);
const PRIMARY_RUN: Duration = Duration::from_secs(15);
/// 48 concurrent clients, 6 of them writing write-once keys; the others share 5 registers
/// (few, so that operations on each one overlap).
const SHAPE: Shape = Shape {
    clients: 48,
    once_clients: 6,
    keys: 5,
    cas: true,
};
/// Around a failover (primary modes), how long before its start an acknowledged write may
/// still be lost (async replication lag) and how long after its end anomalies may surface.
const BEFORE_FAILOVER: u64 = 2_000_000_000;
const AFTER_FAILOVER: u64 = 5_000_000_000;

/// Runs one nemesis test at a time: each runs its members flat out, and two at once on a
/// 2-core machine would mostly measure the scheduler.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn raft_stays_linearizable_and_loses_no_acknowledged_write_under_a_nemesis() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let base = nemesis::seed_from_env();
    let (mut checked, mut acknowledged, mut runs) = (0, 0, 0);
    while checked < RAFT_OPERATIONS && runs < RAFT_MAX_RUNS {
        let result = run(Mode::Raft, base.wrapping_add(runs), RAFT_RUN).await;
        checked += result.operations;
        acknowledged += result.acknowledged;
        runs += 1;
        println!(
            "raft: {checked} operations checked ({acknowledged} acknowledged) after {runs} runs"
        );
    }
    assert!(
        checked >= RAFT_OPERATIONS,
        "only {checked} operations in {runs} runs of {RAFT_RUN:?} (need \
         {RAFT_OPERATIONS}): the members answered far slower than usual; see the rates printed \
         above"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn async_replication_loses_acknowledged_writes_only_around_failovers() {
    primary_mode_run(Mode::Async, "async").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_replication_loses_acknowledged_writes_only_around_failovers() {
    primary_mode_run(Mode::Sync, "sync").await;
}

/// One seeded run of a primary mode (failing inside `run` when anything is lost away from
/// a failover), then what was lost around failovers, counted.
async fn primary_mode_run(mode: Mode, label: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let result = run(mode, nemesis::seed_from_env(), PRIMARY_RUN).await;
    println!(
        "{label}: {} failovers, {} acknowledged writes lost around them, {} registers \
         non-linearizable around them",
        result.failovers,
        result.lost.len(),
        result.violations
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raft,
    Async,
    Sync,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raft => "raft",
            Mode::Async => "async",
            Mode::Sync => "sync",
        }
    }

    /// Five Raft members, so that bridges and rings are partial topologies with a connected
    /// majority; three in the primary modes.
    fn members(self) -> u64 {
        match self {
            Mode::Raft => 5,
            Mode::Async | Mode::Sync => 3,
        }
    }

    fn replication(self) -> Replication {
        match self {
            Mode::Raft => Replication::Raft,
            Mode::Async | Mode::Sync => Replication::Primary,
        }
    }
}

/// What a run that passed found.
struct RunResult {
    /// Workload operations recorded (final reads not counted).
    operations: usize,
    /// Of those, the ones with status ok (the checker had to place every one of them).
    acknowledged: usize,
    failovers: usize,
    /// Completion times (ns) of acknowledged write-once writes missing after healing: all
    /// around failovers (none allowed with Raft).
    lost: Vec<u64>,
    /// Registers whose history is not linearizable (all around failovers; none with Raft).
    violations: usize,
}

/// One seeded run: cluster, workload and nemesis, healing, final reads, checks. Panics with the
/// seed and the kept files when a check fails.
async fn run(mode: Mode, seed: u64, duration: Duration) -> RunResult {
    let label = format!("{} run with seed {seed}", mode.name());
    println!(
        "{label}: {} members, {} clients, {duration:?}",
        mode.members(),
        SHAPE.clients
    );
    let mut rng = Rng::new(seed);
    let mut cluster = common::start_with(mode.members(), &["--replication", mode.name()]).await;
    let (nemesis, workload, mut records) = drive(
        &mut cluster,
        &mut rng,
        mode.replication(),
        (SHAPE, duration),
        &label,
    )
    .await;
    let operations = records.len();
    let acknowledged = records.iter().filter(|r| r.status == "ok").count();
    let finals = match nemesis.heal(&mut cluster, common::DEADLINE).await {
        Ok(()) => final_reads(&workload, &records).await,
        Err(e) => Err(format!("the cluster could not be healed (liveness): {e}")),
    };
    let finals = match finals {
        Ok(finals) => finals,
        Err(e) => keep_and_fail(mode.name(), seed, (&records, &[]), &nemesis, cluster, &e),
    };
    let lost = lost_writes(&records, &finals);
    records.extend(finals);
    let (_, report) = check_history(&label, &records, &[]).await;
    let judged = judge(mode, &records, &report, &lost, &nemesis.failover_windows());
    match judged {
        Ok(violations) => RunResult {
            operations,
            acknowledged,
            failovers: nemesis.failover_windows().len(),
            lost,
            violations,
        },
        Err(e) => keep_and_fail(mode.name(), seed, (&records, &[]), &nemesis, cluster, &e),
    }
}

/// The verdict of one run: `Ok(non-linearizable registers)` or why it failed.
fn judge(
    mode: Mode,
    records: &[Record],
    report: &Report,
    lost: &[u64],
    windows: &[(u64, u64)],
) -> Result<usize, String> {
    let mut violations = 0;
    for key in &report.keys {
        match &key.verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown { reason } => {
                return Err(format!("the checker gave up on key {}: {reason}", key.key))
            }
            // A write-once key reads back without its acknowledged write: a lost write, judged
            // by when it was acknowledged, below.
            Verdict::NotLinearizable(_) if mode != Mode::Raft && key.key.starts_with('u') => {}
            Verdict::NotLinearizable(v) => {
                let at = records[v.stuck].invoke;
                let stuck = records[v.stuck].describe();
                if mode == Mode::Raft || !near_failover(at, windows, AFTER_FAILOVER) {
                    return Err(format!(
                        "key {} is not linearizable: stuck at {stuck} (history index {}), after \
                         {} operations ending with indices {:?}; concurrent: {:?}",
                        key.key, v.stuck, v.linearized, v.linearized_tail, v.concurrent
                    ));
                }
                violations += 1;
            }
        }
    }
    let outside: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|t| mode == Mode::Raft || !near_failover(*t, windows, 0))
        .collect();
    if !outside.is_empty() {
        return Err(format!(
            "{} acknowledged writes were lost{} (acknowledged at {:?} s)",
            outside.len(),
            if mode == Mode::Raft {
                ""
            } else {
                " away from any failover"
            },
            outside.iter().map(|t| *t as f64 / 1e9).collect::<Vec<_>>()
        ));
    }
    Ok(violations)
}

/// Whether `at` (ns) falls within a failover window, widened by [`BEFORE_FAILOVER`] before it
/// and `after` after it.
fn near_failover(at: u64, windows: &[(u64, u64)], after: u64) -> bool {
    windows
        .iter()
        .any(|(start, end)| at + BEFORE_FAILOVER >= *start && at <= end + after)
}

/// Acknowledged write-once writes whose key did not read back their value after healing;
/// returns when each was acknowledged (ns).
fn lost_writes(records: &[Record], finals: &[Record]) -> Vec<u64> {
    let read: HashMap<&str, Option<i64>> = finals
        .iter()
        .filter_map(|r| match r.op {
            Op::Read(output) => Some((r.key.as_str(), output)),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter(|r| r.status == "ok" && r.key.starts_with('u'))
        .filter_map(|r| match r.op {
            Op::Write(v) => (read.get(r.key.as_str()) != Some(&Some(v))).then_some(r.complete),
            _ => None,
        })
        .collect()
}
