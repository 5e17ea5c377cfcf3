//! Unit tests of [`super`]: 2pc membership steps and the blocked status.

use caplab_api::status::{InDoubt, Replication, TwoPcStatus};
use chrono::{TimeZone, Utc};

use super::*;
use crate::testing::{node, obs};

/// A 2pc member as the member API reports it: coordinator 1 (ordinal 0) over `participants`,
/// `prepared` transactions held, `in_doubt` transaction ids in doubt here for `age_ms`.
fn member(
    ordinal: u32,
    id: u64,
    participants: &[u64],
    prepared: u64,
    in_doubt: &[u64],
) -> Observed {
    let role = if id == 1 {
        "coordinator"
    } else {
        "participant"
    };
    let mut st = node(id, role, 0, participants, &[]);
    st.engine.replication = Replication::TwoPc;
    st.engine.leader = Some(1);
    st.twopc = Some(TwoPcStatus {
        coordinator: Some(1),
        participants: participants.to_vec(),
        prepared,
        in_doubt: in_doubt.len() as u64,
        oldest_in_doubt_ms: (!in_doubt.is_empty()).then_some(12_000),
        in_doubt_transactions: in_doubt
            .iter()
            .map(|t| InDoubt {
                txid: *t,
                key: format!("k{t}"),
                since_ms: 0,
            })
            .collect(),
        ..TwoPcStatus::default()
    });
    obs(ordinal, id, Some(st))
}

fn down(ordinal: u32, id: u64) -> Observed {
    let mut m = obs(ordinal, id, None);
    m.pod_exists = false;
    m.pod_ip = None;
    m
}

#[test]
fn a_new_member_joins_the_participants_once_nothing_is_in_flight() {
    let all = [1, 2, 3];
    let mut members = vec![member(0, 1, &all, 0, &[]), member(1, 2, &all, 0, &[])];
    members.push(member(2, 3, &all, 0, &[]));
    members.push(member(3, 4, &[], 0, &[]));
    assert!(matches!(
        next_step(4, &members, true),
        Step::AddLearner { id: 4, .. }
    ));
    members[0] = member(0, 1, &all, 2, &[]);
    assert_eq!(
        next_step(4, &members, true),
        Step::Wait("2 transaction(s) in flight: participants change once none is".into())
    );
}

#[test]
fn a_leaving_participant_is_removed_before_its_pod() {
    let all = [1, 2, 3];
    let members: Vec<Observed> = (0..3)
        .map(|o| member(o, u64::from(o) + 1, &all, 0, &[]))
        .collect();
    match next_step(2, &members, true) {
        Step::SetVoters {
            voters, removed, ..
        } => {
            assert_eq!((voters, removed), (vec![1, 2], vec![3]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_down_coordinator_is_waited_for_never_replaced() {
    let all = [1, 2, 3];
    let members = vec![
        down(0, 1),
        member(1, 2, &all, 0, &[7]),
        member(2, 3, &all, 0, &[7]),
    ];
    let step = next_step(3, &members, true);
    assert_eq!(
        step,
        Step::Wait(
            "coordinator demo-0 (member id 1) down: 2pc waits for it (it is never replaced)".into()
        )
    );
}

#[test]
fn blocked_says_how_many_are_in_doubt_since_when_and_what_unblocks_it() {
    let all = [1, 2, 3];
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 12)
        .single()
        .expect("time");
    let members = vec![
        down(0, 1),
        member(1, 2, &all, 1, &[7, 8]),
        member(2, 3, &all, 1, &[7]),
    ];
    let b = blocked(&members, now).expect("blocked");
    assert_eq!(b.in_doubt, 2, "{b:?}");
    assert_eq!(b.holders, vec!["demo-1", "demo-2"]);
    let msg = b.message();
    for part in [
        "coordinator demo-0 (member id 1) is down and is never replaced",
        "2 transaction(s) in doubt on demo-1, demo-2 since 2026-01-01T00:00:00Z",
        "Unblocks when the coordinator returns",
        "POST /v1/admin/2pc/decide {\"txid\": 7,",
    ] {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
    let up = vec![member(0, 1, &all, 0, &[]), member(1, 2, &all, 0, &[])];
    assert_eq!(blocked(&up, now), None);
}

#[test]
fn the_blocked_condition_keeps_its_transition_time_while_it_holds() {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 1, 0)
        .single()
        .expect("time");
    let b = Blocked {
        coordinator: "demo-0 (member id 1)".into(),
        in_doubt: 0,
        since: None,
        holders: vec![],
        oldest_txid: None,
    };
    let first = blocked_condition(Some(&b), None, Some(1), now);
    assert_eq!(
        (first.status.as_str(), first.reason.as_str()),
        ("True", "CoordinatorDown")
    );
    assert!(
        first.message.contains("no transaction in doubt"),
        "{}",
        first.message
    );
    let later = now + Duration::seconds(30);
    let same = blocked_condition(Some(&b), Some(&first), Some(1), later);
    assert_eq!(same.last_transition_time, first.last_transition_time);
    let cleared = blocked_condition(None, Some(&first), Some(1), later);
    assert_eq!(cleared.status, "False");
    assert_ne!(cleared.last_transition_time, first.last_transition_time);
}

#[test]
fn rare_waits_name_participants_not_learners_or_voters() {
    // Member 3 (ordinal 2) is leaving, but with member 2 down removing it would leave the
    // coordinator alone among three participants.
    let all = [1, 2, 3];
    let members = vec![
        member(0, 1, &all, 0, &[]),
        down(1, 2),
        member(2, 3, &all, 0, &[]),
    ];
    assert_eq!(
        next_step(2, &members, true),
        Step::Wait(
            "cannot remove participant demo-2 (member id 3) without losing a majority of the \
             participants answering"
                .into()
        )
    );

    // A member the coordinator reports as still joining.
    let mut members: Vec<Observed> = (0..3)
        .map(|o| member(o, u64::from(o) + 1, &all, 0, &[]))
        .collect();
    let mut joining = member(3, 4, &all, 0, &[]);
    if let Some(st) = joining.status.as_mut() {
        st.engine.applied_index = 0;
    }
    members.push(joining);
    if let Some(st) = members[0].status.as_mut() {
        st.engine.learners = vec![4];
    }
    assert_eq!(
        next_step(4, &members, true),
        Step::Wait("participant demo-3 (member id 4) catching up".into())
    );
}
