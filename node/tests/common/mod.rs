//! A harness that runs real `caplab-node` processes on loopback ports.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";

/// Generous: the CI machine has two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Member {
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    pub fn peer_url(&self, path: &str) -> String {
        format!("http://{}{}", self.peer, path)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u64, Member>,
    pub http: reqwest::Client,
    pub extra_args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    /// Starts `n` members (ids 1..=n) and initialises them as one Raft cluster.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            members: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=n {
            cluster.add_process(id);
        }
        let members: BTreeMap<String, String> = cluster
            .members
            .values()
            .map(|m| (m.id.to_string(), m.peer.clone()))
            .collect();
        let first = cluster.members[&1].peer_url("/v1/admin/init");
        cluster
            .wait_admin_ok("init", &first, json!({ "members": members }))
            .await;
        cluster.wait_for_leader().await;
        cluster
    }

    /// Spawns a new member process (not yet part of the Raft membership).
    pub fn add_process(&mut self, id: u64) {
        let member = Member {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("member-{id}")),
            child: None,
        };
        self.members.insert(id, member);
        self.restart(id);
    }

    pub fn restart(&mut self, id: u64) {
        let extra = self.extra_args.clone();
        let m = self.members.get_mut(&id).expect("member exists");
        let log = std::fs::File::create(m.data_dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_caplab-node"))
            .args([
                "--id",
                &id.to_string(),
                "--client-listen",
                &m.client,
                "--peer-listen",
                &m.peer,
            ])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--request-timeout-ms", "3000"])
            .args(&extra)
            .env("CAPLAB_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn caplab-node");
        m.child = Some(child);
    }

    /// SIGKILL: no graceful shutdown, no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.is_running())
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(self.members[&id].url("/v1/status"))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits until every running member agrees on one leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        wait_until("all running members agree on a running leader", || async {
            let mut leaders = Vec::new();
            for m in self.running() {
                leaders.push(self.status(m.id).await?["leader"].as_u64()?);
            }
            leaders.dedup();
            let alive = leaders
                .first()
                .is_some_and(|l| self.members.get(l).is_some_and(Member::is_running));
            (leaders.len() == 1 && alive).then(|| leaders[0])
        })
        .await
    }

    /// PUT a value through member `id`; returns the HTTP status and JSON body.
    pub async fn put(&self, id: u64, key: &str, value: i64) -> (u16, Value) {
        let r = self
            .http
            .put(self.members[&id].url(&format!("/v1/kv/{key}")))
            .json(&json!({ "value": value }))
            .send()
            .await;
        into_pair(r).await
    }

    pub async fn get(&self, id: u64, key: &str, consistency: &str) -> (u16, Value) {
        let url = self.members[&id].url(&format!("/v1/kv/{key}?consistency={consistency}"));
        into_pair(self.http.get(url).send().await).await
    }

    pub async fn admin(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.members[&id].peer_url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
        into_pair(r).await
    }

    async fn wait_admin_ok(&self, what: &str, url: &str, body: Value) {
        wait_until(what, || async {
            let r = self
                .http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await
    }

    /// Writes until one succeeds through any running member; returns the member used.
    pub async fn write_somewhere(&self, key: &str, value: i64) -> u64 {
        wait_until(&format!("a successful write of {key}={value}"), || async {
            for m in self.running() {
                if self.put(m.id, key, value).await.0 == 200 {
                    return Some(m.id);
                }
            }
            None
        })
        .await
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

pub async fn into_pair(r: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "transport-error": e.to_string() })),
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
