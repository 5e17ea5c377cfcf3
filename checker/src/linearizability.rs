//! The linearizability checker for integer registers (read, write, compare-and-set).
//!
//! Registers are independent, so a history is linearizable exactly when each key's
//! sub-history is (P-compositionality); keys are checked separately, in parallel.
//!
//! Per key, this is the Wing–Gong search as improved by Lowe: the history becomes a list of
//! call and return events in time order; the search repeatedly tries to linearize an operation
//! whose call comes before the first pending return, and backtracks when it meets a return
//! whose operation it could not place. Configurations already explored — the same set of
//! linearized operations with the same register value — are remembered and never explored
//! twice.
//!
//! * Each register starts at the history's initial value for its key (0 if not given).
//! * `fail` operations did not take effect and are left out, except a CAS whose failed
//!   comparison recorded the value it found: that is a read of the value, somewhere between
//!   its invoke and its completion.
//! * `unknown` writes and CASes may take effect at any point after their invoke, or never:
//!   they get no return event, and the search succeeds once every `ok` operation is placed.
//!   An `unknown` read tells nothing and is left out.
//! * An `unknown` write or CAS whose value nobody could observe (no `ok` read returned it, no CAS
//!   expected it) can be dropped without changing the verdict: any linearization that applies it
//!   stays valid without it. With unique write values this removes almost all of them.
//! * A per-key deadline, and a deadline for the whole run, turn a search that runs too long
//!   into [`Verdict::Unknown`], never into a wrong answer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::History;
use crate::search_ops::{search_ops, step, SearchOp};

/// How long the search may run, and on how many threads keys are checked.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How long the search for one key may run; `None`: no deadline.
    pub per_key_timeout: Option<Duration>,
    /// How long the whole check may run, from the call to [`check`]; `None`: no deadline.
    /// Keys still unchecked when it passes are [`Verdict::Unknown`].
    pub total_timeout: Option<Duration>,
    /// 0: one per available core.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            per_key_timeout: Some(Duration::from_secs(60)),
            total_timeout: None,
            threads: 0,
        }
    }
}

/// Where the search got stuck: the longest partial linearization it found and the operation
/// that could not come next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// The history index of the operation that had completed but could not be ordered after
    /// the longest partial linearization.
    pub stuck: usize,
    /// History indices of the other operations that were candidates at that point (concurrent
    /// with it or pending); none of them could be placed either.
    pub concurrent: Vec<usize>,
    /// The register's value after the longest partial linearization.
    pub last_state: i64,
    /// How many operations of this key that partial linearization ordered.
    pub linearized: usize,
    /// Its last operations (history indices, oldest first), at most [`TAIL`] of them.
    pub linearized_tail: Vec<usize>,
}

/// How many operations of the partial linearization a [`Violation`] keeps.
pub const TAIL: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Violation),
    Unknown { reason: String },
}

impl Verdict {
    /// The verdict without its details.
    pub fn kind(&self) -> Overall {
        match self {
            Verdict::Linearizable => Overall::Linearizable,
            Verdict::NotLinearizable(_) => Overall::NotLinearizable,
            Verdict::Unknown { .. } => Overall::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    pub key: String,
    /// The register's value before the first operation.
    pub initial: i64,
    /// Operations the search had to consider (after leaving out failed ones, unknown reads and
    /// unobservable unknown writes).
    pub operations: usize,
    /// `unknown` writes/CASes dropped because nothing could observe them.
    pub pruned_unknown: usize,
    /// Configurations explored.
    pub explored: u64,
    pub elapsed_ms: f64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A verdict without its details: of one key, or of a whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    Linearizable,
    NotLinearizable,
    Unknown,
}

impl Overall {
    /// The machine-readable name, as in JSON: `linearizable`, `not-linearizable`, `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Overall::Linearizable => "linearizable",
            Overall::NotLinearizable => "not-linearizable",
            Overall::Unknown => "unknown",
        }
    }

    /// What a person reads: `linearizable`, `NOT linearizable`, `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Overall::Linearizable => "linearizable",
            Overall::NotLinearizable => "NOT linearizable",
            Overall::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// One per key, sorted by key.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// Not linearizable if any key is not; else unknown if any key is unknown.
    pub fn overall(&self) -> Overall {
        let kinds = || self.keys.iter().map(|k| k.verdict.kind());
        if kinds().any(|k| k == Overall::NotLinearizable) {
            Overall::NotLinearizable
        } else if kinds().any(|k| k == Overall::Unknown) {
            Overall::Unknown
        } else {
            Overall::Linearizable
        }
    }

    /// History indices of every operation a violation points at (stuck and concurrent).
    pub fn violating_ops(&self) -> HashSet<usize> {
        let mut out = HashSet::new();
        for k in &self.keys {
            if let Verdict::NotLinearizable(v) = &k.verdict {
                out.insert(v.stuck);
                out.extend(v.concurrent.iter().copied());
            }
        }
        out
    }
}

/// Checks every key of `history`.
pub fn check(history: &History, options: &CheckOptions) -> Report {
    let deadlines = Deadlines {
        per_key: options.per_key_timeout,
        total: options
            .total_timeout
            .map(|t| (t, Instant::now().checked_add(t))),
    };
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.entries.iter().enumerate() {
        per_key.entry(e.key.as_str()).or_default().push(i);
    }
    let work: Vec<(&str, Vec<usize>)> = per_key.into_iter().collect();
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, work.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<KeyReport>> = Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, indices)) = work.get(i) else {
                    break;
                };
                let report = check_key(history, key, indices, &deadlines);
                if let Ok(mut r) = results.lock() {
                    r.push(report);
                }
            });
        }
    });
    let mut keys = results.into_inner().unwrap_or_else(|e| e.into_inner());
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Report { keys }
}

/// The deadlines of a check: per key, and of the whole run (its length and when it passes;
/// `None` when that instant is beyond what the clock can represent, i.e. never).
struct Deadlines {
    per_key: Option<Duration>,
    total: Option<(Duration, Option<Instant>)>,
}

impl Deadlines {
    /// The deadline of a key whose search starts at `started`, and why it would pass.
    fn for_key(&self, started: Instant) -> Option<(Instant, String)> {
        let per_key = self.per_key.and_then(|t| {
            let at = started.checked_add(t)?;
            Some((at, format!("the search did not finish within {t:?}")))
        });
        let total = self.total.and_then(|(t, at)| {
            Some((at?, format!("the whole check did not finish within {t:?}")))
        });
        match (per_key, total) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

fn check_key(history: &History, key: &str, indices: &[usize], deadlines: &Deadlines) -> KeyReport {
    let started = Instant::now();
    let (ops, pruned_unknown) = search_ops(history, indices);
    let initial = history.initial_value(key);
    let deadline = deadlines.for_key(started);
    let mut search = Search::new(&ops);
    let outcome = search.run(deadline.as_ref().map(|(at, _)| *at), initial);
    let verdict = match outcome {
        Outcome::Linearizable => Verdict::Linearizable,
        Outcome::TimedOut => Verdict::Unknown {
            reason: format!(
                "{} ({} configurations explored)",
                deadline.map_or_else(String::new, |(_, why)| why),
                search.explored
            ),
        },
        Outcome::Stuck(best) => Verdict::NotLinearizable(Violation {
            stuck: ops[best.stuck].entry,
            concurrent: best.concurrent.iter().map(|&o| ops[o].entry).collect(),
            last_state: best.state,
            linearized: best.depth,
            linearized_tail: best.tail.iter().map(|&o| ops[o].entry).collect(),
        }),
    };
    KeyReport {
        key: key.to_string(),
        initial,
        operations: ops.len(),
        pruned_unknown,
        explored: search.explored,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        verdict,
    }
}

enum Outcome {
    Linearizable,
    Stuck(Best),
    TimedOut,
}

/// The deepest point the search reached before meeting a return it could not satisfy.
#[derive(Debug, Clone, Default)]
struct Best {
    depth: usize,
    stuck: usize,
    concurrent: Vec<usize>,
    state: i64,
    tail: Vec<usize>,
}

/// A linearized set in a compact canonical form: operations are numbered in invoke order, so
/// the set is "everything up to `max`, except `holes`" — the holes are the few operations still
/// pending around the search's frontier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    max: u32,
    holes: Box<[u32]>,
}

const HEAD: usize = 0;

/// Lowe's search over a doubly linked list of events with "dancing links" removal.
struct Search<'a> {
    ops: &'a [SearchOp],
    /// Events 1..=n; `HEAD` (0) and `tail` (n + 1) are sentinels.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation of each event.
    op_of: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call event: its return event, or 0 if it has none.
    return_of: Vec<usize>,
    tail: usize,
    /// Random 64-bit tag per operation; the xor of a set's tags is its hash.
    zobrist: Vec<u64>,
    explored: u64,
}

struct Frame {
    call: usize,
    state: i64,
    max: Option<u32>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp]) -> Self {
        // Events in time order; at equal times calls come first, so operations that merely
        // touch are treated as concurrent (the lenient reading).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            events.push((o.invoke, false, i));
            if let Some(c) = o.complete {
                events.push((c, true, i));
            }
        }
        events.sort_unstable();
        let n = events.len();
        let tail = n + 1;
        let mut op_of = vec![0; n + 2];
        let mut is_call = vec![false; n + 2];
        let mut return_of = vec![0; n + 2];
        let mut call_event = vec![0; ops.len()];
        for (k, &(_, is_return, op)) in events.iter().enumerate() {
            let ev = k + 1;
            op_of[ev] = op;
            is_call[ev] = !is_return;
            if is_return {
                return_of[call_event[op]] = ev;
            } else {
                call_event[op] = ev;
            }
        }
        let next = (0..n + 2).map(|i| (i + 1).min(tail)).collect();
        let prev = (0..n + 2).map(|i| i.saturating_sub(1)).collect();
        // A fixed-seed splitmix64 stream: deterministic, well spread.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let zobrist = (0..ops.len())
            .map(|_| {
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect();
        Search {
            ops,
            next,
            prev,
            op_of,
            is_call,
            return_of,
            tail,
            zobrist,
            explored: 0,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.return_of[call];
        if ret != 0 {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.return_of[call];
        if ret != 0 {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// The canonical form of (the current linearized set + `adding`), whose largest member is
    /// `max`. Unlinearized operations numbered below `max` are exactly the call events still
    /// in the list before the first call numbered above it.
    fn snapshot(&self, adding: usize, max: u32) -> Snapshot {
        let mut holes = Vec::new();
        let mut e = self.next[HEAD];
        while e != self.tail {
            if self.is_call[e] {
                let op = self.op_of[e];
                if op as u32 > max {
                    break;
                }
                if op != adding {
                    holes.push(op as u32);
                }
            }
            e = self.next[e];
        }
        Snapshot {
            max,
            holes: holes.into_boxed_slice(),
        }
    }

    /// Searches for a linearization of the register starting at `initial`.
    fn run(&mut self, deadline: Option<Instant>, initial: i64) -> Outcome {
        let required_total = self.ops.iter().filter(|o| o.required()).count();
        let mut required_done = 0;
        let mut state: i64 = initial;
        let mut hash: u64 = 0;
        let mut max: Option<u32> = None;
        let mut stack: Vec<Frame> = Vec::new();
        let mut cache: HashMap<(u64, i64), Vec<Snapshot>> = HashMap::new();
        let mut best: Option<Best> = None;
        let mut entry = self.next[HEAD];
        let mut steps: u64 = 0;
        loop {
            if required_done == required_total {
                return Outcome::Linearizable;
            }
            steps += 1;
            if steps & 1023 == 0 {
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        return Outcome::TimedOut;
                    }
                }
            }
            if entry != self.tail && self.is_call[entry] {
                let op = self.op_of[entry];
                if let Some(new_state) = step(state, &self.ops[op].op) {
                    let new_hash = hash ^ self.zobrist[op];
                    let new_max = max.map_or(op as u32, |m| m.max(op as u32));
                    let snapshot = self.snapshot(op, new_max);
                    let seen = cache.entry((new_hash, new_state)).or_default();
                    if !seen.contains(&snapshot) {
                        seen.push(snapshot);
                        self.explored += 1;
                        stack.push(Frame {
                            call: entry,
                            state,
                            max,
                        });
                        state = new_state;
                        hash = new_hash;
                        max = Some(new_max);
                        if self.ops[op].required() {
                            required_done += 1;
                        }
                        self.lift(entry);
                        entry = self.next[HEAD];
                        continue;
                    }
                }
                entry = self.next[entry];
            } else {
                // A return (or the end): its operation had to be linearized by now.
                if entry != self.tail && best.as_ref().is_none_or(|b| stack.len() > b.depth) {
                    best = Some(self.record(entry, &stack, state));
                }
                let Some(frame) = stack.pop() else {
                    return Outcome::Stuck(best.unwrap_or_default());
                };
                let op = self.op_of[frame.call];
                hash ^= self.zobrist[op];
                state = frame.state;
                max = frame.max;
                if self.ops[op].required() {
                    required_done -= 1;
                }
                self.unlift(frame.call);
                entry = self.next[frame.call];
            }
        }
    }

    fn record(&self, ret: usize, stack: &[Frame], state: i64) -> Best {
        let stuck = self.op_of[ret];
        let mut concurrent = Vec::new();
        let mut e = self.next[HEAD];
        while e != ret && e != self.tail {
            if self.is_call[e] && self.op_of[e] != stuck {
                concurrent.push(self.op_of[e]);
            }
            e = self.next[e];
        }
        let from = stack.len().saturating_sub(TAIL);
        Best {
            depth: stack.len(),
            stuck,
            concurrent,
            state,
            tail: stack[from..].iter().map(|f| self.op_of[f.call]).collect(),
        }
    }
}
