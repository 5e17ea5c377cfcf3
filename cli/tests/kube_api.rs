//! `caplab` against a RegisterCluster through the Kubernetes API, with a fake API server: a
//! plain HTTP server that serves one RegisterCluster, accepts merge patches of it, and plays
//! the pod proxy in front of a one-member in-memory register. It checks the paths the CLI
//! uses, that `status`/`kv`/`workload` work through the proxy, and that a fault schedule
//! edits `spec.faults` (keeping other faults) and records its window.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
                ("GET", ["v1", "status"]) => respond(
                    &mut stream,
                    200,
                    &json!({
                    "id": 1, "role": "leader", "term": 2, "leader": 1, "commitIndex": 9,
                    "appliedIndex": 9, "peers": {}, "paused": false, "faults": {}}),
                ),
                ("GET", ["v1", "kv", key]) if query == "consistency=linearizable" => {
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            cluster: cluster(),
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
