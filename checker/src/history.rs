//! The history model: what a workload observed, one entry per operation.
//!
//! The JSON form is an array of entries; times are nanoseconds from the start of the run:
//!
//! ```json
//! [{"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1500000, "status": "ok"},
//!  {"process": 1, "type": "read", "key": "x", "output": 1, "invoke": 100000, "complete": 900000, "status": "ok"},
//!  {"process": 2, "type": "cas", "key": "x", "expected": 1, "new": 2, "invoke": 200000, "complete": null, "status": "unknown"}]
//! ```
//!
//! `status` is `ok` (took effect, and for a read returned `output`), `fail` (certainly did not
//! take effect) or `unknown` (may or may not have taken effect; `complete`, if given, is when
//! the client gave up). A process runs one operation at a time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How an operation ended, as far as its client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It took effect (a CAS: its comparison matched and it wrote).
    Ok,
    /// It certainly did not take effect (`503`, or a CAS whose comparison failed: `409`).
    Fail,
    /// It may or may not have taken effect (`504`, a timeout, a cut connection).
    Unknown,
}

/// An operation on one integer register (initial value 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `output` is what an `ok` read returned; `None` for reads that did not complete.
    Read {
        output: Option<i64>,
    },
    Write {
        value: i64,
    },
    Cas {
        expected: i64,
        new: i64,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Cas { .. } => "cas",
        }
    }

    /// A short human label: `r→5`, `w 5`, `cas 3→7`.
    pub fn label(&self) -> String {
        match self {
            Op::Read { output: Some(v) } => format!("r→{v}"),
            Op::Read { output: None } => "r→?".to_string(),
            Op::Write { value } => format!("w {value}"),
            Op::Cas { expected, new } => format!("cas {expected}→{new}"),
        }
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub process: u64,
    pub key: String,
    pub op: Op,
    /// Nanoseconds from the start of the run when the client sent the request.
    pub invoke: u64,
    /// When the client got the answer; `None` if it never did (then `status` is `unknown`).
    pub complete: Option<u64>,
    pub status: Status,
}

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("the history is not a JSON array of entries: {0}")]
    NotAnArray(serde_json::Error),
    #[error("entry {index}: {message}")]
    Entry { index: usize, message: String },
    #[error(
        "entry {later} (process {process}) is invoked before entry {earlier} of the same process \
         completes; a process runs one operation at a time"
    )]
    Overlap {
        process: u64,
        earlier: usize,
        later: usize,
    },
}

impl HistoryError {
    /// The index of the entry the error is about, if it is about one.
    pub fn entry_index(&self) -> Option<usize> {
        match self {
            HistoryError::NotAnArray(_) => None,
            HistoryError::Entry { index, .. } => Some(*index),
            HistoryError::Overlap { later, .. } => Some(*later),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Read,
    Write,
    Cas,
}

/// The wire form of an entry: every field any type may have, checked by [`RawEntry::validate`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    process: u64,
    #[serde(rename = "type")]
    kind: Kind,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new: Option<i64>,
    invoke: u64,
    #[serde(default)]
    complete: Option<u64>,
    status: Status,
}

impl RawEntry {
    fn validate(self) -> Result<Entry, String> {
        if self.key.is_empty() {
            return Err("\"key\" must not be empty".into());
        }
        let forbid = |name: &str, v: Option<i64>| match v {
            Some(_) => Err(format!(
                "a {} has no \"{name}\" field",
                match self.kind {
                    Kind::Read => "read",
                    Kind::Write => "write",
                    Kind::Cas => "cas",
                }
            )),
            None => Ok(()),
        };
        let op = match self.kind {
            Kind::Read => {
                forbid("value", self.value)?;
                forbid("expected", self.expected)?;
                forbid("new", self.new)?;
                if self.status == Status::Ok && self.output.is_none() {
                    return Err("a read with status ok needs an \"output\"".into());
                }
                Op::Read {
                    output: if self.status == Status::Ok {
                        self.output
                    } else {
                        None
                    },
                }
            }
            Kind::Write => {
                forbid("output", self.output)?;
                forbid("expected", self.expected)?;
                forbid("new", self.new)?;
                let value = self.value.ok_or("a write needs a \"value\"")?;
                Op::Write { value }
            }
            Kind::Cas => {
                forbid("value", self.value)?;
                forbid("output", self.output)?;
                let expected = self.expected.ok_or("a cas needs \"expected\"")?;
                let new = self.new.ok_or("a cas needs \"new\"")?;
                Op::Cas { expected, new }
            }
        };
        match (self.status, self.complete) {
            (Status::Ok | Status::Fail, None) => {
                return Err(format!(
                    "status {:?} needs a \"complete\" time; only unknown operations may lack one",
                    self.status
                ))
            }
            (_, Some(c)) if c < self.invoke => {
                return Err(format!(
                    "\"complete\" ({c}) is before \"invoke\" ({})",
                    self.invoke
                ))
            }
            _ => {}
        }
        Ok(Entry {
            process: self.process,
            key: self.key,
            op,
            invoke: self.invoke,
            complete: self.complete,
            status: self.status,
        })
    }

    fn from_entry(e: &Entry) -> RawEntry {
        let (kind, value, output, expected, new) = match e.op {
            Op::Read { output } => (Kind::Read, None, output, None, None),
            Op::Write { value } => (Kind::Write, Some(value), None, None, None),
            Op::Cas { expected, new } => (Kind::Cas, None, None, Some(expected), Some(new)),
        };
        RawEntry {
            process: e.process,
            kind,
            key: e.key.clone(),
            value,
            output,
            expected,
            new,
            invoke: e.invoke,
            complete: e.complete,
            status: e.status,
        }
    }
}

/// A validated history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// Builds a history from entries, checking that each process runs one operation at a time.
    pub fn new(entries: Vec<Entry>) -> Result<History, HistoryError> {
        check_processes(&entries)?;
        Ok(History { entries })
    }

    /// Parses and validates the JSON form; errors name the offending entry.
    pub fn from_json(text: &str) -> Result<History, HistoryError> {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(HistoryError::NotAnArray)?;
        let mut entries = Vec::with_capacity(values.len());
        for (index, value) in values.into_iter().enumerate() {
            let raw: RawEntry = serde_json::from_value(value).map_err(|e| HistoryError::Entry {
                index,
                message: e.to_string(),
            })?;
            let entry = raw
                .validate()
                .map_err(|message| HistoryError::Entry { index, message })?;
            entries.push(entry);
        }
        History::new(entries)
    }

    /// The JSON form, one entry per line.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('\n');
            // Serialising a plain struct of integers and strings cannot fail.
            out.push_str(&serde_json::to_string(&RawEntry::from_entry(e)).unwrap_or_default());
        }
        out.push_str("\n]\n");
        out
    }

    /// The keys used, sorted.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.entries.iter().map(|e| e.key.as_str()).collect()
    }

    /// The processes used, sorted.
    pub fn processes(&self) -> BTreeSet<u64> {
        self.entries.iter().map(|e| e.process).collect()
    }

    /// The latest time mentioned by any entry.
    pub fn end_time(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.complete.unwrap_or(e.invoke))
            .max()
            .unwrap_or(0)
    }
}

fn check_processes(entries: &[Entry]) -> Result<(), HistoryError> {
    let mut by_process: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_process.entry(e.process).or_default().push(i);
    }
    for (process, mut indices) in by_process {
        indices.sort_by_key(|&i| (entries[i].invoke, i));
        for pair in indices.windows(2) {
            let (a, b) = (&entries[pair[0]], &entries[pair[1]]);
            let overlaps = match a.complete {
                None => true,
                Some(c) => b.invoke < c,
            };
            if overlaps {
                return Err(HistoryError::Overlap {
                    process,
                    earlier: pair[0],
                    later: pair[1],
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"[
      {"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1500000, "status": "ok"},
      {"process": 1, "type": "read", "key": "x", "output": 1, "invoke": 100000, "complete": 900000, "status": "ok"},
      {"process": 2, "type": "cas", "key": "x", "expected": 1, "new": 2, "invoke": 200000, "complete": null, "status": "unknown"}]"#;

    #[test]
    fn parses_the_issue_example_and_round_trips() {
        let h = History::from_json(ISSUE_EXAMPLE).expect("valid");
        assert_eq!(h.entries.len(), 3);
        assert_eq!(h.entries[0].op, Op::Write { value: 1 });
        assert_eq!(h.entries[1].op, Op::Read { output: Some(1) });
        assert_eq!(
            h.entries[2].op,
            Op::Cas {
                expected: 1,
                new: 2
            }
        );
        assert_eq!(h.entries[2].complete, None);
        assert_eq!(h.entries[2].status, Status::Unknown);
        let again = History::from_json(&h.to_json()).expect("round trip");
        assert_eq!(again, h);
    }

    fn error_of(text: &str) -> HistoryError {
        match History::from_json(text) {
            Ok(h) => panic!("accepted {h:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn malformed_entries_are_named() {
        let cases = [
            (
                r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"complete":1,"status":"ok"},
                    {"process":1,"type":"read","key":"x","invoke":0,"complete":1,"status":"ok"}]"#,
                1,
                "output",
            ),
            (
                r#"[{"process":0,"type":"write","key":"x","invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "value",
            ),
            (
                r#"[{"process":0,"type":"cas","key":"x","expected":1,"invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "new",
            ),
            (
                r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":5,"complete":1,"status":"ok"}]"#,
                0,
                "before",
            ),
            (
                r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"status":"ok"}]"#,
                0,
                "complete",
            ),
            (
                r#"[{"process":0,"type":"delete","key":"x","invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "delete",
            ),
            (
                r#"[{"process":0,"type":"read","key":"x","output":1,"invoke":0,"complete":1,"status":"maybe"}]"#,
                0,
                "maybe",
            ),
            (
                r#"[{"process":-1,"type":"read","key":"x","output":1,"invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "-1",
            ),
            (
                r#"[{"process":0,"type":"read","key":"x","output":1,"value":3,"invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "value",
            ),
            (
                r#"[{"process":0,"type":"read","key":"","output":1,"invoke":0,"complete":1,"status":"ok"}]"#,
                0,
                "key",
            ),
            (
                r#"[{"process":0,"type":"read","key":"x","output":1,"invoke":0,"complete":1,"status":"ok","extra":1}]"#,
                0,
                "extra",
            ),
        ];
        for (text, index, needle) in cases {
            let e = error_of(text);
            assert_eq!(e.entry_index(), Some(index), "{e}");
            let message = e.to_string();
            assert!(message.starts_with(&format!("entry {index}")), "{message}");
            assert!(message.contains(needle), "{message} lacks {needle}");
        }
    }

    #[test]
    fn not_an_array_is_reported() {
        assert!(matches!(error_of("{}"), HistoryError::NotAnArray(_)));
        assert!(matches!(error_of("[1,"), HistoryError::NotAnArray(_)));
        assert!(matches!(
            error_of("[1]"),
            HistoryError::Entry { index: 0, .. }
        ));
    }

    #[test]
    fn a_process_runs_one_operation_at_a_time() {
        let e = error_of(
            r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"complete":10,"status":"ok"},
                {"process":0,"type":"write","key":"y","value":1,"invoke":5,"complete":20,"status":"ok"}]"#,
        );
        assert!(
            matches!(
                e,
                HistoryError::Overlap {
                    process: 0,
                    earlier: 0,
                    later: 1
                }
            ),
            "{e}"
        );
        // An operation that never completed must be its process's last.
        let e = error_of(
            r#"[{"process":3,"type":"write","key":"x","value":1,"invoke":0,"complete":null,"status":"unknown"},
                {"process":3,"type":"read","key":"x","output":1,"invoke":50,"complete":60,"status":"ok"}]"#,
        );
        assert!(matches!(e, HistoryError::Overlap { process: 3, .. }), "{e}");
        // Back to back is fine.
        History::from_json(
            r#"[{"process":0,"type":"write","key":"x","value":1,"invoke":0,"complete":10,"status":"ok"},
                {"process":0,"type":"write","key":"y","value":1,"invoke":10,"complete":20,"status":"ok"}]"#,
        )
        .expect("sequential");
    }

    #[test]
    fn outputs_of_reads_that_did_not_succeed_are_ignored() {
        let h = History::from_json(
            r#"[{"process":0,"type":"read","key":"x","output":7,"invoke":0,"complete":10,"status":"fail"}]"#,
        )
        .expect("valid");
        assert_eq!(h.entries[0].op, Op::Read { output: None });
    }
}
