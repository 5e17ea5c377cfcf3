//! 2pc membership and blocking: the Raft flow with the coordinator in the leader's place.
//!
//! Bootstrap is `init` to the lowest ordinal, which becomes the coordinator for good; a new
//! member joins the participants through the coordinator (the 2pc member takes
//! `add-learner` as "add this participant", so no promotion follows), and a leaving one is
//! removed from them before its pod goes. Participant changes wait until the coordinator
//! holds no prepared transaction (`twopc.prepared == 0`; the member itself also serialises
//! them with its transactions). A coordinator that is down is never replaced: two-phase
//! commit blocks until it returns (Gray 1978; Bernstein, Hadzilacos & Goodman 1987, ch. 7),
//! and the status says so ([`blocked`]) with what would unblock it.

use std::collections::BTreeSet;

use caplab_api::paths::ADMIN_TWOPC_DECIDE;
use caplab_api::status::Status;
use chrono::{DateTime, Duration, Utc};

use super::observe::Observation;
use super::{ts, Pass, Stepped};
use crate::crd::{Condition, RegisterClusterStatus, Replication};
use crate::member_client::AdminAuth;
use crate::membership::{self, Observed, Step};

/// Condition type saying the coordinator is down and 2pc cannot decide anything.
pub const BLOCKED: &str = "Blocked";

/// Why a rollout leaves the coordinator's pod alone unless both its pod and the spec keep the
/// data on a claim. With storage its pod is simply recreated last (writes block while it
/// restarts; it finishes its log).
pub const COORDINATOR_NOT_ROLLED: &str = "the 2pc coordinator's pod is not recreated: it keeps \
     its decision log in an emptyDir (or the new spec would), so it would come back empty as a \
     new member and the participants would wait for the old coordinator for ever; to change \
     it, create a new cluster with spec.storage";

impl Pass<'_> {
    /// The next 2pc membership step ([`next_step`]), taken.
    pub(super) async fn twopc_membership(&self, seen: &Observation, auth: &AdminAuth) -> Stepped {
        let step = next_step(self.replicas, &seen.members, self.prev.bootstrapped);
        let converging = step.converging();
        let done = match step {
            Step::Bootstrap { ordinal, members } => {
                let m = seen.members.iter().find(|m| m.ordinal == ordinal);
                let ids: Vec<u64> = members.keys().copied().collect();
                let note = format!(
                    "initialised 2pc: coordinator {}, participants {}",
                    m.map(Observed::label).unwrap_or_default(),
                    membership::labels_of(&seen.members, &ids)
                );
                match m {
                    Some(m) => self.bootstrap(m, auth, &members, note).await,
                    None => None,
                }
            }
            step => self.raft_step(seen, auth, step).await,
        };
        Stepped { converging, done }
    }

    /// Sets the `Blocked` condition in `st` from what the participants report, and announces
    /// its changes: one Warning `Blocked` Event when the coordinator goes down, one Normal
    /// `Unblocked` when it is back.
    /// Other modes: nothing.
    pub(super) async fn report_blocked(&self, seen: &Observation, st: &mut RegisterClusterStatus) {
        if st.replication != Some(Replication::TwoPc) {
            return;
        }
        let found = blocked(&seen.members, self.now);
        let was = self.prev.conditions.iter().find(|c| c.type_ == BLOCKED);
        let cond = blocked_condition(found.as_ref(), was, self.rc.metadata.generation, self.now);
        // Once when blocking starts and once when it ends: the in-doubt count moving while
        // blocked shows in the condition's message only.
        let changed = was.map(|c| c.status.as_str()) != Some(cond.status.as_str());
        if changed {
            match &found {
                Some(_) => self.event(true, "Blocked", cond.message.clone()).await,
                None if was.is_some_and(|c| c.status == "True") => {
                    let note = "2pc unblocked: the coordinator answers again".to_string();
                    self.event(false, "Unblocked", note).await;
                }
                None => {}
            }
        }
        st.conditions.retain(|c| c.type_ != BLOCKED);
        st.conditions.push(cond);
    }
}

/// The next 2pc membership step: [`membership::next_raft_step`] on what the 2pc member
/// reports (participants as voters, the coordinator as leader, no learners), except that
/// a down coordinator is waited for (never replaced), the coordinator is never moved, and
/// participants change only while the coordinator holds no prepared transaction.
pub fn next_step(replicas: u32, members: &[Observed], bootstrapped: bool) -> Step {
    let coordinator = membership::find_leader(members);
    if coordinator.is_none() && (bootstrapped || membership::initialised(members)) {
        return Step::Wait(match coordinator_id(members) {
            Some(id) => format!(
                "coordinator {} down: 2pc waits for it (it is never replaced)",
                membership::label_of(members, id)
            ),
            None => "no coordinator known".into(),
        });
    }
    let step = membership::next_raft_step(replicas, members, bootstrapped);
    let prepared = coordinator
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.twopc.as_ref())
        .map_or(0, |t| t.prepared);
    match step {
        Step::TransferLeader { .. } => Step::Wait(
            "the coordinator is on a leaving ordinal: 2pc never changes its coordinator; keep \
             replicas above its ordinal"
                .into(),
        ),
        Step::AddLearner { .. } | Step::SetVoters { .. } if prepared > 0 => Step::Wait(format!(
            "{prepared} transaction(s) in flight: participants change once none is"
        )),
        step => step,
    }
}

/// The coordinator the members name (the first that names one).
fn coordinator_id(members: &[Observed]) -> Option<u64> {
    members
        .iter()
        .filter_map(|m| m.status.as_ref()?.twopc.as_ref()?.coordinator)
        .next()
}

/// A blocked 2pc cluster: its coordinator is down, so nothing commits or aborts.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// The coordinator, `demo-0 (member id 1)`.
    pub coordinator: String,
    /// Distinct transactions in doubt on the participants that answer.
    pub in_doubt: usize,
    /// When the oldest of them was voted yes (by its participant's clock).
    pub since: Option<DateTime<Utc>>,
    /// The participants holding them (pod names).
    pub holders: Vec<String>,
    /// The oldest in-doubt transaction id, for the example decide call.
    pub oldest_txid: Option<u64>,
}

/// Is the cluster blocked (some member names a coordinator that does not answer)? In-doubt
/// transactions are counted once each across the participants (`twopc.inDoubtTransactions`).
pub fn blocked(members: &[Observed], now: DateTime<Utc>) -> Option<Blocked> {
    let id = coordinator_id(members)?;
    let up = members
        .iter()
        .any(|m| m.id == id && m.status.as_ref().is_some_and(Status::is_leader));
    if up {
        return None;
    }
    let mut txids = BTreeSet::new();
    let mut holders = Vec::new();
    let mut oldest: Option<(u64, u64)> = None; // (age ms, txid)
    for m in members {
        let Some(t) = m.status.as_ref().and_then(|s| s.twopc.as_ref()) else {
            continue;
        };
        if t.in_doubt_transactions.is_empty() {
            continue;
        }
        holders.push(m.name.clone());
        for tx in &t.in_doubt_transactions {
            txids.insert(tx.txid);
        }
        let first = t.in_doubt_transactions.first().map_or(0, |tx| tx.txid);
        if let Some(age) = t.oldest_in_doubt_ms {
            if oldest.is_none_or(|(a, _)| age > a) {
                oldest = Some((age, first));
            }
        }
    }
    Some(Blocked {
        coordinator: membership::label_of(members, id),
        in_doubt: txids.len(),
        since: oldest.map(|(age, _)| now - Duration::milliseconds(i64::try_from(age).unwrap_or(0))),
        holders,
        oldest_txid: oldest.map(|(_, txid)| txid),
    })
}

impl Blocked {
    /// What it means and what would unblock it, in plain words. The e2e suite's `inDoubt`
    /// key reads the count from it: keep "; N transaction(s) in doubt" (or "no transaction in
    /// doubt") as worded.
    pub fn message(&self) -> String {
        let doubt =
            match (self.in_doubt, self.since) {
                (0, _) => "no transaction in doubt".to_string(),
                (n, since) => format!(
                "{n} transaction(s) in doubt on {}{} (their keys are held: reads and writes of \
                 them are refused)",
                self.holders.join(", "),
                since.map(|s| format!(" since {}", ts(s))).unwrap_or_default()
            ),
            };
        let txid = self.oldest_txid.map_or("<txid>".into(), |t| t.to_string());
        format!(
            "2pc blocked: coordinator {} is down and is never replaced, so no write can commit \
             or abort; {doubt}. Unblocks when the coordinator returns (it finishes what its log \
             decided and aborts the rest), or force a decision on each in-doubt transaction: \
             POST {ADMIN_TWOPC_DECIDE} {{\"txid\": {txid}, \"decision\": \"commit\"|\"abort\"}} \
             on a participant's peer port (a heuristic decision: it may contradict the \
             coordinator's)",
            self.coordinator
        )
    }
}

/// The `Blocked` condition, keeping `lastTransitionTime` from `prev` while its status holds.
fn blocked_condition(
    found: Option<&Blocked>,
    prev: Option<&Condition>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let (status, reason, message) = match found {
        Some(b) => ("True", "CoordinatorDown", b.message()),
        None => (
            "False",
            "CoordinatorUp",
            "the coordinator answers".to_string(),
        ),
    };
    let last_transition_time = prev
        .filter(|p| p.status == status)
        .map_or_else(|| ts(now), |p| p.last_transition_time.clone());
    Condition {
        type_: BLOCKED.into(),
        status: status.into(),
        last_transition_time,
        reason: reason.into(),
        message,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests;
