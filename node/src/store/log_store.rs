//! The Raft log and vote, kept in a redb database.
//!
//! redb was chosen over a hand-written write-ahead log because it gives checksummed,
//! crash-safe transactions with one fsync per commit, and it is pure Rust (no C toolchain
//! in the static image build). Appends are written without an fsync and reported flushed by a
//! group flush (one fsync for every append queued meanwhile), so concurrent client writes share
//! an fsync and openraft's core never waits on the disk.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
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
    db: Arc<Database>,
    /// The highest index known committed, for status and readiness.
    committed: Arc<AtomicU64>,
    /// Appends written but not yet fsynced, waiting for the next group flush.
    flushes: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

type IoCtor = fn(AnyError) -> StorageIOError<NodeId>;

fn fail<E: std::error::Error + 'static>(ctor: IoCtor) -> impl Fn(E) -> StorageError {
    move |e| io_error(ctor(AnyError::new(&e)))
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
        let db = Arc::new(db);
        let (flushes, queue) = mpsc::unbounded_channel();
        let runtime =
            tokio::runtime::Handle::try_current().map_err(fail(StorageIOError::write_logs))?;
        runtime.spawn(flush_loop(db.clone(), queue));
        let store = Self {
            db,
            committed: Arc::default(),
            flushes,
        };
        let committed: Option<LogId> = store.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten();
        store
            .committed
            .store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(store)
    }

    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(fail(StorageIOError::read))?;
        let table = tx.open_table(META).map_err(fail(StorageIOError::read))?;
        match table.get(key).map_err(fail(StorageIOError::read))? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map(Some)
                .map_err(fail(StorageIOError::read)),
            None => Ok(None),
        }
    }

    /// Writes one metadata value in its own transaction.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
        ctor: IoCtor,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(fail(ctor))?;
        let db = self.db.clone();
        blocking(move || {
            let mut tx = db.begin_write().map_err(fail(ctor))?;
            tx.set_durability(durability);
            {
                let mut table = tx.open_table(META).map_err(fail(ctor))?;
                table.insert(key, bytes.as_slice()).map_err(fail(ctor))?;
            }
            tx.commit().map_err(fail(ctor))
        })
        .await
    }

    /// Removes the log entries whose index falls in `range`, recording `purged` if given, in one
    /// durable transaction.
    async fn remove_range(
        &self,
        range: impl RangeBounds<u64> + Send + 'static,
        purged: Option<LogId>,
    ) -> Result<(), StorageError> {
        let db = self.db.clone();
        let purged = purged
            .map(|p| serde_json::to_vec(&p))
            .transpose()
            .map_err(fail(StorageIOError::write_logs))?;
        blocking(move || {
            let tx = db.begin_write().map_err(fail(StorageIOError::write_logs))?;
            {
                let mut log = tx
                    .open_table(LOG)
                    .map_err(fail(StorageIOError::write_logs))?;
                log.retain_in(range, |_, _| false)
                    .map_err(fail(StorageIOError::write_logs))?;
                if let Some(bytes) = purged {
                    let mut meta = tx
                        .open_table(META)
                        .map_err(fail(StorageIOError::write_logs))?;
                    meta.insert(PURGED_KEY, bytes.as_slice())
                        .map_err(fail(StorageIOError::write_logs))?;
                }
            }
            tx.commit().map_err(fail(StorageIOError::write_logs))
        })
        .await
    }
}

/// Runs blocking storage work (fsync) off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(fail(StorageIOError::write_logs))?
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let tx = self
            .db
            .begin_read()
            .map_err(fail(StorageIOError::read_logs))?;
        let table = tx
            .open_table(LOG)
            .map_err(fail(StorageIOError::read_logs))?;
        let mut entries = Vec::new();
        for row in table
            .range(range)
            .map_err(fail(StorageIOError::read_logs))?
        {
            let (_, bytes) = row.map_err(fail(StorageIOError::read_logs))?;
            let entry =
                serde_json::from_slice(bytes.value()).map_err(fail(StorageIOError::read_logs))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED_KEY)?;
        let last_entry = {
            let tx = self
                .db
                .begin_read()
                .map_err(fail(StorageIOError::read_logs))?;
            let table = tx
                .open_table(LOG)
                .map_err(fail(StorageIOError::read_logs))?;
            let last = match table.last().map_err(fail(StorageIOError::read_logs))? {
                Some((_, bytes)) => Some(
                    serde_json::from_slice::<Entry>(bytes.value())
                        .map_err(fail(StorageIOError::read_logs))?
                        .log_id,
                ),
                None => None,
            };
            last
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_entry.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(
            VOTE_KEY,
            vote,
            Durability::Immediate,
            StorageIOError::write_vote,
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        // Not fsynced: it only shortens recovery (the committed log is re-applied at start).
        // Reads on a leader restored after a restart do not rely on it (see raft_engine.rs).
        self.write_meta(
            COMMITTED_KEY,
            &committed,
            Durability::None,
            StorageIOError::write,
        )
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|bytes| (e.log_id.index, bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail(StorageIOError::write_logs))?;
        // Written without an fsync, so openraft's core (which awaits this) moves on at once;
        // the flush loop fsyncs once for every append queued meanwhile and only then reports
        // them flushed, which is when openraft counts them towards a commit.
        let db = self.db.clone();
        blocking(move || {
            let mut tx = db.begin_write().map_err(fail(StorageIOError::write_logs))?;
            tx.set_durability(Durability::None);
            {
                let mut table = tx
                    .open_table(LOG)
                    .map_err(fail(StorageIOError::write_logs))?;
                for (index, bytes) in &rows {
                    table
                        .insert(index, bytes.as_slice())
                        .map_err(fail(StorageIOError::write_logs))?;
                }
            }
            tx.commit().map_err(fail(StorageIOError::write_logs))
        })
        .await?;
        if let Err(mpsc::error::SendError(callback)) = self.flushes.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the log flusher has stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index.., None).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(..=log_id.index, Some(log_id)).await
    }
}

const FLUSH_KEY: &str = "flush";

/// Group flush: one fsynced commit makes every earlier non-durable append durable; then all
/// the appends it covered are reported flushed.
async fn flush_loop(db: Arc<Database>, mut queue: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = queue.recv().await {
        let mut covered = vec![first];
        while let Ok(callback) = queue.try_recv() {
            covered.push(callback);
        }
        let db = db.clone();
        let result = blocking(move || {
            let tx = db.begin_write().map_err(fail(StorageIOError::write_logs))?;
            {
                let mut meta = tx
                    .open_table(META)
                    .map_err(fail(StorageIOError::write_logs))?;
                meta.insert(FLUSH_KEY, &[][..])
                    .map_err(fail(StorageIOError::write_logs))?;
            }
            tx.commit().map_err(fail(StorageIOError::write_logs))
        })
        .await;
        for callback in covered {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}
