//! Starting, killing and restarting the clusters under test: 3 caplab members or 3 etcd
//! members, as real processes on loopback, each with its own data directory (fsync on).

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

/// The admin token the bench gives its caplab members.
const TOKEN: &str = "bench";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One member process, with what it takes to start it again on the same data.
pub struct Proc {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-member caplab cluster.
pub struct Caplab {
    procs: Vec<Proc>,
    /// Client API address of member i+1.
    pub clients: Vec<String>,
    http: reqwest::Client,
    // Dropped last: the members are killed before their data goes.
    _dir: tempfile::TempDir,
}

impl Caplab {
    pub async fn start(bin: &Path, mode: &str, http: &reqwest::Client) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p caplab-node`",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("caplab-bench-").tempdir()?;
        let mut procs = Vec::new();
        let mut clients = Vec::new();
        let mut peers = serde_json::Map::new();
        for id in 1..=3u64 {
            let client = format!("127.0.0.1:{}", free_port()?);
            let peer = format!("127.0.0.1:{}", free_port()?);
            let mut args: Vec<OsString> = Vec::new();
            for (flag, value) in [
                ("--id", id.to_string()),
                ("--client-listen", client.clone()),
                ("--peer-listen", peer.clone()),
                ("--replication", mode.to_string()),
            ] {
                args.push(flag.into());
                args.push(value.into());
            }
            args.push("--data-dir".into());
            args.push(dir.path().join(id.to_string()).into());
            let mut p = Proc {
                program: bin.to_path_buf(),
                args,
                envs: vec![
                    ("CAPLAB_ADMIN_TOKEN".into(), TOKEN.into()),
                    ("RUST_LOG".into(), "warn".into()),
                ],
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            };
            p.spawn()?;
            procs.push(p);
            clients.push(client);
            peers.insert(id.to_string(), json!(peer));
        }
        let cluster = Self {
            procs,
            clients,
            http: http.clone(),
            _dir: dir,
        };
        let first_peer = peers["1"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let init = http
                .post(format!("http://{first_peer}/v1/admin/init"))
                .bearer_auth(TOKEN)
                .json(&json!({ "members": peers }))
                .send()
                .await;
            if init.is_ok_and(|r| r.status().is_success()) && cluster.all_ready().await {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("the caplab {mode} cluster did not form within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn status(&self, member: usize) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("http://{}/v1/status", self.clients[member]))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Index (0-based) of the member the first answering member names as leader/primary.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.clients.len() {
            if self.procs[i].child.is_none() {
                continue;
            }
            if let Ok(s) = self.status(i).await {
                if let Some(id) = s["leader"].as_u64() {
                    return Some(id as usize - 1);
                }
            }
        }
        None
    }

    async fn all_ready(&self) -> bool {
        for c in &self.clients {
            let ready = self
                .http
                .get(format!("http://{c}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if !ready.is_ok_and(|r| r.status().is_success()) {
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
        self.procs[member].spawn()?;
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

/// A 3-member etcd cluster (default fsync, default 100 ms heartbeat / 1 s election timeout).
pub struct Etcd {
    procs: Vec<Proc>,
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
            let mut args: Vec<OsString> = Vec::new();
            for (flag, value) in [
                ("--name", name.clone()),
                ("--listen-client-urls", endpoints[i].clone()),
                ("--advertise-client-urls", endpoints[i].clone()),
                ("--listen-peer-urls", peer_urls[i].clone()),
                ("--initial-advertise-peer-urls", peer_urls[i].clone()),
                ("--initial-cluster", initial_cluster.clone()),
                ("--initial-cluster-token", token.clone()),
                ("--initial-cluster-state", "new".into()),
                ("--logger", "zap".into()),
                ("--log-level", "warn".into()),
            ] {
                args.push(flag.into());
                args.push(value.into());
            }
            args.push("--data-dir".into());
            args.push(dir.path().join(&name).into());
            let mut p = Proc {
                program: bin.to_path_buf(),
                args,
                envs: vec![],
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            p.spawn()?;
            procs.push(p);
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
            if self.procs[i].child.is_none() {
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
        self.procs[member].spawn()?;
        self.wait_healthy().await
    }
}
