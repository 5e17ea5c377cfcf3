//! The experiment of `spec.workload` (pure): its validation, its run id and Job name, the
//! objects the run needs (Job, ServiceAccount, Role, RoleBinding, results PVC), and what the
//! Job's pod reports (its termination message) turned into `status.experiment`.
//!
//! The Job runs `caplab experiment` (cli/src/commands/experiment.rs) in the `caplab` CLI
//! image. It reaches the members through the API server's pod proxy by pod name, the way
//! `caplab workload --cluster` does: this Kubernetes has no cluster DNS and a crash fault
//! recreates a pod under a new IP, so addresses passed at Job creation would go stale mid-run.
//! Its ServiceAccount may only read this RegisterCluster and proxy to this cluster's pods.
//! The verdict comes back as the pod's termination message (at most 4 KiB: counts, rungs
//! and the first anomalies); the history, report and full verdict go to a PVC.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, ServiceAccount, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Deserialize;

use crate::crd::MAX_REPLICAS;
use crate::crd::{
    ExperimentPhase, ExperimentStatus, OperationMix, RegisterCluster, Replication, Verdict,
    WorkloadSpec, MAX_DURATION_SECONDS,
};
use crate::resources::{self, pod_name};
use caplab_api::paths::CLIENT_PORT;

/// Where the results PVC is mounted in the Job: `<RESULTS_DIR>/<runId>/…`.
pub const RESULTS_DIR: &str = "/results";
/// An emptyDir for the run's files when the results volume is not writable.
pub const SCRATCH_DIR: &str = "/scratch";
/// Label on every object of a cluster's experiments: the cluster's name.
pub const LABEL_EXPERIMENT: &str = "caplab.dev/experiment";
/// Label on the Job and its pod: the run id.
pub const LABEL_RUN: &str = "caplab.dev/run";
/// Retries of the Job's pod: a run that fails twice says why rather than retry forever.
const BACKOFF_LIMIT: i32 = 1;
/// Time the Job may take beyond its duration and settle period (waiting for the cluster,
/// checking, rendering): past it Kubernetes stops it and the run fails.
const SLACK_SECONDS: u64 = 600;
/// Size of the results volume.
const RESULTS_SIZE: &str = "1Gi";

/// Problems with `spec.workload` and the fault schedule it implies; each says how to fix it.
pub fn validate(rc: &RegisterCluster, errs: &mut Vec<String>) {
    let Some(w) = &rc.spec.workload else {
        return;
    };
    if !(1..=64).contains(&w.clients) {
        errs.push(format!("workload.clients must be 1-64 (got {})", w.clients));
    }
    if !(1..=MAX_DURATION_SECONDS).contains(&w.duration_seconds) {
        errs.push(format!(
            "workload.durationSeconds must be 1-{MAX_DURATION_SECONDS} (got {}): split a longer \
             experiment into runs",
            w.duration_seconds
        ));
    }
    if !(1..=1000).contains(&w.keys) {
        errs.push(format!("workload.keys must be 1-1000 (got {})", w.keys));
    }
    let m = &w.mix;
    let sum = m.read + m.write + m.cas;
    if sum != 100 {
        errs.push(format!(
            "workload.mix must sum to 100 percent (read {} + write {} + cas {} = {sum})",
            m.read, m.write, m.cas
        ));
    }
    if rc.spec.replication == Replication::Quorum && sum == m.cas && m.cas > 0 {
        errs.push(
            "workload.mix is all cas, which quorum members refuse (compare-and-set needs \
             consensus): give read or write a share, or use replication raft, async or sync"
                .into(),
        );
    }
    if w.settle() > 600 {
        errs.push(format!(
            "workload.settleSeconds must be at most 600 (got {})",
            w.settle()
        ));
    }
    if let Some(id) = &w.run_id {
        let ok = !id.is_empty()
            && id.len() <= 40
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !ok {
            errs.push(format!(
                "workload.runId {id:?} must be 1-40 letters, digits, '-', '.' or '_' (it names \
                 the run's results directory)"
            ));
        }
    }
    for f in &rc.spec.faults {
        let start = f.start_after_seconds.unwrap_or(0);
        if start >= w.duration_seconds {
            errs.push(format!(
                "fault {:?} starts {start} s after the workload's start, when its {} s are \
                 over: lower startAfterSeconds or raise workload.durationSeconds",
                f.name, w.duration_seconds
            ));
        }
    }
}

/// FNV-1a, 64 bits, as hex.
fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The run of a workload: its id (`runId`, else a fingerprint of the workload) and the name
/// of its Job, which changes with any field of the workload (a changed workload is a new run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The run id.
    pub id: String,
    /// The Job's name: `<cluster (at most 50 characters)>-run-<8 hex digits>`, a DNS label
    /// (the Job controller puts it in a label of its pods).
    pub job: String,
}

/// The run `spec.workload` asks for.
pub fn run_of(cluster: &str, w: &WorkloadSpec) -> Run {
    let hash = fnv(&serde_json::to_string(w).unwrap_or_default());
    let short = &hash[..8];
    let prefix: String = cluster.chars().take(50).collect();
    let prefix = prefix.trim_end_matches('-');
    Run {
        id: w.run_id.clone().unwrap_or_else(|| short.to_string()),
        job: format!("{prefix}-run-{short}"),
    }
}

/// Name of the ServiceAccount, Role and RoleBinding of a cluster's runs.
pub fn runner_name(cluster: &str) -> String {
    format!("{cluster}-experiment")
}

/// Name of the PVC holding every run's results.
pub fn results_pvc_name(cluster: &str) -> String {
    format!("{cluster}-results")
}

/// Labels of a cluster's experiment objects: `caplab.dev/experiment=<cluster>`, never
/// `caplab.dev/cluster`, which selects member pods (a run's pod is not a member).
fn labels(rc: &RegisterCluster) -> BTreeMap<String, String> {
    let name = rc.name_any();
    BTreeMap::from([
        (LABEL_EXPERIMENT.to_string(), name.clone()),
        ("app.kubernetes.io/name".into(), "caplab-experiment".into()),
        ("app.kubernetes.io/instance".into(), name),
        (
            "app.kubernetes.io/managed-by".into(),
            "caplab-operator".into(),
        ),
    ])
}

fn meta(rc: &RegisterCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rc.namespace(),
        labels: Some(labels(rc)),
        owner_references: Some(rc.controller_owner_ref(&()).into_iter().collect()),
        ..ObjectMeta::default()
    }
}

/// The runner's ServiceAccount.
pub fn service_account(rc: &RegisterCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(rc, runner_name(&rc.name_any())),
        ..ServiceAccount::default()
    }
}

fn rule(group: &str, resource: &str, names: Vec<String>, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(names),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// The runner's Role: read this RegisterCluster (members, readiness, fault windows) and
/// send requests to this cluster's member pods through the pod proxy (GET reads, PUT
/// writes, POST compare-and-set): nothing else.
pub fn role(rc: &RegisterCluster) -> Role {
    let name = rc.name_any();
    let top = u32::try_from(MAX_REPLICAS).unwrap_or(9);
    let pods: Vec<String> = (0..top).map(|o| pod_name(&name, o)).collect();
    // The API server authorises `pods/<pod>:<port>/proxy` with the name `<pod>:<port>`.
    let proxied: Vec<String> = pods
        .iter()
        .flat_map(|p| [p.clone(), format!("{p}:{CLIENT_PORT}")])
        .collect();
    Role {
        metadata: meta(rc, runner_name(&name)),
        rules: Some(vec![
            rule("caplab.dev", "registerclusters", vec![name], &["get"]),
            rule("", "pods", pods, &["get"]),
            rule("", "pods/proxy", proxied, &["get", "create", "update"]),
        ]),
    }
}

/// Binds the runner's Role to its ServiceAccount.
pub fn role_binding(rc: &RegisterCluster) -> RoleBinding {
    let name = runner_name(&rc.name_any());
    RoleBinding {
        metadata: meta(rc, name.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: rc.namespace(),
            ..Subject::default()
        }]),
    }
}

/// The PVC every run of the cluster writes its results to (default StorageClass).
pub fn results_pvc(rc: &RegisterCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(rc, results_pvc_name(&rc.name_any())),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(RESULTS_SIZE.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The mix a run uses on `replication` (percent), and a note when it differs from the
/// spec's: quorum members refuse compare-and-set (400: it needs consensus), so there `cas` is
/// dropped and reads and writes keep their proportions, re-normalised to 100.
pub fn effective_mix(
    replication: Replication,
    mix: &OperationMix,
) -> (OperationMix, Option<String>) {
    let rest = mix.read + mix.write;
    if replication != Replication::Quorum || mix.cas == 0 || rest == 0 {
        return (mix.clone(), None);
    }
    let read = (mix.read * 100 + rest / 2) / rest;
    let used = OperationMix {
        read,
        write: 100 - read,
        cas: 0,
    };
    let note = format!(
        "cas {} % dropped from the mix: quorum members refuse compare-and-set (it needs \
         consensus); the run uses read {} %, write {} %",
        mix.cas, used.read, used.write
    );
    (used, Some(note))
}

/// The arguments of `caplab experiment` for this run.
pub fn runner_args(rc: &RegisterCluster, w: &WorkloadSpec, run: &Run) -> Vec<String> {
    let (m, _) = effective_mix(rc.spec.replication, &w.mix);
    let mut args = vec![
        "experiment".to_string(),
        format!("--cluster={}", rc.name_any()),
        format!("--run-id={}", run.id),
        format!("--clients={}", w.clients),
        format!("--duration={}", w.duration_seconds),
        format!("--keys={}", w.keys),
        format!("--mix=read={},write={},cas={}", m.read, m.write, m.cas),
        format!("--settle={}s", w.settle()),
        format!("--results={RESULTS_DIR}"),
    ];
    args.push(format!("--rate={}", w.rate_per_second.unwrap_or(0)));
    args
}

/// The Job of a run: one pod running `caplab experiment` as a non-root user with a read-only
/// root filesystem (restricted pod security), results on the PVC, retried at most once and
/// stopped after duration + settle + 10 minutes.
pub fn job(rc: &RegisterCluster, w: &WorkloadSpec, run: &Run, image: &str) -> Job {
    let mut m = meta(rc, run.job.clone());
    if let Some(l) = m.labels.as_mut() {
        l.insert(LABEL_RUN.into(), label_value(&run.id));
    }
    let uid = resources::MEMBER_UID;
    let container = Container {
        name: "caplab".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(runner_args(rc, w, run)),
        env: Some(vec![EnvVar {
            name: "CAPLAB_NAMESPACE".into(),
            value: rc.namespace(),
            ..EnvVar::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "results".into(),
                mount_path: RESULTS_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "scratch".into(),
                mount_path: SCRATCH_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        termination_message_policy: Some("File".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let deadline = w.duration_seconds + w.settle() + SLACK_SECONDS;
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        service_account_name: Some(runner_name(&rc.name_any())),
        volumes: Some(vec![
            Volume {
                name: "results".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: results_pvc_name(&rc.name_any()),
                    read_only: None,
                }),
                ..Volume::default()
            },
            // Where `caplab experiment` writes when a provisioner ignores fsGroup and the
            // results volume is not writable: the verdict still arrives.
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            fs_group: Some(uid),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    Job {
        metadata: m.clone(),
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            active_deadline_seconds: i64::try_from(deadline).ok(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: m.labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// A run id as a label value (63 characters of `[A-Za-z0-9-_.]`; validation keeps it so).
fn label_value(id: &str) -> String {
    id.chars().take(63).collect()
}

/// What `caplab experiment` writes to its termination message (JSON, under 4 KiB): the
/// `caplab check --json` rungs, outcome counts, throughput, windows and the first anomalies.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The verdict (run id included).
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Set when the run could not finish: why.
    #[serde(default)]
    pub error: Option<String>,
    /// Where the history, report and verdict are on the results volume.
    #[serde(default)]
    pub dir: Option<String>,
    /// Why the files could not be kept on the results volume (the verdict is still valid).
    #[serde(default)]
    pub unkept: Option<String>,
}

/// Parses a termination message; `None` when it is not one `caplab experiment` wrote.
pub fn parse_report(message: &str) -> Option<Report> {
    serde_json::from_str(message.trim()).ok()
}

/// A new run's status: phase Pending, the mix it uses (and why, where that is not the
/// spec's), the previous verdict kept until this one replaces it.
pub fn new_run(
    prev: Option<&ExperimentStatus>,
    run: &Run,
    mix: (OperationMix, Option<String>),
) -> ExperimentStatus {
    ExperimentStatus {
        phase: Some(ExperimentPhase::Pending),
        reason: Some("waiting for the cluster to be Ready".into()),
        run_id: Some(run.id.clone()),
        job: Some(run.job.clone()),
        mix: Some(mix.0),
        notes: mix.1.into_iter().collect(),
        verdict: prev.and_then(|p| p.verdict.clone()),
        summary: prev.and_then(|p| p.summary.clone()),
        artifacts: prev.and_then(|p| p.artifacts.clone()),
        ..ExperimentStatus::default()
    }
}

/// Records a finished run's report in `ex`: Done with its verdict, or Failed with its error.
pub fn finish(ex: &mut ExperimentStatus, report: Report, now: &str, cluster: &str) {
    ex.finished_at = Some(now.to_string());
    if let Some(e) = report.error {
        ex.phase = Some(ExperimentPhase::Failed);
        ex.reason = Some(e);
        return;
    }
    ex.phase = Some(ExperimentPhase::Done);
    ex.reason = None;
    ex.summary = Some(summary(&report.verdict));
    let dir = report
        .dir
        .unwrap_or_else(|| format!("{RESULTS_DIR}/{}", ex.run()));
    ex.artifacts = Some(match report.unkept {
        Some(why) => format!("not kept: {why}"),
        None => format!(
            "{dir}/{{history.json,events.json,report.html,verdict.json}} on PVC {}: \
         caplab experiment fetch --cluster {cluster} --run {}",
            results_pvc_name(cluster),
            ex.run()
        ),
    });
    ex.windows = windows::merge(&ex.windows, report.verdict.windows.clone());
    let mut verdict = report.verdict;
    verdict.windows = ex.windows.clone();
    ex.verdict = Some(verdict);
}

mod verdict;
pub mod windows;

pub use verdict::{summary, verdict_note};

#[cfg(test)]
mod tests;
