//! The primary–secondary state as caplab-node kept it before its own log file
//! (`primary-secondary.redb`: metadata and snapshot in a `meta` table, the log's tail in one
//! table per segment of 4,096 sequence numbers): read once, when a member restarts on a data
//! directory written by an earlier version, then set aside as `primary-secondary.redb.imported`. The epoch, role and acknowledged
//! writes must survive an upgrade.

use std::path::Path;

use redb::{Database, TableDefinition, TableHandle};

use super::entries::{LogEntry, Snapshot};
use super::store::{Meta, StoreError, Stored};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SEGMENT_PREFIX: &str = "entries-";

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// The state in the redb database at `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<Stored>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let db = Database::open(path).map_err(redb_err)?;
    let tx = db.begin_read().map_err(redb_err)?;
    let meta_table = tx.open_table(META).map_err(redb_err)?;
    let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta_table
            .get(key)
            .map_err(redb_err)?
            .map(|bytes| bytes.value().to_vec()))
    };
    let meta: Meta = match read("meta")? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => Meta::default(),
    };
    let snapshot: Snapshot = match read("snapshot")? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => Snapshot::default(),
    };
    let segments: Vec<String> = tx
        .list_tables()
        .map_err(redb_err)?
        .map(|t| t.name().to_string())
        .filter(|name| name.starts_with(SEGMENT_PREFIX))
        .collect();
    let mut entries = std::collections::BTreeMap::new();
    for name in segments {
        let table = tx
            .open_table(TableDefinition::<u64, &[u8]>::new(&name))
            .map_err(redb_err)?;
        for row in table.range(snapshot.seq + 1..).map_err(redb_err)? {
            let (seq, bytes) = row.map_err(redb_err)?;
            let entry: LogEntry = serde_json::from_slice(bytes.value())?;
            entries.insert(seq.value(), entry);
        }
    }
    tracing::info!(
        path = %path.display(),
        entries = entries.len(),
        "importing the change log an earlier version kept in redb"
    );
    Ok(Some(Stored {
        meta,
        snapshot,
        entries,
    }))
}

/// Sets the redb store aside once the new log file holds it durably (see the Raft log's
/// `store::redb_import::set_aside`).
pub fn set_aside(path: &Path) -> Result<(), StoreError> {
    Ok(crate::durable_file::set_aside(path, ".imported")?)
}
