use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

/// A pod with this `status` (its wire form).
fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "demo-1", "uid": "u1"}, "status": status}))
        .expect("a pod")
}

fn container(state: serde_json::Value) -> Pod {
    pod(json!({"phase": "Pending", "containerStatuses": [{
        "name": "member", "image": "caplab/node:x", "imageID": "", "ready": false,
        "restartCount": 0, "state": state
    }]}))
}

fn unschedulable(message: &str) -> Pod {
    pod(json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message
    }]}))
}

#[test]
fn a_container_that_waits_for_a_reason_says_it_and_one_on_its_way_up_does_not() {
    let pull = container(json!({"waiting": {"reason": "ImagePullBackOff",
        "message": "Back-off pulling image \"caplab/node:x\""}}));
    let w = waiting(&pull).expect("waits");
    assert_eq!(w.reason, "ImagePullBackOff");
    assert_eq!(
        w.to_string(),
        "ImagePullBackOff: Back-off pulling image \"caplab/node:x\""
    );
    for reason in STARTING {
        assert_eq!(
            waiting(&container(json!({"waiting": {"reason": reason}}))),
            None
        );
    }
    let running = container(json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}));
    assert_eq!(waiting(&running), None);
    assert_eq!(waiting(&pod(json!({"phase": "Pending"}))), None);
}

#[test]
fn an_unschedulable_pod_says_what_the_scheduler_said() {
    let w = waiting(&unschedulable(
        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.",
    ))
    .expect("waits");
    assert_eq!(w.reason, "Unschedulable");
    let scheduled = pod(json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "True"
    }]}));
    assert_eq!(waiting(&scheduled), None);
}

#[test]
fn member_notes_name_the_pod_the_reason_and_the_fix() {
    let pull = waiting(&container(json!({"waiting": {"reason": "ErrImagePull",
        "message": "image caplab/node:x not found"}})))
    .expect("waits");
    assert_eq!(
        pull.member_note("demo-1", None),
        "pod demo-1 cannot start: ErrImagePull (image caplab/node:x not found); fix spec.image \
         or load the image onto the nodes (kind load docker-image, minikube image load)"
    );
    let crash = waiting(&container(
        json!({"waiting": {"reason": "CrashLoopBackOff"}}),
    ))
    .expect("waits");
    assert!(crash
        .member_note("demo-1", None)
        .ends_with("kubectl logs demo-1 --previous"));
    let claim = waiting(&unschedulable(
        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.",
    ))
    .expect("waits");
    let storage = Storage {
        size: "1Gi".into(),
        storage_class_name: Some("fast".into()),
    };
    let note = claim.member_note("demo-1", Some(&storage));
    assert!(note.contains("StorageClass fast"), "{note}");
    assert!(claim
        .member_note("demo-1", None)
        .contains("no default StorageClass"));
    let other = waiting(&container(
        json!({"waiting": {"reason": "CreateContainerConfigError",
        "message": "secret \"x\" not found"}}),
    ))
    .expect("waits");
    assert!(other
        .member_note("demo-1", None)
        .ends_with("see kubectl describe pod demo-1"));
}

#[test]
fn a_pod_is_announced_once_per_kind_of_trouble_and_its_replacement_anew() {
    let a = Announced::default();
    let live = |uids: &[&str]| uids.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>();
    let w = |reason: &str| Waiting {
        reason: reason.into(),
        message: None,
    };
    let (err, backoff, crash) = (
        w("ErrImagePull"),
        w("ImagePullBackOff"),
        w("CrashLoopBackOff"),
    );
    assert_eq!(a.news("c", &live(&["u1"]), &[("u1".into(), &err)]), [0]);
    // The kubelet alternates the two pull reasons: one kind.
    assert!(a
        .news("c", &live(&["u1"]), &[("u1".into(), &backoff)])
        .is_empty());
    assert_eq!(a.news("c", &live(&["u1"]), &[("u1".into(), &crash)]), [0]);
    assert_eq!(a.news("other", &live(&["u1"]), &[("u1".into(), &err)]), [0]);
    // Gone and back under the same uid (cannot happen, but forgetting is what matters).
    assert!(a.news("c", &live(&[]), &[]).is_empty());
    assert_eq!(a.news("c", &live(&["u1"]), &[("u1".into(), &err)]), [0]);
}

#[test]
fn the_pods_of_a_deleted_cluster_are_forgotten() {
    let a = Announced::default();
    let uids = BTreeSet::from(["u1".to_string()]);
    let err = Waiting {
        reason: "ErrImagePull".into(),
        message: None,
    };
    for cluster in ["gone", "live"] {
        assert_eq!(a.news(cluster, &uids, &[("u1".into(), &err)]), [0]);
    }
    a.retain(&BTreeSet::from(["live".to_string()]));
    let clusters: Vec<String> = a.0.lock().expect("lock").keys().cloned().collect();
    assert_eq!(clusters, ["live"], "only the live cluster is remembered");
    assert!(
        a.news("live", &uids, &[("u1".into(), &err)]).is_empty(),
        "the live cluster's announcements are kept"
    );
}
