//! What both searches (linearizability and sequential consistency) start from: the operations
//! of one key that can matter, and the register's step function.

use std::collections::HashSet;

use crate::history::{History, Op, Status};

/// An operation as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchOp {
    /// Index into the history.
    pub(crate) entry: usize,
    pub(crate) op: Op,
    pub(crate) invoke: u64,
    /// `None`: may take effect any time after `invoke`, or never.
    pub(crate) complete: Option<u64>,
}

impl SearchOp {
    /// It took effect (or, for a read, observed the register): every order must place it.
    pub(crate) fn required(&self) -> bool {
        self.complete.is_some()
    }
}

/// The register's value after `op` from `state`, or `None` if `op` cannot happen there.
pub(crate) fn step(state: i64, op: &Op) -> Option<i64> {
    match *op {
        Op::Read { output: Some(v) } => (state == v).then_some(state),
        Op::Read { output: None } => Some(state),
        Op::Write { value } => Some(value),
        Op::Cas { expected, new, .. } => (state == expected).then_some(new),
    }
}

/// Selects the operations of one key that matter, in invoke order; returns them and how many
/// unknown operations were dropped as unobservable.
pub(crate) fn search_ops(history: &History, indices: &[usize]) -> (Vec<SearchOp>, usize) {
    let entries = &history.entries;
    let mut observed: HashSet<i64> = HashSet::new();
    for &i in indices {
        match (&entries[i].op, entries[i].status) {
            (Op::Read { output: Some(v) }, Status::Ok)
            | (
                Op::Cas {
                    output: Some(v), ..
                },
                Status::Fail,
            ) => {
                observed.insert(*v);
            }
            (Op::Cas { expected, .. }, Status::Ok | Status::Unknown) => {
                observed.insert(*expected);
            }
            _ => {}
        }
    }
    let mut pruned = 0;
    let mut ops = Vec::with_capacity(indices.len());
    for &i in indices {
        let e = &entries[i];
        let mut op = e.op;
        let complete = match e.status {
            Status::Fail => match e.op {
                // The comparison read the register: the observation must fit the order.
                Op::Cas {
                    output: Some(seen), ..
                } => {
                    op = Op::Read { output: Some(seen) };
                    e.complete
                }
                _ => continue,
            },
            Status::Ok => e.complete,
            Status::Unknown => {
                let written = match e.op {
                    Op::Read { .. } => continue,
                    Op::Write { value } => value,
                    Op::Cas { new, .. } => new,
                };
                if !observed.contains(&written) {
                    pruned += 1;
                    continue;
                }
                None
            }
        };
        ops.push(SearchOp {
            entry: i,
            op,
            invoke: e.invoke,
            complete,
        });
    }
    ops.sort_by_key(|o| (o.invoke, o.entry));
    (ops, pruned)
}
