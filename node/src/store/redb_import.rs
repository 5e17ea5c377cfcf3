//! The Raft log as caplab-node kept it before its own log file (`raft-log.redb`, a redb
//! database): read once, when a member restarts on a data directory written by an earlier
//! version, into the new log file, then set aside as `raft-log.redb.imported` (kept, never
//! read again). A member's log and vote must survive an
//! upgrade: a voter that forgot its vote or acknowledged entries could break Raft's safety.

use std::path::Path;

use openraft::{AnyError, StorageIOError};
use redb::{Database, ReadOnlyTable, ReadableTable, TableDefinition, TableError};
use serde::de::DeserializeOwned;

use super::io_error;
use super::log_store::InMemoryLog;
use crate::types::{Entry, LogId, StorageError};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn fail(e: impl std::error::Error + 'static) -> StorageError {
    io_error(StorageIOError::read_logs(AnyError::new(&e)))
}

/// The log in the redb database at `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<InMemoryLog>, StorageError> {
    if !path.exists() {
        return Ok(None);
    }
    let db = Database::open(path).map_err(fail)?;
    let tx = db.begin_read().map_err(fail)?;
    let mut log = InMemoryLog::default();
    if let Some(table) = existing(tx.open_table(LOG))? {
        for row in table.iter().map_err(fail)? {
            let (index, bytes) = row.map_err(fail)?;
            let entry: Entry = serde_json::from_slice(bytes.value()).map_err(fail)?;
            log.entries.insert(index.value(), entry);
        }
    }
    if let Some(meta) = existing(tx.open_table(META))? {
        log.last_purged = read_meta(&meta, "last_purged")?;
        log.vote = read_meta(&meta, "vote")?;
        log.committed = read_meta::<Option<LogId>>(&meta, "committed")?.flatten();
    }
    tracing::info!(
        path = %path.display(),
        entries = log.entries.len(),
        "importing the Raft log an earlier version kept in redb"
    );
    Ok(Some(log))
}

/// A table the database holds; one it never had is `None`, any other error is passed on (a
/// damaged database must not be imported as an empty log).
fn existing<K: redb::Key, V: redb::Value>(
    table: Result<ReadOnlyTable<K, V>, TableError>,
) -> Result<Option<ReadOnlyTable<K, V>>, StorageError> {
    match table {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(fail(e)),
    }
}

fn read_meta<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StorageError> {
    match table.get(key).map_err(fail)? {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(fail),
        None => Ok(None),
    }
}

/// Sets the redb log aside once the new log file holds it durably (or when the new log file
/// already has frames: then the redb log is an import already done, or was written by an
/// older version started after this one, and is kept for inspection, never read).
pub fn set_aside(path: &Path) -> Result<(), StorageError> {
    crate::durable_file::set_aside(path, ".imported").map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Vote;

    /// Writes a log the way caplab-node did before its own log file.
    fn write_legacy(path: &Path) {
        let db = Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut log = tx.open_table(LOG).unwrap();
            for index in 4..=6 {
                let entry = Entry {
                    log_id: LogId::new(openraft::CommittedLeaderId::new(3, 2), index),
                    payload: openraft::EntryPayload::Blank,
                };
                log.insert(index, serde_json::to_vec(&entry).unwrap().as_slice())
                    .unwrap();
            }
            let mut meta = tx.open_table(META).unwrap();
            let vote = serde_json::to_vec(&Vote::new(3, 2)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn a_member_restarted_on_an_earlier_versions_data_keeps_its_log_and_vote() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(crate::data_files::LEGACY_RAFT_LOG);
        write_legacy(&legacy);
        let (mut log, _sm) = super::super::open(dir.path()).unwrap();
        assert!(!legacy.exists(), "the redb log is set aside once imported");
        assert!(dir.path().join("raft-log.redb.imported").exists());
        let state = openraft::storage::RaftLogStorage::get_log_state(&mut log)
            .await
            .unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(6));
        let vote = openraft::storage::RaftLogStorage::read_vote(&mut log)
            .await
            .unwrap();
        assert_eq!(vote, Some(Vote::new(3, 2)));
    }
}
