//! The Raft log and vote: kept in memory for reading, made durable in a write-ahead log
//! ([`crate::wal`]) by one writer thread.
//!
//! Every change goes, in order, to the writer thread, which appends all the changes queued
//! meanwhile as one frame, syncs it once and only then reports them (openraft 0.9 waits for
//! each append's flush, so a frame rarely holds more than one append; client writes are
//! batched into entries before, in `raft_engine/`): appends
//! through openraft's `LogFlushed` callback (that is when openraft counts them towards a
//! commit), votes, truncations and purges by waking the waiting caller.
//!
//! Why a log file of our own rather than redb (used before, and still for the other modes'
//! stores): openraft 0.9's core waits for the leader's own flush before it replicates, so one
//! write costs the leader's sync and then a follower's, in series. A redb commit rewrote about
//! a dozen 4 KiB pages across its file and its `fdatasync` took ~0.36 ms here (measured with
//! `strace -T` under a one-client load), an append to one file ~0.1 ms: with two in series per
//! write, that was most of the gap to etcd, whose WAL is an append-only file too.
//!
//! The unpurged log is also held in memory (openraft compacts it after each snapshot), so
//! replication and apply read entries without touching the disk or decoding JSON; the file is
//! rewritten from that memory once it has grown well past it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::io_error;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::wal::WalError;

impl From<WalError> for StorageError {
    fn from(e: WalError) -> Self {
        io_error(StorageIOError::write_logs(AnyError::new(&e)))
    }
}
use crate::election_clock::SyncTime;
use crate::wal::Wal;

#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<InMemoryLog>>,
    /// The highest index known committed, for status and readiness.
    committed: Arc<AtomicU64>,
    writer: mpsc::UnboundedSender<Change>,
    /// Time the writer spent writing and syncing, for the election clock.
    sync_time: Arc<SyncTime>,
}

/// What is on disk (or queued for it), as openraft last wrote it.
#[derive(Default)]
pub(super) struct InMemoryLog {
    /// The entries not yet purged.
    pub entries: BTreeMap<u64, Entry>,
    pub last_purged: Option<LogId>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
}

/// One change to the log, as written to the file (a frame holds a JSON array of them).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Record {
    Append {
        entries: Vec<Entry>,
    },
    /// Removes the entries from this index on.
    Truncate {
        from: u64,
    },
    /// Removes the entries up to and including this log id and records it as purged.
    Purge {
        upto: LogId,
    },
    Vote {
        vote: Vote,
    },
    Committed {
        committed: Option<LogId>,
    },
}

impl InMemoryLog {
    /// Applies one change: to the memory as openraft makes it, and to the replayed state
    /// when the file is read back.
    fn apply(&mut self, record: &Record) {
        match record {
            Record::Append { entries } => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry.clone());
                }
            }
            Record::Truncate { from } => drop(self.entries.split_off(from)),
            Record::Purge { upto } => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(*upto);
            }
            Record::Vote { vote } => self.vote = Some(*vote),
            Record::Committed { committed } => self.committed = *committed,
        }
    }

    /// Applies every record of every frame, oldest first.
    fn replay<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>) -> Result<(), StorageError> {
        for frame in frames {
            let records: Vec<Record> =
                serde_json::from_slice(frame).map_err(fail(StorageIOError::read_logs))?;
            records.iter().for_each(|r| self.apply(r));
        }
        Ok(())
    }

    /// The records that rebuild this state from nothing (what a rewritten file holds).
    fn checkpoint(&self) -> Vec<Record> {
        let mut records = vec![Record::Committed {
            committed: self.committed,
        }];
        records.extend(self.vote.map(|vote| Record::Vote { vote }));
        records.extend(self.last_purged.map(|upto| Record::Purge { upto }));
        records.push(Record::Append {
            entries: self.entries.values().cloned().collect(),
        });
        records
    }
}

/// One change queued for the writer, with whoever waits for it to be durable.
struct Change {
    record: Record,
    waiter: Waiter,
}

enum Waiter {
    /// openraft's callback for appended entries.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller waiting for a vote, truncation or purge.
    Caller(Done),
    /// Nobody (the committed index, which only shortens recovery).
    Nobody,
}

type Done = oneshot::Sender<Result<(), String>>;

type IoCtor = fn(AnyError) -> StorageIOError<NodeId>;

fn fail<E: std::error::Error + 'static>(ctor: IoCtor) -> impl Fn(E) -> StorageError {
    move |e| io_error(ctor(AnyError::new(&e)))
}

fn fail_msg(ctor: IoCtor, message: impl Into<String>) -> StorageError {
    io_error(ctor(AnyError::error(message.into())))
}

impl LogStore {
    /// Opens (or creates) the log file at `path` and replays it; one without frames first
    /// takes what `import` finds, if anything (a log an earlier version kept elsewhere).
    pub(super) fn open(
        path: &Path,
        import: impl FnOnce() -> Result<Option<InMemoryLog>, StorageError>,
    ) -> Result<Self, StorageError> {
        let checkpoint = |log: InMemoryLog| {
            serde_json::to_vec(&log.checkpoint()).map_err(fail(StorageIOError::write_logs))
        };
        let (wal, frames) = Wal::open_importing(path, || import()?.map(checkpoint).transpose())?;
        let mut log = InMemoryLog::default();
        log.replay(frames.iter())?;
        Self::start(wal, log)
    }

    /// Starts the writer thread over `wal`, whose contents `log` holds.
    fn start(wal: Wal, log: InMemoryLog) -> Result<Self, StorageError> {
        let committed = log.committed.map_or(0, |c| c.index);
        let log = Arc::new(Mutex::new(log));
        let (writer, changes) = mpsc::unbounded_channel();
        let sync_time = Arc::new(SyncTime::default());
        let writing = Writing {
            wal,
            memory: log.clone(),
            sync_time: sync_time.clone(),
        };
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(writing, changes))
            .map_err(fail(StorageIOError::write_logs))?;
        Ok(Self {
            log,
            committed: Arc::new(AtomicU64::new(committed)),
            writer,
            sync_time,
        })
    }

    /// Time this log's writer has spent writing and syncing (see `election_clock.rs`).
    pub fn sync_time(&self) -> Arc<SyncTime> {
        self.sync_time.clone()
    }

    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// The last `n` entries not yet purged, oldest first, each as `f` makes it (for
    /// `GET /v1/log`: nothing is cloned under the lock but what `f` returns).
    pub fn tail<T>(&self, n: usize, f: impl Fn(&Entry) -> T) -> Vec<T> {
        let log = self.memory();
        let mut tail: Vec<T> = log.entries.values().rev().take(n).map(f).collect();
        tail.reverse();
        tail
    }

    fn memory(&self) -> MutexGuard<'_, InMemoryLog> {
        lock(&self.log)
    }

    /// Applies `record` to the memory and queues it for the writer (in that order, from
    /// openraft's one core task: the file receives changes in the order memory saw them).
    fn change(&self, record: Record, waiter: Waiter, ctor: IoCtor) -> Result<(), StorageError> {
        self.memory().apply(&record);
        self.writer
            .send(Change { record, waiter })
            .map_err(|_| fail_msg(ctor, "the log writer has stopped"))
    }

    /// Applies and queues a change, and waits until the writer has made it durable.
    async fn change_and_wait(&self, record: Record, ctor: IoCtor) -> Result<(), StorageError> {
        let (done, durable) = oneshot::channel();
        self.change(record, Waiter::Caller(done), ctor)?;
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(fail_msg(ctor, message)),
            Err(_) => Err(fail_msg(ctor, "the log writer has stopped")),
        }
    }
}

fn lock(log: &Mutex<InMemoryLog>) -> MutexGuard<'_, InMemoryLog> {
    // A panic while holding the lock cannot leave the map half-changed in a way a later
    // change would not repair (each change is one call per entry), so a poisoned lock is
    // still safe to use.
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: appends every change queued since the last frame as one frame, syncs
/// it, then reports each change. Changes nobody waits for (only the committed index, which
/// merely shortens recovery) wait for the next change someone waits for and ride on its sync
/// instead of costing one of their own, which the next append would queue behind; every
/// frame is synced before the next is written, as the log file requires.
fn write_loop(mut writing: Writing, mut changes: mpsc::UnboundedReceiver<Change>) {
    let mut batch = Vec::new();
    while let Some(first) = changes.blocking_recv() {
        batch.push(first);
        while let Ok(change) = changes.try_recv() {
            batch.push(change);
        }
        if batch.iter().all(|c| matches!(c.waiter, Waiter::Nobody)) {
            continue;
        }
        let outcome = writing.write(&batch).map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "writing the Raft log failed");
        }
        for change in batch.drain(..) {
            report(change.waiter, &outcome);
        }
        writing.rewrite_if_grown();
    }
    // The store was dropped: what nobody waited for is still written, as a shutdown allows.
    if !batch.is_empty() {
        if let Err(e) = writing.write(&batch) {
            tracing::warn!(error = %e, "writing the committed index at shutdown failed");
        }
    }
}

/// A log write (append and sync) this slow is logged (at debug: the disk is the bottleneck).
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(50);

/// What the writer thread owns. Its time in the file (writes, syncs, rewrites) is counted in
/// `sync_time`: openraft's core waits for it, hearing nothing meanwhile.
struct Writing {
    wal: Wal,
    memory: Arc<Mutex<InMemoryLog>>,
    sync_time: Arc<SyncTime>,
}

impl Writing {
    /// Appends `batch` as one frame and syncs it.
    fn write(&mut self, batch: &[Change]) -> Result<(), StorageError> {
        let ctor = StorageIOError::write_logs;
        let records: Vec<&Record> = batch.iter().map(|c| &c.record).collect();
        let payload = serde_json::to_vec(&records).map_err(fail(ctor))?;
        let wal = &mut self.wal;
        let (written, took) = self.sync_time.measure(|| {
            wal.append(&payload).map_err(fail(ctor))?;
            wal.sync().map_err(fail(ctor))
        });
        if took >= SLOW_WRITE {
            tracing::debug!(ms = took.as_millis() as u64, "slow Raft log write");
        }
        written
    }

    /// Memory may be ahead of the file (changes openraft made and queued since), never
    /// behind it, and the queued changes are appended after the rewritten frame all the
    /// same: replaying them over a state that already holds them ends in the same state
    /// (each is an insert, a removal or a last-writer-wins value). So a rewrite can only
    /// make durable early what openraft already asked for; it loses and reorders nothing.
    fn rewrite_if_grown(&mut self) {
        let (wal, memory) = (&mut self.wal, &self.memory);
        self.sync_time.measure(|| {
            wal.rewrite_if_grown(|| serde_json::to_vec(&lock(memory).checkpoint()));
        });
    }
}

fn report(waiter: Waiter, outcome: &Result<(), String>) {
    match waiter {
        Waiter::Flushed(flushed) => {
            flushed.log_io_completed(outcome.clone().map_err(std::io::Error::other));
        }
        // The caller may have given up waiting; nothing is left to tell.
        Waiter::Caller(done) => drop(done.send(outcome.clone())),
        Waiter::Nobody => {}
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .memory()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.memory();
        let last_purged_log_id = log.last_purged;
        let last_log_id = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_log_id.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.change_and_wait(Record::Vote { vote: *vote }, StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.memory().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        // Not waited for: it only shortens recovery (the committed log is re-applied at start).
        // Reads on a leader restored after a restart do not rely on it (see raft_engine/).
        self.change(
            Record::Committed { committed },
            Waiter::Nobody,
            StorageIOError::write,
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.memory().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        flushed: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter().collect();
        // Returns before the sync: openraft counts the entries towards a commit only once
        // the writer reports them through `flushed`.
        self.change(
            Record::Append { entries },
            Waiter::Flushed(flushed),
            StorageIOError::write_logs,
        )
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.change_and_wait(Record::Truncate { from }, StorageIOError::write_logs)
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.change_and_wait(Record::Purge { upto: log_id }, StorageIOError::write_logs)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(2, 1), index)
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                log_id: log_id(index),
                payload: openraft::EntryPayload::Blank,
            })
            .collect()
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.memory().entries.keys().copied().collect()
    }

    fn no_import() -> Result<Option<InMemoryLog>, StorageError> {
        Ok(None)
    }

    async fn write_history(store: &LogStore) {
        let w = StorageIOError::write_logs;
        store
            .change_and_wait(
                Record::Append {
                    entries: entries(1..=5),
                },
                w,
            )
            .await
            .unwrap();
        let vote = Vote::new(2, 1);
        store
            .change_and_wait(Record::Vote { vote }, w)
            .await
            .unwrap();
        store
            .change_and_wait(Record::Truncate { from: 4 }, w)
            .await
            .unwrap();
        let committed = Some(log_id(3));
        store
            .change(Record::Committed { committed }, Waiter::Nobody, w)
            .unwrap();
        store
            .change_and_wait(Record::Purge { upto: log_id(1) }, w)
            .await
            .unwrap();
    }

    fn assert_history(store: &LogStore) {
        assert_eq!(indexes(store), vec![2, 3]);
        let log = store.memory();
        assert_eq!(log.last_purged, Some(log_id(1)));
        assert_eq!(log.vote, Some(Vote::new(2, 1)));
        assert_eq!(log.committed, Some(log_id(3)));
    }

    #[tokio::test]
    async fn a_reopened_log_holds_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let store = LogStore::open(&path, no_import).unwrap();
        write_history(&store).await;
        assert_history(&store);
        drop(store);
        assert_history(&LogStore::open(&path, no_import).unwrap());
    }

    #[tokio::test]
    async fn a_rewritten_log_replays_to_the_same_state_with_the_changes_queued_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let store = LogStore::open(&path, no_import).unwrap();
        write_history(&store).await;
        drop(store);
        // Rewrite from memory, as the writer does once the file has grown.
        let (mut wal, frames) = Wal::open(&path).unwrap();
        let mut memory = InMemoryLog::default();
        memory.replay(frames.iter()).unwrap();
        let before = wal.end();
        wal.rewrite(&serde_json::to_vec(&memory.checkpoint()).unwrap())
            .unwrap();
        assert!(wal.end() < before, "{} bytes, {before} before", wal.end());
        // Memory may be ahead of the file: a change already in the rewrite comes again.
        let again = serde_json::to_vec(&[Record::Truncate { from: 4 }]).unwrap();
        wal.append(&again).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let store = LogStore::open(&path, no_import).unwrap();
        assert_history(&store);
        let w = StorageIOError::write_logs;
        store
            .change_and_wait(Record::Truncate { from: 3 }, w)
            .await
            .unwrap();
        drop(store);
        assert_eq!(indexes(&LogStore::open(&path, no_import).unwrap()), vec![2]);
    }

    #[tokio::test]
    async fn an_import_fills_only_a_log_without_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let imported = || {
            let mut log = InMemoryLog::default();
            log.apply(&Record::Append {
                entries: entries(1..=3),
            });
            log.apply(&Record::Vote {
                vote: Vote::new(2, 1),
            });
            Ok(Some(log))
        };
        let store = LogStore::open(&path, imported).unwrap();
        assert_eq!(indexes(&store), vec![1, 2, 3]);
        drop(store);
        let reopened = LogStore::open(&path, || panic!("imported twice")).unwrap();
        assert_eq!(indexes(&reopened), vec![1, 2, 3]);
        assert_eq!(reopened.memory().vote, Some(Vote::new(2, 1)));
    }
}
