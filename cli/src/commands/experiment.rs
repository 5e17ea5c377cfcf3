//! `caplab experiment`: one run of a RegisterCluster's `spec.workload`, as the operator's Job
//! runs it in the cluster. It records the history through the pod proxy (`caplab workload
//! --cluster`), settles, checks the ladder, renders the report with the fault windows the
//! operator recorded as the members saw them (`status.experiment.windows`, see
//! [`windows`]), writes `<results>/<run>/{history.json,
//! events.json, report.html, verdict.json}`, and leaves a small verdict (rungs, counts,
//! throughput, availability per fault window, the first anomalies) in the termination
//! message, which the operator turns into `status.experiment`.
//!
//! The termination message is JSON of at most 4 KiB (Kubernetes' limit): `{"runId",
//! "linearizable", "sequential", "converged", "strongest", "anomalies": [sentences],
//! "anomalyCounts": {kind: n},
//! "operations": {"ok", "failed", "unknown"}, "throughput", "windows": [{"name", "kind",
//! "since", "until", "seenByMembers", "offsetSeconds", "availability", "throughput",
//! "anomalyCounts"}], "dir", "unkept"}` (`unkept`: why the files could not be kept
//! on the results volume, else null), or `{"runId", "error"}` when the run could not finish
//! (then the exit code is non-zero and the Job fails).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use caplab_checker::{CheckOptions, History, Status};
use serde_json::{json, Value};

use super::workload::WorkloadArgs;
use crate::check::analyse;
use crate::k8s::{ClusterRef, KubeArgs};
use crate::report::{render, Window};
use crate::{exit, workload};

mod windows;

/// Kubernetes keeps at most this much of a termination message.
const MESSAGE_LIMIT: usize = 4096;
/// Anomaly sentences in the message (all of them are in verdict.json and the report).
const FIRST_ANOMALIES: usize = 3;
/// The check's time limit for each of its two searches (linearizable, then sequential), so
/// together at most 480 s: the operator gives the Job `activeDeadlineSeconds` = duration +
/// settle + 600 (operator/src/experiment.rs), and a check still running then would be killed
/// without a verdict; past this limit the verdict comes back "unknown" instead.
const CHECK_TOTAL_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do with experiment results (without a subcommand: run one).
#[derive(clap::Subcommand)]
pub enum Action {
    /// Fetch a run's verdict.json, history.json, events.json and report.html from the
    /// cluster's results PVC (through a short-lived pod and the API server's pod proxy).
    Fetch(super::results::FetchArgs),
    /// Serve a results directory over HTTP (what the fetch pod runs).
    Serve(super::results::ServeArgs),
}

/// `caplab experiment` without a subcommand: one run, as the operator's Job starts it.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The RegisterCluster whose members the clients talk to (through the pod proxy).
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER", required = true)]
    pub cluster: Option<String>,
    /// The run's id: its results go to <results>/<run-id>/.
    #[arg(long, required = true)]
    pub run_id: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Seconds the clients run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Number of keys (fresh ones each run).
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Operation mix in percent.
    #[arg(long, default_value = "read=50,write=30,cas=20")]
    pub mix: workload::Mix,
    /// Operations per second over all clients; 0 for as fast as the members answer.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Settle period before the final reads: 5s, 0 (no final reads), …
    #[arg(long, default_value = "5s")]
    pub settle: String,
    /// Directory of the results volume.
    #[arg(long, default_value = "/results")]
    pub results: PathBuf,
    /// Where the files go when --results is not writable (they are not kept then).
    #[arg(long, default_value = "/scratch")]
    pub scratch: PathBuf,
    /// Where the verdict goes for the operator (the container's terminationMessagePath).
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// Runs the experiment, or fetches or serves results.
pub async fn run(kube: &KubeArgs, args: ExperimentArgs) -> Result<ExitCode> {
    match args.action {
        Some(Action::Fetch(a)) => super::results::fetch(kube, a).await,
        Some(Action::Serve(a)) => super::results::serve(a).await,
        None => run_once(kube, args.run).await,
    }
}

/// One run; whatever happens, the termination message says how it ended.
async fn run_once(kube: &KubeArgs, args: RunArgs) -> Result<ExitCode> {
    let (Some(cluster), Some(run_id)) = (args.cluster.clone(), args.run_id.clone()) else {
        return Err(exit::bad_input(anyhow::anyhow!(
            "caplab experiment needs --cluster and --run-id (or a subcommand: fetch, serve)"
        )));
    };
    let run = Run {
        cluster,
        id: run_id,
    };
    let (dir, unkept) = results_dir(&args, &run.id)?;
    match run_and_check(kube, &args, &run, &dir).await {
        Ok(mut verdict) => {
            verdict["unkept"] = json!(unkept);
            let text = serde_json::to_string_pretty(&verdict).context("serialising the verdict")?;
            std::fs::write(dir.join("verdict.json"), &text).context("writing verdict.json")?;
            write_message(&args.termination_log, &message(verdict));
            eprintln!("results in {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let why = exit::one_line(&e);
            let msg = json!({"runId": run.id, "error": why}).to_string();
            write_message(&args.termination_log, &msg);
            Err(e)
        }
    }
}

/// Where the run's files go: `<results>/<run>`, or `<scratch>/<run>` with the reason when
/// the results volume is not writable (a provisioner that ignores `fsGroup`, such as the
/// in-tree host-path one): the verdict still reaches the operator, the files are not kept.
fn results_dir(args: &RunArgs, run: &str) -> Result<(PathBuf, Option<String>)> {
    let dir = args.results.join(run);
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Ok((dir, None)),
        Err(e) => {
            let why = format!("{} is not writable ({e})", dir.display());
            eprintln!("note: {why}; writing to {} instead", args.scratch.display());
            let scratch = args.scratch.join(run);
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            Ok((scratch, Some(why)))
        }
    }
}

/// The run's cluster and id.
struct Run {
    cluster: String,
    id: String,
}

/// Records, checks and reports the run; returns the full verdict.
async fn run_and_check(kube: &KubeArgs, args: &RunArgs, run: &Run, dir: &Path) -> Result<Value> {
    let history_path = dir.join("history.json");
    let recorded =
        super::workload::record(kube, &workload_args(args, &run.cluster, &history_path)?).await?;
    let history = recorded.history;
    std::fs::write(&history_path, history.to_json()).context("writing history.json")?;
    let cluster = ClusterRef::connect(kube, &run.cluster).await?;
    let spans = windows::spans(&cluster.get().await?, &run.id, recorded.started);
    let shades: Vec<Window> = spans.iter().map(|s| s.window.clone()).collect();
    std::fs::write(
        dir.join("events.json"),
        serde_json::to_string_pretty(&shades).context("serialising the fault windows")?,
    )
    .context("writing events.json")?;
    let options = CheckOptions {
        total_timeout: Some(CHECK_TOTAL_TIMEOUT),
        ..CheckOptions::default()
    };
    let findings = analyse(&history, &options);
    let title = format!("caplab experiment {} on {}", run.id, run.cluster);
    let html = render(&history, &findings.report, &shades, None, &title);
    std::fs::write(dir.join("report.html"), html).context("writing report.html")?;
    let l = &findings.ladder;
    let (ok, failed, unknown) = outcomes(&history);
    Ok(json!({
        "runId": run.id,
        "linearizable": l.linearizable,
        "sequential": l.sequential,
        "converged": l.converged,
        "strongest": l.strongest(),
        "anomalies": findings.anomalies.iter().map(|a| a.sentence.clone()).collect::<Vec<_>>(),
        "anomalyCounts": anomaly_counts(&findings.anomalies),
        "operations": {"ok": ok, "failed": failed, "unknown": unknown},
        "throughput": ok as f64 / args.duration.max(1e-3),
        "windows": windows::summaries(&spans, &history, &findings.anomalies),
        "dir": dir.display().to_string(),
    }))
}

fn workload_args(args: &RunArgs, cluster: &str, out: &Path) -> Result<WorkloadArgs> {
    let settle = crate::faults::schedule::parse_duration(&args.settle)
        .map_err(|e| exit::bad_input(anyhow::anyhow!("--settle: {e}")))?;
    Ok(WorkloadArgs {
        addr: Vec::new(),
        cluster: Some(cluster.to_string()),
        fault_at: Vec::new(),
        fault_timeout: Duration::from_secs(30),
        ready_timeout: Duration::from_secs(120),
        faults: None,
        events: None,
        clients: args.clients.max(1),
        keys: args.keys.max(1),
        mix: args.mix,
        rate: args.rate,
        duration: args.duration,
        seed: 0,
        consistency: super::default_consistency().to_string(),
        timeout_ms: 10_000,
        out: out.to_path_buf(),
        sticky: false,
        quiet: true,
        settle,
    })
}

/// Anomalies by kind (`lost-acknowledged-write`: 124, …).
fn anomaly_counts(
    found: &[caplab_checker::Anomaly],
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for a in found {
        *counts.entry(a.kind.as_str()).or_insert(0) += 1;
    }
    counts
}

/// (acknowledged, failed, unknown) operations.
fn outcomes(history: &History) -> (u64, u64, u64) {
    let mut n = (0, 0, 0);
    for e in &history.entries {
        match e.status {
            Status::Ok => n.0 += 1,
            Status::Fail => n.1 += 1,
            Status::Unknown => n.2 += 1,
        }
    }
    n
}

/// The verdict cut to fit a termination message (Kubernetes cuts a longer one, and cut JSON
/// is no verdict): the first anomalies, then fewer; then windows without their times and
/// kinds (the operator recorded those itself), then no windows (verdict.json keeps all).
fn message(mut verdict: Value) -> String {
    let mut keep = FIRST_ANOMALIES;
    loop {
        if let Some(list) = verdict["anomalies"].as_array_mut() {
            list.truncate(keep);
        }
        let text = verdict.to_string();
        if text.len() <= MESSAGE_LIMIT {
            return text;
        }
        if keep > 0 {
            keep -= 1;
        } else if !slim_windows(&mut verdict) {
            return text;
        }
    }
}

/// One step of making the verdict's windows smaller; false when nothing is left to cut.
fn slim_windows(verdict: &mut Value) -> bool {
    let Some(windows) = verdict["windows"].as_array_mut().filter(|w| !w.is_empty()) else {
        return false;
    };
    const RECORDED: [&str; 4] = ["since", "until", "kind", "seenByMembers"];
    let timed = windows
        .iter()
        .any(|w| RECORDED.iter().any(|k| w.get(k).is_some()));
    if !timed {
        windows.clear();
        return true;
    }
    for w in windows.iter_mut().filter_map(Value::as_object_mut) {
        for k in RECORDED {
            w.remove(k);
        }
    }
    true
}

/// Best effort: outside a pod there is no termination log, and the results are on disk.
fn write_message(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("note: could not write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_windows_still_fit_a_termination_log() {
        let window = json!({"name": "a-fault-with-a-long-name", "kind": "partition",
            "since": "2024-01-01T00:00:10.000Z", "until": "2024-01-01T00:00:30.000Z",
            "seenByMembers": true, "offsetSeconds": 10.0, "availability": 0.5,
            "throughput": 10.0, "anomalyCounts": {"stale-read": 3}});
        let verdict = json!({"runId": "r", "linearizable": false, "windows": vec![window; 32]});
        let text = message(verdict);
        assert!(text.len() <= MESSAGE_LIMIT, "{}", text.len());
        let back: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back["linearizable"], false, "{text}");
    }

    #[test]
    fn the_message_fits_a_termination_log() {
        let long = "x".repeat(3000);
        let verdict = json!({"runId": "r", "anomalies": [long.clone(), long.clone(), long]});
        let text = message(verdict);
        assert!(text.len() <= MESSAGE_LIMIT, "{}", text.len());
        assert!(text.contains("\"runId\":\"r\""));
    }
}
