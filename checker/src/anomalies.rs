//! Anomalies in plain words: what went wrong, the way a person would say it, with the
//! operations involved.
//!
//! Each kind is a pattern that proves a rung of the ladder fails, found only where the
//! history is unambiguous: a value counts as written by one operation only if exactly one
//! write or CAS (`ok` or `unknown`) wrote it (caplab's workload writes unique values), or if it
//! is the key's initial value and nothing wrote it.
//!
//! * **stale read**: a read returned a value although a write that began after that value's
//!   write had finished was acknowledged before the read began (not linearizable);
//! * **lost acknowledged write**: an acknowledged write nobody ever observed (no read, no CAS,
//!   no member's final read), although a read that began after its acknowledgment returned a
//!   value written before it began;
//! * **reads went backwards**: a process read a value, then (its next read of the key) a value
//!   whose write had finished before the first value's write began (monotonic reads fail);
//! * **did not converge**: the members' final local reads of a key differ.
//!
//! Times in sentences are from the start of the run; a read's time is when it was sent.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Entry, History, Op, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    StaleRead,
    LostAcknowledgedWrite,
    ReadsWentBackwards,
    DidNotConverge,
}

impl AnomalyKind {
    /// The words in sentences and counts: `stale read`, …
    pub fn words(&self) -> &'static str {
        match self {
            AnomalyKind::StaleRead => "stale read",
            AnomalyKind::LostAcknowledgedWrite => "lost acknowledged write",
            AnomalyKind::ReadsWentBackwards => "reads went backwards",
            AnomalyKind::DidNotConverge => "did not converge",
        }
    }

    /// The JSON name: `stale-read`, …
    pub fn as_str(&self) -> &'static str {
        match self {
            AnomalyKind::StaleRead => "stale-read",
            AnomalyKind::LostAcknowledgedWrite => "lost-acknowledged-write",
            AnomalyKind::ReadsWentBackwards => "reads-went-backwards",
            AnomalyKind::DidNotConverge => "did-not-converge",
        }
    }
}

/// One anomaly: its kind, the sentence, and what it involves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub key: String,
    pub sentence: String,
    /// History indices of the operations involved.
    pub operations: Vec<usize>,
    /// Members involved (for `did-not-converge`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// Every anomaly of `history`, by key, then kind, then time.
pub fn anomalies(history: &History) -> Vec<Anomaly> {
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.entries.iter().enumerate() {
        per_key.entry(e.key.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (key, indices) in &per_key {
        let k = KeyView::new(history, key, indices);
        out.extend(k.stale_reads());
        out.extend(k.lost_writes());
        out.extend(k.backward_reads());
    }
    out.extend(divergence(history));
    out.sort_by(|a, b| a.key.cmp(&b.key).then(a.kind.cmp(&b.kind)));
    out
}

/// How many of each kind, every kind listed.
pub fn counts(anomalies: &[Anomaly]) -> BTreeMap<AnomalyKind, usize> {
    let mut counts: BTreeMap<AnomalyKind, usize> = [
        AnomalyKind::StaleRead,
        AnomalyKind::LostAcknowledgedWrite,
        AnomalyKind::ReadsWentBackwards,
        AnomalyKind::DidNotConverge,
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for a in anomalies {
        *counts.entry(a.kind).or_default() += 1;
    }
    counts
}

/// `12.345 s` from one second on, `350.0 ms` below: to the millisecond, so that two times a
/// sentence compares never look equal.
pub fn seconds(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Where a value came from.
#[derive(Clone, Copy)]
enum Source {
    /// The key's initial value, which nothing wrote: before every operation.
    Initial,
    /// The one write or CAS that wrote it (a history index).
    Write(usize),
}

/// A key's operations, indexed for the patterns.
struct KeyView<'a> {
    key: &'a str,
    entries: &'a [Entry],
    /// Ok reads (history indices), in invoke order.
    reads: Vec<usize>,
    /// Ok writes and CASes, sorted by invoke, with the least `complete` from each on.
    writes_by_invoke: Vec<usize>,
    least_complete_from: Vec<usize>,
    /// value → every write/CAS (ok or unknown) that wrote it.
    writers: HashMap<i64, Vec<usize>>,
    initial: i64,
    /// Values something observed: ok reads, failed CASes' findings, CASes' expectations,
    /// members' final reads.
    observed: HashSet<i64>,
}

fn written(e: &Entry) -> Option<i64> {
    match (e.op, e.status) {
        (_, Status::Fail) => None,
        (Op::Write { value }, _) => Some(value),
        (Op::Cas { new, .. }, _) => Some(new),
        (Op::Read { .. }, _) => None,
    }
}

fn complete(e: &Entry) -> u64 {
    e.complete.unwrap_or(u64::MAX)
}

impl<'a> KeyView<'a> {
    fn new(history: &'a History, key: &'a str, indices: &[usize]) -> KeyView<'a> {
        let entries = &history.entries[..];
        let mut reads = Vec::new();
        let mut writes_by_invoke = Vec::new();
        let mut writers: HashMap<i64, Vec<usize>> = HashMap::new();
        let mut observed = HashSet::new();
        for &i in indices {
            let e = &entries[i];
            if let Some(v) = written(e) {
                writers.entry(v).or_default().push(i);
                if e.status == Status::Ok {
                    writes_by_invoke.push(i);
                }
            }
            match (e.op, e.status) {
                (Op::Read { output: Some(v) }, Status::Ok) => {
                    reads.push(i);
                    observed.insert(v);
                }
                (
                    Op::Cas {
                        output: Some(v), ..
                    },
                    Status::Fail,
                ) => {
                    observed.insert(v);
                }
                (Op::Cas { expected, .. }, Status::Ok | Status::Unknown) => {
                    observed.insert(expected);
                }
                _ => {}
            }
        }
        for f in history.final_reads.iter().filter(|f| f.key == key) {
            if let Some(v) = f.value {
                observed.insert(v);
            }
        }
        reads.sort_by_key(|&i| (entries[i].invoke, i));
        writes_by_invoke.sort_by_key(|&i| (entries[i].invoke, i));
        let mut least_complete_from = writes_by_invoke.clone();
        for j in (0..least_complete_from.len().saturating_sub(1)).rev() {
            let later = least_complete_from[j + 1];
            if complete(&entries[later]) < complete(&entries[least_complete_from[j]]) {
                least_complete_from[j] = later;
            }
        }
        KeyView {
            key,
            entries,
            reads,
            writes_by_invoke,
            least_complete_from,
            writers,
            initial: history.initial_value(key),
            observed,
        }
    }

    fn source(&self, value: i64) -> Option<Source> {
        match self.writers.get(&value).map(Vec::as_slice) {
            None | Some([]) if value == self.initial => Some(Source::Initial),
            Some([w]) if value != self.initial => Some(Source::Write(*w)),
            _ => None,
        }
    }

    /// When the value's source certainly took effect by: `None` for the initial value (before
    /// everything); for an acknowledged write, its acknowledgment; never (`u64::MAX`) for a
    /// write whose outcome is unknown: it may take effect after the client gave up.
    fn settled_by(&self, source: Source) -> Option<u64> {
        match source {
            Source::Initial => None,
            Source::Write(w) if self.entries[w].status == Status::Ok => {
                Some(complete(&self.entries[w]))
            }
            Source::Write(_) => Some(u64::MAX),
        }
    }

    /// The acknowledged write invoked after `after` (`None`: any) acknowledged earliest.
    fn first_acknowledged_after(&self, after: Option<u64>) -> Option<usize> {
        let from = match after {
            None => 0,
            Some(t) => self
                .writes_by_invoke
                .partition_point(|&w| self.entries[w].invoke <= t),
        };
        self.least_complete_from.get(from).copied()
    }

    fn read_value(&self, r: usize) -> i64 {
        match self.entries[r].op {
            Op::Read { output: Some(v) } => v,
            _ => self.initial,
        }
    }

    fn anomaly(&self, kind: AnomalyKind, sentence: String, operations: Vec<usize>) -> Anomaly {
        Anomaly {
            kind,
            key: self.key.to_string(),
            sentence: format!("{sentence} ({})", kind.words()),
            operations,
            members: Vec::new(),
        }
    }

    fn stale_reads(&self) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for &r in &self.reads {
            let (read, v) = (&self.entries[r], self.read_value(r));
            let Some(source) = self.source(v) else {
                continue;
            };
            let Some(w) = self.first_acknowledged_after(self.settled_by(source)) else {
                continue;
            };
            let newer = &self.entries[w];
            if complete(newer) >= read.invoke {
                continue;
            }
            let mut operations = vec![r, w];
            if let Source::Write(s) = source {
                operations.push(s);
            }
            out.push(self.anomaly(
                AnomalyKind::StaleRead,
                format!(
                    "read of {} returned {v} at {} although the write of {} was acknowledged at {}",
                    self.key,
                    seconds(read.invoke),
                    written(newer).unwrap_or_default(),
                    seconds(complete(newer)),
                ),
                operations,
            ));
        }
        out
    }

    fn lost_writes(&self) -> Vec<Anomaly> {
        // For each read (in invoke order) from the end: the read whose value's source settled
        // earliest among it and every later-invoked read.
        let settled = |r: usize| {
            self.source(self.read_value(r))
                .map(|s| self.settled_by(s).map_or(0, |t| t.saturating_add(1)))
        };
        let mut oldest_from: Vec<Option<(u64, usize)>> = vec![None; self.reads.len() + 1];
        for j in (0..self.reads.len()).rev() {
            let here = settled(self.reads[j]).map(|t| (t, self.reads[j]));
            oldest_from[j] = match (here, oldest_from[j + 1]) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
        }
        let mut out = Vec::new();
        for &w in &self.writes_by_invoke {
            let write = &self.entries[w];
            let Some(v) = written(write) else { continue };
            if self.observed.contains(&v) || !matches!(self.source(v), Some(Source::Write(_))) {
                continue;
            }
            let acked = complete(write);
            let from = self
                .reads
                .partition_point(|&r| self.entries[r].invoke <= acked);
            // "settled + 1 <= invoke": the read's value was written before this write began.
            let Some((_, r)) = oldest_from[from].filter(|(t, _)| *t <= write.invoke) else {
                continue;
            };
            out.push(self.anomaly(
                AnomalyKind::LostAcknowledgedWrite,
                format!(
                    "the write of {v} acknowledged at {} is never seen again",
                    seconds(acked)
                ),
                vec![w, r],
            ));
        }
        out
    }

    fn backward_reads(&self) -> Vec<Anomaly> {
        let mut last: HashMap<u64, usize> = HashMap::new();
        let mut out = Vec::new();
        for &r in &self.reads {
            let process = self.entries[r].process;
            let Some(previous) = last.insert(process, r) else {
                continue;
            };
            let (a, b) = (self.read_value(previous), self.read_value(r));
            let (Some(Source::Write(wa)), Some(sb)) = (self.source(a), self.source(b)) else {
                continue;
            };
            let older = self
                .settled_by(sb)
                .is_none_or(|t| t < self.entries[wa].invoke);
            if a != b && older {
                out.push(self.anomaly(
                    AnomalyKind::ReadsWentBackwards,
                    format!("process {process} read {a} then {b}"),
                    vec![previous, r],
                ));
            }
        }
        out
    }
}

/// One anomaly per key whose members' final reads differ.
fn divergence(history: &History) -> Vec<Anomaly> {
    let mut per_key: BTreeMap<&str, BTreeMap<i64, Vec<&str>>> = BTreeMap::new();
    for f in &history.final_reads {
        if let Some(v) = f.value {
            per_key
                .entry(f.key.as_str())
                .or_default()
                .entry(v)
                .or_default()
                .push(f.member.as_str());
        }
    }
    let mut out = Vec::new();
    for (key, values) in per_key {
        if values.len() < 2 {
            continue;
        }
        let mut groups: Vec<(i64, Vec<&str>)> = values.into_iter().collect();
        // The value most members hold first.
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let parts: Vec<String> = groups
            .iter()
            .map(|(v, members)| format!("{v} on {}", members.join(" and ")))
            .collect();
        out.push(Anomaly {
            kind: AnomalyKind::DidNotConverge,
            key: key.to_string(),
            sentence: format!(
                "members disagree on {key} after the workload: {} ({})",
                parts.join(", "),
                AnomalyKind::DidNotConverge.words()
            ),
            operations: Vec::new(),
            members: groups
                .iter()
                .flat_map(|(_, m)| m.iter().map(|s| s.to_string()))
                .collect(),
        });
    }
    out
}
