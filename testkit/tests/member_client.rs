//! `caplab_api::MemberClient` against real `caplab-node` members on loopback: every typed call
//! and every error of the outcome contract, as the member really answers them.

use std::time::Duration;

use caplab_api::client::Recipient;
use caplab_api::faults::FaultSet;
use caplab_api::identity::{Incarnation, Misdirection, PeerAddr};
use caplab_api::kv::Consistency;
use caplab_api::status::{Readiness, Replication, Role};
use caplab_api::{MemberClient, MemberError};
use caplab_testkit::{workspace_node_binary, Cluster, Harness};

const TOKEN: &str = "member-client-test";

fn harness() -> Harness {
    Harness {
        node_binary: workspace_node_binary(),
        token: TOKEN,
        // Generous: the machine has two busy cores.
        deadline: Duration::from_secs(90),
        http_timeout: Duration::from_secs(10),
    }
}

/// Waits until member `id` says it is ready.
async fn ready(c: &Cluster, id: u64) {
    c.wait_until(&format!("member {id} to be ready"), || async {
        matches!(c.client(id).ready().await, Ok(Readiness::Ready)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn register_operations_status_and_observability() {
    let c = Cluster::start(harness(), 1, &[]).await;
    ready(&c, 1).await;
    let member = c.client(1);
    assert_eq!(member.write("x", 5).await, Ok(5));
    assert_eq!(member.read("x", Consistency::Linearizable).await, Ok(5));
    assert_eq!(member.read("x", Consistency::Local).await, Ok(5));
    assert_eq!(member.cas("x", 5, 6).await, Ok(6));
    let mismatch = member.cas("x", 5, 7).await.unwrap_err();
    assert_eq!(
        (mismatch.status(), mismatch.cas_current()),
        (Some(409), Some(6))
    );
    assert!(!mismatch.maybe_applied());
    let spaced = member.write("a/b c", 1).await;
    assert_eq!(
        spaced,
        Ok(1),
        "a key with / and a space is one path segment"
    );
    let too_long = member
        .read(&"k".repeat(300), Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(too_long.status(), Some(400), "{too_long}");

    let status = member.status().await.expect("status");
    assert_eq!(
        (status.id, status.engine.replication),
        (1, Replication::Raft)
    );
    assert_eq!(status.engine.role, Role::Leader);
    assert!(status.engine.commit_index >= 3);
    assert!(member.metrics().await.expect("metrics").contains("caplab_"));
    member.healthz().await.expect("healthz");
}

#[tokio::test]
async fn admin_calls_and_their_refusals() {
    let c = Cluster::start(harness(), 1, &["--cluster-id", "lab/demo/uid-1"]).await;
    ready(&c, 1).await;
    let member = c.client(1);
    let book = c.address_book().await.expect("every member answers");
    let peers = member.set_peers(&book).await.expect("peers");
    assert_eq!(peers.peers[&1], c.members[&1].peer);
    assert_eq!(member.peers().await.expect("peers"), peers);

    let paused = FaultSet {
        pause: true,
        ..FaultSet::default()
    };
    assert!(
        member
            .set_faults(&paused)
            .await
            .expect("faults")
            .faults
            .pause
    );
    let refused = member.write("x", 1).await.unwrap_err();
    assert!(
        matches!(refused, MemberError::NotApplied { .. }),
        "{refused}"
    );
    let not_ready = member.ready().await.expect("an answer");
    assert!(matches!(not_ready, Readiness::NotReady(ref why) if why.contains("paused")));
    member.set_faults(&FaultSet::default()).await.expect("heal");
    assert_eq!(
        member.faults().await.expect("faults").faults,
        FaultSet::default()
    );

    let transfer = member.transfer_leader(1).await.unwrap_err();
    assert!(
        matches!(transfer, MemberError::NotImplemented { .. }),
        "{transfer}"
    );
    let bad_book = [(1, PeerAddr::Plain("no-port".into()))].into();
    let bad = member.set_peers(&bad_book).await.unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");

    let wrong = |recipient| c.client(1).with_recipient(recipient);
    let elsewhere = wrong(Recipient {
        cluster: Some("lab/demo/uid-2".into()),
        ..Recipient::default()
    });
    let e = elsewhere.peers().await.unwrap_err();
    assert_eq!(e.misdirection(), Some(Misdirection::WrongCluster), "{e}");
    let other_member = wrong(Recipient {
        member: Some(9),
        ..Recipient::default()
    });
    let e = other_member.peers().await.unwrap_err();
    assert_eq!(e.misdirection(), Some(Misdirection::WrongMember), "{e}");
    let other_incarnation = wrong(Recipient {
        incarnation: Some(Incarnation::from_bits(7)),
        ..Recipient::default()
    });
    let e = other_incarnation.peers().await.unwrap_err();
    assert!(e.is_misdirected() && !e.maybe_applied(), "{e}");
    let no_token = c.client(1).with_token("wrong");
    assert_eq!(no_token.peers().await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn a_member_that_is_down_is_unavailable() {
    let mut c = Cluster::start(harness(), 1, &[]).await;
    c.kill(1);
    // A fresh connection pool: a connection pooled before the kill could fail after the
    // request was written, which is (rightly) an unknown outcome instead.
    let m = &c.members[&1];
    let member = MemberClient::at(reqwest::Client::new(), &m.client, &m.peer).expect("addresses");
    let e = member.write("x", 1).await.unwrap_err();
    assert!(matches!(e, MemberError::Unavailable { .. }), "{e}");
    assert!(!e.maybe_applied());
}
