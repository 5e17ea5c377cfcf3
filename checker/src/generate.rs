//! Generates linearizable histories from a random sequential execution with random overlaps:
//! for benchmarks, property tests and demonstrations.
//!
//! Each process runs operations one after another; every operation takes effect at a random
//! instant inside its own interval, and the register values are computed by executing the
//! operations in the order of those instants. A CAS whose comparison fails records the value
//! it found. Write values are unique (1, 2, 3, …), so a read
//! tells which write it saw.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{Entry, History, Op, Status};

#[derive(Debug, Clone)]
pub struct GenConfig {
    pub keys: usize,
    pub processes: usize,
    pub operations: usize,
    /// Relative weights of read, write and CAS.
    pub mix: [u32; 3],
    /// Probability that an operation's outcome is unknown (it took effect or not, at random).
    pub unknown_rate: f64,
    /// Probability that an operation certainly failed (did not take effect).
    pub fail_rate: f64,
    /// Probability that a CAS expects the register's current value (else a stale one).
    pub cas_hit_rate: f64,
    /// Longest operation, in nanoseconds.
    pub max_latency_ns: u64,
    pub seed: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            keys: 10,
            processes: 10,
            operations: 10_000,
            mix: [50, 30, 20],
            unknown_rate: 0.0,
            fail_rate: 0.0,
            cas_hit_rate: 0.7,
            max_latency_ns: 2_000_000,
            seed: 1,
        }
    }
}

struct Planned {
    process: u64,
    key: usize,
    kind: usize,
    invoke: u64,
    effect: u64,
    complete: u64,
    status: Status,
}

/// A linearizable history following `config`.
pub fn generate(config: &GenConfig) -> History {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let processes = config.processes.max(1);
    let keys = config.keys.max(1);
    let total_weight: u32 = config.mix.iter().sum::<u32>().max(1);
    let max_latency = config.max_latency_ns.max(2);
    let mut free_at = vec![0u64; processes];
    let mut planned = Vec::with_capacity(config.operations);
    for _ in 0..config.operations {
        // The process that becomes free first runs the next operation.
        let (p, _) = free_at
            .iter()
            .enumerate()
            .min_by_key(|(i, t)| (**t, *i))
            .unwrap_or((0, &0));
        let invoke = free_at[p] + rng.random_range(0..max_latency / 4 + 1);
        let complete = invoke + rng.random_range(1..max_latency);
        let effect = rng.random_range(invoke..=complete);
        let mut pick = rng.random_range(0..total_weight);
        let mut kind = 0;
        while kind < 2 && pick >= config.mix[kind] {
            pick -= config.mix[kind];
            kind += 1;
        }
        let roll: f64 = rng.random();
        let status = if roll < config.unknown_rate {
            Status::Unknown
        } else if roll < config.unknown_rate + config.fail_rate {
            Status::Fail
        } else {
            Status::Ok
        };
        planned.push(Planned {
            process: p as u64,
            key: rng.random_range(0..keys),
            kind,
            invoke,
            effect,
            complete,
            status,
        });
        free_at[p] = complete;
    }
    // Execute in the order the operations take effect.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].effect, i));
    let mut state = vec![0i64; keys];
    let mut next_value: i64 = 1;
    let mut entries: Vec<Option<Entry>> = vec![None; planned.len()];
    for i in order {
        let p = &planned[i];
        let current = state[p.key];
        // An unknown operation took effect or not, at random.
        let applies = match p.status {
            Status::Ok => true,
            Status::Fail => false,
            Status::Unknown => rng.random_bool(0.5),
        };
        let (op, status) = match p.kind {
            0 => {
                let output = (p.status == Status::Ok).then_some(current);
                (Op::Read { output }, p.status)
            }
            1 => {
                let value = next_value;
                next_value += 1;
                if applies {
                    state[p.key] = value;
                }
                (Op::Write { value }, p.status)
            }
            _ => {
                let new = next_value;
                next_value += 1;
                let expected = if rng.random_bool(config.cas_hit_rate.clamp(0.0, 1.0)) {
                    current
                } else {
                    current - 1 - rng.random_range(0..3)
                };
                let (status, output) = if applies && expected == current {
                    state[p.key] = new;
                    (p.status, None)
                } else if p.status == Status::Ok {
                    // The comparison failed: a 409, which did not take effect and says what
                    // the register held.
                    (Status::Fail, Some(current))
                } else {
                    (p.status, None)
                };
                (
                    Op::Cas {
                        expected,
                        new,
                        output,
                    },
                    status,
                )
            }
        };
        entries[i] = Some(Entry {
            process: p.process,
            key: format!("k{}", p.key),
            op,
            invoke: p.invoke,
            complete: Some(p.complete),
            status,
        });
    }
    History {
        entries: entries.into_iter().flatten().collect(),
        initial: std::collections::BTreeMap::new(),
        final_reads: Vec::new(),
    }
}
