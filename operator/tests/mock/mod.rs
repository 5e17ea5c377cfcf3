//! Test doubles for reconcile tests.
//!
//! - The Kubernetes API is a `tower_test::mock` service behind a real
//!   `kube::Client` (the kube-rs controller-rs `fixtures.rs` pattern). A
//!   verifier task answers every request from a small in-memory [`World`] and
//!   records it, so a test can assert the exact API traffic (methods, paths,
//!   field manager, apply bodies, status patches, events).
//! - Members are tiny axum servers, one per ordinal `o` on `127.0.0.{o+1}`
//!   (all of 127/8 is loopback), on two ephemeral ports that the operator's
//!   `MemberClient` is pointed at with `with_ports`. Each answers
//!   `GET /v1/status` with the `caplab_api` `Status` the test put in the world (503
//!   when there is none: the member is down) and every admin call as the
//!   real member does (see `admin_answer`: a Raft member answers 501 to a
//!   leadership transfer).
//!
//! API and member calls go to one shared log, so tests can check the order
//! of steps across both (e.g. voters changed before the pod is deleted).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use caplab_api::admin::{Ack, PeersRequest, PeersView};
use caplab_api::error::ErrorBody;
use caplab_api::faults::{FaultSet, FaultsView};
use caplab_api::identity::{Incarnation, TO_HEADER, TO_INCARNATION_HEADER};
use caplab_api::paths;
use caplab_api::status::{PeerStatus, Replication, Role, Status};
use caplab_operator::controller::{error_policy, reconcile, Context, Error};
use caplab_operator::crd::RegisterCluster;
use caplab_operator::member_client::MemberClient;
use caplab_operator::metrics::Metrics;
use caplab_operator::resources;
use http::{Request, Response};
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Namespace of the test cluster.
pub const NS: &str = "test";
/// Name of the test cluster.
pub const NAME: &str = "demo";
/// Admin token in the pre-existing Secret.
pub const TOKEN: &str = "s3cret-token";
/// Image the operator is configured with.
pub const IMAGE: &str = "caplab/node:test";
/// Members (loopback addresses) the harness serves.
pub const MAX_MEMBERS: u32 = 5;

/// One recorded request (API server or member).
#[derive(Clone, Debug)]
pub struct Call {
    /// `api`, or `member-<ordinal>/client` | `member-<ordinal>/peer`.
    pub who: String,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// Authorization header.
    pub auth: Option<String>,
    /// JSON body (`Null` when empty).
    pub body: Value,
    /// The identity headers (`x-caplab-*`) it carried.
    pub identity: BTreeMap<String, String>,
    /// The API mock had no answer for it.
    pub unexpected: bool,
}

impl Call {
    /// `METHOD path`, for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
    /// Is this an API call with this method and path?
    pub fn api(&self, method: &str, path: &str) -> bool {
        self.who == "api" && self.method == method && self.path == path
    }
}

/// The fake cluster: what the API server stores and what members report.
#[derive(Default)]
pub struct World {
    /// The RegisterCluster (status patches update it, like a real server).
    pub rc: Option<RegisterCluster>,
    /// Pods returned by the label-selector list.
    pub pods: Vec<Pod>,
    /// The admin-token Secret, if it exists.
    pub secret: Option<Secret>,
    /// `/v1/status` of each member (missing: the member answers 503).
    pub members: BTreeMap<u32, Status>,
    /// Members whose admin port is now served by another incarnation than the one their
    /// status showed (a pod replaced between the status poll and the admin call): admin
    /// calls addressed to the old incarnation get 421, as the real member answers.
    pub replaced: BTreeMap<u32, String>,
    /// The server does not serve `policy/v1` (Kubernetes before 1.21).
    pub no_policy_v1: bool,
    /// The operator may not write PodDisruptionBudgets (403).
    pub pdb_forbidden: bool,
    /// Jobs by name, as applied (and as a test then sets their status).
    pub jobs: BTreeMap<String, Value>,
    /// Pods returned by a `job-name=` label-selector list (a run's pods).
    pub job_pods: Vec<Pod>,
    /// Pod applies are answered with this status code (422: Invalid, as the API server
    /// refuses a pod it cannot accept, naming [`World::invalid_field`]; 503:
    /// ServiceUnavailable, a passing failure).
    pub pod_apply_fails: Option<u16>,
    /// The field a 422 names (default `spec.containers[0].image`).
    pub invalid_field: Option<&'static str>,
    /// Status patches are answered with this status code (422: Invalid at `status`).
    pub status_patch_fails: Option<u16>,
    /// PersistentVolumeClaims that exist, by name (a GET of any other answers 404).
    pub claims: BTreeMap<String, Value>,
}

impl World {
    /// The world of a cluster `rc` whose members run: a running pod (member id = ordinal + 1,
    /// on its loopback address) for every ordinal up to the highest in `members`, which answer
    /// `GET /v1/status` (ordinal → status; an ordinal left out below the highest has a pod
    /// whose member is down: 503), and the admin-token Secret holding [`TOKEN`].
    pub fn serving(rc: RegisterCluster, members: BTreeMap<u32, Status>) -> World {
        let ordinals = members.keys().map(|o| o + 1).max().unwrap_or(0);
        World {
            pods: (0..ordinals)
                .map(|o| running_pod(&rc, o, u64::from(o) + 1))
                .collect(),
            members,
            secret: Some(token_secret(&rc)),
            rc: Some(rc),
            ..World::default()
        }
    }
}

/// Everything a reconcile test needs.
pub struct Harness {
    /// The fake cluster; edit it between reconciles.
    pub world: Arc<Mutex<World>>,
    log: Arc<Mutex<Vec<Call>>>,
    ctx: Arc<Context>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loopback address of an ordinal's member.
pub fn member_ip(ordinal: u32) -> String {
    format!("127.0.0.{}", ordinal + 1)
}

/// The cluster from YAML (namespace `test`, name `demo`).
pub fn cluster(yaml: &str) -> RegisterCluster {
    serde_yaml::from_str(yaml).expect("RegisterCluster YAML")
}

/// The uid of [`demo`].
pub const UID: &str = "11111111-2222-3333-4444-555555555555";

/// `test/demo` (uid [`UID`], generation 2) with `replicas` and more of the spec as YAML lines.
pub fn demo(replicas: i32, extra_spec: &str) -> RegisterCluster {
    cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {NAME}, namespace: {NS}, uid: {UID}, generation: 2}}
spec:
  replicas: {replicas}
{extra_spec}"
    ))
}

/// A running member pod as the operator builds it, with a loopback pod IP.
pub fn running_pod(rc: &RegisterCluster, ordinal: u32, id: u64) -> Pod {
    let mut pod = resources::member_pod(rc, ordinal, id, IMAGE);
    pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
    pod.metadata.resource_version = Some("1".into());
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(member_ip(ordinal)),
        ..PodStatus::default()
    });
    pod
}

/// The existing admin-token Secret holding [`TOKEN`].
pub fn token_secret(rc: &RegisterCluster) -> Secret {
    let mut s = resources::admin_secret(rc, TOKEN);
    s.data = Some(BTreeMap::from([(
        resources::TOKEN_KEY.to_string(),
        ByteString(TOKEN.as_bytes().to_vec()),
    )]));
    s
}

/// A member's `/v1/status` as the real member reports it before anything is replicated:
/// Raft, incarnation `<16 hex digits of the id>`.
pub fn status(id: u64, role: Role) -> Status {
    // From the wire form: fields the member API adds later keep their defaults.
    let wire = json!({
        "id": id,
        "incarnation": Incarnation::from_bits(id),
        "replication": Replication::Raft,
        "role": role,
        "term": 0,
        "leader": null,
        "commitIndex": 0,
        "appliedIndex": 0,
        "lastLogIndex": 0,
        "voters": [],
        "learners": [],
    });
    serde_json::from_value(wire).expect("a member status")
}

/// A Raft member in `term` at `commit` (applied and last log index alike), following
/// `leader`, with these voters.
fn raft(id: u64, role: Role, term: u64, leader: u64, voters: &[u64], commit: u64) -> Status {
    let mut st = status(id, role);
    let e = &mut st.engine;
    e.term = term;
    e.leader = Some(leader);
    e.commit_index = commit;
    e.applied_index = commit;
    e.last_log_index = commit;
    e.voters = voters.to_vec();
    st.voter = voters.contains(&id);
    st
}

/// A Raft leader's `/v1/status` that hears from every other voter and learner.
pub fn leader(id: u64, term: u64, voters: &[u64], learners: &[u64], commit: u64) -> Status {
    let mut st = raft(id, Role::Leader, term, id, voters, commit);
    st.engine.learners = learners.to_vec();
    st.engine.peers = voters
        .iter()
        .chain(learners)
        .filter(|p| **p != id)
        .map(|p| {
            let progress = PeerStatus {
                match_index: Some(commit),
                lag_entries: 0,
                lag_ms: None,
                last_contact_ms: Some(50),
            };
            (*p, progress)
        })
        .collect();
    st
}

/// A Raft follower's `/v1/status`.
pub fn follower(id: u64, term: u64, leader: u64, voters: &[u64], commit: u64) -> Status {
    raft(id, Role::Follower, term, leader, voters, commit)
}

/// A freshly started member that belongs to no cluster yet.
pub fn blank(id: u64) -> Status {
    status(id, Role::Learner)
}

impl Harness {
    /// Starts the API mock and [`MAX_MEMBERS`] member servers.
    pub async fn start(world: World) -> Harness {
        let world = Arc::new(Mutex::new(world));
        let log: Arc<Mutex<Vec<Call>>> = Arc::default();
        let mut tasks = Vec::new();

        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tasks.push(tokio::spawn(api_server(handle, world.clone(), log.clone())));
        let client = Client::new(svc, NS);

        let (client_port, peer_port, listeners) = bind_members().await;
        for (ordinal, kind, listener) in listeners {
            let state = MemberState {
                ordinal,
                kind,
                world: world.clone(),
                log: log.clone(),
            };
            let app = axum::Router::new().fallback(member).with_state(state);
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }

        let members = MemberClient::new()
            .expect("member client")
            .with_ports(client_port, peer_port);
        let reporter = Reporter {
            controller: "caplab-operator".into(),
            instance: Some("test".into()),
        };
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client, reporter),
            metrics: Metrics::default(),
            members,
            node_image: IMAGE.into(),
            cli_image: "caplab/cli:0.1.0".into(),
            written: Default::default(),
            backoff: Default::default(),
            announced: Default::default(),
        });
        Harness {
            world,
            log,
            ctx,
            tasks,
        }
    }

    /// Locks the world.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Reconciles the world's RegisterCluster once (with a timeout).
    pub async fn reconcile(&self) -> Result<Action, Error> {
        let rc = self
            .world()
            .rc
            .clone()
            .expect("world has a RegisterCluster");
        tokio::time::timeout(
            Duration::from_secs(30),
            reconcile(Arc::new(rc), self.ctx.clone()),
        )
        .await
        .expect("reconcile timed out")
    }

    /// What the controller does after `err` from a reconcile of the world's RegisterCluster.
    pub fn error_policy(&self, err: &Error) -> Action {
        let rc = self
            .world()
            .rc
            .clone()
            .expect("world has a RegisterCluster");
        error_policy(Arc::new(rc), err, self.ctx.clone())
    }

    /// What the operator does when the watch's store holds `live` (the world's
    /// RegisterCluster when `true`, none when it was deleted).
    pub fn watched(&self, live: bool) {
        let rc = self.world().rc.clone().filter(|_| live).map(Arc::new);
        self.ctx.forget_deleted(&Vec::from_iter(rc));
    }

    /// Takes the calls recorded so far.
    pub fn take_log(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.log))
    }
}

/// Keeps only the API calls.
pub fn api_calls(log: &[Call]) -> Vec<&Call> {
    log.iter().filter(|c| c.who == "api").collect()
}

/// Keeps only the member calls to this path.
pub fn member_calls<'a>(log: &'a [Call], path: &str) -> Vec<&'a Call> {
    log.iter()
        .filter(|c| c.who.starts_with("member-") && c.path == path)
        .collect()
}

/// The events the operator published: (type, reason, note).
pub fn events(log: &[Call]) -> Vec<(String, String, String)> {
    log.iter()
        .filter(|c| {
            c.who == "api" && c.path == format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
        })
        .map(|c| {
            let s = |k: &str| c.body[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("note"))
        })
        .collect()
}

/// Every Event publication, a repeat of an earlier Event included (the recorder then patches
/// that Event's series): (type, reason, note).
pub fn published_events(log: &[Call]) -> Vec<(String, String, String)> {
    let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    log.iter()
        .filter(|c| c.who == "api" && c.path.starts_with(&events))
        .map(|c| {
            let s = |k: &str| c.body[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("note"))
        })
        .collect()
}

/// The one status patch of a reconcile.
pub fn status_patch(log: &[Call]) -> Value {
    let path = format!("/apis/caplab.dev/v1alpha1/namespaces/{NS}/registerclusters/{NAME}/status");
    let patches: Vec<&Call> = log.iter().filter(|c| c.api("PATCH", &path)).collect();
    assert_eq!(patches.len(), 1, "one status patch expected");
    let p = patches[0];
    assert_server_side_apply(p);
    p.body["status"].clone()
}

/// A server-side apply by the operator's field manager, forced.
pub fn assert_server_side_apply(c: &Call) {
    assert_eq!(
        c.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{} is not server-side apply",
        c.line()
    );
    assert_eq!(
        c.query.get("fieldManager").map(String::as_str),
        Some("caplab-operator"),
        "{} field manager",
        c.line()
    );
    assert_eq!(
        c.query.get("force").map(String::as_str),
        Some("true"),
        "{} force",
        c.line()
    );
}

/// Status condition `type_` → (status, reason, message).
pub fn condition(status: &Value, type_: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no condition {type_} in {status}"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

// ---------------------------------------------------------------- API server

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

fn body_json(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{what} not found"), "reason": "NotFound", "code": 404
        }),
    )
}

/// The API server's failure `Status` for `code` (422 Invalid at `field` of `object`, with
/// its cause, as the real server sends it; 503 ServiceUnavailable, ...).
fn refusal(code: u16, object: &str, field: &str) -> (u16, Value) {
    let invalid = format!("{object} is invalid: {field}: Invalid value");
    let (reason, message) = match code {
        422 => ("Invalid", invalid.as_str()),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        _ => ("InternalError", "mock API: refused"),
    };
    let causes =
        json!([{"reason": "FieldValueInvalid", "message": "Invalid value", "field": field}]);
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code,
               "details": {"causes": if code == 422 { causes } else { json!([]) }}}),
    )
}

/// Answers one API request from the world.
fn answer(world: &Mutex<World>, c: &Call) -> Option<(u16, Value)> {
    let core = format!("/api/v1/namespaces/{NS}");
    let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    let rcs = format!("/apis/caplab.dev/v1alpha1/namespaces/{NS}/registerclusters");
    let secret = format!("{core}/secrets/{}", resources::secret_name(NAME));
    let mut w = lock(world);
    let m = c.method.as_str();
    let p = c.path.as_str();
    if let Some(reply) = experiment_answer(&mut w, c) {
        return Some(reply);
    }
    if m == "GET" && p == format!("{core}/pods") {
        let items: Vec<Value> = w
            .pods
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect();
        return Some((
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
        ));
    }
    if m == "GET" && p == secret {
        return Some(match &w.secret {
            Some(s) => (200, serde_json::to_value(s).unwrap_or_default()),
            None => not_found("secret"),
        });
    }
    if m == "POST" && p == format!("{core}/secrets") {
        w.secret = serde_json::from_value(c.body.clone()).ok();
        return Some((201, c.body.clone()));
    }
    if let Some(code) = w.pod_apply_fails.filter(|_| m == "PATCH") {
        if p.starts_with(&format!("{core}/pods/")) {
            let field = w.invalid_field.unwrap_or("spec.containers[0].image");
            return Some(refusal(code, "Pod \"demo-0\"", field));
        }
    }
    if m == "PATCH"
        && (p == format!("{core}/services/{NAME}") || p.starts_with(&format!("{core}/pods/")))
    {
        return Some((200, c.body.clone()));
    }
    if m == "DELETE" && p.starts_with(&format!("{core}/pods/")) {
        return Some((
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ));
    }
    let claim = p.strip_prefix(&format!("{core}/persistentvolumeclaims/"));
    if let Some(found) = claim.and_then(|n| w.claims.get(n)).filter(|_| m == "GET") {
        return Some((200, found.clone()));
    }
    if p.starts_with(&format!("{core}/persistentvolumeclaims/")) && matches!(m, "GET" | "DELETE") {
        return Some(not_found("persistentvolumeclaim"));
    }
    if m == "POST" && p == events {
        return Some((201, c.body.clone()));
    }
    if m == "PATCH" && p == format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}") {
        if w.pdb_forbidden {
            return Some((
                403,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "poddisruptionbudgets.policy is forbidden", "reason": "Forbidden", "code": 403}),
            ));
        }
        return Some(if w.no_policy_v1 {
            not_found("the server could not find the requested resource")
        } else {
            (200, c.body.clone())
        });
    }
    if m == "PATCH"
        && p == format!("/apis/policy/v1beta1/namespaces/{NS}/poddisruptionbudgets/{NAME}")
    {
        return Some((200, c.body.clone()));
    }
    if m == "PATCH" && p.starts_with(&format!("{events}/")) {
        return Some((200, c.body.clone()));
    }
    if m == "PATCH" && p.starts_with(&format!("{rcs}/")) && p.ends_with("/status") {
        if let Some(code) = w.status_patch_fails {
            return Some(refusal(
                code,
                &format!("RegisterCluster \"{NAME}\""),
                "status",
            ));
        }
        let rc = w.rc.as_mut()?;
        rc.status = serde_json::from_value(c.body["status"].clone()).ok();
        return Some((200, serde_json::to_value(&*rc).unwrap_or_default()));
    }
    None
}

/// The objects a run needs: its Job (stored by name; 404 until applied), the run's pods
/// (listed by `job-name`), and the runner's ServiceAccount, Role, RoleBinding and PVC
/// (server-side applies answered with what was sent).
fn experiment_answer(w: &mut World, c: &Call) -> Option<(u16, Value)> {
    let core = format!("/api/v1/namespaces/{NS}");
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs/");
    let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/");
    let (m, p) = (c.method.as_str(), c.path.as_str());
    if let Some(name) = p.strip_prefix(&jobs) {
        return Some(match m {
            "GET" => match w.jobs.get(name) {
                Some(j) => (200, j.clone()),
                None => not_found("job"),
            },
            "PATCH" => {
                w.jobs.insert(name.to_string(), c.body.clone());
                (200, c.body.clone())
            }
            "DELETE" => match w.jobs.remove(name) {
                Some(j) => (200, j),
                None => not_found("job"),
            },
            _ => return None,
        });
    }
    let selector = c.query.get("labelSelector").map(String::as_str);
    if m == "GET"
        && p == format!("{core}/pods")
        && selector.is_some_and(|s| s.starts_with("job-name="))
    {
        let items: Vec<Value> = w
            .job_pods
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .collect();
        return Some((
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
        ));
    }
    let runner = [
        format!("{core}/serviceaccounts/"),
        format!("{core}/persistentvolumeclaims/"),
        format!("{rbac}roles/"),
        format!("{rbac}rolebindings/"),
    ];
    if m == "PATCH" && runner.iter().any(|r| p.starts_with(r.as_str())) {
        return Some((200, c.body.clone()));
    }
    None
}

async fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    world: Arc<Mutex<World>>,
    log: Arc<Mutex<Vec<Call>>>,
) {
    while let Some((req, send)) = handle.next_request().await {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let header = |k: &str| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut call = Call {
            who: "api".into(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parse_query(parts.uri.query()),
            content_type: header("content-type"),
            auth: header("authorization"),
            body: body_json(&bytes),
            identity: identity_headers(&parts.headers),
            unexpected: false,
        };
        let (code, reply) = match answer(&world, &call) {
            Some(r) => r,
            None => {
                call.unexpected = true;
                (
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": format!("mock API: unexpected {}", call.line()), "reason": "InternalError", "code": 500}),
                )
            }
        };
        lock(&log).push(call);
        let resp = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
            .expect("response");
        send.send_response(resp);
    }
}

// ---------------------------------------------------------------- members

#[derive(Clone)]
struct MemberState {
    ordinal: u32,
    kind: &'static str,
    world: Arc<Mutex<World>>,
    log: Arc<Mutex<Vec<Call>>>,
}

async fn member(
    State(s): State<MemberState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let call = Call {
        who: format!("member-{}/{}", s.ordinal, s.kind),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: parse_query(uri.query()),
        content_type: header("content-type"),
        auth: header("authorization"),
        body: body_json(&body),
        identity: identity_headers(&headers),
        unexpected: false,
    };
    let (status, replaced) = {
        let w = lock(&s.world);
        (
            w.members.get(&s.ordinal).cloned(),
            w.replaced.get(&s.ordinal).cloned(),
        )
    };
    let misdirected = status
        .as_ref()
        .and_then(|st| misdirected(st, replaced.as_deref(), &call.identity));
    lock(&s.log).push(call);
    match (method.as_str(), uri.path()) {
        ("GET", paths::STATUS) => match status {
            Some(st) => (
                StatusCode::OK,
                axum::Json(serde_json::to_value(st).unwrap_or_default()),
            ),
            None => down(),
        },
        (_, p) if p.starts_with("/v1/admin/") && misdirected.is_some() => {
            let refusal = ErrorBody {
                reason: misdirected.map(str::to_string),
                ..ErrorBody::new("not the member addressed")
            };
            (StatusCode::MISDIRECTED_REQUEST, to_json(&refusal))
        }
        (m, p) if p.starts_with("/v1/admin/") => match status {
            Some(st) => admin_answer(m, p, &st, &body),
            None => down(),
        },
        _ => down(),
    }
}

/// What a member that is down answers here (the real one does not answer at all; the
/// operator's client treats both as unreachable).
fn down() -> (StatusCode, axum::Json<Value>) {
    let body = ErrorBody {
        outcome: Some("not-applied".into()),
        ..ErrorBody::new("down")
    };
    (StatusCode::SERVICE_UNAVAILABLE, to_json(&body))
}

fn to_json(value: &impl serde::Serialize) -> axum::Json<Value> {
    axum::Json(serde_json::to_value(value).unwrap_or_default())
}

/// What the real member (node/src/api/peer.rs) answers to an admin call that passed the
/// token and identity checks, given its own status, built from the member API's types: Raft
/// has no leadership transfer (openraft 0.9: 501), the primary-mode calls are refused by a
/// Raft member (400), a promotion or a switchover answers with the epoch, faults and peers
/// answer what is now set, and a path the member does not serve is a 404.
fn admin_answer(
    method: &str,
    path: &str,
    st: &Status,
    body: &[u8],
) -> (StatusCode, axum::Json<Value>) {
    let raft = st.engine.replication == Replication::Raft;
    let refuse = |code, message: &str| (code, to_json(&ErrorBody::new(message)));
    let ok = (StatusCode::OK, to_json(&Ack::OK));
    match (method, path) {
        ("POST", paths::ADMIN_INIT) | ("POST", paths::ADMIN_LEARNERS) => ok,
        ("PUT", paths::ADMIN_VOTERS) | ("POST", paths::ADMIN_VOTERS) => ok,
        ("POST", paths::ADMIN_TRANSFER_LEADER) if raft => refuse(
            StatusCode::NOT_IMPLEMENTED,
            "openraft 0.9 has no leadership transfer; remove the leader from the voters \
             instead (it steps down once the change commits)",
        ),
        ("POST", paths::ADMIN_TRANSFER_LEADER) | ("POST", paths::ADMIN_PROMOTE) if !raft => (
            StatusCode::OK,
            to_json(&Ack::with_epoch(st.engine.term + 1)),
        ),
        ("PUT", paths::ADMIN_PRIMARY) if !raft => ok,
        ("POST", paths::ADMIN_PROMOTE) | ("PUT", paths::ADMIN_PRIMARY) => refuse(
            StatusCode::BAD_REQUEST,
            "this member runs Raft; promote/primary/replicate are for --replication async|sync",
        ),
        ("PUT", paths::ADMIN_PEERS) => match serde_json::from_slice::<PeersRequest>(body) {
            Ok(request) => (StatusCode::OK, to_json(&peers_view(&request))),
            Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        ("PUT", paths::ADMIN_FAULTS) => match serde_json::from_slice::<FaultSet>(body) {
            Ok(faults) => {
                let view = FaultsView {
                    faults,
                    ..FaultsView::default()
                };
                (StatusCode::OK, to_json(&view))
            }
            Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        _ => refuse(StatusCode::NOT_FOUND, &format!("no route {method} {path}")),
    }
}

/// The address book a member holds after `PUT /v1/admin/peers` with `request`.
fn peers_view(request: &PeersRequest) -> PeersView {
    let peers = &request.peers;
    PeersView {
        incarnations: peers
            .iter()
            .filter_map(|(id, e)| Some((*id, e.incarnation()?.clone())))
            .collect(),
        peers: peers
            .iter()
            .map(|(id, e)| (*id, e.addr().to_string()))
            .collect(),
    }
}

/// The identity contract's check, as the real member does it: a header naming another member
/// id or incarnation is refused (`reason`); no header, no check.
fn misdirected(
    st: &Status,
    replaced: Option<&str>,
    identity: &BTreeMap<String, String>,
) -> Option<&'static str> {
    if identity
        .get(TO_HEADER)
        .is_some_and(|to| *to != st.id.to_string())
    {
        return Some("wrong-member");
    }
    let actual = replaced.unwrap_or(st.incarnation.as_str());
    match identity.get(TO_INCARNATION_HEADER) {
        Some(want) if want != actual => Some("wrong-incarnation"),
        _ => None,
    }
}

fn identity_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-caplab-"))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

type Listeners = Vec<(u32, &'static str, TcpListener)>;

/// Binds client and peer listeners for every member on the same two ports.
async fn bind_members() -> (u16, u16, Listeners) {
    for _ in 0..20 {
        let Ok(c0) = TcpListener::bind("127.0.0.1:0").await else {
            continue;
        };
        let Ok(p0) = TcpListener::bind("127.0.0.1:0").await else {
            continue;
        };
        let (cp, pp) = match (c0.local_addr(), p0.local_addr()) {
            (Ok(c), Ok(p)) => (c.port(), p.port()),
            _ => continue,
        };
        let mut out: Listeners = vec![(0, "client", c0), (0, "peer", p0)];
        let mut ok = true;
        for o in 1..MAX_MEMBERS {
            for (kind, port) in [("client", cp), ("peer", pp)] {
                let addr: SocketAddr = format!("{}:{port}", member_ip(o)).parse().expect("address");
                match TcpListener::bind(addr).await {
                    Ok(l) => out.push((o, kind, l)),
                    Err(_) => ok = false,
                }
            }
        }
        if ok {
            return (cp, pp, out);
        }
    }
    panic!("could not bind member ports on 127.0.0.1-{MAX_MEMBERS}");
}
