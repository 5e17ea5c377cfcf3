//! `caplab check`: a history's linearizability verdict, the ladder of models it satisfies
//! (linearizable, sequential per key, converged) and its anomalies in plain words, as a table or
//! JSON, with an exit code scripts can rely on (about linearizability only, see
//! [`crate::exit`]). Also the history loading, checker options and analysis `caplab report`
//! shares.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use caplab_checker::anomalies::counts;
use caplab_checker::{
    anomalies, check, ladder, Anomaly, CheckOptions, Entry, History, KeyLadder, KeyReport, Ladder,
    Overall, Report, Status, Verdict,
};
use serde::Serialize;

use crate::exit::{bad_input, of_verdict};

/// Where a history comes from: a file, or standard input for `-`.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    /// For clap: `-` is standard input, anything else a path.
    pub fn parse(text: &str) -> Result<Source, String> {
        match text {
            "" => Err("give a history file, or - for standard input".into()),
            "-" => Ok(Source::Stdin),
            path => Ok(Source::File(PathBuf::from(path))),
        }
    }

    /// For messages: the path, or `standard input`.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "standard input".into(),
        }
    }
}

/// A deadline; `None`: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Option<Duration>);

/// A deadline in seconds, where 0 means none.
pub fn parse_deadline(text: &str) -> Result<Deadline, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (0: no deadline)"))?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d.is_zero() => Ok(Deadline(None)),
        Ok(d) => Ok(Deadline(Some(d))),
        Err(_) => Err(format!(
            "{text:?}: expected a non-negative number of seconds (0: no deadline)"
        )),
    }
}

/// The checker's deadlines, shared by `check` and `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct Deadlines {
    /// Give up on a key after this many seconds (its verdict is then "unknown"); 0: never.
    #[arg(
        long,
        alias = "timeout-secs",
        value_name = "SECONDS",
        default_value = "60",
        value_parser = parse_deadline
    )]
    pub timeout: Deadline,
    /// Give up on every key still unchecked after this many seconds in all; 0: never.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "0",
        value_parser = parse_deadline
    )]
    pub total_timeout: Deadline,
}

impl Deadlines {
    pub fn options(&self) -> CheckOptions {
        CheckOptions {
            per_key_timeout: self.timeout.0,
            total_timeout: self.total_timeout.0,
            threads: 0,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The history (JSON, see the README), or - to read it from standard input.
    #[arg(value_parser = Source::parse)]
    pub history: Source,
    #[command(flatten)]
    pub deadlines: Deadlines,
    /// Print the verdict and the per-key report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Reads and validates a history; every failure is the input's fault.
pub fn load_history(source: &Source) -> Result<History> {
    let text = match source {
        Source::File(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        }
        Source::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .context("reading standard input")
        }
    }
    .map_err(bad_input)?;
    History::from_json(&text)
        .with_context(|| format!("{} is not a valid history", source.name()))
        .map_err(bad_input)
}

/// Everything `check` and `report` say about a history: the linearizability report, the
/// ladder and the anomalies.
pub struct Findings {
    pub report: Report,
    pub ladder: Ladder,
    pub anomalies: Vec<Anomaly>,
}

/// Checks `history` for every rung of the ladder and finds its anomalies.
pub fn analyse(history: &History, options: &CheckOptions) -> Findings {
    let report = check(history, options);
    let ladder = ladder(history, &report, options);
    Findings {
        anomalies: anomalies(history),
        report,
        ladder,
    }
}

/// `caplab check --json`: the overall verdict, the ladder, each key's report and rungs, and
/// the anomalies with their counts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    verdict: Overall,
    #[serde(flatten)]
    rungs: Rungs,
    keys: Vec<JsonKey<'a>>,
    anomalies: &'a [Anomaly],
    anomaly_counts: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct Rungs {
    linearizable: Option<bool>,
    sequential: Option<bool>,
    converged: Option<bool>,
    strongest: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonKey<'a> {
    #[serde(flatten)]
    report: Cow<'a, KeyReport>,
    #[serde(flatten)]
    rungs: Rungs,
}

impl Rungs {
    fn of_key(k: &KeyLadder) -> Rungs {
        Rungs {
            linearizable: k.linearizable,
            sequential: k.sequential,
            converged: k.converged,
            strongest: k.strongest(),
        }
    }
}

impl Findings {
    /// Each key of the ladder with its linearizability report; a key that only final reads
    /// mention has no operations, so nothing in it can be out of order.
    fn keys<'a>(&'a self, history: &History) -> Vec<(Cow<'a, KeyReport>, &'a KeyLadder)> {
        self.ladder
            .keys
            .iter()
            .map(|k| {
                let report = match self.report.keys.iter().find(|r| r.key == k.key) {
                    Some(r) => Cow::Borrowed(r),
                    None => Cow::Owned(KeyReport {
                        key: k.key.clone(),
                        initial: history.initial_value(&k.key),
                        operations: 0,
                        pruned_unknown: 0,
                        explored: 0,
                        elapsed_ms: 0.0,
                        verdict: Verdict::Linearizable,
                    }),
                };
                (report, k)
            })
            .collect()
    }

    fn json(&self, history: &History) -> JsonReport<'_> {
        let l = &self.ladder;
        JsonReport {
            verdict: self.report.overall(),
            rungs: Rungs {
                linearizable: l.linearizable,
                sequential: l.sequential,
                converged: l.converged,
                strongest: l.strongest(),
            },
            keys: self
                .keys(history)
                .into_iter()
                .map(|(report, k)| JsonKey {
                    report,
                    rungs: Rungs::of_key(k),
                })
                .collect(),
            anomalies: &self.anomalies,
            anomaly_counts: counts(&self.anomalies)
                .into_iter()
                .map(|(kind, n)| (kind.as_str(), n))
                .collect(),
        }
    }
}

pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let history = load_history(&args.history)?;
    let findings = analyse(&history, &args.deadlines.options());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings.json(&history))
                .context("serialising the report")?
        );
    } else {
        print!("{}", render(&history, &findings));
    }
    Ok(of_verdict(findings.report.overall()))
}

/// `yes`, `no` or `unknown`.
pub fn rung(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// How many sentences of each kind the table output prints (`--json` lists them all).
const SENTENCES_PER_KIND: usize = 20;

/// The table of keys, what went wrong on each key that is not linearizable, the anomalies,
/// the ladder, and the verdict (last line).
fn render(history: &History, findings: &Findings) -> String {
    let report = &findings.report;
    let keys = findings.keys(history);
    let mut out = String::new();
    let width = keys
        .iter()
        .map(|(k, _)| k.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>9}  {:<10}  {:<9}  {:<12}  VERDICT\n",
        "KEY", "OPERATIONS", "TIME", "SEQUENTIAL", "CONVERGED", "STRONGEST"
    ));
    for (k, l) in &keys {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:>7.1}ms  {:<10}  {:<9}  {:<12}  {}\n",
            k.key,
            k.operations,
            k.elapsed_ms,
            rung(l.sequential),
            rung(l.converged),
            l.strongest().unwrap_or("unknown"),
            k.verdict.kind().label()
        ));
    }
    for k in &report.keys {
        out.push_str(&violation(history, k));
    }
    out.push_str(&anomaly_lines(&findings.anomalies));
    out.push_str(&ladder_lines(history, &findings.ladder));
    out.push_str(&format!("\n{}\n", report.overall().label()));
    out
}

/// What went wrong on a key that is not linearizable (or why it is unknown); empty otherwise.
fn violation(history: &History, k: &KeyReport) -> String {
    let mut out = String::new();
    match &k.verdict {
        Verdict::NotLinearizable(v) => {
            out.push_str(&format!(
                "\nkey {}: {}.\n",
                k.key,
                Overall::NotLinearizable.label()
            ));
            out.push_str(&format!(
                "  after ordering {} operations (value {}), this operation cannot be placed:\n",
                v.linearized, v.last_state
            ));
            if let Some(e) = history.entries.get(v.stuck) {
                out.push_str(&format!("    #{} {}\n", v.stuck, describe(e)));
            }
            if !v.concurrent.is_empty() {
                out.push_str("  nor any pending one:\n");
                for &i in &v.concurrent {
                    if let Some(e) = history.entries.get(i) {
                        out.push_str(&format!("    #{i} {}\n", describe(e)));
                    }
                }
            }
        }
        Verdict::Unknown { reason } => out.push_str(&format!(
            "\nkey {}: {}: {reason}\n",
            k.key,
            Overall::Unknown.label()
        )),
        Verdict::Linearizable => {}
    }
    out
}

/// The count of each kind, then the sentences (at most [`SENTENCES_PER_KIND`] of each).
fn anomaly_lines(found: &[Anomaly]) -> String {
    let counts = counts(found);
    let summary: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.words()))
        .collect();
    let mut out = format!("\nanomalies: {}\n", summary.join(", "));
    for (kind, n) in &counts {
        for a in found
            .iter()
            .filter(|a| a.kind == *kind)
            .take(SENTENCES_PER_KIND)
        {
            out.push_str(&format!("  {}\n", a.sentence));
        }
        if *n > SENTENCES_PER_KIND {
            out.push_str(&format!(
                "  … and {} more of {} (--json lists them all)\n",
                n - SENTENCES_PER_KIND,
                kind.words()
            ));
        }
    }
    out
}

/// The overall ladder, saying plainly that sequential consistency is per key.
fn ladder_lines(history: &History, l: &Ladder) -> String {
    let converged = match l.converged {
        None if history.final_reads.is_empty() => {
            "unknown (the history has no final reads)".to_string()
        }
        other => rung(other).to_string(),
    };
    format!(
        "\nladder: linearizable {}, sequential {} (per key: sequential consistency does not \
         compose across keys), converged {converged}; strongest: {}\n",
        rung(l.linearizable),
        rung(l.sequential),
        l.strongest().unwrap_or("unknown")
    )
}

fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

/// One operation in the history's own words (process, key, operation, status):
/// `process 2 x w 5: ok; invoked at 1.000ms,
/// completed at 2.000ms`; an operation whose outcome is unknown is never said to complete.
pub fn describe(e: &Entry) -> String {
    let timing = match (e.status, e.complete) {
        (Status::Unknown, None) => format!(
            "outcome unknown; invoked at {}, never answered",
            ms(e.invoke)
        ),
        (Status::Unknown, Some(c)) => format!(
            "outcome unknown; invoked at {}, client gave up at {}",
            ms(e.invoke),
            ms(c)
        ),
        (status, Some(c)) => format!(
            "{}; invoked at {}, completed at {}",
            status.as_str(),
            ms(e.invoke),
            ms(c)
        ),
        (status, None) => format!("{}; invoked at {}", status.as_str(), ms(e.invoke)),
    };
    format!("process {} {} {}: {timing}", e.process, e.key, e.op.label())
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_checker::Op;

    fn entry(status: Status, complete: Option<u64>) -> Entry {
        Entry {
            process: 4,
            key: "x".into(),
            op: Op::Write { value: 5 },
            invoke: 1_000_000,
            complete,
            status,
        }
    }

    #[test]
    fn operations_are_described_in_the_history_s_words() {
        assert_eq!(
            describe(&entry(Status::Ok, Some(2_500_000))),
            "process 4 x w 5: ok; invoked at 1.000ms, completed at 2.500ms"
        );
        assert_eq!(
            describe(&entry(Status::Fail, Some(2_000_000))),
            "process 4 x w 5: fail; invoked at 1.000ms, completed at 2.000ms"
        );
        for complete in [None, Some(9_000_000)] {
            let text = describe(&entry(Status::Unknown, complete));
            assert!(
                text.contains("outcome unknown; invoked at 1.000ms"),
                "{text}"
            );
            assert!(!text.contains("completed"), "{text}");
        }
    }

    #[test]
    fn deadlines_in_seconds_with_zero_for_none() {
        assert_eq!(parse_deadline("0"), Ok(Deadline(None)));
        assert_eq!(
            parse_deadline("1.5"),
            Ok(Deadline(Some(Duration::from_millis(1500))))
        );
        for bad in ["-1", "x", "", "inf", "NaN"] {
            assert!(parse_deadline(bad).is_err(), "{bad:?} accepted");
        }
    }
}
