//! Phase and conditions (pure).

use crate::crd::{Condition, MemberStatus, Phase};
use crate::membership::CATCH_UP_ENTRIES;

/// Inputs for the phase.
#[derive(Clone, Debug, Default)]
pub struct Summary<'a> {
    /// Validation errors (empty = valid).
    pub errors: &'a [String],
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
}

/// Is a member healthy (reachable, voter, not lagging)?
pub fn member_ok(m: &MemberStatus, voters: &[u64]) -> bool {
    m.reachable && voters.contains(&m.id) && m.lag.unwrap_or(0) <= CATCH_UP_ENTRIES
}

/// Derives the phase.
pub fn phase(s: &Summary<'_>) -> Phase {
    if !s.errors.is_empty() {
        return Phase::Failed;
    }
    if !s.bootstrapped {
        return Phase::Creating;
    }
    if s.leader.is_none() {
        return Phase::NoQuorum;
    }
    let ok = s
        .members
        .iter()
        .filter(|m| member_ok(m, s.voters) && m.term >= s.term)
        .count();
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

/// Builds the conditions, keeping `lastTransitionTime` from `prev` when the
/// status of a condition did not change.
pub fn conditions(
    prev: &[Condition],
    s: &Summary<'_>,
    phase: Phase,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let ready = s
        .members
        .iter()
        .filter(|m| member_ok(m, s.voters) && m.term >= s.term)
        .count();
    let valid = s.errors.is_empty();
    let mut out = vec![
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
            Phase::NoQuorum => cond("Available", false, "NoQuorum", "no leader".into()),
            Phase::Failed => cond(
                "Available",
                s.leader.is_some(),
                "SpecInvalid",
                "spec is invalid".into(),
            ),
        },
        if s.converging && valid {
            cond(
                "Progressing",
                true,
                "Reconciling",
                s.progress.unwrap_or("converging").to_string(),
            )
        } else {
            cond("Progressing", false, "Stable", "nothing to do".into())
        },
        match phase {
            Phase::Degraded => cond(
                "Degraded",
                true,
                "MembersUnhealthy",
                format!("{ready}/{} members healthy", s.replicas),
            ),
            Phase::NoQuorum => cond("Degraded", true, "NoQuorum", "no leader".into()),
            _ => cond(
                "Degraded",
                false,
                "AsExpected",
                format!("{ready}/{} members healthy", s.replicas),
            ),
        },
        if valid {
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
