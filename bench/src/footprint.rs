//! Memory per member at rest, under a long run of writes, and after a restart, next to etcd's;
//! where a loaded caplab member's memory lies (malloc's main heap, its other arenas, the rest),
//! and the same run with `MALLOC_ARENA_MAX=2` to tell the allocator's share from the data's.

use std::path::Path;
use std::time::{Duration, Instant};

use caplab_api::client::Timeouts;

use crate::cluster::{self, Etcd};
use crate::members::Group;
use crate::memory::{self, Memory};
use crate::plots::Series;
use crate::writers::{self, Sink};

/// How often the resident sets are sampled during a long run.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One system's memory over a run.
pub struct Footprint {
    pub system: String,
    /// Every member's memory before any write.
    pub idle: Vec<Memory>,
    /// (seconds into the run, largest member's RSS MiB) every [`SAMPLE_EVERY`].
    pub samples: Vec<(f64, f64)>,
    /// Writes acknowledged during the run, and per second.
    pub writes: usize,
    pub ops_per_s: f64,
    /// Every member's memory after the run, at rest.
    pub after: Vec<Memory>,
    /// caplab: the members' memory after the run once malloc returned its free pages
    /// (`malloc_trim(0)`; `None` when that failed, e.g. without gdb).
    pub trimmed: Option<Vec<Memory>>,
    /// caplab: a follower's memory after it was restarted on its data.
    pub restarted: Option<Memory>,
}

/// A long run against a 3-member caplab Raft group (`env` for every member, e.g. malloc's).
pub async fn caplab(
    bin: &Path,
    http: &reqwest::Client,
    timeouts: Timeouts,
    env: &[(String, String)],
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Footprint> {
    let mut group = Group::start(bin, 3, &[], env, http, timeouts).await?;
    let pids = (0..3)
        .map(|i| group.pid(i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let leader = group.leader().await?;
    let sink = Sink::Caplab(group.members[leader].client.clone());
    let system = match env.first() {
        Some((k, v)) => format!("caplab raft, {k}={v}"),
        None => "caplab raft".to_string(),
    };
    let mut footprint = long_run(system, &pids, sink, clients, seconds).await?;
    footprint.trimmed = trimmed(&pids);
    let follower = (leader + 1) % 3;
    group.restart(follower).await?;
    footprint.restarted = Some(memory::read(group.pid(follower)?)?);
    Ok(footprint)
}

/// The same long run against a 3-member etcd.
pub async fn etcd(
    etcd_bin: Option<&Path>,
    conns: usize,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Footprint> {
    let bin = cluster::find_etcd(etcd_bin).map_err(anyhow::Error::msg)?;
    let etcd = Etcd::start(&bin).await?;
    let mut pids = Vec::new();
    let mut kv = Vec::new();
    for (m, endpoint) in etcd.endpoints.iter().enumerate() {
        pids.push(
            memory::pid_with_args(&["--listen-client-urls", endpoint])
                .ok_or_else(|| anyhow::anyhow!("no etcd process serves {endpoint}"))?,
        );
        for _ in 0..conns.max(1) {
            kv.push(etcd.connect(m, Duration::from_secs(10)).await?.kv_client());
        }
    }
    long_run("etcd".into(), &pids, Sink::Etcd(kv), clients, seconds).await
}

/// Writes for `seconds` with `clients` clients while sampling the members' memory.
async fn long_run(
    system: String,
    pids: &[u32],
    sink: Sink,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Footprint> {
    let idle = read_all(pids)?;
    let run = tokio::spawn(async move {
        writers::run(
            &sink,
            clients,
            Duration::ZERO,
            Duration::from_secs_f64(seconds),
        )
        .await
    });
    let started = Instant::now();
    let mut samples = Vec::new();
    while !run.is_finished() {
        let largest = read_all(pids)?
            .iter()
            .map(Memory::rss_mib)
            .fold(0.0, f64::max);
        samples.push((started.elapsed().as_secs_f64(), largest));
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let cell = run.await?;
    // At rest: give the members a moment to finish what the last writes started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Footprint {
        system,
        idle,
        samples,
        writes: cell.ok,
        ops_per_s: cell.per_second(),
        after: read_all(pids)?,
        trimmed: None,
        restarted: None,
    })
}

/// Every member's memory after `malloc_trim(0)`, or `None` when a trim failed (said on stderr).
fn trimmed(pids: &[u32]) -> Option<Vec<Memory>> {
    for &pid in pids {
        if let Err(e) = memory::trim(pid) {
            eprintln!("{e}");
            return None;
        }
    }
    read_all(pids).ok()
}

fn read_all(pids: &[u32]) -> anyhow::Result<Vec<Memory>> {
    pids.iter()
        .map(|&p| memory::read(p).map_err(anyhow::Error::from))
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The footprint table: idle, after the run and restarted, per system, in Markdown.
pub fn markdown(runs: &[Footprint], seconds: f64, clients: usize) -> String {
    let mut md = format!(
        "| system | writes in {seconds:.0} s ({clients} clients) | RSS MiB idle (per member) | RSS MiB after the run (per member) | largest RSS during the run, first → last sample | a follower restarted on its data |\n|---|---:|---|---|---|---:|\n"
    );
    for f in runs {
        let list = |m: &[Memory]| {
            m.iter()
                .map(|x| format!("{:.1}", x.rss_mib()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let trend = match (f.samples.first(), f.samples.last()) {
            (Some(a), Some(b)) => format!("{:.1} → {:.1}", a.1, b.1),
            _ => "–".into(),
        };
        md.push_str(&format!(
            "| {} | {} ({:.0}/s) | {} | {} | {} | {} |\n",
            f.system,
            f.writes,
            f.ops_per_s,
            list(&f.idle),
            list(&f.after),
            trend,
            f.restarted
                .map_or("–".into(), |m| format!("{:.1}", m.rss_mib())),
        ));
    }
    md
}

/// Where each caplab member's memory lies after the run and after a restart, in Markdown.
pub fn breakdown_markdown(runs: &[Footprint]) -> String {
    let mut md = String::from(
        "| system | member | RSS MiB | malloc main heap | other malloc arenas (count) | other anonymous | file-backed |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for f in runs.iter().filter(|f| f.restarted.is_some()) {
        let rows = f
            .after
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("member {} after the run", i + 1), m))
            .chain(
                f.trimmed
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, m)| (format!("member {} after malloc_trim(0)", i + 1), m)),
            )
            .chain(
                f.restarted
                    .iter()
                    .map(|m| ("a follower restarted".to_string(), m)),
            );
        for (what, m) in rows {
            md.push_str(&format!(
                "| {} | {what} | {:.1} | {:.1} | {:.1} ({}) | {:.1} | {:.1} |\n",
                f.system,
                m.rss_mib(),
                mib(m.heap_kib),
                mib(m.arenas_kib),
                m.arenas,
                mib(m.other_anon_kib),
                mib(m.file_kib),
            ));
        }
    }
    md
}

/// The long runs' samples as plot lines.
pub fn series(runs: &[Footprint]) -> Vec<Series> {
    runs.iter()
        .map(|f| Series {
            name: f.system.clone(),
            points: f.samples.clone(),
        })
        .collect()
}
