//! Member identity on real processes (issue 18 §1): a message meant for another member,
//! another incarnation of the same member or another cluster is refused with 421 and counted,
//! so a replaced or wiped member never takes part in an election it does not belong to.

mod common;

use common::{wait_until, Cluster};
use reqwest::Method;
use serde_json::{json, Value};

/// `misdirectedMessages` in member `id`'s status.
async fn misdirected(c: &Cluster, id: u64) -> Option<u64> {
    c.status(id).await?["misdirectedMessages"].as_u64()
}

/// Waits until member `id` has refused at least `n` messages as misdirected.
async fn wait_for_refusals(c: &Cluster, id: u64, n: u64) {
    wait_until(
        &format!("member {id} to refuse {n} misdirected messages"),
        || async { (misdirected(c, id).await? >= n).then_some(()) },
    )
    .await;
}

/// `caplab_misdirected_messages_total{reason}` in member `id`'s metrics.
async fn misdirected_metric(c: &Cluster, id: u64, reason: &str) -> Option<u64> {
    let text = c
        .http
        .get(c.members[&id].url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = format!("caplab_misdirected_messages_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

fn others(c: &Cluster, not: &[u64]) -> Vec<u64> {
    c.members
        .keys()
        .copied()
        .filter(|id| !not.contains(id))
        .collect()
}

/// Asserts member `id` is not the leader, as far as it and the running members can tell.
async fn assert_not_leader(c: &Cluster, id: u64, why: &str) {
    for m in c.running() {
        let s = c.status(m.id).await.unwrap_or_default();
        assert_ne!(s["leader"], json!(id), "{why}: member {} says {s}", m.id);
    }
}

/// The scenario: a stale member (cut off while a write committed) and a member whose
/// data directory was wiped and that restarted under its old id. Before the fix the wiped
/// member granted the stale one its vote (its log was empty) and the committed write read
/// as 0 ever after.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_under_its_old_id_gives_no_vote_and_committed_writes_survive() {
    let mut c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let rest = others(&c, &[leader]);
    let (stale, wiped) = (rest[0], rest[1]);
    c.set_faults(stale, json!({"partition": {"peers": [leader, wiped]}}))
        .await;
    assert_eq!(c.put(leader, "x", 5).await.0, 200);

    let before = c.status(wiped).await.unwrap_or_default()["incarnation"].clone();
    c.wipe(wiped);
    c.kill(leader);
    let after = wait_until("the wiped member to answer", || async {
        Some(c.status(wiped).await?["incarnation"].clone())
    })
    .await;
    assert_ne!(
        before, after,
        "a wiped data directory draws a new incarnation"
    );
    c.set_faults(stale, json!({})).await;

    // The stale member campaigns; each vote request to the wiped member names the old
    // incarnation and is refused.
    wait_for_refusals(&c, wiped, 3).await;
    assert!(misdirected_metric(&c, wiped, "wrong-incarnation").await >= Some(3));
    assert_not_leader(
        &c,
        stale,
        "the stale member won with the wiped member's vote",
    )
    .await;

    c.restart(leader);
    let now = c.wait_for_leader_among(&[leader, stale], None).await;
    assert_eq!(
        c.get(now, "x", "linearizable").await.1["value"],
        5,
        "a committed write must never read as 0"
    );
}

/// A pod recreated under a new member id that got the old member's IP: messages addressed to
/// the old member are refused, so it cannot lend a vote to an election it is not part of.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_at_an_old_members_address_refuses_its_messages() {
    let mut c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let rest = others(&c, &[leader]);
    let (survivor, replaced) = (rest[0], rest[1]);
    assert_eq!(c.put(leader, "x", 5).await.0, 200);
    c.replace(replaced, 9);
    // The leader's heartbeats, addressed to the old member, reach member 9.
    wait_for_refusals(&c, 9, 1).await;
    assert!(misdirected_metric(&c, 9, "wrong-member").await >= Some(1));

    // Without the leader, the survivor cannot win: member 9's answers are not votes.
    c.kill(leader);
    let seen = misdirected(&c, 9).await.unwrap_or(0);
    wait_for_refusals(&c, 9, seen + 3).await;
    assert_not_leader(&c, survivor, "the survivor won with a vote from member 9").await;
    let s = c.status(9).await.unwrap_or_default();
    assert_eq!(s["voters"], json!([]), "member 9 was never added: {s}");

    c.restart(leader);
    let now = c.wait_for_leader_among(&[leader, survivor], None).await;
    assert_eq!(c.get(now, "x", "linearizable").await.1["value"], 5);
}

/// A message from another cluster is refused (raw request), and a member restarted with
/// another cluster id refuses its old cluster's heartbeats while the rest keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn messages_from_another_cluster_are_refused() {
    let mut c = common::start_with(3, &["--cluster-id", "ns/demo/uid-a"]).await;
    let leader = c.wait_for_leader().await;
    let status = c.status(leader).await.unwrap_or_default();
    assert_eq!(status["clusterId"], "ns/demo/uid-a");
    let incarnation = status["incarnation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(incarnation.len(), 16, "{status}");

    let r = c
        .http
        .post(c.members[&leader].peer_url("/raft/vote"))
        .bearer_auth(common::TOKEN)
        .header("x-caplab-cluster", "ns/demo/uid-b")
        .header("x-caplab-from", "7")
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 421);
    assert_eq!(
        r.headers()
            .get("x-caplab-incarnation")
            .and_then(|v| v.to_str().ok()),
        Some(incarnation.as_str()),
        "every peer-port answer names the incarnation"
    );
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["reason"], "wrong-cluster", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("uid-a")));
    assert_eq!(misdirected(&c, leader).await, Some(1));
    assert_eq!(
        misdirected_metric(&c, leader, "wrong-cluster").await,
        Some(1)
    );

    let follower = others(&c, &[leader])[0];
    c.restart_with(follower, &["--cluster-id", "ns/demo/uid-b"]);
    wait_for_refusals(&c, follower, 1).await;
    assert!(misdirected_metric(&c, follower, "wrong-cluster").await >= Some(1));
    assert_eq!(
        c.put(leader, "y", 1).await.0,
        200,
        "the other two still serve"
    );

    // Admin calls without identity headers (curl) are accepted.
    let r = c
        .http
        .get(c.members[&leader].peer_url("/v1/admin/peers"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
}

/// A member never initialised nor added (no membership, empty log) refuses vote requests
/// before openraft sees them; before the fix it granted any candidate its vote.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_never_initialised_grants_no_vote() {
    let c = Cluster::launch(common::harness(), 1, &[]);
    let vote = json!({
        "vote": {"leader_id": {"term": 5, "node_id": 2}, "committed": false},
        "last_log_id": null,
    });
    let (status, body) = wait_until("the lone member to answer a vote request", || async {
        let r = c
            .http
            .post(c.members[&1].peer_url("/raft/vote"))
            .bearer_auth(common::TOKEN)
            .header("x-caplab-from", "2")
            .json(&vote)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json::<Value>().await.unwrap_or_default()))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no vote")),
        "{body}"
    );
    let s = c.status(1).await.unwrap_or_default();
    assert_eq!(s["term"], 0, "the vote request changed nothing: {s}");

    // Once added to a cluster, the member takes part in elections as usual.
    let (status, body) = c
        .admin(
            1,
            Method::POST,
            "/v1/admin/init",
            json!({"members": {"1": c.members[&1].peer}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.wait_for_leader().await;
}
