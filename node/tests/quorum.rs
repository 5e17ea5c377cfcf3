//! Leaderless quorum replication (`--replication quorum`) on real member processes: what
//! R + W > N buys, what R = W = 1 gives up under a partition, what a skewed clock does to
//! last-writer-wins, and anti-entropy after a heal.

mod common;

use std::time::Instant;

use caplab_checker::{check, CheckOptions, History, Overall};
use common::{wait_until, Cluster};
use serde_json::{json, Value};

/// Starts `n` quorum members with `args` and waits until every one is ready.
async fn start(n: u64, args: &[&str]) -> Cluster {
    let mut all = vec!["--replication", "quorum"];
    all.extend_from_slice(args);
    let c = Cluster::start(common::harness(), n, &all).await;
    for m in c.members.values() {
        let url = m.url("/readyz");
        wait_until(&format!("member {} to be ready", m.id), || async {
            let r = c.http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
    c
}

/// The quorum part of member `id`'s status.
async fn quorum_status(c: &Cluster, id: u64) -> Value {
    let status = wait_until(&format!("member {id}'s status"), || c.status(id)).await;
    status["quorum"].clone()
}

/// Cuts `a` from `b` in both directions (a fault on every member of both sides).
async fn partition(c: &Cluster, a: &[u64], b: &[u64]) {
    for (side, other) in [(a, b), (b, a)] {
        for id in side {
            c.set_faults(*id, json!({"partition": {"peers": other}}))
                .await;
        }
    }
}

async fn heal(c: &Cluster) {
    for id in c.members.keys() {
        c.set_faults(*id, json!({})).await;
    }
}

/// Waits until every member holds `key = value` locally.
async fn everywhere(c: &Cluster, key: &str, value: i64) {
    for id in c.members.keys() {
        wait_until(&format!("member {id} to hold {key}={value}"), || async {
            (c.get(*id, key, "local").await.1["value"] == value).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_quorums_read_the_latest_write() {
    let c = start(3, &[]).await;
    let q = quorum_status(&c, 1).await;
    assert_eq!(
        (
            &q["n"],
            &q["readQuorum"],
            &q["writeQuorum"],
            &q["overlapping"]
        ),
        (&json!(3), &json!(2), &json!(2), &json!(true)),
        "defaults: a majority each: {q}"
    );
    // Sequential writes through each member in turn, each read back through the others.
    for (i, writer) in [1, 2, 3, 1, 3, 2].into_iter().enumerate() {
        let value = i as i64 + 10;
        let (status, body) = c.put(writer, "x", value).await;
        assert_eq!(status, 200, "write {value} through {writer}: {body}");
        for reader in c.members.keys() {
            let (status, body) = c.get(*reader, "x", "linearizable").await;
            assert_eq!(
                (status, &body["value"]),
                (200, &json!(value)),
                "read through {reader} after the write of {value} through {writer}: {body}"
            );
        }
    }
    let q = quorum_status(&c, 1).await;
    assert_eq!(q["replicas"]["2"]["reachable"], true, "{q}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_is_refused_naming_the_modes_that_have_it() {
    let c = start(1, &[]).await;
    let r = c
        .http
        .post(c.members[&1].url("/v1/kv/x/cas"))
        .json(&json!({"expected": 0, "new": 1}))
        .send()
        .await
        .expect("the member answers");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("a JSON error");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("consensus") && error.contains("raft") && error.contains("sync"),
        "{body}"
    );
    assert_eq!(c.put(1, "x", 7).await.0, 200, "plain writes still work");
}

/// One completed client operation, as the checker's history records it.
fn op(kind: &str, key: &str, value: i64, invoke: u64, complete: u64) -> Value {
    let field = if kind == "read" { "output" } else { "value" };
    json!({"process": invoke, "type": kind, "key": key, field: value,
           "invoke": invoke, "complete": complete, "status": "ok"})
}

#[tokio::test(flavor = "multi_thread")]
async fn r_w_1_serves_a_stale_read_in_a_minority_partition_and_the_checker_says_so() {
    let c = start(3, &["--read-quorum", "1", "--write-quorum", "1"]).await;
    let q = quorum_status(&c, 3).await;
    assert_eq!(q["overlapping"], false, "R + W = 2 is not above N = 3: {q}");
    let t0 = Instant::now();
    let ns = || t0.elapsed().as_nanos() as u64;
    let mut history = Vec::new();

    let invoke = ns();
    assert_eq!(c.put(1, "x", 1).await.0, 200);
    history.push(op("write", "x", 1, invoke, ns()));
    everywhere(&c, "x", 1).await;

    partition(&c, &[3], &[1, 2]).await;
    let invoke = ns();
    let (status, body) = c.put(1, "x", 2).await;
    assert_eq!(status, 200, "W = 1: the majority side writes alone: {body}");
    history.push(op("write", "x", 2, invoke, ns()));

    let invoke = ns();
    let (status, body) = c.get(3, "x", "linearizable").await;
    assert_eq!(
        status, 200,
        "R = 1: the cut-off member still answers: {body}"
    );
    assert_eq!(body["value"], 1, "and its answer is stale");
    history.push(op("read", "x", 1, invoke, ns()));

    let text = json!({ "operations": history }).to_string();
    let parsed = History::from_json(&text).expect("a well-formed history");
    let report = check(&parsed, &CheckOptions::default());
    assert_eq!(
        report.overall(),
        Overall::NotLinearizable,
        "a read that began after the write of 2 completed returned 1: {text}"
    );
    heal(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_3s_behind_makes_an_acknowledged_write_vanish_and_counts_it() {
    let c = start(3, &[]).await;
    c.set_faults(3, json!({"clockSkewMs": -3000})).await;
    assert_eq!(c.put(1, "x", 1).await.0, 200);
    everywhere(&c, "x", 1).await;

    // Later in real time, but stamped ~3 s earlier by member 3's clock.
    let (status, body) = c.put(3, "x", 2).await;
    assert_eq!(status, 200, "the write is acknowledged: {body}");
    for reader in c.members.keys() {
        let (status, body) = c.get(*reader, "x", "linearizable").await;
        assert_eq!(
            (status, &body["value"]),
            (200, &json!(1)),
            "the acknowledged write of 2 lost to the older one: {body}"
        );
    }
    // Each replica that received the write counts it lost, for member 3, in its status and
    // metrics.
    for id in c.members.keys() {
        wait_until(&format!("member {id} to count the lost write"), || async {
            let q = quorum_status(&c, *id).await;
            (q["lwwLostWrites"]["3"] == 1).then_some(())
        })
        .await;
    }
    let metrics = c
        .http
        .get(c.members[&1].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(r#"caplab_quorum_lww_lost_writes_total{source="3"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anti_entropy_converges_after_a_heal_without_client_traffic() {
    let c = start(3, &["--read-quorum", "1", "--write-quorum", "1"]).await;
    partition(&c, &[3], &[1, 2]).await;
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.put(1, key, i as i64 + 1).await.0, 200);
    }
    assert_eq!(
        c.put(3, "only-on-3", 9).await.0,
        200,
        "the minority writes too"
    );
    assert_eq!(
        c.get(3, "k0", "local").await.1["value"],
        0,
        "member 3 was cut off"
    );
    heal(&c).await;
    // Local reads repair nothing: only anti-entropy moves the values.
    for (i, key) in keys.iter().enumerate() {
        everywhere(&c, key, i as i64 + 1).await;
    }
    everywhere(&c, "only-on-3", 9).await;
    let q3 = quorum_status(&c, 3).await;
    assert!(
        q3["antiEntropyRepairedKeys"].as_u64() >= Some(5),
        "member 3 took the five keys from anti-entropy: {q3}"
    );
    assert_eq!(q3["readRepairs"], 0, "no read repaired anything: {q3}");
    let converged = wait_until("a member to report its time to convergence", || async {
        for id in c.members.keys() {
            if let Some(ms) = quorum_status(&c, *id).await["lastConvergenceMs"].as_u64() {
                return Some((*id, ms));
            }
        }
        None
    })
    .await;
    println!(
        "anti-entropy: member {} converged {} ms after the heal",
        converged.0, converged.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_member_restarts_with_its_values_and_membership() {
    let mut c = start(3, &[]).await;
    assert_eq!(c.put(2, "x", 5).await.0, 200);
    everywhere(&c, "x", 5).await;
    c.kill(3);
    c.restart(3);
    let url = c.members[&3].url("/readyz");
    wait_until("member 3 to be ready again", || async {
        let r = c.http.get(&url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let (status, body) = c.get(3, "x", "local").await;
    assert_eq!(
        (status, &body["value"]),
        (200, &json!(5)),
        "fsynced before the acknowledgement, so kept across SIGKILL: {body}"
    );
    assert_eq!(quorum_status(&c, 3).await["n"], 3, "the membership is kept");
    assert_eq!(c.put(3, "x", 6).await.0, 200, "and it coordinates again");
}

/// A replica holding more keys than one request body can list (the peer port takes 2 MB; a
/// digest of 10,000 keys of 200 bytes is about 2.4 MB) still converges by anti-entropy, and
/// keeps the others reachable: digests and answers go in pages.
#[tokio::test(flavor = "multi_thread")]
async fn anti_entropy_of_more_keys_than_one_request_holds() {
    let c = start(3, &[]).await;
    let url = c.members[&2].peer_url(caplab_api::paths::QUORUM_STORE);
    let key = |i: u64| format!("{i:0>200}");
    // Stored on member 2 only, as anti-entropy pushes would (a client write reaches all), in
    // batches each under the body limit.
    let (batches, per_batch) = (4, 2_500);
    for b in 0..batches {
        let entries: serde_json::Map<String, Value> = (b * per_batch..(b + 1) * per_batch)
            .map(|i| {
                let stamp = json!({"ms": 1_700_000_000_000u64 + i, "node": 2});
                (key(i), json!({"value": i, "stamp": stamp}))
            })
            .collect();
        let body = json!({"kind": "anti-entropy", "entries": entries});
        let r = c
            .http
            .post(&url)
            .bearer_auth(c.token())
            .json(&body)
            .send()
            .await;
        let (status, answer) = caplab_testkit::into_pair(r).await;
        assert_eq!(status, 200, "batch {b} on member 2: {answer}");
    }
    let last = batches * per_batch - 1;
    everywhere(&c, &key(last), last as i64).await;
    everywhere(&c, &key(0), 0).await;
    for id in c.members.keys() {
        wait_until(&format!("member {id} to reach every replica"), || async {
            let q = c.status(*id).await?["quorum"].clone();
            let replicas = q["replicas"].as_object()?;
            replicas
                .values()
                .all(|r| r["reachable"] == true)
                .then_some(())
        })
        .await;
    }
    let (status, body) = c.put(2, "after", 1).await;
    assert_eq!(
        status, 200,
        "a write through the member with many keys: {body}"
    );
}

/// W < N: one client's writes do not wait for a slow replica, and that replica gets them a
/// batch at a time (one store message in flight, carrying every write queued meanwhile)
/// instead of one concurrent message per write, whose backlog used to grow without bound and
/// take the CPU and disk the other replicas needed; it still ends up with every key's last
/// value.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_replica_gets_the_writes_in_batches_and_no_client_waits_for_it() {
    let c = start(3, &[]).await;
    let delay_ms = 3_000;
    c.set_faults(1, json!({"delay": {"peers": [3], "latencyMs": delay_ms}}))
        .await;
    let writes: i64 = 100;
    for i in 0..writes {
        let started = Instant::now();
        let (status, body) = c.put(1, &format!("k{i}"), i).await;
        assert_eq!(status, 200, "write {i}: {body}");
        assert!(
            started.elapsed().as_millis() < delay_ms,
            "W = 2 of 3: write {i} waited {:?} for the replica {delay_ms} ms away",
            started.elapsed()
        );
    }
    for i in [0, writes / 2, writes - 1] {
        everywhere(&c, &format!("k{i}"), i).await;
    }
    let faults = c.client(1).faults().await.expect("member 1's faults");
    let delayed = faults.counters.get(&3).map_or(0, |n| n.delayed);
    println!("{delayed} messages to or from the slow replica for {writes} writes");
    // Anti-entropy adds a message or two each way per second.
    assert!(
        delayed < writes as u64 / 2,
        "{delayed} messages between member 1 and the slow replica for {writes} writes: not batched"
    );
}
