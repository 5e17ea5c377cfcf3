//! The coordinator: any member that receives a client operation sends it to every replica and
//! answers once enough of them have (Dynamo, DeCandia et al., SOSP 2007, §4.5; Cassandra's
//! consistency levels). A write waits for W durable acknowledgements, this member's own
//! included; a read waits for R answers, returns the newest and repairs the older ones.
//! Replicas that answer after the client was answered still get the write (the sends run on).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::error::QuorumError;
use super::outbox::Outbox;
use super::replica::Replica;
use super::replicas::{CallError, Replicas};
use super::wire::{
    FetchRequest, FetchResponse, Stamp, StoreKind, StoreRequest, StoreResponse, Versioned,
    FETCH_PATH, STORE_PATH,
};
use crate::faults::Faults;
use crate::types::NodeId;

/// N, R and W as they apply now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorums {
    pub n: usize,
    pub read: usize,
    pub write: usize,
}

impl Quorums {
    /// `read`/`write` as configured, else a majority of `n`.
    pub fn resolve(n: usize, read: Option<usize>, write: Option<usize>) -> Self {
        let majority = n / 2 + 1;
        Quorums {
            n,
            read: read.unwrap_or(majority),
            write: write.unwrap_or(majority),
        }
    }

    /// Every read quorum meets every write quorum.
    pub fn overlapping(&self) -> bool {
        self.read + self.write > self.n
    }
}

/// Timestamps for this member's writes: its clock (with any injected skew) in milliseconds,
/// raised past the last one it issued so two of its own writes never tie. Nothing else moves
/// it: a member whose clock is behind stamps its writes older than others' (the point of the
/// clock-skew demonstration).
pub struct Clock {
    faults: Arc<Faults>,
    last: Mutex<u64>,
}

impl Clock {
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            faults,
            last: Mutex::new(0),
        }
    }

    pub fn stamp(&self, node: NodeId) -> Stamp {
        let now = self
            .faults
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = now.max(*last + 1);
        Stamp { ms: *last, node }
    }
}

pub struct Coordinator {
    pub replica: Arc<Replica>,
    pub replicas: Arc<Replicas>,
    /// Where writes to the other replicas queue (one message in flight per replica).
    pub outbox: Arc<Outbox>,
    pub clock: Clock,
}

/// How the calls of one operation went so far.
struct Tally<T> {
    answers: Vec<(NodeId, T)>,
    maybe: usize,
    failed: Vec<String>,
}

impl Coordinator {
    /// Refuses at once (503, nothing sent) when fewer than `needed` replicas are reachable.
    fn check_reachable(&self, needed: usize, q: Quorums, what: &str) -> Result<(), QuorumError> {
        let reachable = self.replicas.reachable_count();
        if reachable < needed {
            return Err(QuorumError::NotApplied(format!(
                "only {reachable} of {} replicas are reachable and a {what} needs {needed} \
                 (R={}, W={}): nothing was sent",
                q.n, q.read, q.write
            )));
        }
        Ok(())
    }

    /// Stores `key = value` with a fresh stamp on every replica; `Ok` once `W` hold it.
    pub async fn write(
        &self,
        q: Quorums,
        key: &str,
        value: i64,
        deadline: Instant,
    ) -> Result<Versioned, QuorumError> {
        self.check_reachable(q.write, q, "write")?;
        let version = Versioned {
            value,
            stamp: self.clock.stamp(self.replicas.id),
        };
        let request = StoreRequest {
            kind: StoreKind::Write,
            entries: BTreeMap::from([(key.to_string(), version)]),
        };
        let local = async { self.replica.store(request).await.map(drop) };
        let send = |peer| {
            let answer = self.outbox.send(peer, key, version, deadline);
            async move {
                answer.await.unwrap_or_else(|_| {
                    Err(CallError::MaybeDelivered("the send was dropped".into()))
                })
            }
        };
        let tally = self.gather(send, local, q.write, deadline).await;
        if tally.answers.len() >= q.write {
            return Ok(version);
        }
        let acks = tally.answers.len();
        let why = format!(
            "{acks} of the W={} acknowledgements arrived before the deadline ({})",
            q.write,
            tally.failed.join("; ")
        );
        if acks == 0 && tally.maybe == 0 {
            Err(QuorumError::NotApplied(format!(
                "no replica stored the write: {why}"
            )))
        } else {
            Err(QuorumError::Unknown(format!(
                "the write may have been stored, and may still spread: {why}"
            )))
        }
    }

    /// Reads `key` from `R` replicas (this one first) and returns the newest version; the
    /// replicas that answered an older one are repaired in the background.
    pub async fn read(
        &self,
        q: Quorums,
        key: &str,
        deadline: Instant,
    ) -> Result<Versioned, QuorumError> {
        self.check_reachable(q.read, q, "read")?;
        let request = Arc::new(FetchRequest {
            key: key.to_string(),
        });
        let local = self.replica.fetch(key);
        // Each fetch on its own task, so that it completes (and records whether the replica
        // answered) even after the answer is given.
        let send = |peer| {
            let (replicas, request) = (self.replicas.clone(), request.clone());
            let timeout = deadline.saturating_duration_since(Instant::now());
            let call = tokio::spawn(async move {
                let answer: Result<FetchResponse, _> =
                    replicas.call(peer, FETCH_PATH, &*request, timeout).await;
                answer
            });
            async move {
                call.await
                    .unwrap_or_else(|e| Err(CallError::MaybeDelivered(e.to_string())))
            }
        };
        let tally = self.gather(send, local, q.read, deadline).await;
        if tally.answers.len() < q.read {
            return Err(QuorumError::NotApplied(format!(
                "{} of the R={} answers arrived before the deadline ({})",
                tally.answers.len(),
                q.read,
                tally.failed.join("; ")
            )));
        }
        let newest = tally
            .answers
            .iter()
            .filter_map(|(_, a)| a.version)
            .max_by_key(|v| v.stamp)
            .unwrap_or_default();
        let behind = tally
            .answers
            .iter()
            .filter(|(_, a)| a.version.map(|v| v.stamp).unwrap_or_default() < newest.stamp)
            .map(|(id, _)| *id);
        self.repair(key, newest, behind.collect(), deadline);
        Ok(newest)
    }

    /// Sends the newest version to the replicas that answered older ones.
    fn repair(&self, key: &str, newest: Versioned, behind: Vec<NodeId>, deadline: Instant) {
        let request = StoreRequest {
            kind: StoreKind::ReadRepair,
            entries: BTreeMap::from([(key.to_string(), newest)]),
        };
        for id in behind {
            let (replica, replicas, request) =
                (self.replica.clone(), self.replicas.clone(), request.clone());
            tokio::spawn(async move {
                let result = if id == replicas.id {
                    replica
                        .store(request)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    let sent: Result<StoreResponse, _> =
                        replicas.call(id, STORE_PATH, &request, timeout).await;
                    sent.map(drop).map_err(|e| e.to_string())
                };
                if let Err(e) = result {
                    tracing::debug!(replica = id, error = %e, "read repair failed");
                }
            });
        }
    }

    /// Runs `local` and `send(peer)` for every other replica; returns once `needed` answered,
    /// all did, or `deadline` passed. `send` runs on without its answer being awaited after
    /// that: the outbox sends writes on, and a fetch is its own task.
    async fn gather<Resp, E, F>(
        &self,
        send: impl Fn(NodeId) -> F,
        local: impl Future<Output = Result<Resp, E>>,
        needed: usize,
        deadline: Instant,
    ) -> Tally<Resp>
    where
        E: std::fmt::Display,
        F: Future<Output = Result<Resp, CallError>>,
    {
        let others = self.replicas.others();
        let mut answers: FuturesUnordered<_> = others
            .iter()
            .map(|&id| {
                let answer = send(id);
                async move { (id, answer.await) }
            })
            .collect();
        let mut tally = Tally {
            answers: Vec::new(),
            maybe: 0,
            failed: Vec::new(),
        };
        match local.await {
            Ok(answer) => tally.answers.push((self.replicas.id, answer)),
            Err(e) => tally.failed.push(format!("this member: {e}")),
        }
        let mut pending = others.len();
        while tally.answers.len() < needed && pending > 0 {
            let Ok(Some((id, answer))) = tokio::time::timeout_at(deadline, answers.next()).await
            else {
                tally.maybe += pending;
                tally
                    .failed
                    .push(format!("{pending} replicas did not answer in time"));
                break;
            };
            pending -= 1;
            match answer {
                Ok(a) => tally.answers.push((id, a)),
                Err(e) => {
                    if matches!(e, CallError::MaybeDelivered(_)) {
                        tally.maybe += 1;
                    }
                    tally.failed.push(e.to_string());
                }
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_default_to_a_majority() {
        let q = Quorums::resolve(3, None, None);
        assert_eq!((q.read, q.write), (2, 2));
        assert!(q.overlapping());
        let one = Quorums::resolve(3, Some(1), Some(1));
        assert!(!one.overlapping());
        assert_eq!(Quorums::resolve(4, None, None).write, 3);
    }

    #[test]
    fn a_member_never_reuses_a_stamp() {
        let clock = Clock::new(Arc::new(Faults::default()));
        let a = clock.stamp(1);
        let b = clock.stamp(1);
        assert!(b > a);
    }
}
