//! End to end on loopback members, asynchronous replication: a workload runs while a secondary
//! is cut off from the primary (the primary keeps acknowledging writes), then that lagging
//! secondary is promoted. Acknowledged writes are lost, reads go back in time, and the checker
//! must find the violation and the report must show it.

mod common;

use std::time::Instant;

use caplab_checker::Status;
use common::{check, report, wait_until, Workload};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn async_failover_to_a_lagging_secondary_is_caught_by_the_checker() {
    let c = common::start(3, &["--replication", "async"]).await;
    wait_until("member 1 to be the primary", || async {
        (c.status(1).await?["role"] == "primary").then_some(())
    })
    .await;
    let dir = c.dir.path().to_path_buf();
    let started = Instant::now();
    let since = || u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    // One key, mostly reads, clients that stay with their member, reads served by whichever
    // member is asked: while 3 is cut off its clients read stale values the primary has long
    // overwritten, and after the failover everyone sees the acknowledged writes disappear.
    // (With linearizable reads the failover alone shows the loss only when a read reaches the
    // promoted member before the next write does: most runs, not all.)
    let workload = Workload::start(
        &c,
        &[
            &["--clients", "12", "--keys", "1", "--rate", "300"],
            &["--mix", "read=90,write=5,cas=5", "--sticky"],
            &["--consistency", "local"],
            &["--duration", "600", "--seed", "11", "--timeout-ms", "8000"],
        ],
    );
    let history_path = workload.history_path.clone();

    c.wait_for_commits(1, 30).await;
    // Cut secondary 3 off: the primary keeps acknowledging writes it cannot replicate there.
    let cut = since();
    c.set_faults(1, json!({"partition": {"peers": [3]}})).await;
    c.wait_for_commits(1, 30).await;
    // Make sure 3 really lags (else there is nothing to lose and the test proves nothing).
    wait_until(
        "secondary 3 to lag 20 entries behind the primary",
        || async {
            let primary = c.status(1).await?["commitIndex"].as_u64()?;
            let secondary = c.status(3).await?["appliedIndex"].as_u64()?;
            (primary >= secondary + 20).then_some(())
        },
    )
    .await;
    // Fail over to the lagging secondary and point the others at it.
    let promoted = since();
    c.admin_ok(3, Method::POST, "/v1/admin/promote", json!({}))
        .await;
    let addr = c.members[&3].peer.clone();
    for id in [1, 2] {
        c.admin_ok(
            id,
            Method::PUT,
            "/v1/admin/primary",
            json!({"id": 3, "addr": addr}),
        )
        .await;
    }
    c.set_faults(1, json!({})).await;
    let healed = since();
    c.wait_for_commits(3, 30).await;

    let (history, workload_log) = workload.stop().await;
    let ok = history
        .entries
        .iter()
        .filter(|e| e.status == Status::Ok)
        .count();
    println!(
        "history: {} operations, {ok} ok\n{workload_log}",
        history.entries.len()
    );

    if let Some(keep) = std::env::var_os("CAPLAB_E2E_KEEP") {
        let keep = std::path::PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&history_path, keep.join("history.json"));
        let _ = std::fs::write(
            keep.join("times.txt"),
            format!("cut {cut} promoted {promoted} healed {healed}\n"),
        );
    }
    let check = check(&history_path);
    println!("{}", check.stdout);
    assert_eq!(
        check.code,
        Some(1),
        "the lost writes went unnoticed:\n{}",
        check.stdout
    );
    assert!(check.stdout.contains("NOT linearizable"));

    let events = json!([
        {"name": "secondary 3 partitioned", "start": cut, "end": healed},
        {"name": "3 promoted", "start": promoted, "end": healed},
    ]);
    let events_path = dir.join("events.json");
    std::fs::write(&events_path, events.to_string()).expect("write");
    let report_path = dir.join("report.html");
    let html = report(&history_path, &report_path, Some(&events_path));
    assert!(html.contains("NOT linearizable"));
    assert!(
        html.contains("violation\" data-entry="),
        "no operation highlighted"
    );
    for p in history.processes() {
        assert!(
            html.contains(&format!("data-process=\"{p}\"")),
            "lane {p} missing"
        );
    }
    // Keep the evidence for a person to look at when asked to.
    if let Some(keep) = std::env::var_os("CAPLAB_E2E_KEEP") {
        let _ = std::fs::copy(
            &report_path,
            std::path::PathBuf::from(keep).join("report.html"),
        );
    }
}
