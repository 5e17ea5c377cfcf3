//! End to end on loopback members: the `caplab` workload against a 3-member Raft cluster while
//! its leader is partitioned away and later a leader is killed (SIGKILL) and restarted; the
//! recorded history must check as linearizable, and the report must render.

mod common;

use std::process::Stdio;
use std::time::Instant;

use caplab_checker::{History, Status};
use common::{caplab, interrupt, wait_for_exit, Cluster};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn raft_stays_linearizable_through_a_leader_partition_and_a_leader_kill() {
    let mut c = Cluster::start(3, &[]).await;
    let all = [1, 2, 3];
    let first = c.wait_for_leader(&all, None).await;
    let dir = c.dir.path().to_path_buf();
    let history_path = dir.join("history.json");
    let log = std::fs::File::create(dir.join("workload.log")).expect("log");
    let started = Instant::now();
    let since = || u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut workload = caplab()
        .args(["workload", "--addr", &c.client_addrs()])
        .args(["--clients", "6", "--keys", "3", "--rate", "150"])
        .args(["--mix", "read=40,write=35,cas=25"])
        .args(["--duration", "600", "--seed", "7", "--timeout-ms", "8000"])
        .arg("--out")
        .arg(&history_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn caplab workload");
    let mut events = Vec::new();

    // Some undisturbed traffic first.
    c.wait_for_commits(first, 30).await;

    // Cut the leader off from the others (telling it alone cuts the links both ways).
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != first).collect();
    let cut = since();
    c.set_faults(first, json!({"partition": {"peers": others}}))
        .await;
    let second = c.wait_for_leader(&others, Some(first)).await;
    c.wait_for_commits(second, 30).await;
    c.set_faults(first, json!({})).await;
    events
        .push(json!({"name": format!("member {first} partitioned"), "start": cut, "end": since()}));
    c.wait_for_leader(&all, None).await;

    // Kill whoever leads now, let the others carry on, then bring it back.
    let victim = c.wait_for_leader(&all, None).await;
    let survivors: Vec<u64> = all.iter().copied().filter(|id| *id != victim).collect();
    let killed = since();
    c.kill(victim);
    let third = c.wait_for_leader(&survivors, Some(victim)).await;
    c.wait_for_commits(third, 30).await;
    c.restart(victim);
    events
        .push(json!({"name": format!("member {victim} killed"), "start": killed, "end": since()}));
    c.wait_for_leader(&all, None).await;
    let after_restart = since();
    let leader = c.wait_for_leader(&all, None).await;
    c.wait_for_commits(leader, 30).await;

    interrupt(&workload);
    let status = wait_for_exit(&mut workload, "the workload").await;
    let workload_log = std::fs::read_to_string(dir.join("workload.log")).unwrap_or_default();
    assert!(status.success(), "workload failed: {workload_log}");

    let text = std::fs::read_to_string(&history_path).expect("history written");
    let history = History::from_json(&text).expect("a valid history");
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

    let check = caplab()
        .arg("check")
        .arg(&history_path)
        .output()
        .expect("run caplab check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    println!("{stdout}");
    assert_eq!(
        check.status.code(),
        Some(0),
        "not linearizable?\n{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("linearizable"));

    let events_path = dir.join("events.json");
    std::fs::write(&events_path, serde_json::to_string(&events).expect("json")).expect("write");
    let report_path = dir.join("report.html");
    let report = caplab()
        .arg("report")
        .arg(&history_path)
        .arg("-o")
        .arg(&report_path)
        .arg("--events")
        .arg(&events_path)
        .output()
        .expect("run caplab report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let html = std::fs::read_to_string(&report_path).expect("report written");
    for p in history.processes() {
        assert!(
            html.contains(&format!("data-process=\"{p}\"")),
            "lane {p} missing"
        );
    }
    assert!(html.contains("partitioned") && html.contains("killed"));
    assert!(!html.contains("violation\" data-entry"));
}
