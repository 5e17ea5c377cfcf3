//! `caplab`: register operations against members, workloads that record histories,
//! linearizability checks and HTML reports.

mod check;
mod client;
mod confirm;
mod exit;
mod faults;
mod k8s;
mod ready;
mod regc;
mod report;
mod status;
mod workload;
mod workload_command;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use caplab_checker::check;
use clap::{Parser, Subcommand};
use serde_json::Value;

use client::Member;

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

/// Which member a `kv` command talks to.
#[derive(clap::Args)]
struct MemberArgs {
    /// A member's client address, host:port.
    #[arg(long, env = "CAPLAB_ADDR", required_unless_present = "cluster")]
    addr: Option<String>,
    /// A RegisterCluster: reach its member through the Kubernetes API server's pod proxy
    /// (takes precedence over --addr).
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER")]
    cluster: Option<String>,
    /// With --cluster: the member's ordinal (default: the leader the status names, else 0).
    #[arg(long, requires = "cluster")]
    member: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Read, write or compare-and-set one register through a member's client API.
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
    /// A RegisterCluster's status (phase, leader, members, faults, conditions) from the
    /// Kubernetes API, or a table of the /v1/status of members given by --addr.
    /// Exit 1 if the cluster is not Ready (or a member is unreachable).
    Status {
        /// The RegisterCluster's name.
        #[arg(required_unless_present = "addr")]
        cluster: Option<String>,
        /// Client (or peer) addresses, host:port, comma separated (instead of a cluster).
        #[arg(
            long,
            env = "CAPLAB_ADDR",
            value_delimiter = ',',
            conflicts_with = "cluster"
        )]
        addr: Vec<String>,
        /// Also ask every member for its /v1/status through the API server's pod proxy.
        #[arg(long, short = 'l')]
        live: bool,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Run concurrent clients against members and record the history.
    Workload(workload_command::WorkloadArgs),
    /// Check a history for linearizability. Exit 0: linearizable, 1: not linearizable,
    /// 2: unknown (a deadline passed), 3: bad input or usage.
    Check(check::CheckArgs),
    /// Render a self-contained HTML report (timeline, violations) of a history.
    Report {
        /// The history, or - for standard input.
        #[arg(value_parser = check::Source::parse)]
        history: check::Source,
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
        /// Fault windows to shade: a JSON array of {"name", "start", "end"} in ns from the start.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Show only this key's operations in the timeline.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        deadlines: check::Deadlines,
    },
}

#[derive(Subcommand)]
enum KvOp {
    /// GET /v1/kv/{key}.
    Get {
        key: String,
        #[command(flatten)]
        to: MemberArgs,
        #[arg(long, default_value = "linearizable", value_parser = ["linearizable", "local"])]
        consistency: String,
    },
    /// PUT /v1/kv/{key}.
    Put {
        key: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
        #[command(flatten)]
        to: MemberArgs,
    },
    /// POST /v1/kv/{key}/cas.
    Cas {
        key: String,
        #[arg(allow_negative_numbers = true)]
        expected: i64,
        #[arg(allow_negative_numbers = true)]
        new: i64,
        #[command(flatten)]
        to: MemberArgs,
    },
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let kube = cli.kube;
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Report {
            history,
            output,
            events,
            key,
            deadlines,
        } => report_command(
            &history,
            &output,
            events.as_deref(),
            key.as_deref(),
            &deadlines,
        ),
        Command::Kv { op } => runtime()?.block_on(kv_command(&kube, op)),
        Command::Status {
            cluster,
            addr,
            live,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            runtime()?.block_on(async {
                match cluster {
                    Some(name) => regc::run_cluster(&kube, &name, live, timeout).await,
                    None => status::run(&addr, timeout).await,
                }
            })
        }
        Command::Workload(args) => runtime()?.block_on(workload_command::run(&kube, args)),
    }
}

fn report_command(
    source: &check::Source,
    output: &Path,
    events: Option<&Path>,
    key: Option<&str>,
    deadlines: &check::Deadlines,
) -> Result<ExitCode> {
    let history = check::load_history(source)?;
    let windows: Vec<report::Window> = match events {
        None => Vec::new(),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("{}: expected [{{\"name\",\"start\",\"end\"}}]", p.display())
            })?
        }
    };
    let report = check(&history, &deadlines.options());
    let title = format!("caplab report: {}", source.name());
    let html = report::render(&history, &report, &windows, key, &title);
    std::fs::write(output, html).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} ({})", output.display(), report.overall().label());
    Ok(ExitCode::SUCCESS)
}

/// The member a `kv` command talks to.
async fn kv_member(kube: &k8s::KubeArgs, to: &MemberArgs, timeout: Duration) -> Result<Member> {
    let Some(cluster) = &to.cluster else {
        let addr = to
            .addr
            .as_deref()
            .ok_or_else(|| anyhow!("give --addr or --cluster"))?;
        return Member::new(addr, timeout);
    };
    let (client, namespace) = k8s::connect(kube).await?;
    let pod = match to.member {
        Some(ordinal) => k8s::pod_name(cluster, ordinal),
        None => {
            let value = k8s::get_cluster(&client, &namespace, cluster).await?;
            let rc = regc::RegisterCluster::from_value(value).with_context(|| {
                format!("{namespace}/{cluster} does not look like a RegisterCluster")
            })?;
            rc.leader_pod()
                .map_or_else(|| k8s::pod_name(cluster, 0), str::to_string)
        }
    };
    Ok(Member::proxied(client, &namespace, &pod, timeout))
}

async fn kv_command(kube: &k8s::KubeArgs, op: KvOp) -> Result<ExitCode> {
    let timeout = Duration::from_secs(30);
    let (status, body) = match &op {
        KvOp::Get {
            key,
            to,
            consistency,
        } => {
            kv_member(kube, to, timeout)
                .await?
                .raw_read(key, consistency)
                .await
        }
        KvOp::Put { key, value, to } => {
            kv_member(kube, to, timeout)
                .await?
                .raw_write(key, *value)
                .await
        }
        KvOp::Cas {
            key,
            expected,
            new,
            to,
        } => {
            kv_member(kube, to, timeout)
                .await?
                .raw_cas(key, *expected, *new)
                .await
        }
    }
    .context("the request failed")?;
    let shown = if body == Value::Null {
        format!("HTTP {status}")
    } else {
        body.to_string()
    };
    if (200..300).contains(&status) {
        println!("{shown}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("HTTP {status}: {shown}");
        Ok(ExitCode::from(1))
    }
}
