//! `caplab`: register operations against members, workloads that record histories,
//! linearizability checks and HTML reports. This file parses the command line and
//! dispatches; each command lives in [`commands`] (and `check` in [`check`]).

mod check;
mod client;
mod commands;
mod confirm;
mod exit;
mod faults;
mod html;
mod k8s;
mod plots;
mod pod_proxy;
mod ready;
mod regc;
mod report;
mod ui;
mod view;
mod workload;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::runtime;

#[derive(Parser)]
#[command(
    name = "caplab",
    version,
    about = "Drive caplab register clusters and check what they guarantee"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    kube: k8s::KubeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Read, write or compare-and-set one register through a member's client API.
    Kv {
        #[command(subcommand)]
        op: commands::kv::KvOp,
    },
    /// A RegisterCluster's status (phase, leader, members, faults, conditions) from the
    /// Kubernetes API, or a table of the /v1/status of members given by --addr.
    /// Exit 1 if the cluster is not Ready (or a member is unreachable).
    Status(commands::status::StatusArgs),
    /// Run concurrent clients against members and record the history.
    Workload(commands::workload::WorkloadArgs),
    /// Check a history for linearizability. Exit 0: linearizable, 1: not linearizable,
    /// 2: unknown (a deadline passed), 3: bad input or usage.
    Check(check::CheckArgs),
    /// Run a RegisterCluster's experiment (spec.workload) as the operator's Job does: record,
    /// settle, check, report into --results/<run-id>/, verdict in the termination log.
    Experiment(commands::experiment::ExperimentArgs),
    /// Render a self-contained HTML report (timeline, violations) of a history.
    Report(commands::report::ReportArgs),
    /// Serve a live view of a cluster in the browser (members, links, faults, a timeline)
    /// on --listen and print its URL.
    Ui(commands::ui::UiArgs),
    /// Draw the members' recent peer messages as a space-time (Lamport) diagram in a
    /// self-contained HTML page. Exit 1 if a member's trace could not be read.
    Trace(commands::trace::TraceArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors are bad input.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::BAD_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caplab: {}", exit::one_line(&e));
            exit::code_of(&e)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let kube = cli.kube;
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Report(args) => commands::report::run(&args),
        Command::Kv { op } => runtime()?.block_on(commands::kv::run(&kube, op)),
        Command::Status(args) => runtime()?.block_on(commands::status::run(&kube, args)),
        Command::Workload(args) => runtime()?.block_on(commands::workload::run(&kube, args)),
        Command::Experiment(args) => runtime()?.block_on(commands::experiment::run(&kube, args)),
        Command::Ui(args) => runtime()?.block_on(commands::ui::run(&kube, args)),
        Command::Trace(args) => runtime()?.block_on(commands::trace::run(&kube, args)),
    }
}
