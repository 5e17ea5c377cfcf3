//! Unit tests of the pure parts, from YAML fixtures.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use kube::CustomResourceExt;

use crate::crd::{Condition, FaultState, MemberStatus, Phase, RegisterCluster};
use crate::faults::{self, FaultSet, PeerFault};
use crate::member_client::{NodeStatus, PeerEntry, PeerProgress};
use crate::membership::{self, LossBound, Observed, PrimarySeen, PrimaryStep, Step};
use crate::resources;
use crate::rollout;
use crate::status::{self, Summary};
use crate::validation;

fn fixture(name: &str) -> RegisterCluster {
    let text = match name {
        "raft-3" => include_str!("../tests/fixtures/raft-3.yaml"),
        "storage-5" => include_str!("../tests/fixtures/storage-5.yaml"),
        "faults" => include_str!("../tests/fixtures/faults.yaml"),
        "invalid" => include_str!("../tests/fixtures/invalid.yaml"),
        other => panic!("no fixture {other}"),
    };
    serde_yaml::from_str(text).expect("fixture parses")
}

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
fn crd_file_is_fresh() {
    let generated = serde_yaml::to_string(&RegisterCluster::crd()).expect("yaml");
    let checked_in = include_str!("../../crds/registercluster.yaml");
    assert_eq!(
        generated, checked_in,
        "crds/registercluster.yaml is stale: run `cargo run -p caplab-operator --bin crdgen > crds/registercluster.yaml`"
    );
    assert!(checked_in.contains("x-kubernetes-validations"));
    assert!(checked_in.contains("self == oldSelf"));
    assert!(checked_in.contains("shortNames"));
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
fn rollout_finds_pods_built_from_an_older_spec() {
    let old = fixture("raft-3");
    let pods: BTreeMap<u32, _> = (0..3)
        .map(|o| {
            (
                o,
                resources::member_pod(&old, o, u64::from(o) + 1, "caplab/node:0.1.0"),
            )
        })
        .collect();
    let desired = |rc: &RegisterCluster| {
        let rc = rc.clone();
        move |o: u32, pod: &k8s_openapi::api::core::v1::Pod| {
            let id = resources::member_id_of(&pod.metadata).unwrap_or(0);
            resources::member_pod(&rc, o, id, "caplab/node:0.1.0")
        }
    };
    assert!(rollout::outdated(&pods, desired(&old)).is_empty());

    let mut new_image = old.clone();
    new_image.spec.image = Some("caplab/node:0.2.0".into());
    assert_eq!(
        rollout::outdated(&pods, desired(&new_image)),
        [0, 1, 2].into()
    );
    // The operator's own default image moving counts too.
    let moved = |o: u32, pod: &k8s_openapi::api::core::v1::Pod| {
        let id = resources::member_id_of(&pod.metadata).unwrap_or(0);
        resources::member_pod(&old, o, id, "caplab/node:0.2.0")
    };
    assert_eq!(rollout::outdated(&pods, moved).len(), 3);

    let mut unannotated = pods.clone();
    if let Some(p) = unannotated.get_mut(&1) {
        p.metadata.annotations = None;
    }
    assert_eq!(rollout::outdated(&unannotated, desired(&old)), [1].into());
}

#[test]
fn rollout_takes_followers_first_and_the_leader_last() {
    let all = [0, 1, 2].into();
    assert_eq!(rollout::next_to_roll(&all, Some(2)), Some(1));
    assert_eq!(rollout::next_to_roll(&all, Some(0)), Some(2));
    assert_eq!(rollout::next_to_roll(&all, None), Some(2));
    assert_eq!(rollout::next_to_roll(&[0].into(), Some(0)), Some(0));
    assert_eq!(rollout::next_to_roll(&Default::default(), Some(0)), None);
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
fn validation_accepts_good_specs() {
    for f in ["raft-3", "storage-5", "faults"] {
        assert!(validation::validate(&fixture(f)).is_empty(), "{f}");
    }
}

#[test]
fn validation_reports_every_problem() {
    let errs = validation::validate(&fixture("invalid"));
    let all = errs.join("\n");
    assert!(all.contains("replicas must be between 1 and 9"), "{all}");
    assert!(all.contains("replication is immutable"), "{all}");
    assert!(all.contains("heartbeatMs (200) must be below"), "{all}");
    assert!(all.contains("probability in [0, 1]"), "{all}");
    assert!(all.contains("used twice"), "{all}");
    assert!(all.contains("at least two groups"), "{all}");
    assert!(all.contains("delay needs latencyMs"), "{all}");
    assert!(all.contains("unknown target \"boss\""), "{all}");
    assert!(all.contains("ordinal 7 out of range"), "{all}");
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
}

fn ids3() -> BTreeMap<u32, u64> {
    BTreeMap::from([(0, 1), (1, 2), (2, 3)])
}

#[test]
fn fault_plan_resolves_symbolic_targets() {
    let rc = fixture("faults");
    let plan = faults::plan(&rc.spec.faults, &[], t0(), 3, &ids3(), Some(1));
    let cut = &plan.statuses[0];
    assert_eq!(cut.state, FaultState::Active);
    assert_eq!(cut.groups, vec![vec![1], vec![0, 2]]);
    assert_eq!(cut.since.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(cut.until.as_deref(), Some("2024-01-01T00:00:30Z"));
    // Leader (ordinal 1, id 2) is cut from ids 1 and 3; the others from id 2.
    assert_eq!(
        plan.sets[&1].partition,
        Some(PeerFault { peers: vec![1, 3] })
    );
    assert_eq!(plan.sets[&0].partition, Some(PeerFault { peers: vec![2] }));
    assert_eq!(plan.sets[&2].partition, Some(PeerFault { peers: vec![2] }));
    let delay = plan.sets[&2].delay.clone().expect("delay");
    assert_eq!((delay.latency_ms, delay.jitter_ms), (200, 50));
    assert!(delay.peers.is_empty());
    assert_eq!(
        plan.sets[&0].loss.as_ref().map(|l| l.probability),
        Some(0.2)
    );
    assert!(plan.sets[&1].loss.is_none());
    assert!(plan.sets[&0].pause);
    assert_eq!(plan.sets[&1].clock_skew_ms, Some(3000));
    assert!(plan.crashed.contains(&1));
    assert_eq!(plan.next_expiry, Some(t0() + Duration::seconds(10)));
    assert_eq!(plan.active_names().len(), 6);
    assert!(plan.member_faults[&1].contains(&"crash".to_string()));
    assert_eq!(
        plan.events
            .iter()
            .filter(|e| matches!(e, faults::FaultEvent::Started { .. }))
            .count(),
        6
    );
    // The wire form of a fault set.
    let json = serde_json::to_value(&plan.sets[&1]).expect("json");
    assert_eq!(json["partition"]["peers"], serde_json::json!([1, 3]));
    assert_eq!(json["clockSkewMs"], 3000);
    assert!(json.get("pause").is_none());
}

#[test]
fn fault_plan_pending_without_leader_then_expires_and_reverts() {
    let rc = fixture("faults");
    let plan = faults::plan(&rc.spec.faults, &[], t0(), 3, &ids3(), None);
    // Without a leader nothing starts, not even faults on ordinals (a crash must not stall
    // the bootstrap).
    assert!(plan.statuses.iter().all(|s| s.state == FaultState::Pending));
    assert!(plan.crashed.is_empty());
    assert!(plan.events.is_empty());

    let started = faults::plan(&rc.spec.faults, &[], t0(), 3, &ids3(), Some(0));
    // Leadership moves: recorded targets stay.
    let later = faults::plan(
        &rc.spec.faults,
        &started.statuses,
        t0() + Duration::seconds(5),
        3,
        &ids3(),
        Some(2),
    );
    assert_eq!(later.statuses[0].groups, vec![vec![0], vec![1, 2]]);
    assert!(later.events.is_empty());
    // Crash (10 s) expires, partition (30 s) still active.
    let t11 = t0() + Duration::seconds(11);
    let exp = faults::plan(&rc.spec.faults, &later.statuses, t11, 3, &ids3(), Some(2));
    assert_eq!(exp.statuses[5].state, FaultState::Expired);
    assert!(exp.crashed.is_empty());
    assert_eq!(exp.statuses[0].state, FaultState::Active);
    assert_eq!(exp.next_expiry, Some(t0() + Duration::seconds(30)));
    // Remove everything: active ones revert, sets heal.
    let healed = faults::plan(&[], &exp.statuses, t11, 3, &ids3(), Some(2));
    assert!(healed
        .statuses
        .iter()
        .all(|s| s.state == FaultState::Reverted));
    assert!(healed.sets.values().all(FaultSet::is_empty));
    assert_eq!(serde_json::to_string(&healed.sets[&0]).expect("json"), "{}");
    assert!(healed
        .events
        .iter()
        .any(|e| matches!(e, faults::FaultEvent::Ended { why: "removed", .. })));
    // Editing a fault restarts it.
    let mut edited = rc.spec.faults.clone();
    edited[1].latency_ms = Some(500);
    let re = faults::plan(&edited, &exp.statuses, t11, 3, &ids3(), Some(2));
    assert_eq!(
        re.statuses[1].since.as_deref(),
        Some("2024-01-01T00:00:11Z")
    );
}

#[test]
fn fault_set_normalization_matches_member_report() {
    let reported: FaultSet = serde_json::from_value(serde_json::json!({
        "partition": {"peers": [3, 1]}, "pause": false, "clockSkewMs": 0, "loss": null
    }))
    .expect("parse");
    let desired = FaultSet {
        partition: Some(PeerFault { peers: vec![1, 3] }),
        ..FaultSet::default()
    };
    assert_eq!(reported.normalized(), desired.normalized());
}

fn node(id: u64, role: &str, term: u64, voters: &[u64], learners: &[u64]) -> NodeStatus {
    NodeStatus {
        id,
        replication: "raft".into(),
        role: role.into(),
        term,
        leader: if voters.is_empty() { None } else { Some(1) },
        commit_index: 100,
        applied_index: 100,
        last_log_index: 100,
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..NodeStatus::default()
    }
}

fn obs(ordinal: u32, id: u64, st: Option<NodeStatus>) -> Observed {
    Observed {
        ordinal,
        name: format!("demo-{ordinal}"),
        id,
        pod_exists: true,
        pod_ip: Some(format!("10.0.0.{}", ordinal + 10)),
        status: st,
    }
}

#[test]
fn membership_bootstrap_waits_for_all_members() {
    let fresh = |o: u32, id: u64| {
        obs(
            o,
            id,
            Some(NodeStatus {
                id,
                role: "learner".into(),
                ..NodeStatus::default()
            }),
        )
    };
    let partial = vec![fresh(0, 1), fresh(1, 2), obs(2, 3, None)];
    assert!(matches!(
        membership::next_raft_step(3, &partial, false),
        Step::Wait(_)
    ));
    let all = vec![fresh(0, 1), fresh(1, 2), fresh(2, 3)];
    match membership::next_raft_step(3, &all, false) {
        Step::Bootstrap { ordinal, members } => {
            assert_eq!(ordinal, 0);
            assert_eq!(members[&3].addr, "10.0.0.12:7000");
            assert_eq!(members.len(), 3);
        }
        s => panic!("unexpected {s:?}"),
    }
    // Once bootstrapped, a leaderless cluster is never re-initialised.
    assert!(matches!(
        membership::next_raft_step(3, &all, true),
        Step::Wait(_)
    ));
}

#[test]
fn membership_scale_up_adds_learner_then_promotes() {
    let v = [1, 2, 3];
    let mut members = vec![
        obs(0, 1, Some(node(1, "leader", 2, &v, &[]))),
        obs(1, 2, Some(node(2, "follower", 2, &v, &[]))),
        obs(2, 3, Some(node(3, "follower", 2, &v, &[]))),
        obs(
            3,
            4,
            Some(NodeStatus {
                id: 4,
                role: "learner".into(),
                ..NodeStatus::default()
            }),
        ),
    ];
    assert_eq!(
        membership::next_raft_step(4, &members, true),
        Step::AddLearner {
            ordinal: 3,
            id: 4,
            entry: PeerEntry {
                addr: "10.0.0.13:7000".into(),
                incarnation: None
            }
        }
    );
    // Learner added but lagging.
    let mut leader = node(1, "leader", 2, &v, &[4]);
    leader.peers.insert(
        "4".into(),
        PeerProgress {
            match_index: Some(10),
            lag_entries: Some(90),
            last_contact_ms: Some(5),
        },
    );
    members[0].status = Some(leader.clone());
    assert!(matches!(
        membership::next_raft_step(4, &members, true),
        Step::Wait(_)
    ));
    // Caught up: promote.
    leader.peers.insert(
        "4".into(),
        PeerProgress {
            match_index: Some(100),
            lag_entries: Some(0),
            last_contact_ms: Some(5),
        },
    );
    members[0].status = Some(leader);
    assert_eq!(
        membership::next_raft_step(4, &members, true),
        Step::SetVoters {
            voters: vec![1, 2, 3, 4],
            added: vec![4],
            removed: vec![]
        }
    );
}

#[test]
fn membership_scale_down_one_at_a_time_and_transfers_leadership() {
    let v = [1, 2, 3, 4, 5];
    let members: Vec<Observed> = (0..5)
        .map(|o| {
            let id = u64::from(o) + 1;
            obs(
                o,
                id,
                Some(node(
                    id,
                    if id == 5 { "leader" } else { "follower" },
                    3,
                    &v,
                    &[],
                )),
            )
        })
        .collect();
    // Leader (ordinal 4) must go: transfer first.
    match membership::next_raft_step(3, &members, true) {
        Step::TransferLeader {
            to,
            fallback_voters,
        } => {
            assert!(to != 5);
            assert_eq!(fallback_voters, vec![1, 2, 3, 4]);
        }
        s => panic!("unexpected {s:?}"),
    }
    // Leader elsewhere: remove the highest ordinal only.
    let members: Vec<Observed> = (0..5)
        .map(|o| {
            let id = u64::from(o) + 1;
            obs(
                o,
                id,
                Some(node(
                    id,
                    if id == 1 { "leader" } else { "follower" },
                    3,
                    &v,
                    &[],
                )),
            )
        })
        .collect();
    assert_eq!(
        membership::next_raft_step(3, &members, true),
        Step::SetVoters {
            voters: vec![1, 2, 3, 4],
            added: vec![],
            removed: vec![5]
        }
    );
    // Not a voter any more: delete its pod.
    let v4 = [1, 2, 3, 4];
    let mut m2 = members.clone();
    m2[0].status = Some(node(1, "leader", 3, &v4, &[]));
    assert_eq!(
        membership::next_raft_step(3, &m2, true),
        Step::DeletePod { ordinal: 4 }
    );
}

#[test]
fn membership_replaces_dead_member_without_losing_quorum() {
    // Ordinal 2 lost its data: came back as id 4; old voter 3 is gone.
    let v = [1, 2, 3];
    let mut leader = node(1, "leader", 4, &v, &[4]);
    leader.peers.insert(
        "4".into(),
        PeerProgress {
            match_index: Some(100),
            lag_entries: Some(0),
            last_contact_ms: Some(1),
        },
    );
    let members = vec![
        obs(0, 1, Some(leader)),
        obs(1, 2, Some(node(2, "follower", 4, &v, &[4]))),
        obs(2, 4, Some(node(4, "learner", 4, &v, &[4]))),
    ];
    assert_eq!(
        membership::next_raft_step(3, &members, true),
        Step::SetVoters {
            voters: vec![1, 2, 4],
            added: vec![4],
            removed: vec![3]
        }
    );
    // With two of three voters dead, the operator does not shrink the voter set.
    let lonely = vec![
        obs(0, 1, Some(node(1, "leader", 4, &v, &[]))),
        Observed {
            ordinal: 1,
            id: 2,
            ..Observed::default()
        },
        Observed {
            ordinal: 2,
            id: 3,
            ..Observed::default()
        },
    ];
    assert!(matches!(
        membership::next_raft_step(3, &lonely, true),
        Step::Wait(_)
    ));
}

#[test]
fn membership_stable_when_converged() {
    let v = [1, 2, 3];
    let members = vec![
        obs(0, 1, Some(node(1, "follower", 2, &v, &[]))),
        obs(1, 2, Some(node(2, "leader", 2, &v, &[]))),
        obs(2, 3, Some(node(3, "follower", 2, &v, &[]))),
    ];
    assert_eq!(membership::next_raft_step(3, &members, true), Step::Stable);
    // A stale leader of a lower term is ignored.
    let mut m = members.clone();
    m[0].status = Some(node(1, "leader", 1, &v, &[]));
    assert_eq!(membership::find_leader(&m).map(|l| l.ordinal), Some(1));
}

#[test]
fn primary_failover_promotes_most_caught_up() {
    let mut s1 = node(2, "secondary", 1, &[], &[]);
    s1.applied_index = 90;
    s1.leader = None;
    let mut s2 = node(3, "secondary", 1, &[], &[]);
    s2.applied_index = 95;
    s2.leader = None;
    let members = vec![
        Observed {
            ordinal: 0,
            id: 1,
            ..Observed::default()
        },
        obs(1, 2, Some(s1)),
        obs(2, 3, Some(s2)),
    ];
    let seen = Some(PrimarySeen {
        id: 1,
        last_seq: 124,
    });
    assert_eq!(
        membership::next_primary_step(3, &members, true, seen, Some(3), 10),
        PrimaryStep::PrimaryDown
    );
    // The bound starts from the old primary's last sequence as last observed (124), not from
    // what the secondaries hold.
    let step = membership::next_primary_step(3, &members, true, seen, Some(12), 10);
    assert_eq!(
        step,
        PrimaryStep::Failover {
            ordinal: 2,
            to: 3,
            from: 1,
            loss: LossBound {
                acknowledged_seq: 124,
                promoted_seq: 95
            }
        }
    );
    let PrimaryStep::Failover { loss, .. } = step else {
        unreachable!()
    };
    assert_eq!(loss.possible_loss(), 29);
}

#[test]
fn primary_repoints_secondaries() {
    let mut p = node(1, "primary", 1, &[], &[]);
    p.leader = Some(1);
    let mut s = node(2, "secondary", 1, &[], &[]);
    s.leader = None;
    let members = vec![obs(0, 1, Some(p)), obs(1, 2, Some(s))];
    assert_eq!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::Repoint {
            ordinals: vec![1],
            primary: 1,
            entry: PeerEntry {
                addr: "10.0.0.10:7000".into(),
                incarnation: None
            }
        }
    );
}

/// A primary–secondary member: `primary` is whom it follows (or itself), `members` the set
/// the primary replicates to (the primary reports it as its voters).
fn ps(ordinal: u32, id: u64, primary: u64, members: &[u64], applied: u64) -> Observed {
    let role = if id == primary {
        "primary"
    } else {
        "secondary"
    };
    let mut st = node(id, role, 1, members, &[]);
    st.leader = Some(primary);
    st.applied_index = applied;
    obs(ordinal, id, Some(st))
}

#[test]
fn primary_scale_down_hands_over_then_deletes_the_leftover() {
    // 3 -> 2 with the primary at ordinal 2: it hands its role to the most caught-up kept
    // member before anything else.
    let members = vec![
        ps(0, 1, 3, &[1, 2, 3], 90),
        ps(1, 2, 3, &[1, 2, 3], 95),
        ps(2, 3, 3, &[1, 2, 3], 100),
    ];
    assert_eq!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::HandOver {
            ordinal: 2,
            from: 3,
            to: 2
        }
    );
    // Member 2 is primary now: it stops replicating to 3, then 3's pod goes.
    let members = vec![
        ps(0, 1, 2, &[1, 2, 3], 100),
        ps(1, 2, 2, &[1, 2, 3], 100),
        ps(2, 3, 2, &[1, 2, 3], 100),
    ];
    assert_eq!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::SetMembers {
            ordinal: 1,
            members: vec![1, 2],
            added: vec![],
            removed: vec![3]
        }
    );
    let members = vec![
        ps(0, 1, 2, &[1, 2], 100),
        ps(1, 2, 2, &[1, 2], 100),
        ps(2, 3, 2, &[1, 2, 3], 100),
    ];
    assert_eq!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::DeletePod { ordinal: 2 }
    );
    assert_eq!(
        membership::next_primary_step(2, &members[..2], true, None, None, 10),
        PrimaryStep::Stable
    );
}

fn mstat(id: u64, reachable: bool, lag: u64) -> MemberStatus {
    MemberStatus {
        name: format!("demo-{}", id - 1),
        ordinal: u32::try_from(id - 1).unwrap_or(0),
        id,
        reachable,
        replicating: reachable,
        lag: Some(lag),
        ..MemberStatus::default()
    }
}

#[test]
fn phase_and_conditions() {
    let members = vec![mstat(1, true, 0), mstat(2, true, 0), mstat(3, true, 0)];
    let voters = [1, 2, 3];
    let mut s = Summary {
        bootstrapped: true,
        leader: Some("demo-0"),
        replicas: 3,
        members: &members,
        voters: &voters,
        ..Summary::default()
    };
    assert_eq!(status::phase(&s), Phase::Ready);
    let c1 = status::conditions(&[], &s, Phase::Ready, Some(1), "t1");
    let avail = c1
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("available");
    assert_eq!(
        (avail.status.as_str(), avail.last_transition_time.as_str()),
        ("True", "t1")
    );
    // Same status later: transition time kept.
    let c2 = status::conditions(&c1, &s, Phase::Ready, Some(1), "t2");
    assert_eq!(c1, c2);

    let down = vec![mstat(1, true, 0), mstat(2, false, 0), mstat(3, true, 0)];
    s.members = &down;
    assert_eq!(status::phase(&s), Phase::Degraded);
    let c3: Vec<Condition> = status::conditions(&c2, &s, Phase::Degraded, Some(1), "t3");
    let deg = c3.iter().find(|c| c.type_ == "Degraded").expect("degraded");
    assert_eq!(
        (deg.status.as_str(), deg.last_transition_time.as_str()),
        ("True", "t3")
    );
    let avail = c3
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("available");
    assert_eq!(avail.last_transition_time, "t1");

    s.leader = None;
    assert_eq!(status::phase(&s), Phase::NoQuorum);
    s.bootstrapped = false;
    assert_eq!(status::phase(&s), Phase::Creating);
    let errs = vec!["bad".to_string()];
    s.errors = &errs;
    // Nothing created yet: the invalid first spec is the whole story.
    assert_eq!(status::phase(&s), Phase::Failed);
    let c4 = status::conditions(&c3, &s, Phase::Failed, Some(2), "t4");
    let valid = c4
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .expect("specvalid");
    assert_eq!(
        (valid.status.as_str(), valid.message.as_str()),
        ("False", "bad")
    );
}

fn incarnated(mut m: Observed, incarnation: &str) -> Observed {
    if let Some(s) = m.status.as_mut() {
        s.incarnation = Some(incarnation.into());
    }
    m
}

#[test]
fn address_book_holds_running_pods_under_their_own_id_and_incarnation() {
    let v = [1, 2, 5];
    let members = vec![
        incarnated(
            obs(0, 1, Some(node(1, "leader", 2, &v, &[]))),
            "00000000000000a1",
        ),
        // Ordinal 1's pod is gone: its entry goes at once, whatever its last status said.
        Observed {
            pod_exists: false,
            pod_ip: None,
            ..obs(1, 2, None)
        },
        // Ordinal 2 was replaced: the new pod (member id 6) has the old one's IP. It is
        // addressed under id 6 only, never under the old id 5.
        incarnated(
            obs(2, 6, Some(node(6, "learner", 2, &v, &[]))),
            "00000000000000c6",
        ),
        // Pending pod (no IP yet): no entry.
        Observed {
            pod_ip: None,
            ..obs(3, 7, None)
        },
    ];
    let book = membership::address_book(&members);
    assert_eq!(book.keys().copied().collect::<Vec<_>>(), vec![1, 6]);
    assert_eq!(
        serde_json::to_value(&book).expect("json"),
        serde_json::json!({
            "1": {"addr": "10.0.0.10:7000", "incarnation": "00000000000000a1"},
            "6": {"addr": "10.0.0.12:7000", "incarnation": "00000000000000c6"},
        })
    );
    // A member image without incarnations gets the plain string form.
    let old = membership::address_book(&[obs(0, 1, Some(node(1, "leader", 2, &v, &[])))]);
    assert_eq!(
        serde_json::to_value(&old).expect("json"),
        serde_json::json!({"1": "10.0.0.10:7000"})
    );
    let to = members[2].recipient().expect("running");
    assert_eq!(
        (to.ip, to.id, to.incarnation),
        ("10.0.0.12", 6, Some("00000000000000c6"))
    );
}

/// A sync/async member following `primary` (or primary itself), reporting `members` as its
/// member set; the primary hears from `heard`.
fn sync_member(ordinal: u32, id: u64, primary: u64, members: &[u64], heard: &[u64]) -> Observed {
    let mut m = ps(ordinal, id, primary, members, 100);
    if let Some(s) = m.status.as_mut() {
        s.replication = "sync".into();
        s.peers = heard
            .iter()
            .map(|h| {
                let p = PeerProgress {
                    match_index: Some(100),
                    lag_entries: Some(0),
                    last_contact_ms: Some(20),
                };
                (h.to_string(), p)
            })
            .collect();
    }
    m
}

#[test]
fn sync_failover_drops_the_dead_member_from_the_write_set_and_readds_it_when_back() {
    // Member 1 (demo-0) was primary and died; 3 was promoted and lists {1, 2, 3}: with 1 in
    // the set, no sync write can be acknowledged. Its pod still runs (the container is
    // restarting), so the pod IP alone says nothing.
    let dead = Observed {
        status: None,
        ..obs(0, 1, None)
    };
    let members = vec![
        dead.clone(),
        sync_member(1, 2, 3, &[1, 2, 3], &[]),
        sync_member(2, 3, 3, &[1, 2, 3], &[2]),
    ];
    assert_eq!(
        membership::next_primary_step(3, &members, true, None, None, 10),
        PrimaryStep::SetMembers {
            ordinal: 2,
            members: vec![2, 3],
            added: vec![],
            removed: vec![1]
        }
    );
    // Out of the set, the step says so (and what brings it back).
    let members = vec![
        dead,
        sync_member(1, 2, 3, &[2, 3], &[]),
        sync_member(2, 3, 3, &[2, 3], &[2]),
    ];
    match membership::next_primary_step(3, &members, true, None, None, 10) {
        PrimaryStep::Wait(w) => assert!(w.contains("demo-0 down and out of the write set"), "{w}"),
        s => panic!("unexpected {s:?}"),
    }
    // It returns as the old primary of epoch 1: first pointed at the new primary...
    let mut back = sync_member(0, 1, 1, &[1, 2, 3], &[]);
    if let Some(s) = back.status.as_mut() {
        s.term = 0;
    }
    let members = vec![
        back,
        sync_member(1, 2, 3, &[2, 3], &[]),
        sync_member(2, 3, 3, &[2, 3], &[2]),
    ];
    assert!(matches!(
        membership::next_primary_step(3, &members, true, None, None, 10),
        PrimaryStep::Repoint { ref ordinals, primary: 3, .. } if ordinals == &[0]
    ));
    // ... then, following it, added back to the write set to catch up.
    let members = vec![
        sync_member(0, 1, 3, &[1, 2, 3], &[]),
        sync_member(1, 2, 3, &[2, 3], &[]),
        sync_member(2, 3, 3, &[2, 3], &[2]),
    ];
    assert_eq!(
        membership::next_primary_step(3, &members, true, None, None, 10),
        PrimaryStep::SetMembers {
            ordinal: 2,
            members: vec![1, 2, 3],
            added: vec![1],
            removed: vec![]
        }
    );
}

#[test]
fn a_member_the_operator_cannot_poll_stays_in_the_write_set_while_the_primary_hears_it() {
    // Only the operator's poll failed (a busy node): the primary still hears from member 2,
    // so sync writes keep waiting for it rather than being acknowledged without it.
    let members = vec![
        sync_member(0, 1, 1, &[1, 2], &[2]),
        Observed {
            status: None,
            ..obs(1, 2, None)
        },
    ];
    assert!(matches!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::Wait(w) if w == "members missing"
    ));
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
fn fault_events_name_pods() {
    let started = faults::FaultEvent::Started {
        name: "cut".into(),
        kind: crate::crd::FaultKind::Partition,
        targets: vec![],
        groups: vec![vec![1], vec![0, 2]],
    };
    let name = |o: u32| format!("demo-{o}");
    assert_eq!(
        started.note(name),
        "fault cut started: partition [demo-1] | [demo-0, demo-2]"
    );
    let crash = faults::FaultEvent::Started {
        name: "down".into(),
        kind: crate::crd::FaultKind::Crash,
        targets: vec![2],
        groups: vec![],
    };
    assert_eq!(crash.note(name), "fault down started: crash on demo-2");
}

#[test]
fn members_are_named_by_pod_with_the_id_as_detail() {
    let members = vec![obs(3, 6, None)];
    assert_eq!(membership::label_of(&members, 6), "demo-3 (member id 6)");
    assert_eq!(membership::label_of(&members, 4), "member id 4");
    assert_eq!(
        membership::labels_of(&members, &[6, 4]),
        "demo-3 (member id 6), member id 4"
    );
}

#[test]
fn a_sync_member_cut_off_from_the_primary_blocks_writes_and_status_says_until_when() {
    // demo-1 runs and answers the operator, but the primary does not hear from it (a
    // partition): it stays in the write set, and the step says writes wait for it.
    let members = vec![
        sync_member(0, 1, 1, &[1, 2, 3], &[3]),
        sync_member(1, 2, 1, &[1, 2, 3], &[]),
        sync_member(2, 3, 1, &[1, 2, 3], &[]),
    ];
    match membership::next_primary_step(3, &members, true, None, None, 10) {
        PrimaryStep::Wait(w) => assert!(
            w.starts_with("writes blocked until demo-1 acknowledges the primary again"),
            "{w}"
        ),
        s => panic!("unexpected {s:?}"),
    }
}
