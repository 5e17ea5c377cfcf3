//! Pure membership decisions: bootstrap, add learner, promote, remove, failover.
//!
//! Each call returns the single next step; the controller performs it and
//! reconciles again, so every step is taken against fresh observations.

use std::collections::BTreeSet;

use caplab_api::identity::{Incarnation, PeerAddr};
use caplab_api::paths::PEER_PORT;
use caplab_api::status::{Replication as Mode, Status};

use crate::member_client::{hears_from, AddressBook, Recipient};

pub use roles::Roles;

/// A learner is caught up when it is at most this many entries behind.
pub const CATCH_UP_ENTRIES: u64 = 10;

/// One member as observed this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Ordinal.
    pub ordinal: u32,
    /// Pod name (`<cluster>-<ordinal>`), for what people read.
    pub name: String,
    /// Member id (from the pod annotation, or the last status when the pod is gone).
    pub id: u64,
    /// A pod exists (and is not being deleted).
    pub pod_exists: bool,
    /// Pod IP, when the pod is running.
    pub pod_ip: Option<String>,
    /// `/v1/status`, when it answered as the member its pod says it is (an answer naming
    /// another member id is someone else's and is left out).
    pub status: Option<Status>,
}

impl Observed {
    /// Peer address `<ip>:7000`.
    pub fn peer_addr(&self) -> Option<String> {
        self.pod_ip.as_ref().map(|ip| format!("{ip}:{PEER_PORT}"))
    }
    /// Answered its status endpoint.
    pub fn reachable(&self) -> bool {
        self.status.is_some()
    }
    /// The incarnation it reported, when it answered.
    pub fn incarnation(&self) -> Option<&Incarnation> {
        self.status.as_ref().map(|s| &s.incarnation)
    }
    /// Where admin calls meant for this member go, and who must answer them; `None`
    /// without a running pod.
    pub fn recipient(&self) -> Option<Recipient<'_>> {
        Some(Recipient {
            ip: self.pod_ip.as_deref()?,
            id: self.id,
            incarnation: self.incarnation(),
        })
    }
    /// Its address-book entry: its running pod's address, with the incarnation that answered
    /// there. `None` once the pod is gone, not running or not yet addressed.
    pub fn book_entry(&self) -> Option<PeerAddr> {
        Some(PeerAddr::new(
            self.peer_addr()?,
            self.incarnation().cloned(),
        ))
    }
    /// `demo-4 (member id 6)`: the pod name people know, the id as detail.
    pub fn label(&self) -> String {
        format!("{} (member id {})", self.name, self.id)
    }
}

/// The address book of these members: every member with a running pod, under the id its pod
/// carries. A member whose pod was deleted, stopped running or changed IP drops out at once;
/// a replacement appears only under its own (new) id.
pub fn address_book<'a>(members: impl IntoIterator<Item = &'a Observed>) -> AddressBook {
    members
        .into_iter()
        .filter(|m| m.id > 0)
        .filter_map(|m| Some((m.id, m.book_entry()?)))
        .collect()
}

/// Names a member id for people: `demo-4 (member id 6)` when an ordinal carries it, else
/// `member id 6` (its pod is long gone).
pub fn label_of(members: &[Observed], id: u64) -> String {
    members
        .iter()
        .find(|m| m.id == id)
        .map_or_else(|| format!("member id {id}"), Observed::label)
}

/// [`label_of`] for a list, comma-separated.
pub fn labels_of(members: &[Observed], ids: &[u64]) -> String {
    ids.iter()
        .map(|id| label_of(members, *id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The next Raft membership step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to do now; the reason is reported.
    Wait(String),
    /// Send init to `ordinal` with these voters.
    Bootstrap {
        /// Receiver.
        ordinal: u32,
        /// The voters' address book.
        members: AddressBook,
    },
    /// Add a learner.
    AddLearner {
        /// Its ordinal.
        ordinal: u32,
        /// Its id.
        id: u64,
        /// Its address-book entry.
        entry: PeerAddr,
    },
    /// Move leadership away from a voter about to be removed; if the member
    /// cannot transfer, set `fallback_voters` instead.
    TransferLeader {
        /// Target voter.
        to: u64,
        /// The voter set without the leader.
        fallback_voters: Vec<u64>,
    },
    /// Change the voter set.
    SetVoters {
        /// New voters.
        voters: Vec<u64>,
        /// Ids added.
        added: Vec<u64>,
        /// Ids removed.
        removed: Vec<u64>,
    },
    /// Delete the pod of an ordinal that is no longer wanted.
    DeletePod {
        /// Ordinal.
        ordinal: u32,
    },
    /// Converged.
    Stable,
}

impl Step {
    /// Does this step mean the cluster is still converging?
    pub fn converging(&self) -> bool {
        !matches!(self, Step::Stable)
    }
}

/// The leader as seen by the members (the highest-term member claiming it).
pub fn find_leader(members: &[Observed]) -> Option<&Observed> {
    members
        .iter()
        .filter(|m| m.status.as_ref().is_some_and(Status::is_leader))
        .max_by_key(|m| m.status.as_ref().map(|s| s.engine.term).unwrap_or(0))
}

/// Has any member been initialised?
pub fn initialised(members: &[Observed]) -> bool {
    members.iter().any(|m| {
        m.status.as_ref().is_some_and(|s| {
            !s.engine.voters.is_empty() || s.engine.leader.is_some() || s.is_leader()
        })
    })
}

fn caught_up(leader: &Status, m: Option<&Observed>, id: u64) -> bool {
    if let Some(p) = leader.engine.peers.get(&id) {
        return p.lag_entries <= CATCH_UP_ENTRIES;
    }
    m.and_then(|m| m.status.as_ref())
        .is_some_and(|s| s.engine.applied_index + CATCH_UP_ENTRIES >= leader.engine.commit_index)
}

fn majority_reachable(voters: &BTreeSet<u64>, reachable: &BTreeSet<u64>) -> bool {
    let up = voters.iter().filter(|v| reachable.contains(v)).count();
    !voters.is_empty() && up > voters.len() / 2
}

/// Decides the next Raft membership step.
///
/// `members` holds every ordinal the operator knows (wanted ones, `< replicas`,
/// and leftovers of a scale-down); `bootstrapped` is the status flag.
pub fn next_raft_step(replicas: u32, members: &[Observed], bootstrapped: bool) -> Step {
    let wanted: Vec<&Observed> = members.iter().filter(|m| m.ordinal < replicas).collect();
    let Some(leader) = find_leader(members) else {
        if bootstrapped || initialised(members) {
            return Step::Wait("no leader".into());
        }
        // Leftover pods of a scale-down before bootstrap: just delete them.
        if let Some(m) = members
            .iter()
            .find(|m| m.ordinal >= replicas && m.pod_exists)
        {
            return Step::DeletePod { ordinal: m.ordinal };
        }
        let ready = wanted.len() == replicas as usize
            && wanted.iter().all(|m| m.reachable() && m.pod_ip.is_some());
        if !ready {
            let up = wanted.iter().filter(|m| m.reachable()).count();
            return Step::Wait(format!("waiting for members to start ({up}/{replicas})"));
        }
        let members = address_book(wanted.iter().copied());
        let ordinal = wanted.iter().map(|m| m.ordinal).min().unwrap_or(0);
        return Step::Bootstrap { ordinal, members };
    };
    let Some(ls) = leader.status.as_ref() else {
        return Step::Wait("no leader".into());
    };
    let roles = Roles::of(ls);
    let voters: BTreeSet<u64> = ls.engine.voters.iter().copied().collect();
    let learners: BTreeSet<u64> = ls.engine.learners.iter().copied().collect();
    let current: BTreeSet<u64> = wanted.iter().map(|m| m.id).collect();
    let reachable: BTreeSet<u64> = members
        .iter()
        .filter(|m| m.reachable())
        .map(|m| m.id)
        .collect();
    let by_id = |id: u64| members.iter().find(|m| m.id == id);

    // 1. A running member that is neither voter nor learner joins as a learner.
    for m in &wanted {
        if m.reachable() && !voters.contains(&m.id) && !learners.contains(&m.id) {
            if let Some(entry) = m.book_entry() {
                return Step::AddLearner {
                    ordinal: m.ordinal,
                    id: m.id,
                    entry,
                };
            }
        }
    }

    // 2. Leftover pods of a scale-down whose member is no longer a voter.
    if let Some(m) = members
        .iter()
        .find(|m| m.ordinal >= replicas && m.pod_exists && !voters.contains(&m.id))
    {
        return Step::DeletePod { ordinal: m.ordinal };
    }

    // 3. Promote one caught-up learner; drop stale voters without losing quorum.
    let promote = wanted
        .iter()
        .filter(|m| learners.contains(&m.id) && m.reachable())
        .find(|m| caught_up(ls, Some(m), m.id))
        .map(|m| m.id);
    let stale: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|v| !current.contains(v))
        .collect();
    let mut new: BTreeSet<u64> = voters.clone();
    if let Some(p) = promote {
        new.insert(p);
    }
    // Dead stale voters can all go (they only weaken the quorum).
    for v in stale.iter().filter(|v| !reachable.contains(v)) {
        let mut trial = new.clone();
        trial.remove(v);
        if majority_reachable(&trial, &reachable) {
            new = trial;
        }
    }
    // At most one live stale voter per step, and only when nothing is promoted.
    if promote.is_none() {
        // Remove the highest ordinal first (scale down from the top).
        let live = stale
            .iter()
            .filter(|v| reachable.contains(v))
            .max_by_key(|v| by_id(**v).map(|m| m.ordinal).unwrap_or(0));
        if let Some(v) = live {
            let mut trial = new.clone();
            trial.remove(v);
            if majority_reachable(&trial, &reachable) {
                if *v == leader.id && trial.len() == new.len() - 1 {
                    // Move leadership first.
                    let to = trial
                        .iter()
                        .copied()
                        .filter(|t| reachable.contains(t))
                        .max_by_key(|t| {
                            ls.engine
                                .peers
                                .get(t)
                                .and_then(|p| p.match_index)
                                .unwrap_or(0)
                        });
                    if let Some(to) = to {
                        return Step::TransferLeader {
                            to,
                            fallback_voters: trial.into_iter().collect(),
                        };
                    }
                } else {
                    new = trial;
                }
            }
        }
    }
    if new != voters && !new.is_empty() {
        return Step::SetVoters {
            added: new.difference(&voters).copied().collect(),
            removed: voters.difference(&new).copied().collect(),
            voters: new.into_iter().collect(),
        };
    }

    if let Some(l) = wanted.iter().find(|m| learners.contains(&m.id)) {
        return Step::Wait(format!("{} {} catching up", roles.joining, l.label()));
    }
    if let Some(s) = stale.first() {
        return Step::Wait(format!(
            "cannot remove {} {} without losing {}",
            roles.one,
            label_of(members, *s),
            roles.quorum
        ));
    }
    if wanted.len() < replicas as usize || wanted.iter().any(|m| !voters.contains(&m.id)) {
        return Step::Wait("members missing".into());
    }
    if let Some(m) = wanted.iter().find(|m| !m.reachable()) {
        return Step::Wait(format!("member {} unreachable", m.label()));
    }
    Step::Stable
}

/// The next primary–secondary step.
#[derive(Clone, Debug, PartialEq)]
pub enum PrimaryStep {
    /// Nothing to do now.
    Wait(String),
    /// Send init to the ordinal (it becomes primary).
    Bootstrap {
        /// Receiver.
        ordinal: u32,
        /// The members' address book.
        members: AddressBook,
    },
    /// Point these ordinals at the primary.
    Repoint {
        /// Ordinals to tell.
        ordinals: Vec<u32>,
        /// Primary id.
        primary: u64,
        /// The primary's address-book entry.
        entry: PeerAddr,
    },
    /// The primary's ordinal is going away (scale-down): hand its role to a kept member
    /// first (a planned switchover loses no write; a failover could).
    HandOver {
        /// The primary's ordinal.
        ordinal: u32,
        /// The primary's id.
        from: u64,
        /// The member to take over.
        to: u64,
    },
    /// Delete a scaled-away member's pod, once the primary no longer replicates to it.
    DeletePod {
        /// Its ordinal.
        ordinal: u32,
    },
    /// Tell the primary its member set: the secondaries it replicates to, and that sync
    /// writes wait for. Members that are down are left out (a sync primary could not
    /// acknowledge a write while one is listed) and come back once they run and follow it.
    SetMembers {
        /// The primary's ordinal.
        ordinal: u32,
        /// The new member set (ids, the primary's included).
        members: Vec<u64>,
        /// Ids joining the set.
        added: Vec<u64>,
        /// Ids leaving the set because they are down.
        removed: Vec<u64>,
    },
    /// Promote a secondary.
    Failover {
        /// Ordinal to promote.
        ordinal: u32,
        /// Its id.
        to: u64,
        /// Old primary id (0: never seen).
        from: u64,
        /// What the loss bound is made of.
        loss: LossBound,
    },
    /// The primary is unreachable but the grace period has not passed.
    PrimaryDown,
    /// Converged.
    Stable,
}

/// An upper bound on the acknowledged writes a failover may lose, from the members' own
/// sequence numbers: every entry the old primary held (as last observed) beyond the promoted
/// member's may have been acknowledged (async acknowledges once the primary made an entry
/// durable). Writes the old primary acknowledged after the operator last observed it are
/// beyond anyone's knowledge until it returns (then its `discardedWrites` says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossBound {
    /// The old primary's last sequence number as last observed (the promoted member's own
    /// when the primary was never observed).
    pub acknowledged_seq: u64,
    /// The promoted member's last durable (and applied) sequence number.
    pub promoted_seq: u64,
}

impl LossBound {
    /// Entries acknowledged that the promoted member does not have.
    pub fn possible_loss(&self) -> u64 {
        self.acknowledged_seq.saturating_sub(self.promoted_seq)
    }
}

/// The primary as last observed: its id and its last sequence number then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrimarySeen {
    /// Member id.
    pub id: u64,
    /// Its last (durable, hence possibly acknowledged) sequence number.
    pub last_seq: u64,
}

/// Is member `m` in the primary's write set: running and either answering the operator or
/// heard from by the primary (a member both have lost is down).
fn up_for(primary: &Status, m: &Observed) -> bool {
    m.pod_ip.is_some() && (m.reachable() || hears_from(primary, m.id))
}

/// Decides the next primary–secondary step.
///
/// - `last_primary`: the primary as last observed (kept in status while it is down);
/// - `down_for_secs`: how long the primary has been unreachable;
/// - `failover_after`: grace period in seconds.
pub fn next_primary_step(
    replicas: u32,
    members: &[Observed],
    bootstrapped: bool,
    last_primary: Option<PrimarySeen>,
    down_for_secs: Option<i64>,
    failover_after: u64,
) -> PrimaryStep {
    let wanted: Vec<&Observed> = members.iter().filter(|m| m.ordinal < replicas).collect();
    if let Some(p) = find_leader(members) {
        return with_primary(replicas, members, &wanted, p);
    }
    if !bootstrapped && !initialised(members) {
        let ready = wanted.len() == replicas as usize
            && wanted.iter().all(|m| m.reachable() && m.pod_ip.is_some());
        if !ready {
            let up = wanted.iter().filter(|m| m.reachable()).count();
            return PrimaryStep::Wait(format!("waiting for members to start ({up}/{replicas})"));
        }
        let members = address_book(wanted.iter().copied());
        let ordinal = wanted.iter().map(|m| m.ordinal).min().unwrap_or(0);
        return PrimaryStep::Bootstrap { ordinal, members };
    }
    let down = down_for_secs.unwrap_or(0);
    if down < i64::try_from(failover_after).unwrap_or(i64::MAX) {
        return PrimaryStep::PrimaryDown;
    }
    failover(&wanted, last_primary)
}

/// Promotes the most caught-up reachable member.
fn failover(wanted: &[&Observed], last_primary: Option<PrimarySeen>) -> PrimaryStep {
    let best = wanted
        .iter()
        .filter(|m| m.reachable())
        .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.engine.applied_index));
    let Some(b) = best else {
        return PrimaryStep::Wait("no reachable secondary to promote".into());
    };
    let promoted_seq = b.status.as_ref().map_or(0, |s| s.engine.applied_index);
    PrimaryStep::Failover {
        ordinal: b.ordinal,
        to: b.id,
        from: last_primary.map_or(0, |p| p.id),
        loss: LossBound {
            acknowledged_seq: last_primary.map_or(promoted_seq, |p| p.last_seq),
            promoted_seq,
        },
    }
}

/// The next step while member `p` is the primary.
fn with_primary(
    replicas: u32,
    members: &[Observed],
    wanted: &[&Observed],
    p: &Observed,
) -> PrimaryStep {
    if p.ordinal >= replicas {
        let heir = wanted
            .iter()
            .filter(|m| m.reachable())
            .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.engine.applied_index));
        return match heir {
            Some(h) => PrimaryStep::HandOver {
                ordinal: p.ordinal,
                from: p.id,
                to: h.id,
            },
            None => PrimaryStep::Wait("no kept member to hand the primary role to".into()),
        };
    }
    let (Some(entry), Some(ps)) = (p.book_entry(), p.status.as_ref()) else {
        return PrimaryStep::Wait("primary has no address".into());
    };
    let ordinals: Vec<u32> = wanted
        .iter()
        .filter(|m| m.id != p.id)
        .filter(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.engine.leader != Some(p.id))
        })
        .map(|m| m.ordinal)
        .collect();
    if !ordinals.is_empty() {
        return PrimaryStep::Repoint {
            ordinals,
            primary: p.id,
            entry,
        };
    }
    let known: BTreeSet<u64> = ps.engine.voters.iter().copied().collect();
    let set: BTreeSet<u64> = wanted
        .iter()
        .filter(|m| m.id == p.id || up_for(ps, m))
        .map(|m| m.id)
        .collect();
    if set != known {
        return PrimaryStep::SetMembers {
            ordinal: p.ordinal,
            added: set.difference(&known).copied().collect(),
            removed: known.difference(&set).copied().collect(),
            members: set.into_iter().collect(),
        };
    }
    if let Some(gone) = members
        .iter()
        .find(|m| m.ordinal >= replicas && m.pod_exists && !known.contains(&m.id))
    {
        return PrimaryStep::DeletePod {
            ordinal: gone.ordinal,
        };
    }
    let down: Vec<String> = wanted
        .iter()
        .filter(|m| !set.contains(&m.id))
        .map(|m| m.name.clone())
        .collect();
    if !down.is_empty() {
        return PrimaryStep::Wait(format!(
            "{} down and out of the write set (back as a secondary that catches up once running)",
            down.join(", ")
        ));
    }
    if let Some(why) = sync_blocked(ps, wanted, &set) {
        return PrimaryStep::Wait(why);
    }
    if wanted.len() < replicas as usize || wanted.iter().any(|m| !m.reachable()) {
        return PrimaryStep::Wait("members missing".into());
    }
    PrimaryStep::Stable
}

/// Sync mode: the members of the write set the primary does not hear from although they run
/// and answer the operator (cut off by a partition, paused): they stay in the set, so every
/// write waits for them; says so.
fn sync_blocked(primary: &Status, wanted: &[&Observed], set: &BTreeSet<u64>) -> Option<String> {
    if primary.engine.replication != Mode::Sync {
        return None;
    }
    let silent: Vec<&str> = wanted
        .iter()
        .filter(|m| set.contains(&m.id) && m.reachable() && !hears_from(primary, m.id))
        .map(|m| m.name.as_str())
        .collect();
    (!silent.is_empty()).then(|| {
        format!(
            "writes blocked until {} acknowledges the primary again (running but cut off or \
             paused: it stays in the write set)",
            silent.join(", ")
        )
    })
}

mod roles;
#[cfg(test)]
mod tests;
