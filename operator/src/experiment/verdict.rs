//! A run's verdict in words (pure): the VERDICT column and the `Verdict` Event, in the
//! issue's style: "run r1: NOT linearizable: 124 acknowledged writes lost during crash kill
//! at 35 s; first: the write of 9 acknowledged at 34.100 s is never seen again …".

use std::collections::BTreeMap;

use crate::crd::{FaultWindow, Verdict};

/// The VERDICT column: the strongest rung that holds, or what is violated.
pub fn summary(v: &Verdict) -> String {
    match (v.linearizable, v.sequential, v.converged) {
        (Some(true), _, _) => "linearizable".into(),
        (Some(false), Some(true), _) => "NOT linearizable (sequential)".into(),
        (Some(false), _, Some(true)) => "NOT linearizable (converged)".into(),
        (Some(false), _, _) => "NOT linearizable".into(),
        (None, _, _) => "unknown".into(),
    }
}

/// `n` anomalies of `kind` (`caplab check --json`'s names) in plain words: "124
/// acknowledged writes lost", "1 stale read", …
fn counted(kind: &str, n: u64) -> String {
    let s = if n == 1 { "" } else { "s" };
    match kind {
        "lost-acknowledged-write" => format!("{n} acknowledged write{s} lost"),
        "stale-read" => format!("{n} stale read{s}"),
        "reads-went-backwards" => format!("{n} read{s} went backwards"),
        "did-not-converge" => format!("{n} key{s} did not converge"),
        other => format!("{n} {}", other.replace('-', " ")),
    }
}

/// "crash kill at 35 s" (the offset is on the run's history clock, when the Job gave it).
fn during(w: &FaultWindow) -> String {
    let what = match &w.kind {
        Some(kind) => format!("{kind} {}", w.name),
        None => format!("fault {}", w.name),
    };
    match w.offset_seconds {
        Some(s) => format!("{what} at {s:.0} s"),
        None => what,
    }
}

/// The anomalies counted per fault window, then those outside every window.
fn anomalies_in_words(v: &Verdict) -> Vec<String> {
    let mut left: BTreeMap<&str, u64> = v
        .anomaly_counts
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    let mut parts = Vec::new();
    for w in &v.windows {
        for (kind, n) in w.anomaly_counts.iter().filter(|(_, n)| **n > 0) {
            parts.push(format!("{} during {}", counted(kind, *n), during(w)));
            if let Some(l) = left.get_mut(kind.as_str()) {
                *l = l.saturating_sub(*n);
            }
        }
    }
    let outside = if v.windows.is_empty() {
        ""
    } else {
        " outside the fault windows"
    };
    for (kind, n) in left.into_iter().filter(|(_, n)| *n > 0) {
        parts.push(format!("{}{outside}", counted(kind, n)));
    }
    parts
}

/// The verdict Event's note: `run r1: NOT linearizable (converged): 124 acknowledged writes
/// lost during crash kill at 35 s; first: the write of 9 … (1200 ok, 4 failed, 2 unknown
/// operations)`.
pub fn verdict_note(v: &Verdict) -> String {
    let ops = &v.operations;
    let mut what = summary(v);
    let parts = anomalies_in_words(v);
    if !parts.is_empty() {
        what = format!("{what}: {}", parts.join(", "));
    }
    if let Some(first) = v.anomalies.first() {
        what = format!("{what}; first: {first}");
    }
    format!(
        "run {}: {what} ({} ok, {} failed, {} unknown operations)",
        v.run_id, ops.ok, ops.failed, ops.unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_are_told_per_fault_window() {
        let v = Verdict {
            run_id: "r1".into(),
            linearizable: Some(false),
            converged: Some(true),
            anomaly_counts: BTreeMap::from([
                ("lost-acknowledged-write".into(), 124),
                ("stale-read".into(), 3),
            ]),
            windows: vec![FaultWindow {
                name: "kill".into(),
                kind: Some("crash".into()),
                offset_seconds: Some(35.2),
                anomaly_counts: BTreeMap::from([("lost-acknowledged-write".into(), 124)]),
                ..FaultWindow::default()
            }],
            ..Verdict::default()
        };
        assert_eq!(
            verdict_note(&v),
            "run r1: NOT linearizable (converged): 124 acknowledged writes lost during crash \
             kill at 35 s, 3 stale reads outside the fault windows (0 ok, 0 failed, 0 unknown \
             operations)"
        );
        let plain = Verdict {
            windows: vec![],
            ..v
        };
        assert!(
            verdict_note(&plain).contains(": 124 acknowledged writes lost, 3 stale reads ("),
            "{}",
            verdict_note(&plain)
        );
    }
}
