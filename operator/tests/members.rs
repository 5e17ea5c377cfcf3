//! The operator's member client and membership decisions against real `caplab-node`
//! processes on loopback (the shared `caplab-testkit` harness): the identity contract as the
//! members enforce it (issue 18 §1), and a sync cluster that accepts writes again after a
//! failover (issue 18 §4).

use std::time::Duration;

use caplab_api::identity::PeerAddr;
use caplab_api::status::Status;
use caplab_operator::member_client::{
    AddressBook, AdminAuth, MemberClient, MemberError, Recipient,
};
use caplab_operator::membership::{self, Observed, PrimaryStep};
use caplab_operator::status;
use caplab_testkit::{Cluster, Harness};
use serde_json::json;

const TOKEN: &str = "operator-test-token";
const CLUSTER_ID: &str = "test/demo/11111111-2222-3333-4444-555555555555";
const LOOPBACK: &str = "127.0.0.1";

fn harness() -> Harness {
    Harness {
        node_binary: caplab_testkit::workspace_node_binary(),
        token: TOKEN,
        // Generous: the CI machine has two busy cores.
        deadline: Duration::from_secs(90),
        http_timeout: Duration::from_secs(10),
    }
}

fn auth(cluster: &str) -> AdminAuth {
    AdminAuth {
        token: TOKEN.into(),
        cluster: cluster.into(),
    }
}

fn port(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

/// A member client aimed at member `id`'s ports (each loopback member has its own).
fn client(c: &Cluster, id: u64) -> MemberClient {
    let m = &c.members[&id];
    MemberClient::new()
        .expect("client")
        .with_ports(port(&m.client), port(&m.peer))
}

async fn status(c: &Cluster, id: u64) -> Option<Status> {
    client(c, id).status(LOOPBACK).await.ok()
}

/// Member `id`'s status once it answers.
async fn answered(c: &Cluster, id: u64) -> Status {
    c.wait_until(&format!("member {id} to answer"), || status(c, id))
        .await
}

/// Addressed as the operator addresses it: its id and the incarnation its status showed.
fn to<'a>(s: &'a Status) -> Recipient<'a> {
    Recipient {
        ip: LOOPBACK,
        id: s.id,
        incarnation: Some(&s.incarnation),
    }
}

/// The members' address book in the object form, each with its own incarnation.
fn book(c: &Cluster, statuses: &[&Status]) -> AddressBook {
    statuses
        .iter()
        .map(|s| {
            let entry = PeerAddr::new(c.members[&s.id].peer.clone(), Some(s.incarnation.clone()));
            (s.id, entry)
        })
        .collect()
}

fn reason(r: Result<(), MemberError>) -> String {
    match r {
        Err(MemberError::Misdirected { reason, .. }) => reason,
        other => panic!("expected a 421, got {other:?}"),
    }
}

/// A call that another incarnation answered: misdirected, never applied. The member refuses
/// it with `member_reason`; `caplab_api`'s client checks the answer's incarnation header
/// first and then reports `unexpected-incarnation`, which the operator treats alike.
fn assert_refused_by_another(r: Result<(), MemberError>, member_reason: &str) {
    let why = reason(r);
    assert!(
        why == member_reason || why == "unexpected-incarnation",
        "expected {member_reason}, got {why}"
    );
}

#[tokio::test]
async fn admin_calls_reach_only_the_member_they_name() {
    let mut c = Cluster::launch(harness(), 3, &["--cluster-id", CLUSTER_ID]);
    let auth = auth(CLUSTER_ID);
    let s1 = answered(&c, 1).await;
    let s2 = answered(&c, 2).await;
    let s3 = answered(&c, 3).await;
    for s in [&s1, &s2, &s3] {
        let inc = s.incarnation.as_str();
        assert!(
            inc.len() == 16 && inc.bytes().all(|b| b.is_ascii_hexdigit()),
            "{inc}"
        );
    }
    let members = book(&c, &[&s1, &s2, &s3]);
    client(&c, 1)
        .init(to(&s1), &auth, &members)
        .await
        .expect("init with the object-form address book");
    c.wait_for_leader().await;
    client(&c, 2)
        .peers(to(&s2), &auth, &members)
        .await
        .expect("the member named accepts");

    // Another cluster's operator (or a stale one) is refused.
    let r = client(&c, 2)
        .peers(to(&s2), &self::auth("test/demo/other-uid"), &members)
        .await;
    assert_eq!(reason(r), "wrong-cluster");

    // Member 3's pod is replaced by member 6 at the same address: calls still meant for
    // member 3 are refused by whoever is there now.
    c.replace(3, 6);
    let s6 = answered(&c, 6).await;
    let r = client(&c, 6).peers(to(&s3), &auth, &members).await;
    assert_refused_by_another(r, "wrong-member");

    // The replacement joins under its own id, addressed with its own incarnation (members 1
    // and 2 still make a quorum).
    let leader = c.wait_for_leader_among(&[1, 2], None).await;
    let ls = answered(&c, leader).await;
    let entry = PeerAddr::new(c.members[&6].peer.clone(), Some(s6.incarnation.clone()));
    client(&c, leader)
        .add_learner(to(&ls), &auth, 6, &entry)
        .await
        .expect("learner 6 added");
    c.wait_until("member 6 to be a learner", || async {
        status(&c, leader)
            .await
            .filter(|s| s.engine.learners.contains(&6))
    })
    .await;

    // Member 2 loses its disk and restarts under its old id: a new incarnation, which calls
    // addressed to the old one do not reach.
    c.wipe(2);
    let wiped = answered(&c, 2).await;
    assert_ne!(wiped.incarnation, s2.incarnation);
    let r = client(&c, 2).peers(to(&s2), &auth, &members).await;
    assert_refused_by_another(r, "wrong-incarnation");
}

/// Members 1..=3 as the operator observes them (ordinal = id - 1, pods `demo-<ordinal>`).
async fn observe(c: &Cluster) -> Vec<Observed> {
    let mut out = Vec::new();
    for id in 1..=3u64 {
        let ordinal = u32::try_from(id - 1).expect("small");
        out.push(Observed {
            ordinal,
            name: format!("demo-{ordinal}"),
            id,
            pod_exists: true,
            pod_ip: Some(LOOPBACK.into()),
            status: status(c, id).await,
        });
    }
    out
}

/// The member set step the operator takes now, once the members make it the next step.
async fn next_set(c: &Cluster, what: &str) -> (u32, Vec<u64>) {
    c.wait_until(what, || async {
        match membership::next_primary_step(3, &observe(c).await, true, None, None, 10) {
            PrimaryStep::SetMembers {
                ordinal, members, ..
            } => Some((ordinal, members)),
            _ => None,
        }
    })
    .await
}

async fn write(c: &Cluster, id: u64, value: i64) -> u16 {
    c.put(id, "x", value).await.0
}

#[tokio::test]
async fn a_sync_cluster_accepts_writes_again_after_a_failover_and_takes_the_old_primary_back() {
    let args = ["--replication", "sync", "--cluster-id", CLUSTER_ID];
    let mut c = Cluster::launch(harness(), 3, &args);
    let auth = auth(CLUSTER_ID);
    let statuses = [
        answered(&c, 1).await,
        answered(&c, 2).await,
        answered(&c, 3).await,
    ];
    let members = book(&c, &statuses.iter().collect::<Vec<_>>());
    client(&c, 1)
        .init(to(&statuses[0]), &auth, &members)
        .await
        .expect("member 1 is the primary");
    c.wait_until("a first sync write", || async {
        (write(&c, 1, 1).await == 200).then_some(())
    })
    .await;

    // The primary dies; the operator promotes member 3 and points member 2 at it.
    c.kill(1);
    let s3 = answered(&c, 3).await;
    client(&c, 3)
        .promote(to(&s3), &auth)
        .await
        .expect("promoted");
    let primary = PeerAddr::new(c.members[&3].peer.clone(), Some(s3.incarnation.clone()));
    let s2 = answered(&c, 2).await;
    client(&c, 2)
        .set_primary(to(&s2), &auth, 3, &primary)
        .await
        .expect("member 2 follows member 3");

    // Member 1 still in the write set: the next step takes it out, and writes go through.
    let (ordinal, set) = next_set(&c, "the dead member to leave the write set").await;
    assert_eq!((ordinal, set.as_slice()), (2, &[2, 3][..]));
    let s3 = answered(&c, 3).await;
    client(&c, 3)
        .set_voters(to(&s3), &auth, &set)
        .await
        .expect("write set changed");
    c.wait_until("sync writes to be acknowledged again", || async {
        (write(&c, 3, 2).await == 200).then_some(())
    })
    .await;

    // Member 1 returns (its data kept): pointed at member 3, then back in the write set.
    c.restart(1);
    let s1 = answered(&c, 1).await;
    client(&c, 1)
        .set_primary(to(&s1), &auth, 3, &primary)
        .await
        .expect("member 1 follows member 3");
    let (_, set) = next_set(&c, "the returning member to rejoin the write set").await;
    assert_eq!(set, vec![1, 2, 3]);
    client(&c, 3)
        .set_voters(to(&s3), &auth, &set)
        .await
        .expect("write set changed");
    c.wait_until("a write acknowledged by all three", || async {
        (write(&c, 3, 3).await == 200).then_some(())
    })
    .await;
    c.wait_until("member 1 to catch up", || async {
        let (one, three) = (status(&c, 1).await?, status(&c, 3).await?);
        (one.engine.applied_index == three.engine.applied_index).then_some(())
    })
    .await;
}

// ------------------------------------------------- replicating (status.members[].replicating)

/// Waits until the status of member `from` (the leader or primary) satisfies `holds`.
async fn wait_for_view(c: &Cluster, from: u64, what: &str, holds: impl Fn(&Status) -> bool) {
    c.wait_until(what, || async {
        let s = status(c, from).await?;
        holds(&s).then_some(())
    })
    .await
}

#[tokio::test]
async fn replicating_follows_what_a_real_raft_leader_hears() {
    let c = Cluster::start(harness(), 3, &["--cluster-id", CLUSTER_ID]).await;
    let l = c.wait_for_leader().await;
    let all = |s: &Status| (1..=3).all(|id| status::replicating(Some(s), id));
    wait_for_view(&c, l, "the leader to hear every member", all).await;

    // One follower cut off from both others: it stops replicating; the leader still commits.
    let mut followers = (1..=3).filter(|id| *id != l);
    let (f, g) = (followers.next().expect("f"), followers.next().expect("g"));
    c.set_faults(f, json!({"partition": {"peers": [l, g]}}))
        .await;
    wait_for_view(&c, l, "the cut-off follower to stop replicating", |s| {
        s.is_leader() && !status::replicating(Some(s), f) && status::replicating(Some(s), l)
    })
    .await;
    assert!(status::replicating(status(&c, l).await.as_ref(), g));

    // The leader cut off from the last follower too: it cannot commit any more (unless it
    // stepped down, which says the same).
    c.set_faults(l, json!({"partition": {"peers": [f, g]}}))
        .await;
    wait_for_view(
        &c,
        l,
        "the isolated leader to report it cannot commit",
        |s| !s.is_leader() || !status::replicating(Some(s), l),
    )
    .await;
}

#[tokio::test]
async fn an_isolated_async_primary_still_commits_but_its_secondaries_do_not_replicate() {
    let args = ["--replication", "async", "--cluster-id", CLUSTER_ID];
    let c = Cluster::start(harness(), 3, &args).await;
    let all = |s: &Status| s.is_leader() && (1..=3).all(|id| status::replicating(Some(s), id));
    wait_for_view(
        &c,
        1,
        "the primary (member 1) to hear both secondaries",
        all,
    )
    .await;

    c.set_faults(1, json!({"partition": {"peers": [2, 3]}}))
        .await;
    wait_for_view(&c, 1, "the secondaries to stop replicating", |s| {
        s.is_leader()
            && status::replicating(Some(s), 1)
            && !status::replicating(Some(s), 2)
            && !status::replicating(Some(s), 3)
    })
    .await;
}

#[tokio::test]
async fn the_async_failover_bound_is_what_the_old_primary_discards_when_it_returns() {
    let args = ["--replication", "async", "--cluster-id", CLUSTER_ID];
    let mut c = Cluster::launch(harness(), 3, &args);
    let auth = auth(CLUSTER_ID);
    let statuses = [
        answered(&c, 1).await,
        answered(&c, 2).await,
        answered(&c, 3).await,
    ];
    let members = book(&c, &statuses.iter().collect::<Vec<_>>());
    client(&c, 1)
        .init(to(&statuses[0]), &auth, &members)
        .await
        .expect("member 1 is the primary");
    for v in 1..=5 {
        c.wait_until("a replicated write", || async {
            (write(&c, 1, v).await == 200).then_some(())
        })
        .await;
    }
    c.wait_until("the secondaries to hold every write", || async {
        let p = status(&c, 1).await?.engine.last_log_index;
        let caught_up = status(&c, 2).await?.engine.applied_index == p
            && status(&c, 3).await?.engine.applied_index == p;
        caught_up.then_some(())
    })
    .await;

    // The primary is cut off from both secondaries and acknowledges 20 more writes alone.
    let cut = serde_json::from_value(serde_json::json!({"partition": {"peers": [2, 3]}}))
        .expect("fault set");
    client(&c, 1)
        .faults(to(&statuses[0]), &auth, &cut)
        .await
        .expect("partition");
    for v in 6..=25 {
        assert_eq!(write(&c, 1, v).await, 200, "async acknowledges alone");
    }
    // The operator's last observation of the primary, then it dies.
    let last = answered(&c, 1).await;
    let seen = membership::PrimarySeen {
        id: 1,
        last_seq: last.engine.last_log_index,
    };
    c.kill(1);
    let step = c
        .wait_until("a failover decision", || async {
            let observed = observe(&c).await;
            match membership::next_primary_step(3, &observed, true, Some(seen), Some(60), 10) {
                s @ PrimaryStep::Failover { .. } => Some(s),
                _ => None,
            }
        })
        .await;
    let PrimaryStep::Failover {
        ordinal,
        to: id,
        from,
        loss,
    } = step
    else {
        unreachable!()
    };
    assert_eq!(from, 1);
    assert_eq!(loss.possible_loss(), 20, "{loss:?}");
    let promoted = answered(&c, id).await;
    client(&c, id)
        .promote(to(&promoted), &auth)
        .await
        .expect("promoted");
    let entry = PeerAddr::new(
        c.members[&id].peer.clone(),
        Some(promoted.incarnation.clone()),
    );

    // The old primary returns and follows the new one: what it drops is the bound.
    c.restart(1);
    let back = answered(&c, 1).await;
    client(&c, 1)
        .set_primary(to(&back), &auth, id, &entry)
        .await
        .expect("member 1 follows the new primary");
    let other = if id == 2 { 3 } else { 2 };
    let s = answered(&c, other).await;
    client(&c, other)
        .set_primary(to(&s), &auth, id, &entry)
        .await
        .expect("the third member follows the new primary");
    let discarded = c
        .wait_until(
            "the old primary to drop what the new one never had",
            || async {
                status(&c, 1)
                    .await?
                    .engine
                    .discarded_writes
                    .filter(|d| *d > 0)
            },
        )
        .await;
    assert_eq!(
        discarded,
        loss.possible_loss(),
        "promoted ordinal {ordinal}"
    );
}
