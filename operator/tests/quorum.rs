//! Reconcile tests of `replication: quorum` against the mocked API server and stand-in
//! members that answer like real quorum members (node/src/quorum: role `replica`, no
//! leader, term 0, a `quorum` section with N, R, W and who each replica reaches).

mod mock;

use caplab_api::status::{QuorumCounters, QuorumStatus, Reach, Replication, Role, Status};
use caplab_operator::crd::RegisterCluster;
use serde_json::json;

use mock::{
    cluster, condition, events, member_calls, status, status_patch, Harness, World, NAME, NS,
};

fn quorum_cluster() -> RegisterCluster {
    cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {NAME}, namespace: {NS}, uid: 11111111-2222-3333-4444-555555555555, generation: 1}}
spec: {{replicas: 3, replication: quorum, readQuorum: 2, writeQuorum: 2}}"
    ))
}

/// Member `id` as a real quorum member reports itself: holding `membership` (empty before
/// init), R = W = 2, reaching the members in `reaches` (itself always).
fn replica(id: u64, membership: &[u64], reaches: &[u64]) -> Status {
    let mut st = status(id, Role::Replica);
    st.engine.replication = Replication::Quorum;
    st.engine.voters = membership.to_vec();
    st.voter = membership.contains(&id);
    let n = membership.len();
    st.quorum = Some(QuorumStatus {
        n,
        read_quorum: 2,
        write_quorum: 2,
        overlapping: 4 > n,
        replicas: membership
            .iter()
            .map(|m| {
                let up = *m == id || reaches.contains(m);
                let reach = Reach {
                    reachable: up,
                    last_contact_ms: up.then_some(40),
                    last_error: (!up).then(|| "connection refused".to_string()),
                };
                (*m, reach)
            })
            .collect(),
        anti_entropy_interval_ms: 1000,
        counters: QuorumCounters::default(),
    });
    st
}

async fn started() -> (Harness, RegisterCluster) {
    started_with(quorum_cluster()).await
}

async fn started_with(rc: RegisterCluster) -> (Harness, RegisterCluster) {
    let members = (0..3)
        .map(|o| (o, replica(u64::from(o) + 1, &[], &[])))
        .collect();
    let world = World::serving(rc.clone(), members);
    (Harness::start(world).await, rc)
}

/// Every member holds `membership`; member `o` reaches `reaches[o]`.
fn set_members(h: &Harness, membership: &[u64], reaches: [&[u64]; 3]) {
    let mut w = h.world();
    for (o, r) in reaches.into_iter().enumerate() {
        let o = u32::try_from(o).expect("ordinal");
        w.members
            .insert(o, replica(u64::from(o) + 1, membership, r));
    }
}

#[tokio::test]
async fn quorum_members_get_one_membership_and_a_leaderless_status() {
    let (h, _rc) = started().await;
    h.reconcile().await.expect("reconcile 1");
    let log = h.take_log();
    let init = member_calls(&log, "/v1/admin/init");
    assert_eq!(init.len(), 1, "one init; the member passes it on");
    assert_eq!(init[0].who, "member-0/peer");
    let ids: Vec<&String> = init[0].body["members"]
        .as_object()
        .expect("members")
        .keys()
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    let evs = events(&log);
    let boot = evs
        .iter()
        .find(|e| e.1 == "Bootstrapped")
        .expect("Bootstrapped");
    assert!(boot.2.contains("(N=3, R=2, W=2)"), "{boot:?}");
    let st = status_patch(&log);
    assert_eq!(st["replication"], "quorum");
    assert_eq!(st["leader"], "leaderless", "the LEADER column");
    assert_eq!(st["phase"], "Creating");

    // Every member holds the membership and reaches every replica: Ready, nothing to send.
    let all: &[u64] = &[1, 2, 3];
    set_members(&h, all, [all, all, all]);
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(member_calls(&log, "/v1/admin/init").is_empty());
    let st = status_patch(&log);
    assert_eq!(st["phase"], "Ready");
    assert_eq!(st["ready"], "3/3");
    assert_eq!(st["leader"], "leaderless");
    assert_eq!(st["quorum"]["replicationFactor"], 3);
    assert_eq!(st["quorum"]["overlapping"], true);
    assert_eq!(
        st["quorum"]["serving"],
        json!(["demo-0", "demo-1", "demo-2"])
    );
    let available = condition(&st, "Available");
    assert_eq!(
        (available.0.as_str(), available.1.as_str()),
        ("True", "QuorumsReachable")
    );
    let evs = events(&log);
    assert!(evs.iter().any(|e| e.1 == "Ready"), "{evs:?}");
    assert!(evs.iter().all(|e| e.1 != "LeaderChanged"), "{evs:?}");
}

#[tokio::test]
async fn a_partition_degrades_and_an_all_way_split_loses_the_quorum() {
    let (h, _rc) = started().await;
    h.reconcile().await.expect("bootstrap");
    let all: &[u64] = &[1, 2, 3];
    set_members(&h, all, [all, all, all]);
    h.reconcile().await.expect("ready");
    h.take_log();

    // demo-0 cut off from the others, whose replicas counted 3 of its writes lost (its
    // clock is behind): Degraded, still Available on the majority side.
    set_members(&h, all, [&[], &[2, 3], &[2, 3]]);
    for o in [1, 2] {
        let mut w = h.world();
        let q = w
            .members
            .get_mut(&o)
            .and_then(|s| s.quorum.as_mut())
            .expect("quorum");
        q.counters.lww_lost_writes.insert(1, 3);
    }
    h.reconcile().await.expect("partition");
    let log = h.take_log();
    assert!(
        member_calls(&log, "/v1/admin/init").is_empty(),
        "membership unchanged"
    );
    let st = status_patch(&log);
    assert_eq!(st["phase"], "Degraded");
    assert_eq!(st["quorum"]["serving"], json!(["demo-1", "demo-2"]));
    assert_eq!(st["quorum"]["lwwLostWrites"], json!({"demo-0": 3}));
    assert_eq!(condition(&st, "Available").0, "True");
    let degraded = condition(&st, "Degraded");
    assert!(
        degraded.2.contains("demo-0: cut off from some replicas"),
        "{degraded:?}"
    );

    // Nobody reaches max(R, W) = 2: NoQuorum, with a Warning that says why.
    set_members(&h, all, [&[], &[], &[]]);
    h.reconcile().await.expect("split");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["phase"], "NoQuorum");
    let evs = events(&log);
    let lost = evs
        .iter()
        .find(|e| e.1 == "QuorumLost")
        .expect("QuorumLost");
    assert_eq!(lost.0, "Warning");
    assert!(
        lost.2.contains("no member reaches max(R, W) = 2"),
        "{lost:?}"
    );
}

#[tokio::test]
async fn faults_start_once_the_leaderless_members_are_initialised() {
    // No leader is ever seen in quorum mode: a fault must not wait for one for ever.
    let (h, _rc) = started_with(cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {NAME}, namespace: {NS}, uid: 11111111-2222-3333-4444-555555555555, generation: 1}}
spec:
  replicas: 3
  replication: quorum
  faults: [{{name: slow-clock-0, kind: clockSkew, targets: [0], offsetMs: -5000}}]"
    )))
    .await;
    h.reconcile().await.expect("reconcile 1");
    let st = status_patch(&h.take_log());
    assert_eq!(st["faults"][0]["state"], "pending", "before init: {st:#}");

    let all: &[u64] = &[1, 2, 3];
    set_members(&h, all, [all, all, all]);
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["faults"][0]["state"], "active", "{st:#}");
    assert_eq!(st["faults"][0]["targets"], json!([0]), "{st:#}");
    let pushed = member_calls(&log, "/v1/admin/faults");
    assert!(
        pushed
            .iter()
            .any(|c| c.who == "member-0/peer" && c.body["clockSkewMs"] == -5000),
        "{pushed:?}"
    );
}
