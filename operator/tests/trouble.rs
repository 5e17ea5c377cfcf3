//! When things go wrong: failed reconciles back off per cluster, member pods that cannot
//! start are named in status with one Warning Event each, and the Events say what happened
//! in the replication mode's words. Against the mocked API server and stand-in members
//! (`mock/mod.rs`).

mod mock;

use std::time::{Duration, Instant};

use caplab_operator::crd::RegisterCluster;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use mock::{
    blank, condition, demo, events, published_events, running_pod, status_patch, Harness, World,
};

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
async fn a_cluster_deleted_while_failing_is_forgotten_and_a_live_one_keeps_its_back_off() {
    let h = Harness::start(World {
        rc: Some(demo(3, "")),
        pod_apply_fails: Some(503),
        ..World::default()
    })
    .await;
    let fail = || async {
        let err = h.reconcile().await.expect_err("the pod apply fails");
        requeue(&h.error_policy(&err))
    };
    assert_eq!((fail().await, fail().await), (Some(5), Some(10)));
    h.watched(true);
    assert_eq!(fail().await, Some(20), "a live cluster keeps its count");
    h.watched(false);
    assert_eq!(
        fail().await,
        Some(5),
        "the deleted cluster's count was forgotten"
    );
}

#[tokio::test]
async fn an_object_refused_at_a_field_the_spec_gave_waits_for_a_change_with_one_warning() {
    let rc = demo(3, "  image: \"Not An Image\"");
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
        failed[0].2.contains("refused pod demo-0 at spec.image")
            && failed[0].2.contains("is invalid")
            && failed[0]
                .2
                .contains("fix spec.image in the RegisterCluster"),
        "{}",
        failed[0].2
    );

    // The same refusal again (a pod changed, say): not announced again, still not retried.
    let err = h.reconcile().await.expect_err("refused again");
    assert_eq!(requeue(&h.error_policy(&err)), None);
    tokio::task::yield_now().await;
    let again = published_events(&h.take_log());
    assert!(again.iter().all(|e| e.1 != "ReconcileFailed"), "{again:?}");
}

/// Reconciles `world` twice, failing each time: the operator's refusal is retried with the
/// normal back-off (5 s, then 10 s) and no `ReconcileFailed` blames the spec.
async fn refused_twice_and_retried(world: World) {
    let h = Harness::start(world).await;
    for secs in [5, 10] {
        let err = h.reconcile().await.expect_err("refused");
        assert_eq!(requeue(&h.error_policy(&err)), Some(secs), "{err}");
    }
    tokio::task::yield_now().await;
    let seen = published_events(&h.take_log());
    assert!(seen.iter().all(|e| e.1 != "ReconcileFailed"), "{seen:?}");
}

#[tokio::test]
async fn a_refusal_of_the_operators_own_status_patch_is_retried_not_blamed_on_the_spec() {
    let rc = demo(3, "");
    let mut world = World::serving(rc, (0..3).map(|o| (o, blank(u64::from(o) + 1))).collect());
    world.status_patch_fails = Some(422);
    refused_twice_and_retried(world).await;
}

#[tokio::test]
async fn a_pod_refused_at_a_field_the_operator_computed_is_retried_not_blamed_on_the_spec() {
    // No spec.image: the image is the operator's own --node-image.
    for field in [
        "spec.containers[0].image",
        "spec.containers[0].imagePullPolicy",
    ] {
        refused_twice_and_retried(World {
            rc: Some(demo(3, "")),
            pod_apply_fails: Some(422),
            invalid_field: Some(field),
            ..World::default()
        })
        .await;
    }
}

/// spec.storage changed after the claims were made: a member pod created again goes on its
/// existing claim, which keeps the class and size it was made with and its member id (a
/// claim's spec is immutable: applying the new ones would be refused at every pass, with no
/// Event saying why).
#[tokio::test]
async fn a_member_pod_created_again_keeps_its_existing_claim_as_it_is() {
    let before = demo(3, "  storage: {size: 64Mi, storageClassName: standard}");
    let claim = caplab_operator::resources::member_pvc(&before, 2, 7).expect("a claim");
    let log = reconcile_missing_demo_2(Some(serde_json::to_value(&claim).expect("json"))).await;
    let applied = patched(&log);
    assert!(
        !applied
            .iter()
            .any(|p| p.contains("/persistentvolumeclaims/data-demo")),
        "{applied:?}"
    );
    assert!(
        applied.iter().any(|p| p.ends_with("/pods/demo-2")),
        "{applied:?}"
    );
    let created: Vec<_> = events(&log)
        .into_iter()
        .filter(|e| e.1 == "MemberCreated")
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].2, "created pod demo-2 as member 7");
}

/// A missing claim is still made, with the pod.
#[tokio::test]
async fn a_missing_member_claim_is_made_with_its_pod() {
    let applied = patched(&reconcile_missing_demo_2(None).await);
    for made in ["/persistentvolumeclaims/data-demo-2", "/pods/demo-2"] {
        assert!(applied.iter().any(|p| p.ends_with(made)), "{applied:?}");
    }
}

/// A claim being deleted (by hand) would take the new pod's data with it and leave the pod
/// waiting for a claim that never comes back: the pod is made once the claim is gone.
#[tokio::test]
async fn a_claim_being_deleted_is_waited_for_before_its_pod_is_made() {
    let before = demo(3, "  storage: {size: 64Mi, storageClassName: standard}");
    let mut claim = caplab_operator::resources::member_pvc(&before, 2, 7).expect("a claim");
    claim.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let log = reconcile_missing_demo_2(Some(serde_json::to_value(&claim).expect("json"))).await;
    let applied = patched(&log);
    assert!(
        !applied.iter().any(|p| p.ends_with("/pods/demo-2")),
        "{applied:?}"
    );
    let (_, _, message) = condition(&status_patch(&log), "Progressing");
    assert!(
        message.contains("waiting for claim data-demo-2 to be deleted"),
        "{message}"
    );
}

/// One reconcile of a 3-member cluster with storage whose demo-2 pod is missing, with
/// `claim` stored as data-demo-2 (or none).
async fn reconcile_missing_demo_2(claim: Option<Value>) -> Vec<mock::Call> {
    let rc = demo(3, "  storage: {size: 1Gi, storageClassName: fast}");
    let mut world = World::serving(rc, (0..2).map(|o| (o, blank(u64::from(o) + 1))).collect());
    if let Some(claim) = claim {
        world.claims.insert("data-demo-2".into(), claim);
    }
    let h = Harness::start(world).await;
    h.reconcile().await.expect("reconcile");
    h.take_log()
}

/// The paths of the PATCH (server-side apply) calls in `log`.
fn patched(log: &[mock::Call]) -> Vec<String> {
    mock::api_calls(log)
        .into_iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| c.path.clone())
        .collect()
}

// ------------------------------------------------------------------ pods that cannot start

/// Member pod `ordinal` as the kubelet or scheduler leaves it when it cannot start: `status`
/// in its wire form.
fn stuck_pod(rc: &RegisterCluster, ordinal: u32, status: Value) -> Pod {
    let mut pod = running_pod(rc, ordinal, u64::from(ordinal) + 1);
    pod.status = Some(serde_json::from_value(status).expect("pod status"));
    pod
}

fn image_waits(reason: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{
        "name": "member", "image": "caplab/node:x", "imageID": "", "ready": false,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason,
                              "message": "image caplab/node:x not found"}}
    }]})
}

/// The world of `rc` whose pods 0 and 1 run (their members not initialised yet) and whose
/// pod 2 is `pod2`.
fn two_running_and(rc: RegisterCluster, pod2: Pod) -> World {
    let mut w = World::serving(rc, (0..2).map(|o| (o, blank(u64::from(o) + 1))).collect());
    w.pods.push(pod2);
    w
}

fn cannot_start_events(log: &[mock::Call]) -> Vec<(String, String, String)> {
    published_events(log)
        .into_iter()
        .filter(|e| e.1 == "MemberCannotStart")
        .collect()
}

#[tokio::test]
async fn a_member_pod_whose_image_cannot_be_pulled_is_named_in_status_with_one_warning() {
    let rc = demo(3, "");
    let pod2 = stuck_pod(&rc, 2, image_waits("ErrImagePull"));
    let h = Harness::start(two_running_and(rc, pod2)).await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let (status, reason, message) = condition(&status_patch(&log), "Progressing");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Reconciling"));
    let note = "pod demo-2 cannot start: ErrImagePull (image caplab/node:x not found); fix \
                spec.image or load the image";
    assert!(message.contains(note), "{message}");
    let warned = cannot_start_events(&log);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].0, "Warning");
    assert!(warned[0].2.starts_with(note), "{}", warned[0].2);

    // The kubelet backs off and tries again: the same trouble, not announced again.
    for reason in ["ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"] {
        h.world().pods[2] = stuck_pod(&demo(3, ""), 2, image_waits(reason));
        h.reconcile().await.expect("reconcile");
        let log = h.take_log();
        assert_eq!(cannot_start_events(&log), [], "after {reason}");
        let (_, _, message) = condition(&status_patch(&log), "Progressing");
        assert!(
            message.contains(&format!("pod demo-2 cannot start: {reason}")),
            "{message}"
        );
    }

    // A new pod (another uid) with the same trouble is announced again.
    let mut replaced = stuck_pod(&demo(3, ""), 2, image_waits("ErrImagePull"));
    replaced.metadata.uid = Some("pod-uid-2-new".into());
    h.world().pods[2] = replaced;
    h.reconcile().await.expect("reconcile");
    assert_eq!(cannot_start_events(&h.take_log()).len(), 1);
}

#[tokio::test]
async fn a_member_pod_whose_claim_has_no_storage_class_says_which_class_is_missing() {
    let rc = demo(3, "  storage: {size: 1Gi, storageClassName: fast}");
    let unschedulable = json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."
    }]});
    let pod2 = stuck_pod(&rc, 2, unschedulable);
    let h = Harness::start(two_running_and(rc, pod2)).await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let (_, _, message) = condition(&status_patch(&log), "Progressing");
    assert!(
        message.contains("pod demo-2 cannot start: Unschedulable (0/1 nodes are available"),
        "{message}"
    );
    assert!(
        message.contains("check that StorageClass fast (spec.storage.storageClassName) exists"),
        "{message}"
    );
    assert_eq!(cannot_start_events(&log).len(), 1);
}

#[tokio::test]
async fn a_crash_looping_member_pod_points_at_its_previous_logs() {
    let rc = demo(3, "");
    let crash = json!({"phase": "Running", "podIP": "127.0.0.3", "containerStatuses": [{
        "name": "member", "image": "caplab/node:test", "imageID": "", "ready": false,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 1m20s restarting failed container"}}
    }]});
    let pod2 = stuck_pod(&rc, 2, crash);
    let h = Harness::start(two_running_and(rc, pod2)).await;

    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let warned = cannot_start_events(&log);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0]
            .2
            .starts_with("pod demo-2 cannot start: CrashLoopBackOff (back-off 1m20s")
            && warned[0].2.ends_with("kubectl logs demo-2 --previous"),
        "{}",
        warned[0].2
    );
}
