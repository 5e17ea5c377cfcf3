//! `GET /v1/log` on real members of every replication mode: the last entries of the member's
//! log in the mode's own terms (Raft index and term, the primary's sequence and epoch, 2pc
//! transactions with their decisions, quorum writes with their last-writer-wins stamps), a
//! limit out of range refused with a JSON error, and the status counting the client
//! operations the member answered (`clientOps`), which the live view turns into rates.

mod common;

use caplab_api::paths;
use common::{wait_until, Cluster};
use serde_json::Value;

/// Starts three members of `mode`, waits until member 1 is ready and writes `k=1..=3`
/// through it (retrying while the cluster settles).
async fn written(mode: &str) -> Cluster {
    let c = Cluster::start(common::harness(), 3, &["--replication", mode]).await;
    for value in 1..=3 {
        wait_until(&format!("{mode}: the write of k={value}"), || async {
            let (status, _) = c.put(1, "k", value).await;
            (status == 200).then_some(())
        })
        .await;
    }
    c
}

/// Member `id`'s log tail with `query` (e.g. `?limit=2`): HTTP status and body.
async fn tail(c: &Cluster, id: u64, query: &str) -> (u16, Value) {
    let url = c.members[&id].url(&format!("{}{query}", paths::LOG_TAIL));
    let answer = c.http.get(&url).send().await.expect("GET /v1/log");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("a JSON body"))
}

/// The entries of member `id`'s tail, once `holds` accepts them.
async fn entries(c: &Cluster, id: u64, what: &str, holds: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_until(what, || async {
        let (status, body) = tail(c, id, "?limit=2").await;
        let entries = body["entries"].as_array()?.clone();
        (status == 200 && body["id"] == id && holds(&entries)).then_some(entries)
    })
    .await
}

fn ops(entries: &[Value]) -> Vec<&str> {
    entries.iter().filter_map(|e| e["op"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_tail_has_index_term_and_writes_and_status_counts_client_ops() {
    let c = written("raft").await;
    let last = entries(&c, 1, "raft: the last two writes", |e| {
        ops(e) == ["k=2", "k=3"]
    })
    .await;
    let (a, b) = (&last[0], &last[1]);
    assert_eq!(b["index"].as_u64(), a["index"].as_u64().map(|i| i + 1));
    assert!(b["term"].as_u64().is_some_and(|t| t >= 1), "{b}");

    let (status, body) = tail(&c, 1, "?limit=0").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("1 to 32")),
        "{body}"
    );
    let (status, body) = tail(&c, 1, "?limit=many").await;
    assert_eq!(status, 400, "{body}");

    let status = c.status(1).await.expect("status");
    let ok = status["clientOps"]["outcomes"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 3, "three writes answered ok: {status}");
    let counts = status["clientOps"]["latencyCounts"]
        .as_array()
        .expect("counts");
    let bounds = status["clientOps"]["latencyBoundsMs"]
        .as_array()
        .expect("bounds");
    assert_eq!(counts.len(), bounds.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_tail_has_sequence_and_epoch() {
    let c = written("async").await;
    let last = entries(&c, 1, "async: the last two writes", |e| {
        ops(e) == ["k=2", "k=3"]
    })
    .await;
    assert_eq!(
        last[1]["index"].as_u64(),
        last[0]["index"].as_u64().map(|i| i + 1)
    );
    assert!(last[1]["term"].as_u64().is_some_and(|e| e >= 1), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twopc_tail_has_transactions_and_decisions() {
    let c = written("2pc").await;
    // Every member participates: its vote, then the coordinator's decision.
    let last = entries(
        &c,
        2,
        "2pc: the last transaction prepared and committed",
        |e| {
            e.len() == 2
                && e[0]["decision"] == "prepared"
                && e[1]["decision"] == "commit"
                && e[0]["index"] == e[1]["index"]
        },
    )
    .await;
    assert_eq!(ops(&last), ["k=3", "k=3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_tail_has_writes_with_their_stamps() {
    let c = written("quorum").await;
    let last = entries(&c, 2, "quorum: the last two writes stored", |e| {
        ops(e) == ["k=2", "k=3"]
    })
    .await;
    for e in &last {
        assert_eq!(e["writer"], 1, "member 1 coordinated the writes: {e}");
        assert_eq!(e["decision"], "kept", "{e}");
    }
    assert!(last[0]["stampMs"].as_u64() <= last[1]["stampMs"].as_u64());
}
