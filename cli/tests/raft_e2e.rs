//! End to end on loopback members: the `caplab` workload against a 3-member Raft cluster while
//! its leader is partitioned away and later a leader is killed (SIGKILL) and restarted; the
//! recorded history must check as linearizable, and the report must render.

mod common;

use std::time::Instant;

use caplab_checker::Status;
use common::{check, report, Workload};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn raft_stays_linearizable_through_a_leader_partition_and_a_leader_kill() {
    let mut c = common::start(3, &[]).await;
    let all = [1, 2, 3];
    let first = c.wait_for_leader_among(&all, None).await;
    let dir = c.dir.path().to_path_buf();
    let started = Instant::now();
    let since = || u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let workload = Workload::start(
        &c,
        &[
            &["--clients", "6", "--keys", "3", "--rate", "150"],
            &["--mix", "read=40,write=35,cas=25"],
            &["--duration", "600", "--seed", "7", "--timeout-ms", "8000"],
        ],
    );
    let history_path = workload.history_path.clone();
    let mut events = Vec::new();

    // Some undisturbed traffic first.
    c.wait_for_commits(first, 30).await;

    // Cut the leader off from the others (telling it alone cuts the links both ways).
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != first).collect();
    let cut = since();
    c.set_faults(first, json!({"partition": {"peers": others}}))
        .await;
    let second = c.wait_for_leader_among(&others, Some(first)).await;
    c.wait_for_commits(second, 30).await;
    c.set_faults(first, json!({})).await;
    events
        .push(json!({"name": format!("member {first} partitioned"), "start": cut, "end": since()}));
    c.wait_for_leader_among(&all, None).await;

    // Kill whoever leads now, let the others carry on, then bring it back.
    let victim = c.wait_for_leader_among(&all, None).await;
    let survivors: Vec<u64> = all.iter().copied().filter(|id| *id != victim).collect();
    let killed = since();
    c.kill(victim);
    let third = c.wait_for_leader_among(&survivors, Some(victim)).await;
    c.wait_for_commits(third, 30).await;
    c.restart(victim);
    events
        .push(json!({"name": format!("member {victim} killed"), "start": killed, "end": since()}));
    c.wait_for_leader_among(&all, None).await;
    let after_restart = since();
    let leader = c.wait_for_leader_among(&all, None).await;
    c.wait_for_commits(leader, 30).await;

    let (history, workload_log) = workload.stop().await;

    let count = |s: Status| history.entries.iter().filter(|e| e.status == s).count();
    println!(
        "history: {} operations ({} ok, {} fail, {} unknown); leaders {first} → {second} → {third}, killed {victim}",
        history.entries.len(),
        count(Status::Ok),
        count(Status::Fail),
        count(Status::Unknown)
    );
    for kind in ["read", "write", "cas"] {
        let of = |s: Status| {
            history
                .entries
                .iter()
                .filter(|e| e.op.kind() == kind && e.status == s)
                .count()
        };
        println!(
            "  {kind}: {} ok, {} fail, {} unknown",
            of(Status::Ok),
            of(Status::Fail),
            of(Status::Unknown)
        );
    }
    println!("{workload_log}");
    assert!(
        count(Status::Ok) >= 100,
        "too little traffic: {workload_log}"
    );
    assert!(
        history
            .entries
            .iter()
            .any(|e| e.status == Status::Ok && e.invoke > after_restart),
        "no successful operation after the restart"
    );

    let check = check(&history_path);
    println!("{}", check.stdout);
    assert_eq!(
        check.code,
        Some(0),
        "not linearizable?\n{}\n{}",
        check.stdout,
        check.stderr
    );
    assert!(check.stdout.contains("linearizable"));

    let events_path = dir.join("events.json");
    std::fs::write(&events_path, serde_json::to_string(&events).expect("json")).expect("write");
    let report_path = dir.join("report.html");
    let html = report(&history_path, &report_path, Some(&events_path));
    for p in history.processes() {
        assert!(
            html.contains(&format!("data-process=\"{p}\"")),
            "lane {p} missing"
        );
    }
    assert!(html.contains("partitioned") && html.contains("killed"));
    assert!(!html.contains("violation\" data-entry"));
}

/// Runs `caplab workload` to completion against `c`, writing `name` in the cluster's
/// directory; returns the history's path.
fn workload_to_completion(c: &common::Cluster, name: &str) -> std::path::PathBuf {
    let path = c.dir.path().join(name);
    let out = common::run(
        common::caplab()
            .args(["workload", "--addr", &c.client_addrs(), "-q"])
            .args(["--clients", "4", "--keys", "2", "--rate", "80"])
            .args(["--mix", "read=40,write=30,cas=30", "--duration", "3"])
            .arg("--out")
            .arg(&path),
    );
    assert_eq!(out.code, Some(0), "workload {name} failed: {}", out.stderr);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workloads_on_the_same_cluster_both_check_linearizable() {
    let c = common::start(3, &[]).await;
    c.wait_for_leader_among(&[1, 2, 3], None).await;
    let first = workload_to_completion(&c, "first.json");
    let second = workload_to_completion(&c, "second.json");
    let read = |p: &std::path::Path| {
        caplab_checker::History::from_json(&std::fs::read_to_string(p).expect("history"))
            .expect("a valid history")
    };
    let (a, b) = (read(&first), read(&second));
    for h in [&a, &b] {
        assert!(
            h.entries.iter().filter(|e| e.status == Status::Ok).count() >= 30,
            "too little traffic"
        );
        assert!(h.keys().iter().all(|k| h.initial.get(*k) == Some(&0)));
    }
    assert!(
        a.keys().is_disjoint(&b.keys()),
        "the second run reused the first run's keys"
    );
    for path in [&first, &second] {
        let out = check(path);
        assert_eq!(
            out.code,
            Some(0),
            "{}: {}\n{}",
            path.display(),
            out.stdout,
            out.stderr
        );
    }
}
