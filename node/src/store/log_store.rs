//! The Raft log and vote: kept in memory for reading, made durable in a redb database by one
//! writer thread.
//!
//! redb was chosen over a hand-written write-ahead log because it gives checksummed,
//! crash-safe transactions with one fsync per commit, and it is pure Rust (no C toolchain
//! in the static image build). redb runs one write transaction at a time, so writing each
//! append in its own transaction from openraft's core task would make the core wait on every
//! fsync in progress. Instead every change goes, in order, to the writer thread, which commits
//! all the changes queued meanwhile in one fsynced transaction (group commit) and only then
//! reports them: appends through openraft's `LogFlushed` callback (that is when openraft counts
//! them towards a commit), votes, truncations and purges by waking the waiting caller.
//!
//! The unpurged log is also held in memory (openraft compacts it after each snapshot), so
//! replication and apply read entries without touching the disk or decoding JSON.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::io_error;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<InMemoryLog>>,
    /// The highest index known committed, for status and readiness.
    committed: Arc<AtomicU64>,
    writer: mpsc::UnboundedSender<Change>,
}

/// What is on disk (or queued for it), as openraft last wrote it.
struct InMemoryLog {
    /// The entries not yet purged.
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// One change to the durable log, in the order openraft made it.
enum Change {
    Append {
        entries: Vec<Entry>,
        flushed: LogFlushed<TypeConfig>,
    },
    /// Removes the entries from this index on.
    Truncate { from: u64, done: Done },
    /// Removes the entries up to and including this log id and records it as purged.
    Purge { upto: LogId, done: Done },
    /// Writes one metadata value; `done` is woken once it is durable, if anyone waits.
    Meta {
        key: &'static str,
        bytes: Vec<u8>,
        done: Option<Done>,
    },
}

impl Change {
    /// Whether nobody waits for this change to be durable.
    fn unawaited(&self) -> bool {
        matches!(self, Change::Meta { done: None, .. })
    }
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
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(fail(StorageIOError::write_logs))?;
        let tx = db.begin_write().map_err(fail(StorageIOError::write_logs))?;
        {
            tx.open_table(LOG)
                .map_err(fail(StorageIOError::write_logs))?;
            tx.open_table(META)
                .map_err(fail(StorageIOError::write_logs))?;
        }
        tx.commit().map_err(fail(StorageIOError::write_logs))?;

        let log = load_log(&db)?;
        let committed = log.committed.map_or(0, |c| c.index);

        let (writer, changes) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(db, changes))
            .map_err(fail(StorageIOError::write_logs))?;
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            committed: Arc::new(AtomicU64::new(committed)),
            writer,
        })
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
        // A panic while holding the lock cannot leave the map half-changed (every change is
        // one BTreeMap call), so a poisoned lock is still safe to use.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, change: Change, ctor: IoCtor) -> Result<(), StorageError> {
        self.writer
            .send(change)
            .map_err(|_| fail_msg(ctor, "the log writer has stopped"))
    }

    /// Queues a change and waits until the writer has made it durable.
    async fn write_and_wait(
        &self,
        change: impl FnOnce(Done) -> Change,
        ctor: IoCtor,
    ) -> Result<(), StorageError> {
        let (done, durable) = oneshot::channel();
        self.send(change(done), ctor)?;
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(fail_msg(ctor, message)),
            Err(_) => Err(fail_msg(ctor, "the log writer has stopped")),
        }
    }
}

fn to_json<T: Serialize>(value: &T, ctor: IoCtor) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(fail(ctor))
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StorageError> {
    let tx = db.begin_read().map_err(fail(StorageIOError::read))?;
    let table = tx.open_table(META).map_err(fail(StorageIOError::read))?;
    match table.get(key).map_err(fail(StorageIOError::read))? {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(fail(StorageIOError::read)),
        None => Ok(None),
    }
}

fn load_log(db: &Database) -> Result<InMemoryLog, StorageError> {
    let tx = db.begin_read().map_err(fail(StorageIOError::read_logs))?;
    let table = tx
        .open_table(LOG)
        .map_err(fail(StorageIOError::read_logs))?;
    let mut entries = BTreeMap::new();
    for row in table.iter().map_err(fail(StorageIOError::read_logs))? {
        let (index, bytes) = row.map_err(fail(StorageIOError::read_logs))?;
        let entry: Entry =
            serde_json::from_slice(bytes.value()).map_err(fail(StorageIOError::read_logs))?;
        entries.insert(index.value(), entry);
    }
    Ok(InMemoryLog {
        entries,
        last_purged: read_meta(db, PURGED_KEY)?,
        vote: read_meta(db, VOTE_KEY)?,
        committed: read_meta::<Option<LogId>>(db, COMMITTED_KEY)?.flatten(),
    })
}

/// The writer thread: commits every change queued since the last commit in one fsynced
/// transaction, then reports each of them.
fn write_loop(db: Database, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = changes.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(change) = changes.try_recv() {
            batch.push(change);
        }
        let outcome = commit(&db, &batch).map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "writing the Raft log failed");
        }
        for change in batch {
            report(change, &outcome);
        }
    }
}

/// Commits `batch` in one transaction: fsynced, unless nobody waits for any of it (only the
/// committed index, which merely shortens recovery): that rides on the next fsync instead of
/// costing one of its own, which the next append would otherwise queue behind (redb's
/// `Durability::None` commits become durable with the next durable commit).
fn commit(db: &Database, batch: &[Change]) -> Result<(), StorageError> {
    let ctor = StorageIOError::write_logs;
    let mut tx = db.begin_write().map_err(fail(ctor))?;
    if batch.iter().all(Change::unawaited) {
        tx.set_durability(Durability::None);
    }
    for change in batch {
        apply(&tx, change)?;
    }
    tx.commit().map_err(fail(ctor))
}

fn apply(tx: &WriteTransaction, change: &Change) -> Result<(), StorageError> {
    let ctor = StorageIOError::write_logs;
    let mut log = tx.open_table(LOG).map_err(fail(ctor))?;
    let mut meta = tx.open_table(META).map_err(fail(ctor))?;
    match change {
        Change::Append { entries, .. } => {
            for entry in entries {
                let bytes = to_json(entry, ctor)?;
                log.insert(entry.log_id.index, bytes.as_slice())
                    .map_err(fail(ctor))?;
            }
        }
        Change::Truncate { from, .. } => {
            log.retain_in(*from.., |_, _| false).map_err(fail(ctor))?;
        }
        Change::Purge { upto, .. } => {
            log.retain_in(..=upto.index, |_, _| false)
                .map_err(fail(ctor))?;
            let bytes = to_json(upto, ctor)?;
            meta.insert(PURGED_KEY, bytes.as_slice())
                .map_err(fail(ctor))?;
        }
        Change::Meta { key, bytes, .. } => {
            meta.insert(*key, bytes.as_slice()).map_err(fail(ctor))?;
        }
    }
    Ok(())
}

fn report(change: Change, outcome: &Result<(), String>) {
    match change {
        Change::Append { flushed, .. } => {
            flushed.log_io_completed(outcome.clone().map_err(std::io::Error::other));
        }
        Change::Truncate { done, .. }
        | Change::Purge { done, .. }
        | Change::Meta {
            done: Some(done), ..
        } => {
            // The caller may have given up waiting; nothing is left to tell.
            let _ = done.send(outcome.clone());
        }
        Change::Meta { done: None, .. } => {}
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
        let bytes = to_json(vote, StorageIOError::write_vote)?;
        self.memory().vote = Some(*vote);
        self.write_and_wait(
            |done| Change::Meta {
                key: VOTE_KEY,
                bytes,
                done: Some(done),
            },
            StorageIOError::write_vote,
        )
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
        // Reads on a leader restored after a restart do not rely on it (see raft_engine.rs).
        let bytes = to_json(&committed, StorageIOError::write)?;
        self.memory().committed = committed;
        let change = Change::Meta {
            key: COMMITTED_KEY,
            bytes,
            done: None,
        };
        self.send(change, StorageIOError::write)
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut log = self.memory();
            for entry in &entries {
                log.entries.insert(entry.log_id.index, entry.clone());
            }
        }
        // Returns before the fsync: openraft counts the entries towards a commit only once
        // the writer reports them through `flushed`.
        self.send(
            Change::Append { entries, flushed },
            StorageIOError::write_logs,
        )
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        drop(self.memory().entries.split_off(&log_id.index));
        self.write_and_wait(
            |done| Change::Truncate {
                from: log_id.index,
                done,
            },
            StorageIOError::write_logs,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut log = self.memory();
            log.entries = log.entries.split_off(&(log_id.index + 1));
            log.last_purged = Some(log_id);
        }
        self.write_and_wait(
            |done| Change::Purge { upto: log_id, done },
            StorageIOError::write_logs,
        )
        .await
    }
}
