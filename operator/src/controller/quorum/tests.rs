//! Unit tests of the quorum mode's membership decisions and status summary.

use std::collections::BTreeMap;

use caplab_api::status::{QuorumCounters, QuorumStatus, Reach, Replication, Role};

use super::*;
use crate::testing::{obs, status};

/// A quorum replica (member `id` at `ordinal`) holding `membership`, reaching `reached` of
/// it, with R = W = 2.
fn replica(ordinal: u32, id: u64, membership: &[u64], reached: &[u64]) -> Observed {
    let mut st = status(id, Role::Replica);
    st.engine.replication = Replication::Quorum;
    st.engine.voters = membership.to_vec();
    st.voter = !membership.is_empty();
    st.quorum = Some(QuorumStatus {
        n: membership.len(),
        read_quorum: 2,
        write_quorum: 2,
        overlapping: membership.len() < 4,
        replicas: membership
            .iter()
            .map(|m| {
                let up = reached.contains(m);
                let reach = Reach {
                    reachable: up,
                    last_contact_ms: up.then_some(20),
                    last_error: None,
                };
                (*m, reach)
            })
            .collect(),
        anti_entropy_interval_ms: 1000,
        counters: QuorumCounters::default(),
    });
    obs(ordinal, id, Some(st))
}

fn fresh(ordinal: u32, id: u64) -> Observed {
    replica(ordinal, id, &[], &[])
}

#[test]
fn sizes_default_to_a_majority_like_the_member() {
    assert_eq!(quorum_sizes(None, None, 3), (2, 2));
    assert_eq!(quorum_sizes(Some(1), None, 5), (1, 3));
    assert_eq!(quorum_sizes(Some(1), Some(1), 3), (1, 1));
}

#[test]
fn first_init_waits_for_every_member_then_goes_to_the_lowest_ordinal() {
    let mut members = vec![fresh(0, 1), fresh(1, 2), obs(2, 3, None)];
    match next_quorum_step(3, &members, 2) {
        QuorumStep::Wait(why) => assert!(why.contains("(2 of 3)"), "{why}"),
        other => panic!("{other:?}"),
    }
    members[2] = fresh(2, 3);
    match next_quorum_step(3, &members, 2) {
        QuorumStep::Init {
            ordinal,
            members,
            first,
        } => {
            assert_eq!(ordinal, 0);
            assert!(first);
            assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_converged_membership_is_stable_even_under_a_partition() {
    // Member 1 is cut off from 2 and 3: the membership is still every running member.
    let members = vec![
        replica(0, 1, &[1, 2, 3], &[1]),
        replica(1, 2, &[1, 2, 3], &[2, 3]),
        replica(2, 3, &[1, 2, 3], &[2, 3]),
    ];
    assert_eq!(next_quorum_step(3, &members, 2), QuorumStep::Stable);
}

#[test]
fn a_replaced_member_is_taken_in_by_an_init_to_it() {
    // demo-2 came back empty as member 4: it holds no membership, the others list 3.
    let members = vec![
        replica(0, 1, &[1, 2, 3], &[1, 2]),
        replica(1, 2, &[1, 2, 3], &[1, 2]),
        fresh(2, 4),
    ];
    match next_quorum_step(3, &members, 2) {
        QuorumStep::Init {
            ordinal,
            members,
            first,
        } => {
            assert_eq!(ordinal, 0, "the first member whose membership differs");
            assert!(!first);
            assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_few_members_keep_the_membership() {
    let mut down = obs(1, 2, None);
    down.pod_ip = None;
    let members = vec![replica(0, 1, &[1, 2, 3], &[1]), down, obs(2, 3, None)];
    match next_quorum_step(3, &members, 2) {
        QuorumStep::Wait(why) => assert!(why.contains("fewer than max(R, W) = 2"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scale_down_leaves_the_membership_before_the_pod_goes() {
    let all = [1, 2, 3, 4];
    let members = vec![
        replica(0, 1, &all, &all),
        replica(1, 2, &all, &all),
        replica(2, 3, &all, &all),
        replica(3, 4, &all, &all),
    ];
    match next_quorum_step(3, &members, 2) {
        QuorumStep::Init { members, .. } => {
            assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        other => panic!("{other:?}"),
    }
    let three = [1, 2, 3];
    let members = vec![
        replica(0, 1, &three, &three),
        replica(1, 2, &three, &three),
        replica(2, 3, &three, &three),
        replica(3, 4, &all, &all),
    ];
    assert_eq!(
        next_quorum_step(3, &members, 2),
        QuorumStep::DeletePod { ordinal: 3 }
    );
}

#[test]
fn summary_counts_who_serves_and_what_last_writer_wins_lost() {
    let all = [1, 2, 3];
    let mut members = vec![
        replica(0, 1, &all, &[1]),
        replica(1, 2, &all, &[2, 3]),
        replica(2, 3, &all, &[2, 3]),
    ];
    // Both replicas that hold the newer value count demo-0's late write: once per replica.
    for m in &mut members[1..] {
        let q = m
            .status
            .as_mut()
            .and_then(|s| s.quorum.as_mut())
            .expect("quorum");
        q.counters.lww_lost_writes = BTreeMap::from([(1, 3)]);
        q.counters.read_repairs = 2;
        q.counters.last_convergence_ms = Some(800);
    }
    let s = summary(&members, (9, 9));
    assert_eq!(
        (s.n, s.read_quorum, s.write_quorum),
        (3, 2, 2),
        "the members' sizes"
    );
    assert!(s.overlapping);
    assert_eq!(s.serving, vec!["demo-1".to_string(), "demo-2".to_string()]);
    assert_eq!(
        s.lww_lost_writes,
        BTreeMap::from([("demo-0".to_string(), 3)])
    );
    assert_eq!(s.read_repairs, 4);
    assert_eq!(s.last_convergence_ms, Some(800));
    assert!(!reaches_all(members[0].status.as_ref()));
    assert!(reaches_all(replica(0, 1, &all, &all).status.as_ref()));
    assert_eq!(common_membership(&members), vec![1, 2, 3]);
}

#[test]
fn summary_before_any_member_reports_uses_the_spec() {
    let members = vec![obs(0, 1, None), obs(1, 2, None), obs(2, 3, None)];
    let s = summary(&members, (1, 1));
    assert_eq!((s.n, s.read_quorum, s.write_quorum), (3, 1, 1));
    assert!(!s.overlapping, "R + W = 2 is not above N = 3");
    assert!(s.serving.is_empty());
}
