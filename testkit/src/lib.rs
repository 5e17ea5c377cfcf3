//! A harness that runs real `caplab-node` processes on loopback ports, shared by the
//! integration tests of `caplab-node` and `caplab-cli`.
//!
//! Each test crate says which node binary to run and how patient to be in a [`Harness`];
//! everything waits by polling a condition up to that deadline, never by fixed sleeps.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use caplab_api::client::{Recipient, Timeouts};
use caplab_api::identity::PeerAddr;
use caplab_api::kv::WriteBody;
use caplab_api::paths::{self, Port};
use caplab_api::status::Status;
use caplab_api::transport::{TransportError, WireAnswer};
use caplab_api::MemberClient;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

pub mod nemesis;
pub mod process;

use process::{free_port, node_spec, Process};

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
    process: Option<Process>,
}

impl Member {
    /// A URL on the client port, for tests that send what [`MemberClient`] never would.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.client, path)
    }

    /// A URL on the peer (Raft + admin) port.
    pub fn peer_url(&self, path: &str) -> String {
        format!("http://{}{}", self.peer, path)
    }

    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(Process::is_running)
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

impl Cluster {
    /// Starts `n` members (ids 1..=n), each run with `extra_args`, and initialises them as one
    /// cluster (waiting until member 1 accepts the init; not for a leader). The init names each
    /// member's incarnation, read from its status, as the operator does.
    pub async fn start(harness: Harness, n: u64, extra_args: &[&str]) -> Cluster {
        let cluster = Cluster::launch(harness, n, extra_args);
        cluster
            .wait_until("the cluster to accept init", || async {
                let book = cluster.address_book().await?;
                cluster.client(1).init(&book).await.ok().map(drop)
            })
            .await;
        cluster
    }

    /// Every member as an address-book entry naming its incarnation (`None` while some member
    /// does not answer its status yet).
    pub async fn address_book(&self) -> Option<BTreeMap<u64, PeerAddr>> {
        let mut book = BTreeMap::new();
        for m in self.members.values() {
            let incarnation = self.member_status(m.id).await?.incarnation;
            book.insert(m.id, PeerAddr::new(m.peer.clone(), Some(incarnation)));
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

    /// A client of member `id`: admin calls carry the token and the identity headers the
    /// operator sends (from `0`, to `id`, and the cluster id when the members run with one);
    /// every call waits at most the harness's HTTP timeout.
    pub fn client(&self, id: u64) -> MemberClient {
        let m = &self.members[&id];
        let timeout = self.harness.http_timeout;
        MemberClient::at(self.http.clone(), &m.client, &m.peer)
            .expect("loopback addresses are host:port")
            .with_token(self.harness.token)
            .with_recipient(Recipient {
                cluster: self.cluster_id.clone(),
                member: Some(id),
                incarnation: None,
            })
            .with_timeouts(Timeouts {
                request: timeout,
                blocking: timeout,
            })
    }

    /// The admin token the members run with.
    pub fn token(&self) -> &'static str {
        self.harness.token
    }

    /// Spawns a new member process (not yet part of the membership).
    pub fn add_process(&mut self, id: u64) {
        let port = || free_port().expect("a free loopback port");
        let member = Member {
            id,
            client: format!("127.0.0.1:{}", port()),
            peer: format!("127.0.0.1:{}", port()),
            data_dir: self.dir.path().join(format!("member-{id}")),
            args: None,
            process: None,
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

    /// (Re)starts member `id`'s process on its addresses and data directory; its stderr is
    /// appended to `member-<id>.log` beside the data directory.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        let m = self.members.get_mut(&id).expect("member exists");
        let extra: Vec<String> = ["--request-timeout-ms", "3000"]
            .into_iter()
            .map(str::to_string)
            .chain(m.args.clone().unwrap_or_else(|| self.extra_args.clone()))
            .collect();
        let spec = node_spec(
            &self.harness.node_binary,
            id,
            &m.client,
            &m.peer,
            &m.data_dir,
            self.harness.token,
            &extra,
        );
        m.process = Some(Process::start(spec).expect("spawn caplab-node"));
    }

    /// SIGKILL: no graceful shutdown, no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(process) = self.members.get_mut(&id).and_then(|m| m.process.as_mut()) {
            process.kill();
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

    /// `GET /v1/status` of member `id` as JSON; `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let answer = self
            .client(id)
            .send_raw(Method::GET, Port::Client, paths::STATUS, None)
            .await
            .ok()?;
        serde_json::from_slice(&answer.body).ok()
    }

    /// `GET /v1/status` of member `id`; `None` when it does not answer.
    pub async fn member_status(&self, id: u64) -> Option<Status> {
        self.client(id).status().await.ok()
    }

    pub async fn commit_index(&self, id: u64) -> Option<u64> {
        Some(self.member_status(id).await?.engine.commit_index)
    }

    /// The leader (or primary) member `id` names.
    async fn leader_named_by(&self, id: u64) -> Option<u64> {
        self.member_status(id).await?.engine.leader
    }

    /// Waits until every running member agrees on one leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        self.wait_until("all running members agree on a running leader", || async {
            let mut leaders = Vec::new();
            for m in self.running() {
                leaders.push(self.leader_named_by(m.id).await?);
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
                    seen.push(self.leader_named_by(*id).await?);
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
        let body = json!(WriteBody { value });
        let answer = self
            .client(id)
            .send_raw(Method::PUT, Port::Client, &paths::kv(key), Some(&body))
            .await;
        answer_pair(answer)
    }

    /// GET a register through member `id` with `consistency` as given (any text, so that a
    /// test can send one the member refuses).
    pub async fn get(&self, id: u64, key: &str, consistency: &str) -> (u16, Value) {
        let path = format!(
            "{}?{}={consistency}",
            paths::kv(key),
            paths::CONSISTENCY_PARAM
        );
        let answer = self
            .client(id)
            .send_raw(Method::GET, Port::Client, &path, None)
            .await;
        answer_pair(answer)
    }

    /// An admin call on member `id`'s peer port (path from `caplab_api::paths`); returns the
    /// HTTP status (0: no answer) and JSON body.
    pub async fn admin(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: impl Serialize,
    ) -> (u16, Value) {
        let body = json!(body);
        let answer = self
            .client(id)
            .send_raw(method, Port::Peer, path, Some(&body))
            .await;
        answer_pair(answer)
    }

    /// An admin call that must succeed (the test fails naming `path` otherwise); returns the
    /// JSON body.
    pub async fn admin_ok(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: impl Serialize,
    ) -> Value {
        let (status, body) = self.admin(id, method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    /// `PUT /v1/admin/faults` on member `id`: replaces its fault set (`{}` heals it). Takes a
    /// `caplab_api::faults::FaultSet` or its JSON; the test fails when the member refuses.
    pub async fn set_faults(&self, id: u64, faults: impl Serialize) {
        let set = serde_json::from_value(json!(faults))
            .unwrap_or_else(|e| panic!("not a fault set: {e}"));
        if let Err(e) = self.client(id).set_faults(&set).await {
            panic!("setting the faults of member {id}: {e}");
        }
    }

    /// The ids of every member but `id`, in order.
    pub fn ids_except(&self, id: u64) -> Vec<u64> {
        self.members.keys().copied().filter(|m| *m != id).collect()
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

    /// The value of `key` from the first linearizable read any running member answers with
    /// 200 (a 503 while leadership settles, e.g. just after a restart, is no answer: asked
    /// again until the deadline).
    pub async fn read_somewhere(&self, key: &str) -> Option<i64> {
        self.wait_until(&format!("a linearizable read of {key}"), || async {
            for m in self.running() {
                let (status, body) = self.get(m.id, key, "linearizable").await;
                if status == 200 {
                    return Some(body["value"].as_i64());
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

/// [`into_pair`] for an answer through [`MemberClient::send_raw`].
fn answer_pair(answer: Result<WireAnswer, TransportError>) -> (u16, Value) {
    match answer {
        Ok(a) => (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        ),
        Err(e) => (0, json!({ "transport-error": e.message })),
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
