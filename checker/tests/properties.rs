//! Property tests: generated linearizable histories pass, a corrupted read is caught, and on
//! small arbitrary histories the checker agrees with a brute-force search.

use caplab_checker::generate::{generate, GenConfig};
use caplab_checker::{check, CheckOptions, Entry, History, Op, Overall, Status, Verdict};
use proptest::prelude::*;

fn config(seed: u64, operations: usize, processes: usize, keys: usize, unknown: bool) -> GenConfig {
    GenConfig {
        keys,
        processes,
        operations,
        unknown_rate: if unknown { 0.1 } else { 0.0 },
        fail_rate: if unknown { 0.05 } else { 0.0 },
        max_latency_ns: 1_000,
        seed,
        ..GenConfig::default()
    }
}

fn options() -> CheckOptions {
    CheckOptions {
        per_key_timeout: None,
        total_timeout: None,
        threads: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_histories_are_linearizable(
        seed in any::<u64>(),
        operations in 1usize..400,
        processes in 1usize..8,
        keys in 1usize..4,
        unknown in any::<bool>(),
    ) {
        let history = generate(&config(seed, operations, processes, keys, unknown));
        // What the generator makes must also pass validation.
        let history = History::from_json(&history.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let report = check(&history, &options());
        prop_assert_eq!(report.overall(), Overall::Linearizable, "{:?}", report);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        seed in any::<u64>(),
        operations in 2usize..400,
        processes in 1usize..8,
        keys in 1usize..4,
        unknown in any::<bool>(),
        which in any::<prop::sample::Index>(),
    ) {
        let mut history = generate(&config(seed, operations, processes, keys, unknown));
        let reads: Vec<usize> = history
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status == Status::Ok && matches!(e.op, Op::Read { .. }))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!reads.is_empty());
        let victim = reads[which.index(reads.len())];
        // Generated values are 0 (initial) and 1, 2, 3, …: -7 was never written.
        history.entries[victim].op = Op::Read { output: Some(-7) };
        let report = check(&history, &options());
        prop_assert_eq!(report.overall(), Overall::NotLinearizable);
        let key = &history.entries[victim].key;
        let Some(k) = report.keys.iter().find(|k| &k.key == key) else {
            return Err(TestCaseError::fail("key missing from the report"));
        };
        let Verdict::NotLinearizable(v) = &k.verdict else {
            return Err(TestCaseError::fail("wrong key flagged"));
        };
        prop_assert!(v.stuck == victim || v.concurrent.contains(&victim), "{:?} does not point at {}", v, victim);
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories(
        raw in prop::collection::vec(
            (0u8..3, 0i64..3, 0i64..3, 0u64..8, 0u64..8, 0u8..6),
            1..7,
        ),
    ) {
        let entries: Vec<Entry> = raw
            .iter()
            .enumerate()
            .map(|(i, &(kind, a, b, start, len, status))| {
                let status = match status {
                    0 => Status::Unknown,
                    1 => Status::Fail,
                    _ => Status::Ok,
                };
                let op = match kind {
                    0 => Op::Read { output: (status == Status::Ok).then_some(a) },
                    1 => Op::Write { value: a },
                    // A failed comparison sometimes records what it found (never `expected`).
                    _ => Op::Cas {
                        expected: a,
                        new: b,
                        output: (status == Status::Fail && len % 2 == 1).then_some((a + 1 + b % 2) % 3),
                    },
                };
                Entry {
                    process: i as u64,
                    key: "x".into(),
                    op,
                    invoke: start,
                    complete: if status == Status::Unknown && len % 2 == 0 { None } else { Some(start + len) },
                    status,
                }
            })
            .collect();
        let expected = brute_force(&entries);
        let history = History::new(entries).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let report = check(&history, &options());
        let got = report.overall() == Overall::Linearizable;
        prop_assert_eq!(got, expected, "{:?}\n{:?}", history, report);
    }
}

/// Tries every subset of the unknown writes/CASes and every order respecting real time.
fn brute_force(entries: &[Entry]) -> bool {
    let required: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].status == Status::Ok || observation(&entries[i]).is_some())
        .collect();
    let optional: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            entries[i].status == Status::Unknown && !matches!(entries[i].op, Op::Read { .. })
        })
        .collect();
    for mask in 0u32..(1 << optional.len()) {
        let mut chosen = required.clone();
        chosen.extend(
            optional
                .iter()
                .enumerate()
                .filter(|(b, _)| mask & (1 << b) != 0)
                .map(|(_, &i)| i),
        );
        if orders(entries, &mut chosen, 0) {
            return true;
        }
    }
    false
}

/// What a CAS that failed its comparison found, if it recorded it: a read of that value.
fn observation(e: &Entry) -> Option<i64> {
    match e.op {
        Op::Cas {
            output: Some(seen), ..
        } if e.status == Status::Fail => Some(seen),
        _ => None,
    }
}

fn precedes(a: &Entry, b: &Entry) -> bool {
    a.status != Status::Unknown && a.complete.is_some_and(|c| c < b.invoke)
}

fn orders(entries: &[Entry], ops: &mut Vec<usize>, k: usize) -> bool {
    if k == ops.len() {
        // Real-time order: no later operation may precede an earlier one.
        for i in 0..ops.len() {
            for j in i + 1..ops.len() {
                if precedes(&entries[ops[j]], &entries[ops[i]]) {
                    return false;
                }
            }
        }
        let mut state = 0;
        for &i in ops.iter() {
            if let Some(seen) = observation(&entries[i]) {
                if seen != state {
                    return false;
                }
                continue;
            }
            match entries[i].op {
                Op::Read { output: Some(v) } if v != state => return false,
                Op::Read { .. } => {}
                Op::Write { value } => state = value,
                Op::Cas { expected, new, .. } if expected == state => state = new,
                Op::Cas { .. } => return false,
            }
        }
        return true;
    }
    for i in k..ops.len() {
        ops.swap(k, i);
        if orders(entries, ops, k + 1) {
            ops.swap(k, i);
            return true;
        }
        ops.swap(k, i);
    }
    false
}
