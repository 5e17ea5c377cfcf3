//! Durable state of a primary–secondary member: the snapshot the change log is compacted
//! behind, the log's tail (sequence number → entry) and the member's epoch, role, primary and
//! member set, in a write-ahead log file ([`crate::wal`], `primary-secondary.wal`): every
//! [`Change`] is one frame, synced before [`Store::commit`] returns.
//!
//! What the file holds is also kept in memory (the log's tail is bounded by compaction), so
//! the file is rewritten from it once it has grown well past it. Until this round the state
//! lived in redb, whose commit rewrote a dozen pages per change; a member restarted on such a
//! data directory imports `primary-secondary.redb` once (`redb_import.rs`), then sets it aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::entries::{LogEntry, Snapshot};
use crate::types::NodeId;
use crate::wal::{Wal, WalError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not yet told who the primary is.
    #[default]
    Uninitialized,
    Primary,
    Secondary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub epoch: u64,
    pub role: Role,
    pub primary: Option<NodeId>,
    pub members: BTreeSet<NodeId>,
    /// Acknowledged-then-discarded writes: entries dropped when rejoining a newer epoch.
    pub discarded: u64,
    /// The address book (member id → `host:port` of its peer listener), so that a member
    /// that restarts can reach the others before anyone tells it where they are: a primary
    /// fenced after a restart must ask them about its epoch.
    #[serde(default)]
    pub addresses: BTreeMap<NodeId, String>,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Wal(#[from] WalError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("corrupt entry in the change log: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("in the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A change made durable as one frame.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Drop every entry with a sequence number above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_after: Option<u64>,
    /// The new snapshot: every entry up to its sequence number is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// (sequence number, entry) pairs to append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<(u64, LogEntry)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
}

/// Everything the file holds, replayed.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub meta: Meta,
    pub snapshot: Snapshot,
    /// The log's tail after the snapshot, by sequence number.
    pub entries: BTreeMap<u64, LogEntry>,
}

impl Stored {
    /// Applies a change in the order its fields are documented to take effect.
    fn apply(&mut self, change: &Change) {
        if let Some(after) = change.truncate_after {
            drop(self.entries.split_off(&(after + 1)));
        }
        for (seq, entry) in &change.append {
            self.entries.insert(*seq, entry.clone());
        }
        if let Some(snapshot) = &change.snapshot {
            self.entries = self.entries.split_off(&(snapshot.seq + 1));
            self.snapshot = snapshot.clone();
        }
        if let Some(meta) = &change.meta {
            self.meta = meta.clone();
        }
    }

    /// The change that rebuilds this state from nothing (what a rewritten file holds).
    fn checkpoint(&self) -> Change {
        Change {
            truncate_after: None,
            snapshot: Some(self.snapshot.clone()),
            append: self.entries.iter().map(|(s, e)| (*s, e.clone())).collect(),
            meta: Some(self.meta.clone()),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    wal: Wal,
    stored: Stored,
}

impl Store {
    /// Opens (or creates) the log file at `path` and replays it; an empty one first takes
    /// what `import` finds (the redb store an earlier version kept), as one synced frame.
    pub fn open(
        path: &Path,
        import: impl FnOnce() -> Result<Option<Stored>, StoreError>,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let checkpoint = |s: Stored| serde_json::to_vec(&s.checkpoint()).map_err(StoreError::from);
        let (wal, frames) = Wal::open_importing(path, || import()?.map(checkpoint).transpose())?;
        let mut stored = Stored::default();
        for frame in frames.iter() {
            stored.apply(&serde_json::from_slice(frame)?);
        }
        let inner = Inner { wal, stored };
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change to `Inner` is made after the frame is durable, in one step per field.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything stored: the metadata, the snapshot and the log's tail in sequence order.
    pub fn load(&self) -> (Meta, Snapshot, Vec<LogEntry>) {
        let inner = self.inner();
        let s = &inner.stored;
        let log = s.entries.values().cloned().collect();
        (s.meta.clone(), s.snapshot.clone(), log)
    }

    /// Makes `change` durable (one frame, synced) on a blocking thread.
    pub async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(&change)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.commit_blocking(&change, &payload)).await?
    }

    fn commit_blocking(&self, change: &Change, payload: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.inner();
        inner.wal.append(payload)?;
        inner.wal.sync()?;
        inner.stored.apply(change);
        let Inner { wal, stored } = &mut *inner;
        wal.rewrite_if_grown(|| serde_json::to_vec(&stored.checkpoint()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn entry(epoch: u64, value: i64) -> LogEntry {
        LogEntry {
            epoch,
            command: Command::Write {
                key: "k".into(),
                value,
            },
        }
    }

    fn no_import() -> Result<Option<Stored>, StoreError> {
        Ok(None)
    }

    #[tokio::test]
    async fn compaction_and_truncation_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(crate::data_files::PRIMARY_STORE);
        let store = Store::open(&path, no_import).expect("open");
        let append = (1..=10_000)
            .map(|seq| (seq, entry(1, seq as i64)))
            .collect();
        store
            .commit(Change {
                append,
                ..Change::default()
            })
            .await
            .expect("append");
        let snapshot = Snapshot {
            seq: 9_000,
            epoch: 1,
            ..Snapshot::default()
        };
        store
            .commit(Change {
                snapshot: Some(snapshot),
                ..Change::default()
            })
            .await
            .expect("compact");
        let (_, snapshot, log) = store.load();
        assert_eq!(snapshot.seq, 9_000);
        assert_eq!(log.len(), 1_000);
        assert_eq!(log[0], entry(1, 9_001));

        store
            .commit(Change {
                truncate_after: Some(9_500),
                append: vec![(9_501, entry(2, -1))],
                ..Change::default()
            })
            .await
            .expect("truncate");
        drop(store);
        let (_, snapshot, log) = Store::open(&path, no_import).expect("reopen").load();
        assert_eq!(snapshot.seq, 9_000);
        assert_eq!(log.len(), 501);
        assert_eq!(log.last(), Some(&entry(2, -1)));
    }

    #[tokio::test]
    async fn a_rewritten_file_holds_the_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(crate::data_files::PRIMARY_STORE);
        let store = Store::open(&path, no_import).expect("open");
        for seq in 1..=100 {
            let change = Change {
                append: vec![(seq, entry(1, seq as i64))],
                meta: Some(Meta {
                    epoch: 3,
                    role: Role::Primary,
                    ..Meta::default()
                }),
                ..Change::default()
            };
            store.commit(change).await.expect("append");
        }
        let before = store.load();
        let grown = store.inner().wal.end();
        let checkpoint = serde_json::to_vec(&store.inner().stored.checkpoint()).unwrap();
        store.inner().wal.rewrite(&checkpoint).unwrap();
        assert!(store.inner().wal.end() < grown);
        drop(store);
        let after = Store::open(&path, no_import).expect("reopen").load();
        assert_eq!(after, before);
    }

    #[tokio::test]
    async fn an_earlier_versions_redb_store_is_imported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join(crate::data_files::LEGACY_PRIMARY_STORE);
        {
            let db = redb::Database::create(&legacy).expect("redb");
            let tx = db.begin_write().expect("tx");
            {
                let meta = redb::TableDefinition::<&str, &[u8]>::new("meta");
                let mut table = tx.open_table(meta).expect("meta");
                let m = Meta {
                    epoch: 4,
                    role: Role::Secondary,
                    primary: Some(1),
                    ..Meta::default()
                };
                let bytes = serde_json::to_vec(&m).expect("json");
                table.insert("meta", bytes.as_slice()).expect("insert");
                let segment = redb::TableDefinition::<u64, &[u8]>::new("entries-000000000000");
                let mut table = tx.open_table(segment).expect("segment");
                let bytes = serde_json::to_vec(&entry(4, 7)).expect("json");
                table.insert(1, bytes.as_slice()).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let path = dir.path().join(crate::data_files::PRIMARY_STORE);
        let import = || super::super::redb_import::read(&legacy);
        let (meta, _, log) = Store::open(&path, import).expect("open").load();
        assert_eq!(
            (meta.epoch, meta.role, meta.primary),
            (4, Role::Secondary, Some(1))
        );
        assert_eq!(log, vec![entry(4, 7)]);
        let reopened = Store::open(&path, || panic!("imported twice")).expect("reopen");
        assert_eq!(reopened.load().2, vec![entry(4, 7)]);
    }
}
