//! Unit tests of [`crate::experiment`]: validation of `spec.workload`, the run's identity,
//! the Job and its RBAC, and the status a finished run leaves.

use super::*;
use crate::crd::{ExperimentPhase, FaultWindow, Replication};
use crate::resources::LABEL_CLUSTER;
use crate::validation;

const SPEC: &str = "apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: demo, namespace: test, uid: u1}
spec:
  replicas: 3
  replication: async
  workload: {clients: 8, durationSeconds: 60, keys: 3, mix: {read: 50, write: 40, cas: 10}}
  faults:
    - {name: cut, kind: partition, groups: [[leader], [followers]], startAfterSeconds: 10, durationSeconds: 20}
";

fn cluster(edit: impl FnOnce(&mut RegisterCluster)) -> RegisterCluster {
    let mut rc: RegisterCluster = serde_yaml::from_str(SPEC).expect("RegisterCluster");
    edit(&mut rc);
    rc
}

fn workload(rc: &RegisterCluster) -> &WorkloadSpec {
    rc.spec.workload.as_ref().expect("a workload")
}

#[test]
fn a_good_workload_is_valid() {
    assert_eq!(validation::validate(&cluster(|_| {})), Vec::<String>::new());
}

#[test]
fn bad_workloads_say_how_to_fix_them() {
    let rc = cluster(|rc| {
        let w = rc.spec.workload.as_mut().expect("workload");
        w.clients = 0;
        w.duration_seconds = 7200;
        w.mix.cas = 20;
        w.run_id = Some("no spaces".into());
    });
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("workload.clients must be 1-64 (got 0)"),
        "{all}"
    );
    assert!(
        all.contains("durationSeconds must be 1-3600 (got 7200)"),
        "{all}"
    );
    assert!(
        all.contains("must sum to 100 percent (read 50 + write 40 + cas 20 = 110)"),
        "{all}"
    );
    assert!(all.contains("runId \"no spaces\""), "{all}");
}

#[test]
fn a_fault_starting_after_the_workload_ends_is_refused() {
    let rc = cluster(|rc| rc.spec.faults[0].start_after_seconds = Some(60));
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains(
            "fault \"cut\" starts 60 s after the workload's start, when its 60 s are over"
        ),
        "{all}"
    );
}

#[test]
fn a_changed_workload_or_run_id_is_a_new_run_and_job() {
    let rc = cluster(|_| {});
    let first = run_of("demo", workload(&rc));
    assert_eq!(
        first,
        run_of("demo", workload(&rc)),
        "deterministic: re-adopted by name"
    );
    assert!(first.job.starts_with("demo-run-"), "{first:?}");
    assert_eq!(first.id.len(), 8);
    let longer = cluster(|rc| rc.spec.workload.as_mut().expect("w").duration_seconds = 90);
    assert_ne!(run_of("demo", workload(&longer)).job, first.job);
    let named = cluster(|rc| rc.spec.workload.as_mut().expect("w").run_id = Some("r2".into()));
    let r2 = run_of("demo", workload(&named));
    assert_eq!(r2.id, "r2");
    assert_ne!(r2.job, first.job);
    let long = run_of(&"a".repeat(61), workload(&rc));
    assert!(long.job.len() <= 63, "{}", long.job);
}

#[test]
fn the_job_is_owned_bounded_and_restricted() {
    let rc = cluster(|_| {});
    let run = run_of("demo", workload(&rc));
    let job = job(&rc, workload(&rc), &run, "caplab/cli:0.1.0");
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    // Member pods are selected by caplab.dev/cluster: the run's pod must not look like one.
    let pod_labels = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    assert!(!pod_labels.contains_key(LABEL_CLUSTER), "{pod_labels:?}");
    assert_eq!(
        pod_labels.get(LABEL_EXPERIMENT).map(String::as_str),
        Some("demo")
    );
    assert_eq!(owner.kind, "RegisterCluster");
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(spec.backoff_limit, Some(1));
    assert_eq!(spec.active_deadline_seconds, Some(60 + 5 + 600));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("demo-experiment"));
    let sc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(sc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let csc = c.security_context.as_ref().expect("container security");
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    let args = c.args.as_ref().expect("args").join(" ");
    assert!(args.starts_with("experiment --cluster=demo"), "{args}");
    assert!(args.contains("--mix=read=50,write=40,cas=10"), "{args}");
    assert!(args.contains("--rate=0"), "{args}");
}

#[test]
fn the_runner_may_only_read_its_cluster_and_proxy_to_its_members() {
    let role = role(&cluster(|_| {}));
    let rules = role.rules.expect("rules");
    for r in &rules {
        let names = r
            .resource_names
            .as_ref()
            .expect("every rule names its objects");
        assert!(
            names.iter().all(|n| n == "demo" || n.starts_with("demo-")),
            "{names:?}"
        );
        assert!(!r
            .verbs
            .iter()
            .any(|v| v == "*" || v == "delete" || v == "list"));
    }
    let proxy = rules
        .iter()
        .find(|r| r.resources == Some(vec!["pods/proxy".into()]))
        .expect("a pods/proxy rule");
    let names = proxy.resource_names.clone().unwrap_or_default();
    assert!(names.contains(&"demo-0:8080".to_string()), "{names:?}");
}

#[test]
fn a_finished_run_records_its_verdict_and_a_failed_one_why() {
    let message = r#"{"runId": "r1", "linearizable": false, "sequential": false,
        "converged": true, "strongest": "converged",
        "anomalies": ["the write of 9 acknowledged at 3.100 s is never seen again (lost acknowledged write)"],
        "anomalyCounts": {"lost-acknowledged-write": 124},
        "operations": {"ok": 1200, "failed": 4, "unknown": 2}, "throughput": 20.0,
        "dir": "/results/r1"}"#;
    let report = parse_report(message).expect("a report");
    let mut ex = new_run(
        None,
        &Run {
            id: "r1".into(),
            job: "demo-run-1".into(),
        },
        (OperationMix::default(), None),
    );
    finish(&mut ex, report.clone(), "2024-01-01T00:01:10Z", "demo");
    assert_eq!(ex.phase, Some(ExperimentPhase::Done));
    assert_eq!(ex.summary.as_deref(), Some("NOT linearizable (converged)"));
    let note = verdict_note(ex.verdict.as_ref().expect("verdict"));
    assert!(
        note.contains(
            "run r1: NOT linearizable (converged): 124 acknowledged writes lost; first: the \
             write of 9"
        ),
        "{note}"
    );
    assert!(
        note.contains("(1200 ok, 4 failed, 2 unknown operations)"),
        "{note}"
    );
    assert!(ex
        .artifacts
        .as_deref()
        .unwrap_or("")
        .contains("PVC demo-results"));

    // The next run keeps the verdict until its own replaces it.
    let next = new_run(
        Some(&ex),
        &Run {
            id: "r2".into(),
            job: "demo-run-2".into(),
        },
        (OperationMix::default(), None),
    );
    assert_eq!(next.phase, Some(ExperimentPhase::Pending));
    assert_eq!(next.verdict, ex.verdict);

    let failed = parse_report(r#"{"runId": "r2", "error": "cluster not ready after 60 s"}"#)
        .expect("a report");
    let mut ex2 = next.clone();
    finish(&mut ex2, failed, "2024-01-01T00:02:00Z", "demo");
    assert_eq!(ex2.phase, Some(ExperimentPhase::Failed));
    assert_eq!(ex2.reason.as_deref(), Some("cluster not ready after 60 s"));
    assert_eq!(
        ex2.verdict, ex.verdict,
        "a failed run leaves the last verdict"
    );
    assert!(parse_report("OOMKilled").is_none());
}

#[test]
fn quorum_runs_drop_cas_and_say_so() {
    let mix = OperationMix {
        read: 50,
        write: 40,
        cas: 10,
    };
    let (used, note) = effective_mix(Replication::Quorum, &mix);
    assert_eq!(
        used,
        OperationMix {
            read: 56,
            write: 44,
            cas: 0
        }
    );
    let note = note.expect("a note");
    assert!(note.contains("cas 10 % dropped"), "{note}");
    assert!(note.contains("read 56 %, write 44 %"), "{note}");
    assert_eq!(effective_mix(Replication::Raft, &mix), (mix.clone(), None));

    let rc = cluster(|rc| rc.spec.replication = Replication::Quorum);
    let run = run_of("demo", workload(&rc));
    let args = runner_args(&rc, workload(&rc), &run).join(" ");
    assert!(args.contains("--mix=read=56,write=44,cas=0"), "{args}");

    let all_cas = cluster(|rc| {
        rc.spec.replication = Replication::Quorum;
        rc.spec.faults.clear();
        rc.spec.workload.as_mut().expect("w").mix = OperationMix {
            read: 0,
            write: 0,
            cas: 100,
        };
    });
    let errs = validation::validate(&all_cas).join("\n");
    assert!(errs.contains("workload.mix is all cas"), "{errs}");
}

#[test]
fn a_finished_run_keeps_the_operators_windows_with_the_jobs_counts() {
    let report = parse_report(
        r#"{"runId": "r1", "linearizable": false, "converged": true,
            "anomalyCounts": {"lost-acknowledged-write": 124},
            "windows": [{"name": "kill", "kind": "crash", "since": "2024-01-01T00:00:36.000Z",
                         "offsetSeconds": 35.0, "availability": 0.4, "throughput": 12.5,
                         "anomalyCounts": {"lost-acknowledged-write": 124}}]}"#,
    )
    .expect("a report");
    let run = Run {
        id: "r1".into(),
        job: "demo-run-1".into(),
    };
    let mut ex = new_run(None, &run, (OperationMix::default(), None));
    ex.windows = vec![FaultWindow {
        name: "kill".into(),
        since: Some("2024-01-01T00:00:36.000Z".into()),
        until: Some("2024-01-01T00:00:48.000Z".into()),
        seen_by_members: Some(true),
        ..FaultWindow::default()
    }];
    finish(&mut ex, report, "2024-01-01T00:01:10Z", "demo");
    let w = &ex.windows[0];
    assert_eq!(w.until.as_deref(), Some("2024-01-01T00:00:48.000Z"));
    assert_eq!(w.throughput, Some(12.5));
    let note = verdict_note(ex.verdict.as_ref().expect("verdict"));
    assert!(
        note.contains("124 acknowledged writes lost during crash kill at 35 s"),
        "{note}"
    );
}

#[test]
fn results_that_could_not_be_kept_say_why() {
    let report = parse_report(
        r#"{"runId": "r1", "linearizable": true, "unkept": "/results/r1 is not writable"}"#,
    )
    .expect("a report");
    let run = Run {
        id: "r1".into(),
        job: "demo-run-1".into(),
    };
    let mut ex = new_run(None, &run, (OperationMix::default(), None));
    finish(&mut ex, report, "2024-01-01T00:01:10Z", "demo");
    assert_eq!(ex.phase, Some(ExperimentPhase::Done));
    assert_eq!(
        ex.artifacts.as_deref(),
        Some("not kept: /results/r1 is not writable")
    );
}
