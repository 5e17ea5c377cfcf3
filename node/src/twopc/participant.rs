//! A participant: votes on PREPARE (no waiting: a key held by another prepared transaction is
//! a no, so transactions never deadlock), makes its yes durable and holds the key until it
//! learns the decision, then applies or releases it. It answers reads of keys it does not hold
//! from its committed registers; a linearizable read of a held key waits briefly for the
//! decision, and is refused once the transaction is in doubt (see `resolver.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use super::counters::Counters;
use super::error::TwoPcError;
use super::store::{Applied, Learned, Prepared, Store, StoreError};
use super::wire::{Decision, NoCause, PrepareRequest, TxId, TxState, Vote};
use crate::faults::Faults;
use crate::tail::{describe, Recent};
use crate::types::{Command, NodeId};
use caplab_api::status::InDoubt;
use caplab_api::tail::TailEntry;

/// How long a linearizable read of a held key waits for the decision before it is refused:
/// long enough for a transaction in progress to finish, short enough to answer a client.
pub const HELD_READ_WAIT: Duration = Duration::from_secs(2);

/// A transaction this member voted yes on.
#[derive(Debug, Clone)]
pub struct Hold {
    pub record: Prepared,
    /// Set by the resolver when neither the coordinator nor a peer could say the decision.
    pub in_doubt: bool,
}

#[derive(Default)]
struct Held {
    by_txid: BTreeMap<TxId, Hold>,
    by_key: BTreeMap<String, TxId>,
}

pub struct Participant {
    pub id: NodeId,
    store: Store,
    counters: Arc<Counters>,
    faults: Arc<Faults>,
    held: Mutex<Held>,
    /// Orders votes and decisions: a vote's checks and its durable record happen together.
    serial: tokio::sync::Mutex<()>,
    /// Bumped whenever a key is released, for reads waiting on it.
    released: watch::Sender<u64>,
    /// The last votes and decisions, for `GET /v1/log`.
    pub recent: Recent,
}

fn now_ms(faults: &Faults) -> u64 {
    faults
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A decision learned, for the log tail: the transaction's write when this member held it.
fn decided(txid: TxId, learned: &Learned, held: Option<&Prepared>) -> TailEntry {
    let op = held.map_or_else(|| "-".to_string(), |p| describe(&p.command));
    let mut entry = TailEntry::new(txid, None, op);
    let forced = if learned.heuristic {
        " (heuristic)"
    } else {
        ""
    };
    entry.decision = Some(format!("{}{forced}", learned.decision.as_str()));
    entry
}

impl Participant {
    /// A participant holding what `store` says it prepared before a restart.
    pub fn open(
        id: NodeId,
        store: Store,
        counters: Arc<Counters>,
        faults: Arc<Faults>,
    ) -> Result<Self, StoreError> {
        let mut held = Held::default();
        for (txid, record) in store.prepared()? {
            held.by_key.insert(record.command.key().to_string(), txid);
            let hold = Hold {
                record,
                in_doubt: false,
            };
            held.by_txid.insert(txid, hold);
        }
        Ok(Self {
            id,
            store,
            counters,
            faults,
            held: Mutex::new(held),
            serial: tokio::sync::Mutex::new(()),
            released: watch::channel(0).0,
            recent: Recent::default(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Votes on `request`; a yes is durable before it is returned.
    pub async fn prepare(&self, request: &PrepareRequest) -> Result<Vote, StoreError> {
        let _serial = self.serial.lock().await;
        let key = request.command.key();
        if let Some(learned) = self.store.learned(request.txid).await? {
            let reason = format!(
                "member {} already learned {} for transaction {}",
                self.id,
                learned.decision.as_str(),
                request.txid
            );
            return Ok(Vote::no(NoCause::Aborted, reason));
        }
        if self.faults.veto(request.coordinator) {
            let reason = format!("member {} vetoed: an injected veto fault", self.id);
            return Ok(Vote::no(NoCause::Veto, reason));
        }
        if let Some(other) = self.held().by_key.get(key) {
            let reason = format!(
                "member {} holds key {key:?} for transaction {other}, not yet decided",
                self.id
            );
            return Ok(Vote::no(NoCause::Conflict, reason));
        }
        if let Command::Cas { expected, .. } = request.command {
            let current = self.store.get(key).await?;
            if current != expected {
                let reason = format!(
                    "member {}: key {key:?} is {current}, not the expected {expected}",
                    self.id
                );
                let mut vote = Vote::no(NoCause::CasMismatch, reason);
                vote.current = Some(current);
                return Ok(vote);
            }
        }
        let record = Prepared {
            txid: request.txid,
            coordinator: request.coordinator,
            participants: request.participants.clone(),
            command: request.command.clone(),
            since_ms: now_ms(&self.faults),
        };
        self.store.prepare(&record).await?;
        let mut held = self.held();
        held.by_key.insert(key.to_string(), request.txid);
        let hold = Hold {
            record,
            in_doubt: false,
        };
        held.by_txid.insert(request.txid, hold);
        Ok(Vote::yes())
    }

    /// Learns `decision` for `txid` (durably) and releases its key; `heuristic` when a person
    /// forced it. A coordinator's decision that contradicts an earlier heuristic one is
    /// counted.
    pub async fn apply(
        &self,
        txid: TxId,
        decision: Decision,
        heuristic: bool,
    ) -> Result<Applied, StoreError> {
        let _serial = self.serial.lock().await;
        self.apply_serialised(txid, decision, heuristic).await
    }

    /// [`Self::apply`], for a caller that holds `serial`.
    async fn apply_serialised(
        &self,
        txid: TxId,
        decision: Decision,
        heuristic: bool,
    ) -> Result<Applied, StoreError> {
        let learned = Learned {
            decision,
            heuristic,
        };
        let applied = self.store.apply(txid, learned).await?;
        self.recent
            .push(decided(txid, &learned, applied.released.as_ref()));
        {
            let mut held = self.held();
            if let Some(hold) = held.by_txid.remove(&txid) {
                held.by_key.remove(hold.record.command.key());
            }
        }
        self.released.send_modify(|n| *n += 1);
        if let Some(earlier) = applied.earlier {
            if earlier.heuristic && !heuristic && earlier.decision != decision {
                tracing::warn!(
                    txid,
                    forced = earlier.decision.as_str(),
                    decided = decision.as_str(),
                    "the coordinator's decision contradicts the heuristic one taken here"
                );
                self.counters.heuristic_mismatch();
            }
        }
        Ok(applied)
    }

    /// What this member knows of `txid` as a participant. Never having prepared it, it
    /// refuses it for good (records an abort) and says so: the asker may then abort. A
    /// heuristic decision taken here is not passed on (it is this member's guess, not the
    /// coordinator's decision): it answers as a participant that voted yes and knows nothing.
    pub async fn state(&self, txid: TxId) -> Result<TxState, StoreError> {
        // Serialised with votes: a PREPARE voting yes between the checks below and the
        // refusal would be released by it, its yes counted by the coordinator (commit) while
        // the asker is told "aborted".
        let _serial = self.serial.lock().await;
        if let Some(learned) = self.store.learned(txid).await? {
            return Ok(match learned {
                Learned {
                    heuristic: true, ..
                } => TxState::Prepared,
                Learned {
                    decision: Decision::Commit,
                    ..
                } => TxState::Committed,
                Learned {
                    decision: Decision::Abort,
                    ..
                } => TxState::Aborted,
            });
        }
        if self.held().by_txid.contains_key(&txid) {
            return Ok(TxState::Prepared);
        }
        self.apply_serialised(txid, Decision::Abort, false).await?;
        Ok(TxState::Aborted)
    }

    /// The transactions held, oldest first.
    pub fn holds(&self) -> Vec<Hold> {
        self.held().by_txid.values().cloned().collect()
    }

    pub fn set_in_doubt(&self, txid: TxId, in_doubt: bool) {
        if let Some(hold) = self.held().by_txid.get_mut(&txid) {
            hold.in_doubt = in_doubt;
        }
    }

    /// The in-doubt transactions, oldest first.
    pub fn in_doubt(&self) -> Vec<InDoubt> {
        self.held()
            .by_txid
            .values()
            .filter(|h| h.in_doubt)
            .map(|h| InDoubt {
                txid: h.record.txid,
                key: h.record.command.key().to_string(),
                since_ms: h.record.since_ms,
            })
            .collect()
    }

    /// The hold on `key`, if any.
    fn hold_on(&self, key: &str) -> Option<Hold> {
        let held = self.held();
        let txid = held.by_key.get(key)?;
        held.by_txid.get(txid).cloned()
    }

    /// Refuses (503) an operation on `key` while a transaction holding it is in doubt.
    pub fn refuse_in_doubt(&self, key: &str) -> Result<(), TwoPcError> {
        match self.hold_on(key) {
            Some(hold) if hold.in_doubt => Err(self.in_doubt_error(&hold)),
            _ => Ok(()),
        }
    }

    fn in_doubt_error(&self, hold: &Hold) -> TwoPcError {
        let r = &hold.record;
        let age = now_ms(&self.faults).saturating_sub(r.since_ms);
        TwoPcError::NotApplied(format!(
            "key {:?} is in doubt since unix ms {} ({age} ms): member {} voted yes on \
             transaction {} and can reach neither coordinator {} nor a participant that knows \
             the decision; it holds the key until the coordinator is back or a person forces a \
             decision (POST /v1/admin/2pc/decide)",
            r.command.key(),
            r.since_ms,
            self.id,
            r.txid,
            r.coordinator
        ))
    }

    /// The committed value of `key`, once no transaction holds it (linearizable: a held key
    /// may be committed elsewhere already).
    pub async fn read_released(&self, key: &str, deadline: Instant) -> Result<i64, TwoPcError> {
        let wait_until = deadline.min(Instant::now() + HELD_READ_WAIT);
        let mut released = self.released.subscribe();
        loop {
            let Some(hold) = self.hold_on(key) else {
                return Ok(self.store.get(key).await?);
            };
            if hold.in_doubt {
                return Err(self.in_doubt_error(&hold));
            }
            let changed = tokio::time::timeout_at(wait_until, released.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(TwoPcError::NotApplied(format!(
                    "key {key:?} is held by transaction {} (prepared here, decision not yet \
                     known); retry shortly",
                    hold.record.txid
                )));
            }
        }
    }

    /// The committed value of `key`, held or not.
    pub async fn read_committed(&self, key: &str) -> Result<i64, TwoPcError> {
        Ok(self.store.get(key).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twopc::counters::TwoPcMetrics;

    fn participant(dir: &std::path::Path) -> Participant {
        let store = Store::open(dir).expect("open the store");
        let counters = Arc::new(Counters::new(TwoPcMetrics::default()));
        Participant::open(2, store, counters, Arc::new(Faults::default())).expect("participant")
    }

    fn prepare_request(txid: TxId) -> PrepareRequest {
        PrepareRequest {
            txid,
            coordinator: 1,
            participants: [1, 2, 3].into(),
            command: Command::Write {
                key: format!("k{txid}"),
                value: txid as i64,
            },
        }
    }

    /// An in-doubt peer's question (`state`) racing the PREPARE of the same transaction: the
    /// member must not both vote yes and tell the peer "aborted" (the peer would abort while
    /// the coordinator, counting this yes, commits), nor forget a yes it gave.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_question_racing_the_prepare_never_contradicts_the_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Arc::new(participant(dir.path()));
        for txid in 1..=30 {
            let request = prepare_request(txid);
            let (vote, state) = tokio::join!(p.prepare(&request), p.state(txid));
            let (vote, state) = (vote.expect("vote"), state.expect("state"));
            if vote.yes {
                assert_eq!(
                    state,
                    TxState::Prepared,
                    "txid {txid}: voted yes, told aborted"
                );
                assert!(
                    p.hold_on(&format!("k{txid}")).is_some(),
                    "txid {txid}: yes forgotten"
                );
            } else {
                assert_eq!(state, TxState::Aborted, "txid {txid}: {vote:?}");
            }
        }
    }
}
