//! Unit tests of [`crate::resources`].

use std::collections::BTreeMap;

use crate::resources;
use crate::testing::fixture;
use crate::validation;

fn env_of(pod: &k8s_openapi::api::core::v1::Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().expect("spec").containers[0]
        .env
        .as_ref()
        .expect("env")
        .iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn pod_builder_defaults() {
    let rc = fixture("raft-3");
    let pod = resources::member_pod(&rc, 1, 7, "caplab/node:0.1.0");
    assert_eq!(pod.metadata.name.as_deref(), Some("demo-1"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("test"));
    let labels = pod.metadata.labels.clone().expect("labels");
    assert_eq!(labels["caplab.dev/cluster"], "demo");
    assert_eq!(labels["caplab.dev/member"], "1");
    assert_eq!(resources::member_id_of(&pod.metadata), Some(7));
    let owners = pod.metadata.owner_references.clone().expect("owner");
    assert_eq!(owners[0].kind, "RegisterCluster");
    assert_eq!(owners[0].controller, Some(true));
    let env = env_of(&pod);
    assert_eq!(env["CAPLAB_ID"], "7");
    assert_eq!(env["CAPLAB_REPLICATION"], "raft");
    assert_eq!(env["CAPLAB_DATA_DIR"], "/data");
    assert_eq!(env["CAPLAB_ADMIN_TOKEN_FILE"], "/etc/caplab/admin/token");
    assert!(!env.contains_key("CAPLAB_ELECTION_TIMEOUT_MS"));
    let spec = pod.spec.expect("spec");
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("caplab/node:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let sc = c.security_context.clone().expect("sc");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let psc = spec.security_context.expect("psc");
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let ready = c
        .readiness_probe
        .clone()
        .and_then(|p| p.http_get)
        .expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let live = c
        .liveness_probe
        .clone()
        .and_then(|p| p.http_get)
        .expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    let vols = spec.volumes.expect("volumes");
    assert!(vols[0].empty_dir.is_some());
    assert_eq!(
        vols[1]
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("demo-admin-token")
    );
}

#[test]
fn pod_builder_with_storage_and_overrides() {
    let rc = fixture("storage-5");
    let pod = resources::member_pod(&rc, 4, 9, "caplab/node:0.1.0");
    let env = env_of(&pod);
    assert_eq!(env["CAPLAB_REPLICATION"], "async");
    assert_eq!(env["CAPLAB_ELECTION_TIMEOUT_MS"], "1000");
    assert_eq!(env["CAPLAB_HEARTBEAT_MS"], "100");
    let spec = pod.spec.expect("spec");
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("local/node:dev"));
    let res = c.resources.clone().expect("resources");
    assert_eq!(res.requests.expect("req")["cpu"].0, "100m");
    assert_eq!(res.limits.expect("lim")["memory"].0, "128Mi");
    let vols = spec.volumes.expect("volumes");
    assert_eq!(
        vols[0]
            .persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some("data-big-4")
    );
    let pvc = resources::member_pvc(&rc, 4, 9).expect("pvc");
    assert_eq!(pvc.metadata.name.as_deref(), Some("data-big-4"));
    assert_eq!(resources::member_id_of(&pvc.metadata), Some(9));
    let pspec = pvc.spec.expect("pvc spec");
    assert_eq!(pspec.storage_class_name.as_deref(), Some("standard"));
    assert!(resources::member_pvc(&fixture("raft-3"), 0, 1).is_none());
}

#[test]
fn service_and_secret() {
    let rc = fixture("raft-3");
    let svc = resources::client_service(&rc);
    assert_eq!(svc.metadata.name.as_deref(), Some("demo"));
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.selector.expect("sel")["caplab.dev/cluster"], "demo");
    assert_eq!(spec.ports.expect("ports")[0].port, 8080);
    let sec = resources::admin_secret(&rc, "s3cret");
    assert_eq!(sec.metadata.name.as_deref(), Some("demo-admin-token"));
    assert_eq!(sec.data.expect("data")["token"].0, b"s3cret".to_vec());
}

#[test]
fn pod_builder_spreads_members_and_carries_the_cluster_id() {
    let mut rc = fixture("raft-3");
    rc.metadata.uid = Some("u-1".into());
    let pod = resources::member_pod(&rc, 0, 1, "caplab/node:0.1.0");
    assert_eq!(env_of(&pod)["CAPLAB_CLUSTER_ID"], "test/demo/u-1");
    let spec = pod.spec.expect("spec");
    let preferred = spec
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .expect("preferred anti-affinity");
    assert_eq!(preferred.len(), 1);
    let term = &preferred[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let sel = term.label_selector.clone().and_then(|s| s.match_labels);
    assert_eq!(sel.expect("labels")["caplab.dev/cluster"], "demo");
    assert!(spec.topology_spread_constraints.is_none());
}

#[test]
fn topology_spread_constraints_are_passed_with_the_cluster_selector() {
    let mut rc = fixture("raft-3");
    rc.spec.topology_spread_constraints = vec![
        serde_json::json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                           "whenUnsatisfiable": "ScheduleAnyway"}),
        serde_json::json!({"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
                           "whenUnsatisfiable": "DoNotSchedule",
                           "labelSelector": {"matchLabels": {"tier": "x"}}}),
    ];
    let pod = resources::member_pod(&rc, 0, 1, "caplab/node:0.1.0");
    let tsc = pod
        .spec
        .and_then(|s| s.topology_spread_constraints)
        .expect("passed");
    assert_eq!(tsc.len(), 2);
    assert_eq!(tsc[0].topology_key, "topology.kubernetes.io/zone");
    let first = tsc[0].label_selector.clone().and_then(|s| s.match_labels);
    assert_eq!(first.expect("filled in")["caplab.dev/cluster"], "demo");
    let second = tsc[1].label_selector.clone().and_then(|s| s.match_labels);
    assert_eq!(
        second.expect("kept")["tier"],
        "x",
        "a given selector is kept"
    );
    assert!(validation::validate(&rc).is_empty());

    rc.spec.topology_spread_constraints = vec![serde_json::json!({"maxSkew": "lots"})];
    let errs = validation::validate(&rc);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("topologySpreadConstraints[0] is not")),
        "{errs:?}"
    );
}

#[test]
fn disruption_budget_lets_one_member_go_at_a_time() {
    let mut rc = fixture("raft-3");
    rc.metadata.uid = Some("u-1".into());
    let pdb = resources::disruption_budget(&rc);
    assert_eq!(pdb.metadata.name.as_deref(), Some("demo"));
    assert_eq!(pdb.metadata.namespace.as_deref(), Some("test"));
    let owner = pdb.metadata.owner_references.clone().expect("owned");
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].controller),
        ("RegisterCluster", Some(true))
    );
    let spec = pdb.spec.expect("spec");
    assert_eq!(
        spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))
    );
    assert!(spec.max_unavailable.is_none());
    let sel = spec
        .selector
        .and_then(|s| s.match_labels)
        .expect("selector");
    assert_eq!(sel["caplab.dev/cluster"], "demo");
}

#[test]
fn quorum_members_get_their_quorum_sizes() {
    let rc = fixture("quorum-3");
    let env = env_of(&resources::member_pod(&rc, 0, 1, "caplab/node:0.1.0"));
    assert_eq!(env["CAPLAB_REPLICATION"], "quorum");
    assert_eq!(env["CAPLAB_READ_QUORUM"], "1");
    assert_eq!(env["CAPLAB_WRITE_QUORUM"], "2");
    let raft = env_of(&resources::member_pod(&fixture("raft-3"), 0, 1, "x"));
    assert!(!raft.contains_key("CAPLAB_READ_QUORUM"), "only given ones");
}
