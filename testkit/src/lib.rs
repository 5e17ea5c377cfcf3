//! A harness that runs real `caplab-node` processes on loopback ports, shared by the
//! integration tests of `caplab-node` and `caplab-cli`.
//!
//! Each test crate says which node binary to run and how patient to be in a [`Harness`];
//! everything waits by polling a condition up to that deadline, never by fixed sleeps.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod nemesis;

/// The `caplab-node` binary in this workspace's target directory (`CARGO_TARGET_DIR`, else
/// `<workspace>/target`), built with `cargo build -p caplab-node` when it is missing: for the
/// test crates other than caplab-node's own, which cargo gives no `CARGO_BIN_EXE_caplab-node`.
///
/// Panics when the build fails or leaves no binary (a test setup failure).
pub fn workspace_node_binary() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = target.join("debug").join("caplab-node");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "caplab-node"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build -p caplab-node");
        assert!(status.success(), "cargo build -p caplab-node failed");
    }
    assert!(binary.exists(), "no caplab-node at {}", binary.display());
    binary
}

/// What a test crate's clusters share: the node binary, the admin token, how long to wait.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The `caplab-node` binary to run.
    pub node_binary: PathBuf,
    /// Admin token handed to members (`CAPLAB_ADMIN_TOKEN`) and sent on admin calls.
    pub token: &'static str,
    /// How long [`Cluster::wait_until`] polls before failing the test.
    pub deadline: Duration,
    /// Timeout of one HTTP request to a member.
    pub http_timeout: Duration,
}

/// One member process and its addresses.
pub struct Member {
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub data_dir: PathBuf,
    /// Arguments used instead of the cluster's `extra_args` (see [`Cluster::restart_with`]).
    args: Option<Vec<String>>,
    child: Option<Child>,
}

impl Member {
    /// A URL on the client port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    /// A URL on the peer (Raft + admin) port.
    pub fn peer_url(&self, path: &str) -> String {
        format!("http://{}{}", self.peer, path)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Member processes in one temporary directory; dropping it kills them all.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u64, Member>,
    pub http: reqwest::Client,
    harness: Harness,
    extra_args: Vec<String>,
    /// The `--cluster-id` among `extra_args`, sent on admin calls (`x-caplab-cluster`).
    cluster_id: Option<String>,
}

/// A port for a member to listen on. Taken from below the kernel's ephemeral range (32768 and
/// up on Linux), where a port the OS hands out could be taken by any outgoing connection
/// between this choice and the member's bind; each port is handed out once per test process,
/// starting at an offset of the process id so that test processes rarely meet.
fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (offset + n) % SPAN).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

impl Cluster {
    /// Starts `n` members (ids 1..=n), each run with `extra_args`, and initialises them as one
    /// cluster (waiting until member 1 accepts the init; not for a leader). The init names each
    /// member's incarnation, read from its status, as the operator does.
    pub async fn start(harness: Harness, n: u64, extra_args: &[&str]) -> Cluster {
        let cluster = Cluster::launch(harness, n, extra_args);
        let url = cluster.members[&1].peer_url("/v1/admin/init");
        cluster
            .wait_until("the cluster to accept init", || async {
                let body = json!({ "members": cluster.address_book().await? });
                let r = cluster
                    .identified(cluster.http.post(&url), 1)
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            })
            .await;
        cluster
    }

    /// Every member as an address-book entry in the object form, `{"addr", "incarnation"}`
    /// (`None` while some member does not answer its status yet).
    pub async fn address_book(&self) -> Option<BTreeMap<String, Value>> {
        let mut book = BTreeMap::new();
        for m in self.members.values() {
            let incarnation = self.status(m.id).await?["incarnation"].clone();
            let entry = json!({ "addr": m.peer, "incarnation": incarnation });
            book.insert(m.id.to_string(), entry);
        }
        Some(book)
    }

    /// Starts `n` member processes (ids 1..=n) without initialising them.
    pub fn launch(harness: Harness, n: u64, extra_args: &[&str]) -> Cluster {
        let cluster_id = extra_args
            .windows(2)
            .find(|w| w[0] == "--cluster-id")
            .map(|w| w[1].to_string());
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            members: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(harness.http_timeout)
                .build()
                .expect("client"),
            harness,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            cluster_id,
        };
        for id in 1..=n {
            cluster.add_process(id);
        }
        cluster
    }

    /// An admin request to member `id` with the token and the identity headers the operator
    /// sends: from `0`, to `id`, and the cluster id when the members run with one.
    fn identified(&self, request: reqwest::RequestBuilder, id: u64) -> reqwest::RequestBuilder {
        let request = request
            .bearer_auth(self.harness.token)
            .header("x-caplab-from", "0")
            .header("x-caplab-to", id.to_string());
        match &self.cluster_id {
            Some(cluster) => request.header("x-caplab-cluster", cluster),
            None => request,
        }
    }

    /// The admin token the members run with.
    pub fn token(&self) -> &'static str {
        self.harness.token
    }

    /// Spawns a new member process (not yet part of the membership).
    pub fn add_process(&mut self, id: u64) {
        let member = Member {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("member-{id}")),
            args: None,
            child: None,
        };
        self.members.insert(id, member);
        self.restart(id);
    }

    /// Replaces member `old` by a new member `new` at the same addresses, with an empty data
    /// directory (a pod recreated under a new id that got the same IP).
    pub fn replace(&mut self, old: u64, new: u64) {
        self.kill(old);
        let Some(mut member) = self.members.remove(&old) else {
            panic!("no member {old}")
        };
        member.id = new;
        member.data_dir = self.dir.path().join(format!("member-{new}"));
        self.members.insert(new, member);
        self.restart(new);
    }

    /// Kills member `id`, deletes its data directory and starts it again under the same id
    /// (a disk lost; the member draws a new incarnation).
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        let dir = &self.members[&id].data_dir;
        std::fs::remove_dir_all(dir).expect("remove the data directory");
        self.restart(id);
    }

    /// Restarts member `id` with `args` instead of the cluster's extra arguments (kept for
    /// its later restarts).
    pub fn restart_with(&mut self, id: u64, args: &[&str]) {
        self.kill(id);
        let m = self.members.get_mut(&id).expect("member exists");
        m.args = Some(args.iter().map(|s| s.to_string()).collect());
        self.restart(id);
    }

    /// (Re)starts member `id`'s process on its addresses and data directory; its stderr goes
    /// to `member-<id>.log` beside the data directory.
    pub fn restart(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member exists");
        let log = std::fs::File::create(m.data_dir.with_extension("log")).expect("log file");
        let child = Command::new(&self.harness.node_binary)
            .args(["--id", &id.to_string(), "--client-listen", &m.client])
            .args(["--peer-listen", &m.peer])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--request-timeout-ms", "3000"])
            .args(m.args.as_ref().unwrap_or(&self.extra_args))
            .env("CAPLAB_ADMIN_TOKEN", self.harness.token)
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

    /// The members' client addresses, comma-separated (the CLI's `--addr`).
    pub fn client_addrs(&self) -> String {
        self.members
            .values()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Polls `probe` until it yields a value or the harness deadline passes (then panics
    /// naming `what`).
    pub async fn wait_until<T, F, Fut>(&self, what: &str, probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        wait_until(self.harness.deadline, what, probe).await
    }

    /// `GET /v1/status` of member `id`; `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(self.members[&id].url("/v1/status"))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn commit_index(&self, id: u64) -> Option<u64> {
        self.status(id).await?["commitIndex"].as_u64()
    }

    /// Waits until every running member agrees on one leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        self.wait_until("all running members agree on a running leader", || async {
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

    /// Waits until the members in `ids` agree on one leader among them, other than `not`.
    pub async fn wait_for_leader_among(&self, ids: &[u64], not: Option<u64>) -> u64 {
        self.wait_until(
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
    /// proof that a workload is making progress through it.
    pub async fn wait_for_commits(&self, id: u64, more: u64) {
        let start = self.commit_index(id).await.unwrap_or(0);
        self.wait_until(
            &format!("member {id} to commit {more} more entries past {start}"),
            || async { (self.commit_index(id).await? >= start + more).then_some(()) },
        )
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

    /// An admin call on member `id`'s peer port; returns the HTTP status (0: no answer) and
    /// JSON body.
    pub async fn admin(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let request = self.http.request(method, self.members[&id].peer_url(path));
        let r = self.identified(request, id).json(&body).send().await;
        into_pair(r).await
    }

    /// An admin call that must succeed (the test fails naming `path` otherwise); returns the
    /// JSON body.
    pub async fn admin_ok(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let (status, body) = self.admin(id, method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    /// `PUT /v1/admin/faults` on member `id`: replaces its fault set (`{}` heals it).
    pub async fn set_faults(&self, id: u64, faults: Value) {
        self.admin_ok(id, reqwest::Method::PUT, "/v1/admin/faults", faults)
            .await;
    }

    /// Writes until one succeeds through any running member; returns the member used.
    pub async fn write_somewhere(&self, key: &str, value: i64) -> u64 {
        self.wait_until(&format!("a successful write of {key}={value}"), || async {
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

/// An HTTP result as (status, JSON body): status 0 and a `transport-error` body when the
/// request got no answer, a `null` body when the answer was not JSON.
pub async fn into_pair(r: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "transport-error": e.to_string() })),
    }
}

/// Polls `probe` every 100 ms until it yields a value or `deadline` passes (then panics naming
/// `what`).
pub async fn wait_until<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
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
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
