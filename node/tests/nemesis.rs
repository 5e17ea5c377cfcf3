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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caplab_checker::{check, CheckOptions, History, Report, Verdict};
use caplab_testkit::nemesis::{self, Nemesis, Replication, Rng};
use caplab_testkit::Cluster;
use serde_json::{json, Value};

/// Workload operations (any outcome) the Raft test checks in one `cargo test` (issue 18 §5).
const RAFT_OPERATIONS: usize = 100_000;
/// Raft runs stop once [`RAFT_OPERATIONS`] is reached, and fail the test if this many did not.
const RAFT_MAX_RUNS: u64 = 10;
/// How long clients run in one Raft run, and in one run of a primary mode.
const RAFT_RUN: Duration = Duration::from_secs(25);
const PRIMARY_RUN: Duration = Duration::from_secs(15);
/// Concurrent clients; the first [`ONCE_CLIENTS`] of them write write-once keys.
const CLIENTS: usize = 48;
const ONCE_CLIENTS: usize = 6;
/// Registers the other clients share: few, so that operations on each one overlap.
const KEYS: u64 = 5;
/// An HTTP request that takes longer is given up (its outcome unknown). Members answer within
/// their own 3 s request deadline (the harness sets it), except when paused.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
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
        "{label}: {} members, {CLIENTS} clients, {duration:?}",
        mode.members()
    );
    let mut rng = Rng::new(seed);
    let mut cluster = common::start_with(mode.members(), &["--replication", mode.name()]).await;
    let start = Instant::now();
    let mut nemesis = Nemesis::new(rng.next_u64(), mode.replication(), start);
    nemesis.probe_one_way(&cluster).await;
    let workload = Arc::new(Workload::new(&cluster, start));
    let stop = Instant::now() + duration;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| tokio::spawn(client(workload.clone(), index, rng.fork(), stop)))
        .collect();
    nemesis.run(&mut cluster, stop).await;
    let mut records = Vec::new();
    for task in clients {
        records.extend(
            task.await
                .unwrap_or_else(|e| panic!("{label}: a client panicked: {e}")),
        );
    }
    let operations = records.len();
    let acknowledged = records.iter().filter(|r| r.status == "ok").count();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{label}: {operations} operations, {acknowledged} acknowledged ({:.0}/s)",
        acknowledged as f64 / elapsed
    );
    print_stalls(&label, &records, &nemesis);
    let finals = match nemesis.heal(&mut cluster, common::DEADLINE).await {
        Ok(()) => final_reads(&workload, &records, mode.members()).await,
        Err(e) => Err(format!("the cluster could not be healed (liveness): {e}")),
    };
    let finals = match finals {
        Ok(finals) => finals,
        Err(e) => keep_and_fail(mode, seed, &records, &nemesis, cluster, &e),
    };
    let lost = lost_writes(&records, &finals);
    records.extend(finals);
    let report = check_history(&label, &records).await;
    let judged = judge(mode, &records, &report, &lost, &nemesis.failover_windows());
    match judged {
        Ok(violations) => RunResult {
            operations,
            acknowledged,
            failovers: nemesis.failover_windows().len(),
            lost,
            violations,
        },
        Err(e) => keep_and_fail(mode, seed, &records, &nemesis, cluster, &e),
    }
}

/// Faults during which no operation was acknowledged: availability, not safety, but the
/// liveness problems a nemesis is there to show (issue 18 §2).
fn print_stalls(label: &str, records: &[Record], nemesis: &Nemesis) {
    for event in &nemesis.events {
        let during = |r: &&Record| {
            r.status == "ok" && r.complete >= event.start_ns && r.complete <= event.end_ns
        };
        if !records.iter().any(|r| during(&r)) {
            println!(
                "{label}: no operation acknowledged during {:.1} s of {}",
                (event.end_ns - event.start_ns) as f64 / 1e9,
                event.fault
            );
        }
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

async fn check_history(label: &str, records: &[Record]) -> Report {
    let json = history_json(records);
    let history = History::from_json(&json)
        .unwrap_or_else(|e| panic!("{label}: the recorded history is malformed: {e}"));
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        let options = CheckOptions {
            per_key_timeout: Some(Duration::from_secs(120)),
            ..CheckOptions::default()
        };
        check(&history, &options)
    })
    .await
    .unwrap_or_else(|e| panic!("{label}: the checker panicked: {e}"));
    println!(
        "{label}: {} operations on {} keys checked in {:.1} s",
        records.len(),
        report.keys.len(),
        started.elapsed().as_secs_f64()
    );
    report
}

/// Keeps the history, the fault windows and the members' directories, then fails the test
/// naming the seed and where they are.
fn keep_and_fail(
    mode: Mode,
    seed: u64,
    records: &[Record],
    nemesis: &Nemesis,
    mut cluster: Cluster,
    reason: &str,
) -> ! {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "nemesis-{}-seed-{seed}-pid-{}",
        mode.name(),
        std::process::id()
    ));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("history.json"), history_json(records)))
        .and_then(|()| {
            std::fs::write(
                dir.join("history.events.json"),
                nemesis.windows_json().to_string(),
            )
        });
    let members = tempfile::tempdir()
        .map(|empty| std::mem::replace(&mut cluster.dir, empty).keep())
        .map_or_else(|e| format!("(not kept: {e})"), |p| p.display().to_string());
    drop(cluster);
    panic!(
        "{} run with seed {seed} FAILED: {reason}\n  history: {}/history.json{}\n  fault windows: \
         {}/history.events.json\n  members' data and logs: {members}\n  repeat this schedule \
         with {}={seed}",
        mode.name(),
        dir.display(),
        written
            .err()
            .map_or(String::new(), |e| format!(" (could not be written: {e})")),
        dir.display(),
        nemesis::SEED_ENV,
    )
}

/// An operation as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// What an acknowledged read returned.
    Read(Option<i64>),
    Write(i64),
    /// `found`: for a CAS whose comparison failed (`409`), the value the member found instead
    /// of `expected`; the checker treats it as a read.
    Cas {
        expected: i64,
        new: i64,
        found: Option<i64>,
    },
}

#[derive(Debug, Clone)]
struct Record {
    process: u64,
    key: String,
    op: Op,
    /// Nanoseconds since the run's start.
    invoke: u64,
    complete: u64,
    /// `ok`, `fail` or `unknown`, as in the checker's history.
    status: &'static str,
}

impl Record {
    /// The checker's JSON form of one operation.
    fn to_json(&self) -> Value {
        let mut entry = json!({
            "process": self.process,
            "key": self.key,
            "invoke": self.invoke,
            "complete": self.complete,
            "status": self.status,
        });
        let fields = match self.op {
            Op::Read(output) => json!({"type": "read", "output": output}),
            Op::Write(value) => json!({"type": "write", "value": value}),
            Op::Cas {
                expected,
                new,
                found,
            } => json!({"type": "cas", "expected": expected, "new": new, "output": found}),
        };
        if let (Some(entry), Some(fields)) = (entry.as_object_mut(), fields.as_object()) {
            entry.extend(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        entry
    }

    fn describe(&self) -> String {
        format!(
            "{:?} on {} by process {} ({} in [{:.3} s, {:.3} s])",
            self.op,
            self.key,
            self.process,
            self.status,
            self.invoke as f64 / 1e9,
            self.complete as f64 / 1e9
        )
    }
}

fn history_json(records: &[Record]) -> String {
    let entries: Vec<String> = records.iter().map(|r| r.to_json().to_string()).collect();
    format!("[\n{}\n]\n", entries.join(",\n"))
}

/// What the clients share: the members' client URLs, one HTTP client, time zero, and the
/// source of unique written values.
struct Workload {
    urls: Vec<String>,
    http: reqwest::Client,
    start: Instant,
    values: AtomicI64,
}

impl Workload {
    fn new(cluster: &Cluster, start: Instant) -> Workload {
        Workload {
            urls: cluster.members.values().map(|m| m.url("")).collect(),
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .pool_max_idle_per_host(CLIENTS)
                .build()
                .expect("an HTTP client with a timeout"),
            start,
            values: AtomicI64::new(1),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn unique(&self) -> i64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    fn url(&self, rng: &mut Rng) -> &str {
        &self.urls[rng.below(self.urls.len() as u64) as usize]
    }
}

/// One client until `stop`: each operation through a random member. After an operation with
/// an unknown outcome the client continues as a new process (Jepsen's convention: the old one
/// may still be in flight).
async fn client(w: Arc<Workload>, index: usize, mut rng: Rng, stop: Instant) -> Vec<Record> {
    let mut process = index as u64;
    // The last value this client saw per register: what its CASes expect.
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut records = Vec::new();
    while Instant::now() < stop {
        let (key, op) = if index < ONCE_CLIENTS {
            let value = w.unique();
            (format!("u{value}"), Op::Write(value))
        } else {
            let key = format!("k{}", rng.below(KEYS));
            let op = match rng.below(100) {
                0..50 => Op::Read(None),
                50..75 => Op::Write(w.unique()),
                _ => Op::Cas {
                    expected: seen.get(&key).copied().unwrap_or(0),
                    new: w.unique(),
                    found: None,
                },
            };
            (key, op)
        };
        let url = w.url(&mut rng).to_string();
        let invoke = w.now_ns();
        let (status, value) = perform(&w.http, &url, &key, op).await;
        let complete = w.now_ns();
        let op = match (op, status) {
            (Op::Read(_), "ok") => Op::Read(value),
            (Op::Cas { expected, new, .. }, "fail") => Op::Cas {
                expected,
                new,
                found: value,
            },
            _ => op,
        };
        if let Some(v) = observed(op, status) {
            seen.insert(key.clone(), v);
        }
        records.push(Record {
            process,
            key,
            op,
            invoke,
            complete,
            status,
        });
        if status == "unknown" {
            process += CLIENTS as u64;
        }
    }
    records
}

/// The register's value an operation revealed, if any.
fn observed(op: Op, status: &str) -> Option<i64> {
    match (op, status) {
        (Op::Read(v), "ok") => v,
        (Op::Write(v), "ok") => Some(v),
        (Op::Cas { new, .. }, "ok") => Some(new),
        (Op::Cas { found, .. }, "fail") => found,
        _ => None,
    }
}

/// Sends one operation and classifies the answer: `ok` took effect (with the value read, or
/// a failed CAS's `current`), `fail` certainly did not (any failed read; `400`, `409`, `503`;
/// a refused connection), `unknown` may have (`504`, timeouts, cut connections, anything else).
async fn perform(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    op: Op,
) -> (&'static str, Option<i64>) {
    let url = format!("{base}/v1/kv/{key}");
    let request = match op {
        Op::Read(_) => http.get(url),
        Op::Write(value) => http.put(url).json(&json!({ "value": value })),
        Op::Cas { expected, new, .. } => http
            .post(format!("{url}/cas"))
            .json(&json!({ "expected": expected, "new": new })),
    };
    let read = matches!(op, Op::Read(_));
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) if read || e.is_connect() => return ("fail", None),
        Err(_) => return ("unknown", None),
    };
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    match (status, body["value"].as_i64()) {
        (200, Some(v)) => ("ok", Some(v)),
        _ if read => ("fail", None),
        (409, _) => ("fail", body["current"].as_i64()),
        (400 | 503, _) => ("fail", None),
        _ => ("unknown", None),
    }
}

/// After healing: every register read through every member, and every write-once key that may
/// have been written read through some member, each retried until it succeeds. Recorded as
/// acknowledged reads of fresh processes, so the checker also sees the end state.
async fn final_reads(
    w: &Arc<Workload>,
    records: &[Record],
    members: u64,
) -> Result<Vec<Record>, String> {
    let mut reads: Vec<(String, usize)> = Vec::new();
    for key in 0..KEYS {
        reads.extend((0..members as usize).map(|m| (format!("k{key}"), m)));
    }
    reads.extend(
        records
            .iter()
            .filter(|r| r.key.starts_with('u') && r.status != "fail")
            .enumerate()
            .map(|(i, r)| (r.key.clone(), i)),
    );
    let queue = Arc::new(Mutex::new(reads));
    let readers: Vec<_> = (0..16u64)
        .map(|reader| {
            let (w, queue) = (w.clone(), queue.clone());
            tokio::spawn(async move {
                let process = 1_000_000 + reader;
                let mut out = Vec::new();
                while let Some((key, member)) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    out.push(read_until_ok(&w, process, &key, member).await?);
                }
                Ok::<_, String>(out)
            })
        })
        .collect();
    let mut out = Vec::new();
    for reader in readers {
        out.extend(
            reader
                .await
                .map_err(|e| format!("a final reader panicked: {e}"))??,
        );
    }
    Ok(out)
}

/// A linearizable read of `key` through member `member` (modulo their number), retried
/// through the next members until one succeeds or the harness deadline passes.
async fn read_until_ok(
    w: &Workload,
    process: u64,
    key: &str,
    member: usize,
) -> Result<Record, String> {
    let give_up = Instant::now() + common::DEADLINE;
    for attempt in member.. {
        let url = &w.urls[attempt % w.urls.len()];
        let invoke = w.now_ns();
        if let ("ok", value) = perform(&w.http, url, key, Op::Read(None)).await {
            return Ok(Record {
                process,
                key: key.to_string(),
                op: Op::Read(value),
                invoke,
                complete: w.now_ns(),
                status: "ok",
            });
        }
        if Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no linearizable read of {key} succeeded within {:?} after healing (liveness)",
        common::DEADLINE
    ))
}
