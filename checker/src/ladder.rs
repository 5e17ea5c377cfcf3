//! The ladder of consistency models a history satisfies, per key and overall, strongest first:
//!
//! 1. **linearizable**: the [`crate::linearizability`] verdict;
//! 2. **sequential**: sequentially consistent, *per key* ([`crate::sequential`]; it does not
//!    compose across keys, so "every key sequential" does not make the whole history so);
//! 3. **converged**: after the run and a settle period, every member's local read of the key
//!    returned the same value (from the history's `final` reads; members that did not answer
//!    are left out). Unknown when the history has no final reads of the key.
//!
//! Each rung is `Some(true)`, `Some(false)` or `None` (unknown: a deadline passed, or nothing
//! to judge by). Every linearizable key is sequential, so the sequential search only runs on
//! keys that are not (or not known to be) linearizable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::history::History;
use crate::linearizability::{CheckOptions, Overall, Report};
use crate::sequential::{self, Sequential};

/// The rungs of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyLadder {
    pub key: String,
    pub linearizable: Option<bool>,
    pub sequential: Option<bool>,
    pub converged: Option<bool>,
}

/// Every key's rungs, sorted by key, and the rungs of the whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ladder {
    pub keys: Vec<KeyLadder>,
    /// True if every key is linearizable, false if one is not, else unknown.
    pub linearizable: Option<bool>,
    /// True if every key on its own is sequentially consistent, false if one is not.
    pub sequential: Option<bool>,
    /// True if every key with final reads converged, false if one did not; unknown without
    /// final reads.
    pub converged: Option<bool>,
}

impl KeyLadder {
    /// The strongest rung known to hold (`linearizable`, `sequential`, `converged`), `none`
    /// when every rung is known to fail, or `None` when it depends on an unknown rung.
    pub fn strongest(&self) -> Option<&'static str> {
        strongest([self.linearizable, self.sequential, self.converged])
    }
}

impl Ladder {
    /// The strongest rung that holds for every key (see [`KeyLadder::strongest`]).
    pub fn strongest(&self) -> Option<&'static str> {
        strongest([self.linearizable, self.sequential, self.converged])
    }
}

fn strongest(rungs: [Option<bool>; 3]) -> Option<&'static str> {
    const NAMES: [&str; 3] = ["linearizable", "sequential", "converged"];
    for (rung, name) in rungs.iter().zip(NAMES) {
        match rung {
            Some(true) => return Some(name),
            Some(false) => {}
            None => return None,
        }
    }
    Some("none")
}

/// All of them true: true; one false: false; else unknown.
fn all(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(true);
    for v in values {
        match v {
            Some(false) => return Some(false),
            None => result = None,
            Some(true) => {}
        }
    }
    result
}

/// Per key: `Some(true)` if every member that answered its final read returned the same value,
/// `Some(false)` if two differ, absent when no member answered.
pub fn convergence(history: &History) -> BTreeMap<&str, bool> {
    let mut values: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for f in &history.final_reads {
        if let Some(v) = f.value {
            values.entry(f.key.as_str()).or_default().insert(v);
        }
    }
    values
        .into_iter()
        .map(|(key, vs)| (key, vs.len() == 1))
        .collect()
}

/// The ladder of `history`, given its linearizability `report`. The sequential search of a
/// key gets `options.per_key_timeout`, and all of them together `options.total_timeout` from
/// this call; past either, the key's sequential rung is unknown.
pub fn ladder(history: &History, report: &Report, options: &CheckOptions) -> Ladder {
    let total = options
        .total_timeout
        .and_then(|t| Instant::now().checked_add(t));
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.entries.iter().enumerate() {
        per_key.entry(e.key.as_str()).or_default().push(i);
    }
    let converged = convergence(history);
    let linearizable: BTreeMap<&str, Overall> = report
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.verdict.kind()))
        .collect();
    let keys: BTreeSet<&str> = per_key
        .keys()
        .copied()
        .chain(history.final_reads.iter().map(|f| f.key.as_str()))
        .collect();
    let keys: Vec<KeyLadder> = keys
        .into_iter()
        .map(|key| {
            let lin = match linearizable.get(key) {
                Some(Overall::Linearizable) => Some(true),
                Some(Overall::NotLinearizable) => Some(false),
                Some(Overall::Unknown) => None,
                // No operations on the key: nothing can be out of order.
                None => Some(true),
            };
            let seq = if lin == Some(true) {
                Some(true)
            } else {
                let indices = per_key.get(key).map_or(&[][..], Vec::as_slice);
                let per_key = options
                    .per_key_timeout
                    .and_then(|t| Instant::now().checked_add(t));
                let deadline = match (per_key, total) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match sequential::check_key(history, indices, history.initial_value(key), deadline)
                {
                    Sequential::Yes => Some(true),
                    Sequential::No => Some(false),
                    Sequential::TimedOut => None,
                }
            };
            KeyLadder {
                key: key.to_string(),
                linearizable: lin,
                sequential: seq,
                converged: converged.get(key).copied(),
            }
        })
        .collect();
    Ladder {
        linearizable: all(keys.iter().map(|k| k.linearizable)),
        sequential: all(keys.iter().map(|k| k.sequential)),
        converged: all(keys.iter().map(|k| k.converged)),
        keys,
    }
}
