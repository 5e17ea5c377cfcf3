//! Leaderless quorum mode (`replication: quorum`): the membership every member holds, and
//! what the members' quorum sections add to the status.
//!
//! Every member coordinates the requests it receives and sends them to every member of the
//! membership (Dynamo's N; DeCandia et al., "Dynamo", SOSP 2007), so each must hold the same
//! membership. The operator keeps it equal to the members whose pod runs and answers: it
//! sends `POST /v1/admin/init` (which replaces the membership, and which the member passes on
//! to the others) to any member whose reported membership differs. A crashed member leaves
//! the membership until its pod runs again (the address book needs its address), like a
//! member out of the sync write set.

use std::collections::BTreeMap;

use caplab_api::status::{QuorumStatus, Status};

use super::observe::Observation;
use super::{Pass, Stepped};
use crate::crd::QuorumSummary;
use crate::member_client::{AddressBook, AdminAuth};
use crate::membership::{self, Observed};

/// The next quorum membership step.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum QuorumStep {
    /// Every answering member holds the membership of the running members.
    Stable,
    /// Nothing to do now; the reason is reported in `Progressing`.
    Wait(String),
    /// Send init with `members` to the member at `ordinal` (it passes it on).
    Init {
        /// Receiver: a member whose membership differs.
        ordinal: u32,
        /// The running members' address book.
        members: AddressBook,
        /// No member held a membership before (the cluster's first init).
        first: bool,
    },
    /// Delete the pod of an ordinal scaled away, which no member counts any more.
    DeletePod {
        /// Ordinal.
        ordinal: u32,
    },
}

/// R and W as the spec gives them, each defaulting (like the member) to a majority of `n`.
pub(super) fn quorum_sizes(read: Option<i32>, write: Option<i32>, n: u32) -> (u32, u32) {
    let majority = n / 2 + 1;
    let size = |q: Option<i32>| q.and_then(|q| u32::try_from(q).ok()).unwrap_or(majority);
    (size(read), size(write))
}

/// Decides the next quorum membership step. `members` holds every ordinal the operator knows
/// (wanted ones, `< replicas`, and leftovers of a scale-down); `needed` is max(R, W), below
/// which the members refuse a membership (they could serve neither reads nor writes).
pub(super) fn next_quorum_step(replicas: u32, members: &[Observed], needed: u32) -> QuorumStep {
    let running: Vec<&Observed> = members
        .iter()
        .filter(|m| m.ordinal < replicas && m.id > 0 && m.reachable() && m.pod_ip.is_some())
        .collect();
    let leftover = || {
        members
            .iter()
            .find(|m| m.ordinal >= replicas && m.pod_exists)
    };
    let first = !membership::initialised(members);
    if first {
        if let Some(m) = leftover() {
            return QuorumStep::DeletePod { ordinal: m.ordinal };
        }
        if running.len() < replicas as usize {
            return QuorumStep::Wait(format!(
                "waiting for every member to answer before the first init ({} of {replicas})",
                running.len()
            ));
        }
    } else if running.len() < needed as usize {
        return QuorumStep::Wait(format!(
            "only {} member(s) answer, fewer than max(R, W) = {needed}: the membership stays \
             as it is until more run",
            running.len()
        ));
    }
    let ids: Vec<u64> = running.iter().map(|m| m.id).collect();
    let differs = running.iter().find(|m| reported_membership(m) != ids);
    if let Some(m) = differs {
        return QuorumStep::Init {
            ordinal: m.ordinal,
            members: membership::address_book(running.iter().copied()),
            first,
        };
    }
    let counted = |id: u64| running.iter().any(|m| reported_membership(m).contains(&id));
    match leftover().filter(|m| !counted(m.id)) {
        Some(m) => QuorumStep::DeletePod { ordinal: m.ordinal },
        None => QuorumStep::Stable,
    }
}

/// The membership a member reports (its voters), sorted.
fn reported_membership(m: &Observed) -> Vec<u64> {
    let mut ids = m
        .status
        .as_ref()
        .map(|s| s.engine.voters.clone())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// A member's quorum section, when it reports one.
fn section(s: &Status) -> Option<&QuorumStatus> {
    s.quorum.as_ref()
}

/// How many replicas (itself included) a member reached on its last call to each.
fn reached(q: &QuorumStatus) -> usize {
    q.replicas.values().filter(|r| r.reachable).count()
}

/// Does the member reach every replica of its membership? (`replicating` in quorum mode: a
/// member cut off from some replica shows the partition even while it still serves.)
pub(crate) fn reaches_all(s: Option<&Status>) -> bool {
    s.and_then(section)
        .is_some_and(|q| q.n > 0 && reached(q) >= q.n)
}

/// The members' quorum sections summed into `status.quorum`: R and W from the members (the
/// spec's, defaulted, until one reports), the pods that reach max(R, W) replicas, and the
/// counters. Lost writes are keyed by the source's pod name (`member id N` once its pod is
/// gone); each replica counts a write that lost there, so the per-source figure is the
/// largest count of any one replica (a lower bound on the writes lost).
pub(super) fn summary(members: &[Observed], sizes: (u32, u32)) -> QuorumSummary {
    let reports: Vec<(&Observed, &QuorumStatus)> = members
        .iter()
        .filter_map(|m| Some((m, section(m.status.as_ref()?)?)))
        .collect();
    let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let (n, read_quorum, write_quorum) = reports
        .iter()
        .map(|(_, q)| (to_u32(q.n), to_u32(q.read_quorum), to_u32(q.write_quorum)))
        .max()
        .unwrap_or((to_u32(members.len()), sizes.0, sizes.1));
    let needed = read_quorum.max(write_quorum) as usize;
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    for (_, q) in &reports {
        for (source, count) in &q.counters.lww_lost_writes {
            let entry = lost.entry(pod_of(members, *source)).or_default();
            *entry = (*entry).max(*count);
        }
    }
    QuorumSummary {
        n,
        read_quorum,
        write_quorum,
        overlapping: read_quorum + write_quorum > n,
        serving: reports
            .iter()
            .filter(|(_, q)| reached(q) >= needed)
            .map(|(m, _)| m.name.clone())
            .collect(),
        lww_lost_writes: lost,
        read_repairs: reports.iter().map(|(_, q)| q.counters.read_repairs).sum(),
        anti_entropy_repaired_keys: reports
            .iter()
            .map(|(_, q)| q.counters.anti_entropy_repaired_keys)
            .sum(),
        last_convergence_ms: reports
            .iter()
            .filter_map(|(_, q)| q.counters.last_convergence_ms)
            .max(),
    }
}

/// The pod name of member `id`, or `member id N` once no ordinal carries it.
fn pod_of(members: &[Observed], id: u64) -> String {
    members
        .iter()
        .find(|m| m.id == id)
        .map_or_else(|| format!("member id {id}"), |m| m.name.clone())
}

/// The membership most answering members report (`status.voters` in quorum mode).
pub(super) fn common_membership(members: &[Observed]) -> Vec<u64> {
    let mut votes: BTreeMap<Vec<u64>, usize> = BTreeMap::new();
    for m in members.iter().filter(|m| m.reachable()) {
        *votes.entry(reported_membership(m)).or_default() += 1;
    }
    votes
        .into_iter()
        .max_by_key(|(ids, n)| (*n, ids.len()))
        .map(|(ids, _)| ids)
        .unwrap_or_default()
}

impl Pass<'_> {
    /// R and W of this cluster's spec (defaults: a majority of `spec.replicas`).
    pub(super) fn quorum_sizes(&self) -> (u32, u32) {
        let spec = &self.rc.spec;
        quorum_sizes(spec.read_quorum, spec.write_quorum, self.replicas)
    }

    /// The next quorum membership step ([`next_quorum_step`]), taken.
    pub(super) async fn quorum_membership(&self, seen: &Observation, auth: &AdminAuth) -> Stepped {
        let (r, w) = self.quorum_sizes();
        let step = next_quorum_step(self.replicas, &seen.members, r.max(w));
        let done = match step {
            QuorumStep::Stable => None,
            QuorumStep::Wait(why) => Some(why),
            QuorumStep::Init {
                ordinal,
                members,
                first,
            } => {
                self.quorum_init(seen, auth, (ordinal, &members), first)
                    .await
            }
            QuorumStep::DeletePod { ordinal } => self.delete_member_pod(ordinal).await,
        };
        Stepped {
            converging: done.is_some(),
            done,
        }
    }

    /// Sends the membership `members` to the member at `ordinal`, with an Event on success.
    async fn quorum_init(
        &self,
        seen: &Observation,
        auth: &AdminAuth,
        (ordinal, members): (u32, &AddressBook),
        first: bool,
    ) -> Option<String> {
        let m = seen.members.iter().find(|m| m.ordinal == ordinal)?;
        let ids: Vec<u64> = members.keys().copied().collect();
        let (r, w) = self.quorum_sizes();
        let note = format!(
            "quorum membership {} (N={}, R={r}, W={w})",
            membership::labels_of(&seen.members, &ids),
            ids.len()
        );
        if first {
            return self.bootstrap(m, auth, members, note).await;
        }
        match self.ctx.members.init(m.recipient()?, auth, members).await {
            Ok(()) => {
                self.event(false, "MembershipChanged", note).await;
                Some(format!(
                    "membership now {}",
                    membership::labels_of(&seen.members, &ids)
                ))
            }
            Err(e) => self.member_failed(m, "init", e),
        }
    }
}

#[cfg(test)]
mod tests;
