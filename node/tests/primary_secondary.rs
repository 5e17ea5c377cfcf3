//! Primary–secondary replication on real processes: what async and sync replication promise
//! (and what they do not).

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

async fn start(mode: &str) -> Cluster {
    let c = common::start_with(3, &["--replication", mode]).await;
    assert_eq!(
        c.status(1).await.map(|s| s["role"].clone()),
        Some(json!("primary"))
    );
    c
}

async fn applied_everywhere(c: &Cluster, key: &str, value: i64) {
    for m in c.running() {
        wait_until(
            &format!("member {} to apply {key}={value}", m.id),
            || async { (c.get(m.id, key, "local").await.1["value"] == value).then_some(()) },
        )
        .await;
    }
}

async fn admin_ok(c: &Cluster, id: u64, method: Method, path: &str, body: Value) -> Value {
    let (status, body) = c.admin(id, method, path, body).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn async_writes_reach_every_secondary_and_a_restarted_one_catches_up() {
    let mut c = start("async").await;
    assert_eq!(
        c.put(2, "x", 1).await.0,
        200,
        "a write through a secondary is forwarded"
    );
    applied_everywhere(&c, "x", 1).await;
    c.kill(3);
    for i in 0..20 {
        assert_eq!(c.put(1, &format!("k{i}"), i).await.0, 200);
    }
    c.restart(3);
    applied_everywhere(&c, "k19", 19).await;
    // Member 3 applies before it answers: the primary may record the answer a moment later.
    wait_until("the primary to see member 3 caught up", || async {
        let status = c.status(1).await?;
        (status["peers"]["3"]["lagEntries"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn async_failover_to_a_lagging_secondary_loses_acknowledged_writes() {
    let c = start("async").await;
    assert_eq!(c.put(1, "x", 1).await.0, 200);
    applied_everywhere(&c, "x", 1).await;
    // Cut secondary 3 off; the primary keeps acknowledging writes.
    admin_ok(
        &c,
        1,
        Method::PUT,
        "/v1/admin/faults",
        json!({"partition": {"peers": [3]}}),
    )
    .await;
    for v in 2..=6 {
        assert_eq!(
            c.put(1, "x", v).await.0,
            200,
            "async writes continue while a secondary is cut off"
        );
    }
    assert_eq!(
        c.get(3, "x", "local").await.1["value"],
        1,
        "the cut-off secondary serves a stale read"
    );

    // Fail over to the lagging secondary, then let the others rejoin it.
    let promoted = admin_ok(&c, 3, Method::POST, "/v1/admin/promote", json!({})).await;
    assert_eq!(promoted["epoch"], 2);
    let addr = c.members[&3].peer.clone();
    for id in [1, 2] {
        admin_ok(
            &c,
            id,
            Method::PUT,
            "/v1/admin/primary",
            json!({"id": 3, "addr": addr}),
        )
        .await;
    }
    admin_ok(&c, 1, Method::PUT, "/v1/admin/faults", json!({})).await;
    applied_everywhere(&c, "x", 1).await;
    wait_until(
        "the deposed primary to count its discarded writes",
        || async {
            let s = c.status(1).await?;
            (s["role"] == "secondary" && s["term"] == 2 && s["discardedWrites"].as_u64()? == 5)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        c.get(1, "x", "linearizable").await.1["value"],
        1,
        "acknowledged writes 2..=6 are gone"
    );
    assert_eq!(
        c.put(1, "x", 7).await.0,
        200,
        "writes through the old primary now reach the new one"
    );
    applied_everywhere(&c, "x", 7).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_writes_need_every_secondary_and_survive_failover() {
    let mut c = start("sync").await;
    for v in 1..=5 {
        assert_eq!(c.put(1, "x", v).await.0, 200);
    }
    c.kill(3);
    let started = Instant::now();
    let (status, body) = c.put(1, "x", 99).await;
    assert!(
        status == 503 || status == 504,
        "sync write with a secondary down: {status} {body}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // Promote secondary 2: every acknowledged write (x=5) is there.
    admin_ok(&c, 2, Method::POST, "/v1/admin/promote", json!({})).await;
    admin_ok(
        &c,
        2,
        Method::PUT,
        "/v1/admin/voters",
        json!({"voters": [1, 2]}),
    )
    .await;
    let value = c.get(2, "x", "linearizable").await.1["value"]
        .as_i64()
        .unwrap_or(-1);
    assert!(
        value == 5 || value == 99,
        "an acknowledged write was lost: read {value}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_secondary_bad_input_gets_4xx() {
    let c = start("async").await;
    let (status, _) = c
        .admin(
            1,
            Method::PUT,
            "/v1/admin/primary",
            json!({"id": 1, "addr": "a:1"}),
        )
        .await;
    assert_eq!(status, 400, "following oneself is refused");
    let (status, _) = c
        .admin(1, Method::PUT, "/v1/admin/primary", json!({"id": 2}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = c
        .admin(
            2,
            Method::POST,
            "/v1/internal/replicate",
            json!({"epoch": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(c.put(1, "x", 3).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_async_secondary_serves_stale_reads_then_catches_up() {
    let c = start("async").await;
    admin_ok(
        &c,
        3,
        Method::PUT,
        "/v1/admin/faults",
        json!({"partition": {"peers": [1]}}),
    )
    .await;
    for v in 1..=5 {
        assert_eq!(
            c.put(1, "y", v).await.0,
            200,
            "writes continue while a secondary is cut off"
        );
    }
    applied_everywhere_but(&c, 3, "y", 5).await;
    assert_eq!(
        c.get(3, "y", "local").await.1["value"],
        0,
        "the cut-off secondary is stale"
    );
    admin_ok(&c, 3, Method::PUT, "/v1/admin/faults", json!({})).await;
    applied_everywhere(&c, "y", 5).await;
}

async fn applied_everywhere_but(c: &Cluster, except: u64, key: &str, value: i64) {
    for m in c.running().filter(|m| m.id != except) {
        wait_until(
            &format!("member {} to apply {key}={value}", m.id),
            || async { (c.get(m.id, key, "local").await.1["value"] == value).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_change_log_is_compacted_and_a_new_member_catches_up_from_the_snapshot() {
    let mut c = common::start_with(3, &["--replication", "async", "--snapshot-logs", "10"]).await;
    for i in 0..60 {
        assert_eq!(c.put(1, &format!("k{}", i % 7), i).await.0, 200);
    }
    // The last writes: k3 = 59, k2 = 58, ..., k4 = 53.
    applied_everywhere(&c, "k3", 59).await;
    for id in 1..=3 {
        wait_until(
            &format!("member {id} to compact its change log"),
            || async {
                let s = c.status(id).await?;
                (s["snapshotIndex"].as_u64()? >= 10).then_some(())
            },
        )
        .await;
    }

    // A member that joins empty needs entries the others compacted away: it gets the snapshot.
    c.add_process(4);
    let addr = c.members[&4].peer.clone();
    admin_ok(
        &c,
        1,
        Method::POST,
        "/v1/admin/learners",
        json!({"id": 4, "addr": addr}),
    )
    .await;
    applied_everywhere(&c, "k4", 53).await;
    assert_eq!(c.put(1, "after", 1).await.0, 200);
    applied_everywhere(&c, "after", 1).await;
    let joined = c.status(4).await.unwrap_or_default();
    assert_eq!(joined["discardedWrites"], 0, "{joined}");

    // A restart reloads the snapshot and the tail.
    c.kill(1);
    c.restart(1);
    wait_until("the restarted primary to serve its state", || async {
        let (status, body) = c.get(1, "k5", "linearizable").await;
        (status == 200 && body["value"] == 54).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switchover_moves_the_primary_without_losing_a_write() {
    let c = start("async").await;
    for i in 0..30 {
        assert_eq!(c.put(1, &format!("s{}", i % 5), i).await.0, 200);
    }
    let (status, body) = c
        .admin(
            1,
            Method::POST,
            "/v1/admin/transfer-leader",
            json!({"to": 1}),
        )
        .await;
    assert_eq!(status, 400, "to itself: {body}");
    let (status, body) = c
        .admin(
            1,
            Method::POST,
            "/v1/admin/transfer-leader",
            json!({"to": 9}),
        )
        .await;
    assert_eq!(status, 400, "to a stranger: {body}");

    let body = admin_ok(
        &c,
        1,
        Method::POST,
        "/v1/admin/transfer-leader",
        json!({"to": 2}),
    )
    .await;
    let epoch = body["epoch"].as_u64().unwrap_or_default();
    assert!(epoch >= 2, "{body}");
    wait_until("member 2 to lead and member 1 to follow it", || async {
        let (new, old) = (c.status(2).await?, c.status(1).await?);
        (new["role"] == "primary" && old["role"] == "secondary" && old["leader"] == 2).then_some(())
    })
    .await;
    // Every acknowledged write is on the new primary; the old one discarded nothing.
    for k in 0..5 {
        let (status, body) = c.get(2, &format!("s{k}"), "linearizable").await;
        assert_eq!(
            (status, body["value"].as_i64()),
            (200, Some(25 + k)),
            "{body}"
        );
    }
    assert_eq!(c.status(1).await.unwrap_or_default()["discardedWrites"], 0);
    assert_eq!(
        c.put(1, "after", 1).await.0,
        200,
        "forwarded to the new primary"
    );
    applied_everywhere(&c, "after", 1).await;
    let (status, body) = c
        .admin(
            2,
            Method::POST,
            "/v1/admin/transfer-leader",
            json!({"to": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Issue 18 §3: async, the primary is killed, a secondary promoted and the third pointed at
/// it; the old primary restarts while a client keeps writing to it. Before the fix it came
/// back as `primary` of epoch 1, acknowledged writes and discarded them a moment later. Now it
/// comes back fenced, learns of epoch 2 from the others and follows the new primary: every
/// write it acknowledged survives.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_primary_is_fenced_until_it_learns_of_the_failover() {
    let mut c = start("async").await;
    for i in 0..20 {
        assert_eq!(c.put(1, &format!("before{i}"), i).await.0, 200);
    }
    applied_everywhere(&c, "before19", 19).await;
    c.kill(1);
    let promoted = admin_ok(&c, 2, Method::POST, "/v1/admin/promote", json!({})).await;
    assert_eq!(promoted["epoch"], 2);
    let addr = c.members[&2].peer.clone();
    admin_ok(
        &c,
        3,
        Method::PUT,
        "/v1/admin/primary",
        json!({"id": 2, "addr": addr}),
    )
    .await;

    // A client writes to the old primary, unique values, from before it is back until it
    // follows the new primary.
    let url = c.members[&1].url("/v1/kv");
    let http = c.http.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = http
                    .put(format!("{url}/w{i}"))
                    .timeout(Duration::from_secs(2))
                    .json(&json!({ "value": i }))
                    .send()
                    .await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => acked.push(i),
                    Ok(503) => refused += 1,
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            (acked, refused)
        }
    });
    c.restart(1);
    wait_until("the old primary to follow the new one", || async {
        let s = c.status(1).await?;
        (s["role"] == "secondary" && s["leader"] == 2 && s["term"] == 2).then_some(())
    })
    .await;
    // Let some writes go through it to the new primary too.
    let through = Instant::now();
    wait_until("writes through the old primary to succeed", || async {
        (c.put(1, "after", 1).await.0 == 200 && through.elapsed() > Duration::from_millis(300))
            .then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = writer.await.expect("writer");
    assert!(!acked.is_empty(), "no write succeeded ({refused} refused)");

    let s = c.status(1).await.unwrap_or_default();
    assert_eq!(
        s["discardedWrites"], 0,
        "acknowledged writes were discarded: {s}"
    );
    for i in acked {
        let (status, body) = c.get(2, &format!("w{i}"), "linearizable").await;
        assert_eq!((status, body["value"].clone()), (200, json!(i)), "w{i}");
    }
}

/// A primary restarted while no majority answers stays fenced: it refuses writes (503
/// not-applied) and is not ready; once a member still following it answers, it serves again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_primary_serves_again_once_a_majority_confirms_its_epoch() {
    let mut c = start("async").await;
    assert_eq!(c.put(1, "x", 1).await.0, 200);
    applied_everywhere(&c, "x", 1).await;
    for id in 1..=3 {
        c.kill(id);
    }
    c.restart(1);
    let s = wait_until("the restarted primary to answer", || c.status(1)).await;
    assert_eq!(
        (s["role"].clone(), s["fenced"].clone()),
        (json!("fenced"), json!(true)),
        "{s}"
    );
    let (status, body) = c.put(1, "x", 2).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["outcome"], "not-applied", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("confirming its epoch")),
        "{body}"
    );
    let r = c.http.get(c.members[&1].url("/readyz")).send().await;
    let r = r.expect("readyz answers");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap_or_default().contains("fenced"));

    c.restart(3);
    wait_until("the restarted primary to serve again", || async {
        let s = c.status(1).await?;
        (s["role"] == "primary" && s["fenced"] == false && c.put(1, "x", 3).await.0 == 200)
            .then_some(())
    })
    .await;
    c.restart(2);
    applied_everywhere(&c, "x", 3).await;
}

/// A member whose data was wiped answers epoch 0 and knows nothing of any failover: it must
/// not count towards the majority that lets a fenced primary serve again (before, any older
/// epoch counted, and a restarted old primary acknowledged writes a newer primary never had).
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_does_not_confirm_a_fenced_primary() {
    let mut c = start("async").await;
    assert_eq!(c.put(1, "x", 1).await.0, 200);
    applied_everywhere(&c, "x", 1).await;
    for id in 1..=3 {
        c.kill(id);
    }
    c.wipe(3);
    c.restart(3);
    wait_until("the wiped member to answer", || c.status(3)).await;
    c.restart(1);
    wait_until("the restarted primary to answer", || c.status(1)).await;
    // Many confirmation rounds (one per 100 ms heartbeat) pass: it stays fenced.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let s = c.status(1).await.expect("status");
        assert_eq!(s["fenced"], true, "confirmed by a wiped member: {s}");
        let (status, body) = c.put(1, "x", 2).await;
        assert_eq!(status, 503, "{body}");
    }
    c.restart(2);
    wait_until(
        "the primary to serve once its old secondary confirms",
        || async {
            let s = c.status(1).await?;
            (s["fenced"] == false && c.put(1, "x", 3).await.0 == 200).then_some(())
        },
    )
    .await;
}

/// A deposed async primary that kept acknowledging writes while cut off holds thousands of
/// entries the new primary never had. Pointed at the new primary, it must be caught up in a
/// few round trips (one per divergent epoch, Raft §5.3), not one per entry: before the fix
/// the primary backed off one entry per refused message, 2,000 entries took over 20 s, and
/// all that time the member was a secondary with matchIndex 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_primary_with_thousands_of_divergent_entries_catches_up_in_a_few_round_trips() {
    let c = start("async").await;
    // As many new entries as divergent ones: the old back-off took one round trip per entry.
    let divergent = diverge(&c, 2_000, 2_000).await;
    let took = rejoin(&c, divergent, Duration::from_secs(10)).await;
    println!("{divergent} divergent entries: caught up after {took:?}");
    assert_eq!(c.get(1, "kept1999", "local").await.1["value"], 1999);
}

/// The same when the new primary compacted its log past the point where the deposed one
/// diverged: it is sent the snapshot, and still counts exactly the entries it drops (before,
/// only those beyond the snapshot were counted).
#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_primary_replaced_by_a_snapshot_counts_every_discarded_write() {
    let c = start_with_args(&["--replication", "async", "--snapshot-logs", "10"]).await;
    let divergent = diverge(&c, 50, 60).await;
    // Where member 1 diverged: member 2's entries before its own 60.
    let common = last_seq(&c, 2).await - 60;
    wait_until("the new primary to compact past the divergence", || async {
        let s = c.status(2).await?;
        (s["snapshotIndex"].as_u64()? > common + 10).then_some(())
    })
    .await;
    rejoin(&c, divergent, common::DEADLINE).await;
    assert_eq!(c.get(1, "kept59", "local").await.1["value"], 59);
}

async fn start_with_args(args: &[&str]) -> Cluster {
    let c = common::start_with(3, args).await;
    assert_eq!(
        c.status(1).await.map(|s| s["role"].clone()),
        Some(json!("primary"))
    );
    c
}

/// Cuts primary 1 off, writes `lost` keys through it, promotes member 2 (member 3 follows
/// it) and writes `kept` keys through it. Returns how many entries member 1 holds that
/// member 2 never had (at least `lost`).
async fn diverge(c: &Cluster, lost: u64, kept: u64) -> u64 {
    assert_eq!(c.put(1, "x", 0).await.0, 200);
    applied_everywhere(c, "x", 0).await;
    let common = last_seq(c, 2).await;

    c.set_faults(1, json!({"partition": {"peers": [2, 3]}}))
        .await;
    assert_eq!(
        concurrent_writes(c, 1, "lost", lost).await,
        lost,
        "async writes continue while cut off"
    );
    let divergent = last_seq(c, 1).await - common;
    assert!(divergent >= lost, "{divergent} divergent entries");

    admin_ok(c, 2, Method::POST, "/v1/admin/promote", json!({})).await;
    admin_ok(
        c,
        2,
        Method::PUT,
        "/v1/admin/voters",
        json!({"voters": [2, 3]}),
    )
    .await;
    let addr = c.members[&2].peer.clone();
    let follow = json!({"id": 2, "addr": addr});
    admin_ok(c, 3, Method::PUT, "/v1/admin/primary", follow).await;
    assert_eq!(concurrent_writes(c, 2, "kept", kept).await, kept);
    divergent
}

/// Heals member 1, points it at primary 2 and adds it back; waits until it is caught up
/// (its matchIndex on the primary is the primary's last sequence number) and has counted
/// exactly `divergent` discarded writes. Returns how long that took.
async fn rejoin(c: &Cluster, divergent: u64, deadline: Duration) -> Duration {
    c.set_faults(1, json!({})).await;
    let addr = c.members[&2].peer.clone();
    let follow = json!({"id": 2, "addr": addr});
    admin_ok(c, 1, Method::PUT, "/v1/admin/primary", follow).await;
    let started = Instant::now();
    admin_ok(
        c,
        2,
        Method::PUT,
        "/v1/admin/voters",
        json!({"voters": [1, 2, 3]}),
    )
    .await;
    let caught_up = caplab_testkit::wait_until(
        deadline,
        "the deposed primary to be caught up and to count its discarded writes",
        || async {
            let (primary, old) = (c.status(2).await?, c.status(1).await?);
            let last = primary["lastLogIndex"].as_u64()?;
            (primary["peers"]["1"]["matchIndex"].as_u64()? == last
                && old["discardedWrites"].as_u64()? == divergent)
                .then_some(())
        },
    );
    caught_up.await;
    let took = started.elapsed();
    assert_eq!(c.get(1, "lost1", "local").await.1["value"], 0, "discarded");
    took
}

/// Writes `{prefix}{i} = i` for `i` in `0..count` through member `id`, 16 at a time (so that
/// they share group commits); returns how many were acknowledged.
async fn concurrent_writes(c: &Cluster, id: u64, prefix: &str, count: u64) -> u64 {
    let acked = futures::stream::iter(0..count as i64)
        .map(|i| async move { c.put(id, &format!("{prefix}{i}"), i).await.0 })
        .buffer_unordered(16)
        .filter(|status| std::future::ready(*status == 200))
        .count()
        .await;
    acked as u64
}

async fn last_seq(c: &Cluster, id: u64) -> u64 {
    let s = c.status(id).await.unwrap_or_default();
    s["lastLogIndex"].as_u64().unwrap_or_default()
}
