//! Pure membership decisions: bootstrap, add learner, promote, remove, failover.
//!
//! Each call returns the single next step; the controller performs it and
//! reconciles again, so every step is taken against fresh observations.

use std::collections::{BTreeMap, BTreeSet};

use crate::member_client::{NodeStatus, PEER_PORT};

/// A learner is caught up when it is at most this many entries behind.
pub const CATCH_UP_ENTRIES: u64 = 10;

/// One member as observed this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Ordinal.
    pub ordinal: u32,
    /// Member id (from the pod annotation, or the last status when the pod is gone).
    pub id: u64,
    /// A pod exists (and is not being deleted).
    pub pod_exists: bool,
    /// Pod IP, when the pod is running.
    pub pod_ip: Option<String>,
    /// `/v1/status`, when it answered.
    pub status: Option<NodeStatus>,
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
        /// id -> peer address.
        members: BTreeMap<u64, String>,
    },
    /// Add a learner.
    AddLearner {
        /// Its ordinal.
        ordinal: u32,
        /// Its id.
        id: u64,
        /// Its peer address.
        addr: String,
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
        .filter(|m| m.status.as_ref().is_some_and(NodeStatus::is_leader))
        .max_by_key(|m| m.status.as_ref().map(|s| s.term).unwrap_or(0))
}

/// Has any member been initialised?
pub fn initialised(members: &[Observed]) -> bool {
    members.iter().any(|m| {
        m.status
            .as_ref()
            .is_some_and(|s| !s.voters.is_empty() || s.leader.is_some() || s.is_leader())
    })
}

fn caught_up(leader: &NodeStatus, m: Option<&Observed>, id: u64) -> bool {
    if let Some(p) = leader.peers.get(&id.to_string()) {
        if let Some(lag) = p.lag_entries {
            return lag <= CATCH_UP_ENTRIES;
        }
        if let Some(mi) = p.match_index {
            return mi + CATCH_UP_ENTRIES >= leader.commit_index;
        }
    }
    m.and_then(|m| m.status.as_ref())
        .is_some_and(|s| s.applied_index + CATCH_UP_ENTRIES >= leader.commit_index)
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
        let members = wanted
            .iter()
            .filter_map(|m| m.peer_addr().map(|a| (m.id, a)))
            .collect();
        let ordinal = wanted.iter().map(|m| m.ordinal).min().unwrap_or(0);
        return Step::Bootstrap { ordinal, members };
    };
    let Some(ls) = leader.status.as_ref() else {
        return Step::Wait("no leader".into());
    };
    let voters: BTreeSet<u64> = ls.voters.iter().copied().collect();
    let learners: BTreeSet<u64> = ls.learners.iter().copied().collect();
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
            if let Some(addr) = m.peer_addr() {
                return Step::AddLearner {
                    ordinal: m.ordinal,
                    id: m.id,
                    addr,
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
                            ls.peers
                                .get(&t.to_string())
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
        return Step::Wait(format!("learner {} (id {}) catching up", l.ordinal, l.id));
    }
    if let Some(s) = stale.first() {
        return Step::Wait(format!("cannot remove voter {s} without losing quorum"));
    }
    if wanted.len() < replicas as usize || wanted.iter().any(|m| !voters.contains(&m.id)) {
        return Step::Wait("members missing".into());
    }
    if let Some(m) = wanted.iter().find(|m| !m.reachable()) {
        return Step::Wait(format!("member {} (id {}) unreachable", m.ordinal, m.id));
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
        /// id -> peer address.
        members: BTreeMap<u64, String>,
    },
    /// Point these ordinals at the primary.
    Repoint {
        /// Ordinals to tell.
        ordinals: Vec<u32>,
        /// Primary id.
        primary: u64,
        /// Primary peer address.
        addr: String,
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
    /// Tell the primary the current member set (a replaced member has a new id).
    SetMembers {
        /// The primary's ordinal.
        ordinal: u32,
        /// Every wanted member id.
        members: Vec<u64>,
    },
    /// Promote a secondary.
    Failover {
        /// Ordinal to promote.
        ordinal: u32,
        /// Its id.
        to: u64,
        /// Old primary id.
        from: u64,
        /// Writes possibly lost (primary's last commit index minus the new primary's).
        possible_loss: u64,
    },
    /// The primary is unreachable but the grace period has not passed.
    PrimaryDown,
    /// Converged.
    Stable,
}

/// Decides the next primary–secondary step.
///
/// - `last_primary`: (id, last known commit index) from the previous status;
/// - `down_for_secs`: how long the primary has been unreachable;
/// - `failover_after`: grace period in seconds.
pub fn next_primary_step(
    replicas: u32,
    members: &[Observed],
    bootstrapped: bool,
    last_primary: Option<(u64, u64)>,
    down_for_secs: Option<i64>,
    failover_after: u64,
) -> PrimaryStep {
    let wanted: Vec<&Observed> = members.iter().filter(|m| m.ordinal < replicas).collect();
    if let Some(p) = find_leader(members) {
        if p.ordinal >= replicas {
            let heir = wanted
                .iter()
                .filter(|m| m.reachable())
                .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.applied_index));
            return match heir {
                Some(h) => PrimaryStep::HandOver {
                    ordinal: p.ordinal,
                    from: p.id,
                    to: h.id,
                },
                None => PrimaryStep::Wait("no kept member to hand the primary role to".into()),
            };
        }
        let Some(addr) = p.peer_addr() else {
            return PrimaryStep::Wait("primary has no address".into());
        };
        let ordinals: Vec<u32> = wanted
            .iter()
            .filter(|m| m.id != p.id)
            .filter(|m| m.status.as_ref().is_some_and(|s| s.leader != Some(p.id)))
            .map(|m| m.ordinal)
            .collect();
        if !ordinals.is_empty() {
            return PrimaryStep::Repoint {
                ordinals,
                primary: p.id,
                addr,
            };
        }
        let mut ids: Vec<u64> = wanted
            .iter()
            .filter(|m| m.pod_ip.is_some())
            .map(|m| m.id)
            .collect();
        ids.sort_unstable();
        let known = p
            .status
            .as_ref()
            .map(|s| s.voters.clone())
            .unwrap_or_default();
        if !ids.is_empty() && ids.contains(&p.id) && ids != known {
            return PrimaryStep::SetMembers {
                ordinal: p.ordinal,
                members: ids,
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
        if wanted.len() < replicas as usize || wanted.iter().any(|m| !m.reachable()) {
            return PrimaryStep::Wait("members missing".into());
        }
        return PrimaryStep::Stable;
    }
    if !bootstrapped && !initialised(members) {
        let ready = wanted.len() == replicas as usize
            && wanted.iter().all(|m| m.reachable() && m.pod_ip.is_some());
        if !ready {
            let up = wanted.iter().filter(|m| m.reachable()).count();
            return PrimaryStep::Wait(format!("waiting for members to start ({up}/{replicas})"));
        }
        let members = wanted
            .iter()
            .filter_map(|m| m.peer_addr().map(|a| (m.id, a)))
            .collect();
        let ordinal = wanted.iter().map(|m| m.ordinal).min().unwrap_or(0);
        return PrimaryStep::Bootstrap { ordinal, members };
    }
    let down = down_for_secs.unwrap_or(0);
    if down < i64::try_from(failover_after).unwrap_or(i64::MAX) {
        return PrimaryStep::PrimaryDown;
    }
    let best = wanted
        .iter()
        .filter(|m| m.status.is_some())
        .max_by_key(|m| m.status.as_ref().map(|s| s.applied_index).unwrap_or(0));
    match best {
        Some(b) => {
            let applied = b.status.as_ref().map(|s| s.applied_index).unwrap_or(0);
            let (from, last_commit) = last_primary.unwrap_or((0, applied));
            PrimaryStep::Failover {
                ordinal: b.ordinal,
                to: b.id,
                from,
                possible_loss: last_commit.saturating_sub(applied),
            }
        }
        None => PrimaryStep::Wait("no reachable secondary to promote".into()),
    }
}
