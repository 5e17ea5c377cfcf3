//! `caplab workload`: checks the fault schedule against the cluster, waits for the cluster
//! to be ready, runs the clients (and the schedule) and writes the history and the fault
//! windows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;

use crate::client::Member;
use crate::exit::bad_input;
use crate::faults::{inject, schedule};
use crate::k8s::{ClusterRef, KubeArgs};
use crate::{ready, workload};

/// For clap: `10s`, `500ms`, `2m` or seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    schedule::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(clap::Args)]
pub struct WorkloadArgs {
    /// Client addresses of the members, host:port, comma separated.
    #[arg(
        long,
        env = "CAPLAB_ADDR",
        value_delimiter = ',',
        required_unless_present = "cluster",
        value_parser = parse_host_port
    )]
    pub addr: Vec<String>,
    /// A RegisterCluster: without --addr, clients reach its members through the Kubernetes
    /// API server's pod proxy; fault schedules edit its spec.faults.
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER")]
    pub cluster: Option<String>,
    /// Inject a fault during the run: START:FAULT[:DURATION], e.g. 10s:partition-leader:20s.
    /// FAULT is KIND-TARGET[=VALUE]: partition, crash (or kill), pause, delay (=ms), loss
    /// (=probability) or skew (or clockSkew, =ms) of leader, followers or a member ordinal.
    /// Other spec.faults kinds (veto) only in a --faults file. Repeatable; needs --cluster.
    #[arg(
        long = "fault-at",
        value_name = "START:FAULT[:DURATION]",
        requires = "cluster"
    )]
    pub fault_at: Vec<String>,
    /// How long to wait, after adding a fault to spec.faults, for the operator to report it
    /// active (or refuse it) before the workload fails: 30s, 1m, …
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub fault_timeout: Duration,
    /// How long to wait for the cluster to be ready before recording (0: do not wait):
    /// with --cluster its Available condition (or phase Ready), with --addr a majority of
    /// the members' /readyz.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// A YAML fault schedule: a list of {at: 10s, duration: 20s, fault: partition-leader}
    /// where fault may also be a spec.faults entry such as {kind: crash, targets: [leader]}.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub faults: Option<PathBuf>,
    /// Where to write the fault windows for `caplab report --events`
    /// (default: next to --out, e.g. history.events.json).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Concurrent clients (one process each in the history).
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub clients: usize,
    /// Number of keys: fresh ones each run, named w<unix ms>-<random>-k0, -k1, …, each
    /// recorded in the history as starting at 0.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub keys: usize,
    /// Relative weights of the operations.
    #[arg(long, default_value = "read=50,write=30,cas=20")]
    pub mix: workload::Mix,
    /// Operations per second over all clients; 0 for as fast as the members answer.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds to run (Ctrl-C stops early and still writes the history).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Consistency of reads.
    #[arg(long, default_value = super::default_consistency(), value_parser = super::consistency_values())]
    pub consistency: String,
    /// Client-side deadline of one request; past it the outcome is unknown.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[arg(long, default_value = "history.json")]
    pub out: PathBuf,
    /// Client i always talks to member i mod n; by default a client moves to the next member
    /// after a failed or unknown operation.
    #[arg(long)]
    pub sticky: bool,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// After the last operation, wait up to this long for every member to hold the same value
    /// of every key (read locally, every 250 ms), then record each member's final read in the
    /// history for `caplab check`'s converged rung; 0: no final reads. 10s, 500ms, …
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// A count that must be positive (clients, keys).
fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{raw:?} is not a positive whole number")),
    }
}

/// `host:port`: a member's address without a port would silently mean port 80.
fn parse_host_port(raw: &str) -> Result<String, String> {
    let valid = raw
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(raw.to_string())
    } else {
        Err(format!("{raw:?} is not host:port (e.g. 127.0.0.1:8080)"))
    }
}

/// Fails before the run, not after it, when a file the run ends by writing cannot be written
/// there: a directory in its place, or a missing parent directory.
fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.is_dir() {
        return Err(bad_input(anyhow!(
            "{flag} {} is a directory: give a file name",
            path.display()
        )));
    }
    if !parent.is_dir() {
        return Err(bad_input(anyhow!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// `history.json` → `history.events.json`.
fn default_events_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.events.json"))
}

/// The fault schedule from --fault-at and --faults; every problem is the input's fault.
fn fault_schedule(args: &WorkloadArgs, duration: Duration) -> Result<Vec<schedule::Scheduled>> {
    let mut schedule = args
        .fault_at
        .iter()
        .map(|s| schedule::parse_fault_at(s))
        .collect::<Result<Vec<_>>>()
        .map_err(bad_input)?;
    if let Some(path) = &args.faults {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(bad_input)?;
        schedule.extend(
            schedule::parse_schedule(&text)
                .with_context(|| format!("{} is not a fault schedule", path.display()))
                .map_err(bad_input)?,
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
    Ok(schedule)
}

/// Where the clients go, and where the faults go (also the status that says whether the
/// cluster is ready).
struct Plan {
    targets: workload::Targets,
    faults: Option<ClusterRef>,
    /// The operation mix for this cluster's replication mode.
    mix: workload::Mix,
}

/// The mix for a cluster in `replication`: quorum members refuse compare-and-set (400: it
/// needs consensus), so there `cas` is dropped and reads and writes keep their weights; a
/// mix of nothing but cas is refused.
fn mix_for(mix: workload::Mix, replication: Option<&str>) -> Result<workload::Mix> {
    if replication != Some("quorum") || mix.cas == 0 {
        return Ok(mix);
    }
    if mix.read + mix.write == 0 {
        return Err(bad_input(anyhow!(
            "--mix is all cas, which quorum members refuse (compare-and-set needs consensus): \
             give read or write a weight"
        )));
    }
    eprintln!(
        "note: cas dropped from the mix: quorum members refuse compare-and-set; the run uses \
         read={},write={}",
        mix.read, mix.write
    );
    Ok(workload::Mix { cas: 0, ..mix })
}

/// With --addr alone: the replication mode (`quorum`, …) the first member to answer
/// `GET /v1/status` reports; `None` if none answers (the mix is then left as given).
async fn addr_replication(addrs: &[String]) -> Option<String> {
    for addr in addrs {
        let Ok(member) = Member::new(addr, Duration::from_secs(2)) else {
            continue;
        };
        if let Ok(status) = member.status().await {
            let mode = serde_json::to_value(status.engine.replication).ok()?;
            return mode.as_str().map(str::to_string);
        }
    }
    None
}

/// With --cluster: reads the RegisterCluster, checks the schedule's ordinals against its
/// size, and addresses its members (through the pod proxy unless --addr is given).
async fn plan(
    kube: &KubeArgs,
    args: &WorkloadArgs,
    schedule: &[schedule::Scheduled],
    request_timeout: Duration,
) -> Result<Plan> {
    let Some(name) = &args.cluster else {
        let replication = addr_replication(&args.addr).await;
        return Ok(Plan {
            targets: workload::Targets::Addrs(args.addr.clone()),
            faults: None,
            mix: mix_for(args.mix, replication.as_deref())?,
        });
    };
    let cluster = ClusterRef::connect(kube, name).await?;
    let regc = cluster.read().await?;
    let replicas = regc.replicas();
    let mix = mix_for(args.mix, regc.spec.replication.as_deref())?;
    let namespace = &cluster.namespace;
    schedule::check_ordinals(schedule, replicas)
        .with_context(|| format!("{namespace}/{name}"))
        .map_err(bad_input)?;
    let targets = if args.addr.is_empty() {
        if replicas == 0 {
            bail!("{namespace}/{name} has no members (spec.replicas is 0 or missing)");
        }
        workload::Targets::Members(
            (0..replicas)
                .map(|o| Member::proxied(&cluster, &cluster.pod(o), request_timeout))
                .collect(),
        )
    } else {
        workload::Targets::Addrs(args.addr.clone())
    };
    Ok(Plan {
        targets,
        faults: Some(cluster),
        mix,
    })
}

/// Waits for the cluster to be ready: through its status with --cluster, else through the
/// members' /readyz.
async fn wait_until_ready(plan: &Plan, timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Ok(());
    }
    if let Some(cluster) = &plan.faults {
        return ready::wait(&ready::Probe::Cluster(cluster), timeout).await;
    }
    let members = match &plan.targets {
        workload::Targets::Members(members) => members.clone(),
        workload::Targets::Addrs(addrs) => addrs
            .iter()
            .map(|a| Member::new(a, Duration::from_secs(2)))
            .collect::<Result<Vec<_>>>()
            .map_err(bad_input)?,
    };
    ready::wait(&ready::Probe::Members(&members), timeout).await
}

/// What a run recorded: the history, the wall-clock moment of its time zero (the fault
/// windows of an operator-run schedule are placed on the history's clock from it), and what
/// the `--fault-at`/`--faults` schedule did, if there was one.
pub struct Recorded {
    pub history: caplab_checker::History,
    pub started: chrono::DateTime<chrono::Utc>,
    pub ran: Option<inject::Ran>,
}

pub async fn run(kube: &KubeArgs, args: WorkloadArgs) -> Result<ExitCode> {
    let recorded = record(kube, &args).await?;
    let history = recorded.history;
    std::fs::write(&args.out, history.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut report_hint = format!("caplab report {}", args.out.display());
    let mut failure = None;
    if let Some(ran) = recorded.ran {
        let path = args
            .events
            .clone()
            .unwrap_or_else(|| default_events_path(&args.out));
        let json = serde_json::to_string_pretty(&ran.windows).context("serialising the events")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} fault windows to {}",
            ran.windows.len(),
            path.display()
        );
        report_hint.push_str(&format!(" --events {}", path.display()));
        failure = ran.failure;
    }
    eprintln!(
        "wrote {} operations to {}; check it with: caplab check {} (or {report_hint})",
        history.entries.len(),
        args.out.display(),
        args.out.display()
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Checks the arguments and the schedule, waits for the cluster, runs the clients and the
/// schedule; writes nothing but checks that `--out` and `--events` could be written.
/// The first address given more than once.
fn given_twice(addrs: &[String]) -> Option<&str> {
    let mut seen = std::collections::BTreeSet::new();
    addrs.iter().map(|a| a.trim()).find(|a| !seen.insert(*a))
}

pub async fn record(kube: &KubeArgs, args: &WorkloadArgs) -> Result<Recorded> {
    let duration = Duration::try_from_secs_f64(args.duration).map_err(|_| {
        bad_input(anyhow!(
            "--duration must be a non-negative number of seconds"
        ))
    })?;
    let request_timeout = Duration::from_millis(args.timeout_ms.max(1));
    if let Some(twice) = given_twice(&args.addr) {
        return Err(bad_input(anyhow!(
            "--addr names {twice} twice: give each member once (the history's members must be distinct)"
        )));
    }
    check_writable(&args.out, "--out")?;
    if let Some(events) = &args.events {
        check_writable(events, "--events")?;
    }
    let schedule = fault_schedule(args, duration)?;
    let plan = plan(kube, args, &schedule, request_timeout).await?;
    wait_until_ready(&plan, args.ready_timeout).await?;
    let start = Instant::now();
    let started = chrono::Utc::now();
    let config = workload::Config {
        targets: plan.targets,
        start,
        clients: args.clients,
        keys: args.keys,
        key_prefix: workload::run_prefix(),
        mix: plan.mix,
        rate: args.rate,
        duration,
        seed: args.seed,
        consistency: args.consistency.clone(),
        request_timeout,
        progress: !args.quiet,
        sticky: args.sticky,
        settle: args.settle,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let ctrl_c = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: waiting for operations in flight");
                let _ = stop_tx.send(true);
            }
        })
    };
    let injector = match (plan.faults, schedule.is_empty()) {
        (Some(target), false) => {
            let halt = stop_tx.clone();
            let run_id = inject::run_id();
            let confirm = args.fault_timeout;
            Some(tokio::spawn(async move {
                inject::run(&target, &schedule, &run_id, start, duration, confirm, &halt).await
            }))
        }
        _ => None,
    };
    let history = workload::run(config, stop_rx).await;
    // The injector heals what is left once the workload's time is up (or it was stopped).
    let ran = match injector {
        Some(task) => Some(
            task.await
                .map_err(|e| anyhow!("the fault injector failed: {e}"))?,
        ),
        None => None,
    };
    ctrl_c.abort();
    Ok(Recorded {
        history: history?,
        started,
        ran,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_given_twice_is_named() {
        let addrs = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(given_twice(&addrs(&["a:1", "b:2"])), None);
        assert_eq!(given_twice(&addrs(&["a:1", "b:2", " a:1"])), Some("a:1"));
    }

    #[test]
    fn quorum_clusters_get_no_cas() {
        let mix: workload::Mix = "read=50,write=40,cas=10".parse().unwrap_or(workload::Mix {
            read: 0,
            write: 0,
            cas: 0,
        });
        let quorum = mix_for(mix, Some("quorum")).ok();
        assert_eq!(quorum.map(|m| (m.read, m.write, m.cas)), Some((50, 40, 0)));
        assert_eq!(mix_for(mix, Some("raft")).ok(), Some(mix));
        let all_cas = workload::Mix {
            read: 0,
            write: 0,
            cas: 1,
        };
        let refused = mix_for(all_cas, Some("quorum"))
            .err()
            .map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains("all cas")),
            "{refused:?}"
        );
    }
}
