//! Unit tests of [`crate::faults`].

use chrono::{Duration, TimeZone, Utc};
use std::collections::BTreeMap;

use crate::crd::FaultState;
use caplab_api::faults::{FaultSet, PeerFilter};

use crate::faults;
use crate::testing::fixture;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
}

fn ids3() -> BTreeMap<u32, u64> {
    BTreeMap::from([(0, 1), (1, 2), (2, 3)])
}

/// Three members with these ids, led by ordinal 1, with no voters to keep (storage).
fn serving(ids: &BTreeMap<u32, u64>) -> faults::Cluster<'_> {
    faults::Cluster {
        replicas: 3,
        ids,
        leader: Some(1),
        voters: None,
    }
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
    assert_eq!(plan.sets[&1].partition, Some(cut_from(&[1, 3])));
    assert_eq!(plan.sets[&0].partition, Some(cut_from(&[2])));
    assert_eq!(plan.sets[&2].partition, Some(cut_from(&[2])));
    let delay = plan.sets[&2].delay.clone().expect("delay");
    assert_eq!((delay.latency_ms, delay.jitter_ms), (200, 50));
    assert!(delay.peers.is_empty());
    assert_eq!(
        plan.sets[&0].loss.as_ref().map(|l| l.probability),
        Some(0.2)
    );
    assert!(plan.sets[&1].loss.is_none());
    assert!(plan.sets[&0].pause);
    assert_eq!(plan.sets[&1].clock_skew_ms, 3000);
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
    assert_eq!(json["pause"], false);
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
    assert_eq!(
        healed.sets[&0],
        FaultSet::default(),
        "healed: the set that heals everything"
    );
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

/// A partition cutting these peers both ways.
fn cut_from(peers: &[u64]) -> PeerFilter {
    PeerFilter {
        peers: peers.iter().copied().collect(),
        ..PeerFilter::default()
    }
}

#[test]
fn planned_fault_set_equals_the_member_report_of_it() {
    // The member reports the set in its own form (peers in any order, defaults spelt out):
    // the operator compares it with the plan and pushes only when they differ.
    let reported: FaultSet = serde_json::from_value(serde_json::json!({
        "partition": {"peers": [3, 1]}, "pause": false, "clockSkewMs": 0, "loss": null
    }))
    .expect("parse");
    let desired = FaultSet {
        partition: Some(cut_from(&[1, 3])),
        ..FaultSet::default()
    };
    assert_eq!(reported, desired);
}

#[test]
fn a_zero_probability_loss_is_no_fault() {
    let spec: Vec<crate::crd::FaultSpec> =
        serde_yaml::from_str("[{name: none, kind: loss, targets: [0], probability: 0.0}]")
            .expect("fault spec");
    let plan = faults::plan(&spec, &[], t0(), 3, &ids3(), Some(1));
    assert_eq!(plan.sets[&0], FaultSet::default());
}

#[test]
fn a_veto_fault_is_the_member_fault_set_veto_on_its_targets() {
    let spec: Vec<crate::crd::FaultSpec> = serde_yaml::from_str(
        "[{name: no, kind: veto, targets: [1], probability: 0.5, durationSeconds: 30}]",
    )
    .expect("fault spec");
    let plan = faults::plan(&spec, &[], t0(), 3, &ids3(), Some(1));
    let json = serde_json::to_value(&plan.sets[&1]).expect("json");
    assert_eq!(json["veto"], serde_json::json!({"probability": 0.5}));
    assert!(plan.sets[&0].veto.is_none());
    assert_eq!(plan.member_faults[&1], vec!["veto".to_string()]);
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

/// `startAfterSeconds` counts from time zero (the workload's start, or the first Ready):
/// before it the fault is pending with the time it starts, and its start wakes the operator.
#[test]
fn scheduled_faults_wait_for_their_start() {
    let rc = fixture("faults");
    let mut spec = rc.spec.faults.clone();
    spec[0].start_after_seconds = Some(10);
    let ids = ids3();
    let sched = faults::Schedule {
        zero: Some(t0()),
        workload: false,
    };
    let early = faults::plan_scheduled(&spec, &[], t0(), &serving(&ids), &sched);
    assert_eq!(early.statuses[0].state, FaultState::Pending);
    assert_eq!(
        early.statuses[0].message.as_deref(),
        Some("starts at 2024-01-01T00:00:10Z (10 s after the cluster's first Ready)")
    );
    assert_eq!(early.next_expiry, Some(t0() + Duration::seconds(10)));
    // Faults without startAfterSeconds start at once, as before.
    assert_eq!(early.statuses[1].state, FaultState::Active);
    let later = t0() + Duration::seconds(10);
    let due = faults::plan_scheduled(&spec, &early.statuses, later, &serving(&ids), &sched);
    assert_eq!(due.statuses[0].state, FaultState::Active);
    assert_eq!(
        due.statuses[0].since.as_deref(),
        Some("2024-01-01T00:00:10Z")
    );
}

/// With a workload every fault waits for the run's start, and a new run starts them again.
#[test]
fn with_a_workload_faults_follow_the_run() {
    let rc = fixture("faults");
    let spec = &rc.spec.faults[..1];
    let ids = ids3();
    let mut sched = faults::Schedule {
        zero: None,
        workload: true,
    };
    let waiting = faults::plan_scheduled(spec, &[], t0(), &serving(&ids), &sched);
    assert_eq!(
        waiting.statuses[0].message.as_deref(),
        Some("waiting for the workload's start")
    );
    sched.zero = Some(t0());
    let first = faults::plan_scheduled(spec, &waiting.statuses, t0(), &serving(&ids), &sched);
    assert_eq!(first.statuses[0].state, FaultState::Active);
    let end = t0() + Duration::seconds(40);
    let over = faults::plan_scheduled(spec, &first.statuses, end, &serving(&ids), &sched);
    assert_eq!(over.statuses[0].state, FaultState::Expired);
    sched.zero = Some(end);
    let again = faults::plan_scheduled(spec, &over.statuses, end, &serving(&ids), &sched);
    assert_eq!(
        again.statuses[0].state,
        FaultState::Active,
        "a new run, a new start"
    );
}

/// Three Raft members without storage, ids 1-3 (all voters and all answering unless
/// `running` says otherwise), led by ordinal 2.
fn raft_without_storage<'a>(ids: &'a BTreeMap<u32, u64>, running: &[u64]) -> faults::Cluster<'a> {
    faults::Cluster {
        replicas: 3,
        ids,
        leader: Some(2),
        voters: Some(faults::Voters::new(
            "demo",
            &[1, 2, 3],
            running.iter().copied(),
        )),
    }
}

fn deferrals(plan: &faults::FaultPlan) -> Vec<String> {
    plan.events
        .iter()
        .filter(|e| matches!(e, faults::FaultEvent::Deferred { .. }))
        .map(|e| e.note(|o| format!("demo-{o}")))
        .collect()
}

/// Two crash faults due in the same pass (a cluster Ready for an hour when both are
/// applied, the second's `startAfterSeconds` long past): the first starts, the second waits
/// until a majority of the voters would survive it, announced once, and starts once the first
/// member is back as a voter. Other faults are planned as usual meanwhile.
#[test]
fn a_crash_that_would_leave_no_majority_of_voters_running_waits() {
    let spec: Vec<crate::crd::FaultSpec> = serde_yaml::from_str(
        "[{name: a, kind: crash, targets: [0], durationSeconds: 30},
          {name: b, kind: crash, targets: [1], startAfterSeconds: 60, durationSeconds: 30},
          {name: slow, kind: delay, targets: [2], latencyMs: 50}]",
    )
    .expect("fault spec");
    let sched = faults::Schedule {
        zero: Some(t0() - Duration::hours(1)),
        workload: false,
    };
    let ids = ids3();
    let first = faults::plan_scheduled(
        &spec,
        &[],
        t0(),
        &raft_without_storage(&ids, &[1, 2, 3]),
        &sched,
    );
    let states: Vec<FaultState> = first.statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![FaultState::Active, FaultState::Pending, FaultState::Active]
    );
    let waits = "waiting: crashing demo-1 now would leave 1 of 3 voters running (demo-0 is down \
                 or not yet back as a voter); starts when a majority would survive";
    assert_eq!(first.statuses[1].message.as_deref(), Some(waits));
    assert_eq!(
        deferrals(&first),
        vec![waits.replace("waiting: ", "fault b deferred: ")]
    );
    assert_eq!(first.crashed.iter().copied().collect::<Vec<_>>(), vec![0]);
    assert!(
        first.sets[&2].delay.is_some(),
        "the deferral blocks no other fault"
    );

    // Demo-0 is down: b still waits, announced no more; a stays as it was.
    let t5 = t0() + Duration::seconds(5);
    let waiting = faults::plan_scheduled(
        &spec,
        &first.statuses,
        t5,
        &raft_without_storage(&ids, &[2, 3]),
        &sched,
    );
    assert_eq!(waiting.statuses[0], first.statuses[0]);
    assert_eq!(waiting.statuses[1].state, FaultState::Pending);
    assert!(deferrals(&waiting).is_empty(), "{:?}", waiting.events);

    // A expired; demo-0 is back empty as member 4, a learner: b still waits (old voter 1
    // is gone), and a leader lost meanwhile neither changes what it waits for nor announces it.
    let t40 = t0() + Duration::seconds(40);
    let back = BTreeMap::from([(0, 4), (1, 2), (2, 3)]);
    let expired = faults::plan_scheduled(
        &spec,
        &waiting.statuses,
        t40,
        &raft_without_storage(&back, &[2, 3]),
        &sched,
    );
    assert_eq!(expired.statuses[0].state, FaultState::Expired);
    assert_eq!(expired.statuses[1].state, FaultState::Pending);
    let mut leaderless = raft_without_storage(&back, &[2, 3]);
    leaderless.leader = None;
    let lost = faults::plan_scheduled(&spec, &expired.statuses, t40, &leaderless, &sched);
    assert_eq!(lost.statuses[1].message, expired.statuses[1].message);
    assert!(deferrals(&expired).is_empty() && deferrals(&lost).is_empty());

    // Member 4 promoted, member 1 removed: crashing demo-1 leaves 2 of 3, so b starts.
    let mut rejoined = raft_without_storage(&back, &[]);
    rejoined.voters = Some(faults::Voters::new("demo", &[2, 3, 4], [2, 3, 4]));
    let t50 = t0() + Duration::seconds(50);
    let started = faults::plan_scheduled(&spec, &lost.statuses, t50, &rejoined, &sched);
    assert_eq!(started.statuses[0], expired.statuses[0]);
    assert_eq!(started.statuses[1].state, FaultState::Active);
    assert_eq!(started.statuses[1].targets, vec![1]);
    assert_eq!(
        started.statuses[1].since.as_deref(),
        Some("2024-01-01T00:00:50Z")
    );
    assert_eq!(started.crashed.iter().copied().collect::<Vec<_>>(), vec![1]);
}

/// Without voters to keep (storage, or another mode) crashes start together, as before;
/// with them a crash starts while a majority of the voters would survive it, counting the
/// members crashes in force keep down (another crash of such a member takes nobody more).
#[test]
fn the_voter_guard_holds_back_only_what_would_lose_the_majority() {
    let spec: Vec<crate::crd::FaultSpec> = serde_yaml::from_str(
        "[{name: a, kind: crash, targets: [leader], durationSeconds: 30},
          {name: b, kind: crash, targets: [0], durationSeconds: 30},
          {name: c, kind: crash, targets: [2, leader], durationSeconds: 30}]",
    )
    .expect("fault spec");
    let ids = ids3();
    let plan = faults::plan(&spec, &[], t0(), 3, &ids, Some(2));
    assert_eq!(plan.active_names(), vec!["a", "b", "c"]);
    let guarded = faults::plan_scheduled(
        &spec,
        &[],
        t0(),
        &raft_without_storage(&ids, &[1, 2, 3]),
        &faults::Schedule::default(),
    );
    assert_eq!(guarded.active_names(), vec!["a", "c"]);
    assert_eq!(
        guarded.statuses[1].message.as_deref(),
        Some(
            "waiting: crashing demo-0 now would leave 1 of 3 voters running (demo-2 is down or \
             not yet back as a voter); starts when a majority would survive"
        )
    );
    // Two voters of three already down: the message names both.
    let down = faults::plan_scheduled(
        &spec[1..2],
        &[],
        t0(),
        &raft_without_storage(&ids, &[]),
        &faults::Schedule::default(),
    );
    assert_eq!(
        down.statuses[0].message.as_deref(),
        Some(
            "waiting: crashing demo-0 now would leave 0 of 3 voters running (demo-1, demo-2 are \
             down or not yet back as voters); starts when a majority would survive"
        )
    );
}
