//! `caplab` against a RegisterCluster through the Kubernetes API, with a fake API server: a
//! plain HTTP server that serves one RegisterCluster, accepts merge patches of it (and, as the
//! operator would, starts the faults of a valid spec in `status.faults` or reports an invalid
//! one in `SpecValid`), and plays the pod proxy in front of a one-member in-memory register.
//! It checks the paths the CLI uses, that `status`/`kv`/`workload` work through the proxy,
//! that a fault schedule edits `spec.faults` (keeping other faults) and records its window,
//! that faults the cluster cannot have or the operator refuses fail the workload, and that a
//! workload waits for the cluster to be ready.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use caplab_api::status::Status;
use common::caplab;
use serde_json::{json, Value};

const CLUSTER_PATH: &str = "/apis/caplab.dev/v1alpha1/namespaces/lab/registerclusters/demo";
const PROXY: &str = "/api/v1/namespaces/lab/pods/demo-0:8080/proxy";

#[derive(Default)]
struct State {
    cluster: Value,
    version: u64,
    register: HashMap<String, i64>,
    patches: Vec<Value>,
    unknown_paths: Vec<String>,
    /// GETs of the RegisterCluster so far.
    cluster_reads: usize,
}

struct FakeApiServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

fn cluster() -> Value {
    json!({
        "apiVersion": "caplab.dev/v1alpha1",
        "kind": "RegisterCluster",
        "metadata": {"name": "demo", "namespace": "lab", "generation": 1, "resourceVersion": "1"},
        "spec": {"replicas": 1, "replication": "raft",
                 "faults": [{"name": "theirs", "kind": "pause", "targets": [0]}]},
        "status": {
            "observedGeneration": 1, "phase": "Ready", "replicas": 1, "readyReplicas": 1,
            "ready": "1/1", "leader": "demo-0", "leaderId": 1, "term": 2, "commitIndex": 9,
            "members": [{"name": "demo-0", "ordinal": 0, "id": 1, "role": "leader", "term": 2,
                         "commitIndex": 9, "appliedIndex": 9, "lag": 0, "reachable": true}],
            "faults": [], "conditions": [{"type": "Available", "status": "True",
                "lastTransitionTime": "2025-01-01T00:00:00Z", "reason": "Quorum", "message": "ok"}]
        }
    })
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    if let Some(t) = target.as_object_mut() {
                        t.remove(k);
                    }
                } else {
                    merge(&mut target[k], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// What the operator does with a changed spec, in the shape it writes (operator/src/crd.rs):
/// a new generation, observed at once; with a valid spec, every new fault started and every
/// removed one dropped; with an invalid one (here: a delay without latencyMs, one of the
/// operator's rules), `SpecValid=False` naming the fault, and the faults left as they were.
fn play_operator(cluster: &mut Value) {
    let generation = cluster["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    cluster["metadata"]["generation"] = json!(generation);
    cluster["status"]["observedGeneration"] = json!(generation);
    let spec: Vec<Value> = cluster["spec"]["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let name = |f: &Value| f["name"].as_str().unwrap_or("").to_string();
    let invalid: Vec<String> = spec
        .iter()
        .filter(|f| f["kind"] == "delay" && f.get("latencyMs").is_none())
        .map(|f| format!("fault {:?}: delay needs latencyMs", name(f)))
        .collect();
    let conditions = cluster["status"]["conditions"]
        .as_array_mut()
        .expect("conditions");
    conditions.retain(|c| c["type"] != "SpecValid");
    let valid = invalid.is_empty();
    conditions.push(
        json!({"type": "SpecValid", "status": if valid { "True" } else { "False" },
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "reason": if valid { "Valid" } else { "Invalid" },
        "message": if valid { "spec is valid".to_string() } else { invalid.join("; ") }}),
    );
    if !valid {
        return;
    }
    let mut statuses: Vec<Value> = cluster["status"]["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    statuses.retain(|st| spec.iter().any(|f| name(f) == name(st)));
    for f in &spec {
        if !statuses.iter().any(|st| name(st) == name(f)) {
            statuses.push(
                json!({"name": name(f), "kind": f["kind"], "state": "active",
                "targets": [0], "since": "2025-01-01T00:00:00Z", "specHash": "0"}),
            );
        }
    }
    cluster["status"]["faults"] = json!(statuses);
}

/// The one member's `/v1/status`, read into the member's own type (so it has the member's
/// shape) and served as the member serves it: a single-voter Raft leader.
fn leader_status() -> Value {
    let status: Status = serde_json::from_value(json!({
        "id": 1, "incarnation": "60bba55118befe94", "voter": true, "replication": "raft",
        "role": "leader", "term": 2, "leader": 1, "commitIndex": 9, "appliedIndex": 9,
        "lastLogIndex": 9, "voters": [1], "learners": [], "peers": {}, "paused": false,
        "faults": {}
    }))
    .expect("a member's status");
    serde_json::to_value(status).unwrap_or_default()
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut stream = reader.into_inner();
    let mut s = state.lock().expect("state");
    match (method.as_str(), path) {
        ("GET", CLUSTER_PATH) => {
            s.cluster_reads += 1;
            let c = s.cluster.clone();
            respond(&mut stream, 200, &c);
        }
        ("PATCH", CLUSTER_PATH) => {
            let expected = s.version.to_string();
            if body["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| v != expected)
            {
                respond(
                    &mut stream,
                    409,
                    &json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "message": "conflict", "reason": "Conflict", "code": 409}),
                );
                return;
            }
            s.patches.push(body.clone());
            let mut patch = body;
            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            merge(&mut s.cluster, &patch);
            play_operator(&mut s.cluster);
            s.version += 1;
            let v = s.version.to_string();
            s.cluster["metadata"]["resourceVersion"] = json!(v);
            let c = s.cluster.clone();
            respond(&mut stream, 200, &c);
        }
        _ => {
            let Some(rest) = path.strip_prefix(PROXY) else {
                s.unknown_paths.push(format!("{method} {target}"));
                respond(
                    &mut stream,
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404}),
                );
                return;
            };
            let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
            match (method.as_str(), segments.as_slice()) {
                ("GET", ["v1", "status"]) => respond(&mut stream, 200, &leader_status()),
                ("GET", ["v1", "kv", key])
                    if ["consistency=linearizable", "consistency=local"].contains(&query) =>
                {
                    let v = s.register.get(*key).copied().unwrap_or(0);
                    respond(&mut stream, 200, &json!({"key": key, "value": v}));
                }
                ("PUT", ["v1", "kv", key]) => match body["value"].as_i64() {
                    Some(v) => {
                        s.register.insert(key.to_string(), v);
                        respond(&mut stream, 200, &json!({"key": key, "value": v}));
                    }
                    None => respond(&mut stream, 400, &json!({"error": "no value"})),
                },
                ("POST", ["v1", "kv", key, "cas"]) => {
                    let current = s.register.get(*key).copied().unwrap_or(0);
                    match (body["expected"].as_i64(), body["new"].as_i64()) {
                        (Some(e), Some(n)) if e == current => {
                            s.register.insert(key.to_string(), n);
                            respond(&mut stream, 200, &json!({"key": key, "value": n}));
                        }
                        (Some(_), Some(_)) => respond(
                            &mut stream,
                            409,
                            &json!({"error": "compare-and-set failed", "current": current}),
                        ),
                        _ => respond(&mut stream, 400, &json!({"error": "bad body"})),
                    }
                }
                _ => {
                    s.unknown_paths.push(format!("{method} {target}"));
                    respond(&mut stream, 404, &json!({"error": "no route"}));
                }
            }
        }
    }
}

impl FakeApiServer {
    fn start() -> FakeApiServer {
        FakeApiServer::serving(cluster())
    }

    fn serving(cluster: Value) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            cluster,
            version: 1,
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        FakeApiServer { port, state }
    }

    fn kubeconfig(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: fake, cluster: {{server: \"http://127.0.0.1:{}\"}}}}]\n\
                 users: [{{name: me, user: {{token: test}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: me, namespace: lab}}}}]\n\
                 current-context: fake\n",
                self.port
            ),
        )
        .expect("write kubeconfig");
        path
    }
}

fn run(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::run(
        caplab()
            .env("KUBECONFIG", kubeconfig)
            .env_remove("CAPLAB_ADDR")
            .env_remove("CAPLAB_CLUSTER")
            .env_remove("CAPLAB_NAMESPACE")
            .args(args),
    );
    (out.code, out.stdout, out.stderr)
}

#[test]
fn status_kv_and_workload_through_the_api_server() {
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path());

    // status: the resource's status plus the member's own through the pod proxy.
    let (code, stdout, stderr) = run(&kubeconfig, &["status", "demo", "--live"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("demo (namespace lab)"), "{stdout}");
    assert!(stdout.contains("Phase:          Ready"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("demo-0 *")),
        "{stdout}"
    );
    let live = stdout.split("Live").nth(1).unwrap_or_default();
    assert!(
        live.lines()
            .any(|l| l.starts_with("demo-0") && l.contains("leader")),
        "{stdout}"
    );

    // kv through the proxy (-n given explicitly this time).
    let (code, stdout, stderr) = run(
        &kubeconfig,
        &["kv", "put", "x", "5", "--cluster", "demo", "-n", "lab"],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let (code, stdout, _) = run(
        &kubeconfig,
        &["kv", "get", "x", "--cluster", "demo", "--member", "0"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout)
            .ok()
            .map(|v| v["value"].clone()),
        Some(json!(5))
    );
    let (code, _, stderr) = run(
        &kubeconfig,
        &["kv", "cas", "x", "4", "6", "--cluster", "demo"],
    );
    assert_eq!(code, Some(1), "a CAS mismatch exits 1");
    assert!(stderr.contains("409"), "{stderr}");

    // A missing cluster is a clear error.
    let (code, _, stderr) = run(&kubeconfig, &["status", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not found"), "{stderr}");

    // workload through the proxy with a fault window in the middle.
    let history = dir.path().join("history.json");
    let history_arg = history.to_string_lossy().into_owned();
    let (code, stdout, stderr) = run(
        &kubeconfig,
        &[
            "workload",
            "--cluster",
            "demo",
            "--duration",
            "2.5",
            "--rate",
            "40",
            "--clients",
            "2",
            "--keys",
            "2",
            "--fault-at",
            "0.5s:partition-leader:1s",
            "--out",
            &history_arg,
            "-q",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events_path = dir.path().join("history.events.json");
    let events: Value = serde_json::from_str(
        &std::fs::read_to_string(&events_path).unwrap_or_else(|e| panic!("{e}\n{stderr}")),
    )
    .expect("events JSON");
    let windows = events.as_array().expect("a list of windows");
    assert_eq!(windows.len(), 1, "{events}");
    assert_eq!(windows[0]["name"], "partition-leader");
    let start = windows[0]["start"].as_u64().expect("start");
    let end = windows[0]["end"].as_u64().expect("end");
    assert!((400_000_000..1_400_000_000).contains(&start), "{events}");
    assert!(end > start + 800_000_000 && end < 2_500_000_000, "{events}");
    assert!(
        stderr.contains("--events"),
        "the hint names the events file: {stderr}"
    );

    let state = server.state.lock().expect("state");
    assert_eq!(
        state.unknown_paths,
        ["GET /apis/caplab.dev/v1alpha1/namespaces/lab/registerclusters/nope"],
        "unexpected requests"
    );
    // Two patches: the fault in (next to the other fault), then out again.
    assert_eq!(state.patches.len(), 2, "{:?}", state.patches);
    let added = state.patches[0]["spec"]["faults"]
        .as_array()
        .expect("faults");
    assert_eq!(added.len(), 2, "{added:?}");
    assert_eq!(added[0]["name"], "theirs");
    assert!(added[1]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("caplab-")));
    assert_eq!(added[1]["kind"], "partition");
    assert_eq!(added[1]["groups"], json!([["leader"], ["followers"]]));
    assert!(state.patches[0]["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        state.patches[1]["spec"]["faults"],
        json!([{"name": "theirs", "kind": "pause", "targets": [0]}])
    );
    assert!(
        !state.register.is_empty(),
        "the workload wrote through the proxy"
    );
    drop(state);

    // The history checks out and the report shades the window.
    let (code, stdout, _) = run(&kubeconfig, &["check", &history_arg]);
    assert_eq!(code, Some(0), "{stdout}");
    let page = dir.path().join("report.html");
    let (code, _, stderr) = run(
        &kubeconfig,
        &[
            "report",
            &history_arg,
            "--events",
            &events_path.to_string_lossy(),
            "-o",
            &page.to_string_lossy(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let html = std::fs::read_to_string(&page).expect("report");
    assert!(html.contains("class=\"fault-window\"") && html.contains("partition-leader"));
}

#[test]
fn a_member_the_api_server_cannot_reach_gives_no_answer() {
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path());
    // There is no pod demo-5: the API server answers 404 for itself and forwards nothing, so
    // the write got no answer from a member (exit 2), and certainly was not applied.
    let (code, stdout, stderr) = run(
        &kubeconfig,
        &["kv", "put", "x", "5", "--cluster", "demo", "--member", "5"],
    );
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("API server HTTP 404"), "{stderr}");
    assert!(server.state.lock().expect("state").register.is_empty());
}

/// `caplab workload --cluster demo -q --rate 20 --out <dir>/history.json <extra>`.
fn workload(kubeconfig: &Path, dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let history = dir.join("history.json");
    let history = history.to_string_lossy();
    let mut args = vec![
        "workload",
        "--cluster",
        "demo",
        "-q",
        "--rate",
        "20",
        "--out",
        &history,
    ];
    args.extend_from_slice(extra);
    run(kubeconfig, &args)
}

#[test]
fn a_fault_on_a_member_the_cluster_does_not_have_fails_before_the_workload_starts() {
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path());
    let (code, stdout, stderr) = workload(
        &kubeconfig,
        dir.path(),
        &["--duration", "1", "--fault-at", "0.2s:crash-7:2s"],
    );
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("crash-7") && stderr.contains("ordinal 7") && stderr.contains("1 member"),
        "{stderr}"
    );
    let state = server.state.lock().expect("state");
    assert!(state.patches.is_empty(), "{:?}", state.patches);
    assert!(state.register.is_empty(), "the workload ran");
    assert!(!dir.path().join("history.json").exists());
}

#[test]
fn a_fault_the_operator_refuses_fails_the_workload() {
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path());
    let schedule = dir.path().join("faults.yaml");
    std::fs::write(
        &schedule,
        "- {at: 0.2s, fault: {kind: delay, targets: [0]}}\n",
    )
    .expect("write the schedule");
    let (code, stdout, stderr) = workload(
        &kubeconfig,
        dir.path(),
        &["--duration", "30", "--faults", &schedule.to_string_lossy()],
    );
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("refused") && last.contains("delay needs latencyMs"),
        "{stderr}"
    );
    assert!(!stderr.contains("active since"), "{stderr}");
    // The workload stopped early, and the refused fault is gone from the spec.
    let history = std::fs::read_to_string(dir.path().join("history.json")).expect("history");
    let history = caplab_checker::History::from_json(&history).expect("a valid history");
    assert!(
        history.end_time() < 20_000_000_000,
        "ran {} ns",
        history.end_time()
    );
    let state = server.state.lock().expect("state");
    assert_eq!(
        state.cluster["spec"]["faults"],
        json!([{"name": "theirs", "kind": "pause", "targets": [0]}])
    );
}

#[test]
fn a_workload_waits_for_the_cluster_to_be_ready() {
    let mut creating = cluster();
    creating["status"]["phase"] = json!("Creating");
    creating["status"]["conditions"] = json!([{"type": "Available", "status": "False",
        "lastTransitionTime": "2025-01-01T00:00:00Z", "reason": "NoLeader",
        "message": "no leader elected yet"}]);
    let server = FakeApiServer::serving(creating);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.kubeconfig(dir.path());

    // Not ready within the deadline: one line, and nothing recorded.
    let (code, stdout, stderr) = workload(
        &kubeconfig,
        dir.path(),
        &["--duration", "1", "--ready-timeout", "1s"],
    );
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("not ready within") && last.contains("no leader elected yet"),
        "{stderr}"
    );
    assert!(server.state.lock().expect("state").register.is_empty());

    // Ready once the workload has looked at the status (a read to plan, one to probe): the
    // workload says it waits, then runs.
    let state = server.state.clone();
    let reads_before = state.lock().expect("state").cluster_reads;
    let became_ready = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + common::DEADLINE;
        loop {
            let mut s = state.lock().expect("state");
            if s.cluster_reads >= reads_before + 2 {
                s.cluster["status"]["phase"] = json!("Ready");
                s.cluster["status"]["conditions"][0]["status"] = json!("True");
                return;
            }
            drop(s);
            assert!(
                std::time::Instant::now() < deadline,
                "the workload never read the status"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let (code, stdout, stderr) = workload(
        &kubeconfig,
        dir.path(),
        &["--duration", "1", "--ready-timeout", "60s"],
    );
    became_ready.join().expect("the status thread");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("not ready (phase Creating"), "{stderr}");
    assert!(stderr.contains("ready after"), "{stderr}");
    assert!(!server.state.lock().expect("state").register.is_empty());
}
