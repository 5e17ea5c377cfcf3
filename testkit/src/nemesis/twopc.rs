//! The 2pc coordinator crash: the one fault after which two-phase commit blocks (Bernstein,
//! Hadzilacos & Goodman, *Concurrency Control and Recovery in Database Systems*, 1987, §7.3).
//! The nemesis kills the coordinator while a participant holds a prepared transaction, watches
//! the participants until every transaction they still hold is in doubt, keeps the coordinator
//! down for the drawn hold, restarts it on its data directory and waits until no participant
//! is in doubt any more. What it saw is recorded in [`Blocked`] for the test to judge; the
//! nemesis itself fails nothing.

use std::time::{Duration, Instant};

use caplab_api::status::TwoPcStatus;

use super::admin::{current_leader, poll};
use super::Event;
use crate::Cluster;

/// What a coordinator crash did, in the run's time base (nanoseconds since its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub coordinator: u64,
    /// Transactions the participants held (voted yes on, decision unknown) just before the
    /// kill, summed over participants.
    pub prepared_at_kill: u64,
    /// The most transactions in doubt at once, summed over participants, while it was down:
    /// held, and neither the coordinator nor another participant could say the decision.
    pub in_doubt: u64,
    /// When it was SIGKILLed and when it was started again.
    pub killed_ns: u64,
    pub restarted_ns: u64,
    /// When every participant was first seen with nothing in doubt after the restart; `None`
    /// if they were still in doubt when the nemesis stopped waiting.
    pub resolved_ns: Option<u64>,
}

/// How often participants are asked while waiting for a prepared transaction to kill into:
/// often, because a transaction holds its key only for its decision delay.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// Kills the coordinator with a transaction prepared, holds it down (at least `hold`, and
/// until the participants' holds are all in doubt or `patience` passes), restarts it and waits
/// up to `patience` for the participants to resolve. Fills `event`.
pub(super) async fn coordinator_crash(
    cluster: &mut Cluster,
    start: Instant,
    hold: Duration,
    patience: Duration,
    event: &mut Event,
) {
    let since = |at: Instant| u64::try_from((at - start).as_nanos()).unwrap_or(u64::MAX);
    let Some(coordinator) = current_leader(cluster).await else {
        event.fault = "coordinator crash skipped: no coordinator answers".into();
        return;
    };
    let participants = cluster.ids_except(coordinator);
    let prepared_at_kill = until_prepared(cluster, &participants, patience).await;
    let killed = Instant::now();
    cluster.kill(coordinator);
    event.fault = format!("SIGKILL coordinator {coordinator}, restart after {hold:?} or more");
    let in_doubt = poll(patience, || all_in_doubt(cluster, &participants))
        .await
        .unwrap_or_else(|| {
            event
                .notes
                .push("participants still held transactions not yet in doubt".into());
            0
        });
    tokio::time::sleep(hold.saturating_sub(killed.elapsed())).await;
    let restarted = Instant::now();
    cluster.restart(coordinator);
    let resolved = poll(patience, || resolved(cluster, &participants)).await;
    event.blocked = Some(Blocked {
        coordinator,
        prepared_at_kill,
        in_doubt,
        killed_ns: since(killed),
        restarted_ns: since(restarted),
        resolved_ns: resolved.map(since),
    });
}

/// Waits (up to `patience`) until some participant holds a prepared transaction; returns how
/// many the participants hold then (0 when none did in time: the crash happens anyway).
async fn until_prepared(cluster: &Cluster, participants: &[u64], patience: Duration) -> u64 {
    let give_up = Instant::now() + patience.min(Duration::from_secs(5));
    loop {
        let held: u64 = statuses(cluster, participants)
            .await
            .iter()
            .map(|t| t.prepared)
            .sum();
        if held > 0 || Instant::now() >= give_up {
            return held;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// The transactions in doubt, summed, once every transaction a participant holds is in doubt
/// (every participant answering); `None` while some are still being resolved.
async fn all_in_doubt(cluster: &Cluster, participants: &[u64]) -> Option<u64> {
    let all = statuses(cluster, participants).await;
    (all.len() == participants.len() && all.iter().all(|t| t.prepared == t.in_doubt))
        .then(|| all.iter().map(|t| t.in_doubt).sum())
}

/// When every participant answers with nothing in doubt: now.
async fn resolved(cluster: &Cluster, participants: &[u64]) -> Option<Instant> {
    let all = statuses(cluster, participants).await;
    (all.len() == participants.len() && all.iter().all(|t| t.in_doubt == 0)).then(Instant::now)
}

/// The 2pc status of each of `members` that answers.
async fn statuses(cluster: &Cluster, members: &[u64]) -> Vec<TwoPcStatus> {
    let mut all = Vec::new();
    for id in members {
        if let Some(t) = cluster.member_status(*id).await.and_then(|s| s.twopc) {
            all.push(t);
        }
    }
    all
}

/// After healing: the coordinator answers and no member holds a transaction, prepared or in
/// doubt (the workload has stopped, so every transaction can finish).
pub(super) async fn settled(cluster: &Cluster, deadline: Duration) -> Result<(), String> {
    let ids: Vec<u64> = cluster.members.keys().copied().collect();
    let quiet = poll(deadline, || async {
        current_leader(cluster).await?;
        let all = statuses(cluster, &ids).await;
        (all.len() == ids.len() && all.iter().all(|t| t.prepared == 0 && t.in_doubt == 0))
            .then_some(())
    })
    .await;
    quiet.ok_or(format!(
        "2pc: some member still held a transaction (prepared or in doubt) {deadline:?} after \
         healing, or the coordinator did not answer"
    ))
}
