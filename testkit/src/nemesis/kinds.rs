//! The faults a schedule is drawn from, per replication mode.

/// A member named by its role, resolved when the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The Raft leader or the primary.
    Leader,
    /// Any member but the leader or primary.
    Follower,
    Any,
}

/// How a primary is taken away before a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    /// SIGKILL; restarted once the new primary serves.
    Crash,
    /// Cut off from every other member; it keeps serving clients (async: acknowledging writes
    /// the new primary never gets).
    Isolate,
}

/// One step of a schedule, before its targets are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Two random halves that cannot reach each other.
    Halves,
    /// Two halves cut apart except for one member that reaches both.
    Bridge,
    /// Every member reaches only its two neighbours in a random ring.
    Ring,
    /// One member's messages to some others are cut in one direction only (outgoing or
    /// incoming, drawn), the other direction still works.
    OneWay,
    Pause(Target),
    Loss(Target),
    Delay(Target),
    ClockSkew(Target),
    Kill(Target),
    /// Remove a voter, then add it back as a learner and make it a voter again.
    Membership(Target),
    /// Take the primary away and promote a secondary.
    Failover(Loss),
    /// 2pc: the member votes no on a share of the prepares it gets.
    Veto(Target),
    /// 2pc: SIGKILL the coordinator while a participant holds a prepared transaction, watch
    /// the participants block, restart it and wait until they resolve (see `twopc.rs`).
    CoordinatorCrash,
}

pub(super) const RAFT_KINDS: &[Kind] = &[
    Kind::Halves,
    Kind::Halves,
    Kind::Bridge,
    Kind::Bridge,
    Kind::Ring,
    Kind::OneWay,
    Kind::OneWay,
    Kind::Pause(Target::Leader),
    Kind::Pause(Target::Any),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::ClockSkew(Target::Any),
    Kind::Kill(Target::Leader),
    Kind::Kill(Target::Any),
    Kind::Membership(Target::Leader),
    Kind::Membership(Target::Follower),
];

pub(super) const PRIMARY_KINDS: &[Kind] = &[
    Kind::Failover(Loss::Crash),
    Kind::Failover(Loss::Isolate),
    Kind::Pause(Target::Follower),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::ClockSkew(Target::Any),
    Kind::Kill(Target::Follower),
];

/// 2pc: partitions, participant faults and vetoes; every third fault is a coordinator crash
/// (`Nemesis::run`). No clock skew: 2pc orders nothing by wall clocks.
pub(super) const TWOPC_KINDS: &[Kind] = &[
    Kind::Halves,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Pause(Target::Follower),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::Kill(Target::Follower),
    Kind::Kill(Target::Follower),
    Kind::Veto(Target::Follower),
    Kind::Veto(Target::Leader),
];

/// Leaderless quorums: any member may be taken away (none is special).
pub(super) const QUORUM_KINDS: &[Kind] = &[
    Kind::Halves,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Pause(Target::Any),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::Kill(Target::Any),
    Kind::Kill(Target::Any),
];

/// Leaderless quorums with clock skew (every third fault, `Nemesis::run`): no SIGKILL, so that
/// every member keeps counting the writes last-writer-wins dropped (its counters live in
/// memory) until the test reads them.
pub(super) const QUORUM_SKEW_KINDS: &[Kind] = &[
    Kind::Halves,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Pause(Target::Any),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
];
