//! Spec validation done by the operator (the same rules as the CRD's OpenAPI
//! and CEL rules, which a 1.20 API server does not enforce).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{FaultKind, RegisterCluster, Replication, Target};
use crate::resources;

pub use crate::crd::MAX_REPLICAS;

/// Longest name (characters) a DNS label may have: a pod's hostname, a Service name, a
/// label value.
const DNS_LABEL_MAX: usize = 63;
/// Longest name of an object whose name is a DNS subdomain (Secret, PersistentVolumeClaim).
const DNS_SUBDOMAIN_MAX: usize = 253;

/// The longest RegisterCluster name whose derived object names are all valid (characters):
/// the pod of the highest ordinal, `<name>-8`, is the tightest (hostnames are at most 63).
/// The CRD's CEL rule on `metadata.name` repeats this number (a test keeps them equal).
pub fn max_name_len() -> usize {
    let top = u32::try_from(MAX_REPLICAS - 1).unwrap_or(0);
    // (what the name becomes, how long that may be) for every name the operator derives.
    let derived = [
        (resources::pod_name("", top), DNS_LABEL_MAX),
        (String::new(), DNS_LABEL_MAX), // the client Service and the label values
        (resources::secret_name(""), DNS_SUBDOMAIN_MAX),
        (resources::pvc_name("", top), DNS_SUBDOMAIN_MAX),
    ];
    derived
        .iter()
        .map(|(suffixes, limit)| limit.saturating_sub(suffixes.len()))
        .min()
        .unwrap_or(0)
}

/// Problems with the RegisterCluster's own name as the source of pod, Service, Secret and
/// label names (the API server already checked it is a DNS subdomain).
fn validate_name(name: &str, errs: &mut Vec<String>) {
    let max = max_name_len();
    if name.len() > max {
        errs.push(format!(
            "name {name:?} is {} characters; the longest name allowed is {max} (pod names \
             <name>-<ordinal> must be hostnames of at most {DNS_LABEL_MAX} characters): \
             create the cluster under a shorter name",
            name.len()
        ));
    }
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let label_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ends_alnum = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(starts_with_letter && label_chars && ends_alnum) {
        errs.push(format!(
            "name {name:?} cannot name the client Service and pod hostnames (DNS labels): use \
             lowercase letters, digits and '-', starting with a letter and ending with a \
             letter or digit"
        ));
    }
}

/// `readQuorum` / `writeQuorum`: only in quorum mode, each in [1, replicas]; quorum mode has
/// no leader for a fault to target.
fn validate_quorums(rc: &RegisterCluster, errs: &mut Vec<String>) {
    let spec = &rc.spec;
    if spec.replication == Replication::Quorum {
        for f in &spec.faults {
            let mut targets = f.targets.iter().chain(f.groups.iter().flatten());
            if targets.any(|t| matches!(t, Target::Leader | Target::Followers)) {
                errs.push(format!(
                    "fault {:?}: replication quorum has no leader: target member ordinals \
                     (and others in partition groups) instead of leader/followers",
                    f.name
                ));
            }
        }
    }
    let given = [
        ("readQuorum", spec.read_quorum),
        ("writeQuorum", spec.write_quorum),
    ];
    for (field, value) in given {
        let Some(v) = value else { continue };
        if spec.replication != Replication::Quorum {
            errs.push(format!(
                "{field} is only used with replication: quorum (this cluster is {}): remove it",
                spec.replication
            ));
        } else if v < 1 || v > spec.replicas {
            errs.push(format!(
                "{field} must be between 1 and replicas ({}) (got {v}): a quorum cannot be \
                 larger than the members; lower {field} or raise replicas",
                spec.replicas
            ));
        }
    }
}

/// The members' `--election-timeout-ms` and `--heartbeat-ms` defaults (node/src/config.rs),
/// which apply when the spec leaves either out.
const MEMBER_ELECTION_TIMEOUT_MS: u64 = 200;
const MEMBER_HEARTBEAT_MS: u64 = 100;

/// A `veto` fault: only 2pc participants vote, and `probability` is the share of prepares
/// voted no, in [0, 1].
fn veto_problem(name: &str, mode: Replication, probability: Option<f64>) -> Option<String> {
    if mode != Replication::TwoPc {
        return Some(format!(
            "fault {name:?}: veto only acts in replication: 2pc (this cluster is {mode}): \
             remove the fault, or use loss/partition to make writes fail here"
        ));
    }
    match probability {
        Some(p) if (0.0..=1.0).contains(&p) => None,
        _ => Some(format!(
            "fault {name:?}: veto needs probability in [0, 1] (the share of prepares voted no, \
             e.g. 0.5)"
        )),
    }
}

/// The ordinal of the 2pc coordinator: the pod `status.leader` names, else ordinal 0 (the
/// operator initialises the lowest ordinal, which coordinates for good).
fn coordinator_ordinal(rc: &RegisterCluster) -> u32 {
    let leader = rc.status.as_ref().and_then(|s| s.leader.as_deref());
    leader
        .and_then(|pod| {
            pod.strip_prefix(&format!("{}-", rc.name_any()))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A `crash` fault on the 2pc coordinator without `storage`: its pod (and its emptyDir) is
/// deleted, so its decision log is lost. It would return empty, as a new member, and the
/// participants that voted yes would wait for the old coordinator for ever (2pc never
/// replaces it); the only way out, a heuristic decision forced on them, may contradict a
/// commit the lost coordinator had already sent to others, as would the presumed abort of a
/// coordinator restarted without its log (Bernstein, Hadzilacos & Goodman 1987, §7.4:
/// presumed abort is only safe because the decision to commit is durable).
fn twopc_crash_problem(rc: &RegisterCluster, fault: &crate::crd::FaultSpec) -> Option<String> {
    let spec = &rc.spec;
    if spec.replication != Replication::TwoPc || spec.storage.is_some() {
        return None;
    }
    if fault.kind != FaultKind::Crash {
        return None;
    }
    let coordinator = coordinator_ordinal(rc);
    let hits = fault
        .targets
        .iter()
        .any(|t| matches!(t, Target::Leader) || *t == Target::Ordinal(coordinator));
    hits.then(|| {
        format!(
            "fault {:?}: a crash of the 2pc coordinator ({}) without spec.storage loses its \
             decision log: it would come back empty as a new member, the participants in doubt \
             would wait for the old one for ever, and a decision forced on them could \
             contradict a commit others already applied: crash participants only (followers, \
             or ordinals other than {coordinator}), or create a new cluster with spec.storage \
             (e.g. storage: {{size: 64Mi}}; storage cannot be added to a running 2pc cluster)",
            fault.name,
            resources::pod_name(&rc.name_any(), coordinator)
        )
    })
}

/// Whether a member pod keeps its data (`data` volume) on a PersistentVolumeClaim; else it is
/// an emptyDir, and the data goes with the pod.
pub fn on_claim(pod: &Pod) -> bool {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes.is_some_and(|vs| {
        vs.iter()
            .any(|v| v.name == "data" && v.persistent_volume_claim.is_some())
    })
}

/// Problems only the running member pods (by ordinal) show: `spec.storage` added to a 2pc
/// cluster whose coordinator runs on an emptyDir. Its pod, recreated on a claim by the
/// rollout or by a crash fault, would come back empty as a new member, and the participants
/// would wait for the old coordinator for ever (see [`twopc_crash_problem`]).
pub fn against_pods(
    rc: &RegisterCluster,
    pods: &std::collections::BTreeMap<u32, Pod>,
) -> Option<String> {
    if rc.spec.replication != Replication::TwoPc || rc.spec.storage.is_none() {
        return None;
    }
    let coordinator = coordinator_ordinal(rc);
    let pod = pods.get(&coordinator).filter(|p| !on_claim(p))?;
    Some(format!(
        "spec.storage cannot be added to a running 2pc cluster created without it: the \
         coordinator {} keeps its decision log in an emptyDir, and recreated on a claim it \
         would come back empty as a new member while the participants wait for the old one \
         for ever: remove spec.storage, or create a new cluster with spec.storage",
        pod.name_any()
    ))
}

/// `storage.size` (above zero) and `resources` requests and limits (zero or more) as
/// Kubernetes quantities: the API server refuses anything else in the pod or claim.
fn validate_quantities(rc: &RegisterCluster, errs: &mut Vec<String>) {
    use std::cmp::Ordering;
    if let Some(st) = &rc.spec.storage {
        match quantity::sign(&st.size) {
            Some(Ordering::Greater) => {}
            Some(_) => errs.push(format!(
                "storage.size must be above zero (got {:?}): set a size such as 64Mi or 1Gi",
                st.size
            )),
            None => errs.push(format!(
                "storage.size {:?} is not a Kubernetes quantity: use a number with an \
                 optional suffix, such as 64Mi or 1Gi",
                st.size
            )),
        }
    }
    let Some(r) = &rc.spec.resources else { return };
    let given = [("requests", &r.requests), ("limits", &r.limits)];
    for (field, m) in given {
        for (name, q) in m {
            match quantity::sign(q) {
                Some(Ordering::Greater | Ordering::Equal) => {}
                Some(Ordering::Less) => errs.push(format!(
                    "resources.{field}.{name} must not be negative (got {q:?})"
                )),
                None => errs.push(format!(
                    "resources.{field}.{name} {q:?} is not a Kubernetes quantity: use a \
                     number with an optional suffix, such as cpu: 100m or memory: 64Mi"
                )),
            }
        }
    }
}

/// Collects every problem in the spec; empty means valid. Each message says how to fix it.
pub fn validate(rc: &RegisterCluster) -> Vec<String> {
    let spec = &rc.spec;
    let mut errs = Vec::new();
    validate_name(&rc.name_any(), &mut errs);
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        errs.push(format!(
            "replicas must be between 1 and {MAX_REPLICAS} (got {})",
            spec.replicas
        ));
    }
    if let Some(recorded) = rc.status.as_ref().and_then(|s| s.replication) {
        if recorded != spec.replication {
            errs.push(format!(
                "replication is immutable (created as {recorded}, now {}): set it back to \
                 {recorded}, or create a new cluster",
                spec.replication
            ));
        }
    }
    if let Some(img) = &spec.image {
        if img.trim().is_empty() {
            errs.push("image must not be empty".into());
        }
    }
    if let Err(e) = crate::resources::topology_spread(rc) {
        errs.push(e);
    }
    validate_quantities(rc, &mut errs);
    // The members' own defaults apply to whichever of the two is left out.
    if spec.election_timeout_ms.is_some() || spec.heartbeat_ms.is_some() {
        let e = spec
            .election_timeout_ms
            .unwrap_or(MEMBER_ELECTION_TIMEOUT_MS);
        let h = spec.heartbeat_ms.unwrap_or(MEMBER_HEARTBEAT_MS);
        if h >= e {
            errs.push(format!(
                "heartbeatMs ({h}{}) must be below electionTimeoutMs ({e}{}): set heartbeatMs \
                 too, e.g. a third of electionTimeoutMs",
                if spec.heartbeat_ms.is_none() {
                    ", the members' default"
                } else {
                    ""
                },
                if spec.election_timeout_ms.is_none() {
                    ", the members' default"
                } else {
                    ""
                },
            ));
        }
    }
    if let Some(e) = spec.election_timeout_ms {
        if !(50..=60000).contains(&e) {
            errs.push(format!(
                "electionTimeoutMs must be in [50, 60000] (got {e})"
            ));
        }
    }
    if let Some(h) = spec.heartbeat_ms {
        if !(10..=30000).contains(&h) {
            errs.push(format!("heartbeatMs must be in [10, 30000] (got {h})"));
        }
    }
    if let Some(f) = spec.failover_after_seconds {
        if !(1..=3600).contains(&f) {
            errs.push(format!(
                "failoverAfterSeconds must be in [1, 3600] (got {f})"
            ));
        }
    }
    validate_quorums(rc, &mut errs);
    let replicas = u32::try_from(spec.replicas.max(0)).unwrap_or(0);
    let mut names = BTreeSet::new();
    for f in &spec.faults {
        let n = &f.name;
        if n.is_empty() || n.len() > 63 {
            errs.push("fault names must be 1-63 characters".into());
        }
        if !names.insert(n.clone()) {
            errs.push(format!("fault name {n:?} is used twice"));
        }
        let check_targets = |ts: &[Target], errs: &mut Vec<String>| {
            for t in ts {
                match t {
                    Target::Ordinal(o) if *o >= replicas => errs.push(format!(
                        "fault {n:?}: ordinal {o} out of range (replicas {replicas}): target \
                         ordinals below {replicas}, leader or followers"
                    )),
                    Target::Unknown(x) => errs.push(format!(
                        "fault {n:?}: unknown target {x:?} (use ordinals, leader, followers)"
                    )),
                    _ => {}
                }
            }
        };
        if f.kind == FaultKind::Partition {
            if f.groups.len() < 2 {
                errs.push(format!("fault {n:?}: partition needs at least two groups"));
            }
            if f.groups.iter().any(Vec::is_empty) {
                errs.push(format!("fault {n:?}: partition groups must not be empty"));
            }
            for g in &f.groups {
                check_targets(g, &mut errs);
            }
        } else {
            if f.targets.is_empty() {
                errs.push(format!("fault {n:?}: targets must not be empty"));
            }
            if f.targets.contains(&Target::Others) {
                errs.push(format!(
                    "fault {n:?}: 'others' is only valid in partition groups"
                ));
            }
            check_targets(&f.targets, &mut errs);
        }
        match f.kind {
            FaultKind::Delay if f.latency_ms.is_none() => {
                errs.push(format!("fault {n:?}: delay needs latencyMs"))
            }
            FaultKind::Loss => match f.probability {
                Some(p) if (0.0..=1.0).contains(&p) => {}
                _ => errs.push(format!("fault {n:?}: loss needs probability in [0, 1]")),
            },
            FaultKind::ClockSkew if f.offset_ms.is_none() => {
                errs.push(format!("fault {n:?}: clockSkew needs offsetMs"))
            }
            FaultKind::Veto => errs.extend(veto_problem(n, spec.replication, f.probability)),
            _ => {}
        }
        errs.extend(twopc_crash_problem(rc, f));
        if f.latency_ms.is_some_and(|l| l > 60000) || f.jitter_ms.is_some_and(|j| j > 60000) {
            errs.push(format!(
                "fault {n:?}: latencyMs/jitterMs must be at most 60000"
            ));
        }
        if f.duration_seconds == Some(0) {
            errs.push(format!("fault {n:?}: durationSeconds must be at least 1"));
        }
    }
    errs.extend(crash::raft_crash_problems(rc));
    crate::experiment::validate(rc, &mut errs);
    errs
}

mod crash;
mod quantity;
#[cfg(test)]
mod tests;
