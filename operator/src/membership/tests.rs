//! Unit tests of [`crate::membership`].

use caplab_api::identity::{Incarnation, PeerAddr};
use caplab_api::status::PeerStatus;

use crate::membership::{self, LossBound, Observed, PrimarySeen, PrimaryStep, Step};
use crate::testing::{node, obs, ps, role, status, sync_member};

#[test]
fn membership_bootstrap_waits_for_all_members() {
    let fresh = |o: u32, id: u64| obs(o, id, Some(status(id, role("learner"))));
    let partial = vec![fresh(0, 1), fresh(1, 2), obs(2, 3, None)];
    assert!(matches!(
        membership::next_raft_step(3, &partial, false),
        Step::Wait(_)
    ));
    let all = vec![fresh(0, 1), fresh(1, 2), fresh(2, 3)];
    match membership::next_raft_step(3, &all, false) {
        Step::Bootstrap { ordinal, members } => {
            assert_eq!(ordinal, 0);
            assert_eq!(members[&3].addr(), "10.0.0.12:7000");
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
        obs(3, 4, Some(status(4, role("learner")))),
    ];
    assert_eq!(
        membership::next_raft_step(4, &members, true),
        Step::AddLearner {
            ordinal: 3,
            id: 4,
            entry: PeerAddr::new("10.0.0.13:7000", Some(Incarnation::from_bits(4)))
        }
    );
    // Learner added but lagging.
    let mut leader = node(1, "leader", 2, &v, &[4]);
    leader.engine.peers.insert(
        4,
        PeerStatus {
            match_index: Some(10),
            lag_entries: 90,
            lag_ms: None,
            last_contact_ms: Some(5),
        },
    );
    members[0].status = Some(leader.clone());
    assert!(matches!(
        membership::next_raft_step(4, &members, true),
        Step::Wait(_)
    ));
    // Caught up: promote.
    leader.engine.peers.insert(
        4,
        PeerStatus {
            match_index: Some(100),
            lag_entries: 0,
            lag_ms: None,
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
    leader.engine.peers.insert(
        4,
        PeerStatus {
            match_index: Some(100),
            lag_entries: 0,
            lag_ms: None,
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
    s1.engine.applied_index = 90;
    s1.engine.leader = None;
    let mut s2 = node(3, "secondary", 1, &[], &[]);
    s2.engine.applied_index = 95;
    s2.engine.leader = None;
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
    p.engine.leader = Some(1);
    let mut s = node(2, "secondary", 1, &[], &[]);
    s.engine.leader = None;
    let members = vec![obs(0, 1, Some(p)), obs(1, 2, Some(s))];
    assert_eq!(
        membership::next_primary_step(2, &members, true, None, None, 10),
        PrimaryStep::Repoint {
            ordinals: vec![1],
            primary: 1,
            entry: PeerAddr::new("10.0.0.10:7000", Some(Incarnation::from_bits(1)))
        }
    );
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

fn incarnated(mut m: Observed, incarnation: &str) -> Observed {
    if let Some(s) = m.status.as_mut() {
        s.incarnation = incarnation.parse().expect("an incarnation");
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
    // A running member that did not answer: the plain string form (the receiver pins
    // whichever incarnation answers there first).
    let old = membership::address_book(&[obs(0, 1, None)]);
    assert_eq!(
        serde_json::to_value(&old).expect("json"),
        serde_json::json!({"1": "10.0.0.10:7000"})
    );
    let to = members[2].recipient().expect("running");
    let incarnation_c6: Incarnation = "00000000000000c6".parse().expect("an incarnation");
    assert_eq!(
        (to.ip, to.id, to.incarnation),
        ("10.0.0.12", 6, Some(&incarnation_c6))
    );
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
        s.engine.term = 0;
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
fn members_are_named_by_pod_with_the_id_as_detail() {
    let members = vec![obs(3, 6, None)];
    assert_eq!(membership::label_of(&members, 6), "demo-3 (member id 6)");
    assert_eq!(membership::label_of(&members, 4), "member id 4");
    assert_eq!(
        membership::labels_of(&members, &[6, 4]),
        "demo-3 (member id 6), member id 4"
    );
}
