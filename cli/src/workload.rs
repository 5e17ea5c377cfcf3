//! The workload runner: concurrent clients issuing reads, writes and CASes against members,
//! recording every operation's invoke and completion times and outcome as a history.
//!
//! Each run uses keys of its own (`w<unix ms>-<random>-k0`, …), which no earlier run wrote,
//! and records in the history that they start at 0: the history is self-contained, and a
//! second run on the same cluster checks like the first.
//!
//! After the last operation the run settles: every 250 ms it reads every key locally
//! (`consistency=local`) on every member, until all members answer and agree on every key or
//! the settle period passes; the last round is recorded as the history's final reads (`null`
//! for a member that did not answer), from which the checker judges convergence.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use caplab_checker::{Entry, FinalRead, History, Op, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::client::{Member, Outcome};

/// Relative weights of reads, writes and CASes: `read=50,write=30,cas=20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub read: u32,
    pub write: u32,
    pub cas: u32,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            read: 0,
            write: 0,
            cas: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight must be a non-negative integer"))?;
            match name.trim() {
                "read" => mix.read = weight,
                "write" => mix.write = weight,
                "cas" => mix.cas = weight,
                other => return Err(format!("unknown operation {other:?}: use read, write, cas")),
            }
        }
        if mix.read + mix.write + mix.cas == 0 {
            return Err("the weights add up to 0".into());
        }
        Ok(mix)
    }
}

impl Mix {
    fn pick(&self, rng: &mut StdRng) -> u8 {
        let roll = rng.random_range(0..self.read + self.write + self.cas);
        if roll < self.read {
            0
        } else if roll < self.read + self.write {
            1
        } else {
            2
        }
    }
}

/// Which members the clients talk to.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Client addresses, `host:port`, reached directly.
    Addrs(Vec<String>),
    /// Members built elsewhere (e.g. through the Kubernetes API server's pod proxy).
    Members(Vec<Member>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Targets,
    /// Time zero of the history (shared with the fault schedule's events).
    pub start: Instant,
    pub clients: usize,
    pub keys: usize,
    /// Put before every key name (`<prefix>k0`, …): see [`run_prefix`].
    pub key_prefix: String,
    pub mix: Mix,
    /// Total operations per second over all clients; 0: as fast as the members answer.
    pub rate: f64,
    pub duration: Duration,
    pub seed: u64,
    pub consistency: String,
    pub request_timeout: Duration,
    pub progress: bool,
    /// Client i always talks to member i mod n, even when it fails (else it moves on).
    pub sticky: bool,
    /// How long to wait, after the last operation, for the members to agree before recording
    /// their final reads; zero: no final reads.
    pub settle: Duration,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    fail: AtomicU64,
    unknown: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.fail.load(Ordering::Relaxed)
            + self.unknown.load(Ordering::Relaxed)
    }

    fn line(&self, elapsed: Duration, duration: Duration) -> String {
        let total = self.total();
        format!(
            "[{:>5.1}s/{:.0}s] {total} ops ({:.0}/s): {} ok, {} fail, {} unknown",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64().max(0.001),
            self.ok.load(Ordering::Relaxed),
            self.fail.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed),
        )
    }
}

struct Shared {
    config: Config,
    members: Vec<Member>,
    start: Instant,
    counters: Counters,
    /// The latest value any client saw per key: what a CAS expects.
    last_seen: Mutex<HashMap<String, i64>>,
    /// Why operations did not succeed, and how often.
    reasons: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn seen(&self, key: &str) -> i64 {
        self.last_seen
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn note(&self, reason: String) {
        if let Ok(mut m) = self.reasons.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    fn remember(&self, key: &str, value: i64) {
        if let Ok(mut m) = self.last_seen.lock() {
            m.insert(key.to_string(), value);
        }
    }
}

/// A key prefix no other run uses: `w<unix ms>-<8 random hex digits>-`.
pub fn run_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("w{ms}-{:08x}-", rand::rng().random::<u32>())
}

impl Config {
    fn key(&self, index: usize) -> String {
        format!("{}k{index}", self.key_prefix)
    }

    /// Every key the run may use, at the value it has before the run: 0, since no earlier
    /// run used the prefix.
    fn initial(&self) -> BTreeMap<String, i64> {
        (0..self.keys).map(|i| (self.key(i), 0)).collect()
    }
}

/// Runs the workload until its duration passes or `stop` turns true; returns the history.
pub async fn run(config: Config, stop: watch::Receiver<bool>) -> Result<History> {
    let empty = match &config.targets {
        Targets::Addrs(a) => a.is_empty(),
        Targets::Members(m) => m.is_empty(),
    };
    if empty {
        bail!("no member given");
    }
    if config.clients == 0 || config.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    if !config.rate.is_finite() || config.rate < 0.0 {
        bail!("--rate must be a non-negative number");
    }
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.clients)
        .build()
        .context("building the HTTP client")?;
    let members = match &config.targets {
        Targets::Addrs(addrs) => addrs
            .iter()
            .map(|a| Member::with_client(a, http.clone(), config.request_timeout))
            .collect::<Result<Vec<_>>>()?,
        Targets::Members(members) => members.clone(),
    };
    let shared = Arc::new(Shared {
        members,
        start: config.start,
        counters: Counters::default(),
        last_seen: Mutex::new(HashMap::new()),
        reasons: Mutex::new(HashMap::new()),
        config,
    });
    let deadline = tokio::time::Instant::from_std(shared.start) + shared.config.duration;
    let mut tasks = Vec::with_capacity(shared.config.clients);
    for client in 0..shared.config.clients {
        let shared = shared.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            run_client(&shared, client, deadline, stop).await
        }));
    }
    let progress = {
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            if !shared.config.progress {
                return;
            }
            let tty = std::io::stderr().is_terminal();
            let every = if tty {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => {}
                }
                if tokio::time::Instant::now() >= deadline || *stop.borrow() {
                    break;
                }
                let line = shared
                    .counters
                    .line(shared.start.elapsed(), shared.config.duration);
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
        })
    };
    let mut entries = Vec::new();
    for task in tasks {
        entries.extend(
            task.await
                .map_err(|e| anyhow!("a client task failed: {e}"))?,
        );
    }
    progress.abort();
    if shared.config.progress {
        eprintln!(
            "\r{}",
            shared
                .counters
                .line(shared.start.elapsed(), shared.config.duration)
        );
    }
    if shared.config.progress {
        let mut reasons: Vec<(String, u64)> = shared
            .reasons
            .lock()
            .map(|m| m.iter().map(|(r, n)| (r.clone(), *n)).collect())
            .unwrap_or_default();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (reason, n) in reasons.iter().take(10) {
            eprintln!("{n:>8} × {reason}");
        }
    }
    entries.sort_by_key(|e: &Entry| (e.invoke, e.process));
    let history = History::new(entries).context("the recorded history is inconsistent (a bug)")?;
    let final_reads = settle(&shared, stop).await;
    Ok(history
        .with_initial(shared.config.initial())
        .with_final_reads(final_reads))
}

/// How often the settle period reads the members.
const SETTLE_POLL: Duration = Duration::from_millis(250);

/// The settle period: rounds of local reads of every key on every member until they all
/// answer and agree, or the period passes (or the run is stopped); the last round. None when
/// the run was stopped before the clients finished, or the period is zero.
async fn settle(shared: &Shared, mut stop: watch::Receiver<bool>) -> Vec<FinalRead> {
    let period = shared.config.settle;
    if period.is_zero() || *stop.borrow() {
        return Vec::new();
    }
    let deadline = tokio::time::Instant::now() + period;
    let keys: Vec<String> = shared.config.initial().into_keys().collect();
    loop {
        let round = read_everywhere(&shared.members, &keys).await;
        let now = tokio::time::Instant::now();
        if agreed(&round) || now >= deadline || *stop.borrow() {
            if shared.config.progress {
                eprintln!(
                    "final reads after {:.1}s of settling: {}",
                    (now - deadline + period).as_secs_f64(),
                    if agreed(&round) {
                        "every member agrees on every key"
                    } else {
                        "the members do not all answer and agree"
                    }
                );
            }
            return round;
        }
        tokio::select! {
            _ = tokio::time::sleep(SETTLE_POLL.min(deadline - now)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Every member answered, and all hold the same value of each key.
fn agreed(round: &[FinalRead]) -> bool {
    let mut values: BTreeMap<&str, i64> = BTreeMap::new();
    round.iter().all(|f| match f.value {
        None => false,
        Some(v) => *values.entry(f.key.as_str()).or_insert(v) == v,
    })
}

/// Reads every key locally on every member, all at once; a member that does not answer
/// (within the request timeout) reads as `None`.
async fn read_everywhere(members: &[Member], keys: &[String]) -> Vec<FinalRead> {
    let mut reads = tokio::task::JoinSet::new();
    for member in members {
        for key in keys {
            let (member, key) = (member.clone(), key.clone());
            reads.spawn(async move {
                let value = match member.read(&key, "local").await {
                    Outcome::Ok(v) => Some(v),
                    _ => None,
                };
                FinalRead {
                    member: member.label().to_string(),
                    key,
                    value,
                }
            });
        }
    }
    let mut round: Vec<FinalRead> = reads.join_all().await;
    round.sort_by(|a, b| (&a.key, &a.member).cmp(&(&b.key, &b.member)));
    round
}

async fn run_client(
    shared: &Shared,
    client: usize,
    deadline: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Entry> {
    let config = &shared.config;
    let mut rng = StdRng::seed_from_u64(
        config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(client as u64),
    );
    let mut member = client % shared.members.len();
    let mut sequence: i64 = 0;
    let mut entries = Vec::new();
    let mut tick = (config.rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(config.clients as f64 / config.rate);
        let mut t = tokio::time::interval(period.max(Duration::from_micros(1)));
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = tick.as_mut() {
            tokio::select! {
                _ = t.tick() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stop.changed() => {}
            }
        }
        if tokio::time::Instant::now() >= deadline || *stop.borrow() {
            break;
        }
        let key = config.key(rng.random_range(0..config.keys));
        // Unique values: a read then tells which write it saw.
        sequence += 1;
        let fresh = sequence * config.clients as i64 + client as i64 + 1;
        let target = &shared.members[member];
        let invoke = shared.now_ns();
        let (op, outcome) = match config.mix.pick(&mut rng) {
            0 => (
                Op::Read { output: None },
                target.read(&key, &config.consistency).await,
            ),
            1 => (Op::Write { value: fresh }, target.write(&key, fresh).await),
            _ => {
                let expected = shared.seen(&key);
                (
                    Op::Cas {
                        expected,
                        new: fresh,
                        output: None,
                    },
                    target.cas(&key, expected, fresh).await,
                )
            }
        };
        let complete = shared.now_ns().max(invoke);
        let (op, status) = match outcome {
            Outcome::Ok(value) => {
                shared.counters.ok.fetch_add(1, Ordering::Relaxed);
                shared.remember(&key, value);
                let op = match op {
                    Op::Read { .. } => Op::Read {
                        output: Some(value),
                    },
                    other => other,
                };
                (op, Status::Ok)
            }
            Outcome::Fail(reason) => {
                shared.counters.fail.fetch_add(1, Ordering::Relaxed);
                shared.note(format!("{} fail: {reason}", op.kind()));
                (op, Status::Fail)
            }
            Outcome::Found(current) => {
                // The comparison read the register: keep what it found, for the checker and
                // for this client's next CAS.
                shared.counters.fail.fetch_add(1, Ordering::Relaxed);
                shared.note("cas fail: HTTP 409: the comparison failed".into());
                shared.remember(&key, current);
                let op = match op {
                    Op::Cas { expected, new, .. } => Op::Cas {
                        expected,
                        new,
                        output: Some(current),
                    },
                    other => other,
                };
                (op, Status::Fail)
            }
            Outcome::Unknown(reason) => {
                shared.counters.unknown.fetch_add(1, Ordering::Relaxed);
                shared.note(format!("{} unknown: {reason}", op.kind()));
                (op, Status::Unknown)
            }
        };
        if status != Status::Ok && !config.sticky {
            // Try another member next: this one may be down, cut off or paused.
            member = (member + 1) % shared.members.len();
            if tick.is_none() {
                // Unthrottled: do not spin on members that refuse at once.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        entries.push(Entry {
            process: client as u64,
            key,
            op,
            invoke,
            complete: Some(complete),
            status,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_has_keys_of_its_own() {
        let (a, b) = (run_prefix(), run_prefix());
        assert_ne!(a, b);
        assert!(a.starts_with('w') && a.ends_with('-'), "{a}");
    }

    #[test]
    fn mixes() {
        assert_eq!(
            "read=50,write=30,cas=20".parse::<Mix>(),
            Ok(Mix {
                read: 50,
                write: 30,
                cas: 20
            })
        );
        assert_eq!(
            "write=1".parse::<Mix>(),
            Ok(Mix {
                read: 0,
                write: 1,
                cas: 0
            })
        );
        for bad in ["", "read=0", "read", "read=x", "delete=3", "read=-1"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?} accepted");
        }
        let mix = Mix {
            read: 0,
            write: 0,
            cas: 5,
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| mix.pick(&mut rng) == 2));
    }

    #[tokio::test]
    async fn unreachable_members_give_failed_operations_not_errors() {
        // A port nobody listens on: every operation is refused, so none took effect.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let (_tx, rx) = watch::channel(false);
        let config = Config {
            targets: Targets::Addrs(vec![format!("127.0.0.1:{port}")]),
            start: Instant::now(),
            clients: 2,
            keys: 2,
            key_prefix: run_prefix(),
            mix: "read=1,write=1,cas=1".parse().expect("mix"),
            rate: 200.0,
            duration: Duration::from_millis(300),
            seed: 7,
            consistency: "linearizable".into(),
            request_timeout: Duration::from_secs(2),
            progress: false,
            sticky: false,
            settle: Duration::from_millis(300),
        };
        let history = run(config, rx).await.expect("a history");
        assert!(!history.entries.is_empty());
        assert!(history.entries.iter().all(|e| e.status == Status::Fail));
        assert!(history.processes().len() == 2);
        // Only this run's keys, each recorded as starting at 0.
        assert_eq!(history.initial.len(), 2);
        assert!(history.initial.values().all(|v| *v == 0));
        assert!(history
            .keys()
            .iter()
            .all(|k| history.initial.contains_key(*k)));
        // The settle period ends without an answer: each key's final read on the member is
        // recorded as null.
        assert_eq!(history.final_reads.len(), 2);
        assert!(history.final_reads.iter().all(|f| f.value.is_none()
            && f.member == format!("127.0.0.1:{port}")
            && history.initial.contains_key(&f.key)));
    }

    #[test]
    fn members_agree_only_when_all_answer_with_one_value_per_key() {
        let read = |member: &str, key: &str, value: Option<i64>| FinalRead {
            member: member.into(),
            key: key.into(),
            value,
        };
        assert!(agreed(&[
            read("a", "x", Some(1)),
            read("b", "x", Some(1)),
            read("a", "y", Some(2))
        ]));
        assert!(!agreed(&[read("a", "x", Some(1)), read("b", "x", Some(2))]));
        assert!(!agreed(&[read("a", "x", Some(1)), read("b", "x", None)]));
    }
}
