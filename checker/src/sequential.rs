//! Sequential consistency of one key's register (Lamport 1979, "How to make a multiprocessor
//! computer that correctly executes multiprocess programs"): is there one total order of the
//! key's operations that respects each process's own order and the register's semantics?
//! Unlike linearizability, real time between processes does not constrain the order.
//!
//! It is checked **per key**: a history whose every key is sequentially consistent on its own
//! need not be sequentially consistent as a whole, because sequential consistency, unlike
//! linearizability, does not compose across objects (Herlihy & Wing 1990, §3.5).
//!
//! The search is Wing & Gong's, adapted: a configuration is how far each process has got in
//! its own sequence, which optional operations were applied, and the register's value;
//! configurations already explored are remembered (Lowe's memoisation) and never explored
//! again. Two reductions keep it small:
//!
//! * a process whose next operation is a read of the current value takes it at once, without
//!   branching: moving such a read earlier never invalidates an order (it changes nothing);
//! * operations are tried in invoke order, so a history that is almost linearizable is ordered
//!   almost as it happened, at the first attempt;
//! * a configuration where some process's next operation needs a value (a read of it, a CAS
//!   expecting it) that the register does not hold and that no write still to be ordered
//!   can produce is a dead end, abandoned at once (with unique write values, a read of an
//!   overwritten value is found the moment it is overwritten).
//!
//! Operations are selected as for linearizability (`fail` left out, a failed CAS that recorded
//! what it found is a read, unobservable `unknown` writes dropped). An `unknown` write or CAS
//! may or may not have taken effect: it is optional, and if applied it comes after the
//! operations its process invoked before it (and may come after later ones too: the request
//! may still have been in flight).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::history::{History, Op};
use crate::search_ops::{search_ops, step};

/// The answer of [`check_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequential {
    Yes,
    No,
    /// The deadline passed first.
    TimedOut,
}

/// An operation that may or may not have taken effect.
struct Optional {
    process: usize,
    /// How many of its process's required operations come before it.
    after: u32,
    op: Op,
    invoke: u64,
}

/// One key's operations, split by process.
struct Problem {
    /// Required operations per process, in the process's order, with their invoke times.
    processes: Vec<Vec<(Op, u64)>>,
    optional: Vec<Optional>,
    /// value → the operations that can write it.
    writers: HashMap<i64, Vec<Move>>,
}

/// A point of the search.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Config {
    /// How many required operations of each process are ordered.
    done: Vec<u32>,
    /// Which optional operations were applied, one bit each.
    applied: Vec<u64>,
    value: i64,
}

/// A step of the search: a process's next required operation (process, its position), or an
/// optional one.
#[derive(Clone, Copy)]
enum Move {
    Next(usize, u32),
    Apply(usize),
}

/// The value `op` writes when it takes effect.
fn written(op: &Op) -> Option<i64> {
    match *op {
        Op::Write { value } => Some(value),
        Op::Cas { new, .. } => Some(new),
        Op::Read { .. } => None,
    }
}

/// Whether the operations `indices` (all of one key) of `history` are sequentially consistent
/// from `initial`; [`Sequential::TimedOut`] once `deadline` passes.
pub fn check_key(
    history: &History,
    indices: &[usize],
    initial: i64,
    deadline: Option<Instant>,
) -> Sequential {
    let problem = Problem::new(history, indices);
    problem.search(initial, deadline)
}

impl Problem {
    fn new(history: &History, indices: &[usize]) -> Problem {
        let (ops, _) = search_ops(history, indices);
        let mut ids: Vec<u64> = ops
            .iter()
            .map(|o| history.entries[o.entry].process)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut processes: Vec<Vec<(Op, u64)>> = vec![Vec::new(); ids.len()];
        let mut optional = Vec::new();
        // `ops` is in invoke order, which is each process's own order.
        for o in &ops {
            let id = history.entries[o.entry].process;
            let process = ids.binary_search(&id).unwrap_or_default();
            if o.required() {
                processes[process].push((o.op, o.invoke));
            } else {
                optional.push(Optional {
                    process,
                    after: processes[process].len() as u32,
                    op: o.op,
                    invoke: o.invoke,
                });
            }
        }
        let mut writers: HashMap<i64, Vec<Move>> = HashMap::new();
        for (p, ops) in processes.iter().enumerate() {
            for (i, (op, _)) in ops.iter().enumerate() {
                if let Some(v) = written(op) {
                    writers.entry(v).or_default().push(Move::Next(p, i as u32));
                }
            }
        }
        for (u, o) in optional.iter().enumerate() {
            if let Some(v) = written(&o.op) {
                writers.entry(v).or_default().push(Move::Apply(u));
            }
        }
        Problem {
            processes,
            optional,
            writers,
        }
    }

    /// Whether the operation is ordered in `c`.
    fn ordered(&self, c: &Config, m: Move) -> bool {
        match m {
            Move::Next(p, i) => c.done[p] > i,
            Move::Apply(u) => c.applied[u / 64] & (1 << (u % 64)) != 0,
        }
    }

    /// Some process waits for a value the register does not hold and no write still to be
    /// ordered can produce.
    fn dead(&self, c: &Config) -> bool {
        self.processes.iter().enumerate().any(|(p, ops)| {
            let needed = match ops.get(c.done[p] as usize) {
                Some((Op::Read { output: Some(v) }, _)) => *v,
                Some((Op::Cas { expected, .. }, _)) => *expected,
                _ => return false,
            };
            needed != c.value
                && self
                    .writers
                    .get(&needed)
                    .is_none_or(|ws| ws.iter().all(|&w| self.ordered(c, w)))
        })
    }

    fn finished(&self, c: &Config) -> bool {
        self.processes
            .iter()
            .zip(&c.done)
            .all(|(ops, &d)| d as usize == ops.len())
    }

    /// Takes every read of the current value that is some process's next operation.
    fn close(&self, c: &mut Config) {
        for (p, ops) in self.processes.iter().enumerate() {
            while let Some((Op::Read { output }, _)) = ops.get(c.done[p] as usize) {
                if output.is_some_and(|v| v != c.value) {
                    break;
                }
                c.done[p] += 1;
            }
        }
    }

    /// The writes and CASes that can come next: required ones first (an unknown operation
    /// most often did not take effect), each group earliest invoked first.
    fn moves(&self, c: &Config) -> Vec<Move> {
        let mut moves: Vec<(bool, u64, Move)> = Vec::new();
        for (p, ops) in self.processes.iter().enumerate() {
            if let Some((op, invoke)) = ops.get(c.done[p] as usize) {
                if step(c.value, op).is_some() {
                    moves.push((false, *invoke, Move::Next(p, c.done[p])));
                }
            }
        }
        for (u, o) in self.optional.iter().enumerate() {
            let applied = self.ordered(c, Move::Apply(u));
            // Applying a value the register already holds changes nothing: never needed.
            let changes = step(c.value, &o.op).is_some_and(|v| v != c.value);
            if !applied && changes && c.done[o.process] >= o.after {
                moves.push((true, o.invoke, Move::Apply(u)));
            }
        }
        moves.sort_by_key(|(optional, invoke, _)| (*optional, *invoke));
        moves.into_iter().map(|(_, _, m)| m).collect()
    }

    fn apply(&self, c: &Config, m: Move) -> Config {
        let mut next = c.clone();
        let op = match m {
            Move::Next(p, _) => {
                next.done[p] += 1;
                &self.processes[p][c.done[p] as usize].0
            }
            Move::Apply(u) => {
                next.applied[u / 64] |= 1 << (u % 64);
                &self.optional[u].op
            }
        };
        // Moves are only offered when the operation can happen.
        next.value = step(c.value, op).unwrap_or(c.value);
        self.close(&mut next);
        next
    }

    /// Depth-first search with memoisation, on an explicit stack (orders can be as long as
    /// the history).
    fn search(&self, initial: i64, deadline: Option<Instant>) -> Sequential {
        let mut start = Config {
            done: vec![0; self.processes.len()],
            applied: vec![0; self.optional.len().div_ceil(64)],
            value: initial,
        };
        self.close(&mut start);
        if self.finished(&start) {
            return Sequential::Yes;
        }
        if self.dead(&start) {
            return Sequential::No;
        }
        let mut seen: HashSet<Config> = HashSet::new();
        let mut stack: Vec<(Config, Vec<Move>, usize)> =
            vec![(start.clone(), self.moves(&start), 0)];
        seen.insert(start);
        let mut steps: u64 = 0;
        while let Some((config, moves, next)) = stack.last_mut() {
            steps += 1;
            if steps & 1023 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Sequential::TimedOut;
            }
            let Some(&m) = moves.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let child = self.apply(config, m);
            if self.finished(&child) {
                return Sequential::Yes;
            }
            if !self.dead(&child) && seen.insert(child.clone()) {
                let moves = self.moves(&child);
                stack.push((child, moves, 0));
            }
        }
        Sequential::No
    }
}
