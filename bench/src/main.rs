//! caplab-bench: the same closed-loop workload against a 3-member caplab cluster in each
//! replication mode and a 3-member etcd, all real processes on loopback with fsync on, plus
//! leader failover and replication lag; writes a Markdown report.
//!
//! `cargo build --release -p caplab-node -p caplab-bench && target/release/caplab-bench --out BENCHMARKS-table.md`

mod cluster;
mod commands;
mod disk_pressure;
mod failover;
mod footprint;
mod lag;
mod members;
mod memory;
mod plots;
mod report;
mod scaling;
mod workload;
mod writers;

use std::path::PathBuf;
use std::time::Duration;

use caplab_api::client::Timeouts;
use clap::Parser;

use cluster::{Caplab, Etcd};
use report::{FailoverRow, LagRow, Report, Row};
use workload::{Op, Target};

/// How long a caplab request may take: the HTTP client's 10 s, and 30 s for the init.
const REQUEST_TIMEOUTS: Timeouts = Timeouts {
    request: Duration::from_secs(10),
    blocking: Duration::from_secs(30),
};

#[derive(Parser)]
#[command(about = "Benchmark loopback caplab clusters side by side with etcd")]
struct Args {
    /// A run beside the comparison (`scaling`, `plot-table`); none: the comparison.
    #[command(subcommand)]
    command: Option<commands::Command>,
    /// The caplab-node binary (build it with `cargo build --release -p caplab-node`).
    #[arg(long, default_value = "target/release/caplab-node")]
    node_bin: PathBuf,
    /// The etcd binary (default: `etcd` on PATH; Debian package etcd-server).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Systems to measure: caplab replication modes and/or etcd.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raft,async,sync,2pc,quorum,quorum-r1w1,etcd"
    )]
    systems: Vec<String>,
    /// Concurrent clients per cell.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds before each cell is measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Distinct keys the clients spread over.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Failover trials per Raft system (caplab raft, etcd); 0 skips failover.
    #[arg(long, default_value_t = 5)]
    failover_trials: usize,
    /// HTTP/2 connections the etcd clients share per member (gRPC multiplexes on them).
    #[arg(long, default_value_t = 4)]
    etcd_conns: usize,
    /// caplab's clients speak HTTP/2 to the members (prior knowledge, many requests on each
    /// connection, as etcd's gRPC clients do); without it HTTP/1.1, one request per connection
    /// at a time. Members accept both. Applies to the subcommands too.
    #[arg(long)]
    http2: bool,
    /// Times the whole comparison is run, one system after another in each round; the table
    /// gives each cell's medians over the rounds and each round's caplab ÷ etcd ratio's median
    /// with its range. Failover is measured in the last round only. The comparison only (the
    /// subcommands run once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// Keep every caplab cluster's member logs (at INFO: elections, leader changes) and data
    /// under this directory, one subdirectory per cluster (printed when it starts), instead
    /// of a temporary directory deleted with the cluster.
    #[arg(long)]
    keep_member_logs: Option<PathBuf>,
    /// Keep the disk busy with a background writer for the whole comparison (see
    /// `disk_pressure.rs`): do disk stalls shared by every member depose leaders? The writer's
    /// file is in the `--keep-member-logs` directory if given, else the temporary directory
    /// (where the members' data is). etcd's data is always in the temporary directory: with
    /// `--keep-member-logs`, give a directory on the same file system, or etcd escapes the
    /// pressure.
    #[arg(long)]
    disk_pressure: bool,
    /// How often the replication lag is sampled during write cells, in milliseconds.
    #[arg(long, default_value_t = 50)]
    lag_interval_ms: u64,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A caplab cluster under measurement: its terms are compared before and after each cell (a
/// change is a leader change during the cell, noted), its replication lag sampled if asked.
#[derive(Clone, Copy)]
struct Members<'a> {
    cluster: &'a Caplab,
    sample_lag: bool,
}

async fn measure_cells(
    args: &Args,
    report: &mut Report,
    system: &str,
    target: &Target,
    caplab: Option<Members<'_>>,
) {
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.seconds);
    for op in Op::ALL {
        for &clients in &args.clients {
            let term_before = match caplab {
                Some(m) => m.cluster.highest_term().await,
                None => None,
            };
            let sampler = match (op, caplab) {
                (Op::Write, Some(m)) if m.sample_lag => m.cluster.leader().await.map(|l| {
                    lag::Sampler::start(
                        m.cluster.poller(l),
                        Duration::from_millis(args.lag_interval_ms),
                    )
                }),
                _ => None,
            };
            let cell = workload::run(target, op, clients, args.keys, warmup, measure).await;
            if let Some(s) = sampler {
                let samples = s.finish().await;
                report.lag.push(LagRow {
                    system: report.labelled(system),
                    clients,
                    samples,
                });
            }
            if let (Some(m), Some(before)) = (caplab, term_before) {
                if let Some(after) = m.cluster.highest_term().await.filter(|t| *t != before) {
                    report.notes.push(format!(
                        "{system}, {}, {clients} clients: the leader changed during the cell \
                         (term or epoch {before} → {after})",
                        op.name()
                    ));
                }
            }
            let row = Row::new(system, report.round, op, clients, &cell);
            eprintln!("{}", report.row_line(&row));
            if let Some(e) = &cell.first_error {
                report.notes.push(format!(
                    "{system}, {}, {clients} clients: {} errors, e.g. `{}`",
                    op.name(),
                    cell.errors,
                    e.chars().take(200).collect::<String>().replace('\n', " ")
                ));
            }
            report.rows.push(row);
        }
    }
}

async fn bench_caplab(
    args: &Args,
    report: &mut Report,
    http: &reqwest::Client,
    mode: &str,
) -> anyhow::Result<()> {
    let system = format!("caplab {mode}");
    eprintln!("starting a 3-member caplab cluster ({mode})");
    let keep = args.keep_member_logs.as_deref();
    let mut cluster = Caplab::start(&args.node_bin, mode, http, REQUEST_TIMEOUTS, keep).await?;
    let target = Target::Caplab {
        cluster: cluster.client()?,
    };
    let members = Members {
        cluster: &cluster,
        // 2pc keeps no replication log (a participant is either current or holds a
        // transaction in doubt): there is no lag to sample.
        sample_lag: mode != "2pc",
    };
    measure_cells(args, report, &system, &target, Some(members)).await;
    if mode == "raft" {
        let target = failover::Target::Caplab(&mut cluster);
        failover_trials(args, report, &system, target).await;
    }
    Ok(())
}

/// `--failover-trials` trials against one system, as one row of the failover table.
async fn failover_trials(
    args: &Args,
    report: &mut Report,
    system: &str,
    mut target: failover::Target<'_>,
) {
    if args.failover_trials == 0 || report.round < report.rounds {
        return;
    }
    let mut row = FailoverRow {
        system: system.to_string(),
        trials: vec![],
        failed: 0,
    };
    for t in 1..=args.failover_trials {
        match target.trial().await {
            Ok(trial) => {
                eprintln!(
                    "{system} failover trial {t}: {:?} ({} probes)",
                    trial.to_first_write, trial.probes
                );
                row.trials.push(trial.to_first_write);
            }
            Err(e) => {
                let note = format!("{system} failover trial {t} failed: {e:#}");
                eprintln!("{note}");
                report.notes.push(note);
                row.failed += 1;
            }
        }
    }
    report.failover.push(row);
}

async fn bench_etcd(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let bin = match cluster::find_etcd(args.etcd_bin.as_deref()) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipping etcd: {why}");
            report.notes.push(format!(
                "etcd was not measured: {why}. The caplab/etcd ratios are therefore empty."
            ));
            return Ok(());
        }
    };
    eprintln!("starting a 3-member etcd ({})", bin.display());
    let mut cluster = Etcd::start(&bin).await?;
    let mut kv = Vec::new();
    for _ in 0..args.etcd_conns.max(1) {
        for m in 0..cluster.endpoints.len() {
            kv.push(
                cluster
                    .connect(m, Duration::from_secs(10))
                    .await?
                    .kv_client(),
            );
        }
    }
    measure_cells(args, report, "etcd", &Target::Etcd { kv }, None).await;
    failover_trials(args, report, "etcd", failover::Target::Etcd(&mut cluster)).await;
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores, {mem_gib:.0} GiB memory")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = reqwest::Client::builder();
    if args.http2 {
        builder = builder.http2_prior_knowledge();
    }
    let http = builder
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    if let Some(command) = &args.command {
        return commands::run(command, &http, REQUEST_TIMEOUTS).await;
    }
    let mut report = Report {
        header: vec![
            format!(
                "Command: `caplab-bench {}`",
                std::env::args().skip(1).collect::<Vec<_>>().join(" ")
            ),
            String::new(),
            format!(
                "Run {} on {}; {} s measured per cell after {} s warm-up, {} keys, 3 members each on \
                 loopback, fsync on.",
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
                machine(),
                args.seconds,
                args.warmup,
                args.keys
            ),
        ],
        rounds: args.rounds as usize,
        ..Report::default()
    };
    if args.rounds > 1 {
        report.header.push(format!(
            "{} rounds, every system once per round: each cell gives the medians over the rounds \
             (max: the worst; errors: all rounds' together), and \"ops/s ÷ etcd\" the median of each round's ratio to that round's \
             etcd cell with the range in brackets. Failover: last round only.",
            args.rounds
        ));
    }
    if args.http2 {
        report
            .header
            .push("caplab's clients spoke HTTP/2 (prior knowledge) to the members.".into());
    }
    let pressure = if args.disk_pressure {
        report.header.push(
            "A background writer kept the disk busy throughout (`--disk-pressure`: 800 MiB \
             written and synced in a loop)."
                .into(),
        );
        let dir = args
            .keep_member_logs
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        Some(disk_pressure::DiskPressure::start(&dir)?)
    } else {
        None
    };
    for round in 1..=report.rounds {
        report.round = round;
        if report.rounds > 1 {
            eprintln!("round {round} of {}", report.rounds);
        }
        run_round(&args, &mut report, &http).await;
    }
    if let Some(Err(why)) = pressure.map(disk_pressure::DiskPressure::stop) {
        report.header.push(format!(
            "**The disk-pressure writer stopped early** ({why}): the run was not under \
             pressure throughout."
        ));
    }
    let markdown = report.markdown();
    print!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Every system of `--systems`, one after another.
async fn run_round(args: &Args, report: &mut Report, http: &reqwest::Client) {
    for system in &args.systems {
        let result = match system.as_str() {
            "etcd" => bench_etcd(args, report).await,
            // Leaderless quorum: R = W = 2 of 3 (overlapping), and R = W = 1.
            mode @ ("raft" | "async" | "sync" | "2pc" | "quorum" | "quorum-r1w1") => {
                bench_caplab(args, report, http, mode).await
            }
            other => Err(anyhow::anyhow!(
                "unknown system {other:?}: use raft, async, sync, 2pc, quorum, quorum-r1w1 or etcd"
            )),
        };
        if let Err(e) = result {
            eprintln!("{system}: {e:#}");
            report.notes.push(format!("{system} failed: {e:#}"));
        }
    }
}
