//! How cost grows (issue 20): with the keys a Raft group holds (member memory, snapshot size
//! and time, restart recovery, a new member's catch-up) and with the members in the group
//! (write throughput and latency).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use caplab_api::client::Timeouts;

use crate::members::Group;
use crate::plots::{Chart, Series};
use crate::writers::{self, Sink};
use crate::{memory, plots};

/// Concurrent writers that load the keys (all at the leader: loading is setup, not measured
/// for speed).
const LOADERS: usize = 64;

/// How long a new member may take to catch up before the row says it did not.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

/// Attempts per loaded key before the loader gives it up.
const RETRIES: usize = 100;

/// What a scaling run measures.
pub struct Options {
    pub node_bin: PathBuf,
    /// Keys to load, one group each (e.g. 100, 100000, 1000000).
    pub keys: Vec<u64>,
    /// Group sizes for the members run (e.g. 3, 5, 7).
    pub members: Vec<u64>,
    /// Closed-loop clients of the members run.
    pub clients: usize,
    /// Measured seconds per members cell (after `warmup`).
    pub seconds: f64,
    pub warmup: f64,
    pub timeouts: Timeouts,
}

/// One group loaded with `keys` keys.
pub struct KeysRow {
    pub keys: u64,
    pub load: Duration,
    pub load_errors: usize,
    /// The largest member's resident set once loaded and snapshotted, MiB.
    pub rss_mib: f64,
    pub snapshot_bytes: u64,
    /// From the last write's acknowledgement to the leader's snapshot covering it (includes
    /// up to 250 ms until the member's snapshot check runs).
    pub snapshot: Duration,
    /// Of which writing and fsyncing the file (its creation to its rename).
    pub snapshot_write: Duration,
    /// A follower SIGKILLed and restarted on its data, until it applied the committed log.
    pub restart: Duration,
    pub restarted_rss_mib: f64,
    /// A new member added, until it applied the committed log (snapshot install + log), or
    /// why it did not within [`CATCH_UP_PATIENCE`].
    pub catch_up: Result<Duration, String>,
    pub new_member_rss_mib: f64,
}

/// Writes at `clients` clients against a group of `members`.
pub struct MembersRow {
    pub members: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

/// Loads `keys` keys into a fresh 3-member group and measures it.
pub async fn keys_row(
    opts: &Options,
    http: &reqwest::Client,
    keys: u64,
) -> anyhow::Result<KeysRow> {
    // One snapshot exactly when the load completes: its size and time are those of `keys`
    // keys (the default, a snapshot every 10,000 writes, would leave one of fewer).
    let flags = vec!["--snapshot-logs".to_string(), keys.to_string()];
    let mut group = Group::start(&opts.node_bin, 3, &flags, &[], http, opts.timeouts).await?;
    let leader = group.leader().await?;
    let started = Instant::now();
    let load_errors = load(&group, leader, keys).await;
    let load_time = started.elapsed();
    let acked = Instant::now();
    let target = group
        .status(leader)
        .await
        .map(|s| s.engine.commit_index)
        .context("the leader does not answer after the load")?;
    wait_snapshot(&group, leader, target).await?;
    let snapshot = acked.elapsed();
    let (snapshot_bytes, snapshot_write) = snapshot_file(&group.data_dir(leader))?;
    let mut rss_mib = 0.0_f64;
    for i in 0..group.members.len() {
        rss_mib = rss_mib.max(memory::read(group.pid(i)?)?.rss_mib());
    }
    let follower = (leader + 1) % group.members.len();
    let restart = group.restart(follower).await?;
    let restarted_rss_mib = memory::read(group.pid(follower)?)?.rss_mib();
    let catch_up = group
        .add_member(CATCH_UP_PATIENCE)
        .await
        .map_err(|e| format!("{e:#}"));
    let new_member_rss_mib = memory::read(group.pid(group.members.len() - 1)?)?.rss_mib();
    Ok(KeysRow {
        keys,
        load: load_time,
        load_errors,
        rss_mib,
        snapshot_bytes,
        snapshot,
        snapshot_write,
        restart,
        restarted_rss_mib,
        catch_up,
        new_member_rss_mib,
    })
}

/// Writes keys `k0..k{keys}` once each through the leader with [`LOADERS`] writers (a failed
/// write is retried); returns how many attempts failed.
async fn load(group: &Group, leader: usize, keys: u64) -> usize {
    let client = Arc::new(group.members[leader].client.clone());
    let mut tasks = Vec::new();
    for w in 0..LOADERS as u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for k in (w..keys).step_by(LOADERS) {
                let value = i64::try_from(k).unwrap_or(i64::MAX);
                // Retried until acknowledged: the member snapshots once it applied `keys`
                // writes, so every one must land (a retried unknown one may land twice).
                for _ in 0..RETRIES {
                    if client.write(&format!("k{k}"), value).await.is_ok() {
                        break;
                    }
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(0);
    }
    errors
}

/// Waits until member `index`'s snapshot covers log index `target`.
async fn wait_snapshot(group: &Group, index: usize, target: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(s) = group.status(index).await {
            if s.engine.snapshot_index >= target {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot covering index {target} within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The size of the member's `snapshot.json` under `dir`, and how long writing it took: from
/// the file's creation (as `snapshot.json.tmp`, its birth time) to its rename (its change
/// time).
fn snapshot_file(dir: &Path) -> anyhow::Result<(u64, Duration)> {
    use std::os::unix::fs::MetadataExt;
    let path = find_file(dir, "snapshot.json")
        .with_context(|| format!("no snapshot.json under {}", dir.display()))?;
    let meta = std::fs::metadata(&path)?;
    let born = meta
        .created()
        .context("the file system keeps no birth time (statx)")?;
    let changed = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
    Ok((meta.len(), changed.duration_since(born).unwrap_or_default()))
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Closed-loop writes at the leader of a fresh group of `n` members.
pub async fn members_row(
    opts: &Options,
    http: &reqwest::Client,
    n: u64,
) -> anyhow::Result<MembersRow> {
    let group = Group::start(&opts.node_bin, n, &[], &[], http, opts.timeouts).await?;
    let leader = group.leader().await?;
    let sink = Sink::Caplab(group.members[leader].client.clone());
    let writes = writers::run(
        &sink,
        opts.clients,
        Duration::from_secs_f64(opts.warmup),
        Duration::from_secs_f64(opts.seconds),
    )
    .await;
    Ok(MembersRow {
        members: n,
        ops_per_s: writes.per_second(),
        p50_ms: writes.percentile_ms(0.5),
        p99_ms: writes.percentile_ms(0.99),
        errors: writes.errors,
    })
}

/// The keys table in Markdown.
pub fn keys_markdown(rows: &[KeysRow]) -> String {
    let mut md = String::from(
        "| keys | load s (failed attempts, retried) | RSS MiB, largest member | snapshot MiB | snapshot s (of which write+fsync ms) | restart recovery s | RSS MiB restarted | new member catch-up s | RSS MiB new member |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.1} ({}) | {:.1} | {:.2} | {:.2} ({:.1}) | {:.2} | {:.1} | {} | {:.1} |\n",
            r.keys,
            r.load.as_secs_f64(),
            r.load_errors,
            r.rss_mib,
            r.snapshot_bytes as f64 / 1048576.0,
            r.snapshot.as_secs_f64(),
            r.snapshot_write.as_secs_f64() * 1000.0,
            r.restart.as_secs_f64(),
            r.restarted_rss_mib,
            r.catch_up.as_ref().map_or_else(
                |e| format!("none: {e}"),
                |d| format!("{:.2}", d.as_secs_f64())
            ),
            r.new_member_rss_mib,
        ));
    }
    md
}

/// The members table in Markdown.
pub fn members_markdown(rows: &[MembersRow], clients: usize) -> String {
    let mut md = format!(
        "| members | write ops/s ({clients} clients) | p50 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |\n",
            r.members, r.ops_per_s, r.p50_ms, r.p99_ms, r.errors
        ));
    }
    md
}

/// `keys-memory.svg`, `keys-time.svg` and `members.svg` in `dir`.
pub fn plot(dir: &Path, keys: &[KeysRow], members: &[MembersRow]) -> anyhow::Result<()> {
    let line = |name: &str, f: &dyn Fn(&KeysRow) -> f64| Series {
        name: name.to_string(),
        points: keys.iter().map(|r| (r.keys as f64, f(r))).collect(),
    };
    if !keys.is_empty() {
        plots::write_svg(
            &dir.join("keys-memory.svg"),
            &Chart {
                title: "Raft member memory against keys (3 members)",
                x_label: "keys (log scale)",
                y_label: "RSS MiB",
                log_x: true,
                series: vec![
                    line("loaded (largest member)", &|r| r.rss_mib),
                    line("restarted on its data", &|r| r.restarted_rss_mib),
                    line("new member", &|r| r.new_member_rss_mib),
                    line("snapshot file (MiB)", &|r| {
                        r.snapshot_bytes as f64 / 1048576.0
                    }),
                ],
            },
        )?;
        plots::write_svg(
            &dir.join("keys-time.svg"),
            &Chart {
                title: "Snapshot, restart and catch-up time against keys",
                x_label: "keys (log scale)",
                y_label: "seconds",
                log_x: true,
                series: vec![
                    line("snapshot", &|r| r.snapshot.as_secs_f64()),
                    line("restart recovery", &|r| r.restart.as_secs_f64()),
                    Series {
                        name: "new member catch-up (where it did)".into(),
                        points: keys
                            .iter()
                            .filter_map(|r| {
                                Some((r.keys as f64, r.catch_up.as_ref().ok()?.as_secs_f64()))
                            })
                            .collect(),
                    },
                ],
            },
        )?;
    }
    if !members.is_empty() {
        let series = |name: &str, f: &dyn Fn(&MembersRow) -> f64| Series {
            name: name.to_string(),
            points: members.iter().map(|r| (r.members as f64, f(r))).collect(),
        };
        plots::write_svg(
            &dir.join("members.svg"),
            &Chart {
                title: "Raft writes against group size",
                x_label: "members",
                y_label: "write ops/s",
                log_x: false,
                series: vec![series("caplab raft", &|r| r.ops_per_s)],
            },
        )?;
    }
    Ok(())
}
