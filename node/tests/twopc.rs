//! Two-phase commit (`--replication 2pc`) on real member processes: a commit and what it
//! costs in messages, aborts by veto, by conflict and by a participant cut off, and blocking:
//! the coordinator killed between the votes and the decision leaves the participants in doubt
//! until it restarts (or a person forces a decision). A concurrent history goes through the
//! checker.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use caplab_api::paths;
use caplab_checker::{check, CheckOptions, History, Overall};
use common::{wait_until, Cluster};
use reqwest::Method;
use serde_json::{json, Value};

/// Starts `n` 2pc members with `args` (member 1 coordinates: it gets the init) and waits
/// until every one is ready.
async fn start(n: u64, args: &[&str]) -> Cluster {
    let mut all = vec!["--replication", "2pc"];
    all.extend_from_slice(args);
    let c = Cluster::start(common::harness(), n, &all).await;
    for id in c.members.keys() {
        ready(&c, *id).await;
    }
    c
}

async fn ready(c: &Cluster, id: u64) {
    let url = c.members[&id].url(paths::READYZ);
    wait_until(&format!("member {id} to be ready"), || async {
        let r = c.http.get(&url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// The 2pc part of member `id`'s status.
async fn twopc(c: &Cluster, id: u64) -> Value {
    let status = wait_until(&format!("member {id}'s status"), || c.status(id)).await;
    status["twopc"].clone()
}

/// Waits until member `id`'s 2pc status satisfies `holds` (described by `what`).
async fn wait_twopc(c: &Cluster, id: u64, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
    wait_until(&format!("member {id}: {what}"), || async {
        let t = c.status(id).await?["twopc"].clone();
        holds(&t).then_some(t)
    })
    .await
}

/// What every member holds locally for `key`.
async fn local_values(c: &Cluster, key: &str) -> Vec<Value> {
    let mut values = Vec::new();
    for id in c.members.keys() {
        let (status, body) = c.get(*id, key, "local").await;
        assert_eq!(status, 200, "local read on member {id}: {body}");
        values.push(body["value"].clone());
    }
    values
}

async fn cas(c: &Cluster, id: u64, key: &str, expected: i64, new: i64) -> (u16, Value) {
    let r = c
        .http
        .post(c.members[&id].url(&paths::kv_cas(key)))
        .json(&json!({"expected": expected, "new": new}))
        .send()
        .await;
    caplab_testkit::into_pair(r).await
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_commit_everywhere_at_four_messages_per_participant() {
    let c = start(3, &[]).await;
    let coordinator = wait_until("member 2's status", || c.member_status(2)).await;
    assert_eq!(
        coordinator.engine.leader,
        Some(1),
        "the member given init coordinates"
    );

    let (status, body) = c.put(2, "x", 5).await;
    assert_eq!(
        (status, &body["value"]),
        (200, &json!(5)),
        "forwarded to the coordinator: {body}"
    );
    // Answered once every participant acknowledged: already applied everywhere.
    assert_eq!(local_values(&c, "x").await, [json!(5), json!(5), json!(5)]);
    let (status, body) = cas(&c, 3, "x", 5, 6).await;
    assert_eq!((status, &body["value"]), (200, &json!(6)), "{body}");
    let (status, body) = cas(&c, 3, "x", 5, 7).await;
    assert_eq!(
        (status, &body["current"]),
        (409, &json!(6)),
        "a failed compare: {body}"
    );
    assert_eq!(local_values(&c, "x").await, [json!(6), json!(6), json!(6)]);

    let t = twopc(&c, 1).await;
    assert_eq!(
        (&t["committed"], &t["aborted"]["veto"]),
        (&json!(2), &json!(1)),
        "{t}"
    );
    // Three transactions, three participants (the coordinator's own included): PREPARE,
    // vote, decision, acknowledgement each.
    for phase in ["prepare", "vote", "decision", "ack"] {
        assert_eq!(t["messages"][phase], 9, "{phase}: {t}");
    }
    for p in ["1", "2", "3"] {
        assert_eq!(t["lastVotes"][p]["vote"], "no", "the failed compare: {t}");
    }
    let status = wait_until("member 1's status", || c.status(1)).await;
    assert_eq!(status["role"], "coordinator", "{status}");
    let peer = &status["peers"]["2"];
    assert!(
        peer["matchIndex"] == 3 && peer["lastContactMs"].as_u64() < Some(2000),
        "the last transaction member 2 acknowledged, and it answers: {status}"
    );
    let p = twopc(&c, 2).await;
    for phase in ["prepare", "vote", "decision", "ack"] {
        assert_eq!(p["messages"][phase], 3, "participant 2, {phase}: {p}");
    }
    let metrics = c
        .http
        .get(c.members[&1].url(paths::METRICS))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for series in [
        r#"caplab_twopc_messages_total{phase="prepare"} 9"#,
        r#"caplab_twopc_transactions_total{outcome="committed",cause="none"} 2"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_veto_aborts_the_write_naming_the_member() {
    let c = start(3, &[]).await;
    c.set_faults(3, json!({"veto": {"probability": 1.0}})).await;
    let (status, body) = c.put(2, "x", 5).await;
    assert_eq!(status, 409, "{body}");
    let error = error_of(&body);
    assert!(
        error.contains("member 3 voted no") && error.contains("veto"),
        "{body}"
    );
    assert_eq!(local_values(&c, "x").await, [json!(0), json!(0), json!(0)]);
    let t = twopc(&c, 1).await;
    assert_eq!(t["aborted"]["veto"], 1, "{t}");
    assert_eq!(t["lastVotes"]["3"]["vote"], "no", "{t}");
    let vetoed = wait_until("member 3's status", || c.status(3)).await;
    assert_eq!(vetoed["faultCounters"]["1"]["vetoed"], 1, "{vetoed}");

    c.set_faults(3, json!({})).await;
    assert_eq!(c.put(2, "x", 6).await.0, 200);
    assert_eq!(local_values(&c, "x").await, [json!(6), json!(6), json!(6)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_held_by_a_prepared_transaction_aborts_another_by_conflict() {
    // The first transaction waits 1.5 s between its votes and its decision, holding x.
    let c = Arc::new(start(3, &["--twopc-decision-delay-ms", "1500"]).await);
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.put(1, "x", 1).await }
    });
    wait_twopc(&c, 1, "x held by the first transaction", |t| {
        t["prepared"] == 1
    })
    .await;
    let (status, body) = c.put(1, "x", 2).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("holds key \"x\""), "{body}");
    let (status, body) = first.await.expect("the first write");
    assert_eq!(status, 200, "{body}");
    assert_eq!(local_values(&c, "x").await, [json!(1), json!(1), json!(1)]);
    assert_eq!(twopc(&c, 1).await["aborted"]["conflict"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_cut_off_aborts_in_bounded_time_and_nothing_is_applied() {
    let c = start(3, &[]).await;
    c.set_faults(1, json!({"partition": {"peers": [3]}})).await;
    c.set_faults(3, json!({"partition": {"peers": [1]}})).await;
    let started = Instant::now();
    let (status, body) = c.put(2, "x", 9).await;
    let took = started.elapsed();
    assert_eq!(
        (status, &body["outcome"]),
        (503, &json!("not-applied")),
        "{body}"
    );
    assert!(error_of(&body).contains("no vote from member 3"), "{body}");
    // The vote deadline is half the request deadline (3 s in the harness).
    assert!(took < Duration::from_secs(3), "aborted after {took:?}");
    assert_eq!(local_values(&c, "x").await, [json!(0), json!(0), json!(0)]);
    let t = twopc(&c, 1).await;
    assert_eq!(
        (&t["aborted"]["timeout"], &t["lastVotes"]["3"]["vote"]),
        (&json!(1), &json!("missing")),
        "{t}"
    );
    for id in [1, 2] {
        assert_eq!(twopc(&c, id).await["prepared"], 0, "member {id} released x");
    }

    c.set_faults(1, json!({})).await;
    c.set_faults(3, json!({})).await;
    assert_eq!(c.put(2, "x", 10).await.0, 200);
    assert_eq!(
        local_values(&c, "x").await,
        [json!(10), json!(10), json!(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_killed_before_deciding_blocks_the_participants_until_it_restarts() {
    // The coordinator waits 60 s between the votes and the decision: time to kill it there.
    let mut c = start(3, &["--twopc-decision-delay-ms", "60000"]).await;
    let in_flight = tokio::spawn({
        let (http, url) = (c.http.clone(), c.members[&2].url(&paths::kv("x")));
        async move {
            http.put(url)
                .json(&json!({"value": 5}))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    for id in [1, 2, 3] {
        wait_twopc(&c, id, "voted yes on the write of x", |t| {
            t["prepared"] == 1
        })
        .await;
    }
    c.kill(1);

    for id in [2, 3] {
        let t = wait_twopc(&c, id, "x in doubt", |t| t["inDoubt"] == 1).await;
        assert_eq!(t["inDoubtTransactions"][0]["key"], "x", "{t}");
        assert!(t["oldestInDoubtMs"].as_u64().is_some(), "{t}");
    }
    let (status, body) = c.get(2, "x", "linearizable").await;
    assert_eq!(status, 503, "{body}");
    assert!(error_of(&body).contains("in doubt"), "{body}");
    let (status, body) = c.put(3, "x", 6).await;
    assert_eq!(status, 503, "{body}");
    assert!(error_of(&body).contains("in doubt"), "{body}");
    let (status, body) = c.get(2, "x", "local").await;
    assert_eq!(
        (status, &body["value"]),
        (200, &json!(0)),
        "the last committed value: {body}"
    );
    let readyz = c
        .http
        .get(c.members[&3].url(paths::READYZ))
        .send()
        .await
        .expect("readyz");
    let reason = (
        readyz.status().as_u16(),
        readyz.text().await.unwrap_or_default(),
    );
    assert!(
        reason.0 == 503 && reason.1.contains("blocked"),
        "{reason:?}"
    );
    // Nothing else can settle it: both survivors voted yes and neither knows the decision.
    let t = twopc(&c, 2).await;
    assert_eq!(t["inDoubt"], 1, "still in doubt after asking member 3: {t}");

    // A person forces an abort on member 2 (a heuristic decision, counted).
    let txid = t["inDoubtTransactions"][0]["txid"].clone();
    let decide = json!({"txid": txid, "decision": "abort"});
    c.admin_ok(2, Method::POST, paths::ADMIN_TWOPC_DECIDE, &decide)
        .await;
    let t = twopc(&c, 2).await;
    assert_eq!(
        (&t["inDoubt"], &t["heuristic"]["abort"]),
        (&json!(0), &json!(1)),
        "{t}"
    );

    // A heuristic decision is not passed on: member 3, asking member 2 again, stays in doubt.
    let asked = twopc(&c, 3).await["messages"]["query"]
        .as_u64()
        .unwrap_or(0);
    let t = wait_twopc(&c, 3, "another round of questions", |t| {
        t["messages"]["query"].as_u64() >= Some(asked + 2)
    })
    .await;
    assert_eq!(t["inDoubt"], 1, "{t}");

    // The coordinator restarts without the delay: nothing decided in its log, so it aborts
    // (presumed abort) and tells everyone.
    c.restart_with(1, &["--replication", "2pc"]);
    for id in [1, 2, 3] {
        let t = wait_twopc(&c, id, "x released", |t| {
            t["prepared"] == 0 && t["inDoubt"] == 0
        })
        .await;
        assert_eq!(
            t["heuristic"]["mismatches"], 0,
            "the forced abort matched: {t}"
        );
    }
    assert_eq!(local_values(&c, "x").await, [json!(0), json!(0), json!(0)]);
    assert_ne!(
        in_flight.await.expect("the write").ok().map(|s| s.as_u16()),
        Some(200),
        "the write in flight was never acknowledged"
    );
    ready(&c, 3).await;
    assert_eq!(c.put(3, "x", 7).await.0, 200);
    assert_eq!(local_values(&c, "x").await, [json!(7), json!(7), json!(7)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_cut_off_after_its_vote_learns_the_commit_from_another_participant() {
    // The coordinator waits 1.5 s between the votes and the decision: time to cut member 3
    // off after it voted yes.
    let c = Arc::new(start(3, &["--twopc-decision-delay-ms", "1500"]).await);
    let write = tokio::spawn({
        let c = c.clone();
        async move { c.put(1, "x", 5).await }
    });
    for id in [1, 2, 3] {
        wait_twopc(&c, id, "voted yes on the write of x", |t| {
            t["prepared"] == 1
        })
        .await;
    }
    c.set_faults(1, json!({"partition": {"peers": [3]}})).await;
    c.set_faults(3, json!({"partition": {"peers": [1]}})).await;
    let (status, body) = write.await.expect("the write");
    assert_eq!(
        (status, &body["outcome"]),
        (504, &json!("unknown")),
        "committed, member 3 never acknowledged: {body}"
    );
    assert!(error_of(&body).contains("[3]"), "{body}");
    // Member 3 cannot reach the coordinator; member 2 knows the decision.
    wait_until("member 3 to learn the commit from member 2", || async {
        (c.get(3, "x", "local").await.1["value"] == 5).then_some(())
    })
    .await;
    let t = twopc(&c, 3).await;
    assert_eq!(
        (&t["prepared"], &t["inDoubt"]),
        (&json!(0), &json!(0)),
        "{t}"
    );
    assert!(
        t["messages"]["query"].as_u64() >= Some(2),
        "asked the coordinator, then member 2: {t}"
    );

    c.set_faults(1, json!({})).await;
    c.set_faults(3, json!({})).await;
    // The coordinator keeps telling member 3 until it acknowledges, then forgets the
    // transaction: its next write goes through.
    assert_eq!(c.put(1, "x", 6).await.0, 200);
    assert_eq!(local_values(&c, "x").await, [json!(6), json!(6), json!(6)]);
}

/// One operation through member `id`, recorded as the checker's history records it.
async fn operation(c: &Cluster, process: u64, i: u64, t0: Instant) -> Value {
    let id = process % 3 + 1;
    let key = if i.is_multiple_of(2) { "a" } else { "b" };
    let invoke = t0.elapsed().as_nanos() as u64;
    let value = (process * 1000 + i) as i64;
    let (kind, (status, body)) = match i % 3 {
        0 => ("write", c.put(id, key, value).await),
        1 => ("read", c.get(id, key, "linearizable").await),
        _ => ("cas", cas(c, id, key, (value - 1) % 7, value).await),
    };
    let complete = t0.elapsed().as_nanos() as u64;
    let outcome = match status {
        200 => "ok",
        409 | 503 => "fail",
        _ => "unknown",
    };
    let mut op = json!({"process": process, "type": kind, "key": key,
                        "invoke": invoke, "complete": complete, "status": outcome});
    match kind {
        "write" => op["value"] = json!(value),
        "read" if status == 200 => op["output"] = body["value"].clone(),
        "cas" => {
            op["expected"] = json!((value - 1) % 7);
            op["new"] = json!(value);
        }
        _ => {}
    }
    op
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_through_every_member_see_a_linearizable_register() {
    let c = Arc::new(start(3, &[]).await);
    let t0 = Instant::now();
    let clients = (1..=6).map(|process| {
        let c = c.clone();
        tokio::spawn(async move {
            let mut ops = Vec::new();
            for i in 0..12 {
                ops.push(operation(&c, process, i, t0).await);
            }
            ops
        })
    });
    let mut history = Vec::new();
    for ops in futures::future::join_all(clients).await {
        history.extend(ops.expect("a client"));
    }
    let ok = history.iter().filter(|op| op["status"] == "ok").count();
    assert!(ok > 10, "most operations should succeed: {history:?}");
    let text = json!({ "operations": history }).to_string();
    let parsed = History::from_json(&text).expect("a well-formed history");
    let report = check(&parsed, &CheckOptions::default());
    assert_eq!(report.overall(), Overall::Linearizable, "{text}");
}

/// A client that gives up mid-transaction (its connection closed while the coordinator waits
/// between the votes and the decision) does not stop the transaction: it is decided and every
/// participant releases the key, so later writes of it commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_mid_transaction_leaves_no_key_held() {
    let c = start(3, &["--twopc-decision-delay-ms", "1500"]).await;
    let gave_up = c
        .http
        .put(c.members[&1].url(&paths::kv("x")))
        .timeout(Duration::from_millis(300))
        .json(&json!({"value": 1}))
        .send()
        .await;
    assert!(gave_up.is_err(), "answered within 300 ms: {gave_up:?}");
    wait_twopc(&c, 1, "the transaction decided", |t| t["committed"] == 1).await;
    for id in [1, 2, 3] {
        wait_twopc(&c, id, "no transaction held", |t| t["prepared"] == 0).await;
    }
    let (status, body) = c.put(1, "x", 2).await;
    assert_eq!(status, 200, "a later write of the key: {body}");
    assert_eq!(local_values(&c, "x").await, [json!(2), json!(2), json!(2)]);
}
