//! Durable storage for one member: the Raft log and vote in a write-ahead log file (synced
//! before anything in it is reported), the state machine in memory with snapshots written
//! atomically to disk.

// openraft's storage traits fix the error type (`StorageError`, ~200 bytes); boxing it here
// would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

mod log_store;
mod redb_import;
mod state_machine;

use std::path::Path;
use std::time::Duration;

use openraft::{AnyError, StorageIOError};

pub use log_store::LogStore;
pub use state_machine::{SharedState, StateMachine};

use crate::data_files;
use crate::types::{Raft, StorageError};

/// How often the writes applied since the last snapshot are compared with the limit.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(250);

/// Opens (or creates) the log store and the state machine under `data_dir`.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachine), StorageError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| io_error(StorageIOError::write(AnyError::new(&e))))?;
    let legacy = data_dir.join(data_files::LEGACY_RAFT_LOG);
    let log = LogStore::open(&data_dir.join(data_files::RAFT_LOG), || {
        redb_import::read(&legacy)
    })?;
    redb_import::set_aside(&legacy)?;
    let sm = StateMachine::open(data_dir)?;
    Ok((log, sm))
}

fn io_error(source: StorageIOError<crate::types::NodeId>) -> StorageError {
    StorageError::IO { source }
}

/// openraft's snapshot policy counts log entries, and an entry carries a whole batch of
/// writes: this also builds a snapshot (after which openraft compacts the log) once `every`
/// writes were applied since the last one, so the log kept in memory is bounded in writes.
pub async fn snapshot_by_writes(raft: Raft, state: SharedState, every: u64) {
    let mut tick = tokio::time::interval(SNAPSHOT_CHECK);
    loop {
        tick.tick().await;
        if state.read().writes_since_snapshot >= every && raft.trigger().snapshot().await.is_err() {
            return; // Raft has shut down.
        }
    }
}
