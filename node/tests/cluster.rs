//! Multi-process tests: real `caplab-node` binaries on loopback, killed with SIGKILL.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Cluster};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_write_is_visible_everywhere() {
    let c = common::start(3).await;
    assert_eq!(
        c.put(2, "x", 5).await,
        (200, json!({"key": "x", "value": 5}))
    );
    for id in 1..=3 {
        assert_eq!(
            c.get(id, "x", "linearizable").await,
            (200, json!({"key": "x", "value": 5}))
        );
    }
    for id in 1..=3 {
        wait_until("local reads to catch up", || async {
            (c.get(id, "x", "local").await.1["value"] == 5).then_some(())
        })
        .await;
    }
    assert_eq!(c.get(3, "never-written", "local").await.1["value"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_set_through_a_follower() {
    let c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    c.put(follower, "k", 5).await;
    let cas = |expected: i64, new: i64| {
        let url = c.members[&follower].url("/v1/kv/k/cas");
        let http = c.http.clone();
        async move {
            caplab_testkit::into_pair(
                http.post(url)
                    .json(&json!({"expected": expected, "new": new}))
                    .send()
                    .await,
            )
            .await
        }
    };
    assert_eq!(cas(5, 6).await, (200, json!({"key": "k", "value": 6})));
    let (status, body) = cas(5, 7).await;
    assert_eq!(status, 409);
    assert_eq!(body["current"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_takes_over_after_sigkill() {
    let mut c = common::start(3).await;
    c.write_somewhere("before", 1).await;
    let old = c.wait_for_leader().await;
    let killed_at = Instant::now();
    c.kill(old);
    let new = c.wait_for_leader().await;
    c.write_somewhere("after", 2).await;
    println!(
        "failover: leader {old} killed, leader {new} accepted a write after {:?}",
        killed_at.elapsed()
    );
    assert_ne!(old, new);
    assert_eq!(c.get(new, "before", "linearizable").await.1["value"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_members_keep_every_acknowledged_write() {
    let mut c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    c.kill(follower);
    for i in 0..50 {
        assert_eq!(c.put(leader, &format!("k{i}"), i).await.0, 200);
    }
    c.restart(follower);
    wait_until("the restarted follower to catch up", || async {
        (c.get(follower, "k49", "local").await.1["value"] == 49).then_some(())
    })
    .await;

    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for_leader().await;
    for i in 0..50 {
        let key = format!("k{i}");
        assert_eq!(
            c.read_somewhere(&key).await,
            Some(i),
            "{key} after full restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_catches_up_after_a_burst_of_concurrent_writes() {
    let mut c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    c.kill(follower);
    // Concurrent writers with long keys: the leader packs them into few, large log entries,
    // which the restarted follower must then receive within replication RPCs' deadlines.
    let url = c.members[&leader].url("/v1/kv");
    write_concurrently(&c, &url, 64, 100, |w, _| {
        format!("{w:03}-{}", "k".repeat(250))
    })
    .await;
    c.restart(follower);
    let last_key = format!("063-{}", "k".repeat(250));
    wait_until("the restarted follower to catch up", || async {
        (c.get(follower, &last_key, "local").await.1["value"] == 99).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_compact_the_log_and_members_recover_from_them() {
    let mut c = common::start_with(3, &["--snapshot-logs", "10"]).await;
    let leader = c.wait_for_leader().await;
    let url = c.members[&leader].url("/v1/kv");
    // Concurrent writers: batched entries, so the writes-based trigger counts here.
    write_concurrently(&c, &url, 16, 20, |w, _| format!("w{w}")).await;
    for id in 1..=3 {
        wait_until(&format!("member {id} to build a snapshot"), || async {
            let s = c.status(id).await?;
            (s["snapshotIndex"].as_u64()? > 0).then_some(())
        })
        .await;
    }
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for_leader().await;
    for w in 0..16 {
        let key = format!("w{w}");
        assert_eq!(c.read_somewhere(&key).await, Some(19), "{key}");
    }
}

/// `writers` concurrent writers, each writing values `0..writes` in order to `key(writer, i)`
/// under `url` (`…/v1/kv`); every write must be acknowledged. A 503 (not applied: no leader
/// known while an election settles) or 504 (the member's deadline passed: a debug build
/// building snapshots on a busy machine) is sent again until [`common::DEADLINE`].
async fn write_concurrently(
    c: &Cluster,
    url: &str,
    writers: usize,
    writes: i64,
    key: impl Fn(usize, i64) -> String + Clone + Send + 'static,
) {
    let writers = (0..writers).map(|w| {
        let (http, url, key) = (c.http.clone(), url.to_owned(), key.clone());
        tokio::spawn(async move {
            for i in 0..writes {
                let started = Instant::now();
                loop {
                    let status = http
                        .put(format!("{url}/{}", key(w, i)))
                        .json(&json!({ "value": i }))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    match status {
                        Ok(200..=299) => break,
                        // Each call writes the same value: sending it again is harmless,
                        // and an earlier attempt still in the log comes before the next.
                        Ok(503 | 504) if started.elapsed() < common::DEADLINE => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        other => panic!("write {}={i}: {other:?}", key(w, i)),
                    }
                }
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        assert!(writer.await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_a_write_fails_within_the_deadline() {
    let mut c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    for id in (1..=3).filter(|id| *id != leader) {
        c.kill(id);
    }
    let started = Instant::now();
    let (status, body) = c.put(leader, "x", 1).await;
    assert!(status == 503 || status == 504, "got {status} {body}");
    assert!(body["outcome"].is_string(), "{body}");
    // The request deadline is 3 s; allow scheduling slack but no hang.
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_up_to_five_and_back_without_losing_writes() {
    let mut c = common::start(3).await;
    let writer_cluster_urls: Vec<String> =
        (1..=3).map(|id| c.members[&id].url("/v1/kv/w")).collect();
    let http = c.http.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            let mut i = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let url = &writer_cluster_urls[i as usize % writer_cluster_urls.len()];
                if let Ok(r) = http.put(url).json(&json!({"value": i})).send().await {
                    if r.status().is_success() {
                        acknowledged = i;
                    }
                }
                i += 1;
            }
            acknowledged
        })
    };
    for id in [4, 5] {
        c.add_process(id);
        let addr = c.members[&id].peer.clone();
        admin_until_ok(
            &c,
            1,
            Method::POST,
            "/v1/admin/learners",
            json!({"id": id, "addr": addr}),
        )
        .await;
    }
    admin_until_ok(
        &c,
        2,
        Method::PUT,
        "/v1/admin/voters",
        json!({"voters": [1, 2, 3, 4, 5]}),
    )
    .await;
    wait_until("member 5 to see itself a voter", || async {
        (c.status(5).await?["voters"] == json!([1, 2, 3, 4, 5])).then_some(())
    })
    .await;
    admin_until_ok(
        &c,
        3,
        Method::PUT,
        "/v1/admin/voters",
        json!({"voters": [1, 2, 3]}),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last_acknowledged = writer.await.unwrap_or(0);
    c.kill(4);
    c.kill(5);
    let leader = c.wait_for_leader().await;
    let value = c.get(leader, "w", "linearizable").await.1["value"]
        .as_i64()
        .unwrap_or(-1);
    assert!(
        value >= last_acknowledged && last_acknowledged > 0,
        "read {value}, last acknowledged {last_acknowledged}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_and_the_member_keeps_serving() {
    let c = common::start(3).await;
    let m = &c.members[&1];
    let long_key = "k".repeat(257);
    let cases = [
        (Method::PUT, m.url("/v1/kv/x"), "{\"value\": \"five\"}", 400),
        (Method::PUT, m.url("/v1/kv/x"), "{not json", 400),
        (Method::PUT, m.url("/v1/kv/x"), "{\"value\": 1.5}", 400),
        (
            Method::PUT,
            m.url(&format!("/v1/kv/{long_key}")),
            "{\"value\": 1}",
            400,
        ),
        (
            Method::POST,
            m.url("/v1/kv/x/cas"),
            "{\"expected\": 1}",
            400,
        ),
        (Method::GET, m.url("/v1/kv/x?consistency=eventual"), "", 400),
        (Method::GET, m.url("/v1/kv/%ff"), "", 400),
        (Method::GET, m.url("/v1/no-such-route"), "", 404),
        (Method::DELETE, m.url("/v1/kv/x"), "", 405),
        (
            Method::POST,
            m.peer_url("/v1/admin/init"),
            "{\"members\": {}}",
            401,
        ),
        (Method::PUT, m.peer_url("/v1/admin/faults"), "{}", 401),
        (Method::POST, m.peer_url("/raft/vote"), "{}", 401),
    ];
    for (method, url, body, expected) in cases {
        let r = c
            .http
            .request(method.clone(), &url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let json: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{method} {url} {body}: {json}");
        assert!(
            json["error"].is_string(),
            "{method} {url}: error message missing in {json}"
        );
    }
    let admin_cases = [
        ("/v1/admin/faults", json!({"loss": {"probability": 2.0}})),
        ("/v1/admin/faults", json!({"partition": {"peers": [99]}})),
        ("/v1/admin/faults", json!({"bogus": true})),
        ("/v1/admin/peers", json!({"peers": {"2": "nohostport"}})),
        (
            "/v1/admin/peers",
            json!({"peers": {"2": "127.0.0.1:9", "3": "127.0.0.1:9"}}),
        ),
        (
            "/v1/admin/peers",
            json!({"peers": {"2": {"addr": "127.0.0.1:9", "incarnaton": "0123456789abcdef"}}}),
        ),
    ];
    for (path, body) in admin_cases {
        let (status, json) = c.admin(1, Method::PUT, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {json}");
    }
    let r = c
        .http
        .get(m.peer_url("/v1/admin/peers"))
        .header("x-caplab-to", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "the token is checked before the identity headers"
    );
    assert!(r.headers().get("x-caplab-incarnation").is_none());
    let (status, _) = c
        .admin(
            1,
            Method::POST,
            "/v1/admin/learners",
            json!({"id": 0, "addr": "a:1"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(c.put(1, "x", 7).await.0, 200);
    assert_eq!(c.get(1, "x", "linearizable").await.1["value"], 7);
}

/// Membership changes are refused while another is in flight or the leader changes (409,
/// 503, 504): like any client, retry until accepted.
async fn admin_until_ok(c: &Cluster, id: u64, method: Method, path: &str, body: serde_json::Value) {
    wait_until(&format!("{path} {body} to be accepted"), || async {
        let (status, answer) = c.admin(id, method.clone(), path, body.clone()).await;
        assert!(
            matches!(status, 200 | 409 | 503 | 504),
            "{path}: {status} {answer}"
        );
        (status == 200).then_some(())
    })
    .await
}

/// Issue 19 §2: a leader removed from the voters must stop presenting itself as the leader
/// and as ready (before the fix it said `role: leader` and `/readyz` 200 for over 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_removed_from_the_voters_says_so_and_is_not_ready() {
    let c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let kept: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (status, body) = c
        .admin(
            leader,
            Method::PUT,
            "/v1/admin/voters",
            json!({ "voters": kept }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let readyz = c.members[&leader].url("/readyz");
    let (s, why) = wait_until("the removed leader to report it is not a voter", || async {
        let s = c.status(leader).await?;
        let r = c.http.get(&readyz).send().await.ok()?;
        let ready = r.status().as_u16();
        let why = r.text().await.ok()?;
        (s["voter"] == false && s["role"] != "leader" && ready == 503).then_some((s, why))
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {s}",
        started.elapsed()
    );
    assert!(why.contains("not a voter"), "{why}");
    c.wait_for_leader_among(&kept, Some(leader)).await;
}

/// A follower cut off from every other member (pre-vote keeps it from campaigning, so
/// openraft goes on naming its old leader) says it knows no leader and is not ready, and is
/// ready again once the cut heals.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_cut_off_from_its_leader_is_not_ready() {
    let c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let others: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    let cut = json!({ "partition": { "peers": others } });
    let (status, body) = c
        .admin(follower, Method::PUT, "/v1/admin/faults", cut)
        .await;
    assert_eq!(status, 200, "{body}");
    let readyz = c.members[&follower].url("/readyz");
    let ready = || async {
        let r = c.http.get(&readyz).send().await.ok()?;
        Some(r.status().as_u16())
    };
    wait_until("the cut-off follower to say it knows no leader", || async {
        let s = c.status(follower).await?;
        (s["leader"].is_null() && ready().await? == 503).then_some(())
    })
    .await;
    let (status, body) = c
        .admin(follower, Method::PUT, "/v1/admin/faults", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("the healed follower to be ready again", || async {
        (ready().await? == 200).then_some(())
    })
    .await;
}

/// Issue 19 §3: the README's curl examples send JSON with no `Content-Type` (or curl's form
/// type); the API takes the body as JSON, and still says what is wrong with one that is not.
#[tokio::test(flavor = "multi_thread")]
async fn json_bodies_need_no_content_type() {
    let c = common::start(3).await;
    let leader = c.wait_for_leader().await;
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut r = c.http.put(c.members[&leader].url("/v1/kv/x")).body(body);
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        async move { caplab_testkit::into_pair(r.send().await).await }
    };
    assert_eq!(
        send(None, r#"{"value": 5}"#).await,
        (200, json!({"key": "x", "value": 5}))
    );
    let curl_default = Some("application/x-www-form-urlencoded");
    assert_eq!(send(curl_default, r#"{"value": 6}"#).await.0, 200);
    let (status, body) = send(None, "value=7").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("JSON")),
        "{body}"
    );
    let (status, body) = send(Some("text/plain"), r#"{"value": 8}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("application/json")),
        "{body}"
    );
    // The admin API too (peer port), as in the README's init example.
    let r = c
        .http
        .put(c.members[&leader].peer_url("/v1/admin/faults"))
        .bearer_auth(common::TOKEN)
        .body("{}")
        .send()
        .await;
    assert_eq!(caplab_testkit::into_pair(r).await.0, 200);
    assert_eq!(c.get(leader, "x", "linearizable").await.1["value"], 6);
}

/// A snapshot bigger than one HTTP body: a new member is sent it in chunks and catches up
/// (openraft's 3 MiB default chunks, as JSON, once exceeded the peer port's body limit and
/// a new member of a cluster holding more than ~40,000 keys never caught up).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_catches_up_from_a_snapshot_of_several_mib() {
    let mut c = common::start_with(3, &["--snapshot-logs", "10"]).await;
    let leader = c.wait_for_leader().await;
    let url = c.members[&leader].url("/v1/kv");
    // 6,000 keys of 200 bytes: a state of ~1.3 MiB, ~5 MiB once JSON-encoded as bytes.
    let long = "k".repeat(200);
    let prefix = long.clone();
    write_concurrently(&c, &url, 16, 375, move |w, i| format!("{prefix}-{w}-{i}")).await;
    wait_until("the leader to build a snapshot", || async {
        let s = c.status(leader).await?;
        (s["snapshotIndex"].as_u64()? > 0).then_some(())
    })
    .await;
    c.add_process(4);
    let addr = c.members[&4].peer.clone();
    admin_until_ok(
        &c,
        leader,
        Method::POST,
        "/v1/admin/learners",
        json!({"id": 4, "addr": addr}),
    )
    .await;
    // Generous: the snapshot is built, sent in chunks and installed by debug builds on a
    // machine that may be busy.
    caplab_testkit::wait_until(
        Duration::from_secs(240),
        "member 4 to hold the last key",
        || async {
            let (status, body) = c.get(4, &format!("{long}-15-374"), "local").await;
            (status == 200 && body["value"] == json!(374)).then_some(())
        },
    )
    .await;
}
