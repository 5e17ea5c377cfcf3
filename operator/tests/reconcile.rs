//! Reconcile tests against a mocked API server (kube-rs `tower-test` pattern)
//! and stand-in members: create, invalid spec, scale up, scale down, fault
//! start and expiry. See `mock/mod.rs` for the doubles.

mod mock;

use std::collections::BTreeMap;

use caplab_api::faults::FaultSet;
use caplab_api::status::{InDoubt, Replication, Role, Status, TwoPcStatus};
use caplab_operator::controller::{FAST, SLOW};
use caplab_operator::crd::{RegisterCluster, RegisterClusterStatus};
use caplab_operator::faults::spec_hash;
use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use mock::{
    api_calls, assert_server_side_apply, blank, cluster, condition, demo, events, follower, leader,
    member_calls, published_events, running_pod, status_patch, Call, Harness, World, NAME, NS,
    TOKEN, UID,
};

const CLUSTER_ID: &str = "test/demo/11111111-2222-3333-4444-555555555555";

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

/// The address-book entry of member `id` at `127.0.0.<id>` (ordinal `id - 1`), pinned to the
/// incarnation the mock's members report (`mock::status`).
fn pinned(id: u64) -> Value {
    json!({"addr": format!("127.0.0.{id}:7000"), "incarnation": format!("{id:016x}")})
}

/// A fault set from its wire form.
fn fault_set(wire: Value) -> FaultSet {
    serde_json::from_value(wire).expect("a fault set")
}

/// The fault sets pushed (`PUT /v1/admin/faults`), by member, as the member reads them.
fn pushed_fault_sets(log: &[Call]) -> Vec<(String, FaultSet)> {
    let mut pushed: Vec<(String, FaultSet)> = admin(log, "faults")
        .into_iter()
        .map(|(who, body)| (who, fault_set(body)))
        .collect();
    pushed.sort_by(|a, b| a.0.cmp(&b.0));
    pushed
}

fn pod_path(o: u32) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{NAME}-{o}")
}

const PODS: &str = "/api/v1/namespaces/test/pods";
const SECRET: &str = "/api/v1/namespaces/test/secrets/demo-admin-token";
const SECRETS: &str = "/api/v1/namespaces/test/secrets";
const SERVICE: &str = "/api/v1/namespaces/test/services/demo";
const PDB: &str = "/apis/policy/v1/namespaces/test/poddisruptionbudgets/demo";
const PDB_V1BETA1: &str = "/apis/policy/v1beta1/namespaces/test/poddisruptionbudgets/demo";
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
        assert_identity(c);
    }
    calls
        .into_iter()
        .map(|c| (c.who.trim_end_matches("/peer").to_string(), c.body.clone()))
        .collect()
}

/// Every admin call says whom it is meant for: this cluster, from the operator (0), to the
/// member id the pod carries (each mock member runs the member with id ordinal + 1 unless a
/// test says otherwise: the id is checked against the member's own status by the mock).
fn assert_identity(c: &Call) {
    let h = |k: &str| c.identity.get(k).map(String::as_str);
    assert_eq!(
        h("x-caplab-cluster"),
        Some(CLUSTER_ID),
        "{} cluster",
        c.line()
    );
    assert_eq!(h("x-caplab-from"), Some("0"), "{} sender", c.line());
    assert!(
        h("x-caplab-to").is_some(),
        "{} without x-caplab-to",
        c.line()
    );
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
fn raft_members(n: u32, lead: u32, term: u64) -> BTreeMap<u32, Status> {
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
            line("PATCH", PDB),
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

    // The PodDisruptionBudget: one member at a time, owned, selecting the members.
    assert_server_side_apply(api[4]);
    assert_owned(&api[4].body);
    assert_eq!(api[4].body["apiVersion"], "policy/v1");
    assert_eq!(api[4].body["kind"], "PodDisruptionBudget");
    assert_eq!(api[4].body["spec"]["minAvailable"], 2);
    assert_eq!(
        api[4].body["spec"]["selector"]["matchLabels"]["caplab.dev/cluster"],
        NAME
    );

    // One pod per ordinal, with fresh member ids 1..=3.
    for (i, o) in [(5usize, 0u32), (7, 1), (9, 2)] {
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
        let env = pod["spec"]["containers"][0]["env"].as_array().expect("env");
        assert!(
            env.contains(&json!({"name": "CAPLAB_CLUSTER_ID", "value": CLUSTER_ID})),
            "members know their cluster: {env:?}"
        );
        assert_eq!(
            pod["spec"]["affinity"]["podAntiAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
                ["topologyKey"],
            "kubernetes.io/hostname"
        );
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
            line("PATCH", PDB),
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
    let book = json!({"1": pinned(1), "2": pinned(2), "3": pinned(3)});
    assert_eq!(init[0].body, json!({ "members": book }));
    let evs = events(&log);
    assert_eq!(evs[0].1, "Bootstrapped");
    // Every member got the address book (peer IPs, no DNS).
    let peers = member_calls(&log, "/v1/admin/peers");
    assert_eq!(peers.len(), 3);
    for p in peers {
        assert_eq!(p.body["peers"], book);
    }
}

// ------------------------------------------------------------ invalid spec

#[tokio::test]
async fn invalid_change_to_a_running_cluster_keeps_its_phase_and_touches_nothing() {
    // Created as async; now says raft (the default) and has a fault with an unknown target.
    let rc = demo(
        3,
        "  faults:\n    - {name: slow, kind: delay, targets: [boss], latencyMs: 100}\n",
    );
    let mut st = bootstrapped_status(3, 0, 2);
    st["replication"] = json!("async");
    let rc = with_status(rc, st);
    let h = Harness::start(World::serving(rc, raft_members(3, 0, 2))).await;

    let action = h.reconcile().await.expect("reconcile");
    assert_eq!(action, Action::requeue(SLOW), "Ready and quiet");
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
        note.contains(
            "replication is immutable (created as async, now raft): set it back to async, or \
             create a new cluster"
        ),
        "the Event says how to fix it: {note}"
    );
    assert!(note.contains("unknown target \"boss\""), "{note}");

    let st = status_patch(&log);
    assert_eq!(
        st["phase"], "Ready",
        "phase says what the cluster does, not that the spec is invalid"
    );
    let (status, reason, message) = condition(&st, "SpecValid");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert_eq!(&message, note);
    assert_eq!(condition(&st, "Available").0, "True");
    assert_eq!(condition(&st, "Progressing").1, "SpecInvalid");
    assert_eq!(
        st["replication"], "async",
        "what runs, not the rejected spec"
    );
    assert_eq!(st["leader"], "demo-0");
    assert_eq!(st["observedGeneration"], 2);
    assert!(st["observedAt"].is_string(), "{st}");

    // Reconciling again with the same invalid spec: no repeated Warning, still only observed.
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(events(&log).is_empty(), "the Warning is not repeated");
    let lines = api_lines(&log);
    assert_eq!(lines[0], line("GET", PODS));
    assert!(
        lines[1..].is_empty() || lines[1..] == [line("PATCH", STATUS)],
        "at most the refreshed observedAt is written: {lines:?}"
    );
}

#[tokio::test]
async fn name_too_long_for_pod_hostnames_is_refused_before_anything_is_created() {
    // 62 characters: `<name>-0` would be a 64-character hostname.
    let long = format!("a{}", "b".repeat(61));
    let rc = cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {long}, namespace: {NS}, uid: {UID}, generation: 1}}
spec:
  replicas: 3
"
    ));
    let h = Harness::start(World {
        rc: Some(rc),
        ..World::default()
    })
    .await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let status_path =
        format!("/apis/caplab.dev/v1alpha1/namespaces/{NS}/registerclusters/{long}/status");
    assert_eq!(
        api_lines(&log),
        vec![
            line("GET", PODS),
            line("POST", EVENTS),
            line("PATCH", &status_path)
        ],
        "nothing is created for a name that cannot work"
    );
    let evs = events(&log);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].0.as_str(), evs[0].1.as_str()),
        ("Warning", "InvalidSpec")
    );
    assert!(
        evs[0].2.contains("the longest name allowed is 61"),
        "{}",
        evs[0].2
    );
    let patch = log
        .iter()
        .find(|c| c.api("PATCH", &status_path))
        .expect("status patch");
    let st = &patch.body["status"];
    assert_eq!(
        st["phase"], "Failed",
        "the first spec is invalid and nothing exists"
    );
    assert_eq!(condition(st, "SpecValid").0, "False");
    assert!(
        st.get("replication").is_none_or(Value::is_null),
        "nothing runs: {st}"
    );
}

// ---------------------------------------------------------------- scale up

#[tokio::test]
async fn scale_up_creates_pod_then_adds_learner_then_promotes() {
    let rc = with_status(demo(4, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World::serving(rc.clone(), raft_members(3, 0, 2))).await;

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
            line("PATCH", PDB),
            line("PATCH", &pod_path(3)),
            line("POST", EVENTS),
            line("PATCH", STATUS),
        ]
    );
    let pod = &api_calls(&log)[4].body;
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
        vec![("member-0".to_string(), json!({"id": 4, "addr": pinned(4)}))]
    );
    assert!(
        admin(&log, "voters").is_empty(),
        "not promoted before catching up"
    );
    assert!(events(&log).iter().any(|e| e.1 == "MemberAdded"));
    // Every member now knows the new member's address.
    for (_, body) in admin(&log, "peers") {
        assert_eq!(body["peers"]["4"], pinned(4));
    }

    // 3. The learner has caught up → promoted to voter.
    {
        let mut w = h.world();
        w.members.insert(0, leader(1, 2, &[1, 2, 3], &[4], 10));
        let mut l = follower(4, 2, 1, &[1, 2, 3], 10);
        l.engine.role = Role::Learner;
        l.engine.learners = vec![4];
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

    // 5. Nothing changed → idempotent: no Event, and a status write only to refresh
    //    observedAt (a status write does not trigger a pass: no hot loop).
    assert_eq!(
        h.reconcile().await.expect("reconcile 5"),
        Action::requeue(SLOW)
    );
    let log = h.take_log();
    let writes: Vec<String> = api_lines(&log)
        .into_iter()
        .filter(|l| !l.starts_with("GET"))
        .filter(|l| *l != line("PATCH", STATUS))
        .collect();
    assert_eq!(writes, vec![line("PATCH", SERVICE), line("PATCH", PDB)]);
    assert_only_observed_at_changed(&st, &log);
    assert!(events(&log).is_empty(), "{:?}", events(&log));
}

/// The pass in `log` wrote no status, or one that differs from `before` only in observedAt.
fn assert_only_observed_at_changed(before: &Value, log: &[Call]) {
    if !log.iter().any(|c| c.api("PATCH", STATUS)) {
        return;
    }
    let mut after = status_patch(log);
    let mut before = before.clone();
    for st in [&mut after, &mut before] {
        st["observedAt"] = Value::Null;
        for c in st["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = Value::Null;
        }
    }
    assert_eq!(after, before);
}

// -------------------------------------------------------------- scale down

#[tokio::test]
async fn scale_down_removes_highest_voter_before_deleting_its_pod() {
    let rc = with_status(demo(3, ""), bootstrapped_status(4, 0, 2));
    let h = Harness::start(World::serving(rc.clone(), raft_members(4, 0, 2))).await;

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
        .any(|e| e.1 == "MemberRemoved" && e.2.contains("removed voter demo-3 (member id 4)")));

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
async fn scale_down_of_the_leader_removes_it_from_the_voters_when_it_cannot_transfer() {
    // The leader is ordinal 3 (member 4), the one that has to go. A Raft member answers a
    // leadership transfer with 501 (openraft 0.9 has none): the operator falls back to
    // removing the leader from the voters directly (it steps down once that commits).
    let rc = with_status(demo(3, ""), bootstrapped_status(4, 3, 5));
    let h = Harness::start(World::serving(rc, raft_members(4, 3, 5))).await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let transfer = admin(&log, "transfer-leader");
    assert_eq!(transfer.len(), 1, "tried once: {transfer:?}");
    assert_eq!(transfer[0].0, "member-3", "asked of the current leader");
    let voters = admin(&log, "voters");
    assert_eq!(voters.len(), 1, "{voters:?}");
    assert_eq!(
        voters[0].0, "member-3",
        "the fallback goes to the leader too"
    );
    assert_eq!(
        voters[0].1,
        json!({"voters": [1, 2, 3]}),
        "the leader left out"
    );
    let transfer_at = log
        .iter()
        .position(|c| c.path == "/v1/admin/transfer-leader");
    let voters_at = log.iter().position(|c| c.path == "/v1/admin/voters");
    assert!(transfer_at < voters_at, "the transfer is tried first");
    assert!(events(&log).iter().any(|e| e.1 == "MemberRemoved"
        && e.2
            .contains("removed voter demo-3 (member id 4) (the leader); voters")));
    assert!(!events(&log).iter().any(|e| e.1 == "LeaderTransfer"));
    assert!(
        !api_lines(&log).iter().any(|l| l.starts_with("DELETE")),
        "the pod goes only once the voters no longer hold it"
    );
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
    let h = Harness::start(World::serving(rc, raft_members(3, 1, 3))).await;
    let before = Utc::now();
    let action = h.reconcile().await.expect("reconcile");
    let log = h.take_log();

    // A fault is active: status follows the members every second, not at the calm interval.
    let secs = requeue_secs(&action);
    assert!(secs <= FAST.as_secs_f64(), "requeue after {secs}s");

    assert_eq!(
        pushed_fault_sets(&log),
        vec![
            (
                "member-0".to_string(),
                fault_set(json!({"partition": {"peers": [2]}}))
            ),
            (
                "member-1".to_string(),
                fault_set(json!({"partition": {"peers": [1, 3]}}))
            ),
            (
                "member-2".to_string(),
                fault_set(json!({"partition": {"peers": [2]}}))
            ),
        ]
    );
    let evs = events(&log);
    assert!(
        evs.iter()
            .any(|e| e.1 == "FaultStarted" && e.2.contains("partition [demo-1 (member id 2)] | [demo-0 (member id 1), demo-2 (member id 3)]")),
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
                m.faults = serde_json::from_value(set).expect("a fault set");
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
            m.faults = serde_json::from_value(set).expect("a fault set");
        }
    }
    let h = Harness::start(World::serving(rc, members)).await;

    assert_eq!(
        h.reconcile().await.expect("reconcile"),
        Action::requeue(SLOW)
    );
    let log = h.take_log();
    assert_eq!(
        pushed_fault_sets(&log),
        vec![
            ("member-0".to_string(), FaultSet::default()),
            ("member-1".to_string(), FaultSet::default()),
            ("member-2".to_string(), FaultSet::default()),
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
        m.faults = FaultSet::default();
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(admin(&log, "faults").is_empty());
    assert!(events(&log).is_empty(), "{:?}", events(&log));
}

/// A Raft cluster without storage, Ready for an hour: crash `a` on demo-0 ended, its member
/// came back empty as member 4 (a learner, caught up), and crash `b` on demo-1 is due
/// (`startAfterSeconds` long past). Starting it now would leave member 3 the only running
/// voter of three, for good: `b` waits, says so in its status and in one Normal
/// `FaultDeferred` Event, and starts once member 4 has replaced member 1 among the voters.
#[tokio::test]
async fn a_crash_waits_until_a_majority_of_the_voters_would_survive_it() {
    let spec = "  faults:\n    - {name: a, kind: crash, targets: [0], durationSeconds: 30}\n    \
                - {name: b, kind: crash, targets: [1], startAfterSeconds: 30, durationSeconds: \
                30}\n";
    let rc = demo(3, spec);
    let mut st = bootstrapped_status(3, 2, 3);
    st["readySince"] = json!("2020-01-01T00:00:00Z");
    st["faults"] = json!([{
        "name": "a", "kind": "crash", "state": "expired", "targets": [0],
        "since": "2020-01-01T00:00:00Z", "until": "2020-01-01T00:00:30Z",
        "specHash": spec_hash(&rc.spec.faults[0]),
    }]);
    let rc = with_status(rc, st);
    let mut learner = follower(4, 3, 3, &[1, 2, 3], 10);
    learner.engine.role = Role::Learner;
    let members = BTreeMap::from([
        (0, learner),
        (1, follower(2, 3, 3, &[1, 2, 3], 10)),
        (2, leader(3, 3, &[1, 2, 3], &[4], 10)),
    ]);
    let mut world = World::serving(rc.clone(), members);
    world.pods[0] = running_pod(&rc, 0, 4);
    let h = Harness::start(world).await;
    let delete_1 = line("DELETE", &pod_path(1));
    let waits = "crashing demo-1 now would leave 1 of 3 voters running (demo-0 is down or not \
                 yet back as a voter); starts when a majority would survive";

    h.reconcile().await.expect("reconcile 1");
    let log = h.take_log();
    assert!(
        !api_lines(&log).contains(&delete_1),
        "{:?}",
        api_lines(&log)
    );
    let st = status_patch(&log);
    assert_eq!(st["faults"][0]["state"], "expired", "a is left as it was");
    assert_eq!(st["faults"][1]["state"], "pending");
    assert_eq!(st["faults"][1]["message"], format!("waiting: {waits}"));
    let deferred: Vec<_> = events(&log)
        .into_iter()
        .filter(|e| e.1 == "FaultDeferred")
        .collect();
    assert_eq!(
        deferred,
        vec![(
            "Normal".to_string(),
            "FaultDeferred".to_string(),
            format!("fault b deferred: {waits}")
        )]
    );

    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(!api_lines(&log).contains(&delete_1));
    let stored = h.world().rc.as_ref().and_then(|rc| rc.status.clone());
    let faults = stored.map(|st| st.faults).unwrap_or_default();
    assert_eq!(
        faults[1].message.as_deref(),
        Some(format!("waiting: {waits}").as_str())
    );
    let evs = published_events(&log);
    assert!(!evs.iter().any(|e| e.1 == "FaultDeferred"), "once: {evs:?}");

    // Member 4 promoted, member 1 removed: crashing demo-1 leaves 2 of 3 voters.
    {
        let mut w = h.world();
        w.members.insert(0, follower(4, 3, 3, &[2, 3, 4], 10));
        w.members.insert(1, follower(2, 3, 3, &[2, 3, 4], 10));
        w.members.insert(2, leader(3, 3, &[2, 3, 4], &[], 10));
    }
    h.reconcile().await.expect("reconcile 3");
    let log = h.take_log();
    assert!(api_lines(&log).contains(&delete_1), "{:?}", api_lines(&log));
    let st = status_patch(&log);
    assert_eq!(st["faults"][1]["state"], "active");
    assert_eq!(st["faults"][1]["targets"], json!([1]));
    assert!(events(&log)
        .iter()
        .any(|e| e.1 == "FaultStarted" && e.2.starts_with("fault b started: crash on demo-1")));
}

/// `spec.storage` added to a running Raft cluster (allowed: the rollout moves the pods onto
/// claims) in the same edit as two crashes due at once: the pods still run on emptyDir, so
/// the crashed members would come back empty all the same. The guard goes by the pods: the
/// first crash starts, the second waits for a majority of the voters.
#[tokio::test]
async fn storage_in_the_spec_does_not_lift_the_guard_while_the_pods_run_on_emptydir() {
    let faults = "  faults:\n    - {name: a, kind: crash, targets: [0], durationSeconds: 30}\n    \
                  - {name: b, kind: crash, targets: [1], durationSeconds: 30}\n";
    let on_emptydir = demo(3, faults);
    let mut st = bootstrapped_status(3, 2, 3);
    st["readySince"] = json!("2020-01-01T00:00:00Z");
    let rc = with_status(demo(3, &format!("  storage: {{size: 64Mi}}\n{faults}")), st);
    let members = BTreeMap::from([
        (0, follower(1, 3, 3, &[1, 2, 3], 10)),
        (1, follower(2, 3, 3, &[1, 2, 3], 10)),
        (2, leader(3, 3, &[1, 2, 3], &[], 10)),
    ]);
    let mut world = World::serving(rc, members);
    for (ordinal, pod) in world.pods.iter_mut().enumerate() {
        let ordinal = ordinal as u32;
        *pod = running_pod(&on_emptydir, ordinal, u64::from(ordinal) + 1);
    }
    let h = Harness::start(world).await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let api = api_lines(&log);
    assert!(api.contains(&line("DELETE", &pod_path(0))), "{api:?}");
    assert!(!api.contains(&line("DELETE", &pod_path(1))), "{api:?}");
    let st = status_patch(&log);
    assert_eq!(st["faults"][0]["state"], "active");
    assert_eq!(st["faults"][1]["state"], "pending");
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
        ..World::serving(rc.clone(), raft_members(3, 2, 2))
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
    let as_primary_mode = |mut s: Status, role: Role| {
        s.engine.replication = Replication::Async;
        s.engine.role = role;
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
        ..World::serving(
            rc.clone(),
            BTreeMap::from([
                (
                    0,
                    as_primary_mode(follower(1, 2, 3, &ids, 10), Role::Secondary),
                ),
                (
                    1,
                    as_primary_mode(follower(2, 2, 3, &ids, 10), Role::Secondary),
                ),
                (
                    2,
                    as_primary_mode(leader(3, 2, &ids, &[], 10), Role::Primary),
                ),
            ]),
        )
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

// ------------------------------------------------------- identity (issue 18 §1)

fn with_incarnations(mut members: BTreeMap<u32, Status>) -> BTreeMap<u32, Status> {
    for (o, st) in members.iter_mut() {
        st.incarnation = format!("{:016x}", 0xa0 + o)
            .parse()
            .expect("an incarnation");
    }
    members
}

#[tokio::test]
async fn admin_calls_say_whom_they_are_for_and_the_address_book_binds_ids_to_incarnations() {
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World::serving(rc, with_incarnations(raft_members(3, 0, 2)))).await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let peers = member_calls(&log, "/v1/admin/peers");
    assert_eq!(peers.len(), 3);
    for c in peers {
        let o: u32 = c.who["member-".len()..]
            .trim_end_matches("/peer")
            .parse()
            .expect("ordinal");
        let h = |k: &str| c.identity.get(k).map(String::as_str);
        assert_eq!(h("x-caplab-cluster"), Some(CLUSTER_ID));
        assert_eq!(h("x-caplab-from"), Some("0"));
        assert_eq!(h("x-caplab-to"), Some((o + 1).to_string().as_str()));
        assert_eq!(
            h("x-caplab-to-incarnation"),
            Some(format!("{:016x}", 0xa0 + o).as_str())
        );
        assert_eq!(
            c.body["peers"],
            json!({
                "1": {"addr": "127.0.0.1:7000", "incarnation": "00000000000000a0"},
                "2": {"addr": "127.0.0.2:7000", "incarnation": "00000000000000a1"},
                "3": {"addr": "127.0.0.3:7000", "incarnation": "00000000000000a2"},
            })
        );
    }
}

#[tokio::test]
async fn a_pod_ip_answering_as_another_member_is_not_addressed_under_the_pods_id() {
    // demo-2's pod says member 3, but whoever answers at its IP is member 6 (the IP went to
    // a replacement pod before the pod list caught up): member 3 is not there any more.
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let mut members = with_incarnations(raft_members(3, 0, 2));
    if let Some(st) = members.get_mut(&2) {
        st.id = 6;
        st.incarnation = "00000000000000c6".parse().expect("an incarnation");
    }
    let h = Harness::start(World::serving(rc, members)).await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let peers = admin(&log, "peers");
    assert_eq!(
        peers.len(),
        2,
        "nothing is sent to whoever is at demo-2's IP"
    );
    for (who, body) in peers {
        assert_ne!(who, "member-2");
        let book = body["peers"].as_object().expect("book");
        assert_eq!(
            book.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["1", "2"],
            "member 3 is not addressed at an IP where member 6 answers"
        );
    }
    let st = status_patch(&log);
    assert_eq!(st["members"][2]["reachable"], false);
}

#[tokio::test]
async fn a_misdirected_answer_is_not_retried_and_the_next_pass_observes_again() {
    // Ordinal 3 is a new, blank member to add as a learner; but the leader's pod was replaced
    // between the status poll and the admin calls: the member there now is another
    // incarnation and answers 421.
    let rc = with_status(demo(4, ""), bootstrapped_status(3, 0, 2));
    let mut members = with_incarnations(raft_members(3, 0, 2));
    members.insert(3, blank(4));
    let h = Harness::start(World {
        replaced: BTreeMap::from([(0, "00000000000000ff".to_string())]),
        ..World::serving(rc, members)
    })
    .await;
    let action = h.reconcile().await.expect("reconcile");
    assert_eq!(action, Action::requeue(FAST), "observe again soon");
    let log = h.take_log();
    let learners = admin(&log, "learners");
    assert_eq!(learners.len(), 1, "a 421 is not retried blindly");
    assert_eq!(learners[0].0, "member-0");
    assert!(
        !events(&log).iter().any(|e| e.1 == "MemberAdded"),
        "{:?}",
        events(&log)
    );
    let st = status_patch(&log);
    let (_, _, msg) = condition(&st, "Progressing");
    assert!(
        msg.contains("demo-0 is not demo-0 (member id 1) any more")
            && msg.contains("observing again"),
        "{msg}"
    );
}

// ----------------------------------------------------- disruption budget (§6)

#[tokio::test]
async fn the_disruption_budget_falls_back_to_policy_v1beta1_where_v1_is_not_served() {
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World {
        no_policy_v1: true,
        ..World::serving(rc, raft_members(3, 0, 2))
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let lines = api_lines(&log);
    let at = lines
        .iter()
        .position(|l| *l == line("PATCH", PDB))
        .expect("v1 tried first");
    assert_eq!(lines[at + 1], line("PATCH", PDB_V1BETA1));
    let beta = api_calls(&log)
        .into_iter()
        .find(|c| c.api("PATCH", PDB_V1BETA1))
        .expect("applied as v1beta1");
    assert_server_side_apply(beta);
    assert_owned(&beta.body);
    assert_eq!(beta.body["apiVersion"], "policy/v1beta1");
    assert_eq!(beta.body["spec"]["minAvailable"], 2);
}

// ------------------------------------------- failover (issue 18 §4, issue 19 §2)

/// A primary of `epoch` at sequence `seq`, replicating to `members`, hearing from `heard`
/// (each at `seq`).
fn primary(id: u64, epoch: u64, members: &[u64], seq: u64, heard: &[u64]) -> Status {
    let mut st = leader(id, epoch, members, &[], seq);
    st.engine.replication = Replication::Async;
    st.engine.role = Role::Primary;
    st.engine.discarded_writes = Some(0);
    st.engine.peers.retain(|p, _| heard.contains(p));
    st
}

/// A secondary following `primary` at sequence `seq`.
fn secondary(id: u64, epoch: u64, primary: u64, seq: u64) -> Status {
    let mut st = follower(id, epoch, primary, &[], seq);
    st.engine.replication = Replication::Async;
    st.engine.role = Role::Secondary;
    st.engine.discarded_writes = Some(0);
    st
}

/// A primary-mode cluster whose primary demo-0 (member 1) is at 124 while demo-1 has 100
/// and demo-2 110, observed once; then demo-0 stops answering (its pod still runs) for
/// longer than the grace period.
async fn primary_lost(replication: &str) -> (Harness, RegisterCluster) {
    let spec = format!("  replication: {replication}\n  failoverAfterSeconds: 1\n");
    let mut st = bootstrapped_status(3, 0, 1);
    st["replication"] = json!(replication);
    let rc = with_status(demo(3, &spec), st);
    let h = Harness::start(World::serving(
        rc.clone(),
        BTreeMap::from([
            (0, primary(1, 1, &[1, 2, 3], 124, &[2, 3])),
            (1, secondary(2, 1, 1, 100)),
            (2, secondary(3, 1, 1, 110)),
        ]),
    ))
    .await;
    h.reconcile().await.expect("primary observed");
    let st = status_patch(&h.take_log());
    assert_eq!(st["lastPrimary"]["lastSeq"], 124);
    h.world().members.remove(&0);
    h.reconcile().await.expect("primary down");
    h.take_log();
    {
        let mut w = h.world();
        let status =
            w.rc.as_mut()
                .and_then(|rc| rc.status.as_mut())
                .expect("status");
        assert!(
            status.primary_unreachable_since.is_some(),
            "grace period started"
        );
        status.primary_unreachable_since = Some("2020-01-01T00:00:00Z".into());
    }
    (h, rc)
}

/// The primary died right after the bootstrap, before the operator ever saw it lead: the
/// secondaries hold a member set, so the failover clock starts all the same and a secondary
/// is promoted (before, the cluster waited "before failover" for ever, phase Creating).
#[tokio::test]
async fn a_primary_lost_before_the_operator_saw_it_lead_still_fails_over() {
    let spec = "  replication: async\n  failoverAfterSeconds: 1\n";
    let mut st = bootstrapped_status(3, 0, 1);
    st["replication"] = json!("async");
    st["phase"] = json!("Creating");
    st["bootstrapped"] = json!(false);
    let rc = with_status(demo(3, spec), st);
    let h = Harness::start(World::serving(
        rc.clone(),
        BTreeMap::from([(1, secondary(2, 1, 1, 5)), (2, secondary(3, 1, 1, 7))]),
    ))
    .await;
    h.reconcile().await.expect("primary down");
    h.take_log();
    {
        let mut w = h.world();
        let status =
            w.rc.as_mut()
                .and_then(|rc| rc.status.as_mut())
                .expect("status");
        assert!(
            status.primary_unreachable_since.is_some(),
            "the failover clock started"
        );
        status.primary_unreachable_since = Some("2020-01-01T00:00:00Z".into());
    }
    h.reconcile().await.expect("failover");
    let log = h.take_log();
    let promoted = admin(&log, "promote");
    assert_eq!(promoted.len(), 1, "{:?}", api_lines(&log));
    assert!(["member-2", "member-3"].contains(&promoted[0].0.as_str()));
}

#[tokio::test]
async fn async_failover_bounds_the_loss_from_the_members_indexes_and_reconciles_it_later() {
    let (h, _rc) = primary_lost("async").await;

    // The failover: demo-2 (110) is promoted; the old primary was last seen at 124.
    h.reconcile().await.expect("failover");
    let log = h.take_log();
    assert_eq!(admin(&log, "promote").len(), 1);
    assert_eq!(admin(&log, "promote")[0].0, "member-2");
    let evs = events(&log);
    let failover = evs
        .iter()
        .find(|e| e.1 == "Failover")
        .unwrap_or_else(|| panic!("no Failover event in {evs:?}"));
    assert_eq!(failover.0, "Warning");
    assert!(
        failover.2.starts_with(
            "primary demo-0 failed; promoted demo-2 (epoch 2); up to 14 acknowledged writes may be lost"
        ),
        "{}",
        failover.2
    );
    let st = status_patch(&log);
    let f = &st["lastFailover"];
    assert_eq!(
        (
            &f["fromName"],
            &f["toName"],
            &f["epoch"],
            &f["possibleLoss"]
        ),
        (&json!("demo-0"), &json!("demo-2"), &json!(2), &json!(14))
    );
    assert!(f["discardedWrites"].is_null(), "not known yet: {f}");

    // demo-2 is primary of epoch 2; demo-0 comes back still believing it is primary of epoch
    // 1: it is pointed at demo-2 first.
    {
        let mut w = h.world();
        let mut new_primary = primary(3, 2, &[1, 2, 3], 110, &[2]);
        new_primary.incarnation = "00000000000000c3".parse().expect("an incarnation");
        w.members.insert(2, new_primary);
        w.members.insert(1, secondary(2, 2, 3, 110));
        w.members.insert(0, primary(1, 1, &[1, 2, 3], 124, &[]));
    }
    h.reconcile().await.expect("old primary back");
    let log = h.take_log();
    assert_eq!(
        admin(&log, "primary"),
        vec![(
            "member-0".to_string(),
            json!({"id": 3, "addr": {"addr": "127.0.0.3:7000", "incarnation": "00000000000000c3"}})
        )],
        "pointed at the new primary, the incarnation it answered with included"
    );
    assert!(!events(&log).iter().any(|e| e.1 == "FailoverReconciled"));

    // Following demo-2 and acknowledged by it, demo-0 reports the writes it dropped.
    {
        let mut w = h.world();
        let mut back = secondary(1, 2, 3, 110);
        back.engine.discarded_writes = Some(9);
        w.members.insert(0, back);
        w.members.insert(2, primary(3, 2, &[1, 2, 3], 110, &[1, 2]));
    }
    h.reconcile().await.expect("reconciled");
    let log = h.take_log();
    let evs = events(&log);
    let done = evs
        .iter()
        .find(|e| e.1 == "FailoverReconciled")
        .unwrap_or_else(|| panic!("no FailoverReconciled event in {evs:?}"));
    assert!(
        done.2.starts_with(
            "demo-0 (member id 1) rejoined as a secondary and discarded 9 acknowledged writes"
        ),
        "{}",
        done.2
    );
    let st = status_patch(&log);
    assert_eq!(st["lastFailover"]["discardedWrites"], 9);

    // Said once.
    h.reconcile().await.expect("quiet");
    assert!(!events(&h.take_log())
        .iter()
        .any(|e| e.1 == "FailoverReconciled"));
}

#[tokio::test]
async fn sync_failover_leaves_the_new_primary_a_write_set_it_can_make_progress_with() {
    let (h, _rc) = primary_lost("sync").await;
    h.reconcile().await.expect("failover");
    h.take_log();

    // demo-2 is primary of epoch 2 but still lists demo-0 (member 1), which is down: no sync
    // write could be acknowledged. The operator takes it out of the write set.
    {
        let mut w = h.world();
        w.members.insert(2, primary(3, 2, &[1, 2, 3], 110, &[2]));
        w.members.insert(1, secondary(2, 2, 3, 110));
    }
    h.reconcile().await.expect("write set");
    let log = h.take_log();
    assert_eq!(
        admin(&log, "voters"),
        vec![("member-2".to_string(), json!({"voters": [2, 3]}))]
    );
    assert!(events(&log).iter().any(|e| e.1 == "MemberRemoved"
        && e.2
            .starts_with("removed demo-0 (member id 1) from the primary's write set")));
    let st = status_patch(&log);
    let (_, _, msg) = condition(&st, "Progressing");
    assert!(
        msg.contains("sync: writes wait for every secondary in the write set; demo-0 down"),
        "{msg}"
    );

    // demo-0 back, following demo-2: it is added back and catches up.
    {
        let mut w = h.world();
        w.members.insert(2, primary(3, 2, &[2, 3], 110, &[2]));
        w.members.insert(0, secondary(1, 2, 3, 90));
    }
    h.reconcile().await.expect("back");
    let log = h.take_log();
    assert_eq!(
        admin(&log, "voters"),
        vec![("member-2".to_string(), json!({"voters": [1, 2, 3]}))]
    );
}

// ------------------------------------------------------------------ status

/// Every member answers, none leads: `role` (e.g. candidate) in the given terms.
fn leaderless(terms: &[u64], role: Role) -> BTreeMap<u32, Status> {
    (0u32..)
        .zip(terms)
        .map(|(o, t)| {
            let mut s = follower(u64::from(o) + 1, *t, 0, &[1, 2, 3], 10);
            s.engine.leader = None;
            s.engine.role = role;
            (o, s)
        })
        .collect()
}

#[tokio::test]
async fn status_is_refreshed_every_second_while_degraded_and_says_when() {
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World::serving(rc, raft_members(3, 0, 2))).await;

    let before = Utc::now() - chrono::Duration::seconds(1);
    let action = h.reconcile().await.expect("reconcile 1");
    let st = status_patch(&h.take_log());
    assert_eq!(st["phase"], "Ready");
    assert_eq!(
        action,
        Action::requeue(SLOW),
        "Ready and quiet: the calm interval"
    );
    assert!(SLOW.as_secs() <= 15, "observedAt stays fresh when quiet");
    let observed = ts(&st["observedAt"]);
    assert!(observed >= before && observed <= Utc::now(), "{observed}");

    // A follower stops answering: Degraded, and the next look comes within about a second.
    h.world().members.remove(&2);
    let action = h.reconcile().await.expect("reconcile 2");
    let st = status_patch(&h.take_log());
    assert_eq!(st["phase"], "Degraded");
    assert!(
        requeue_secs(&action) <= 1.0,
        "status must follow the members within ~2 s: {action:?}"
    );
    let m = &st["members"][2];
    assert_eq!(
        (&m["reachable"], &m["replicating"]),
        (&json!(false), &json!(true))
    );
}

#[tokio::test]
async fn no_quorum_shows_the_highest_term_and_says_members_campaign() {
    let mut st = bootstrapped_status(3, 0, 3);
    st["lastLeader"] = json!({"name": "demo-0", "id": 1, "term": 3});
    let rc = with_status(demo(3, ""), st);
    let h = Harness::start(World::serving(rc, leaderless(&[7, 9, 8], Role::Candidate))).await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["phase"], "NoQuorum");
    assert_eq!(
        st["term"], 9,
        "TERM shows the highest term any member reports"
    );
    let (status, _, message) = condition(&st, "Available");
    assert_eq!(status, "False");
    assert!(
        message.contains("members are campaigning without a winner (terms up to 9)"),
        "{message}"
    );
    assert!(events(&log).iter().any(|e| e.1 == "QuorumLost"
        && e.2 == "no leader: writes are refused (last leader demo-0, term 3)"));
}

#[tokio::test]
async fn leader_change_after_no_quorum_names_the_previous_leader() {
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World::serving(rc, raft_members(3, 0, 2))).await;
    h.reconcile().await.expect("reconcile 1");
    h.take_log();

    h.world().members = leaderless(&[3, 3, 3], Role::Follower);
    h.reconcile().await.expect("reconcile 2");
    let st = status_patch(&h.take_log());
    assert_eq!(st["phase"], "NoQuorum");
    assert!(st.get("leader").is_none_or(Value::is_null));

    h.world().members = raft_members(3, 2, 3);
    h.reconcile().await.expect("reconcile 3");
    let evs = events(&h.take_log());
    let changed: Vec<&str> = evs
        .iter()
        .filter(|e| e.1 == "LeaderChanged")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(
        changed,
        ["leader demo-0 -> demo-2 (term 3; member ids 1 -> 3)"]
    );
}

#[tokio::test]
async fn an_isolated_async_primary_is_reachable_but_its_secondaries_do_not_replicate() {
    let spec = "  replication: async\n";
    let mut st = bootstrapped_status(3, 0, 1);
    st["replication"] = json!("async");
    let rc = with_status(demo(3, spec), st);
    let ids = [1, 2, 3];
    let mut primary = leader(1, 1, &ids, &[], 10);
    primary.engine.replication = Replication::Async;
    primary.engine.role = Role::Primary;
    // Cut off by a partition: the primary last heard its secondaries 9 s ago.
    for p in primary.engine.peers.values_mut() {
        p.last_contact_ms = Some(9_000);
    }
    let secondary = |id| {
        let mut s = follower(id, 1, 1, &ids, 10);
        s.engine.replication = Replication::Async;
        s.engine.role = Role::Secondary;
        s
    };
    let h = Harness::start(World::serving(
        rc,
        BTreeMap::from([(0, primary), (1, secondary(2)), (2, secondary(3))]),
    ))
    .await;

    h.reconcile().await.expect("reconcile");
    let st = status_patch(&h.take_log());
    let flags: Vec<(bool, bool)> = st["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["reachable"] == true, m["replicating"] == true))
        .collect();
    // The operator reaches all three; the primary still acknowledges writes alone (async),
    // its secondaries get none of them.
    assert_eq!(flags, [(true, true), (true, false), (true, false)]);
    assert_eq!(st["phase"], "Degraded");
    let (_, _, message) = condition(&st, "Degraded");
    assert!(
        message.contains("demo-1: reachable by the operator but not replicating"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refused_disruption_budget_is_reported_and_the_members_are_still_managed() {
    let rc = with_status(demo(3, ""), bootstrapped_status(3, 0, 2));
    let h = Harness::start(World {
        pdb_forbidden: true,
        ..World::serving(rc, raft_members(3, 0, 2))
    })
    .await;
    h.reconcile()
        .await
        .expect("the pass goes on without the budget");
    let log = h.take_log();
    let evs = events(&log);
    let failed = evs
        .iter()
        .find(|e| e.1 == "DisruptionBudgetFailed")
        .unwrap_or_else(|| panic!("no DisruptionBudgetFailed event in {evs:?}"));
    assert_eq!(failed.0, "Warning");
    assert!(
        failed.2.contains("policy/poddisruptionbudgets"),
        "{}",
        failed.2
    );
    assert_eq!(
        admin(&log, "peers").len(),
        3,
        "members still get their address book"
    );
    assert_eq!(status_patch(&log)["phase"], "Ready");
}

// --------------------------------------------------------------- 2pc (issue 13)

/// A 2pc member of coordinator 1 over participants 1-3, as `caplab-node --replication 2pc`
/// reports itself: no term and no log indexes, the participants as voters, the coordinator
/// as leader; only the coordinator lists peers (the last transaction each acknowledged, when
/// it last answered). `in_doubt`: transaction ids this participant holds in doubt (voted yes
/// 12 s ago, decision unknown).
fn twopc_member(id: u64, in_doubt: &[u64]) -> Status {
    let ids = [1, 2, 3];
    let mut st = if id == 1 {
        leader(id, 0, &ids, &[], 0)
    } else {
        follower(id, 0, 1, &ids, 0)
    };
    let e = &mut st.engine;
    e.replication = Replication::TwoPc;
    e.role = if id == 1 {
        Role::Coordinator
    } else {
        Role::Participant
    };
    (e.term, e.commit_index, e.applied_index, e.last_log_index) = (0, 0, 0, 0);
    for p in e.peers.values_mut() {
        p.match_index = Some(40);
    }
    st.twopc = Some(TwoPcStatus {
        coordinator: Some(1),
        participants: ids.to_vec(),
        prepared: in_doubt.len() as u64,
        committed: if id == 1 { 40 } else { 0 },
        in_doubt: in_doubt.len() as u64,
        oldest_in_doubt_ms: (!in_doubt.is_empty()).then_some(12_000),
        in_doubt_transactions: in_doubt
            .iter()
            .map(|t| InDoubt {
                txid: *t,
                key: "x".into(),
                since_ms: 1_700_000_000_000,
            })
            .collect(),
        ..TwoPcStatus::default()
    });
    st
}

/// The coordinator stops answering after the participants voted yes on transaction 41: the
/// operator neither re-initialises nor promotes anyone, says the cluster is blocked (how many
/// transactions in doubt, since when, what unblocks it) once, and that it is unblocked when
/// the coordinator answers again.
#[tokio::test]
async fn a_down_2pc_coordinator_blocks_the_cluster_and_is_never_replaced() {
    let mut st = bootstrapped_status(3, 0, 0);
    st["replication"] = json!("2pc");
    let rc = with_status(demo(3, "  replication: 2pc\n"), st);
    let all = |doubt: &[u64]| -> BTreeMap<u32, Status> {
        (0..3)
            .map(|o| (o, twopc_member(u64::from(o) + 1, doubt)))
            .collect()
    };
    let h = Harness::start(World::serving(rc, all(&[]))).await;
    h.reconcile().await.expect("reconcile 1");
    let st = status_patch(&h.take_log());
    assert_eq!(
        (&st["phase"], &st["leader"]),
        (&json!("Ready"), &json!("demo-0"))
    );
    assert_eq!(st["readyReplicas"], 3, "{st}");
    assert_eq!(condition(&st, "Blocked").0, "False");

    {
        let mut w = h.world();
        w.members = all(&[41]);
        w.members.remove(&0);
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    let st = status_patch(&log);
    for what in ["init", "add-learner", "voters", "promote", "switchover"] {
        assert!(
            admin(&log, what).is_empty(),
            "{what}: {:?}",
            api_lines(&log)
        );
    }
    assert!(st.get("leader").is_none_or(Value::is_null), "{st}");
    let (blocked, reason, message) = condition(&st, "Blocked");
    assert_eq!(
        (blocked.as_str(), reason.as_str()),
        ("True", "CoordinatorDown")
    );
    for part in [
        "coordinator demo-0 (member id 1) is down and is never replaced",
        "1 transaction(s) in doubt on demo-1, demo-2 since ",
        "Unblocks when the coordinator returns",
        "POST /v1/admin/2pc/decide {\"txid\": 41,",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    let (_, _, progressing) = condition(&st, "Progressing");
    assert!(progressing.contains("never replaced"), "{progressing}");
    let evs = events(&log);
    let warned: Vec<_> = evs.iter().filter(|e| e.1 == "Blocked").collect();
    assert_eq!(warned.len(), 1, "{evs:?}");
    assert_eq!(
        (warned[0].0.as_str(), warned[0].2.as_str()),
        ("Warning", message.as_str())
    );

    h.reconcile().await.expect("reconcile 3: still blocked");
    let evs = events(&h.take_log());
    assert!(evs.iter().all(|e| e.1 != "Blocked"), "said once: {evs:?}");

    // More transactions in doubt: the condition counts them, no new Event.
    {
        let mut w = h.world();
        w.members = all(&[41, 42]);
        w.members.remove(&0);
    }
    h.reconcile().await.expect("reconcile 4: more in doubt");
    let log = h.take_log();
    let (_, _, message) = condition(&status_patch(&log), "Blocked");
    assert!(message.contains("2 transaction(s) in doubt"), "{message}");
    let evs = published_events(&log);
    assert!(evs.iter().all(|e| e.1 != "Blocked"), "said once: {evs:?}");

    h.world().members = all(&[]);
    h.reconcile().await.expect("reconcile 5");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(condition(&st, "Blocked").0, "False");
    let evs = published_events(&log);
    assert!(
        evs.iter().any(|e| e.0 == "Normal" && e.1 == "Unblocked"),
        "{evs:?}"
    );
    // The same coordinator restarted: not a leader change (it was `demo-0 -> demo-0`).
    assert!(evs.iter().all(|e| e.1 != "LeaderChanged"), "{evs:?}");
}

/// A member joining a 2pc cluster is announced in 2pc's words: it joins the participants
/// (Raft's "learner" and "voter" mean nothing there).
#[tokio::test]
async fn a_member_joining_a_2pc_cluster_is_announced_as_a_participant() {
    let mut st = bootstrapped_status(3, 0, 0);
    st["replication"] = json!("2pc");
    let rc = with_status(demo(4, "  replication: 2pc\n"), st);
    let mut members: BTreeMap<u32, Status> = (0..3)
        .map(|o| (o, twopc_member(u64::from(o) + 1, &[])))
        .collect();
    members.insert(3, blank(4));
    let h = Harness::start(World::serving(rc, members)).await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    assert_eq!(admin(&log, "learners").len(), 1, "{:?}", api_lines(&log));
    let evs = events(&log);
    let added: Vec<_> = evs.iter().filter(|e| e.1 == "MemberAdded").collect();
    assert_eq!(added.len(), 1, "{evs:?}");
    assert_eq!(added[0].2, "demo-3 (member id 4) joined as a participant");
    let (_, _, progressing) = condition(&status_patch(&log), "Progressing");
    assert!(
        progressing.contains("added participant demo-3"),
        "{progressing}"
    );
    for (_, reason, note) in &evs {
        assert!(
            !note.contains("learner") && !note.contains("voter"),
            "{reason}: {note}"
        );
    }
}

/// The primary is crashed by a fault: its pod goes in the pass that saw it lead at epoch 1,
/// and the Events that name it afterwards say epoch 1 (they said epoch 0: the epoch was read
/// from the member entry the crash had just emptied).
#[tokio::test]
async fn a_crashed_primary_is_remembered_in_the_epoch_it_reported() {
    let spec =
        "  replication: async\n  faults:\n    - {name: kill, kind: crash, targets: [leader], \
                durationSeconds: 60}\n";
    let mut st = bootstrapped_status(3, 0, 1);
    st["replication"] = json!("async");
    let rc = with_status(demo(3, spec), st);
    let h = Harness::start(World::serving(
        rc,
        BTreeMap::from([
            (0, primary(1, 1, &[1, 2, 3], 10, &[2, 3])),
            (1, secondary(2, 1, 1, 10)),
            (2, secondary(3, 1, 1, 10)),
        ]),
    ))
    .await;
    h.reconcile().await.expect("reconcile 1: the crash");
    let mut log = h.take_log();
    assert!(
        api_lines(&log).contains(&line("DELETE", &pod_path(0))),
        "{:?}",
        api_lines(&log)
    );
    assert_eq!(status_patch(&log)["lastLeader"]["term"], 1);
    {
        let mut w = h.world();
        w.pods
            .retain(|p| p.metadata.name.as_deref() != Some("demo-0"));
        w.members.remove(&0);
    }
    h.reconcile()
        .await
        .expect("reconcile 2: the primary is gone");
    log.extend(h.take_log());
    let evs = published_events(&log);
    let lost: Vec<_> = evs.iter().filter(|e| e.1 == "QuorumLost").collect();
    assert!(!lost.is_empty(), "{evs:?}");
    for (_, reason, note) in &evs {
        assert!(!note.contains("epoch 0"), "{reason}: {note}");
    }
    assert!(
        evs.iter()
            .any(|e| e.2 == "no primary: writes are refused (last primary demo-0, epoch 1)"),
        "{evs:?}"
    );
}

/// Storage added to a running 2pc cluster created without it (with a crash fault on the
/// coordinator, which storage would otherwise allow): the coordinator's pod is on an
/// emptyDir, so the spec is refused, nothing is deleted, and a Warning says what to do.
#[tokio::test]
async fn storage_added_to_a_running_2pc_cluster_is_refused() {
    let old = demo(3, "  replication: 2pc\n");
    let mut st = bootstrapped_status(3, 0, 0);
    st["replication"] = json!("2pc");
    let rc = with_status(
        demo(
            3,
            "  replication: 2pc\n  storage: {size: 64Mi}\n  faults:\n  - {name: down, kind: crash, \
             targets: [leader], durationSeconds: 10}\n",
        ),
        st,
    );
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&old, o, u64::from(o) + 1))
            .collect(),
        ..World::serving(
            rc,
            (0..3)
                .map(|o| (o, twopc_member(u64::from(o) + 1, &[])))
                .collect(),
        )
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let lines = api_lines(&log);
    assert!(!lines.iter().any(|l| l.starts_with("DELETE")), "{lines:?}");
    let evs = events(&log);
    let warned: Vec<_> = evs.iter().filter(|e| e.1 == "InvalidSpec").collect();
    assert_eq!(warned.len(), 1, "{evs:?}");
    assert_eq!(warned[0].0, "Warning");
    assert!(
        warned[0]
            .2
            .contains("spec.storage cannot be added to a running 2pc cluster created without it")
            && warned[0]
                .2
                .contains("create a new cluster with spec.storage"),
        "{}",
        warned[0].2
    );
    assert_eq!(condition(&status_patch(&log), "SpecValid").0, "False");
}

/// Without storage a recreated coordinator would come back as a new member and block its
/// participants for ever: the rollout leaves its pod alone and says why.
#[tokio::test]
async fn a_rollout_without_storage_leaves_the_2pc_coordinators_pod_alone() {
    let old = demo(3, "  replication: 2pc\n");
    let mut st = bootstrapped_status(3, 0, 0);
    st["replication"] = json!("2pc");
    let rc = with_status(
        demo(3, "  replication: 2pc\n  image: caplab/node:0.2.0\n"),
        st,
    );
    let h = Harness::start(World {
        pods: vec![
            running_pod(&old, 0, 1),
            running_pod(&rc, 1, 2),
            running_pod(&rc, 2, 3),
        ],
        ..World::serving(
            rc,
            (0..3)
                .map(|o| (o, twopc_member(u64::from(o) + 1, &[])))
                .collect(),
        )
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    assert!(
        !api_lines(&log).iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        api_lines(&log)
    );
    let (_, _, progressing) = condition(&status_patch(&log), "Progressing");
    assert!(
        progressing.contains("coordinator's pod is not recreated")
            && progressing.contains("create a new cluster with spec.storage"),
        "{progressing}"
    );
}
