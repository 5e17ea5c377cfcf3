//! The experiment of `spec.workload` against a mocked API server: the run's Job is created
//! once the cluster is Ready (with its ServiceAccount, Role, RoleBinding and results PVC),
//! its pod's start becomes the run's start (the fault schedule's clock), and its termination
//! message becomes the verdict in `status.experiment`, with Events.

mod mock;

use std::collections::BTreeMap;

use caplab_api::status::Status;
use caplab_operator::crd::RegisterCluster;
use caplab_operator::experiment::run_of;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};
use serde_json::{json, Value};

use mock::{
    api_calls, cluster, events, follower, leader, running_pod, status_patch, token_secret, Harness,
    World, NAME, NS,
};

const SPEC: &str = "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: demo, namespace: test, uid: u-1, generation: 2}
spec:
  replicas: 3
  workload: {clients: 4, durationSeconds: 30, keys: 2, mix: {read: 50, write: 50}}
  faults:
    - {name: cut, kind: partition, groups: [[leader], [followers]], startAfterSeconds: 10, durationSeconds: 5}
";

fn ready(mut rc: RegisterCluster) -> RegisterCluster {
    rc.status = serde_json::from_value(json!({
        "replication": "raft", "phase": "Ready", "bootstrapped": true, "replicas": 3,
        "nextMemberId": 4, "leader": "demo-0", "leaderId": 1, "term": 1, "voters": [1, 2, 3],
    }))
    .expect("status");
    rc
}

fn members() -> BTreeMap<u32, Status> {
    BTreeMap::from([
        (0, leader(1, 1, &[1, 2, 3], &[], 10)),
        (1, follower(2, 1, 1, &[1, 2, 3], 10)),
        (2, follower(3, 1, 1, &[1, 2, 3], 10)),
    ])
}

/// The run's pod, in `state` (a ContainerState's JSON).
fn run_pod(state: Value) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("demo-run-pod".into());
    pod.status = Some(PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            name: "caplab".into(),
            state: Some(serde_json::from_value::<ContainerState>(state).expect("state")),
            ..ContainerStatus::default()
        }]),
        ..PodStatus::default()
    });
    pod
}

#[tokio::test]
async fn a_run_is_a_job_whose_verdict_lands_in_status() {
    let rc = ready(cluster(SPEC));
    let run = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let h = Harness::start(World {
        pods: (0..3)
            .map(|o| running_pod(&rc, o, u64::from(o) + 1))
            .collect(),
        members: members(),
        secret: Some(token_secret(&rc)),
        rc: Some(rc),
        ..World::default()
    })
    .await;

    // 1. Ready: the runner's objects and the Job are applied; faults wait for the run.
    h.reconcile().await.expect("reconcile 1");
    let log = h.take_log();
    let lines: Vec<String> = api_calls(&log).iter().map(|c| c.line()).collect();
    for path in [
        format!("/api/v1/namespaces/{NS}/serviceaccounts/demo-experiment"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/demo-experiment"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/demo-experiment"),
        format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/demo-results"),
        format!("/apis/batch/v1/namespaces/{NS}/jobs/{}", run.job),
    ] {
        assert!(
            lines.contains(&format!("PATCH {path}")),
            "{path} in {lines:#?}"
        );
    }
    let job = h.world().jobs.get(&run.job).cloned().expect("job applied");
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["kind"],
        "RegisterCluster"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "caplab/cli:0.1.0"
    );
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["phase"], "Pending", "{st}");
    assert_eq!(st["experiment"]["runId"], run.id.as_str());
    assert_eq!(st["faults"][0]["state"], "pending");
    assert_eq!(
        st["faults"][0]["message"],
        "waiting for the workload's start"
    );
    assert!(
        events(&log).iter().any(|e| e.1 == "ExperimentStarted"),
        "{:?}",
        events(&log)
    );

    // 2. The run's pod runs: the run started then, and the fault is scheduled from there.
    let started = chrono::Utc::now() - chrono::Duration::seconds(2);
    let at = started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    h.world().job_pods = vec![run_pod(json!({"running": {"startedAt": at}}))];
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["phase"], "Running", "{st}");
    assert_eq!(st["experiment"]["startedAt"], at.as_str());
    let msg = st["faults"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("10 s after the workload's start"), "{msg}");
    assert!(!api_calls(&log)
        .iter()
        .any(|c| c.method == "PATCH" && c.path.contains("/jobs/")));

    // 3. The Job completes: the termination message is the verdict.
    let verdict = json!({"runId": run.id, "linearizable": true, "sequential": true,
        "converged": true, "strongest": "linearizable",
        "operations": {"ok": 300, "failed": 2, "unknown": 1}, "throughput": 10.0});
    h.world().job_pods = vec![run_pod(
        json!({"terminated": {"exitCode": 0, "startedAt": at,
        "message": verdict.to_string()}}),
    )];
    if let Some(j) = h.world().jobs.get_mut(&run.job) {
        j["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    }
    h.reconcile().await.expect("reconcile 3");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["phase"], "Done", "{st}");
    assert_eq!(st["experiment"]["summary"], "linearizable");
    assert_eq!(st["experiment"]["verdict"]["operations"]["ok"], 300);
    let evs = events(&log);
    assert!(
        evs.iter().any(|e| e.1 == "Verdict"
            && e.2
                .contains("linearizable (300 ok, 2 failed, 1 unknown operations)")),
        "{evs:?}"
    );
}

#[tokio::test]
async fn a_failed_job_says_why_and_is_not_retried() {
    let rc = ready(cluster(SPEC));
    let run = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let h = Harness::start(World {
        pods: (0..3).map(|o| running_pod(&rc, o, u64::from(o) + 1)).collect(),
        members: members(),
        secret: Some(token_secret(&rc)),
        jobs: BTreeMap::from([(
            run.job.clone(),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": run.job},
                   "status": {"conditions": [{"type": "Failed", "status": "True",
                   "message": "Job has reached the specified backoff limit"}]}}),
        )]),
        job_pods: vec![run_pod(json!({"terminated": {"exitCode": 2,
            "message": json!({"runId": run.id, "error": "cluster not ready after 60 s"}).to_string()}}))],
        rc: Some(rc),
        ..World::default()
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["phase"], "Failed", "{st}");
    assert_eq!(
        st["experiment"]["reason"],
        "Job has reached the specified backoff limit: cluster not ready after 60 s"
    );
    assert!(events(&log)
        .iter()
        .any(|e| e.0 == "Warning" && e.1 == "ExperimentFailed"));
    // Failed is final: the next pass creates nothing.
    if let Some(rc) = h.world().rc.as_mut() {
        rc.metadata.resource_version = Some("2".into());
    }
    h.reconcile().await.expect("reconcile 2");
    let log = h.take_log();
    assert!(!api_calls(&log).iter().any(|c| c.path.contains("/jobs/")));
}
