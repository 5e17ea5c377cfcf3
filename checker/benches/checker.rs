//! `cargo bench -p caplab-checker`: times the checker on generated histories (10 processes;
//! 10 keys and the worst case of 1 key; 10k and 100k operations; with and without unknown and
//! failed outcomes; linearizable, and with one read corrupted so the search must prove a
//! violation) and prints a Markdown table. `CAPLAB_BENCH_RUNS` sets the repetitions (default 3;
//! the median is shown). Under `cargo test --all-targets` it only runs a small smoke test.

use std::time::{Duration, Instant};

use caplab_checker::generate::{generate, GenConfig};
use caplab_checker::{check, CheckOptions, History, Op, Overall, Status};

struct Scenario {
    keys: usize,
    operations: usize,
    unknown_rate: f64,
    fail_rate: f64,
    corrupt: bool,
    threads: usize,
}

/// Changes the output of the ok read closest to the middle of the history to a value never
/// written: the search must explore everything before it to say "not linearizable".
fn corrupt(history: &mut History) {
    let middle = history.entries.len() / 2;
    let victim = (middle..history.entries.len()).chain(0..middle).find(|&i| {
        let e = &history.entries[i];
        e.status == Status::Ok && matches!(e.op, Op::Read { .. })
    });
    if let Some(i) = victim {
        history.entries[i].op = Op::Read { output: Some(-1) };
    }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("CAPLAB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut scenarios = Vec::new();
    let sizes: &[usize] = if benchmarking {
        &[10_000, 100_000]
    } else {
        &[1_000]
    };
    for &operations in sizes {
        for keys in [10, 1] {
            for (unknown_rate, fail_rate) in [(0.0, 0.0), (0.05, 0.05)] {
                for corrupt in [false, true] {
                    for threads in [1, cores] {
                        if keys == 1 && threads > 1 {
                            continue; // one key cannot be split
                        }
                        scenarios.push(Scenario {
                            keys,
                            operations,
                            unknown_rate,
                            fail_rate,
                            corrupt,
                            threads,
                        });
                    }
                }
            }
        }
    }
    println!("| operations | keys | unknown | fail | history | threads | ops searched | unknowns pruned | configurations explored | median time | verdict |");
    println!("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|");
    for s in scenarios {
        let config = GenConfig {
            keys: s.keys,
            processes: 10,
            operations: s.operations,
            unknown_rate: s.unknown_rate,
            fail_rate: s.fail_rate,
            seed: 42,
            ..GenConfig::default()
        };
        let mut history = generate(&config);
        if s.corrupt {
            corrupt(&mut history);
        }
        let options = CheckOptions {
            per_key_timeout: Some(Duration::from_secs(300)),
            total_timeout: None,
            threads: s.threads,
        };
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let started = Instant::now();
            let report = check(&history, &options);
            times.push(started.elapsed());
            last = Some(report);
        }
        times.sort();
        let Some(report) = last else { continue };
        let searched: usize = report.keys.iter().map(|k| k.operations).sum();
        let pruned: usize = report.keys.iter().map(|k| k.pruned_unknown).sum();
        let explored: u64 = report.keys.iter().map(|k| k.explored).sum();
        let verdict = match report.overall() {
            Overall::Linearizable => "linearizable",
            Overall::NotLinearizable => "not linearizable",
            Overall::Unknown => "unknown",
        };
        println!(
            "| {} | {} | {:.0}% | {:.0}% | {} | {} | {searched} | {pruned} | {explored} | {:.1} ms | {verdict} |",
            s.operations,
            s.keys,
            s.unknown_rate * 100.0,
            s.fail_rate * 100.0,
            if s.corrupt { "one read corrupted" } else { "as generated" },
            s.threads,
            times[times.len() / 2].as_secs_f64() * 1000.0,
        );
        let expected = if s.corrupt {
            Overall::NotLinearizable
        } else {
            Overall::Linearizable
        };
        assert_eq!(report.overall(), expected, "wrong verdict");
    }
}
