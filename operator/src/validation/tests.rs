//! Unit tests of [`crate::validation`].

use kube::CustomResourceExt;

use super::*;
use crate::testing::fixture;
use crate::validation;

fn named(name: &str) -> RegisterCluster {
    serde_yaml::from_str(&format!(
        "apiVersion: caplab.dev/v1alpha1\nkind: RegisterCluster\n\
         metadata: {{name: {name:?}, namespace: ns}}\nspec: {{replicas: 3}}\n"
    ))
    .expect("RegisterCluster")
}

#[test]
fn longest_name_allowed_keeps_every_derived_name_valid() {
    let max = max_name_len();
    assert_eq!(
        max, 61,
        "`<name>-8` is the tightest: a hostname of at most 63"
    );
    let name = "a".repeat(max);
    assert!(validate(&named(&name)).is_empty());
    let top = u32::try_from(MAX_REPLICAS - 1).unwrap_or(0);
    assert!(resources::pod_name(&name, top).len() <= DNS_LABEL_MAX);
    assert!(resources::secret_name(&name).len() <= DNS_SUBDOMAIN_MAX);
    assert!(resources::pvc_name(&name, top).len() <= DNS_SUBDOMAIN_MAX);
    // The CRD's CEL rule says the same number.
    let crd = serde_yaml::to_string(&RegisterCluster::crd()).expect("yaml");
    assert!(
        crd.contains(&format!("size(self.metadata.name) <= {max}")),
        "{crd}"
    );
}

/// Every example is a valid spec and promises something checkable in its header (the
/// keys tests/e2e/run.sh understands; the e2e suite checks the promises themselves).
#[test]
fn examples_are_valid_and_state_their_promises() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let keys = [
        "phase",
        "members",
        "ready",
        "replicas",
        "leader",
        "term",
        "replication",
        "faults",
        "serving",
        "lwwLost",
        "inDoubt",
        "within",
        "experiment",
        "linearizable",
        "lost",
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let rc: RegisterCluster = serde_yaml::from_str(&text).expect("RegisterCluster");
        assert_eq!(validate(&rc), Vec::<String>::new(), "{path:?}");
        let promises: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .collect();
        assert!(!promises.is_empty(), "{path:?} promises nothing");
        for token in promises.iter().flat_map(|p| p.split_whitespace()) {
            let key = token.split('=').next().unwrap_or_default();
            let key = key.trim_end_matches(['<', '>']);
            let condition = key.starts_with(|c: char| c.is_ascii_uppercase());
            assert!(
                token.contains('=') && (condition || keys.contains(&key)),
                "{path:?}: cannot check {token:?}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "{seen} examples");
}

#[test]
fn names_that_cannot_name_pods_or_services_say_how_to_fix_them() {
    let errs = validate(&named(&"a".repeat(62))).join("\n");
    assert!(
        errs.contains("is 62 characters; the longest name allowed is 61"),
        "{errs}"
    );
    assert!(errs.contains("shorter name"), "{errs}");
    for bad in ["my.cluster", "1abc", "abc-"] {
        let errs = validate(&named(bad)).join("\n");
        assert!(
            errs.contains("use lowercase letters, digits and '-'"),
            "{bad}: {errs}"
        );
    }
}

#[test]
fn validation_accepts_good_specs() {
    for f in ["raft-3", "storage-5", "faults", "quorum-3"] {
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

#[test]
fn a_short_election_timeout_without_a_heartbeat_meets_the_members_default() {
    let mut rc = fixture("raft-3");
    rc.spec.election_timeout_ms = Some(80);
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains(
            "heartbeatMs (100, the members' default) must be below electionTimeoutMs (80)"
        ),
        "{all}"
    );
    rc.spec.heartbeat_ms = Some(25);
    assert!(validation::validate(&rc).is_empty());
}

#[test]
fn quorum_sizes_must_fit_the_members_and_the_mode() {
    let mut rc = fixture("quorum-3");
    rc.spec.read_quorum = Some(4);
    rc.spec.write_quorum = Some(0);
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("readQuorum must be between 1 and replicas (3) (got 4)"),
        "{all}"
    );
    assert!(all.contains("lower readQuorum or raise replicas"), "{all}");
    assert!(
        all.contains("writeQuorum must be between 1 and replicas (3) (got 0)"),
        "{all}"
    );
    rc.spec.faults =
        serde_yaml::from_str("[{name: cut, kind: partition, groups: [[leader], [followers]]}]")
            .expect("faults");
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("fault \"cut\": replication quorum has no leader: target member ordinals"),
        "{all}"
    );
    let mut raft = fixture("raft-3");
    raft.spec.write_quorum = Some(2);
    let all = validation::validate(&raft).join("\n");
    assert!(
        all.contains(
            "writeQuorum is only used with replication: quorum (this cluster is raft): remove it"
        ),
        "{all}"
    );
}

#[test]
fn veto_acts_only_in_2pc_with_a_probability() {
    let veto = |p: Option<f64>| crate::crd::FaultSpec {
        name: "no".into(),
        kind: FaultKind::Veto,
        targets: vec![Target::Ordinal(1)],
        groups: vec![],
        latency_ms: None,
        jitter_ms: None,
        probability: p,
        offset_ms: None,
        duration_seconds: Some(30),
        start_after_seconds: None,
    };
    let mut rc = fixture("raft-3");
    rc.spec.faults = vec![veto(Some(0.5))];
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("veto only acts in replication: 2pc (this cluster is raft)"),
        "{all}"
    );
    rc.spec.replication = Replication::TwoPc;
    assert!(validation::validate(&rc).is_empty());
    for bad in [None, Some(1.5), Some(-0.1)] {
        rc.spec.faults = vec![veto(bad)];
        let all = validation::validate(&rc).join("\n");
        assert!(
            all.contains("veto needs probability in [0, 1]"),
            "{bad:?}: {all}"
        );
    }
}

/// A `crash` fault `name` on `targets` for 30 s.
fn crash_fault(name: &str, targets: Vec<Target>) -> crate::crd::FaultSpec {
    crate::crd::FaultSpec {
        name: name.into(),
        kind: FaultKind::Crash,
        targets,
        groups: vec![],
        latency_ms: None,
        jitter_ms: None,
        probability: None,
        offset_ms: None,
        duration_seconds: Some(30),
        start_after_seconds: None,
    }
}

#[test]
fn a_2pc_coordinator_is_crashed_only_with_storage() {
    let crash = |target: Target| crash_fault("down", vec![target]);
    let mut rc = fixture("raft-3");
    rc.spec.replication = Replication::TwoPc;
    for coordinator in [Target::Leader, Target::Ordinal(0)] {
        rc.spec.faults = vec![crash(coordinator.clone())];
        let all = validation::validate(&rc).join("\n");
        assert!(
            all.contains("a crash of the 2pc coordinator (demo-0) without spec.storage loses its decision log"),
            "{coordinator:?}: {all}"
        );
        assert!(
            all.contains("create a new cluster with spec.storage"),
            "{all}"
        );
    }
    // Participants may crash; the coordinator is the pod status.leader names.
    rc.spec.faults = vec![crash(Target::Followers), crash(Target::Ordinal(2))];
    rc.spec.faults[1].name = "down-2".into();
    assert!(validation::validate(&rc).is_empty());
    rc.status.get_or_insert_with(Default::default).leader = Some("demo-2".into());
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("fault \"down-2\": a crash of the 2pc coordinator (demo-2)"),
        "{all}"
    );
    // With storage the coordinator returns with its log.
    rc.spec.storage = serde_yaml::from_str("{size: 64Mi}").expect("storage");
    rc.spec.faults = vec![crash(Target::Leader)];
    assert!(validation::validate(&rc).is_empty());
}

/// A member pod whose `data` volume is a claim (`on_claim`) or an emptyDir.
fn member_pod(name: &str, on_claim: bool) -> k8s_openapi::api::core::v1::Pod {
    let data = if on_claim {
        "persistentVolumeClaim: {claimName: data-demo-0}"
    } else {
        "emptyDir: {}"
    };
    serde_yaml::from_str(&format!(
        "metadata: {{name: {name}}}\nspec:\n  containers: [{{name: member}}]\n  \
         volumes: [{{name: data, {data}}}]\n"
    ))
    .expect("Pod")
}

#[test]
fn storage_is_not_added_to_a_running_2pc_cluster_on_emptydir() {
    let mut rc = fixture("raft-3");
    rc.spec.replication = Replication::TwoPc;
    rc.spec.storage = serde_yaml::from_str("{size: 64Mi}").expect("storage");
    let pods = |on_claim| {
        (0..3)
            .map(|o| (o, member_pod(&format!("demo-{o}"), on_claim)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // Created without storage: the coordinator's decision log is on an emptyDir.
    let why = validation::against_pods(&rc, &pods(false)).expect("refused");
    assert!(why.contains("coordinator demo-0"), "{why}");
    assert!(
        why.contains("create a new cluster with spec.storage"),
        "{why}"
    );
    // Created with storage (or not running yet), or another mode: nothing to refuse.
    assert_eq!(validation::against_pods(&rc, &pods(true)), None);
    assert_eq!(validation::against_pods(&rc, &Default::default()), None);
    rc.spec.replication = Replication::Raft;
    assert_eq!(validation::against_pods(&rc, &pods(false)), None);
}

#[test]
fn bad_quantities_are_spec_errors_that_say_how_to_fix_them() {
    let mut rc = fixture("raft-3");
    for (size, says) in [
        ("abc", "storage.size \"abc\" is not a Kubernetes quantity"),
        ("0", "storage.size must be above zero (got \"0\")"),
        ("-1Gi", "storage.size must be above zero (got \"-1Gi\")"),
    ] {
        rc.spec.storage = Some(crate::crd::Storage {
            size: size.into(),
            storage_class_name: None,
        });
        let all = validation::validate(&rc).join("\n");
        assert!(all.contains(says) && all.contains("64Mi"), "{size}: {all}");
    }
    rc.spec.storage = None;
    rc.spec.resources =
        serde_yaml::from_str("{requests: {cpu: lots}, limits: {memory: -1}}").expect("resources");
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("resources.requests.cpu \"lots\" is not a Kubernetes quantity"),
        "{all}"
    );
    assert!(
        all.contains("resources.limits.memory must not be negative"),
        "{all}"
    );
    rc.spec.resources =
        serde_yaml::from_str("{requests: {cpu: 100m, memory: 64Mi}}").expect("resources");
    rc.spec.storage = serde_yaml::from_str("{size: 1Gi}").expect("storage");
    assert!(validation::validate(&rc).is_empty());
}

#[test]
fn raft_members_are_crashed_without_storage_only_while_a_majority_survives() {
    let mut rc = fixture("raft-3");
    for targets in [
        vec![Target::Followers],
        vec![Target::Leader, Target::Ordinal(1)],
        vec![Target::Ordinal(0), Target::Ordinal(2)],
    ] {
        rc.spec.faults = vec![crash_fault("down", targets.clone())];
        let all = validation::validate(&rc).join("\n");
        assert!(
            all.contains(
                "a crash of 2 of 3 Raft members without spec.storage leaves 1, no majority"
            ),
            "{targets:?}: {all}"
        );
    }
    // One member at a time is fine (the second starts when the first ends); so is any crash
    // with storage.
    let mut staggered = crash_fault("two", vec![Target::Ordinal(2), Target::Ordinal(2)]);
    staggered.start_after_seconds = Some(30);
    rc.spec.faults = vec![crash_fault("one", vec![Target::Leader]), staggered];
    assert!(
        validation::validate(&rc).is_empty(),
        "{:?}",
        validation::validate(&rc)
    );
    rc.spec.faults = vec![crash_fault("down", vec![Target::Followers])];
    rc.spec.storage = Some(serde_yaml::from_str("{size: 64Mi}").expect("storage"));
    assert!(
        validation::validate(&rc).is_empty(),
        "{:?}",
        validation::validate(&rc)
    );
}

/// `crash_fault(name, targets)` in force from `start` s for `secs` s (`None`: for good).
fn crash_window(
    name: &str,
    targets: Vec<Target>,
    start: u64,
    secs: Option<u64>,
) -> crate::crd::FaultSpec {
    crate::crd::FaultSpec {
        start_after_seconds: Some(start),
        duration_seconds: secs,
        ..crash_fault(name, targets)
    }
}

#[test]
fn raft_crash_faults_in_force_at_once_are_judged_together() {
    let mut rc = fixture("raft-3");
    // [0, 30) and [20, 50) overlap from 20 s: the leader and member 2 may be two members.
    rc.spec.faults = vec![
        crash_window("first", vec![Target::Leader], 0, Some(30)),
        crash_window("second", vec![Target::Ordinal(2)], 20, Some(30)),
    ];
    let all = validation::validate(&rc).join("\n");
    for part in [
        "faults \"first\" and \"second\" overlap (in force at the same time): a crash of 2 of 3 \
         Raft members without spec.storage leaves 1, no majority (counting each fault's 'leader' \
         as a member no other target names",
        "stagger them (startAfterSeconds of one at least the other's startAfterSeconds + \
         durationSeconds; the operator also waits before starting a crash until a majority \
         would survive, so the later one starts once the member crashed before is back as a \
         voter), crash at most 1 member at a time (e.g. targets: [leader] or one ordinal)",
        "or create a new cluster with spec.storage",
    ] {
        assert!(all.contains(part), "{part}\nnot in: {all}");
    }
    assert_eq!(validation::validate(&rc).len(), 1, "reported once: {all}");

    // A fault without an end lasts for good: one much later still overlaps it.
    rc.spec.faults = vec![
        crash_window("forever", vec![Target::Ordinal(0)], 0, None),
        crash_window("later", vec![Target::Ordinal(1)], 3600, Some(10)),
    ];
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("faults \"forever\" and \"later\" overlap"),
        "{all}"
    );
    // "forever" never ends: staggering alone cannot help.
    assert!(
        all.contains("give \"forever\" a durationSeconds and stagger them"),
        "{all}"
    );

    // Staggered: the second starts when the first ends ([0, 30), [30, 60)), and a third
    // crash of the same member overlapping the second takes no other member.
    rc.spec.faults = vec![
        crash_window("first", vec![Target::Leader], 0, Some(30)),
        crash_window("second", vec![Target::Ordinal(2)], 30, Some(30)),
        crash_window("again", vec![Target::Ordinal(2)], 40, Some(5)),
    ];
    assert!(
        validation::validate(&rc).is_empty(),
        "{:?}",
        validation::validate(&rc)
    );

    // Five members survive two overlapping single crashes, not three.
    rc.spec.replicas = 5;
    rc.spec.faults = vec![
        crash_window("a", vec![Target::Ordinal(0)], 0, Some(60)),
        crash_window("b", vec![Target::Leader], 10, Some(60)),
    ];
    assert!(validation::validate(&rc).is_empty());
    rc.spec
        .faults
        .push(crash_window("c", vec![Target::Ordinal(4)], 50, None));
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains("faults \"a\", \"b\" and \"c\" overlap") && all.contains("3 of 5"),
        "{all}"
    );
    assert!(
        all.contains(
            "crash at most 2 members at a time (e.g. targets: [leader] or up to 2 ordinals)"
        ),
        "{all}"
    );
    assert!(all.contains("give \"c\" a durationSeconds"), "{all}");
}

/// A fault resolves its targets to one set of members: a target listed twice (or `primary`,
/// `leader`'s alias, beside it) is one member, not two.
#[test]
fn a_crash_fault_counts_each_of_its_members_once() {
    let mut rc = fixture("raft-3");
    for targets in ["[leader, leader]", "[leader, primary]", "[2, 2]"] {
        rc.spec.faults = vec![crash_fault("down", yaml_targets(targets))];
        let errs = validation::validate(&rc);
        assert!(errs.is_empty(), "{targets}: {errs:?}");
    }
    // Two faults' leaders may be two members; a repeated one in the same fault is still one.
    rc.spec.faults = vec![
        crash_fault("a", yaml_targets("[leader, leader]")),
        crash_fault("b", yaml_targets("[primary]")),
    ];
    let all = validation::validate(&rc).join("\n");
    assert!(all.contains("a crash of 2 of 3 Raft members"), "{all}");
    // One member: `followers` (listed twice) is nobody.
    rc.spec.replicas = 1;
    rc.spec.faults = vec![crash_fault("down", yaml_targets("[followers, followers]"))];
    let errs = validation::validate(&rc);
    assert!(errs.is_empty(), "{errs:?}");
}

/// `targets` written as in a spec (`[leader, primary]`).
fn yaml_targets(targets: &str) -> Vec<Target> {
    serde_yaml::from_str(targets).expect("targets")
}

/// Fewer than 3 members have none to spare: the refusal says so, without advice to crash
/// "at most 0 members".
#[test]
fn a_crash_of_one_of_two_raft_members_says_there_is_none_to_spare() {
    let mut rc = fixture("raft-3");
    rc.spec.replicas = 2;
    rc.spec.faults = vec![crash_fault("down", vec![Target::Ordinal(1)])];
    let all = validation::validate(&rc).join("\n");
    assert!(
        all.contains(
            "fault \"down\": a crash of 1 of 2 Raft members without spec.storage leaves 1, no \
             majority"
        ) && all.contains(
            "a cluster of 2 Raft members has no member to spare: remove the crash, raise \
             spec.replicas to at least 3, or create a new cluster with spec.storage"
        ),
        "{all}"
    );
    assert!(
        !all.contains("at most 0") && !all.contains("e.g. targets"),
        "{all}"
    );
}

/// A crash overlapping a partition is judged by its crash alone (a partition heals; the
/// members keep their logs); a `followers` crash that alone leaves no majority is reported
/// once, not again for every fault it overlaps.
#[test]
fn only_crash_faults_count_and_each_set_is_reported_once() {
    let mut rc = fixture("raft-3");
    let mut cut: crate::crd::FaultSpec = serde_yaml::from_str(
        "{name: cut, kind: partition, groups: [[leader], [followers]], durationSeconds: 30}",
    )
    .expect("partition");
    cut.start_after_seconds = Some(0);
    rc.spec.faults = vec![cut, crash_fault("down", vec![Target::Ordinal(1)])];
    let errs = validation::validate(&rc);
    assert!(errs.is_empty(), "{errs:?}");
    rc.spec.faults = vec![
        crash_fault("all-but-one", vec![Target::Followers]),
        crash_fault("one", vec![Target::Ordinal(0)]),
    ];
    let errs = validation::validate(&rc);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("fault \"all-but-one\": a crash of 2 of 3"),
        "{errs:?}"
    );
}

/// Without a workload a crash fault runs once: one that has expired (under the same spec)
/// no longer counts against a new one; edited, it would run again and counts.
#[test]
fn an_expired_crash_fault_no_longer_counts() {
    let mut rc = fixture("raft-3");
    rc.spec.faults = vec![
        crash_fault("a", vec![Target::Leader]),
        crash_fault("b", vec![Target::Ordinal(1)]),
    ];
    assert_eq!(validation::validate(&rc).len(), 1);
    let expired = crate::crd::FaultStatus {
        name: "a".into(),
        kind: FaultKind::Crash,
        state: crate::crd::FaultState::Expired,
        targets: vec![2],
        groups: vec![],
        since: Some("2020-01-01T00:00:00Z".into()),
        until: Some("2020-01-01T00:00:30Z".into()),
        spec_hash: Some(crate::faults::spec_hash(&rc.spec.faults[0])),
        message: None,
    };
    rc.status.get_or_insert_with(Default::default).faults = vec![expired];
    let errs = validation::validate(&rc);
    assert!(errs.is_empty(), "{errs:?}");
    rc.spec.faults[0].duration_seconds = Some(40);
    assert_eq!(
        validation::validate(&rc).len(),
        1,
        "an edited fault runs again"
    );
}
