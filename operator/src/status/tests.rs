//! Unit tests of [`crate::status`].

use caplab_api::status::{PeerStatus, Role, Status};

use super::*;
use crate::crd::{Condition, MemberStatus, Phase};
use crate::membership::{self, PrimaryStep};
use crate::status::{self, Summary};
use crate::testing::{heard_at, status, sync_member};

/// A leader's (primary's) status with the given peers: (id, last contact in ms).
fn leader(replication: &str, voters: &[u64], peers: &[(u64, Option<u64>)]) -> Status {
    let mut st = status(1, Role::Leader);
    st.engine.replication =
        serde_json::from_value(serde_json::Value::String(replication.into())).expect("a mode");
    st.engine.voters = voters.to_vec();
    st.engine.peers = peers
        .iter()
        .map(|(id, ms)| {
            let p = PeerStatus {
                last_contact_ms: *ms,
                ..heard_at(10, 0)
            };
            (*id, p)
        })
        .collect();
    st
}

#[test]
fn replicating_is_what_the_leader_acknowledged_recently() {
    // Raft: member 3 is cut off (last heard 5 s ago), member 2 was never heard from.
    let l = leader("raft", &[1, 2, 3], &[(2, None), (3, Some(5_000))]);
    assert!(!replicating(Some(&l), 2));
    assert!(!replicating(Some(&l), 3));
    assert!(
        !replicating(Some(&l), 1),
        "a leader without a majority cannot commit"
    );
    let l = leader("raft", &[1, 2, 3], &[(2, Some(40)), (3, Some(5_000))]);
    assert!(replicating(Some(&l), 1) && replicating(Some(&l), 2));
    assert!(!replicating(None, 2), "no leader: nobody replicates");

    // Async: an isolated primary still acknowledges writes alone; its secondaries do not
    // replicate. Sync: the primary needs every secondary.
    let p = leader("async", &[], &[(2, Some(9_000)), (3, Some(9_000))]);
    assert!(replicating(Some(&p), 1));
    assert!(!replicating(Some(&p), 2));
    let p = leader("sync", &[], &[(2, Some(30)), (3, Some(9_000))]);
    assert!(!replicating(Some(&p), 1));
    assert!(replicating(Some(&p), 2));
}

fn member(name: &str, id: u64, reachable: bool, replicating: bool) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        id,
        reachable,
        replicating,
        role: Some("follower".into()),
        term: Some(4),
        ..MemberStatus::default()
    }
}

/// A bootstrapped three-voter cluster that demo-0 leads, with these members.
fn three_voters_led_by_demo_0(members: &[MemberStatus]) -> Summary<'_> {
    Summary {
        bootstrapped: true,
        created: true,
        leader: Some("demo-0"),
        replicas: 3,
        members,
        voters: &[1, 2, 3],
        ..Summary::default()
    }
}

#[test]
fn degraded_message_says_where_reachable_and_replicating_differ() {
    let members = [
        member("demo-0", 1, true, true),
        member("demo-1", 2, true, false),
        member("demo-2", 3, false, true),
    ];
    let s = Summary {
        term: Some(4),
        ..three_voters_led_by_demo_0(&members)
    };
    assert_eq!(phase(&s), Phase::Degraded);
    let cs = conditions(&[], &s, Phase::Degraded, None, "t");
    let d = cs.iter().find(|c| c.type_ == "Degraded").expect("Degraded");
    assert!(
        d.message.starts_with("1/3 members healthy"),
        "{}",
        d.message
    );
    assert!(
        d.message
            .contains("demo-1: reachable by the operator but not replicating"),
        "{}",
        d.message
    );
    assert!(
        d.message
            .contains("demo-2: the operator cannot poll it, but the leader hears from it"),
        "{}",
        d.message
    );
}

#[test]
fn a_leader_that_cannot_commit_means_no_quorum() {
    let members = [
        member("demo-0", 1, true, false),
        member("demo-1", 2, true, false),
        member("demo-2", 3, true, false),
    ];
    let s = three_voters_led_by_demo_0(&members);
    assert_eq!(phase(&s), Phase::NoQuorum);
    let cs = conditions(&[], &s, Phase::NoQuorum, None, "t");
    let a = cs
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert_eq!(a.status, "False");
    assert!(
        a.message
            .starts_with("demo-0 leads but cannot commit writes"),
        "{}",
        a.message
    );
}

#[test]
fn an_invalid_spec_fails_only_a_cluster_that_was_never_created() {
    let errs = ["replication is immutable".to_string()];
    let members = [member("demo-0", 1, true, true)];
    let mut s = Summary {
        errors: &errs,
        created: true,
        bootstrapped: true,
        leader: Some("demo-0"),
        replicas: 1,
        members: &members,
        voters: &[1],
        ..Summary::default()
    };
    assert_eq!(phase(&s), Phase::Ready);
    s.created = false;
    s.bootstrapped = false;
    assert_eq!(phase(&s), Phase::Failed);
}

#[test]
fn campaigning_members_are_named_with_their_highest_term() {
    let mut members = vec![member("demo-0", 1, true, false); 3];
    for (m, t) in members.iter_mut().zip([7, 9, 8]) {
        m.term = Some(t);
    }
    assert_eq!(highest_term(&members, Some(3)), Some(9));
    assert_eq!(campaigning(&members, Some(3)), Some(9), "terms rose");
    assert_eq!(campaigning(&members, Some(9)), None, "terms stand still");
    members[0].role = Some("candidate".into());
    assert_eq!(campaigning(&members, Some(9)), Some(9));
    let s = Summary {
        bootstrapped: true,
        created: true,
        replicas: 3,
        members: &members,
        campaigning: Some(9),
        ..Summary::default()
    };
    let cs = conditions(&[], &s, Phase::NoQuorum, None, "t");
    let a = cs
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert!(
        a.message
            .contains("members are campaigning without a winner (terms up to 9)"),
        "{}",
        a.message
    );
}

fn st(phase: Phase, leader: Option<(&str, u64, u64)>) -> RegisterClusterStatus {
    let record = leader.map(|(name, id, term)| LeaderRecord {
        name: name.into(),
        id,
        term,
    });
    RegisterClusterStatus {
        phase: Some(phase),
        replication: Some(Replication::Raft),
        leader: record.as_ref().map(|l| l.name.clone()),
        leader_id: record.as_ref().map(|l| l.id),
        last_leader: record,
        ready: Some("3/3".into()),
        ..RegisterClusterStatus::default()
    }
}

#[test]
fn leader_changes_name_the_previous_leader_even_after_no_quorum() {
    let first = st(Phase::Ready, Some(("demo-1", 2, 3)));
    let notes = transitions(&RegisterClusterStatus::default(), &first);
    assert_eq!(notes[0].note, "leader demo-1 (term 3; member id 2)");

    // The leader is lost: no leader, the last one kept.
    let mut lost = st(Phase::NoQuorum, None);
    lost.last_leader = first.last_leader.clone();
    let notes = transitions(&first, &lost);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].reason, "QuorumLost");
    assert_eq!(
        notes[0].note,
        "no leader: writes are refused (last leader demo-1, term 3)"
    );

    let back = st(Phase::Ready, Some(("demo-3", 4, 5)));
    let notes = transitions(&lost, &back);
    let reasons: Vec<&str> = notes.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["LeaderChanged", "QuorumRegained", "Ready"]);
    assert_eq!(
        notes[0].note,
        "leader demo-1 -> demo-3 (term 5; member ids 2 -> 4)"
    );
    assert_eq!(notes[1].note, "leader demo-3 (term 5)");

    // The primary modes say primary and epoch.
    let (mut was, mut now) = (first.clone(), back.clone());
    was.replication = Some(Replication::Async);
    now.replication = Some(Replication::Async);
    assert_eq!(
        transitions(&was, &now)[0].note,
        "primary demo-1 -> demo-3 (epoch 5; member ids 2 -> 4)"
    );
    // A leader that cannot commit: quorum lost, the leader named.
    let stranded = st(Phase::NoQuorum, Some(("demo-1", 2, 3)));
    assert_eq!(
        transitions(&first, &stranded)[0].note,
        "leader demo-1 cannot commit writes: writes are refused"
    );
}

#[test]
fn the_same_leader_again_is_not_a_change_and_2pc_names_its_coordinator_without_a_term() {
    let first = st(Phase::Ready, Some(("demo-1", 2, 3)));
    let mut lost = st(Phase::NoQuorum, None);
    lost.last_leader = first.last_leader.clone();
    let reasons = |notes: Vec<Note>| notes.iter().map(|n| n.reason).collect::<Vec<_>>();
    // Back in the same term (unseen for a while): no LeaderChanged.
    let back = st(Phase::Ready, Some(("demo-1", 2, 3)));
    assert_eq!(
        reasons(transitions(&lost, &back)),
        ["QuorumRegained", "Ready"]
    );
    // Re-elected in a later term: said as such, not as `demo-1 -> demo-1`.
    let again = st(Phase::Ready, Some(("demo-1", 2, 4)));
    assert_eq!(
        transitions(&lost, &again)[0].note,
        "leader demo-1 again (term 4; member id 2)"
    );

    let twopc = |mut s: RegisterClusterStatus| {
        s.replication = Some(Replication::TwoPc);
        s
    };
    let first = twopc(st(Phase::Ready, Some(("demo-0", 1, 0))));
    let notes = transitions(&RegisterClusterStatus::default(), &first);
    assert_eq!(notes[0].note, "coordinator demo-0 (member id 1)");
    let mut down = twopc(st(Phase::NoQuorum, None));
    down.last_leader = first.last_leader.clone();
    assert_eq!(
        transitions(&first, &down)[0].note,
        "no coordinator: writes are refused (last coordinator demo-0)"
    );
    // The coordinator restarted: no LeaderChanged (Unblocked says it), no term.
    let notes = transitions(&down, &first);
    assert_eq!(reasons(notes.clone()), ["QuorumRegained", "Ready"]);
    assert_eq!(notes[0].note, "coordinator demo-0");
}

#[test]
fn the_last_leader_keeps_the_term_it_reported() {
    let mut gone = mstat(1, false, 0);
    gone.term = None; // its pod was just deleted: the entry is empty
    let mut other = mstat(2, true, 0);
    other.term = Some(1);
    let members = [gone, other];
    let rec = last_leader(Some(("demo-0", 1)), Some(1), &members, None).expect("a record");
    assert_eq!((rec.name.as_str(), rec.id, rec.term), ("demo-0", 1, 1));
    let rec = last_leader(Some(("demo-0", 1)), None, &members, None).expect("a record");
    assert_eq!(rec.term, 1, "the highest term a member reports");
}

#[test]
fn busy_while_anything_changes() {
    let ready = st(Phase::Ready, Some(("demo-0", 1, 1)));
    assert!(!busy(&ready, &ready, false), "Ready and quiet");
    assert!(busy(&ready, &ready, true), "converging");
    assert!(busy(&st(Phase::Degraded, None), &ready, false), "not Ready");
    let mut before = ready.clone();
    before.commit_index = Some(41);
    let mut writing = ready.clone();
    writing.commit_index = Some(42);
    assert!(busy(&writing, &before, false), "writes flowing");
    assert!(
        !busy(&writing, &ready, false),
        "first sight of the commit index"
    );
    let mut faulty = ready.clone();
    faulty.faults.push(FaultStatus {
        name: "cut".into(),
        kind: crate::crd::FaultKind::Partition,
        state: FaultState::Pending,
        targets: vec![],
        groups: vec![],
        since: None,
        until: None,
        spec_hash: None,
        message: None,
    });
    assert!(busy(&faulty, &ready, false), "a fault pending");
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

#[test]
fn leaderless_phase_follows_who_reaches_max_r_w_replicas() {
    let members = [
        member("lq-0", 1, true, false),
        member("lq-1", 2, true, true),
        member("lq-2", 3, true, true),
    ];
    let serving = ["lq-1".to_string(), "lq-2".to_string()];
    let s = Summary {
        leader: None,
        leaderless: Some(Leaderless {
            read: 2,
            write: 2,
            serving: &serving,
        }),
        ..three_voters_led_by_demo_0(&members)
    };
    assert_eq!(phase(&s), Phase::Degraded, "available, one replica cut off");
    let cs = conditions(&[], &s, Phase::Degraded, None, "t");
    let a = cs
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("True", "QuorumsReachable")
    );
    assert!(
        a.message
            .contains("lq-1, lq-2 reach max(R, W) = 2 replicas"),
        "{}",
        a.message
    );
    let d = cs.iter().find(|c| c.type_ == "Degraded").expect("Degraded");
    assert!(
        d.message.contains("lq-0: cut off from some replicas"),
        "{}",
        d.message
    );

    let nobody = Summary {
        leaderless: Some(Leaderless {
            read: 2,
            write: 2,
            serving: &[],
        }),
        ..s.clone()
    };
    assert_eq!(phase(&nobody), Phase::NoQuorum);
    let cs = conditions(&[], &nobody, Phase::NoQuorum, None, "t");
    let a = cs
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available");
    assert!(
        a.message.contains("no member reaches max(R, W) = 2"),
        "{}",
        a.message
    );

    let all_up = [
        member("lq-0", 1, true, true),
        member("lq-1", 2, true, true),
        member("lq-2", 3, true, true),
    ];
    let ready = Summary {
        members: &all_up,
        ..s.clone()
    };
    assert_eq!(phase(&ready), Phase::Ready);
}

#[test]
fn leaderless_clusters_announce_quorums_not_leaders() {
    let mut was = st(Phase::Ready, None);
    was.replication = Some(Replication::Quorum);
    let mut now = was.clone();
    now.phase = Some(Phase::NoQuorum);
    now.leader = Some(crate::crd::LEADERLESS.into());
    now.quorum = Some(crate::crd::QuorumSummary {
        n: 3,
        read_quorum: 2,
        write_quorum: 2,
        overlapping: true,
        ..Default::default()
    });
    let notes = transitions(&was, &now);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].reason, "QuorumLost");
    assert!(
        notes[0].note.contains("no member reaches max(R, W) = 2"),
        "{notes:?}"
    );
    was.quorum = now.quorum.clone();
    was.quorum.as_mut().expect("quorum").serving = vec!["lq-0".into()];
    let back = transitions(&now, &was);
    assert!(back.iter().all(|n| n.reason != "LeaderChanged"), "{back:?}");
    let regained = back.iter().find(|n| n.reason == "QuorumRegained");
    assert!(
        regained.is_some_and(|n| n.note.contains("lq-0 reach max(R, W) = 2")),
        "{back:?}"
    );
}

#[test]
fn a_quorum_member_outside_the_membership_is_not_called_a_voter() {
    let members = [member("lq-0", 1, true, true), member("lq-3", 4, true, true)];
    let serving = ["lq-0".to_string()];
    let leaderless = Summary {
        leader: None,
        leaderless: Some(Leaderless {
            read: 1,
            write: 1,
            serving: &serving,
        }),
        ..three_voters_led_by_demo_0(&members)
    };
    assert_eq!(
        member_problem(&members[1], &leaderless).as_deref(),
        Some("lq-3: not in the replicas' membership (member id 4)")
    );
    let raft = three_voters_led_by_demo_0(&members);
    assert_eq!(
        member_problem(&members[1], &raft).as_deref(),
        Some("lq-3: not a voter (member id 4)")
    );
}
