//! `caplab check`: a history's linearizability verdict, as a table or JSON, with an exit code
//! scripts can rely on (see [`crate::exit`]). Also the history loading and checker options
//! `caplab report` shares.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use caplab_checker::{
    check, CheckOptions, Entry, History, KeyReport, Overall, Report, Status, Verdict,
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

/// `caplab check --json`: the overall verdict and each key's report.
#[derive(Serialize)]
struct JsonReport<'a> {
    verdict: Overall,
    keys: &'a [KeyReport],
}

pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let history = load_history(&args.history)?;
    let report = check(&history, &args.deadlines.options());
    let overall = report.overall();
    if args.json {
        let json = JsonReport {
            verdict: overall,
            keys: &report.keys,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).context("serialising the report")?
        );
    } else {
        print!("{}", render(&history, &report));
    }
    Ok(of_verdict(overall))
}

/// The table of keys, what went wrong on each key that is not linearizable, and the verdict.
fn render(history: &History, report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .keys
        .iter()
        .map(|k| k.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>9}  VERDICT\n",
        "KEY", "OPERATIONS", "TIME"
    ));
    for k in &report.keys {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:>7.1}ms  {}\n",
            k.key,
            k.operations,
            k.elapsed_ms,
            k.verdict.kind().label()
        ));
    }
    for k in &report.keys {
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
    }
    out.push_str(&format!("\n{}\n", report.overall().label()));
    out
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
