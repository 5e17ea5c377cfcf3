//! The coordinator: runs each write or compare-and-set as a transaction (Gray, "Notes on Data
//! Base Operating Systems", 1978; Bernstein, Hadzilacos & Goodman, *Concurrency Control and
//! Recovery in Database Systems*, 1987, ch. 7): log it as begun, PREPARE at every participant
//! (itself included), decide commit only on all yes votes within the vote deadline, log the
//! decision durably, tell every participant and answer once all acknowledged. A restarted
//! coordinator finishes what its log decided and aborts the rest (*presumed abort*, Mohan,
//! Lindsay & Obermarck, TODS 1986).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use caplab_api::paths;
use tokio::time::Instant;

use super::contacts::Contacts;
use super::counters::{AbortCause, Counters, LastVote, Phase};
use super::error::TwoPcError;
use super::link::call;
use super::participant::Participant;
use super::store::{new_value, Logged, Store};
use super::wire::{
    DecideRequest, Decision, DecisionAck, NoCause, PrepareRequest, TxId, TxState, Vote,
};
use crate::network::PeerClient;
use crate::types::{Command, NodeId};

/// How often decisions not yet acknowledged are sent again.
pub const REDELIVERY_INTERVAL: Duration = Duration::from_millis(500);
/// The deadline of one redelivered decision.
const REDELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

/// One participant's answer to PREPARE.
#[derive(Debug, Clone)]
enum Ballot {
    Cast(Vote),
    /// No vote before the deadline: why (unreachable, an error answer).
    Missing(String),
}

pub struct Coordinator {
    pub id: NodeId,
    pub store: Store,
    pub participant: Arc<Participant>,
    pub peers: Arc<PeerClient>,
    pub counters: Arc<Counters>,
    /// How long votes are awaited (within the request's deadline).
    pub vote_timeout: Duration,
    /// Test hook (`--twopc-decision-delay-ms`): a pause between the votes and the decision,
    /// the window in which a killed coordinator leaves participants in doubt.
    pub decision_delay: Duration,
    /// What it last heard from each participant.
    pub contacts: Contacts,
}

/// What the votes decide, and what the client is told when it is an abort.
struct Verdict {
    decision: Decision,
    refusal: Option<(AbortCause, TwoPcError)>,
}

impl Verdict {
    /// All yes: commit. Else abort, explained by the first no (by member id), or else the
    /// first missing vote.
    fn of(ballots: &BTreeMap<NodeId, Ballot>, vote_timeout: Duration) -> Self {
        let no = ballots.iter().find_map(|(id, b)| match b {
            Ballot::Cast(v) if !v.yes => Some((*id, v)),
            _ => None,
        });
        if let Some((id, vote)) = no {
            let reason = vote.reason.clone().unwrap_or_default();
            let error = match (vote.cause, vote.current) {
                (Some(NoCause::CasMismatch), Some(current)) => TwoPcError::CasMismatch { current },
                _ => TwoPcError::Refused(format!(
                    "aborted, nothing applied: member {id} voted no ({reason})"
                )),
            };
            return Self::abort(AbortCause::of(vote.cause), error);
        }
        let missing = ballots.iter().find_map(|(id, b)| match b {
            Ballot::Missing(why) => Some((*id, why)),
            _ => None,
        });
        if let Some((id, why)) = missing {
            let error = TwoPcError::NotApplied(format!(
                "aborted, nothing applied: no vote from member {id} within {} ms ({why})",
                vote_timeout.as_millis()
            ));
            return Self::abort(AbortCause::Timeout, error);
        }
        Verdict {
            decision: Decision::Commit,
            refusal: None,
        }
    }

    fn abort(cause: AbortCause, error: TwoPcError) -> Self {
        Verdict {
            decision: Decision::Abort,
            refusal: Some((cause, error)),
        }
    }
}

impl Coordinator {
    pub fn new(
        participant: Arc<Participant>,
        store: Store,
        peers: Arc<PeerClient>,
        counters: Arc<Counters>,
        vote_timeout: Duration,
        decision_delay: Duration,
    ) -> Self {
        Self {
            id: participant.id,
            store,
            participant,
            peers,
            counters,
            vote_timeout,
            decision_delay,
            contacts: Contacts::default(),
        }
    }

    /// Runs `command` as one transaction over `participants`; returns the register's new
    /// value once every participant acknowledged the commit.
    pub async fn run(
        self: &Arc<Self>,
        participants: BTreeSet<NodeId>,
        command: Command,
        deadline: Instant,
    ) -> Result<i64, TwoPcError> {
        let logged = Logged {
            participants: participants.clone(),
            command: command.clone(),
            decision: None,
        };
        let txid = self.store.begin(logged).await?;
        let request = PrepareRequest {
            txid,
            coordinator: self.id,
            participants,
            command,
        };
        self.run_logged(request, deadline).await
    }

    async fn run_logged(
        self: &Arc<Self>,
        request: PrepareRequest,
        deadline: Instant,
    ) -> Result<i64, TwoPcError> {
        let vote_deadline = deadline.min(Instant::now() + self.vote_timeout);
        let ballots = self.collect_votes(&request, vote_deadline).await;
        let verdict = Verdict::of(&ballots, self.vote_timeout);
        if !self.decision_delay.is_zero() {
            tracing::info!(txid = request.txid, delay = ?self.decision_delay, "test hook: waiting before the decision");
            tokio::time::sleep(self.decision_delay).await;
        }
        let txid = request.txid;
        let mut decision = verdict.decision;
        if let Err(e) = self.store.decide(txid, decision).await {
            // Nobody was told a thing: abort (as a restart would presume).
            tracing::error!(txid, error = %e, "cannot log the decision; aborting");
            decision = Decision::Abort;
        }
        match &verdict.refusal {
            None if decision == Decision::Commit => self.counters.committed(),
            None => self.counters.aborted(AbortCause::Timeout),
            Some((cause, _)) => self.counters.aborted(*cause),
        }
        let missing = self
            .deliver(txid, decision, &request.participants, deadline)
            .await;
        self.settle(txid, decision, missing.clone()).await;
        match (decision, verdict.refusal) {
            (Decision::Abort, Some((_, refusal))) => Err(refusal),
            (Decision::Abort, None) => Err(TwoPcError::NotApplied(
                "aborted, nothing applied: the coordinator could not log its decision".into(),
            )),
            (Decision::Commit, _) if missing.is_empty() => Ok(new_value(&request.command)),
            (Decision::Commit, _) => Err(TwoPcError::Unknown(format!(
                "transaction {txid} committed, but members {:?} have not acknowledged yet (the \
                 coordinator keeps telling them; read the key back)",
                missing.iter().collect::<Vec<_>>()
            ))),
        }
    }

    /// PREPARE at every participant at once; a vote not back by `vote_deadline` is missing.
    async fn collect_votes(
        &self,
        request: &PrepareRequest,
        vote_deadline: Instant,
    ) -> BTreeMap<NodeId, Ballot> {
        let asks = request.participants.iter().map(|p| async move {
            let started = Instant::now();
            let ballot =
                match tokio::time::timeout_at(vote_deadline, self.prepare_at(*p, request)).await {
                    Ok(Ok(vote)) => Ballot::Cast(vote),
                    Ok(Err(why)) => Ballot::Missing(why),
                    Err(_) => Ballot::Missing("the vote deadline passed".into()),
                };
            (*p, ballot, started.elapsed())
        });
        let answers = futures::future::join_all(asks).await;
        let n = answers.len() as u64;
        self.counters.messages(Phase::Prepare, n);
        let cast = answers
            .iter()
            .filter(|(_, b, _)| matches!(b, Ballot::Cast(_)))
            .count();
        self.counters.messages(Phase::Vote, cast as u64);
        self.counters.last_votes(
            answers
                .iter()
                .map(|(p, b, took)| (*p, last_vote(b, *took)))
                .collect(),
        );
        answers.into_iter().map(|(p, b, _)| (p, b)).collect()
    }

    async fn prepare_at(&self, peer: NodeId, request: &PrepareRequest) -> Result<Vote, String> {
        if peer == self.id {
            return self
                .participant
                .prepare(request)
                .await
                .map_err(|e| e.to_string());
        }
        let timeout = self.vote_timeout;
        let vote = call(&self.peers, peer, paths::TWOPC_PREPARE, request, timeout).await?;
        self.contacts.heard(peer);
        Ok(vote)
    }

    /// Tells every participant `decision`; returns those that did not acknowledge it by
    /// `deadline`.
    async fn deliver(
        &self,
        txid: TxId,
        decision: Decision,
        participants: &BTreeSet<NodeId>,
        deadline: Instant,
    ) -> BTreeSet<NodeId> {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(REDELIVERY_TIMEOUT);
        let sends = participants.iter().map(|p| async move {
            let acked = self.decide_at(*p, txid, decision, timeout).await;
            if let Err(why) = &acked {
                tracing::warn!(
                    txid,
                    peer = p,
                    why,
                    "a participant did not acknowledge the decision"
                );
            }
            (*p, acked.is_ok())
        });
        let results = futures::future::join_all(sends).await;
        self.counters
            .messages(Phase::Decision, results.len() as u64);
        let acked = results.iter().filter(|(_, ok)| *ok).count();
        self.counters.messages(Phase::Ack, acked as u64);
        results
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p)
            .collect()
    }

    async fn decide_at(
        &self,
        peer: NodeId,
        txid: TxId,
        decision: Decision,
        timeout: Duration,
    ) -> Result<(), String> {
        if peer == self.id {
            let applied = self.participant.apply(txid, decision, false).await;
            return applied.map(drop).map_err(|e| e.to_string());
        }
        let request = DecideRequest { txid, decision };
        let ack: DecisionAck =
            call(&self.peers, peer, paths::TWOPC_DECIDE, &request, timeout).await?;
        if ack.txid == txid {
            self.contacts.acked(peer, txid);
            Ok(())
        } else {
            Err(format!(
                "member {peer} acknowledged transaction {} instead",
                ack.txid
            ))
        }
    }

    /// Forgets `txid` once every participant acknowledged; else keeps telling the missing
    /// ones in the background.
    async fn settle(self: &Arc<Self>, txid: TxId, decision: Decision, missing: BTreeSet<NodeId>) {
        if missing.is_empty() {
            self.forget(txid).await;
        } else {
            tokio::spawn(self.clone().redeliver(txid, decision, missing));
        }
    }

    async fn forget(&self, txid: TxId) {
        if let Err(e) = self.store.forget(txid).await {
            tracing::warn!(txid, error = %e, "cannot drop a finished transaction from the log");
        }
    }

    async fn redeliver(
        self: Arc<Self>,
        txid: TxId,
        decision: Decision,
        mut missing: BTreeSet<NodeId>,
    ) {
        while !missing.is_empty() {
            tokio::time::sleep(REDELIVERY_INTERVAL).await;
            let deadline = Instant::now() + REDELIVERY_TIMEOUT;
            missing = self.deliver(txid, decision, &missing, deadline).await;
        }
        tracing::info!(
            txid,
            decision = decision.as_str(),
            "every participant acknowledged the decision"
        );
        self.forget(txid).await;
    }

    /// After a restart: finishes every logged transaction — its decision if one was logged,
    /// else abort (presumed abort: no participant can have been told commit).
    pub async fn recover(self: Arc<Self>) {
        let log = match self.store.log() {
            Ok(log) => log,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the coordinator log; in-doubt transactions stay in doubt");
                return;
            }
        };
        for (txid, logged) in log {
            let decision = match logged.decision {
                Some(d) => d,
                None => {
                    if let Err(e) = self.store.decide(txid, Decision::Abort).await {
                        tracing::error!(txid, error = %e, "cannot log a presumed abort");
                        continue;
                    }
                    self.counters.aborted(AbortCause::Timeout);
                    Decision::Abort
                }
            };
            tracing::info!(
                txid,
                decision = decision.as_str(),
                "finishing a transaction after a restart"
            );
            tokio::spawn(self.clone().redeliver(txid, decision, logged.participants));
        }
    }

    /// What the coordinator knows of `txid`: `None` when its log has no record of it.
    pub async fn state(&self, txid: TxId) -> Result<Option<TxState>, TwoPcError> {
        let Some(logged) = self.store.logged(txid).await? else {
            return Ok(None);
        };
        Ok(Some(match logged.decision {
            Some(Decision::Commit) => TxState::Committed,
            Some(Decision::Abort) => TxState::Aborted,
            None => TxState::Pending,
        }))
    }
}

fn last_vote(ballot: &Ballot, took: Duration) -> LastVote {
    let (vote, reason) = match ballot {
        Ballot::Cast(v) if v.yes => ("yes", None),
        Ballot::Cast(v) => ("no", v.reason.clone()),
        Ballot::Missing(why) => ("missing", Some(why.clone())),
    };
    LastVote {
        vote: vote.into(),
        latency_ms: took.as_millis() as u64,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(cause: NoCause, reason: &str) -> Ballot {
        Ballot::Cast(Vote::no(cause, reason.into()))
    }

    #[test]
    fn all_yes_commits_and_the_first_no_explains_an_abort() {
        let timeout = Duration::from_secs(1);
        let yes = || Ballot::Cast(Vote::yes());
        let all_yes = BTreeMap::from([(1, yes()), (2, yes())]);
        assert_eq!(Verdict::of(&all_yes, timeout).decision, Decision::Commit);

        let vetoed = BTreeMap::from([
            (1, yes()),
            (2, Ballot::Missing("unreachable".into())),
            (3, no(NoCause::Veto, "an injected veto fault")),
        ]);
        let verdict = Verdict::of(&vetoed, timeout);
        let Some((cause, error)) = verdict.refusal else {
            panic!("a no vote must abort");
        };
        assert_eq!(cause, AbortCause::Veto);
        assert!(error.to_string().contains("member 3 voted no"), "{error}");

        let missing = BTreeMap::from([(1, yes()), (2, Ballot::Missing("unreachable".into()))]);
        let Some((cause, error)) = Verdict::of(&missing, timeout).refusal else {
            panic!("a missing vote must abort");
        };
        assert_eq!(cause, AbortCause::Timeout);
        assert!(matches!(error, TwoPcError::NotApplied(_)), "{error}");

        let mut cas = Vote::no(NoCause::CasMismatch, "x is 4".into());
        cas.current = Some(4);
        let mismatch = BTreeMap::from([(1, Ballot::Cast(cas))]);
        let Some((_, error)) = Verdict::of(&mismatch, timeout).refusal else {
            panic!("a failed compare must abort");
        };
        assert!(
            matches!(error, TwoPcError::CasMismatch { current: 4 }),
            "{error}"
        );
    }
}
