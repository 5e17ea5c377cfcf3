//! The bench's subcommands beside the main comparison: `scaling` (how cost grows, issue 20)
//! and `plot-table` (throughput against clients from a report's table).

use std::path::{Path, PathBuf};

use anyhow::Context;
use caplab_api::client::Timeouts;

use crate::plots::{self, Chart};
use crate::{footprint, scaling};

#[derive(clap::Subcommand)]
pub enum Command {
    /// How cost grows with keys, members and time (memory next to etcd's); writes a Markdown
    /// report and SVG plots.
    Scaling(ScalingArgs),
    /// Plots throughput against clients per system from a `caplab-bench` Markdown table
    /// (`--out` of a run): `throughput-write.svg` and `throughput-read.svg`.
    PlotTable {
        /// The table (e.g. BENCHMARKS-table.md).
        table: PathBuf,
        /// Where the SVG files go.
        #[arg(long, default_value = "bench/plots")]
        plots: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct ScalingArgs {
    /// The caplab-node binary (build it with `cargo build --release -p caplab-node`).
    #[arg(long, default_value = "target/release/caplab-node")]
    node_bin: PathBuf,
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Keys loaded into a fresh 3-member Raft group each; `--keys` with no value skips.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "100,100000,1000000")]
    keys: Vec<u64>,
    /// Group sizes whose writes are measured; `--members` with no value skips.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "3,5,7")]
    members: Vec<u64>,
    /// Closed-loop clients of the members cells and the long runs.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds per members cell.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each members cell.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of writes in each long memory run (caplab, etcd); 0 skips them.
    #[arg(long, default_value_t = 180.0)]
    long_seconds: f64,
    /// Seconds of the caplab run with MALLOC_ARENA_MAX=2 (0 skips it).
    #[arg(long, default_value_t = 60.0)]
    arena_seconds: f64,
    /// HTTP/2 connections the etcd clients share per member.
    #[arg(long, default_value_t = 4)]
    etcd_conns: usize,
    /// Where the SVG plots go.
    #[arg(long, default_value = "bench/plots")]
    plots: PathBuf,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `command`, printing its report.
pub async fn run(
    command: &Command,
    http: &reqwest::Client,
    timeouts: Timeouts,
) -> anyhow::Result<()> {
    match command {
        Command::Scaling(args) => {
            std::fs::create_dir_all(&args.plots)
                .with_context(|| format!("creating {}", args.plots.display()))?;
            let md = run_scaling(args, http, timeouts).await?;
            print!("{md}");
            if let Some(out) = &args.out {
                std::fs::write(out, &md)?;
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
        Command::PlotTable { table, plots } => plot_table(table, plots),
    }
}

async fn run_scaling(
    args: &ScalingArgs,
    http: &reqwest::Client,
    timeouts: Timeouts,
) -> anyhow::Result<String> {
    let opts = scaling::Options {
        node_bin: args.node_bin.clone(),
        keys: args.keys.clone(),
        members: args.members.clone(),
        clients: args.clients,
        seconds: args.seconds,
        warmup: args.warmup,
        timeouts,
    };
    let mut md = format!(
        "Command: `caplab-bench {}`, {}\n\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let mut keys = Vec::new();
    for &k in &opts.keys {
        eprintln!("keys {k}: {}", load_average());
        match scaling::keys_row(&opts, http, k).await {
            Ok(row) => keys.push(row),
            Err(e) => md.push_str(&format!("- keys {k} failed: {e:#}\n")),
        }
    }
    let mut members = Vec::new();
    for &n in &opts.members {
        eprintln!("members {n}: {}", load_average());
        match scaling::members_row(&opts, http, n).await {
            Ok(row) => members.push(row),
            Err(e) => md.push_str(&format!("- {n} members failed: {e:#}\n")),
        }
    }
    scaling::plot(&args.plots, &keys, &members)?;
    md.push_str(&format!(
        "\n{}\n{}\n",
        scaling::keys_markdown(&keys),
        scaling::members_markdown(&members, opts.clients)
    ));
    let runs = memory_runs(args, http, timeouts, &mut md).await;
    if !runs.is_empty() {
        plots::write_svg(
            &args.plots.join("memory-long-run.svg"),
            &Chart {
                title: "Largest member's resident memory during a long run of writes",
                x_label: "seconds",
                y_label: "RSS MiB",
                log_x: false,
                series: footprint::series(&runs),
            },
        )?;
        md.push_str(&format!(
            "\n{}\n{}",
            footprint::markdown(&runs, args.long_seconds, args.clients),
            footprint::breakdown_markdown(&runs)
        ));
    }
    md.push_str(&format!("\nLoad at the end: {}\n", load_average()));
    Ok(md)
}

/// The long runs: caplab, caplab with MALLOC_ARENA_MAX=2, etcd (each skipped at 0 s).
async fn memory_runs(
    args: &ScalingArgs,
    http: &reqwest::Client,
    timeouts: Timeouts,
    md: &mut String,
) -> Vec<footprint::Footprint> {
    let mut runs = Vec::new();
    let arena = [("MALLOC_ARENA_MAX".to_string(), "2".to_string())];
    let caplab_runs: [(&[(String, String)], f64); 2] =
        [(&[], args.long_seconds), (&arena, args.arena_seconds)];
    for (env, seconds) in caplab_runs {
        if seconds <= 0.0 {
            continue;
        }
        eprintln!("long run, caplab {env:?}: {}", load_average());
        match footprint::caplab(&args.node_bin, http, timeouts, env, args.clients, seconds).await {
            Ok(f) => runs.push(f),
            Err(e) => md.push_str(&format!("- caplab long run {env:?} failed: {e:#}\n")),
        }
    }
    if args.long_seconds > 0.0 {
        eprintln!("long run, etcd: {}", load_average());
        match footprint::etcd(
            args.etcd_bin.as_deref(),
            args.etcd_conns,
            args.clients,
            args.long_seconds,
        )
        .await
        {
            Ok(f) => runs.push(f),
            Err(e) => md.push_str(&format!("- etcd long run failed: {e:#}\n")),
        }
    }
    runs
}

/// `/proc/loadavg`'s three averages, to note how busy the shared machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(", ")
            )
        })
        .unwrap_or_else(|_| "load average unknown".into())
}

fn plot_table(table: &Path, dir: &Path) -> anyhow::Result<()> {
    let markdown = std::fs::read_to_string(table)
        .with_context(|| format!("reading {} (a caplab-bench --out table)", table.display()))?;
    std::fs::create_dir_all(dir)?;
    for (operation, file) in [
        ("write", "throughput-write.svg"),
        ("linearizable read", "throughput-read.svg"),
    ] {
        let series = plots::throughput_from_table(&markdown, operation);
        anyhow::ensure!(
            !series.is_empty(),
            "{} has no `{operation}` rows: pass the table caplab-bench --out wrote",
            table.display()
        );
        let title = format!("{operation}: throughput against clients (3 members, loopback)");
        plots::write_svg(
            &dir.join(file),
            &Chart {
                title: &title,
                x_label: "clients (log scale)",
                y_label: "ops/s",
                log_x: true,
                series,
            },
        )?;
        eprintln!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
