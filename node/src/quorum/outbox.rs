//! The coordinator's writes on their way to each other replica: at most one store message in
//! flight per replica, carrying the writes that queued for it meanwhile, one per key (a
//! replica's [`StoreRequest`] already holds many keys). This is the backpressure W < N lacked: the
//! coordinator answers after W acknowledgements and, before, sent every write to every replica
//! at once on a fresh task, so a replica slower than the client rate got an unbounded number of
//! concurrent requests (one connection and one fsync each) whose backlog took the CPU and disk
//! the client's own replica needed. Now a slow replica gets fewer, larger messages instead,
//! and the writes still reach it in the order they were stamped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::replicas::{CallError, Replicas};
use super::wire::{StoreKind, StoreRequest, StoreResponse, Versioned, STORE_PATH};
use crate::types::NodeId;

/// Most writes in one store message: keys are at most 256 bytes, so a message stays well
/// under the peer port's body limit.
pub const BATCH_WRITES: usize = 1000;

/// The least time a batch gets: writes that waited past their client's deadline are still
/// sent (the client got "unknown"; the write may spread, as it could before).
const MIN_SEND_TIMEOUT: Duration = Duration::from_secs(1);

struct Queued {
    key: String,
    version: Versioned,
    deadline: Instant,
    done: oneshot::Sender<Result<(), CallError>>,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Queued>,
    /// A task is sending this replica's batches.
    sending: bool,
}

/// Per other replica, the writes waiting to be sent.
pub struct Outbox {
    replicas: Arc<Replicas>,
    lanes: Mutex<BTreeMap<NodeId, Lane>>,
}

impl Outbox {
    pub fn new(replicas: Arc<Replicas>) -> Arc<Self> {
        Arc::new(Self {
            replicas,
            lanes: Mutex::default(),
        })
    }

    /// Queues a client write for replica `peer`; the answer says whether that replica stored
    /// it durably. The write is sent even if the caller stops waiting.
    pub fn send(
        self: &Arc<Self>,
        peer: NodeId,
        key: &str,
        version: Versioned,
        deadline: Instant,
    ) -> oneshot::Receiver<Result<(), CallError>> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes.entry(peer).or_default();
            lane.waiting.push_back(Queued {
                key: key.to_string(),
                version,
                deadline,
                done,
            });
            !std::mem::replace(&mut lane.sending, true)
        };
        if start {
            tokio::spawn(self.clone().drain(peer));
        }
        answer
    }

    /// Sends `peer`'s batches one at a time until its lane is empty.
    async fn drain(self: Arc<Self>, peer: NodeId) {
        while let Some(batch) = self.next_batch(peer) {
            let request = StoreRequest {
                kind: StoreKind::Write,
                entries: batch.iter().map(|q| (q.key.clone(), q.version)).collect(),
            };
            let timeout = batch
                .iter()
                .map(|q| q.deadline.saturating_duration_since(Instant::now()))
                .max()
                .unwrap_or_default()
                .max(MIN_SEND_TIMEOUT);
            let sent: Result<StoreResponse, CallError> = self
                .replicas
                .call(peer, STORE_PATH, &request, timeout)
                .await;
            for q in batch {
                let _ = q.done.send(sent.as_ref().map(drop).map_err(Clone::clone));
            }
        }
    }

    /// The next batch for `peer` (`None`, and the lane marked idle, when nothing waits).
    fn next_batch(&self, peer: NodeId) -> Option<Vec<Queued>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.entry(peer).or_default();
        let batch = take_batch(&mut lane.waiting);
        if batch.is_empty() {
            lane.sending = false;
            return None;
        }
        Some(batch)
    }
}

/// Up to [`BATCH_WRITES`] writes of `waiting`, in order, one per key: a later write of a key
/// already in the batch waits for the next one (and so does every write of that key after it),
/// so the replica gets each write, in the order this member stamped them, and counts each one
/// that arrives older than the value it holds as lost to last-writer-wins. (Merging a key's
/// writes into the newest would send fewer, but would leave uncounted an older write that lost
/// there to another member's.)
fn take_batch(waiting: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut named = BTreeSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    for q in waiting.drain(..) {
        let fresh = named.insert(q.key.clone());
        if fresh && batch.len() < BATCH_WRITES {
            batch.push(q);
        } else {
            rest.push_back(q);
        }
    }
    *waiting = rest;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::wire::Stamp;

    fn queued(key: &str, ms: u64) -> Queued {
        Queued {
            key: key.to_string(),
            version: Versioned {
                value: ms as i64,
                stamp: Stamp { ms, node: 1 },
            },
            deadline: Instant::now(),
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_holds_each_key_once_and_keeps_each_keys_order() {
        let mut waiting: VecDeque<Queued> = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5)]
            .map(|(k, ms)| queued(k, ms))
            .into();
        let stamps = |b: Vec<Queued>| b.iter().map(|q| q.version.stamp.ms).collect::<Vec<_>>();
        assert_eq!(stamps(take_batch(&mut waiting)), [1, 2, 4]);
        assert_eq!(stamps(take_batch(&mut waiting)), [3]);
        assert_eq!(stamps(take_batch(&mut waiting)), [5]);
        assert!(take_batch(&mut waiting).is_empty());
    }

    #[test]
    fn a_batch_is_bounded_and_a_key_left_out_keeps_its_later_writes_behind() {
        let mut waiting: VecDeque<Queued> = (0..BATCH_WRITES + 5)
            .map(|i| queued(&format!("k{i}"), i as u64))
            .collect();
        waiting.push_back(queued(&format!("k{}", BATCH_WRITES), 10_000));
        assert_eq!(take_batch(&mut waiting).len(), BATCH_WRITES);
        let second = take_batch(&mut waiting);
        assert_eq!(second.len(), 5);
        assert_eq!(second[0].version.stamp.ms, BATCH_WRITES as u64);
        assert_eq!(take_batch(&mut waiting)[0].version.stamp.ms, 10_000);
    }
}
