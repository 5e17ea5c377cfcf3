//! The fault windows of a run on the history's clock, and how the clients fared in each:
//! availability, throughput and the anomalies that fall in it.
//!
//! The windows are the operator's `status.experiment.windows` of this run: when each fault
//! became active and ended as the members reported it (their status shows the fault set in
//! force; a crash is its target not answering). Without them (an operator that does not record
//! them, or a run started by hand) they are the operator's `status.faults[]`: when it ordered
//! each fault and lifted it.

use std::collections::BTreeMap;

use caplab_checker::{Anomaly, AnomalyKind, Entry, History, Status};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::report::Window;

/// A fault window as the operator recorded it, placed on the history's clock.
pub struct Span {
    /// Name, start and end in ns from the history's time zero (`end` unset: still active).
    pub window: Window,
    since: String,
    until: Option<String>,
    kind: Value,
    seen_by_members: Value,
}

/// The windows of run `run_id` in the RegisterCluster `cluster` (its JSON), on the clock of a
/// history whose time zero was `started`: the members' view the operator recorded for this
/// run, and the operator's own times for the faults it has not seen on the members.
pub fn spans(cluster: &Value, run_id: &str, started: DateTime<Utc>) -> Vec<Span> {
    let ex = &cluster["status"]["experiment"];
    let mut list: Vec<Value> = if ex["runId"].as_str() == Some(run_id) {
        ex["windows"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    for f in cluster["status"]["faults"].as_array().into_iter().flatten() {
        if !list.iter().any(|w| w["name"] == f["name"]) {
            list.push(f.clone());
        }
    }
    spans_of(&Value::Array(list), started)
}

fn at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The entries of `list` (`{name, since, until, kind?, seenByMembers?}`) that began during the
/// run. `status.faults[]` times are whole seconds: one started with the run may read up to
/// 1 s early, and counts from the history's start.
fn spans_of(list: &Value, started: DateTime<Utc>) -> Vec<Span> {
    let ns = |t: DateTime<Utc>| {
        u64::try_from((t - started).num_nanoseconds().unwrap_or(0).max(0)).unwrap_or(0)
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let since = at(&f["since"])?;
            (since >= started - chrono::Duration::seconds(1)).then(|| Span {
                since: f["since"].as_str().unwrap_or_default().to_string(),
                until: f["until"].as_str().map(str::to_string),
                kind: f["kind"].clone(),
                seen_by_members: f["seenByMembers"].clone(),
                window: Window {
                    name: f["name"].as_str().unwrap_or("fault").to_string(),
                    start: ns(since),
                    end: at(&f["until"]).map(ns),
                },
            })
        })
        .collect()
}

/// When an entry happened, for attributing it: its completion, else its invocation.
fn moment(e: &Entry) -> u64 {
    e.complete.unwrap_or(e.invoke)
}

/// The end of the history: its last completion or invocation (ns).
fn history_end(history: &History) -> u64 {
    history.entries.iter().map(moment).max().unwrap_or(0)
}

impl Span {
    fn contains(&self, t: u64) -> bool {
        t >= self.window.start && self.window.end.is_none_or(|e| t < e)
    }

    /// The verdict's window: when (RFC 3339 and seconds into the run), the share of
    /// operations invoked in it that were acknowledged, acknowledged operations per second,
    /// and the anomalies attributed to it by kind.
    fn summary(&self, history: &History, anomalies: BTreeMap<&'static str, u64>) -> Value {
        let (mut all, mut ok, mut done) = (0u64, 0u64, 0u64);
        for e in &history.entries {
            if self.contains(e.invoke) {
                all += 1;
                ok += u64::from(e.status == Status::Ok);
            }
            if e.status == Status::Ok && e.complete.is_some_and(|c| self.contains(c)) {
                done += 1;
            }
        }
        let end = self.window.end.unwrap_or_else(|| history_end(history));
        let seconds = end.saturating_sub(self.window.start) as f64 / 1e9;
        json!({
            "name": self.window.name,
            "kind": self.kind,
            "since": self.since,
            "until": self.until,
            "seenByMembers": self.seen_by_members,
            "offsetSeconds": (self.window.start as f64 / 1e6).round() / 1e3,
            "availability": (all > 0).then(|| ok as f64 / all as f64),
            "throughput": (seconds > 0.0).then(|| done as f64 / seconds),
            "anomalyCounts": anomalies,
        })
    }
}

/// Which window an anomaly belongs to: the one in force when its first operation completed
/// (a stale read: the read; a lost write: its acknowledgement); for a lost acknowledged write
/// acknowledged outside every window, the next window to start (the crash or partition that
/// lost it). `None`: outside every window.
fn owner(spans: &[Span], history: &History, a: &Anomaly) -> Option<usize> {
    let first = a.operations.first().and_then(|i| history.entries.get(*i));
    let t = first.map_or_else(|| history_end(history), moment);
    if let Some(i) = spans.iter().position(|s| s.contains(t)) {
        return Some(i);
    }
    if a.kind != AnomalyKind::LostAcknowledgedWrite {
        return None;
    }
    spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.window.start > t)
        .min_by_key(|(_, s)| s.window.start)
        .map(|(i, _)| i)
}

/// The verdict's windows: each span with its availability, throughput and anomalies.
pub fn summaries(spans: &[Span], history: &History, anomalies: &[Anomaly]) -> Vec<Value> {
    let mut counts: Vec<BTreeMap<&'static str, u64>> = vec![BTreeMap::new(); spans.len()];
    for a in anomalies {
        if let Some(i) = owner(spans, history, a) {
            *counts[i].entry(a.kind.as_str()).or_insert(0) += 1;
        }
    }
    spans
        .iter()
        .zip(counts)
        .map(|(s, c)| s.summary(history, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_checker::Op;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_operators_windows_of_this_run_win_over_its_fault_statuses() {
        let cluster = json!({"status": {
            "faults": [{"name": "cut", "since": "2024-01-01T00:00:10Z"},
                       {"name": "kill", "since": "2024-01-01T00:00:35Z"}],
            "experiment": {"runId": "r1", "windows": [{"name": "cut", "kind": "partition",
                "since": "2024-01-01T00:00:10.600Z", "until": "2024-01-01T00:00:30.250Z",
                "seenByMembers": true}]}}});
        let ours = spans(&cluster, "r1", t0());
        assert_eq!(ours[0].window.start, 10_600_000_000);
        assert_eq!(ours[0].window.end, Some(30_250_000_000));
        assert_eq!(
            ours[1].window.start,
            35 * S,
            "not seen yet: the operator's time"
        );
        let other = spans(&cluster, "r2", t0());
        assert_eq!(other[0].window.start, 10 * S, "another run: status.faults");
    }

    #[test]
    fn windows_are_the_faults_of_the_run_on_its_clock() {
        let faults = json!([
            {"name": "old", "since": "2023-12-31T23:00:00Z", "until": "2023-12-31T23:00:10Z"},
            {"name": "cut", "since": "2024-01-01T00:00:10Z", "until": "2024-01-01T00:00:30Z"},
            {"name": "kill", "since": "2024-01-01T00:00:35Z"},
            {"name": "pending"},
        ]);
        let spans = spans_of(&faults, t0());
        let windows: Vec<&Window> = spans.iter().map(|s| &s.window).collect();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].name, "cut");
        assert_eq!(windows[0].start, 10 * S);
        assert_eq!(windows[0].end, Some(30 * S));
        assert_eq!(windows[1].end, None);
    }

    fn entry(invoke: u64, complete: u64, status: Status) -> Entry {
        Entry {
            process: 0,
            key: "k".into(),
            op: Op::Read { output: Some(0) },
            invoke: invoke * S,
            complete: Some(complete * S),
            status,
        }
    }

    fn anomaly(kind: AnomalyKind, op: usize) -> Anomaly {
        Anomaly {
            kind,
            key: "k".into(),
            sentence: String::new(),
            operations: vec![op],
            members: Vec::new(),
        }
    }

    #[test]
    fn each_window_has_its_availability_throughput_and_anomalies() {
        let history = History {
            entries: vec![
                entry(1, 2, Status::Ok),        // before: a write lost at the crash
                entry(10, 11, Status::Ok),      // during
                entry(12, 20, Status::Unknown), // during
                entry(25, 26, Status::Ok),      // after: a stale read outside
            ],
            initial: BTreeMap::new(),
            final_reads: Vec::new(),
        };
        let spans = spans_of(
            &json!([{"name": "kill", "kind": "crash", "since": "2024-01-01T00:00:10Z",
                      "until": "2024-01-01T00:00:20Z"}]),
            t0(),
        );
        let found = [
            anomaly(AnomalyKind::LostAcknowledgedWrite, 0),
            anomaly(AnomalyKind::StaleRead, 3),
        ];
        let w = summaries(&spans, &history, &found);
        assert_eq!(w[0]["availability"], 0.5);
        assert_eq!(w[0]["throughput"], 0.1, "one acknowledged in 10 s");
        assert_eq!(w[0]["offsetSeconds"], 10.0);
        assert_eq!(w[0]["kind"], "crash");
        assert_eq!(w[0]["anomalyCounts"], json!({"lost-acknowledged-write": 1}));
    }
}
