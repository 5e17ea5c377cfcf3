//! When things go wrong: failed reconciles back off per cluster, member pods that cannot
//! start are named in status with one Warning Event each, and the Events say what happened
//! in the replication mode's words. Against the mocked API server and stand-in members
//! (`mock/mod.rs`).

mod mock;

use std::time::{Duration, Instant};

use caplab_operator::crd::RegisterCluster;
use kube::runtime::controller::Action;

use mock::{cluster, events, Harness, World, NAME, NS};

const UID: &str = "11111111-2222-3333-4444-555555555555";

fn demo(replicas: i32, extra_spec: &str) -> RegisterCluster {
    cluster(&format!(
        "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: {NAME}, namespace: {NS}, uid: {UID}, generation: 1}}
spec:
  replicas: {replicas}
{extra_spec}"
    ))
}

/// The requeue delay of `a` in whole seconds, `None` for "wait for a change".
fn requeue(a: &Action) -> Option<u64> {
    // `Action` has no accessor: read its Debug form `Action { requeue_after: Some(5s) }`.
    let d = format!("{a:?}");
    let inner = d.split("Some(").nth(1)?.split(')').next()?;
    Some(inner.trim_end_matches('s').parse().expect("whole seconds"))
}

/// Waits (up to 30 s) until the operator has published an Event with `reason`; returns every
/// Event seen by then as (type, reason, note).
async fn wait_for_event(h: &Harness, reason: &str) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        seen.extend(events(&h.take_log()));
        if seen.iter().any(|e| e.1 == reason) {
            return seen;
        }
        assert!(Instant::now() < deadline, "no {reason} Event in {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ back-off

#[tokio::test]
async fn failed_reconciles_back_off_per_cluster_and_a_success_resets_it() {
    let rc = demo(3, "");
    let h = Harness::start(World {
        rc: Some(rc),
        pod_apply_fails: Some(503),
        ..World::default()
    })
    .await;
    let mut waits = Vec::new();
    for _ in 0..8 {
        let err = h.reconcile().await.expect_err("the pod apply fails");
        waits.push(requeue(&h.error_policy(&err)));
    }
    let secs = [5, 10, 20, 40, 80, 160, 300, 300].map(Some);
    assert_eq!(waits, secs, "5 s doubling to 5 min");

    h.world().pod_apply_fails = None;
    h.reconcile().await.expect("the API server answers again");
    h.world().pod_apply_fails = Some(503);
    let err = h.reconcile().await.expect_err("fails again");
    assert_eq!(
        requeue(&h.error_policy(&err)),
        Some(5),
        "a success resets the back-off"
    );
}

#[tokio::test]
async fn an_object_the_api_server_refuses_as_invalid_waits_for_a_change_with_one_warning() {
    let rc = demo(3, "");
    let h = Harness::start(World {
        rc: Some(rc),
        pod_apply_fails: Some(422),
        ..World::default()
    })
    .await;
    let err = h.reconcile().await.expect_err("the pod is refused");
    assert_eq!(requeue(&h.error_policy(&err)), None, "no retry loop");
    let seen = wait_for_event(&h, "ReconcileFailed").await;
    let failed: Vec<_> = seen.iter().filter(|e| e.1 == "ReconcileFailed").collect();
    assert_eq!(failed.len(), 1, "{seen:?}");
    assert_eq!(failed[0].0, "Warning");
    assert!(
        failed[0].2.contains("is invalid") && failed[0].2.contains("fix the spec"),
        "{}",
        failed[0].2
    );

    // The same refusal again (a pod changed, say): not announced again, still not retried.
    let err = h.reconcile().await.expect_err("refused again");
    assert_eq!(requeue(&h.error_policy(&err)), None);
    tokio::task::yield_now().await;
    let again = events(&h.take_log());
    assert!(again.iter().all(|e| e.1 != "ReconcileFailed"), "{again:?}");
}
