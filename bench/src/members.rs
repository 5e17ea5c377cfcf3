//! Raft groups of any size for the scaling runs: N `caplab-node` processes on loopback (fsync
//! on), members added and restarted on their data, each process's pid for its memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use caplab_api::client::{Recipient, Timeouts};
use caplab_api::identity::PeerAddr;
use caplab_api::status::Status;
use caplab_api::MemberClient;
use caplab_testkit::process::{free_port, node_spec, Process};

use crate::cluster::require_node_bin;
use crate::memory;

/// The admin token of the scaling runs' members.
const TOKEN: &str = "bench";
/// How long a member may take to come up, catch up or recover, at most.
const PATIENCE: Duration = Duration::from_secs(600);
/// Polls of status and readiness.
const POLL: Timeouts = Timeouts {
    request: Duration::from_secs(2),
    blocking: Duration::from_secs(2),
};

/// One member: its process, its client and its addresses.
pub struct Member {
    pub id: u64,
    process: Process,
    pub client: MemberClient,
    pub client_addr: String,
    peer_addr: String,
}

/// A Raft group of real member processes in one temporary directory.
pub struct Group {
    bin: std::path::PathBuf,
    http: reqwest::Client,
    /// Flags every member runs with besides its addresses (e.g. `--snapshot-logs`).
    flags: Vec<String>,
    /// Environment every member runs with (e.g. `MALLOC_ARENA_MAX`).
    env: Vec<(String, String)>,
    timeouts: Timeouts,
    pub members: Vec<Member>,
    // Dropped last: the members are killed before their data goes.
    dir: tempfile::TempDir,
}

impl Group {
    /// Starts `n` Raft members (ids 1..=n) and initialises them as one cluster; returns once
    /// a leader is known.
    pub async fn start(
        bin: &Path,
        n: u64,
        flags: &[String],
        env: &[(String, String)],
        http: &reqwest::Client,
        timeouts: Timeouts,
    ) -> anyhow::Result<Self> {
        require_node_bin(bin)?;
        let mut group = Group {
            bin: bin.to_path_buf(),
            http: http.clone(),
            flags: flags.to_vec(),
            env: env.to_vec(),
            timeouts,
            members: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("caplab-scaling-")
                .tempdir()?,
        };
        for id in 1..=n {
            group.spawn(id)?;
        }
        let book: BTreeMap<u64, PeerAddr> = group
            .members
            .iter()
            .map(|m| (m.id, PeerAddr::Plain(m.peer_addr.clone())))
            .collect();
        let first = group.members[0].client.clone();
        wait_for("the group to accept its init", || async {
            first.init(&book).await.ok()
        })
        .await?;
        group.leader().await?;
        Ok(group)
    }

    /// Starts member `id`'s process (not yet in the membership).
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let client_addr = format!("127.0.0.1:{}", free_port()?);
        let peer_addr = format!("127.0.0.1:{}", free_port()?);
        let data = self.dir.path().join(id.to_string());
        let mut spec = node_spec(
            &self.bin,
            id,
            &client_addr,
            &peer_addr,
            &data,
            TOKEN,
            &self.flags,
        )
        .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            spec = spec.env(k, v);
        }
        let client = MemberClient::at(self.http.clone(), &client_addr, &peer_addr)?
            .with_token(TOKEN)
            .with_recipient(Recipient {
                member: Some(id),
                ..Recipient::default()
            })
            .with_timeouts(self.timeouts);
        self.members.push(Member {
            id,
            process: Process::start(spec)?,
            client,
            client_addr,
            peer_addr,
        });
        Ok(())
    }

    /// The data directory of member `index` (0-based).
    pub fn data_dir(&self, index: usize) -> std::path::PathBuf {
        self.dir.path().join(self.members[index].id.to_string())
    }

    /// The pid of member `index`'s process (found by its client address on /proc).
    pub fn pid(&self, index: usize) -> anyhow::Result<u32> {
        let addr = &self.members[index].client_addr;
        memory::pid_with_args(&["--client-listen", addr])
            .with_context(|| format!("no process listens for clients on {addr}"))
    }

    fn poller(&self, index: usize) -> MemberClient {
        self.members[index].client.clone().with_timeouts(POLL)
    }

    pub async fn status(&self, index: usize) -> Option<Status> {
        self.poller(index).status().await.ok()
    }

    /// Index (0-based) of the leader the members agree on, waiting for one.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        wait_for("a leader", || async {
            for i in 0..self.members.len() {
                if let Some(leader) = self.status(i).await.and_then(|s| s.engine.leader) {
                    return ids.iter().position(|&id| id == leader);
                }
            }
            None
        })
        .await
    }

    /// Kills member `index` (SIGKILL) and starts it again on its data; returns how long it
    /// took until it applied everything the leader had committed before the kill.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<Duration> {
        let leader = self.leader().await?;
        let committed = self.committed(leader).await?;
        self.members[index].process.kill();
        let started = Instant::now();
        self.members[index].process.restart()?;
        self.wait_applied(index, committed).await?;
        Ok(started.elapsed())
    }

    /// Adds a new member (the next id) as a learner and returns how long it took to apply
    /// everything the leader had committed when it was added (a snapshot, then the log);
    /// fails once that took longer than `patience`.
    pub async fn add_member(&mut self, patience: Duration) -> anyhow::Result<Duration> {
        let leader = self.leader().await?;
        let committed = self.committed(leader).await?;
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        self.spawn(id)?;
        let index = self.members.len() - 1;
        let new = self.poller(index);
        wait_for("the new member to answer", || async {
            new.status().await.ok()
        })
        .await?;
        let started = Instant::now();
        let addr = PeerAddr::Plain(self.members[index].peer_addr.clone());
        // Blocking on the leader until the learner caught up, up to the member's request
        // timeout: a longer catch-up is followed below by polling.
        let _ = self.members[leader].client.add_learner(id, addr).await;
        let new = self.poller(index);
        wait_until(started + patience, "the new member to catch up", || async {
            let s = new.status().await.ok()?;
            (s.engine.applied_index >= committed).then_some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    async fn committed(&self, index: usize) -> anyhow::Result<u64> {
        self.status(index)
            .await
            .map(|s| s.engine.commit_index)
            .ok_or_else(|| anyhow!("member {} does not answer", self.members[index].id))
    }

    /// Waits until member `index` has applied `index_applied`.
    async fn wait_applied(&self, index: usize, index_applied: u64) -> anyhow::Result<()> {
        wait_for("a member to apply the committed log", || async {
            let s = self.status(index).await?;
            (s.engine.applied_index >= index_applied).then_some(())
        })
        .await
    }
}

/// Polls `probe` every 20 ms until it yields a value, at most [`PATIENCE`].
async fn wait_for<T, F, Fut>(what: &str, probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until(Instant::now() + PATIENCE, what, probe).await
}

/// Polls `probe` every 20 ms until it yields a value or `deadline` passes.
async fn wait_until<T, F, Fut>(deadline: Instant, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("waited {} s for {what}", started.elapsed().as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
