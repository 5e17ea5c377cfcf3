//! The Raft leader's read lease: linearizable reads without a round trip while the leader
//! knows no other leader can exist (Raft thesis §6.4.1, "Using clocks to reduce messaging
//! for read-only queries"; etcd's `ReadOnlyLeaseBased`, TiKV's lease reads).
//!
//! Why it holds: a leadership-confirmation round that began at `t` succeeds only when a
//! majority of the voters accepted a heartbeat sent after `t`. Each of them then refuses to
//! vote for anyone else for openraft's leader lease (its maximum election timeout) after
//! accepting it, and refuses pre-votes for as long (`election/`); a restarted voter
//! refuses pre-votes for a lease from its start. So no other leader can be elected before
//! `t` + that lease, and until then this leader's applied state holds every acknowledged
//! write: its own were applied before they were acknowledged, and the earlier terms' were
//! applied before the round that granted the lease answered. The lease granted here is
//! shorter than the voters' ([`crate::config::Config::read_lease`] checks it), which leaves
//! a margin for clocks that run at slightly different rates; it only assumes such rates, never
//! synchronised clocks (the clock-skew fault shifts wall clocks, not these monotonic ones).
//!
//! A lease belongs to one leadership: a term and a membership. A new term, a membership
//! change, stepping aside (check-quorum) or not being the leader ends it.

use std::sync::Mutex;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::types::{LogId, Raft};

/// The leadership a lease belongs to: this member's term as leader and the log id of the
/// membership it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    term: u64,
    membership: Option<LogId>,
}

impl Leadership {
    /// This member's leadership now; `None` when it is not the leader.
    pub fn of(raft: &Raft) -> Option<Leadership> {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader).then(|| Leadership {
            term: m.current_term,
            membership: *m.membership_config.log_id(),
        })
    }
}

/// The read lease of one Raft member (zero length: never held, every read confirms).
pub struct ReadLease {
    length: Duration,
    held: Mutex<Option<(Leadership, Instant)>>,
}

impl ReadLease {
    /// A lease of `length` from the start of each successful confirmation round.
    pub fn new(length: Duration) -> Self {
        ReadLease {
            length,
            held: Mutex::new(None),
        }
    }

    /// Notes that a confirmation round which began at `started`, while this member led as
    /// `leadership`, succeeded.
    pub fn grant(&self, leadership: Leadership, started: Instant) {
        if self.length.is_zero() {
            return;
        }
        let until = started + self.length;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let longer = match *held {
            Some((l, t)) => l != leadership || t < until,
            None => true,
        };
        if longer {
            *held = Some((leadership, until));
        }
    }

    /// How long the lease still runs for the leadership `current` yields (the member's
    /// leadership now, `None` when it does not lead); `None` when it is not held. A
    /// zero-length lease answers `None` without calling `current`, so reads without a lease
    /// do not pay for reading openraft's metrics.
    pub fn remaining(&self, current: impl FnOnce() -> Option<Leadership>) -> Option<Duration> {
        if self.length.is_zero() {
            return None;
        }
        let leadership = current()?;
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (l, until) = held?;
        let now = Instant::now();
        (l == leadership && now < until).then(|| until - now)
    }

    /// True when less than half the lease is left: time to renew it with a round before
    /// reads have to wait for one.
    pub fn wants_renewal(&self, remaining: Duration) -> bool {
        remaining < self.length / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(term: u64) -> Leadership {
        Leadership {
            term,
            membership: None,
        }
    }

    #[test]
    fn a_lease_belongs_to_one_leadership_and_runs_out() {
        let lease = ReadLease::new(Duration::from_secs(60));
        assert_eq!(lease.remaining(|| Some(leadership(2))), None);
        lease.grant(leadership(2), Instant::now());
        assert!(lease.remaining(|| Some(leadership(2))).is_some());
        assert_eq!(
            lease.remaining(|| Some(leadership(3))),
            None,
            "another term"
        );
        let expired = ReadLease::new(Duration::from_millis(1));
        expired.grant(leadership(2), Instant::now() - Duration::from_millis(5));
        assert_eq!(expired.remaining(|| Some(leadership(2))), None);
    }

    #[test]
    fn an_older_round_does_not_shorten_the_lease_and_zero_length_is_never_held() {
        let lease = ReadLease::new(Duration::from_secs(60));
        lease.grant(leadership(2), Instant::now());
        let before = lease.remaining(|| Some(leadership(2)));
        lease.grant(leadership(2), Instant::now() - Duration::from_secs(30));
        assert!(
            lease.remaining(|| Some(leadership(2))) >= before.map(|d| d - Duration::from_secs(1))
        );
        let off = ReadLease::new(Duration::ZERO);
        off.grant(leadership(2), Instant::now());
        let asked = std::cell::Cell::new(false);
        let current = || {
            asked.set(true);
            Some(leadership(2))
        };
        assert_eq!(off.remaining(current), None);
        assert!(!asked.get(), "a lease that is off asked for the leadership");
    }
}
