//! What the status says, derived from what the operator observed (pure): phase, conditions,
//! per-member `replicating`, the Events of status transitions, and how soon to look again.

use crate::crd::{
    Condition, FaultState, FaultStatus, LeaderRecord, MemberStatus, Phase, RegisterClusterStatus,
    Replication,
};
use crate::member_client::{NodeStatus, CONTACT_LIMIT_MS};
use crate::membership::CATCH_UP_ENTRIES;

/// Inputs for the phase.
#[derive(Clone, Debug, Default)]
pub struct Summary<'a> {
    /// Validation errors (empty = valid).
    pub errors: &'a [String],
    /// Something was created for this cluster (a member pod exists, or it was bootstrapped):
    /// an invalid spec then leaves the phase to what the members do.
    pub created: bool,
    /// Bootstrapped (init done and a leader seen).
    pub bootstrapped: bool,
    /// Leader pod, if any.
    pub leader: Option<&'a str>,
    /// Desired members.
    pub replicas: u32,
    /// Observed members (wanted ordinals only).
    pub members: &'a [MemberStatus],
    /// Voter ids (raft); primary modes pass every member id.
    pub voters: &'a [u64],
    /// The membership machinery still has work to do.
    pub converging: bool,
    /// Why, if it does.
    pub progress: Option<&'a str>,
    /// The leader's term (members behind it are cut off).
    pub term: Option<u64>,
    /// The highest term of members that are campaigning (terms rose since the last pass, or
    /// a member is a candidate); reported when no leader can commit.
    pub campaigning: Option<u64>,
}

/// Is a member healthy (reachable, replicating, voter, not lagging)?
pub fn member_ok(m: &MemberStatus, voters: &[u64]) -> bool {
    m.reachable && m.replicating && voters.contains(&m.id) && m.lag.unwrap_or(0) <= CATCH_UP_ENTRIES
}

/// Healthy and in the leader's term.
fn healthy(m: &MemberStatus, s: &Summary<'_>) -> bool {
    member_ok(m, s.voters) && m.term >= s.term
}

/// Why a member is not healthy, in a person's words (`None`: healthy).
pub fn member_problem(m: &MemberStatus, s: &Summary<'_>) -> Option<String> {
    let n = &m.name;
    let why = match (m.reachable, m.replicating) {
        _ if m.role.as_deref() == Some("down") => "no pod".to_string(),
        (false, false) => "unreachable: neither the operator nor the leader hears from it".into(),
        (false, true) => "the operator cannot poll it, but the leader hears from it".into(),
        (true, false) if s.leader == Some(n.as_str()) => {
            "leader, but not heard from enough members to commit writes".into()
        }
        (true, false) => "reachable by the operator but not replicating: the leader has not \
                          acknowledged it for over 2 s"
            .into(),
        (true, true) if !s.voters.contains(&m.id) => {
            format!("not a voter (member id {})", m.id)
        }
        (true, true) if m.lag.unwrap_or(0) > CATCH_UP_ENTRIES => {
            format!("{} entries behind", m.lag.unwrap_or(0))
        }
        (true, true) if m.term < s.term => format!(
            "in term {}, behind the leader's term {}",
            m.term.unwrap_or(0),
            s.term.unwrap_or(0)
        ),
        (true, true) => return None,
    };
    Some(format!("{n}: {why}"))
}

/// The leader (or primary) is observed but cannot commit writes (its `replicating` is false:
/// cut off from a majority, or in sync mode from a secondary): writes are refused there.
fn leader_stranded(s: &Summary<'_>) -> bool {
    s.members
        .iter()
        .any(|m| Some(m.name.as_str()) == s.leader && !m.replicating)
}

/// Derives the phase.
pub fn phase(s: &Summary<'_>) -> Phase {
    if !s.errors.is_empty() && !s.created {
        return Phase::Failed;
    }
    if !s.bootstrapped {
        return Phase::Creating;
    }
    if s.leader.is_none() || leader_stranded(s) {
        return Phase::NoQuorum;
    }
    let ok = s.members.iter().filter(|m| healthy(m, s)).count();
    if ok == s.replicas as usize && s.members.len() == s.replicas as usize {
        Phase::Ready
    } else {
        Phase::Degraded
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: String::new(),
        reason: reason.into(),
        message,
        observed_generation: None,
    }
}

fn no_leader_message(s: &Summary<'_>) -> String {
    let why = match s.leader {
        Some(l) => format!(
            "{l} leads but cannot commit writes (it has not heard from enough members for over \
             2 s): writes are refused"
        ),
        None => "no leader: writes are refused".into(),
    };
    match s.campaigning {
        Some(t) => format!("{why}; members are campaigning without a winner (terms up to {t})"),
        None => why,
    }
}

fn available(s: &Summary<'_>, phase: Phase) -> Condition {
    match phase {
        Phase::Ready | Phase::Degraded => cond(
            "Available",
            true,
            "LeaderElected",
            format!("leader {}", s.leader.unwrap_or("?")),
        ),
        Phase::Creating => cond(
            "Available",
            false,
            "Creating",
            "not bootstrapped yet".into(),
        ),
        Phase::NoQuorum => cond("Available", false, "NoQuorum", no_leader_message(s)),
        Phase::Failed => cond(
            "Available",
            false,
            "SpecInvalid",
            "nothing was created: the spec is invalid (see SpecValid)".into(),
        ),
    }
}

fn progressing(s: &Summary<'_>) -> Condition {
    if !s.errors.is_empty() {
        cond(
            "Progressing",
            false,
            "SpecInvalid",
            "changes wait for a valid spec (see SpecValid); the running members are left alone"
                .into(),
        )
    } else if s.converging {
        cond(
            "Progressing",
            true,
            "Reconciling",
            s.progress.unwrap_or("converging").to_string(),
        )
    } else {
        cond("Progressing", false, "Stable", "nothing to do".into())
    }
}

fn degraded(s: &Summary<'_>, phase: Phase) -> Condition {
    let ready = s.members.iter().filter(|m| healthy(m, s)).count();
    let mut message = format!("{ready}/{} members healthy", s.replicas);
    let problems: Vec<String> = s
        .members
        .iter()
        .filter_map(|m| member_problem(m, s))
        .collect();
    if !problems.is_empty() {
        message = format!("{message}; {}", problems.join("; "));
    }
    match phase {
        Phase::Degraded => cond("Degraded", true, "MembersUnhealthy", message),
        Phase::NoQuorum => cond(
            "Degraded",
            true,
            "NoQuorum",
            format!("{}; {message}", no_leader_message(s)),
        ),
        _ => cond("Degraded", false, "AsExpected", message),
    }
}

/// Builds the conditions, keeping `lastTransitionTime` from `prev` when the
/// status of a condition did not change.
pub fn conditions(
    prev: &[Condition],
    s: &Summary<'_>,
    phase: Phase,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let mut out = vec![
        available(s, phase),
        progressing(s),
        degraded(s, phase),
        if s.errors.is_empty() {
            cond("SpecValid", true, "Valid", "spec is valid".into())
        } else {
            cond("SpecValid", false, "Invalid", s.errors.join("; "))
        },
    ];
    for c in &mut out {
        c.observed_generation = generation;
        c.last_transition_time = prev
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
    }
    out
}

/// Did `leader` (the leader's or primary's `/v1/status`) acknowledge member `id` recently?
///
/// Another member: the leader has a matched log index for it and last heard from it under
/// [`CONTACT_LIMIT_MS`] ago. The leader itself: it can commit writes: Raft: it heard from a
/// majority of the voters (itself included); sync: from every secondary; async: always.
pub fn replicating(leader: Option<&NodeStatus>, id: u64) -> bool {
    let Some(l) = leader else {
        return false;
    };
    let acked = |peer: u64| {
        l.peers.get(&peer.to_string()).is_some_and(|p| {
            p.match_index.is_some() && p.last_contact_ms.is_some_and(|ms| ms < CONTACT_LIMIT_MS)
        })
    };
    if id != l.id {
        return acked(id);
    }
    match l.replication.as_str() {
        "async" => true,
        "sync" => l.peers.keys().filter_map(|p| p.parse().ok()).all(acked),
        _ => {
            let heard = l
                .voters
                .iter()
                .filter(|v| **v == l.id || acked(**v))
                .count();
            heard * 2 > l.voters.len()
        }
    }
}

/// Highest term any member reports (the TERM column), or `prev` when none answered.
pub fn highest_term(members: &[MemberStatus], prev: Option<u64>) -> Option<u64> {
    members.iter().filter_map(|m| m.term).max().or(prev)
}

/// The highest term, when members are campaigning (a member is a candidate, or the highest
/// term rose since `prev_term`, the last pass's highest term). Reported only without a leader
/// that can commit.
pub fn campaigning(members: &[MemberStatus], prev_term: Option<u64>) -> Option<u64> {
    let top = members.iter().filter_map(|m| m.term).max()?;
    let candidate = members
        .iter()
        .any(|m| m.role.as_deref() == Some("candidate"));
    (candidate || prev_term.is_some_and(|t| top > t)).then_some(top)
}

/// Should the next pass come soon (about a second) rather than at the calm interval? Yes while
/// anything changes: the phase is not Ready, membership or pods are moving, a fault is active
/// or pending, or writes are flowing (the leader's commit index moved since the last pass).
pub fn busy(st: &RegisterClusterStatus, prev: &RegisterClusterStatus, converging: bool) -> bool {
    let fault_in_play =
        |f: &FaultStatus| matches!(f.state, FaultState::Active | FaultState::Pending);
    converging
        || st.phase != Some(Phase::Ready)
        || st.faults.iter().any(fault_in_play)
        || matches!((prev.commit_index, st.commit_index), (Some(a), Some(b)) if a != b)
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (or Normal).
    pub warning: bool,
    /// Event reason.
    pub reason: &'static str,
    /// What happened, naming pods (member ids as extra detail).
    pub note: String,
}

fn note(warning: bool, reason: &'static str, note: String) -> Note {
    Note {
        warning,
        reason,
        note,
    }
}

/// How a status names its leader and term: `("leader", "term")` for Raft, `("primary",
/// "epoch")` in the primary modes.
fn words(st: &RegisterClusterStatus) -> (&'static str, &'static str) {
    match st.replication {
        Some(Replication::Async) | Some(Replication::Sync) => ("primary", "epoch"),
        _ => ("leader", "term"),
    }
}

/// The Events of the change from `prev` to `st`: leader changes (naming the previous leader,
/// kept in `lastLeader` while there was none), quorum lost and regained, Ready.
pub fn transitions(prev: &RegisterClusterStatus, st: &RegisterClusterStatus) -> Vec<Note> {
    let (role, term) = words(st);
    let current = st.leader.as_ref().and(st.last_leader.as_ref());
    let mut out: Vec<Note> = current
        .filter(|_| st.leader_id != prev.leader_id)
        .map(|new| {
            let text = match &prev.last_leader {
                Some(old) => format!(
                    "{role} {} -> {} ({term} {}; member ids {} -> {})",
                    old.name, new.name, new.term, old.id, new.id
                ),
                None => format!(
                    "{role} {} ({term} {}; member id {})",
                    new.name, new.term, new.id
                ),
            };
            note(false, "LeaderChanged", text)
        })
        .into_iter()
        .collect();
    let (was, is) = (prev.phase, st.phase);
    if is == Some(Phase::NoQuorum) && was != Some(Phase::NoQuorum) {
        let text = match (current, &st.last_leader) {
            (Some(l), _) => format!("{role} {} cannot commit writes: writes are refused", l.name),
            (None, Some(l)) => format!(
                "no {role}: writes are refused (last {role} {}, {term} {})",
                l.name, l.term
            ),
            (None, None) => format!("no {role}: writes are refused"),
        };
        out.push(note(true, "QuorumLost", text));
    }
    if was == Some(Phase::NoQuorum) && matches!(is, Some(Phase::Ready) | Some(Phase::Degraded)) {
        let text = match current {
            Some(l) => format!("{role} {} ({term} {})", l.name, l.term),
            None => format!("a {role} commits writes again"),
        };
        out.push(note(false, "QuorumRegained", text));
    }
    if is == Some(Phase::Ready) && was != Some(Phase::Ready) {
        let text = format!("{} members ready", st.ready.as_deref().unwrap_or("all"));
        out.push(note(false, "Ready", text));
    }
    out
}

/// The leader as recorded in status: this pass's leader, or the last one while there is none.
pub fn last_leader(
    leader: Option<(&str, u64)>,
    members: &[MemberStatus],
    prev: Option<&LeaderRecord>,
) -> Option<LeaderRecord> {
    let Some((name, id)) = leader else {
        return prev.cloned();
    };
    let term = members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.term)
        .unwrap_or(0);
    Some(LeaderRecord {
        name: name.to_string(),
        id,
        term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member_client::PeerProgress;

    /// A leader's (primary's) status with the given peers: (id, last contact in ms).
    fn leader(replication: &str, voters: &[u64], peers: &[(u64, Option<u64>)]) -> NodeStatus {
        NodeStatus {
            id: 1,
            replication: replication.into(),
            role: "leader".into(),
            voters: voters.to_vec(),
            peers: peers
                .iter()
                .map(|(id, ms)| {
                    let p = PeerProgress {
                        match_index: Some(10),
                        lag_entries: Some(0),
                        last_contact_ms: *ms,
                    };
                    (id.to_string(), p)
                })
                .collect(),
            ..NodeStatus::default()
        }
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
}
