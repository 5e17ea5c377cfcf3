//! Runs real `caplab-node` members on loopback ports and the `caplab` binary against them
//! (the approach of node/tests/common, trimmed to what these tests need).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "cli-test-token";

/// Generous: the CI machine has two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The `caplab-node` binary of this workspace, built on demand if it is not there yet.
pub fn node_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug").join("caplab-node");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "caplab-node"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build -p caplab-node");
        assert!(status.success(), "cargo build -p caplab-node failed");
    }
    assert!(binary.exists(), "no caplab-node at {}", binary.display());
    binary
}

pub fn caplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caplab"))
}

pub struct Member {
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u64, Member>,
    pub http: reqwest::Client,
    binary: PathBuf,
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// Starts `n` members (ids 1..=n) and initialises them as one cluster.
    pub async fn start(n: u64, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            members: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            binary: node_binary(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=n {
            let member = Member {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                data_dir: cluster.dir.path().join(format!("member-{id}")),
                child: None,
            };
            cluster.members.insert(id, member);
            cluster.restart(id);
        }
        let members: BTreeMap<String, String> = cluster
            .members
            .values()
            .map(|m| (m.id.to_string(), m.peer.clone()))
            .collect();
        let url = format!("http://{}/v1/admin/init", cluster.members[&1].peer);
        let body = json!({ "members": members });
        wait_until("the cluster to accept init", || async {
            let r = cluster
                .http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        cluster
    }

    pub fn restart(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member exists");
        let log = std::fs::File::create(m.data_dir.with_extension("log")).expect("log file");
        let child = Command::new(&self.binary)
            .args(["--id", &id.to_string(), "--client-listen", &m.client])
            .args(["--peer-listen", &m.peer])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--request-timeout-ms", "3000"])
            .args(&self.extra_args)
            .env("CAPLAB_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn caplab-node");
        m.child = Some(child);
    }

    /// SIGKILL: no graceful shutdown.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client_addrs(&self) -> String {
        self.members
            .values()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let url = format!("http://{}/v1/status", self.members[&id].client);
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    pub async fn set_faults(&self, id: u64, faults: Value) {
        let url = format!("http://{}/v1/admin/faults", self.members[&id].peer);
        let r = self
            .http
            .put(url)
            .bearer_auth(TOKEN)
            .json(&faults)
            .send()
            .await
            .expect("PUT faults");
        assert!(r.status().is_success(), "PUT faults: {}", r.status());
    }

    /// Waits until the members in `ids` agree on one leader among them, other than `not`.
    pub async fn wait_for_leader(&self, ids: &[u64], not: Option<u64>) -> u64 {
        wait_until(
            &format!("members {ids:?} to agree on a leader other than {not:?}"),
            || async {
                let mut seen = Vec::new();
                for id in ids {
                    seen.push(self.status(*id).await?["leader"].as_u64()?);
                }
                seen.dedup();
                (seen.len() == 1 && ids.contains(&seen[0]) && Some(seen[0]) != not).then(|| seen[0])
            },
        )
        .await
    }

    /// Waits until member `id` has committed `more` entries past what it had when called:
    /// proof that the workload is making progress through it.
    pub async fn wait_for_commits(&self, id: u64, more: u64) {
        let start = self.commit_index(id).await.unwrap_or(0);
        wait_until(
            &format!("member {id} to commit {more} more entries past {start}"),
            || async { (self.commit_index(id).await? >= start + more).then_some(()) },
        )
        .await
    }

    pub async fn commit_index(&self, id: u64) -> Option<u64> {
        self.status(id).await?["commitIndex"].as_u64()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// Polls `probe` until it yields a value or [`DEADLINE`] passes (then panics naming `what`).
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGINT to a child (the workload writes its history and exits on it).
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
}

/// Waits for a child to exit, killing it and failing the test past [`DEADLINE`].
pub async fn wait_for_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} did not exit within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
