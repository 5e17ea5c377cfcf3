//! Group commit for a replica's store: the store requests that arrive while one redb
//! transaction is being written (client writes coordinated here, other coordinators' batches,
//! read repairs, anti-entropy pushes) go into the next transaction together, so one fsync
//! makes all of them durable — the classic group commit of database logs (Gray & Reuter,
//! *Transaction Processing*, §9.4.7; etcd and PostgreSQL do the same with their WALs).
//!
//! Without it every request was its own fsynced transaction, and redb admits one writer at a
//! time: under concurrent clients the requests queued for the write lock on blocking threads,
//! one fsync each, and a replica that fell behind (W < N does not wait for it) kept a growing
//! backlog that took CPU and disk from the replicas the clients did wait for.
//!
//! Each request keeps its own answer: a group never holds two requests that name the same key
//! (the later one waits for the next group, and so does everything after it, to keep the
//! arrival order), so "the held version was newer" still belongs to exactly one request.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::sync::{mpsc, oneshot};

use super::store::{Applied, Store, StoreError};
use super::wire::{StoreRequest, Versioned};

/// Most keys in one group transaction beyond its first request (a request is never split):
/// bounds how long one fsync keeps the requests behind it waiting.
pub const GROUP_KEYS: usize = 4096;

/// What one request of a group got: the request back, with the keys of it that the
/// transaction changed and those whose held version was newer.
pub type Outcome = Result<(StoreRequest, Applied), StoreError>;

struct Pending {
    request: StoreRequest,
    done: oneshot::Sender<Outcome>,
}

/// The handle the replica stores through; the committing thread ends when it is dropped.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the committing thread. A thread of its own rather than a task: it blocks in
    /// redb's fsync, and it hands each answer back with as few hops as a blocking call had.
    pub fn start(store: Store) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("quorum-commit".into())
            .spawn(move || run(&store, rx))?;
        Ok(Self { queue })
    }

    /// Stores `request` in the next group transaction; answers once that is durable. The
    /// request is committed even if the caller stops waiting.
    pub async fn store(&self, request: StoreRequest) -> Outcome {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { request, done })
            .map_err(|_| StoreError::Redb("the store is closed (member shutting down)".into()))?;
        answer.await.map_err(|_| {
            StoreError::Redb("the group commit stopped (member shutting down)".into())
        })?
    }
}

/// Takes every request waiting, commits them in groups, answers each; returns once every
/// handle is dropped.
fn run(store: &Store, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut waiting = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.blocking_recv() {
                Some(p) => waiting.push_back(p),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            waiting.push_back(p);
        }
        let group = take_group(&mut waiting);
        commit(store, group);
    }
}

/// The requests of `waiting` that can share one transaction: in arrival order, each one that
/// names no key an earlier request (taken or left) names, while the group stays within
/// [`GROUP_KEYS`] (its first request is always taken). A request left behind keeps every later
/// request of its keys behind it, so each key's stores are applied in arrival order.
fn take_group(waiting: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut named = BTreeSet::new();
    let mut group: Vec<Pending> = Vec::new();
    let mut group_keys = 0;
    let mut rest = VecDeque::new();
    for p in waiting.drain(..) {
        let keys = &p.request.entries;
        let clash = keys.keys().any(|k| named.contains(k));
        let full = !group.is_empty() && group_keys + keys.len() > GROUP_KEYS;
        named.extend(keys.keys().cloned());
        if clash || full {
            rest.push_back(p);
        } else {
            group_keys += keys.len();
            group.push(p);
        }
    }
    *waiting = rest;
    group
}

/// One transaction for the whole group; each request gets its share of the outcome.
fn commit(store: &Store, group: Vec<Pending>) {
    let entries: BTreeMap<String, Versioned> = group
        .iter()
        .flat_map(|p| p.request.entries.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    match store.apply(entries) {
        Ok(applied) => {
            for p in group {
                let mine = share(&applied, &p.request);
                let _ = p.done.send(Ok((p.request, mine)));
            }
        }
        Err(e) => {
            let why = e.to_string();
            tracing::warn!(error = %why, requests = group.len(), "a group commit failed");
            for p in group {
                let _ = p.done.send(Err(StoreError::Redb(why.clone())));
            }
        }
    }
}

/// The part of `applied` that concerns `request`'s keys.
fn share(applied: &Applied, request: &StoreRequest) -> Applied {
    let mine = |keys: &[String]| {
        keys.iter()
            .filter(|k| request.entries.contains_key(*k))
            .cloned()
            .collect()
    };
    Applied {
        changed: mine(&applied.changed),
        superseded: mine(&applied.superseded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::wire::{Stamp, StoreKind};

    fn request(keys: &[&str], ms: u64) -> StoreRequest {
        let version = Versioned {
            value: ms as i64,
            stamp: Stamp { ms, node: 1 },
        };
        StoreRequest {
            kind: StoreKind::Write,
            entries: keys.iter().map(|k| (k.to_string(), version)).collect(),
        }
    }

    fn pending(keys: &[&str], ms: u64) -> Pending {
        Pending {
            request: request(keys, ms),
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn a_group_leaves_a_request_naming_a_key_an_earlier_one_names() {
        let mut waiting = VecDeque::from([
            pending(&["a"], 1),
            pending(&["b", "c"], 2),
            pending(&["a"], 3),
            pending(&["d"], 4),
        ]);
        let stamps = |g: Vec<Pending>| {
            g.iter()
                .map(|p| p.request.entries.values().map(|v| v.stamp.ms).max())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            stamps(take_group(&mut waiting)),
            [Some(1), Some(2), Some(4)],
            "d does not wait for the second a"
        );
        assert_eq!(stamps(take_group(&mut waiting)), [Some(3)]);
        assert!(waiting.is_empty());
        let mut waiting = VecDeque::from([
            pending(&["a"], 1),
            pending(&["a", "b"], 2),
            pending(&["b"], 3),
        ]);
        let groups: Vec<_> = (0..3).map(|_| stamps(take_group(&mut waiting))).collect();
        assert_eq!(
            groups,
            [[Some(1)], [Some(2)], [Some(3)]],
            "b's second store waits behind its first, which waits behind a's"
        );
    }

    #[test]
    fn a_request_larger_than_a_group_goes_alone() {
        let keys: Vec<String> = (0..GROUP_KEYS + 1).map(|i| format!("k{i}")).collect();
        let big: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut waiting = VecDeque::from([pending(&big, 1), pending(&["x"], 2)]);
        assert_eq!(take_group(&mut waiting).len(), 1);
        assert_eq!(take_group(&mut waiting).len(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_their_own_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let commit = std::sync::Arc::new(GroupCommit::start(store.clone()).expect("start"));
        commit.store(request(&["held"], 100)).await.expect("first");
        let calls = [(&["held"][..], 50), (&["x", "y"][..], 60), (&["z"][..], 70)];
        let answers = futures::future::join_all(calls.iter().map(|(keys, ms)| {
            let commit = commit.clone();
            async move { commit.store(request(keys, *ms)).await.expect("store").1 }
        }))
        .await;
        assert_eq!(answers[0].superseded, ["held"], "the older write lost");
        assert!(answers[0].changed.is_empty());
        assert_eq!(answers[1].changed, ["x", "y"]);
        assert_eq!(answers[2].changed, ["z"]);
        assert!(answers[1].superseded.is_empty() && answers[2].superseded.is_empty());
        assert_eq!(
            store.get("held").await.expect("get").map(|v| v.value),
            Some(100)
        );
    }
}
