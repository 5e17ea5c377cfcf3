//! Reconcile tests against a mocked API server (kube-rs `tower-test` pattern)
//! and stand-in members: create, invalid spec, scale up, scale down, fault
//! start and expiry. See `mock/mod.rs` for the doubles.

mod mock;

use std::collections::BTreeMap;

use caplab_operator::controller::{FAST, INVALID, SLOW};
use caplab_operator::crd::{RegisterCluster, RegisterClusterStatus};
use caplab_operator::faults::spec_hash;
use caplab_operator::member_client::NodeStatus;
use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use mock::{
    api_calls, assert_server_side_apply, blank, cluster, condition, events, follower, leader,
    member_calls, running_pod, status_patch, token_secret, Call, Harness, World, NAME, NS, TOKEN,
};

const UID: &str = "11111111-2222-3333-4444-555555555555";

fn demo(replicas: i32, extra_spec: &str) -> RegisterCluster {
    cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {NAME}, namespace: {NS}, uid: {UID}, generation: 2}}
spec:
  replicas: {replicas}
{extra_spec}"
    ))
}

fn with_status(mut rc: RegisterCluster, st: Value) -> RegisterCluster {
    let st: RegisterClusterStatus = serde_json::from_value(st).expect("status JSON");
    rc.status = Some(st);
    rc
}

/// `METHOD path` of every API call, in order.
fn api_lines(log: &[Call]) -> Vec<String> {
    let calls = api_calls(log);
    for c in &calls {
        assert!(!c.unexpected, "unexpected API call {}", c.line());
    }
    calls.iter().map(|c| c.line()).collect()
}

fn pod_path(o: u32) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{NAME}-{o}")
}

const PODS: &str = "/api/v1/namespaces/test/pods";
const SECRET: &str = "/api/v1/namespaces/test/secrets/demo-admin-token";
const SECRETS: &str = "/api/v1/namespaces/test/secrets";
const SERVICE: &str = "/api/v1/namespaces/test/services/demo";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/test/events";
const STATUS: &str = "/apis/caplab.dev/v1alpha1/namespaces/test/registerclusters/demo/status";

fn line(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

/// Admin calls (`/v1/admin/<what>`) sent to members, as (member, body).
fn admin(log: &[Call], what: &str) -> Vec<(String, Value)> {
    let calls = member_calls(log, &format!("/v1/admin/{what}"));
    for c in &calls {
        assert!(
            c.who.ends_with("/peer"),
            "{} went to {}, not the peer port",
            c.line(),
            c.who
        );
        assert_eq!(
            c.auth.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} without the admin token",
            c.line()
        );
    }
    calls
        .into_iter()
        .map(|c| (c.who.trim_end_matches("/peer").to_string(), c.body.clone()))
        .collect()
}

fn assert_owned(obj: &Value) {
    let owners = obj["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("no ownerReferences in {obj}"));
    assert_eq!(owners.len(), 1);
    let o = &owners[0];
    assert_eq!(o["apiVersion"], "caplab.dev/v1alpha1");
    assert_eq!(o["kind"], "RegisterCluster");
    assert_eq!(o["name"], NAME);
    assert_eq!(o["uid"], UID);
    assert_eq!(o["controller"], true);
    assert_eq!(obj["metadata"]["labels"]["caplab.dev/cluster"], NAME);
}

fn requeue_secs(a: &Action) -> f64 {
    // `Action` has no accessor: read its Debug form `Action { requeue_after: Some(4.99s) }`.
    let d = format!("{a:?}");
    let inner = d
        .split("Some(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no requeue in {d}"));
    if let Some(ms) = inner.strip_suffix("ms") {
        ms.parse::<f64>().expect("ms") / 1000.0
    } else {
        inner
            .trim_end_matches('s')
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("cannot read {d}"))
    }
}

/// A bootstrapped 3-member Raft cluster, leader at ordinal `lead`.
fn raft_members(n: u32, lead: u32, term: u64) -> BTreeMap<u32, NodeStatus> {
    let ids: Vec<u64> = (1..=u64::from(n)).collect();
    let leader_id = u64::from(lead) + 1;
    (0..n)
        .map(|o| {
            let id = u64::from(o) + 1;
            let st = if o == lead {
                leader(id, term, &ids, &[], 10)
            } else {
                follower(id, term, leader_id, &ids, 10)
            };
            (o, st)
        })
        .collect()
}

fn bootstrapped_status(replicas: u32, lead: u32, term: u64) -> Value {
    json!({
        "replication": "raft",
        "phase": "Ready",
        "bootstrapped": true,
        "replicas": replicas,
        "nextMemberId": replicas + 1,
        "leader": format!("{NAME}-{lead}"),
        "leaderId": lead + 1,
        "term": term,
        "voters": (1..=replicas).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------ create

#[tokio::test]
async fn create_applies_secret_service_pods_and_writes_creating() {
    let rc = demo(3, "");
    let h = Harness::start(World {
        rc: Some(rc.clone()),
        ..World::default()
    })
    .await;

    let action = h.reconcile().await.expect("reconcile");
    assert_eq!(action, Action::requeue(FAST));
    let log = h.take_log();
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("GET", SECRET),
            line("POST", SECRETS),
            line("PATCH", SERVICE),
            line("PATCH", &pod_path(0)),
            line("POST", EVENTS),
            line("PATCH", &pod_path(1)),
            line("POST", EVENTS),
            line("PATCH", &pod_path(2)),
            line("POST", EVENTS),
            line("PATCH", STATUS),
        ]
    );
    assert!(
        log.iter().all(|c| c.who == "api"),
        "no member is running yet: the operator must not call members"
    );
    let api = api_calls(&log);
    assert_eq!(
        api[0].query.get("labelSelector").map(String::as_str),
        Some("caplab.dev/cluster=demo")
    );

    // The admin-token Secret: created once, owned, with a random token.
    let secret = &api[2].body;
    assert_owned(secret);
    assert_eq!(secret["metadata"]["name"], "demo-admin-token");
    let token = h
        .world()
        .secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8(b.0.clone()).expect("utf8"))
        .expect("token stored");
    assert_eq!(token.len(), 64, "32 random bytes, hex");

    // The client Service, server-side applied and owned.
    assert_server_side_apply(api[3]);
    assert_owned(&api[3].body);
    assert_eq!(api[3].body["kind"], "Service");
    assert_eq!(api[3].body["spec"]["ports"][0]["port"], 8080);
    assert_eq!(api[3].body["spec"]["selector"]["caplab.dev/cluster"], NAME);

    // One pod per ordinal, with fresh member ids 1..=3.
    for (i, o) in [(4usize, 0u32), (6, 1), (8, 2)] {
        let c = api[i];
        assert_server_side_apply(c);
        let pod = &c.body;
        assert_owned(pod);
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["name"], format!("{NAME}-{o}"));
        assert_eq!(
            pod["metadata"]["labels"]["caplab.dev/member"],
            o.to_string()
        );
        assert_eq!(
            pod["metadata"]["annotations"]["caplab.dev/member-id"],
            (o + 1).to_string()
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], mock::IMAGE);
    }
    let evs = events(&log);
    assert_eq!(evs.len(), 3);
    for (o, (type_, reason, note)) in evs.iter().enumerate() {
        assert_eq!(type_, "Normal");
        assert_eq!(reason, "MemberCreated");
        assert_eq!(note, &format!("created pod {NAME}-{o} as member {}", o + 1));
    }

    let st = status_patch(&log);
    assert_eq!(st["phase"], "Creating");
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["ready"], "0/3");
    assert_eq!(st["replication"], "raft");
    assert_eq!(st["bootstrapped"], false);
    assert_eq!(st["nextMemberId"], 4);
    assert_eq!(st["observedGeneration"], 2);
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(condition(&st, "SpecValid").0, "True");
    assert_eq!(condition(&st, "Available").1, "Creating");
    assert_eq!(condition(&st, "Progressing").0, "True");

    // The pods start: every member answers, none initialised → bootstrap at
    // ordinal 0 with all three voters, using the token from the created Secret.
    {
        let mut w = h.world();
        w.pods = (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect();
        w.members = (0..3).map(|o| (o, blank(u64::from(o) + 1))).collect();
    }
    let h_token = token.clone();
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("GET", SECRET),
            line("PATCH", SERVICE),
            line("POST", EVENTS),
            line("PATCH", STATUS),
        ],
        "running pods are neither re-applied nor re-created"
    );
    let init: Vec<&Call> = member_calls(&log, "/v1/admin/init");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].who, "member-0/peer");
    assert_eq!(
        init[0].auth.as_deref(),
        Some(format!("Bearer {h_token}").as_str())
    );
    assert_eq!(
        init[0].body,
        json!({"members": {"1": "127.0.0.1:7000", "2": "127.0.0.2:7000", "3": "127.0.0.3:7000"}})
    );
    let evs = events(&log);
    assert_eq!(evs[0].1, "Bootstrapped");
    // Every member got the address book (peer IPs, no DNS).
    let peers = member_calls(&log, "/v1/admin/peers");
    assert_eq!(peers.len(), 3);
    for p in peers {
        assert_eq!(
            p.body["peers"],
            json!({"1": "127.0.0.1:7000", "2": "127.0.0.2:7000", "3": "127.0.0.3:7000"})
        );
    }
}

// ------------------------------------------------------------ invalid spec

#[tokio::test]
async fn invalid_spec_sets_condition_and_warning_and_writes_nothing_else() {
    // Created as async; now says raft (the default) and has a fault with an unknown target.
    let rc = demo(
        3,
        "  faults:\n    - {name: slow, kind: delay, targets: [boss], latencyMs: 100}\n",
    );
    let mut st = bootstrapped_status(3, 0, 2);
    st["replication"] = json!("async");
    let rc = with_status(rc, st);
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(3, 0, 2),
        secret: Some(token_secret(&rc)),
        rc: Some(rc),
    })
    .await;

    let action = h.reconcile().await.expect("reconcile");
    assert_eq!(action, Action::requeue(INVALID));
    let log = h.take_log();
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("POST", EVENTS),
            line("PATCH", STATUS)
        ],
        "an invalid spec must not touch the Secret, Service or Pods"
    );
    // Members are only observed: no admin call at all.
    assert!(log
        .iter()
        .filter(|c| c.who.starts_with("member-"))
        .all(|c| c.method == "GET" && c.path == "/v1/status"));

    let evs = events(&log);
    assert_eq!(evs.len(), 1);
    let (type_, reason, note) = &evs[0];
    assert_eq!(type_, "Warning");
    assert_eq!(reason, "InvalidSpec");
    assert!(
        note.contains("replication is immutable (created as async, now raft)"),
        "{note}"
    );
    assert!(note.contains("unknown target \"boss\""), "{note}");

    let st = status_patch(&log);
    assert_eq!(st["phase"], "Failed");
    let (status, reason, message) = condition(&st, "SpecValid");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert_eq!(&message, note);
    // The running cluster is still reported as available.
    assert_eq!(condition(&st, "Available").0, "True");
    assert_eq!(
        st["replication"], "async",
        "the recorded replication is kept"
    );

    // Reconciling again with the same invalid spec: no repeated Warning.
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(events(&log).is_empty(), "the Warning is not repeated");
    assert_eq!(
        api_lines(&log),
        vec![line("GET", PODS)],
        "same invalid spec, same observations: nothing to write"
    );
}

// ---------------------------------------------------------------- scale up

#[tokio::test]
async fn scale_up_creates_pod_then_adds_learner_then_promotes() {
    let rc = with_status(demo(4, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(3, 0, 2),
        secret: Some(token_secret(&rc)),
        rc: Some(rc.clone()),
    })
    .await;

    // 1. The pod for ordinal 3 is created with the next member id; no membership change yet.
    assert_eq!(
        h.reconcile().await.expect("reconcile 1"),
        Action::requeue(FAST)
    );
    let log = h.take_log();
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("GET", SECRET),
            line("PATCH", SERVICE),
            line("PATCH", &pod_path(3)),
            line("POST", EVENTS),
            line("PATCH", STATUS),
        ]
    );
    let pod = &api_calls(&log)[3].body;
    assert_eq!(pod["metadata"]["annotations"]["caplab.dev/member-id"], "4");
    assert_eq!(member_calls(&log, "/v1/status").len(), 3);
    assert!(admin(&log, "learners").is_empty());
    assert!(admin(&log, "voters").is_empty());
    let st = status_patch(&log);
    assert_eq!(st["nextMemberId"], 5);
    assert_eq!(st["phase"], "Degraded");
    assert_eq!(st["ready"], "3/4");

    // 2. The new member answers (blank) → it joins as a learner through the leader.
    {
        let mut w = h.world();
        w.pods.push(running_pod(&rc, 3, 4));
        w.members.insert(3, blank(4));
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(!api_lines(&log)
        .iter()
        .any(|l| l.starts_with("PATCH /api/v1/namespaces/test/pods")));
    assert_eq!(
        admin(&log, "learners"),
        vec![(
            "member-0".to_string(),
            json!({"id": 4, "addr": "127.0.0.4:7000"})
        )]
    );
    assert!(
        admin(&log, "voters").is_empty(),
        "not promoted before catching up"
    );
    assert!(events(&log).iter().any(|e| e.1 == "MemberAdded"));
    // Every member now knows the new member's address.
    for (_, body) in admin(&log, "peers") {
        assert_eq!(body["peers"]["4"], "127.0.0.4:7000");
    }

    // 3. The learner has caught up → promoted to voter.
    {
        let mut w = h.world();
        w.members.insert(0, leader(1, 2, &[1, 2, 3], &[4], 10));
        let mut l = follower(4, 2, 1, &[1, 2, 3], 10);
        l.role = "learner".into();
        l.learners = vec![4];
        w.members.insert(3, l);
    }
    h.reconcile().await.expect("reconcile 3");
    let log = h.take_log();
    assert_eq!(
        admin(&log, "voters"),
        vec![("member-0".to_string(), json!({"voters": [1, 2, 3, 4]}))]
    );
    assert!(events(&log).iter().any(|e| e.1 == "MemberPromoted"));

    // 4. Four voters → Ready and stable.
    h.world().members = raft_members(4, 0, 2);
    assert_eq!(
        h.reconcile().await.expect("reconcile 4"),
        Action::requeue(SLOW)
    );
    let log = h.take_log();
    assert!(admin(&log, "voters").is_empty() && admin(&log, "learners").is_empty());
    let st = status_patch(&log);
    assert_eq!(st["phase"], "Ready");
    assert_eq!(st["ready"], "4/4");
    assert_eq!(st["voters"], json!([1, 2, 3, 4]));
    assert_eq!(condition(&st, "Progressing").0, "False");

    // 5. Nothing changed → idempotent: no write at all (no status-write hot loop).
    assert_eq!(
        h.reconcile().await.expect("reconcile 5"),
        Action::requeue(SLOW)
    );
    let log = h.take_log();
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("GET", SECRET),
            line("PATCH", SERVICE)
        ]
    );
    assert!(events(&log).is_empty(), "{:?}", events(&log));
}

// -------------------------------------------------------------- scale down

#[tokio::test]
async fn scale_down_removes_highest_voter_before_deleting_its_pod() {
    let rc = with_status(demo(3, ""), bootstrapped_status(4, 0, 2));
    let h = Harness::start(World {
        pods: (0..4)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(4, 0, 2),
        secret: Some(token_secret(&rc)),
        rc: Some(rc.clone()),
    })
    .await;

    // 1. Member 4 (ordinal 3) leaves the voter set; its pod stays.
    h.reconcile().await.expect("reconcile 1");
    let log1 = h.take_log();
    assert_eq!(
        admin(&log1, "voters"),
        vec![("member-0".to_string(), json!({"voters": [1, 2, 3]}))]
    );
    assert!(
        !api_lines(&log1).iter().any(|l| l.starts_with("DELETE")),
        "no pod may be deleted while it is still a voter"
    );
    assert!(events(&log1)
        .iter()
        .any(|e| e.1 == "MemberRemoved" && e.2.contains("removed voters [4]")));

    // 2. The leader reports 3 voters → the leftover pod is deleted.
    {
        let mut w = h.world();
        w.members = raft_members(3, 0, 2);
        w.members.insert(3, follower(4, 2, 1, &[1, 2, 3], 10));
    }
    h.reconcile().await.expect("reconcile 2");
    let log2 = h.take_log();
    assert!(admin(&log2, "voters").is_empty());
    let deletes: Vec<String> = api_lines(&log2)
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes,
        vec![
            line("DELETE", &pod_path(3)),
            line(
                "DELETE",
                "/api/v1/namespaces/test/persistentvolumeclaims/data-demo-3"
            ),
        ]
    );
    assert!(events(&log2).iter().any(|e| e.1 == "MemberDeleted"));

    // Order across both reconciles: voters changed strictly before the delete.
    let all: Vec<Call> = log1.into_iter().chain(log2).collect();
    let voters_at = all
        .iter()
        .position(|c| c.path == "/v1/admin/voters")
        .expect("voters call");
    let delete_at = all
        .iter()
        .position(|c| c.api("DELETE", &pod_path(3)))
        .expect("pod delete");
    assert!(voters_at < delete_at);

    // 3. Pod gone → Ready with 3 members.
    {
        let mut w = h.world();
        w.pods
            .retain(|p| p.metadata.name.as_deref() != Some("demo-3"));
        w.members.remove(&3);
    }
    h.reconcile().await.expect("reconcile 3");
    let log = h.take_log();
    assert!(!api_lines(&log).iter().any(|l| l.starts_with("DELETE")));
    let st = status_patch(&log);
    assert_eq!(st["phase"], "Ready");
    assert_eq!(st["ready"], "3/3");
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn scale_down_of_the_leader_transfers_leadership_first() {
    // The leader is ordinal 3 (member 4), the one that has to go.
    let rc = with_status(demo(3, ""), bootstrapped_status(4, 3, 5));
    let h = Harness::start(World {
        pods: (0..4)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(4, 3, 5),
        secret: Some(token_secret(&rc)),
        rc: Some(rc),
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let transfer = admin(&log, "transfer-leader");
    assert_eq!(transfer.len(), 1);
    assert_eq!(transfer[0].0, "member-3", "asked of the current leader");
    let to = transfer[0].1["to"].as_u64().expect("to");
    assert!([1, 2, 3].contains(&to), "to a remaining voter, got {to}");
    assert!(admin(&log, "voters").is_empty());
    assert!(!api_lines(&log).iter().any(|l| l.starts_with("DELETE")));
}

// ------------------------------------------------------------------ faults

const SPLIT: &str =
    "  faults:\n    - {name: split, kind: partition, groups: [[leader], [followers]], durationSeconds: 5}\n";

fn ts(s: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn fault_start_resolves_leader_and_pushes_partition() {
    // Leader at ordinal 1 (member 2): `[[leader], [followers]]` → [[1], [0, 2]].
    let rc = with_status(demo(3, SPLIT), bootstrapped_status(3, 1, 3));
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(3, 1, 3),
        secret: Some(token_secret(&rc)),
        rc: Some(rc),
    })
    .await;
    let before = Utc::now();
    let action = h.reconcile().await.expect("reconcile");
    let log = h.take_log();

    // Requeued at the expiry (5 s), not after the stable 15 s.
    let secs = requeue_secs(&action);
    assert!(secs > 3.0 && secs <= 5.0, "requeue after {secs}s");

    let mut pushed = admin(&log, "faults");
    pushed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        pushed,
        vec![
            ("member-0".to_string(), json!({"partition": {"peers": [2]}})),
            (
                "member-1".to_string(),
                json!({"partition": {"peers": [1, 3]}})
            ),
            ("member-2".to_string(), json!({"partition": {"peers": [2]}})),
        ]
    );
    let evs = events(&log);
    assert!(
        evs.iter()
            .any(|e| e.1 == "FaultStarted" && e.2.contains("groups [[1], [0, 2]]")),
        "{evs:?}"
    );

    let st = status_patch(&log);
    let f = &st["faults"][0];
    assert_eq!(f["name"], "split");
    assert_eq!(f["kind"], "partition");
    assert_eq!(f["state"], "active");
    assert_eq!(f["groups"], json!([[1], [0, 2]]));
    let since = ts(&f["since"]);
    let until = ts(&f["until"]);
    assert!(since >= before - chrono::Duration::seconds(1) && since <= Utc::now());
    assert_eq!((until - since).num_seconds(), 5);
    assert_eq!(st["activeFaults"], "split");
    for m in st["members"].as_array().expect("members") {
        assert_eq!(m["faults"], json!(["partition"]), "{m}");
    }

    // The members now report the sets: nothing is pushed again.
    {
        let mut w = h.world();
        for (o, set) in [
            (0, json!({"partition": {"peers": [2]}})),
            (1, json!({"partition": {"peers": [1, 3]}})),
            (2, json!({"partition": {"peers": [2]}})),
        ] {
            if let Some(m) = w.members.get_mut(&o) {
                m.faults = Some(set);
            }
        }
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(admin(&log, "faults").is_empty());
    assert!(!events(&log).iter().any(|e| e.1 == "FaultStarted"));
}

#[tokio::test]
async fn fault_expiry_heals_members_and_marks_expired() {
    let rc = demo(3, SPLIT);
    let hash = spec_hash(&rc.spec.faults[0]);
    let since = "2020-01-01T00:00:00Z";
    let until = "2020-01-01T00:00:05Z";
    let mut st = bootstrapped_status(3, 1, 3);
    st["faults"] = json!([{
        "name": "split", "kind": "partition", "state": "active",
        "groups": [[1], [0, 2]], "since": since, "until": until, "specHash": hash,
    }]);
    st["activeFaults"] = json!("split");
    let rc = with_status(rc, st);
    let mut members = raft_members(3, 1, 3);
    for (o, set) in [
        (0, json!({"partition": {"peers": [2]}})),
        (1, json!({"partition": {"peers": [1, 3]}})),
        (2, json!({"partition": {"peers": [2]}})),
    ] {
        if let Some(m) = members.get_mut(&o) {
            m.faults = Some(set);
        }
    }
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members,
        secret: Some(token_secret(&rc)),
        rc: Some(rc),
    })
    .await;

    assert_eq!(
        h.reconcile().await.expect("reconcile"),
        Action::requeue(SLOW)
    );
    let log = h.take_log();
    let mut healed = admin(&log, "faults");
    healed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        healed,
        vec![
            ("member-0".to_string(), json!({})),
            ("member-1".to_string(), json!({})),
            ("member-2".to_string(), json!({})),
        ],
        "every member healed with PUT {{}}"
    );
    assert!(events(&log)
        .iter()
        .any(|e| e.1 == "FaultEnded" && e.2 == "fault split ended (expired)"));
    let st = status_patch(&log);
    let f = &st["faults"][0];
    assert_eq!(f["state"], "expired");
    assert_eq!(f["since"], since);
    assert_eq!(f["until"], until);
    assert!(st.get("activeFaults").is_none_or(Value::is_null));
    for m in st["members"].as_array().expect("members") {
        assert!(m.get("faults").is_none_or(|f| f == &json!([])), "{m}");
    }

    // Healed members: the expired fault stays expired and nothing is re-pushed.
    for m in h.world().members.values_mut() {
        m.faults = None;
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(admin(&log, "faults").is_empty());
    assert!(events(&log).is_empty(), "{:?}", events(&log));
}

// ------------------------------------------------------------------ rollout

#[tokio::test]
async fn changed_image_recreates_one_follower_at_a_time_and_the_leader_last() {
    let old = demo(3, "");
    let rc = with_status(
        demo(3, "  image: caplab/node:0.2.0"),
        bootstrapped_status(3, 2, 2),
    );
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&old, o, u64::from(o) + 1))
            .collect(),
        members: raft_members(3, 2, 2),
        secret: Some(token_secret(&rc)),
        rc: Some(rc.clone()),
    })
    .await;

    // 1. Ready and whole: the highest follower (ordinal 1; the leader is 2) goes first, alone.
    let action = h.reconcile().await.expect("reconcile 1");
    let log = h.take_log();
    let deletes: Vec<String> = api_lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, vec![line("DELETE", &pod_path(1))]);
    assert!(events(&log)
        .iter()
        .any(|e| e.1 == "MemberRolled" && e.2.contains("demo-1")));
    assert_eq!(requeue_secs(&action), FAST.as_secs_f64());

    // 2. Its pod is gone: it is recreated from the new spec; nothing else is deleted meanwhile.
    {
        let mut w = h.world();
        w.pods
            .retain(|p| p.metadata.name.as_deref() != Some("demo-1"));
        w.members.remove(&1);
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(!api_lines(&log).iter().any(|l| l.starts_with("DELETE")));
    let apply = log
        .iter()
        .find(|c| c.api("PATCH", &pod_path(1)))
        .expect("demo-1 applied");
    assert_server_side_apply(apply);
    let created = apply.body.clone();
    assert_eq!(
        created["spec"]["containers"][0]["image"],
        "caplab/node:0.2.0"
    );

    // 3. Back as member 4 (its data was an emptyDir) and Ready, only the leader is left
    //    outdated: now it goes.
    {
        let mut w = h.world();
        let mut pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(created).expect("pod");
        pod.status = running_pod(&rc, 1, 4).status;
        w.pods.push(pod);
        w.pods
            .retain(|p| p.metadata.name.as_deref() != Some("demo-0"));
        w.pods.push(running_pod(&rc, 0, 1));
        let voters = [1, 3, 4];
        w.members = BTreeMap::from([
            (0, follower(1, 2, 3, &voters, 10)),
            (1, follower(4, 2, 3, &voters, 10)),
            (2, leader(3, 2, &voters, &[], 10)),
        ]);
    }
    // The first pass sees it whole and writes Ready; the next one acts on that.
    h.reconcile().await.expect("reconcile 3");
    assert_eq!(status_patch(&h.take_log())["phase"], "Ready");
    h.reconcile().await.expect("reconcile 4");
    let log = h.take_log();
    let deletes: Vec<String> = api_lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, vec![line("DELETE", &pod_path(2))]);
    assert!(events(&log)
        .iter()
        .any(|e| e.1 == "MemberRolled" && e.2.contains("the leader")));
}

#[tokio::test]
async fn changed_image_hands_the_primary_role_over_before_recreating_its_pod() {
    let spec = "  replication: async\n";
    let old = demo(3, spec);
    let mut st = bootstrapped_status(3, 2, 2);
    st["replication"] = json!("async");
    let rc = with_status(demo(3, &format!("{spec}  image: caplab/node:0.2.0\n")), st);
    let as_primary_mode = |mut s: NodeStatus, role: &str| {
        s.replication = "async".into();
        s.role = role.into();
        s
    };
    let ids = [1, 2, 3];
    let h = Harness::start(World {
        // The secondaries were recreated already; the primary (ordinal 2) is left.
        pods: vec![
            running_pod(&rc, 0, 1),
            running_pod(&rc, 1, 2),
            running_pod(&old, 2, 3),
        ],
        members: BTreeMap::from([
            (0, as_primary_mode(follower(1, 2, 3, &ids, 10), "secondary")),
            (1, as_primary_mode(follower(2, 2, 3, &ids, 10), "secondary")),
            (2, as_primary_mode(leader(3, 2, &ids, &[], 10), "primary")),
        ]),
        secret: Some(token_secret(&rc)),
        rc: Some(rc.clone()),
    })
    .await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    assert!(
        !api_lines(&log).iter().any(|l| l.starts_with("DELETE")),
        "the primary's pod must not go while it is the primary"
    );
    let transfer = admin(&log, "transfer-leader");
    assert_eq!(transfer.len(), 1, "{transfer:?}");
    assert_eq!(transfer[0].0, "member-2");
    assert!(
        [json!({"to": 1}), json!({"to": 2})].contains(&transfer[0].1),
        "{transfer:?}"
    );
    assert!(events(&log).iter().any(|e| e.1 == "Switchover"));
}
