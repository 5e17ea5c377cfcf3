//! Durable state of a primary–secondary member: the snapshot the change log is compacted
//! behind, the log's tail (sequence number → entry) and the member's epoch, role, primary and
//! member set, in redb; every change is one fsynced transaction.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::log::Snapshot;
use crate::types::{Command, NodeId};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";
const SNAPSHOT_KEY: &str = "snapshot";

/// One replicated change, stamped with the epoch of the primary that ordered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub epoch: u64,
    pub command: Command,
}

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
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(String),
    #[error("corrupt entry in the change log: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// A change to make durable in one transaction.
#[derive(Default)]
pub struct Change {
    /// Drop every entry with a sequence number above this.
    pub truncate_after: Option<u64>,
    /// The new snapshot: every entry up to its sequence number is dropped.
    pub snapshot: Option<Snapshot>,
    /// (sequence number, entry) pairs to append.
    pub append: Vec<(u64, LogEntry)>,
    pub meta: Option<Meta>,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::create(path).map_err(redb_err)?;
        let tx = db.begin_write().map_err(redb_err)?;
        {
            tx.open_table(ENTRIES).map_err(redb_err)?;
            tx.open_table(META).map_err(redb_err)?;
        }
        tx.commit().map_err(redb_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Everything stored: the metadata, the snapshot and the log's tail in sequence order.
    pub fn load(&self) -> Result<(Meta, Snapshot, Vec<LogEntry>), StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let meta_table = tx.open_table(META).map_err(redb_err)?;
        let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta_table
                .get(key)
                .map_err(redb_err)?
                .map(|bytes| bytes.value().to_vec()))
        };
        let meta = match read(META_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Meta::default(),
        };
        let snapshot: Snapshot = match read(SNAPSHOT_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Snapshot::default(),
        };
        let table = tx.open_table(ENTRIES).map_err(redb_err)?;
        let mut log = Vec::new();
        for row in table.range(snapshot.seq + 1..).map_err(redb_err)? {
            let (_, bytes) = row.map_err(redb_err)?;
            log.push(serde_json::from_slice(bytes.value())?);
        }
        Ok((meta, snapshot, log))
    }

    pub async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let db = self.db.clone();
        let rows = change
            .append
            .iter()
            .map(|(seq, e)| serde_json::to_vec(e).map(|b| (*seq, b)))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = change.meta.as_ref().map(serde_json::to_vec).transpose()?;
        let snapshot = change
            .snapshot
            .as_ref()
            .map(|s| serde_json::to_vec(s).map(|bytes| (s.seq, bytes)))
            .transpose()?;
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(redb_err)?;
            {
                let mut entries = tx.open_table(ENTRIES).map_err(redb_err)?;
                if let Some(after) = change.truncate_after {
                    entries
                        .retain_in(after + 1.., |_, _| false)
                        .map_err(redb_err)?;
                }
                let mut table = tx.open_table(META).map_err(redb_err)?;
                if let Some((upto, bytes)) = &snapshot {
                    entries
                        .retain_in(..=*upto, |_, _| false)
                        .map_err(redb_err)?;
                    table
                        .insert(SNAPSHOT_KEY, bytes.as_slice())
                        .map_err(redb_err)?;
                }
                for (seq, bytes) in &rows {
                    entries.insert(seq, bytes.as_slice()).map_err(redb_err)?;
                }
                if let Some(bytes) = &meta {
                    table.insert(META_KEY, bytes.as_slice()).map_err(redb_err)?;
                }
            }
            tx.commit().map_err(redb_err)
        })
        .await?
    }
}
