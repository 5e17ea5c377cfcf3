//! The runtime guard of crash faults on a Raft cluster without storage: a crash starts only
//! while a majority of the voters would keep running.
//!
//! A member crashed without storage comes back empty, as a new member that the survivors
//! must admit (learner, caught up, promoted, the old id removed: `membership`), which takes
//! a majority of the voters. The validator (`validation/crash.rs`) refuses what the spec
//! alone makes certain, judged on the spec's windows; what really runs differs: a fault
//! starts at the first pass after it is due, so two faults due while the operator waited
//! (for a leader, for the first Ready) start in the same pass, and a crashed member is back
//! as a voter only well after its fault ended. Counting the voters that run now, less the
//! members about to crash, covers both.

use std::collections::BTreeSet;

use super::Cluster;
use crate::crd::{FaultState, FaultStatus};
use crate::resources;

/// How the message of a crash held back by this guard begins (`waiting: crashing …`): a
/// later pass tells from it that the wait was announced already.
const WAITING: &str = "waiting: ";
const CRASHING: &str = "crashing ";

/// The Raft voters a crash must leave a majority of running.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Voters {
    /// The cluster's name (pods are `<cluster>-<ordinal>`), for the message.
    pub cluster: String,
    /// Member ids of the voters in the leader's configuration.
    pub voters: BTreeSet<u64>,
    /// Member ids of those voters whose members answer now.
    pub running: BTreeSet<u64>,
}

impl Voters {
    /// The voters of `leader_voters` (the leader's configuration) among `answering` (member
    /// ids that answered this pass).
    pub fn new(
        cluster: &str,
        leader_voters: &[u64],
        answering: impl IntoIterator<Item = u64>,
    ) -> Voters {
        let voters: BTreeSet<u64> = leader_voters.iter().copied().collect();
        let running = answering
            .into_iter()
            .filter(|id| voters.contains(id))
            .collect();
        Voters {
            cluster: cluster.to_string(),
            voters,
            running,
        }
    }

    /// `Ok` when crashing the ordinals `targets` while `down` (ordinals crashed by faults in
    /// force) stay down leaves more than half of the voters running; else the pending
    /// fault's message: `waiting: crashing demo-1 now would leave 1 of 3 voters running
    /// (demo-0 is down or not yet back as a voter); starts when a majority would survive`.
    pub(super) fn admit(
        &self,
        cluster: &Cluster<'_>,
        targets: &[u32],
        down: &BTreeSet<u32>,
    ) -> Result<(), String> {
        let ids = cluster.ids;
        let gone: BTreeSet<u64> = targets
            .iter()
            .chain(down)
            .filter_map(|o| ids.get(o).copied())
            .collect();
        let left: BTreeSet<u64> = self.running.difference(&gone).copied().collect();
        if left.len() * 2 > self.voters.len() {
            return Ok(());
        }
        let absent: Vec<u32> = (0..cluster.replicas)
            .filter(|o| !targets.contains(o))
            .filter(|o| ids.get(o).is_none_or(|id| !left.contains(id)))
            .collect();
        Err(format!(
            "{WAITING}{CRASHING}{} now would leave {} of {} voters running{}; starts when a majority \
             would survive",
            self.names(targets),
            left.len(),
            self.voters.len(),
            self.why_absent(&absent),
        ))
    }

    /// ` (demo-0 is down or not yet back as a voter)`, or nothing when every other member
    /// runs as a voter.
    fn why_absent(&self, absent: &[u32]) -> String {
        match absent {
            [] => String::new(),
            [one] => format!(
                " ({} is down or not yet back as a voter)",
                resources::pod_name(&self.cluster, *one)
            ),
            _ => format!(
                " ({} are down or not yet back as voters)",
                self.names(absent)
            ),
        }
    }

    /// `demo-0, demo-2`.
    fn names(&self, ordinals: &[u32]) -> String {
        ordinals
            .iter()
            .map(|o| resources::pod_name(&self.cluster, *o))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a pending fault held back by [`Voters::admit`] says after `waiting: ` (`crashing
/// demo-1 now would …`); `None` for any other status.
pub(super) fn deferred(st: &FaultStatus) -> Option<&str> {
    let message = st
        .message
        .as_deref()
        .filter(|_| st.state == FaultState::Pending)?;
    let why = message.strip_prefix(WAITING)?;
    why.starts_with(CRASHING).then_some(why)
}
