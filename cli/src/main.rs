//! `caplab`: register operations against members, workloads that record histories,
//! linearizability checks and HTML reports.

mod client;
mod faults;
mod k8s;
mod regc;
mod report;
mod status;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use caplab_checker::{check, CheckOptions, History, Overall, Verdict};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio::sync::watch;

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
    Workload(WorkloadArgs),
    /// Check a history for linearizability. Exit 0: linearizable, 1: not, 2: unknown or bad input.
    Check {
        history: PathBuf,
        /// Give up on a key after this many seconds (the key's verdict is then "unknown").
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
        /// Print the full report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Render a self-contained HTML report (timeline, violations) of a history.
    Report {
        history: PathBuf,
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
        /// Fault windows to shade: a JSON array of {"name", "start", "end"} in ns from the start.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Show only this key's operations in the timeline.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
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

#[derive(clap::Args)]
struct WorkloadArgs {
    /// Client addresses of the members, host:port, comma separated.
    #[arg(
        long,
        env = "CAPLAB_ADDR",
        value_delimiter = ',',
        required_unless_present = "cluster"
    )]
    addr: Vec<String>,
    /// A RegisterCluster: without --addr, clients reach its members through the Kubernetes
    /// API server's pod proxy; fault schedules edit its spec.faults.
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER")]
    cluster: Option<String>,
    /// Inject a fault during the run: START:FAULT[:DURATION], e.g. 10s:partition-leader:20s.
    /// FAULT is KIND-TARGET[=VALUE]: partition, crash, pause, delay (=ms), loss (=probability)
    /// or skew (=ms) of leader, followers or a member ordinal. Repeatable; needs --cluster.
    #[arg(
        long = "fault-at",
        value_name = "START:FAULT[:DURATION]",
        requires = "cluster"
    )]
    fault_at: Vec<String>,
    /// A YAML fault schedule: a list of {at: 10s, duration: 20s, fault: partition-leader}
    /// where fault may also be a spec.faults entry such as {kind: crash, targets: [leader]}.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    faults: Option<PathBuf>,
    /// Where to write the fault windows for `caplab report --events`
    /// (default: next to --out, e.g. history.events.json).
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Concurrent clients (one process each in the history).
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Number of keys (k0, k1, …).
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Relative weights of the operations.
    #[arg(long, default_value = "read=50,write=30,cas=20")]
    mix: workload::Mix,
    /// Operations per second over all clients; 0 for as fast as the members answer.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds to run (Ctrl-C stops early and still writes the history).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Consistency of reads.
    #[arg(long, default_value = "linearizable", value_parser = ["linearizable", "local"])]
    consistency: String,
    /// Client-side deadline of one request; past it the outcome is unknown.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[arg(long, default_value = "history.json")]
    out: PathBuf,
    /// Client i always talks to member i mod n; by default a client moves to the next member
    /// after a failed or unknown operation.
    #[arg(long)]
    sticky: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caplab: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
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
        Command::Check {
            history,
            timeout_secs,
            json,
        } => check_command(&history, timeout_secs, json),
        Command::Report {
            history,
            output,
            events,
            key,
            timeout_secs,
        } => report_command(
            &history,
            &output,
            events.as_deref(),
            key.as_deref(),
            timeout_secs,
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
                    Some(name) => status::run_cluster(&kube, &name, live, timeout).await,
                    None => status::run(&addr, timeout).await,
                }
            })
        }
        Command::Workload(args) => runtime()?.block_on(workload_command(&kube, args)),
    }
}

fn load_history(path: &Path) -> Result<History> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    History::from_json(&text).with_context(|| format!("{} is not a valid history", path.display()))
}

fn options(timeout_secs: f64) -> Result<CheckOptions> {
    let timeout = Duration::try_from_secs_f64(timeout_secs)
        .map_err(|_| anyhow!("--timeout-secs must be a non-negative number of seconds"))?;
    Ok(CheckOptions {
        per_key_timeout: Some(timeout),
        threads: 0,
    })
}

fn exit_for(overall: Overall) -> ExitCode {
    match overall {
        Overall::Linearizable => ExitCode::SUCCESS,
        Overall::NotLinearizable => ExitCode::from(1),
        Overall::Unknown => ExitCode::from(2),
    }
}

fn check_command(path: &Path, timeout_secs: f64, json: bool) -> Result<ExitCode> {
    let history = load_history(path)?;
    let report = check(&history, &options(timeout_secs)?);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
        return Ok(exit_for(report.overall()));
    }
    let width = report
        .keys
        .iter()
        .map(|k| k.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "{:<width$}  {:>10}  {:>9}  VERDICT",
        "KEY", "OPERATIONS", "TIME"
    );
    for k in &report.keys {
        println!(
            "{:<width$}  {:>10}  {:>7.1}ms  {}",
            k.key,
            k.operations,
            k.elapsed_ms,
            k.verdict.name()
        );
    }
    for k in &report.keys {
        match &k.verdict {
            Verdict::NotLinearizable(v) => {
                println!("\nkey {}: not linearizable.", k.key);
                println!(
                    "  after ordering {} operations (value {}), this completed operation cannot be placed:",
                    v.linearized, v.last_state
                );
                if let Some(e) = history.entries.get(v.stuck) {
                    println!("    #{} {}", v.stuck, describe(e));
                }
                if !v.concurrent.is_empty() {
                    println!("  nor any pending one:");
                    for &i in &v.concurrent {
                        if let Some(e) = history.entries.get(i) {
                            println!("    #{i} {}", describe(e));
                        }
                    }
                }
            }
            Verdict::Unknown { reason } => println!("\nkey {}: unknown: {reason}", k.key),
            Verdict::Linearizable => {}
        }
    }
    let overall = report.overall();
    println!(
        "\n{}",
        match overall {
            Overall::Linearizable => "linearizable",
            Overall::NotLinearizable => "NOT linearizable",
            Overall::Unknown => "unknown",
        }
    );
    Ok(exit_for(overall))
}

fn describe(e: &caplab_checker::Entry) -> String {
    format!(
        "process {} {} {} {:?} invoked {:.3}ms completed {}",
        e.process,
        e.key,
        e.op.label(),
        e.status,
        e.invoke as f64 / 1e6,
        e.complete.map_or_else(
            || "never".to_string(),
            |c| format!("{:.3}ms", c as f64 / 1e6)
        )
    )
}

fn report_command(
    path: &Path,
    output: &Path,
    events: Option<&Path>,
    key: Option<&str>,
    timeout_secs: f64,
) -> Result<ExitCode> {
    let history = load_history(path)?;
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
    let report = check(&history, &options(timeout_secs)?);
    let title = format!("caplab report: {}", path.display());
    let html = report::render(&history, &report, &windows, key, &title);
    std::fs::write(output, html).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "wrote {} ({})",
        output.display(),
        match report.overall() {
            Overall::Linearizable => "linearizable",
            Overall::NotLinearizable => "NOT linearizable",
            Overall::Unknown => "unknown",
        }
    );
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

/// `history.json` → `history.events.json`.
fn default_events_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.events.json"))
}

async fn workload_command(kube: &k8s::KubeArgs, args: WorkloadArgs) -> Result<ExitCode> {
    let duration = Duration::try_from_secs_f64(args.duration)
        .map_err(|_| anyhow!("--duration must be a non-negative number of seconds"))?;
    let request_timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut schedule = args
        .fault_at
        .iter()
        .map(|s| faults::parse_fault_at(s))
        .collect::<Result<Vec<_>>>()?;
    if let Some(path) = &args.faults {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        schedule.extend(
            faults::parse_schedule(&text)
                .with_context(|| format!("{} is not a fault schedule", path.display()))?,
        );
    }
    for s in &schedule {
        if s.at >= duration {
            eprintln!(
                "note: fault {} at {:?} starts after the workload's {duration:?}; it is skipped",
                s.label, s.at
            );
        }
    }
    let mut fault_target = None;
    let targets = match &args.cluster {
        Some(name) => {
            let (client, namespace) = k8s::connect(kube).await?;
            let value = k8s::get_cluster(&client, &namespace, name).await?;
            let rc = regc::RegisterCluster::from_value(value).with_context(|| {
                format!("{namespace}/{name} does not look like a RegisterCluster")
            })?;
            let targets = if args.addr.is_empty() {
                let replicas = rc.replicas();
                if replicas == 0 {
                    bail!("{namespace}/{name} has no members (spec.replicas is 0 or missing)");
                }
                workload::Targets::Members(
                    (0..replicas)
                        .map(|o| {
                            Member::proxied(
                                client.clone(),
                                &namespace,
                                &k8s::pod_name(name, o),
                                request_timeout,
                            )
                        })
                        .collect(),
                )
            } else {
                workload::Targets::Addrs(args.addr.clone())
            };
            fault_target = Some(faults::Target {
                client,
                namespace,
                name: name.clone(),
            });
            targets
        }
        None => workload::Targets::Addrs(args.addr.clone()),
    };
    let start = Instant::now();
    let config = workload::Config {
        targets,
        start,
        clients: args.clients,
        keys: args.keys,
        mix: args.mix,
        rate: args.rate,
        duration,
        seed: args.seed,
        consistency: args.consistency,
        request_timeout,
        progress: !args.quiet,
        sticky: args.sticky,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: waiting for operations in flight");
            let _ = stop_tx.send(true);
        }
        // Keep the sender alive until the end so receivers never see it closed.
        std::future::pending::<()>().await;
    });
    let injector = match (fault_target, schedule.is_empty()) {
        (Some(target), false) => {
            let stop = stop_rx.clone();
            let run_id = faults::run_id();
            Some(tokio::spawn(async move {
                faults::run(&target, &schedule, &run_id, start, duration, stop).await
            }))
        }
        _ => None,
    };
    let history = workload::run(config, stop_rx).await;
    // The injector heals what is left once the workload's time is up (or it was stopped).
    let windows = match injector {
        Some(task) => Some(
            task.await
                .map_err(|e| anyhow!("the fault injector failed: {e}"))?,
        ),
        None => None,
    };
    ctrl_c.abort();
    let history = history?;
    std::fs::write(&args.out, history.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut report_hint = format!("caplab report {}", args.out.display());
    if let Some(windows) = windows {
        let path = args
            .events
            .clone()
            .unwrap_or_else(|| default_events_path(&args.out));
        let json = serde_json::to_string_pretty(&windows).context("serialising the events")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} fault windows to {}",
            windows.len(),
            path.display()
        );
        report_hint.push_str(&format!(" --events {}", path.display()));
    }
    eprintln!(
        "wrote {} operations to {}; check it with: caplab check {} (or {report_hint})",
        history.entries.len(),
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
