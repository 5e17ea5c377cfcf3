//! The experiment of `spec.workload` against a mocked API server: the run's Job is created
//! once the cluster is Ready (with its ServiceAccount, Role, RoleBinding and results PVC),
//! its pod's start becomes the run's start (the fault schedule's clock), and its termination
//! message becomes the verdict in `status.experiment`, with Events.

mod mock;

use std::collections::BTreeMap;

use caplab_api::faults::{FaultSet, PeerFilter};
use caplab_api::status::Status;
use caplab_operator::crd::RegisterCluster;
use caplab_operator::experiment::run_of;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};
use serde_json::{json, Value};

use mock::{
    api_calls, cluster, condition, events, follower, leader, status_patch, Harness, World, NAME, NS,
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
    attempt_pod("demo-run-pod", state)
}

/// One attempt of the run (the Job's pod `name`), in `state`.
fn attempt_pod(name: &str, state: Value) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
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
    let h = Harness::start(World::serving(rc, members())).await;

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
        jobs: BTreeMap::from([(
            run.job.clone(),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": run.job},
                   "status": {"conditions": [{"type": "Failed", "status": "True",
                   "message": "Job has reached the specified backoff limit"}]}}),
        )]),
        job_pods: vec![run_pod(json!({"terminated": {"exitCode": 2,
            "message": json!({"runId": run.id, "error": "cluster not ready after 60 s"}).to_string()}}))],
        ..World::serving(rc, members())
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

/// RFC 3339, whole seconds, `ago` seconds ago.
fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Every member reports a partition in force (as a real member does once it has it).
fn partitioned(world: &mut World) {
    for st in world.members.values_mut() {
        st.faults = FaultSet {
            partition: Some(PeerFilter::default()),
            ..FaultSet::default()
        };
    }
}

#[tokio::test]
async fn an_operator_restart_mid_run_re_adopts_the_job_and_loses_nothing() {
    let rc = ready(cluster(SPEC));
    let run = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let h = Harness::start(World::serving(rc, members())).await;
    h.reconcile().await.expect("job created");
    // The run's pod started 12 s ago: the partition (10 s in) starts now.
    let started = ago(12);
    h.world().job_pods = vec![run_pod(json!({"running": {"startedAt": started}}))];
    h.reconcile().await.expect("fault started");
    partitioned(&mut h.world());
    h.take_log();
    h.reconcile().await.expect("the members report it");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["faults"][0]["state"], "active", "{st}");
    let window = st["experiment"]["windows"][0].clone();
    let fault_since = st["faults"][0]["since"].clone();
    assert_eq!(window["name"], "cut", "{st}");
    assert_eq!(window["seenByMembers"], true);

    // The operator restarts: a new process, nothing in memory, the same cluster.
    let world = {
        let w = h.world();
        World {
            rc: w.rc.clone(),
            pods: w.pods.clone(),
            secret: w.secret.clone(),
            members: w.members.clone(),
            jobs: w.jobs.clone(),
            job_pods: w.job_pods.clone(),
            ..World::default()
        }
    };
    drop(h);
    let h = Harness::start(world).await;
    h.reconcile().await.expect("after the restart");
    let log = h.take_log();
    let writes: Vec<String> = api_calls(&log)
        .iter()
        .filter(|c| c.path.contains("/jobs") && c.method != "GET")
        .map(|c| c.line())
        .collect();
    assert!(
        writes.is_empty(),
        "the Job is found again by its name: {writes:?}"
    );
    let reasons: Vec<String> = events(&log).into_iter().map(|e| e.1).collect();
    assert!(
        !reasons
            .iter()
            .any(|r| r == "ExperimentStarted" || r == "FaultStarted"),
        "{reasons:?}"
    );
    // Nothing changed, so nothing may have been written: read what the cluster holds.
    let st = serde_json::to_value(h.world().rc.as_ref().and_then(|r| r.status.clone()))
        .unwrap_or_default();
    assert_eq!(st["experiment"]["phase"], "Running", "{st}");
    assert_eq!(st["experiment"]["startedAt"], started.as_str());
    assert_eq!(st["experiment"]["windows"][0], window, "the window is kept");
    assert_eq!(
        st["faults"][0]["since"], fault_since,
        "the fault is not restarted"
    );

    // The run ends under the new operator: the verdict lands as if nothing happened.
    let verdict = json!({"runId": run.id, "linearizable": true, "sequential": true,
        "converged": true, "operations": {"ok": 10, "failed": 0, "unknown": 0}});
    h.world().job_pods = vec![run_pod(json!({"terminated": {"exitCode": 0,
        "startedAt": started, "message": verdict.to_string()}}))];
    if let Some(j) = h.world().jobs.get_mut(&run.job) {
        j["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    }
    h.reconcile().await.expect("verdict");
    let st = status_patch(&h.take_log());
    assert_eq!(st["experiment"]["phase"], "Done", "{st}");
    assert_eq!(st["experiment"]["windows"][0]["name"], "cut");
}

#[tokio::test]
async fn a_retried_pod_is_a_fresh_attempt_and_its_verdict_counts() {
    let mut rc = ready(cluster(SPEC));
    let run = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let (first, second) = (ago(40), ago(5));
    if let Some(st) = rc.status.as_mut() {
        st.experiment = serde_json::from_value(json!({"phase": "Running", "runId": run.id,
            "job": run.job, "startedAt": first}))
        .ok();
    }
    let failed = attempt_pod(
        "demo-run-a",
        json!({"terminated": {"exitCode": 1, "startedAt": first,
            "message": json!({"runId": run.id, "error": "lost the API server"}).to_string()}}),
    );
    let h = Harness::start(World {
        jobs: BTreeMap::from([(
            run.job.clone(),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": run.job}}),
        )]),
        // The newest attempt first: the order of a list is no promise.
        job_pods: vec![
            attempt_pod("demo-run-b", json!({"running": {"startedAt": second}})),
            failed.clone(),
        ],
        ..World::serving(rc, members())
    })
    .await;
    h.reconcile().await.expect("the retry runs");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["phase"], "Running", "{st}");
    assert_eq!(
        st["experiment"]["startedAt"],
        second.as_str(),
        "the retry's start"
    );
    assert!(!events(&log).iter().any(|e| e.1 == "ExperimentFailed"));

    let verdict = json!({"runId": run.id, "linearizable": true,
        "operations": {"ok": 7, "failed": 0, "unknown": 0}});
    h.world().job_pods = vec![
        attempt_pod(
            "demo-run-b",
            json!({"terminated": {"exitCode": 0, "startedAt": second,
                "message": verdict.to_string()}}),
        ),
        failed,
    ];
    if let Some(j) = h.world().jobs.get_mut(&run.job) {
        j["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    }
    h.reconcile().await.expect("verdict");
    let st = status_patch(&h.take_log());
    assert_eq!(st["experiment"]["phase"], "Done", "{st}");
    assert_eq!(st["experiment"]["verdict"]["operations"]["ok"], 7);
}

#[tokio::test]
async fn an_invalid_workload_is_refused_with_a_condition_and_an_event() {
    let rc = ready(cluster(
        &SPEC.replace("mix: {read: 50, write: 50}", "mix: {read: 50, write: 40}"),
    ));
    let h = Harness::start(World::serving(rc, members())).await;
    h.reconcile().await.expect("reconcile");
    let log = h.take_log();
    let st = status_patch(&log);
    let (valid, _, message) = condition(&st, "SpecValid");
    assert_eq!(valid, "False");
    assert!(
        message.contains("workload.mix must sum to 100 percent (read 50 + write 40 + cas 0 = 90)"),
        "{message}"
    );
    assert!(events(&log)
        .iter()
        .any(|e| e.0 == "Warning" && e.2.contains("workload.mix must sum to 100")));
    assert!(!api_calls(&log).iter().any(|c| c.path.contains("/jobs")));
}

#[tokio::test]
async fn a_pod_that_cannot_start_says_why_while_pending() {
    let rc = ready(cluster(SPEC));
    let run = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let h = Harness::start(World {
        jobs: BTreeMap::from([(
            run.job.clone(),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": run.job}}),
        )]),
        job_pods: vec![run_pod(json!({"waiting": {"reason": "ErrImagePull",
            "message": "pull access denied for caplab/cli"}}))],
        ..World::serving(rc, members())
    })
    .await;
    h.reconcile().await.expect("reconcile");
    let st = status_patch(&h.take_log());
    assert_eq!(st["experiment"]["phase"], "Pending", "{st}");
    let reason = st["experiment"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("its pod waits: ErrImagePull: pull access denied for caplab/cli"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_changed_workload_stops_the_running_job_and_starts_its_own() {
    let rc = ready(cluster(SPEC));
    let old = run_of(NAME, rc.spec.workload.as_ref().expect("workload"));
    let h = Harness::start(World::serving(rc, members())).await;
    h.reconcile().await.expect("the first run's job");
    h.world().job_pods = vec![run_pod(json!({"running": {"startedAt": ago(3)}}))];
    h.reconcile().await.expect("running");
    h.take_log();
    let new = {
        let mut w = h.world();
        let rc = w.rc.as_mut().expect("rc");
        let workload = rc.spec.workload.as_mut().expect("workload");
        workload.run_id = Some("r2".into());
        rc.metadata.generation = Some(3);
        w.job_pods.clear();
        run_of(
            NAME,
            w.rc.as_ref()
                .and_then(|r| r.spec.workload.as_ref())
                .expect("w"),
        )
    };
    h.reconcile().await.expect("the second run");
    let log = h.take_log();
    let lines: Vec<String> = api_calls(&log).iter().map(|c| c.line()).collect();
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    assert!(
        lines.contains(&format!("DELETE {jobs}/{}", old.job)),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("PATCH {jobs}/{}", new.job)),
        "{lines:#?}"
    );
    let evs = events(&log);
    assert!(
        evs.iter().any(|e| e.1 == "ExperimentStopped"
            && e.2.contains("spec.workload changed: run r2 replaces it")),
        "{evs:?}"
    );
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["runId"], "r2", "{st}");
    assert!(!h.world().jobs.contains_key(&old.job));
}

#[tokio::test]
async fn a_changed_workload_under_the_same_run_id_is_a_new_run() {
    let rc = ready(cluster(&SPEC.replace("keys: 2,", "keys: 2, runId: r1,")));
    let h = Harness::start(World::serving(rc, members())).await;
    h.reconcile().await.expect("the first run's job");
    h.world().job_pods = vec![run_pod(json!({"running": {"startedAt": ago(3)}}))];
    h.reconcile().await.expect("running");
    h.take_log();
    let new = {
        let mut w = h.world();
        w.job_pods.clear();
        let rc = w.rc.as_mut().expect("rc");
        let workload = rc.spec.workload.as_mut().expect("workload");
        workload.clients = 8;
        run_of(NAME, workload)
    };
    h.reconcile().await.expect("the changed run");
    let log = h.take_log();
    let st = status_patch(&log);
    assert_eq!(st["experiment"]["job"], new.job.as_str(), "{st}");
    assert_eq!(st["experiment"]["phase"], "Pending", "not failed: {st}");
    assert!(events(&log).iter().any(|e| e.1 == "ExperimentStopped"));
}
