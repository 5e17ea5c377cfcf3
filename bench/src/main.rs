//! caplab-bench: starts a 3-member caplab cluster on loopback (real processes, fsync on) and
//! drives it with N closed-loop clients per operation, printing a Markdown table.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Benchmark a loopback caplab cluster")]
struct Args {
    /// The caplab-node binary (build it with `cargo build --release -p caplab-node`).
    #[arg(long, default_value = "target/release/caplab-node")]
    node_bin: PathBuf,
    /// Concurrent clients per cell.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Measured seconds per cell (after a warm-up of a quarter of it).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Replication modes to measure, each on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_value = "raft,async,sync")]
    modes: Vec<String>,
    /// Distinct keys the clients spread over.
    #[arg(long, default_value_t = 100)]
    keys: usize,
}

#[derive(Clone, Copy)]
enum Op {
    Write,
    LinearizableRead,
    LocalRead,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::LinearizableRead => "read (linearizable)",
            Op::LocalRead => "read (local)",
        }
    }
}

struct Members {
    children: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_cluster(
    bin: &PathBuf,
    mode: &str,
    http: &reqwest::Client,
) -> anyhow::Result<Members> {
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p caplab-node`",
            bin.display()
        );
    }
    let mut members = Members {
        children: Vec::new(),
        clients: Vec::new(),
        _dir: tempfile::tempdir()?,
    };
    let mut peers = serde_json::Map::new();
    for id in 1..=3u64 {
        let client = format!("127.0.0.1:{}", free_port()?);
        let peer = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(bin)
            .args([
                "--id",
                &id.to_string(),
                "--client-listen",
                &client,
                "--peer-listen",
                &peer,
            ])
            .arg("--data-dir")
            .arg(members._dir.path().join(id.to_string()))
            .args(["--replication", mode])
            .env("CAPLAB_ADMIN_TOKEN", "bench")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting caplab-node")?;
        members.children.push(child);
        members.clients.push(client);
        peers.insert(id.to_string(), json!(peer));
    }
    let first_peer = peers
        .get("1")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let init = http
            .post(format!("http://{first_peer}/v1/admin/init"))
            .bearer_auth("bench")
            .json(&json!({ "members": peers }))
            .send()
            .await;
        let ready = http
            .get(format!("http://{}/readyz", members.clients[0]))
            .send()
            .await;
        if init.is_ok_and(|r| r.status().is_success())
            && ready.is_ok_and(|r| r.status().is_success())
        {
            return Ok(members);
        }
        if Instant::now() > deadline {
            bail!("the cluster did not form within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Cell {
    ops: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn run_cell(
    http: &reqwest::Client,
    members: &Members,
    op: Op,
    clients: usize,
    measure: Duration,
    keys: usize,
) -> Cell {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let addr = members.clients[c % members.clients.len()].clone();
        let (recording, stop) = (recording.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", i % keys);
                i += clients;
                let started = Instant::now();
                let request = match op {
                    Op::Write => http
                        .put(format!("http://{addr}/v1/kv/{key}"))
                        .json(&json!({ "value": i })),
                    Op::LinearizableRead => http.get(format!("http://{addr}/v1/kv/{key}")),
                    Op::LocalRead => {
                        http.get(format!("http://{addr}/v1/kv/{key}?consistency=local"))
                    }
                };
                let success = request.send().await.is_ok_and(|r| r.status().is_success());
                if recording.load(Ordering::Relaxed) {
                    if success {
                        ok += 1;
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, latencies)
        }));
    }
    tokio::time::sleep(measure / 4).await; // warm-up
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut cell = Cell {
        ops: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed,
    };
    for t in tasks {
        if let Ok((ok, errors, latencies)) = t.await {
            cell.ops += ok;
            cell.errors += errors;
            cell.latencies.extend(latencies);
        }
    }
    cell.latencies.sort();
    cell
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(10))
        .build()?;
    println!("| mode | operation | clients | ops/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for mode in &args.modes {
        let members = start_cluster(&args.node_bin, mode, &http).await?;
        for op in [Op::Write, Op::LinearizableRead, Op::LocalRead] {
            for &clients in &args.clients {
                let measure = Duration::from_secs(args.seconds);
                let cell = run_cell(&http, &members, op, clients, measure, args.keys).await;
                println!(
                    "| {mode} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                    op.name(),
                    clients,
                    cell.ops as f64 / cell.elapsed.as_secs_f64(),
                    percentile(&cell.latencies, 0.50),
                    percentile(&cell.latencies, 0.99),
                    percentile(&cell.latencies, 1.0),
                    cell.errors
                );
            }
        }
    }
    Ok(())
}
