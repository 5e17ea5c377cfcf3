//! Public histories with known verdicts: Porcupine's Jepsen etcd logs
//! (`tests/corpus/porcupine-etcd/`) and Knossos's cas-register histories
//! (`tests/corpus/knossos-cas-register/`; sources and licences in each README). Each etcd log
//! is converted the way Porcupine's `parseJepsenLog` reads it, each Knossos history the way
//! Knossos reads it (`:fail` did not happen, `:info` may have), and caplab's verdict must be
//! the known one.
//! The slowest are printed (`cargo test --release -p caplab-checker --test corpus --
//! --nocapture`); checker/BENCHMARKS.md compares them with Porcupine's times.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use caplab_checker::{check, ladder, CheckOptions, Entry, History, Op, Overall, Status};

/// What Porcupine's etcd model calls `nil` (the key does not exist): its initial state.
const NIL: i64 = -1_000_000;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/porcupine-etcd")
}

/// The top-level maps of an EDN list of maps, each on one line, without comments and with
/// strings emptied (an error message may hold braces or field names).
fn edn_maps(text: &str) -> Vec<String> {
    let (mut maps, mut current) = (Vec::new(), String::new());
    let (mut depth, mut in_string, mut escaped, mut comment) = (0usize, false, false, false);
    for c in text.chars() {
        if comment {
            comment = c != '\n';
        } else if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else {
            match c {
                ';' => comment = true,
                '"' => in_string = true,
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > 0 || c == '}' {
                current.push(if c.is_whitespace() { ' ' } else { c });
            }
            if c == '}' && depth == 0 {
                maps.push(std::mem::take(&mut current));
            }
        }
    }
    maps
}

/// The value after `:<name> ` in an EDN map written on one line: `4`, `nil`, `[1 2]`, `:ok`.
fn edn_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(":{name} "))? + name.len() + 2;
    let rest = &line[at..];
    let end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Knossos histories whose register starts at 0, as Knossos's own tests check them
/// (`test/knossos/report_test.clj`, `linear_test.clj`: `(cas-register 0)`, `(register 0)`);
/// the others start at `nil` (`(cas-register nil)`).
const STARTS_AT_0: [&str; 5] = [
    "bad-analysis.edn",
    "cas-failure.edn",
    "immediate-failure.edn",
    "rethink-fail-smaller.edn",
    // The larger history rethink-fail-smaller was cut from.
    "rethink-fail.edn",
];

/// A Knossos cas-register history (an EDN list of maps) as a caplab history of key `x`
/// starting at `initial`; time is the map's position (µs). The nemesis's maps are left out.
fn convert_edn(text: &str, initial: i64) -> History {
    let mut entries: Vec<Entry> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (n, map) in edn_maps(text).iter().enumerate() {
        let (at, line) = (n as u64 * 1_000, map.as_str());
        let Some(process) = edn_field(line, "process").and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        let (Some(kind), Some(f), Some(value)) = (
            edn_field(line, "type"),
            edn_field(line, "f"),
            edn_field(line, "value"),
        ) else {
            continue;
        };
        let words: Vec<&str> = value.trim_matches(['[', ']']).split_whitespace().collect();
        if kind == ":invoke" {
            let op = match (f, words.as_slice()) {
                (":read", _) => Op::Read { output: None },
                (":write", [v]) => Op::Write {
                    value: number(v).unwrap_or(NIL),
                },
                (":cas", [a, b]) => Op::Cas {
                    expected: number(a).unwrap_or(NIL),
                    new: number(b).unwrap_or(NIL),
                    output: None,
                },
                _ => continue,
            };
            if let Some(previous) = open.insert(process, entries.len()) {
                entries[previous].complete = Some(at);
            }
            entries.push(Entry {
                process,
                key: "x".into(),
                op,
                invoke: at,
                complete: None,
                status: Status::Unknown,
            });
            continue;
        }
        let Some(i) = open.remove(&process) else {
            continue;
        };
        let e = &mut entries[i];
        e.complete = Some(at);
        e.status = match kind {
            ":ok" => Status::Ok,
            ":fail" => Status::Fail,
            _ => Status::Unknown,
        };
        if let (Op::Read { .. }, Status::Ok) = (e.op, e.status) {
            e.op = Op::Read {
                output: Some(number(value).unwrap_or(NIL)),
            };
        }
    }
    let history = History::new(entries).unwrap_or_else(|e| panic!("converted history: {e}"));
    history.with_initial(BTreeMap::from([("x".to_string(), initial)]))
}

/// One log line's process, type (`:invoke`, `:ok`, `:fail`, …), function and value.
fn fields(line: &str) -> Option<(u64, &str, &str, Vec<&str>)> {
    let rest = line.strip_prefix("INFO")?.trim_start();
    let rest = rest
        .strip_prefix("jepsen.util")?
        .trim_start()
        .strip_prefix('-')?;
    let mut words = rest.split_whitespace();
    let process = words.next()?.parse().ok()?;
    let kind = words.next()?;
    let f = words.next()?;
    Some((process, kind, f, words.collect()))
}

fn number(word: &str) -> Option<i64> {
    word.trim_matches(|c| c == '[' || c == ']').parse().ok()
}

/// A Jepsen etcd log as a caplab history of key `x`; time is the line number (µs). Lines
/// Porcupine's parser ignores (`:info`, other failures) are ignored here too: their
/// operations stay open to the end, outcome unknown.
fn convert(text: &str) -> History {
    let mut entries: Vec<Entry> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = n as u64 * 1_000;
        let Some((process, kind, f, value)) = fields(line) else {
            continue;
        };
        match (kind, f) {
            (":invoke", _) => {
                let op = match (f, value.as_slice()) {
                    (":read", _) => Op::Read { output: None },
                    (":write", [v]) => match number(v) {
                        Some(value) => Op::Write { value },
                        None => continue,
                    },
                    (":cas", [a, b]) => match (number(a), number(b)) {
                        (Some(expected), Some(new)) => Op::Cas {
                            expected,
                            new,
                            output: None,
                        },
                        _ => continue,
                    },
                    _ => continue,
                };
                // A process that invokes again gave up on its previous operation.
                if let Some(previous) = open.insert(process, entries.len()) {
                    entries[previous].complete = Some(at);
                }
                entries.push(Entry {
                    process,
                    key: "x".into(),
                    op,
                    invoke: at,
                    complete: None,
                    status: Status::Unknown,
                });
            }
            (":ok" | ":fail", _) => {
                let timed_out = value.first() == Some(&":timed-out");
                let Some(i) = open.remove(&process) else {
                    continue;
                };
                let e = &mut entries[i];
                e.complete = Some(at);
                e.status = match (kind, f, timed_out) {
                    (_, ":read", true) => Status::Unknown,
                    (":ok", _, _) => Status::Ok,
                    _ => Status::Fail,
                };
                if let (Op::Read { .. }, Status::Ok) = (e.op, e.status) {
                    let output = match value.first() {
                        Some(&"nil") => NIL,
                        Some(v) => number(v).unwrap_or(NIL),
                        None => NIL,
                    };
                    e.op = Op::Read {
                        output: Some(output),
                    };
                }
            }
            _ => {}
        }
    }
    let history = History::new(entries).unwrap_or_else(|e| panic!("converted history: {e}"));
    history.with_initial(BTreeMap::from([("x".to_string(), NIL)]))
}

fn expected() -> Vec<(String, Overall)> {
    let text = std::fs::read_to_string(corpus().join("expected.txt")).expect("expected.txt");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, verdict)| {
            let v = match verdict {
                "linearizable" => Overall::Linearizable,
                _ => Overall::NotLinearizable,
            };
            (name.to_string(), v)
        })
        .collect()
}

#[test]
fn porcupine_s_etcd_histories_get_their_known_verdicts() {
    let options = CheckOptions {
        per_key_timeout: Some(Duration::from_secs(300)),
        total_timeout: None,
        threads: 1,
    };
    let cases = expected();
    assert_eq!(
        cases.len(),
        102,
        "expected.txt lists every log with a known verdict"
    );
    let mut timings = Vec::new();
    for (name, want) in cases {
        let path = corpus().join(format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let history = convert(&text);
        let started = Instant::now();
        let report = check(&history, &options);
        let elapsed = started.elapsed();
        assert_eq!(report.overall(), want, "{name}");
        let started = Instant::now();
        let rungs = ladder(&history, &report, &options);
        let sequential = (rungs.sequential, started.elapsed());
        timings.push((elapsed, name, history.entries.len(), sequential));
    }
    timings.sort();
    for (elapsed, name, ops, (sequential, took)) in timings.iter().rev().take(5) {
        println!(
            "{name}: {ops} operations, linearizability in {elapsed:?}; \
             sequential {sequential:?} in {took:?}"
        );
    }
    let slowest_sequential = timings.iter().max_by_key(|t| t.3 .1);
    println!("slowest sequential search: {slowest_sequential:?}");
}

#[test]
fn knossos_s_cas_register_histories_get_their_known_verdicts() {
    let options = CheckOptions {
        per_key_timeout: Some(Duration::from_secs(300)),
        total_timeout: None,
        threads: 1,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/knossos-cas-register");
    let mut timings = Vec::new();
    for (dir, want) in [
        ("good", Overall::Linearizable),
        ("bad", Overall::NotLinearizable),
    ] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("corpus directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "edn"))
            .collect();
        names.sort();
        assert!(!names.is_empty(), "no histories in {dir}");
        for path in names {
            let text = std::fs::read_to_string(&path).expect("history");
            let zero = path
                .file_name()
                .is_some_and(|f| STARTS_AT_0.iter().any(|z| f == *z));
            let history = convert_edn(&text, if zero { 0 } else { NIL });
            let started = Instant::now();
            let report = check(&history, &options);
            let elapsed = started.elapsed();
            let name = path.display().to_string();
            assert_eq!(report.overall(), want, "{name}");
            let started = Instant::now();
            let rungs = ladder(&history, &report, &options);
            let sequential = (rungs.sequential, started.elapsed());
            timings.push((elapsed, name, history.entries.len(), sequential));
        }
    }
    timings.sort();
    for (elapsed, name, ops, (sequential, took)) in timings.iter().rev().take(5) {
        println!(
            "{name}: {ops} operations, linearizability in {elapsed:?}; \
             sequential {sequential:?} in {took:?}"
        );
    }
    let slowest_sequential = timings.iter().max_by_key(|t| t.3 .1);
    println!("slowest sequential search: {slowest_sequential:?}");
}
