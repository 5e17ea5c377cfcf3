//! `GET /v1/log[?limit=N]` (both ports): the last few entries of a member's log, as
//! [`LogTail`], for the live view. What an "entry" is depends on the mode:
//!
//! | mode | `index` | `term` | `op` | `decision` | `stampMs` / `writer` |
//! |---|---|---|---|---|---|
//! | raft | log index | term | the entry's writes (`x=5`, `cas x 5→6`), `membership`, `blank` | — | — |
//! | async, sync | sequence number | epoch | the write | — | — |
//! | 2pc | transaction id | — | the transaction's write | `prepared`, `commit`, `abort` | — |
//! | quorum | 0 | — | the write a replica stored | `kept`, or `lost` to a newer stamp | last-writer-wins stamp |
//!
//! Raft and the primary modes read the member's in-memory log; 2pc and quorum keep a small
//! ring of what the member last did, since their logs are not ordered lists.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The query parameter: how many entries, newest last (1 to [`MAX_LIMIT`]).
pub const LIMIT_PARAM: &str = "limit";
/// Entries answered when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 5;
/// The most entries one answer holds: the tail is for a glance, not a log dump.
pub const MAX_LIMIT: usize = 32;

/// `GET /v1/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    pub id: NodeId,
    /// Oldest first, at most the limit asked.
    pub entries: Vec<TailEntry>,
}

/// One entry of a [`LogTail`] (the table in the module docs says what each field holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TailEntry {
    pub index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// What the entry does, in a few words (at most ~80 characters).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Quorum: the write's last-writer-wins stamp, ms since the Unix epoch on the clock of the
    /// member that coordinated it (its injected skew included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp_ms: Option<u64>,
    /// Quorum: the member that stamped the write (ties between equal stamps go to the higher
    /// id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<NodeId>,
}

impl TailEntry {
    /// An entry with only an index, a term and its words.
    pub fn new(index: u64, term: Option<u64>, op: impl Into<String>) -> Self {
        TailEntry {
            index,
            term,
            op: op.into(),
            decision: None,
            stamp_ms: None,
            writer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_stay_off_the_wire() {
        let e = TailEntry::new(7, Some(2), "x=5");
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"index":7,"term":2,"op":"x=5"}"#);
        assert_eq!(serde_json::from_str::<TailEntry>(&text).unwrap(), e);
    }
}
