//! The history model: what a workload observed, one entry per operation.
//!
//! The JSON form is an object with the registers' initial values and the operations; times
//! are nanoseconds from the start of the run:
//!
//! ```json
//! {"initial": {"x": 0},
//!  "operations": [
//!  {"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1500000, "status": "ok"},
//!  {"process": 1, "type": "read", "key": "x", "output": 1, "invoke": 100000, "complete": 900000, "status": "ok"},
//!  {"process": 2, "type": "cas", "key": "x", "expected": 1, "new": 2, "invoke": 200000, "complete": null, "status": "unknown"},
//!  {"process": 3, "type": "cas", "key": "x", "expected": 0, "new": 3, "output": 1, "invoke": 1600000, "complete": 1700000, "status": "fail"}]}
//! ```
//!
//! `initial` is optional, and so is each key in it: a register not listed starts at 0. A bare
//! array of operations (the older form) is a history with no `initial`.
//!
//! `status` is `ok` (took effect, and for a read returned `output`), `fail` (certainly did not
//! take effect) or `unknown` (may or may not have taken effect; `complete`, if given, is when
//! the client gave up). A `cas` whose comparison failed (status `fail`) may record in
//! `output` the value it found instead of `expected`: the checker then treats it as a read of
//! that value. A process runs one operation at a time.
//!
//! An object history may end with `"final"`: what each member held for each key after the
//! workload's last operation and a settle period, read locally on that member
//! (`consistency=local`): `[{"member": "demo-0", "key": "x", "value": 7}, ...]`; `value` is
//! `null` when the member did not answer. It is optional (older histories lack it; then
//! convergence is not known), and a member–key pair may appear once.

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

impl Status {
    /// The history's own word for it: `ok`, `fail` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

/// An operation on one integer register (initial value 0 unless the history says otherwise).
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
        /// For a CAS whose comparison failed (status `fail`): the value it found instead of
        /// `expected`, if the client recorded it (a `409`'s `current`). `None` otherwise.
        output: Option<i64>,
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

    /// A short human label: `r→5`, `w 5`, `cas 3→7`, `cas 3→7 saw 5`.
    pub fn label(&self) -> String {
        match self {
            Op::Read { output: Some(v) } => format!("r→{v}"),
            Op::Read { output: None } => "r→?".to_string(),
            Op::Write { value } => format!("w {value}"),
            Op::Cas {
                expected,
                new,
                output: None,
            } => format!("cas {expected}→{new}"),
            Op::Cas {
                expected,
                new,
                output: Some(seen),
            } => format!("cas {expected}→{new} saw {seen}"),
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
    #[error("the history is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    #[error(
        "the history must be a JSON array of operations or an object \
         {{\"initial\": {{\"<key>\": <integer>, ...}}, \"operations\": [...], \
         \"final\": [...]}}: {0}"
    )]
    Shape(String),
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
            HistoryError::NotJson(_) | HistoryError::Shape(_) => None,
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
                let expected = self.expected.ok_or("a cas needs \"expected\"")?;
                let new = self.new.ok_or("a cas needs \"new\"")?;
                match self.output {
                    Some(_) if self.status != Status::Fail => {
                        return Err("a cas has an \"output\" only with status fail (the value \
                                    its failed comparison found)"
                            .into())
                    }
                    Some(seen) if seen == expected => {
                        return Err(format!(
                            "a cas that failed its comparison cannot have found the \
                             \"expected\" value {expected} (\"output\")"
                        ))
                    }
                    _ => {}
                }
                Op::Cas {
                    expected,
                    new,
                    output: self.output,
                }
            }
        };
        match (self.status, self.complete) {
            (Status::Ok | Status::Fail, None) => {
                return Err(format!(
                    "status {} needs a \"complete\" time; only unknown operations may lack one",
                    self.status.as_str()
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
            Op::Cas {
                expected,
                new,
                output,
            } => (Kind::Cas, None, output, Some(expected), Some(new)),
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

/// What one member held for one key at the end of a run, read locally on that member after
/// the settle period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalRead {
    /// The member's name (a pod name, or the address it was reached at).
    pub member: String,
    pub key: String,
    /// The value it held; `None` (`null`, which must be written) if it did not answer.
    #[serde(deserialize_with = "Option::deserialize")]
    pub value: Option<i64>,
}

/// A validated history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<Entry>,
    /// Registers' values before the first operation, by key; a key not listed starts at 0.
    pub initial: BTreeMap<String, i64>,
    /// Each member's local read of each key after the run (empty: not recorded).
    pub final_reads: Vec<FinalRead>,
}

/// The object form of the JSON history.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    #[serde(default)]
    initial: InitialValues,
    operations: Vec<serde_json::Value>,
    #[serde(default, rename = "final")]
    final_reads: Vec<serde_json::Value>,
}

/// `"initial"` as written: a key given twice is an error (a map would keep the last).
#[derive(Default)]
struct InitialValues(BTreeMap<String, i64>);

impl<'de> Deserialize<'de> for InitialValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = InitialValues;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of keys to i64 values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut values = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, i64>()? {
                    if values.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "key {key:?} is given twice"
                        )));
                    }
                    values.insert(key, value);
                }
                Ok(InitialValues(values))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl History {
    /// Builds a history from entries (every register starting at 0), checking that each
    /// process runs one operation at a time.
    pub fn new(entries: Vec<Entry>) -> Result<History, HistoryError> {
        check_processes(&entries)?;
        Ok(History {
            entries,
            initial: BTreeMap::new(),
            final_reads: Vec::new(),
        })
    }

    /// The same history with the members' final reads set.
    pub fn with_final_reads(mut self, final_reads: Vec<FinalRead>) -> History {
        self.final_reads = final_reads;
        self
    }

    /// The same history with the registers' initial values set (keys not listed start at 0).
    pub fn with_initial(mut self, initial: BTreeMap<String, i64>) -> History {
        self.initial = initial;
        self
    }

    /// The value `key` holds before the first operation.
    pub fn initial_value(&self, key: &str) -> i64 {
        self.initial.get(key).copied().unwrap_or(0)
    }

    /// Parses and validates the JSON form (either form, see the module documentation); errors
    /// name the offending entry.
    pub fn from_json(text: &str) -> Result<History, HistoryError> {
        // Parsed straight from the text by its first character, not through a JSON value,
        // so that a field or key given twice is an error rather than "the last one wins".
        let parse_error = |e: serde_json::Error| match e.classify() {
            serde_json::error::Category::Data => HistoryError::Shape(e.to_string()),
            _ => HistoryError::NotJson(e),
        };
        let (values, initial, final_values) = match text.trim_start().as_bytes().first() {
            Some(b'[') => (
                serde_json::from_str::<Vec<serde_json::Value>>(text).map_err(parse_error)?,
                BTreeMap::new(),
                Vec::new(),
            ),
            Some(b'{') => {
                let raw: RawHistory = serde_json::from_str(text).map_err(parse_error)?;
                if raw.initial.0.keys().any(String::is_empty) {
                    return Err(HistoryError::Shape("a key in \"initial\" is empty".into()));
                }
                (raw.operations, raw.initial.0, raw.final_reads)
            }
            _ => {
                let other: serde_json::Value =
                    serde_json::from_str(text).map_err(HistoryError::NotJson)?;
                return Err(HistoryError::Shape(format!("found {}", json_kind(&other))));
            }
        };
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
        let final_reads = parse_final_reads(final_values)?;
        Ok(History::new(entries)?
            .with_initial(initial)
            .with_final_reads(final_reads))
    }

    /// The JSON form, one operation per line: the object form when initial values or final
    /// reads are set, else the bare array.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let object = !self.initial.is_empty() || !self.final_reads.is_empty();
        if object {
            // Serialising a map of strings to integers cannot fail.
            let initial = serde_json::to_string(&self.initial).unwrap_or_default();
            out.push_str(&format!("{{\"initial\": {initial},\n\"operations\": "));
        }
        out.push('[');
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('\n');
            // Serialising a plain struct of integers and strings cannot fail.
            out.push_str(&serde_json::to_string(&RawEntry::from_entry(e)).unwrap_or_default());
        }
        out.push_str("\n]");
        if !self.final_reads.is_empty() {
            out.push_str(",\n\"final\": [");
            for (i, f) in self.final_reads.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                // Serialising a plain struct of integers and strings cannot fail.
                out.push_str(&serde_json::to_string(f).unwrap_or_default());
            }
            out.push_str("\n]");
        }
        if object {
            out.push('}');
        }
        out.push('\n');
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

/// Validates `"final"`: each entry's shape, no empty names, each member–key pair once.
fn parse_final_reads(values: Vec<serde_json::Value>) -> Result<Vec<FinalRead>, HistoryError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let bad = |message: String| {
            HistoryError::Shape(format!(
                "\"final\" entry {index}: {message}; expected \
                 {{\"member\": \"<name>\", \"key\": \"<key>\", \"value\": <integer or null>}}"
            ))
        };
        let read: FinalRead = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if read.member.is_empty() || read.key.is_empty() {
            return Err(bad("\"member\" and \"key\" must not be empty".into()));
        }
        if !seen.insert((read.member.clone(), read.key.clone())) {
            return Err(bad(format!(
                "member {:?} and key {:?} are given twice",
                read.member, read.key
            )));
        }
        out.push(read);
    }
    Ok(out)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
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
                new: 2,
                output: None
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
    fn not_a_history_is_reported() {
        assert!(matches!(error_of("[1,"), HistoryError::NotJson(_)));
        for shape in [
            "{}",
            "3",
            r#"{"operations": [], "extra": 1}"#,
            r#"{"initial": {"x": "zero"}, "operations": []}"#,
            r#"{"initial": {"": 1}, "operations": []}"#,
            r#"{"initial": {"x": 1, "x": 2}, "operations": []}"#,
            r#"{"initial": {}, "operations": [], "operations": []}"#,
        ] {
            let e = error_of(shape);
            assert!(matches!(e, HistoryError::Shape(_)), "{shape}: {e}");
            assert!(e.to_string().contains("\"initial\""), "{e}");
        }
        assert!(matches!(
            error_of("[1]"),
            HistoryError::Entry { index: 0, .. }
        ));
        assert!(matches!(
            error_of(r#"{"operations": [1]}"#),
            HistoryError::Entry { index: 0, .. }
        ));
    }

    #[test]
    fn initial_values_are_read_and_round_trip() {
        let h = History::from_json(
            r#"{"initial": {"x": 7, "unused": -1},
                "operations": [{"process":0,"type":"read","key":"x","output":7,"invoke":0,"complete":1,"status":"ok"}]}"#,
        )
        .expect("valid");
        assert_eq!(h.initial_value("x"), 7);
        assert_eq!(h.initial_value("unused"), -1);
        assert_eq!(h.initial_value("y"), 0, "keys not listed start at 0");
        let text = h.to_json();
        assert!(text.starts_with("{\"initial\""), "{text}");
        assert_eq!(History::from_json(&text).expect("round trip"), h);
        // Without initial values the older bare array is written, and read back the same.
        let bare = History::new(h.entries.clone()).expect("valid");
        assert!(bare.to_json().starts_with('['));
        assert_eq!(
            History::from_json(&bare.to_json()).expect("round trip"),
            bare
        );
        let empty = History::from_json(r#"{"operations": []}"#).expect("valid");
        assert!(empty.entries.is_empty() && empty.initial.is_empty());
    }

    #[test]
    fn a_failed_cas_may_record_what_it_found() {
        let h = History::from_json(
            r#"[{"process":0,"type":"cas","key":"x","expected":1,"new":2,"output":5,"invoke":0,"complete":1,"status":"fail"}]"#,
        )
        .expect("valid");
        assert_eq!(
            h.entries[0].op,
            Op::Cas {
                expected: 1,
                new: 2,
                output: Some(5)
            }
        );
        assert_eq!(h.entries[0].op.label(), "cas 1→2 saw 5");
        assert_eq!(History::from_json(&h.to_json()).expect("round trip"), h);
        for (status, output, needle) in [
            ("ok", 5, "only with status fail"),
            ("unknown", 5, "only with status fail"),
            ("fail", 1, "cannot have found"),
        ] {
            let text = format!(
                r#"[{{"process":0,"type":"cas","key":"x","expected":1,"new":2,"output":{output},"invoke":0,"complete":1,"status":"{status}"}}]"#
            );
            let message = error_of(&text).to_string();
            assert!(
                message.starts_with("entry 0") && message.contains(needle),
                "{message}"
            );
        }
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
