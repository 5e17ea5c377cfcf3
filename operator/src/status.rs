//! What the status says, derived from what the operator observed (pure): phase, conditions,
//! per-member `replicating`, the Events of status transitions, and how soon to look again.

use crate::crd::{
    Condition, FaultState, FaultStatus, LeaderRecord, MemberStatus, Phase, RegisterClusterStatus,
    Replication,
};
use caplab_api::status::{Replication as Mode, Role, Status};

use crate::member_client::CONTACT_LIMIT_MS;
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
    /// Quorum mode (no leader): who serves, and R and W.
    pub leaderless: Option<Leaderless<'a>>,
}

/// What the phase of a leaderless (quorum) cluster depends on: a member serves reads and
/// writes while it reaches max(R, W) replicas, itself included.
#[derive(Clone, Debug, Default)]
pub struct Leaderless<'a> {
    /// R.
    pub read: u32,
    /// W.
    pub write: u32,
    /// Pods that reach at least max(R, W) replicas.
    pub serving: &'a [String],
}

impl Leaderless<'_> {
    /// `<pods> reach max(R, W) = q replicas ...` or why nobody serves.
    fn message(&self) -> String {
        let (r, w) = (self.read, self.write);
        let needed = r.max(w);
        if self.serving.is_empty() {
            return format!(
                "leaderless: no member reaches max(R, W) = {needed} replicas (R={r}, W={w}): \
                 reads and writes are refused"
            );
        }
        format!(
            "leaderless: {} reach max(R, W) = {needed} replicas and serve reads (R={r}) and \
             writes (W={w})",
            self.serving.join(", ")
        )
    }
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
        (true, false) if s.leaderless.is_some() => "cut off from some replicas (a partition, \
                          pause or crash): it serves only while it reaches max(R, W) of them"
            .into(),
        (true, false) if s.leader == Some(n.as_str()) => {
            "leader, but not heard from enough members to commit writes".into()
        }
        (true, false) => "reachable by the operator but not replicating: the leader has not \
                          acknowledged it for over 2 s"
            .into(),
        (true, true) if !s.voters.contains(&m.id) && s.leaderless.is_some() => {
            format!("not in the replicas' membership (member id {})", m.id)
        }
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
    let no_quorum = match &s.leaderless {
        Some(q) => q.serving.is_empty(),
        None => s.leader.is_none() || leader_stranded(s),
    };
    if no_quorum {
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
    if let Some(q) = &s.leaderless {
        return q.message();
    }
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
        Phase::Ready | Phase::Degraded => match &s.leaderless {
            Some(q) => cond("Available", true, "QuorumsReachable", q.message()),
            None => cond(
                "Available",
                true,
                "LeaderElected",
                format!("leader {}", s.leader.unwrap_or("?")),
            ),
        },
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
pub fn replicating(leader: Option<&Status>, id: u64) -> bool {
    let Some(l) = leader else {
        return false;
    };
    let acked = |peer: u64| {
        l.engine.peers.get(&peer).is_some_and(|p| {
            p.match_index.is_some() && p.last_contact_ms.is_some_and(|ms| ms < CONTACT_LIMIT_MS)
        })
    };
    if id != l.id {
        return acked(id);
    }
    match l.engine.replication {
        Mode::Async => true,
        // 2pc: every participant votes on every write, as every sync secondary acknowledges.
        Mode::Sync | Mode::TwoPc => l.engine.peers.keys().copied().all(acked),
        // Raft: a majority of the voters (as before for any other mode a leader reports).
        _ => {
            let voters = &l.engine.voters;
            let heard = voters.iter().filter(|v| **v == l.id || acked(**v)).count();
            heard * 2 > voters.len()
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
        .any(|m| m.role.as_deref() == Some(Role::Candidate.as_str()));
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

/// How a status names its leader and term: leader and term for Raft, primary and epoch in the
/// primary modes, a coordinator without a term in 2pc (its term is always 0).
struct Words {
    role: &'static str,
    term: Option<&'static str>,
}

impl Words {
    fn of(st: &RegisterClusterStatus) -> Words {
        let (role, term) = match st.replication {
            Some(Replication::Async) | Some(Replication::Sync) => ("primary", Some("epoch")),
            Some(Replication::TwoPc) => ("coordinator", None),
            _ => ("leader", Some("term")),
        };
        Words { role, term }
    }

    /// `term 3` (`None` in 2pc).
    fn term(&self, t: u64) -> Option<String> {
        self.term.map(|w| format!("{w} {t}"))
    }

    /// `(term 3; member ids 1 -> 2)`: the term when the mode has one, then `rest`.
    fn detail(&self, t: u64, rest: Option<String>) -> String {
        let parts: Vec<String> = self.term(t).into_iter().chain(rest).collect();
        match parts.is_empty() {
            true => String::new(),
            false => format!(" ({})", parts.join("; ")),
        }
    }
}

/// The `LeaderChanged` Event of a new leader `new` after `old` (the last one known), if it is
/// news: the same member leading again in the same term (a coordinator that restarted, a
/// leader the operator could not see for a while) is not a change.
fn leader_changed(w: &Words, old: Option<&LeaderRecord>, new: &LeaderRecord) -> Option<Note> {
    let role = w.role;
    let text = match old {
        Some(old) if old.id == new.id && (w.term.is_none() || old.term == new.term) => return None,
        Some(old) if old.id == new.id => format!(
            "{role} {} again{}",
            new.name,
            w.detail(new.term, Some(format!("member id {}", new.id)))
        ),
        Some(old) => format!(
            "{role} {} -> {}{}",
            old.name,
            new.name,
            w.detail(
                new.term,
                Some(format!("member ids {} -> {}", old.id, new.id))
            )
        ),
        None => format!(
            "{role} {}{}",
            new.name,
            w.detail(new.term, Some(format!("member id {}", new.id)))
        ),
    };
    Some(note(false, "LeaderChanged", text))
}

/// The Events of the change from `prev` to `st`: leader changes (naming the previous leader,
/// kept in `lastLeader` while there was none), quorum lost and regained, Ready.
pub fn transitions(prev: &RegisterClusterStatus, st: &RegisterClusterStatus) -> Vec<Note> {
    let w = Words::of(st);
    let role = w.role;
    let current = st.leader.as_ref().and(st.last_leader.as_ref());
    let mut out: Vec<Note> = current
        .filter(|_| st.leader_id != prev.leader_id)
        .and_then(|new| leader_changed(&w, prev.last_leader.as_ref(), new))
        .into_iter()
        .collect();
    let (was, is) = (prev.phase, st.phase);
    if is == Some(Phase::NoQuorum) && was != Some(Phase::NoQuorum) {
        let text = match (current, &st.last_leader) {
            _ if st.quorum.is_some() => leaderless_note(st),
            (Some(l), _) => format!("{role} {} cannot commit writes: writes are refused", l.name),
            (None, Some(l)) => {
                let last = [Some(format!("last {role} {}", l.name)), w.term(l.term)];
                let last: Vec<String> = last.into_iter().flatten().collect();
                format!("no {role}: writes are refused ({})", last.join(", "))
            }
            (None, None) => format!("no {role}: writes are refused"),
        };
        out.push(note(true, "QuorumLost", text));
    }
    if was == Some(Phase::NoQuorum) && matches!(is, Some(Phase::Ready) | Some(Phase::Degraded)) {
        let text = match current {
            _ if st.quorum.is_some() => leaderless_note(st),
            Some(l) => format!("{role} {}{}", l.name, w.detail(l.term, None)),
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

/// What a leaderless (quorum) cluster's `status.quorum` says about who serves.
fn leaderless_note(st: &RegisterClusterStatus) -> String {
    let q = st.quorum.clone().unwrap_or_default();
    Leaderless {
        read: q.read_quorum,
        write: q.write_quorum,
        serving: &q.serving,
    }
    .message()
}

/// The leader as recorded in status: this pass's leader (name, member id) in the term (or
/// epoch) it reported itself, or the last one while there is none. `reported_term` is `None`
/// when its report is unknown (e.g. its pod was just deleted by a crash fault): then the term
/// its member entry shows, else the highest any member reports.
pub fn last_leader(
    leader: Option<(&str, u64)>,
    reported_term: Option<u64>,
    members: &[MemberStatus],
    prev: Option<&LeaderRecord>,
) -> Option<LeaderRecord> {
    let Some((name, id)) = leader else {
        return prev.cloned();
    };
    let term = reported_term
        .or_else(|| members.iter().find(|m| m.name == name).and_then(|m| m.term))
        .or_else(|| highest_term(members, None))
        .unwrap_or(0);
    Some(LeaderRecord {
        name: name.to_string(),
        id,
        term,
    })
}

#[cfg(test)]
mod tests;
