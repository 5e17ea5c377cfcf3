//! Starting, killing and restarting the clusters under test: 3 caplab members or 3 etcd
//! members, as real processes on loopback (testkit's process harness: ports below the
//! ephemeral range), each with its own data directory (fsync on).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use caplab_api::client::{ClusterClient, Recipient, Timeouts};
use caplab_api::identity::PeerAddr;
use caplab_api::status::{Readiness, Status};
use caplab_api::MemberClient;
use caplab_testkit::process::{free_port, node_spec, Process, ProcessSpec};

/// The admin token the bench gives its caplab members.
const TOKEN: &str = "bench";
/// How long one status or readiness poll may take.
const POLL: Timeouts = Timeouts {
    request: Duration::from_secs(2),
    blocking: Duration::from_secs(2),
};

/// A 3-member caplab cluster.
pub struct Caplab {
    procs: Vec<Process>,
    /// The client of member i+1 (register operations time out after `timeouts.request`).
    pub members: Vec<MemberClient>,
    // Dropped last: the members are killed before their data goes.
    _dir: tempfile::TempDir,
}

/// A temporary directory for one cluster's members; under `keep`, one that is kept.
fn members_dir(keep: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("caplab-bench-");
    let Some(parent) = keep else {
        return Ok(builder.tempdir()?);
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let dir = builder.disable_cleanup(true).tempdir_in(parent)?;
    eprintln!(
        "member logs and data of this cluster: {}",
        dir.path().display()
    );
    Ok(dir)
}

/// Fails with how to build it when the `caplab-node` binary at `bin` is missing.
pub fn require_node_bin(bin: &Path) -> anyhow::Result<()> {
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p caplab-node`",
            bin.display()
        );
    }
    Ok(())
}

impl Caplab {
    /// Starts 3 members running `mode` (raft, async, sync or 2pc), each reached through `http`
    /// with `timeouts`, and initialises them as one cluster. With `keep`, the members' data
    /// and logs (at INFO) stay in a new directory under it; otherwise they go with the cluster.
    pub async fn start(
        bin: &Path,
        mode: &str,
        http: &reqwest::Client,
        timeouts: Timeouts,
        keep: Option<&Path>,
    ) -> anyhow::Result<Self> {
        require_node_bin(bin)?;
        let dir = members_dir(keep)?;
        let log_level = if keep.is_some() { "info" } else { "warn" };
        let mut procs = Vec::new();
        let mut members = Vec::new();
        let mut book = BTreeMap::new();
        let extra = mode_args(mode);
        for id in 1..=3u64 {
            let client = format!("127.0.0.1:{}", free_port()?);
            let peer = format!("127.0.0.1:{}", free_port()?);
            let data_dir = dir.path().join(id.to_string());
            let spec = node_spec(bin, id, &client, &peer, &data_dir, TOKEN, &extra)
                .env("RUST_LOG", log_level);
            procs.push(Process::start(spec)?);
            let member = MemberClient::at(http.clone(), &client, &peer)?
                .with_token(TOKEN)
                .with_recipient(Recipient {
                    member: Some(id),
                    ..Recipient::default()
                })
                .with_timeouts(timeouts);
            members.push(member);
            book.insert(id, PeerAddr::Plain(peer));
        }
        let cluster = Self {
            procs,
            members,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let init = cluster.members[0].init(&book).await;
            if init.is_ok() && cluster.all_ready().await {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("the caplab {mode} cluster did not form within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One client of all members, which learns the leader (see [`ClusterClient`]).
    pub fn client(&self) -> anyhow::Result<ClusterClient> {
        ClusterClient::new(self.members.clone()).context("a caplab cluster without members")
    }

    /// Member `member`'s status (0-based), polled with a 2 s timeout.
    pub async fn status(&self, member: usize) -> anyhow::Result<Status> {
        Ok(self.poller(member).status().await?)
    }

    /// Member `member`'s client with the short timeouts of a poll.
    pub fn poller(&self, member: usize) -> MemberClient {
        self.members[member].clone().with_timeouts(POLL)
    }

    /// The status of every running member that answers, with its index (0-based).
    async fn running_statuses(&self) -> Vec<(usize, Status)> {
        let mut answered = Vec::new();
        for i in 0..self.members.len() {
            if self.procs[i].is_running() {
                if let Ok(s) = self.status(i).await {
                    answered.push((i, s));
                }
            }
        }
        answered
    }

    /// Index (0-based) of the running member that itself claims to be leader/primary in the
    /// highest term. A follower's view can name a leader that has just lost the role (a
    /// failover trial that killed it would then time a cluster that never lost its leader).
    pub async fn leader(&self) -> Option<usize> {
        self.running_statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.engine.role.is_leader())
            .max_by_key(|(i, s)| (s.engine.term, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }

    /// The highest term (Raft) or epoch (primary modes) any running member reports; `None`
    /// when none answers.
    pub async fn highest_term(&self) -> Option<u64> {
        let statuses = self.running_statuses().await;
        statuses.into_iter().map(|(_, s)| s.engine.term).max()
    }

    async fn all_ready(&self) -> bool {
        for i in 0..self.members.len() {
            if !matches!(self.poller(i).ready().await, Ok(Readiness::Ready)) {
                return false;
            }
        }
        true
    }

    pub fn kill(&mut self, member: usize) {
        self.procs[member].kill();
    }

    /// Restarts a killed member on its data and waits until every member is ready again.
    pub async fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.procs[member].restart()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.all_ready().await {
            if Instant::now() > deadline {
                bail!("caplab member {} did not come back within 60 s", member + 1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// The member flags of a bench mode: `--replication <mode>`, and for `quorum-r1w1` quorum mode
/// with R = W = 1 (plain `quorum` keeps the member's default, a majority: R = W = 2 of 3).
fn mode_args(mode: &str) -> Vec<String> {
    let (replication, sizes): (&str, &[&str]) = match mode {
        "quorum-r1w1" => ("quorum", &["--read-quorum", "1", "--write-quorum", "1"]),
        other => (other, &[]),
    };
    ["--replication", replication]
        .iter()
        .chain(sizes)
        .map(|s| s.to_string())
        .collect()
}

/// A 3-member etcd cluster (default fsync, default 100 ms heartbeat / 1 s election timeout).
pub struct Etcd {
    procs: Vec<Process>,
    /// `http://127.0.0.1:port` client URL of member i.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

/// The etcd binary, or why there is none.
pub fn find_etcd(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "etcd is not installed: `apt-get install etcd-server` (Debian/Ubuntu) puts it on PATH, \
             or pass --etcd-bin"
                .to_string()
        })
}

impl Etcd {
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("etcd-bench-").tempdir()?;
        let mut peer_urls = Vec::new();
        let mut endpoints = Vec::new();
        for _ in 0..3 {
            peer_urls.push(format!("http://127.0.0.1:{}", free_port()?));
            endpoints.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let initial_cluster = peer_urls
            .iter()
            .enumerate()
            .map(|(i, u)| format!("m{}={u}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "bench-{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        let mut procs = Vec::new();
        for i in 0..3 {
            let name = format!("m{}", i + 1);
            let spec = ProcessSpec::new(bin, dir.path().join(format!("{name}.log")))
                .flag("--name", &name)
                .flag("--listen-client-urls", &endpoints[i])
                .flag("--advertise-client-urls", &endpoints[i])
                .flag("--listen-peer-urls", &peer_urls[i])
                .flag("--initial-advertise-peer-urls", &peer_urls[i])
                .flag("--initial-cluster", &initial_cluster)
                .flag("--initial-cluster-token", &token)
                .flag("--initial-cluster-state", "new")
                .flag("--logger", "zap")
                .flag("--log-level", "warn")
                .flag("--data-dir", dir.path().join(&name));
            procs.push(Process::start(spec)?);
        }
        let cluster = Self {
            procs,
            endpoints,
            _dir: dir,
        };
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    pub async fn connect(
        &self,
        member: usize,
        timeout: Duration,
    ) -> anyhow::Result<etcd_client::Client> {
        let opts = etcd_client::ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(1));
        Ok(etcd_client::Client::connect([&self.endpoints[member]], Some(opts)).await?)
    }

    /// Every live member answers Status and they agree on a leader.
    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ok = true;
            for i in 0..self.procs.len() {
                let status = async {
                    let mut c = self.connect(i, Duration::from_secs(2)).await?;
                    anyhow::Ok(c.status().await?.leader())
                }
                .await;
                ok &= status.is_ok_and(|leader| leader != 0);
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Index (0-based) of the leader.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.procs.len() {
            if !self.procs[i].is_running() {
                continue;
            }
            let Ok(mut c) = self.connect(i, Duration::from_secs(2)).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            let leader = s.leader();
            if leader == 0 {
                continue;
            }
            let Ok(members) = c.member_list().await else {
                continue;
            };
            for m in members.members() {
                if m.id() == leader {
                    let url = m.client_urls().first().cloned().unwrap_or_default();
                    return self.endpoints.iter().position(|e| *e == url);
                }
            }
        }
        None
    }

    pub fn kill(&mut self, member: usize) {
        self.procs[member].kill();
    }

    pub async fn restart(&mut self, member: usize) -> anyhow::Result<()> {
        self.procs[member].restart()?;
        self.wait_healthy().await
    }
}
