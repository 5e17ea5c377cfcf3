//! What the nemesis test binaries (`nemesis.rs`, `nemesis_2pc.rs`, `nemesis_quorum.rs`)
//! share: the concurrent clients and the history they record (unique written values, an
//! unknown outcome continues as a new process), the final reads, the checker run, and keeping
//! a failed run's files next to its seed.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caplab_checker::{check, CheckOptions, History, Report};
use caplab_testkit::nemesis::{self, Nemesis, Replication, Rng};
use caplab_testkit::Cluster;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::common;

/// An HTTP request that takes longer is given up (its outcome unknown). Members answer within
/// their own 3 s request deadline (the harness sets it), except when paused.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the clients do: how many, how many of them write write-once keys (`u<value>`), how
/// many registers the others share (`k0`, `k1`, …) and whether they compare-and-set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clients: usize,
    pub once_clients: usize,
    pub keys: u64,
    /// Without CAS the shared registers get reads and writes half and half.
    pub cas: bool,
}

/// An operation as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
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
pub struct Record {
    pub process: u64,
    pub key: String,
    pub op: Op,
    /// The member the operation was sent to (it coordinates it in quorum mode).
    pub member: u64,
    /// Nanoseconds since the run's start.
    pub invoke: u64,
    pub complete: u64,
    /// `ok`, `fail` or `unknown`, as in the checker's history.
    pub status: &'static str,
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

    pub fn describe(&self) -> String {
        format!(
            "{:?} on {} by process {} through member {} ({} in [{:.3} s, {:.3} s])",
            self.op,
            self.key,
            self.process,
            self.member,
            self.status,
            self.invoke as f64 / 1e9,
            self.complete as f64 / 1e9
        )
    }

    /// The value a write or CAS wrote, if it may have taken effect.
    pub fn written(&self) -> Option<i64> {
        match (self.op, self.status) {
            (_, "fail") => None,
            (Op::Write(v), _) | (Op::Cas { new: v, .. }, _) => Some(v),
            (Op::Read(_), _) => None,
        }
    }
}

/// What member `member` held locally for `key` after the run (the checker's `final`); `None`
/// when it did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub member: u64,
    pub key: String,
    pub value: Option<i64>,
}

/// The checker's JSON history: a bare array of operations, or with `finals` the object form
/// with `"final"`.
pub fn history_json(records: &[Record], finals: &[Final]) -> String {
    let entries: Vec<String> = records.iter().map(|r| r.to_json().to_string()).collect();
    let operations = format!("[\n{}\n]", entries.join(",\n"));
    if finals.is_empty() {
        return format!("{operations}\n");
    }
    let finals: Vec<Value> = finals
        .iter()
        .map(|f| json!({"member": format!("member-{}", f.member), "key": f.key, "value": f.value}))
        .collect();
    format!(
        "{{\"operations\": {operations},\n\"final\": {}}}\n",
        Value::from(finals)
    )
}

/// Checks `records` (and `finals`) for linearizability per key; returns the history as the
/// checker read it too, for the ladder and the anomalies.
pub async fn check_history(label: &str, records: &[Record], finals: &[Final]) -> (History, Report) {
    let json = history_json(records, finals);
    let history = History::from_json(&json)
        .unwrap_or_else(|e| panic!("{label}: the recorded history is malformed: {e}"));
    let started = Instant::now();
    let checked = history.clone();
    let report = tokio::task::spawn_blocking(move || {
        let options = CheckOptions {
            per_key_timeout: Some(Duration::from_secs(120)),
            ..CheckOptions::default()
        };
        check(&checked, &options)
    })
    .await
    .unwrap_or_else(|e| panic!("{label}: the checker panicked: {e}"));
    println!(
        "{label}: {} operations on {} keys checked in {:.1} s",
        records.len(),
        report.keys.len(),
        started.elapsed().as_secs_f64()
    );
    (history, report)
}

/// Keeps the history, the fault windows and the members' directories, then fails the test
/// naming the seed and where they are.
pub fn keep_and_fail(
    mode: &str,
    seed: u64,
    (records, finals): (&[Record], &[Final]),
    nemesis: &Nemesis,
    mut cluster: Cluster,
    reason: &str,
) -> ! {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "nemesis-{mode}-seed-{seed}-pid-{}",
        std::process::id()
    ));
    let history = history_json(records, finals);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("history.json"), history))
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
        "{mode} run with seed {seed} FAILED: {reason}\n  history: {}/history.json{}\n  fault \
         windows: {}/history.events.json\n  members' data and logs: {members}\n  repeat this \
         schedule with {}={seed}",
        dir.display(),
        written
            .err()
            .map_or(String::new(), |e| format!(" (could not be written: {e})")),
        dir.display(),
        nemesis::SEED_ENV,
    )
}

/// What the clients share: the members' ids and client URLs, one HTTP client, time zero, the
/// shape of the load, and the source of unique written values.
pub struct Workload {
    pub urls: Vec<(u64, String)>,
    http: reqwest::Client,
    start: Instant,
    pub shape: Shape,
    values: AtomicI64,
}

impl Workload {
    pub fn new(cluster: &Cluster, start: Instant, shape: Shape) -> Workload {
        Workload {
            urls: cluster
                .members
                .values()
                .map(|m| (m.id, m.url("")))
                .collect(),
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .pool_max_idle_per_host(shape.clients)
                .build()
                .expect("an HTTP client with a timeout"),
            start,
            shape,
            values: AtomicI64::new(1),
        }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn unique(&self) -> i64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    fn member(&self, rng: &mut Rng) -> &(u64, String) {
        &self.urls[rng.below(self.urls.len() as u64) as usize]
    }

    /// The shared registers' keys.
    pub fn keys(&self) -> impl Iterator<Item = String> {
        (0..self.shape.keys).map(|k| format!("k{k}"))
    }

    /// Starts the clients, which run until `stop`.
    pub fn start_clients(self: &Arc<Self>, rng: &mut Rng, stop: Instant) -> Clients {
        Clients(
            (0..self.shape.clients)
                .map(|index| tokio::spawn(client(self.clone(), index, rng.fork(), stop)))
                .collect(),
        )
    }
}

/// Clients running.
pub struct Clients(Vec<tokio::task::JoinHandle<Vec<Record>>>);

impl Clients {
    /// Waits for every client to stop; their records, client after client.
    pub async fn join(self, label: &str) -> Vec<Record> {
        let mut records = Vec::new();
        for task in self.0 {
            records.extend(
                task.await
                    .unwrap_or_else(|e| panic!("{label}: a client panicked: {e}")),
            );
        }
        records
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
        let (key, op) = next_op(&w, index, &mut rng, &seen);
        let (member, url) = w.member(&mut rng).clone();
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
            member,
            invoke,
            complete,
            status,
        });
        if status == "unknown" {
            process += w.shape.clients as u64;
        }
    }
    records
}

/// The next operation of client `index`: a write-once key for the first
/// [`Shape::once_clients`], else a read, write or (with [`Shape::cas`]) CAS of a register.
fn next_op(w: &Workload, index: usize, rng: &mut Rng, seen: &HashMap<String, i64>) -> (String, Op) {
    if index < w.shape.once_clients {
        let value = w.unique();
        return (format!("u{value}"), Op::Write(value));
    }
    let key = format!("k{}", rng.below(w.shape.keys));
    let roll = rng.below(100);
    let op = match roll {
        0..50 => Op::Read(None),
        50..75 => Op::Write(w.unique()),
        _ if !w.shape.cas => Op::Write(w.unique()),
        _ => Op::Cas {
            expected: seen.get(&key).copied().unwrap_or(0),
            new: w.unique(),
            found: None,
        },
    };
    (key, op)
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
pub async fn final_reads(w: &Arc<Workload>, records: &[Record]) -> Result<Vec<Record>, String> {
    let members = w.urls.len();
    let mut reads: Vec<(String, usize)> = Vec::new();
    for key in w.keys() {
        reads.extend((0..members).map(|m| (key.clone(), m)));
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
        let (id, url) = &w.urls[attempt % w.urls.len()];
        let invoke = w.now_ns();
        if let ("ok", value) = perform(&w.http, url, key, Op::Read(None)).await {
            return Ok(Record {
                process,
                key: key.to_string(),
                op: Op::Read(value),
                member: *id,
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

/// Every member's local read (`consistency=local`) of every key in `keys`, as the checker's
/// `final`; a member that does not answer holds `None`.
pub async fn local_reads(cluster: &Cluster, keys: &[String]) -> Vec<Final> {
    let pairs = cluster
        .members
        .keys()
        .flat_map(|id| keys.iter().map(move |key| (*id, key.clone())));
    futures::stream::iter(pairs)
        .map(|(member, key)| async move {
            let (status, body) = cluster.get(member, &key, "local").await;
            let value = (status == 200).then(|| body["value"].as_i64()).flatten();
            Final { member, key, value }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// The keys a run touched: the shared registers and every write-once key written.
pub fn touched_keys(w: &Workload, records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = w.keys().collect();
    let mut once: Vec<String> = records
        .iter()
        .filter(|r| r.key.starts_with('u'))
        .map(|r| r.key.clone())
        .collect();
    once.sort_unstable();
    once.dedup();
    keys.extend(once);
    keys
}

/// Faults during which no operation was acknowledged: availability, not safety, but the
/// liveness problems a nemesis is there to show (issue 18 §2).
pub fn print_stalls(label: &str, records: &[Record], nemesis: &Nemesis) {
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

/// The traffic of one seeded run: a nemesis seeded from `rng` runs faults on `cluster` while
/// the clients of `shape` run for `duration`; prints the counts (acknowledged per second) and
/// the stalls under `label`. Returns the nemesis (to heal the cluster and judge by its
/// windows), the workload (for final reads) and the records.
pub async fn drive(
    cluster: &mut Cluster,
    rng: &mut Rng,
    replication: Replication,
    (shape, duration): (Shape, Duration),
    label: &str,
) -> (Nemesis, Arc<Workload>, Vec<Record>) {
    let start = Instant::now();
    let mut nemesis = Nemesis::new(rng.next_u64(), replication, start);
    nemesis.probe_one_way(cluster).await;
    let workload = Arc::new(Workload::new(cluster, start, shape));
    let stop = Instant::now() + duration;
    let clients = workload.start_clients(rng, stop);
    nemesis.run(cluster, stop).await;
    let records = clients.join(label).await;
    let acknowledged = records.iter().filter(|r| r.status == "ok").count();
    println!(
        "{label}: {} operations, {acknowledged} acknowledged ({:.0}/s)",
        records.len(),
        acknowledged as f64 / start.elapsed().as_secs_f64()
    );
    print_stalls(label, &records, &nemesis);
    (nemesis, workload, records)
}
