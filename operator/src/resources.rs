//! Pure builders of the objects the operator owns: member pods, the client
//! Service, the admin-token Secret, per-member PVCs and the PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};

use crate::crd::RegisterCluster;
use crate::rollout::{template_hash, ANN_TEMPLATE_HASH};
use caplab_api::paths::{self, CLIENT_PORT, PEER_PORT};

/// Label: cluster name.
pub const LABEL_CLUSTER: &str = "caplab.dev/cluster";
/// Label: member ordinal.
pub const LABEL_MEMBER: &str = "caplab.dev/member";
/// Annotation: member id (on pods and PVCs).
pub const ANN_MEMBER_ID: &str = "caplab.dev/member-id";
/// Key of the token in the admin Secret.
pub const TOKEN_KEY: &str = "token";
/// Where the token Secret is mounted.
pub const TOKEN_DIR: &str = "/etc/caplab/admin";
/// Data directory.
pub const DATA_DIR: &str = "/data";
/// Non-root uid/gid of the member image.
pub const MEMBER_UID: i64 = 65532;

/// Node label that spreads members over nodes (preferred pod anti-affinity).
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// The cluster id members are started with (`CAPLAB_CLUSTER_ID`) and every admin call
/// carries (`x-caplab-cluster`): `<namespace>/<name>/<uid>`. The uid tells a cluster apart
/// from an earlier one of the same name.
pub fn cluster_id(rc: &RegisterCluster) -> String {
    format!(
        "{}/{}/{}",
        rc.namespace().unwrap_or_default(),
        rc.name_any(),
        rc.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Pod name of an ordinal.
pub fn pod_name(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal}")
}

/// Name of the admin-token Secret.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-admin-token")
}

/// Name of an ordinal's PVC.
pub fn pvc_name(cluster: &str, ordinal: u32) -> String {
    format!("data-{cluster}-{ordinal}")
}

/// Name of the cluster's PodDisruptionBudget (the cluster's name, like its Service).
pub fn pdb_name(cluster: &str) -> String {
    cluster.to_string()
}

/// Selects every member pod of the cluster.
fn member_selector(rc: &RegisterCluster) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(LABEL_CLUSTER.to_string(), rc.name_any())])),
        match_expressions: None,
    }
}

/// Labels shared by every owned object.
pub fn cluster_labels(rc: &RegisterCluster) -> BTreeMap<String, String> {
    let name = rc.name_any();
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), name.clone()),
        (
            "app.kubernetes.io/name".to_string(),
            "caplab-node".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "caplab-operator".to_string(),
        ),
    ])
}

fn owner(rc: &RegisterCluster) -> Vec<OwnerReference> {
    rc.controller_owner_ref(&()).into_iter().collect()
}

fn meta(rc: &RegisterCluster, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rc.namespace(),
        labels: Some(labels),
        owner_references: Some(owner(rc)),
        ..ObjectMeta::default()
    }
}

/// The client Service (port 8080 to every ready member).
pub fn client_service(rc: &RegisterCluster) -> Service {
    let name = rc.name_any();
    Service {
        metadata: meta(rc, name.clone(), cluster_labels(rc)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(LABEL_CLUSTER.to_string(), name)])),
            ports: Some(vec![ServicePort {
                name: Some("client".into()),
                port: i32::from(CLIENT_PORT),
                target_port: Some(IntOrString::String("client".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The PodDisruptionBudget: voluntary disruptions (drains, upgrades) take at most one member
/// at a time. Built as `policy/v1`; the same body is valid as `policy/v1beta1` (Kubernetes
/// before 1.21) once its `apiVersion` is changed.
///
/// Stated as `minAvailable: replicas - 1`, not `maxUnavailable: 1`: the disruption controller
/// can only resolve `maxUnavailable` through the pods' controller's scale subresource, and
/// member pods (owned by a RegisterCluster) have none, so such a budget allows no disruption
/// at all ("found no controllers for pod") and blocks every drain.
pub fn disruption_budget(rc: &RegisterCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(rc, pdb_name(&rc.name_any()), cluster_labels(rc)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int((rc.spec.replicas - 1).max(0))),
            selector: Some(member_selector(rc)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Spreads members over nodes, but only as a preference: a one-node cluster still
/// schedules every member.
fn spread_over_nodes(rc: &RegisterCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(member_selector(rc)),
                        topology_key: HOSTNAME_TOPOLOGY.into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// `spec.topologySpreadConstraints` as Kubernetes types, each without a `labelSelector`
/// given the cluster's; an entry that is not a valid constraint is an error naming it.
pub fn topology_spread(rc: &RegisterCluster) -> Result<Vec<TopologySpreadConstraint>, String> {
    rc.spec
        .topology_spread_constraints
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut c: TopologySpreadConstraint =
                serde_json::from_value(raw.clone()).map_err(|e| {
                    format!(
                        "topologySpreadConstraints[{i}] is not a Kubernetes topology spread \
                         constraint ({e}): give maxSkew, topologyKey and whenUnsatisfiable"
                    )
                })?;
            c.label_selector.get_or_insert_with(|| member_selector(rc));
            Ok(c)
        })
        .collect()
}

/// The admin-token Secret (created once, never overwritten).
pub fn admin_secret(rc: &RegisterCluster, token: &str) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: meta(rc, secret_name(&rc.name_any()), cluster_labels(rc)),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A member's PVC (only with `spec.storage`).
pub fn member_pvc(rc: &RegisterCluster, ordinal: u32, id: u64) -> Option<PersistentVolumeClaim> {
    let st = rc.spec.storage.as_ref()?;
    let mut labels = cluster_labels(rc);
    labels.insert(LABEL_MEMBER.into(), ordinal.to_string());
    let mut m = meta(rc, pvc_name(&rc.name_any(), ordinal), labels);
    m.annotations = Some(BTreeMap::from([(ANN_MEMBER_ID.into(), id.to_string())]));
    Some(PersistentVolumeClaim {
        metadata: m,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: st.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(st.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn probe(path: &str, initial: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("client".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(5),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect(),
    )
}

/// A member pod.
pub fn member_pod(rc: &RegisterCluster, ordinal: u32, id: u64, default_image: &str) -> Pod {
    let name = rc.name_any();
    let spec = &rc.spec;
    let mut labels = cluster_labels(rc);
    labels.insert(LABEL_MEMBER.into(), ordinal.to_string());
    let mut m = meta(rc, pod_name(&name, ordinal), labels);

    let mut envs = vec![
        env("CAPLAB_ID", id.to_string()),
        env("CAPLAB_CLUSTER_ID", cluster_id(rc)),
        env("CAPLAB_CLIENT_LISTEN", format!("0.0.0.0:{CLIENT_PORT}")),
        env("CAPLAB_PEER_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
        env("CAPLAB_DATA_DIR", DATA_DIR),
        env("CAPLAB_REPLICATION", spec.replication.as_str()),
        env(
            "CAPLAB_ADMIN_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_KEY}"),
        ),
    ];
    if let Some(e) = spec.election_timeout_ms {
        envs.push(env("CAPLAB_ELECTION_TIMEOUT_MS", e.to_string()));
    }
    if let Some(h) = spec.heartbeat_ms {
        envs.push(env("CAPLAB_HEARTBEAT_MS", h.to_string()));
    }
    if let Some(r) = spec.read_quorum {
        envs.push(env("CAPLAB_READ_QUORUM", r.to_string()));
    }
    if let Some(w) = spec.write_quorum {
        envs.push(env("CAPLAB_WRITE_QUORUM", w.to_string()));
    }
    let data_volume = match &spec.storage {
        Some(_) => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(&name, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    };
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        requests: quantities(&r.requests),
        limits: quantities(&r.limits),
        ..ResourceRequirements::default()
    });
    let container = Container {
        name: "node".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        ),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(envs),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: i32::from(CLIENT_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: i32::from(PEER_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe(paths::READYZ, 2, 3)),
        liveness_probe: Some(probe(paths::HEALTHZ, 10, 6)),
        resources,
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "admin-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(MEMBER_UID),
            run_as_group: Some(MEMBER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(vec![
            data_volume,
            Volume {
                name: "admin-token".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name(&name)),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(MEMBER_UID),
            run_as_group: Some(MEMBER_UID),
            fs_group: Some(MEMBER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        hostname: Some(pod_name(&name, ordinal)),
        affinity: Some(spread_over_nodes(rc)),
        // An invalid entry is reported by validation (SpecValid=False): no pod is built then.
        topology_spread_constraints: topology_spread(rc).ok().filter(|c| !c.is_empty()),
        termination_grace_period_seconds: Some(10),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    m.annotations = Some(BTreeMap::from([
        (ANN_MEMBER_ID.into(), id.to_string()),
        (ANN_TEMPLATE_HASH.into(), template_hash(&pod_spec)),
    ]));
    Pod {
        metadata: m,
        spec: Some(pod_spec),
        ..Pod::default()
    }
}

/// Member id recorded on a pod or PVC.
pub fn member_id_of(meta: &ObjectMeta) -> Option<u64> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANN_MEMBER_ID))
        .and_then(|v| v.parse().ok())
        .filter(|id| *id > 0)
}

/// Ordinal recorded on a pod or PVC.
pub fn ordinal_of(meta: &ObjectMeta) -> Option<u32> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MEMBER))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests;
