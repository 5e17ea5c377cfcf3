//! Durable state of a primary–secondary member: the snapshot the change log is compacted
//! behind, the log's tail (sequence number → entry) and the member's epoch, role, primary and
//! member set, in redb; every change is one fsynced transaction.
//!
//! The log is split into one table per segment of [`SEGMENT`] sequence numbers, so compaction
//! drops whole tables: deleting compacted entries row by row costs as much as writing them
//! and took a third of the write throughput.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::entries::{LogEntry, Snapshot};
use crate::types::NodeId;

/// Sequence numbers per log table.
const SEGMENT: u64 = 4096;
const SEGMENT_PREFIX: &str = "entries-";
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";
const SNAPSHOT_KEY: &str = "snapshot";

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

fn segment_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:012}")
}

fn segment_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// The log's segments present, by number.
fn segments<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<u64> {
    names
        .filter_map(|n| n.strip_prefix(SEGMENT_PREFIX))
        .filter_map(|n| n.parse().ok())
        .collect()
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
        let names: Vec<String> = tx
            .list_tables()
            .map_err(redb_err)?
            .map(|t| t.name().to_string())
            .collect();
        let mut log = Vec::new();
        for segment in segments(names.iter().map(String::as_str)) {
            let name = segment_name(segment);
            let table = tx.open_table(segment_table(&name)).map_err(redb_err)?;
            for row in table.range(snapshot.seq + 1..).map_err(redb_err)? {
                let (_, bytes) = row.map_err(redb_err)?;
                log.push(serde_json::from_slice(bytes.value())?);
            }
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
            if let Some(after) = change.truncate_after {
                drop_after(&tx, after)?;
            }
            if let Some((upto, _)) = &snapshot {
                drop_through(&tx, *upto)?;
            }
            append(&tx, &rows)?;
            {
                let mut table = tx.open_table(META).map_err(redb_err)?;
                if let Some((_, bytes)) = &snapshot {
                    table
                        .insert(SNAPSHOT_KEY, bytes.as_slice())
                        .map_err(redb_err)?;
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

fn present_segments(tx: &WriteTransaction) -> Result<BTreeSet<u64>, StoreError> {
    let names: Vec<String> = tx
        .list_tables()
        .map_err(redb_err)?
        .map(|t| t.name().to_string())
        .collect();
    Ok(segments(names.iter().map(String::as_str)))
}

/// Removes every entry after `after`.
fn drop_after(tx: &WriteTransaction, after: u64) -> Result<(), StoreError> {
    for segment in present_segments(tx)?.range((after + 1) / SEGMENT..) {
        let name = segment_name(*segment);
        if *segment * SEGMENT > after {
            tx.delete_table(segment_table(&name)).map_err(redb_err)?;
        } else {
            let mut table = tx.open_table(segment_table(&name)).map_err(redb_err)?;
            table
                .retain_in(after + 1.., |_, _| false)
                .map_err(redb_err)?;
        }
    }
    Ok(())
}

/// Drops the segments whose entries all lie at or before `upto` (the other compacted entries
/// are skipped when the log is read, and go with their segment later).
fn drop_through(tx: &WriteTransaction, upto: u64) -> Result<(), StoreError> {
    for segment in present_segments(tx)?.range(..(upto + 1) / SEGMENT) {
        tx.delete_table(segment_table(&segment_name(*segment)))
            .map_err(redb_err)?;
    }
    Ok(())
}

fn append(tx: &WriteTransaction, rows: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
    let mut by_segment: BTreeMap<u64, Vec<&(u64, Vec<u8>)>> = BTreeMap::new();
    for row in rows {
        by_segment.entry(row.0 / SEGMENT).or_default().push(row);
    }
    for (segment, rows) in by_segment {
        let name = segment_name(segment);
        let mut table = tx.open_table(segment_table(&name)).map_err(redb_err)?;
        for (seq, bytes) in rows {
            table.insert(seq, bytes.as_slice()).map_err(redb_err)?;
        }
    }
    Ok(())
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

    #[tokio::test]
    async fn compaction_drops_whole_segments_and_reads_skip_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("log.redb")).expect("open");
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
        let tx = store.db.begin_read().expect("read");
        let names: Vec<String> = tx
            .list_tables()
            .expect("tables")
            .map(|t| t.name().to_string())
            .collect();
        // Segments 0 and 1 (entries up to 8,191) are gone; segment 2 holds 8,192..=10,000.
        assert_eq!(segments(names.iter().map(String::as_str)), [2].into());
        drop(tx);
        let (_, snapshot, log) = store.load().expect("load");
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
        let (_, _, log) = store.load().expect("load");
        assert_eq!(log.len(), 501);
        assert_eq!(log.last(), Some(&entry(2, -1)));
    }
}
