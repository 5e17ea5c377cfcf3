//! The ladder end to end on loopback members: `caplab workload` ends with a settle period and
//! records every member's final local read of every key; `caplab check` judges convergence
//! from them. A healthy Raft cluster is on the top rung and converged; an asynchronous cluster
//! whose secondary stays cut off from the primary does not converge, and says so in words; a
//! leaderless cluster with a skewed clock loses writes (not linearizable) yet converges.

mod common;

use std::path::{Path, PathBuf};

use caplab_checker::History;
use common::{caplab, run, wait_until, Ran};
use serde_json::{json, Value};

/// Runs `caplab workload --addr <members> <args> --out <dir>/history.json` to its end.
async fn workload(c: &common::Cluster, args: &[&str]) -> (PathBuf, Ran) {
    let path = c.dir.path().join("history.json");
    let mut cmd = caplab();
    cmd.args(["workload", "--quiet", "--addr", &c.client_addrs()])
        .args(args)
        .arg("--out")
        .arg(&path);
    let ran = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .expect("the workload's thread");
    (path, ran)
}

fn check_json(path: &Path) -> Value {
    let out = run(caplab().args(["check", "--json"]).arg(path));
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}):\n{}", out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_raft_cluster_is_linearizable_and_converged() {
    let c = common::start(3, &[]).await;
    c.wait_for_leader().await;
    let (path, ran) = workload(&c, &["--clients", "4", "--keys", "2", "--rate", "80"]).await;
    assert_eq!(ran.code, Some(0), "workload failed:\n{}", ran.stderr);
    let history = History::from_json(&std::fs::read_to_string(&path).expect("history"))
        .expect("a valid history");
    // Three members, two keys: six final reads, all answered, all agreeing per key.
    assert_eq!(history.final_reads.len(), 6, "{:?}", history.final_reads);
    assert!(history.final_reads.iter().all(|f| f.value.is_some()));
    let report = check_json(&path);
    for rung in ["linearizable", "sequential", "converged"] {
        assert_eq!(report[rung], true, "{rung}: {report:#}");
    }
    assert_eq!(report["strongest"], "linearizable", "{report:#}");
    assert!(
        report["anomalyCounts"]
            .as_object()
            .is_some_and(|counts| counts.values().all(|n| n == 0)),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_secondary_cut_off_for_the_whole_run_does_not_converge() {
    let c = common::start(3, &["--replication", "async"]).await;
    wait_until("member 1 to be the primary", || async {
        (c.status(1).await?["role"] == "primary").then_some(())
    })
    .await;
    // Secondary 3 misses every write of the run, and is still cut off while the run settles.
    c.set_faults(1, json!({"partition": {"peers": [3]}})).await;
    let (path, ran) = workload(
        &c,
        &[
            "--clients",
            "3",
            "--keys",
            "1",
            "--rate",
            "60",
            "--duration",
            "3",
            "--mix",
            "write=1",
            "--settle",
            "1s",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "workload failed:\n{}", ran.stderr);
    let report = check_json(&path);
    assert_eq!(report["converged"], false, "{report:#}");
    assert_eq!(report["anomalyCounts"]["did-not-converge"], 1, "{report:#}");
    let lagging = &c.members[&3].client;
    let diverged = report["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["kind"] == "did-not-converge")
        .unwrap_or_else(|| panic!("no did-not-converge anomaly: {report:#}"));
    let sentence = diverged["sentence"].as_str().unwrap_or_default();
    assert!(
        sentence.starts_with("members disagree on ")
            && sentence.ends_with("(did not converge)")
            && sentence.contains(&format!("0 on {lagging}")),
        "{sentence}"
    );
    // The table says it too, and the exit code stays about linearizability.
    let text = run(caplab().arg("check").arg(&path));
    assert!(
        text.stdout.contains("(did not converge)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("converged no"), "{}", text.stdout);
    assert_eq!(text.code, Some(0), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaderless_cluster_with_a_skewed_clock_still_converges() {
    // R = W = 1: every member coordinates alone; member 3's clock runs 3 s behind, so its
    // writes lose to older ones by timestamp (last writer wins). Whatever the rungs above,
    // read repair and anti-entropy bring every replica to the same value: converged.
    let c = common::start(
        3,
        &[
            "--replication",
            "quorum",
            "--read-quorum",
            "1",
            "--write-quorum",
            "1",
        ],
    )
    .await;
    c.set_faults(3, json!({"clockSkewMs": -3000})).await;
    let (path, ran) = workload(
        &c,
        &[
            "--clients",
            "3",
            "--keys",
            "1",
            "--rate",
            "60",
            "--duration",
            "3",
            "--mix",
            "read=1,write=1",
            "--settle",
            "10s",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "workload failed:\n{}", ran.stderr);
    let report = check_json(&path);
    // Acknowledged writes through member 3 lost to last-writer-wins, counted by every replica…
    let quorum = &c.status(1).await.expect("member 1's status")["quorum"];
    assert!(
        quorum["lwwLostWrites"]["3"].as_u64() > Some(0),
        "{quorum:#}"
    );
    // …so the history is not linearizable, yet every member ends with the same value.
    assert_eq!(report["linearizable"], false, "{report:#}");
    assert_eq!(report["converged"], true, "{report:#}");
    assert_eq!(report["anomalyCounts"]["did-not-converge"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_by_address_drops_cas_against_quorum_members() {
    // Quorum members refuse compare-and-set; with --addr alone the workload learns the mode
    // from their /v1/status, as --cluster does from the spec.
    let c = common::start(3, &["--replication", "quorum"]).await;
    wait_until("member 1 to answer /v1/status", || async {
        c.status(1).await.map(|_| ())
    })
    .await;
    let (path, ran) = workload(
        &c,
        &[
            "--clients",
            "2",
            "--keys",
            "1",
            "--rate",
            "40",
            "--duration",
            "2",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "workload failed:\n{}", ran.stderr);
    assert!(ran.stderr.contains("cas dropped"), "{}", ran.stderr);
    let history = History::from_json(&std::fs::read_to_string(&path).expect("history"))
        .expect("a valid history");
    assert!(!history.entries.is_empty());
    assert!(
        history
            .entries
            .iter()
            .all(|e| !matches!(e.op, caplab_checker::Op::Cas { .. })),
        "a cas was sent"
    );
}
