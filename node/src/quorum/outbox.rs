//! The coordinator's writes on their way to each other replica: at most one store message in
//! flight per replica, carrying every write that queued for it meanwhile (a replica's
//! [`StoreRequest`] already holds many keys). This is the backpressure W < N lacked: the
//! coordinator answers after W acknowledgements and, before, sent every write to every replica
//! at once on a fresh task, so a replica slower than the client rate got an unbounded number of
//! concurrent requests (one connection and one fsync each) whose backlog took the CPU and disk
//! the client's own replica needed. Now a slow replica gets fewer, larger messages instead,
//! and the writes still reach it in the order they were stamped.

use std::collections::{BTreeMap, VecDeque};
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
                entries: newest(&batch),
            };
            let writes = || batch.values().flatten();
            let timeout = writes()
                .map(|q| q.deadline.saturating_duration_since(Instant::now()))
                .max()
                .unwrap_or_default()
                .max(MIN_SEND_TIMEOUT);
            let sent: Result<StoreResponse, CallError> = self
                .replicas
                .call(peer, STORE_PATH, &request, timeout)
                .await;
            for q in batch.into_values().flatten() {
                let _ = q.done.send(sent.as_ref().map(drop).map_err(Clone::clone));
            }
        }
    }

    /// The next batch for `peer` (`None`, and the lane marked idle, when nothing waits).
    fn next_batch(&self, peer: NodeId) -> Option<BTreeMap<String, Vec<Queued>>> {
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

/// Up to [`BATCH_WRITES`] keys from the front of `waiting`: every write queued for them, each
/// key carrying its newest write. This member stamps its writes in increasing order, so an
/// older write of a key merged into a newer one is one the replica would have replaced at
/// once: it is acknowledged with the newer one, and not counted as lost to last-writer-wins
/// there (the older code sent both concurrently, and a replica that got them in the wrong
/// order counted this member's own overwritten write as lost).
fn take_batch(waiting: &mut VecDeque<Queued>) -> BTreeMap<String, Vec<Queued>> {
    let mut batch: BTreeMap<String, Vec<Queued>> = BTreeMap::new();
    let mut rest = VecDeque::new();
    for q in waiting.drain(..) {
        if let Some(writes) = batch.get_mut(&q.key) {
            writes.push(q);
        } else if batch.len() < BATCH_WRITES {
            batch.insert(q.key.clone(), vec![q]);
        } else {
            // Full: this key and, so, every later write of it wait for the next batch.
            rest.push_back(q);
        }
    }
    *waiting = rest;
    batch
}

/// The version each key of `batch` is sent with: its newest.
fn newest(batch: &BTreeMap<String, Vec<Queued>>) -> BTreeMap<String, Versioned> {
    batch
        .iter()
        .filter_map(|(key, writes)| {
            let version = writes.iter().map(|q| q.version).max_by_key(|v| v.stamp)?;
            Some((key.clone(), version))
        })
        .collect()
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
    fn a_batch_carries_the_newest_write_of_each_key() {
        let mut waiting: VecDeque<Queued> = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
            .map(|(k, ms)| queued(k, ms))
            .into();
        let batch = take_batch(&mut waiting);
        assert!(waiting.is_empty());
        assert_eq!(batch["a"].len(), 2, "both writes of a are answered by it");
        let sent = newest(&batch);
        let values: Vec<(&str, i64)> = sent.iter().map(|(k, v)| (k.as_str(), v.value)).collect();
        assert_eq!(values, [("a", 3), ("b", 2), ("c", 4)]);
    }

    #[test]
    fn a_batch_is_bounded_and_keeps_later_writes_of_a_key_behind_earlier_ones() {
        let mut waiting: VecDeque<Queued> = (0..BATCH_WRITES + 5)
            .map(|i| queued(&format!("k{i}"), i as u64))
            .collect();
        waiting.push_back(queued("k0", 9_999));
        waiting.push_back(queued(&format!("k{}", BATCH_WRITES), 10_000));
        let first = take_batch(&mut waiting);
        assert_eq!(first.len(), BATCH_WRITES);
        assert_eq!(
            first["k0"].len(),
            2,
            "a key in the batch takes its later writes"
        );
        let second = take_batch(&mut waiting);
        assert_eq!(second.len(), 5);
        assert_eq!(second[&format!("k{}", BATCH_WRITES)].len(), 2);
    }
}
