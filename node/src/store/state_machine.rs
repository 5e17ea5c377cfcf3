//! The register state machine. Applied state lives in memory (shared with the client API for
//! reads); durability comes from the Raft log plus snapshots, which are written to disk
//! atomically (temporary file, fsync, rename, fsync of the directory). After a restart the
//! state is restored from the last snapshot and openraft re-applies the committed log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::io_error;
use crate::register::Registers;
use crate::types::{
    Batch, BatchResults, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// What the state machine has applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub registers: Registers,
    /// Writes applied since the last snapshot was built (not part of snapshots).
    #[serde(skip)]
    pub writes_since_snapshot: u64,
}

/// Read access to the applied state for the client API (local reads, status).
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<AppliedState>>);

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // A poisoned lock means a panic while applying; the data is still the last consistent
        // state because `apply` mutates one entry at a time.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: AppliedState,
}

pub struct StateMachine {
    state: SharedState,
    dir: PathBuf,
    snapshot_seq: u64,
}

fn fail<E: std::error::Error + 'static>(
    ctor: fn(AnyError) -> StorageIOError<crate::types::NodeId>,
) -> impl Fn(E) -> StorageError {
    move |e| io_error(ctor(AnyError::new(&e)))
}

impl StateMachine {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let sm = Self {
            state: SharedState::default(),
            dir: dir.to_path_buf(),
            snapshot_seq: 0,
        };
        if let Some(stored) = sm.load_snapshot()? {
            *sm.state.write() = stored.data;
        }
        Ok(sm)
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let path = self.dir.join(crate::data_files::RAFT_SNAPSHOT);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(fail(|e| StorageIOError::read_snapshot(None, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(|e| StorageIOError::read_snapshot(None, e))(e)),
        }
    }

    fn persist_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(stored)?;
            crate::durable_file::replace(&self.dir.join(crate::data_files::RAFT_SNAPSHOT), &bytes)
        };
        write().map_err(fail(|e| StorageIOError::write_snapshot(None, e)))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = self.state.read().clone();
        // Writes applied while this snapshot is built stay counted towards the next one.
        let covered = data.writes_since_snapshot;
        let mut live = self.state.write();
        live.writes_since_snapshot = live.writes_since_snapshot.saturating_sub(covered);
        drop(live);
        self.snapshot_seq += 1;
        let snapshot_id = match data.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, self.snapshot_seq),
            None => format!("empty-{}", self.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id,
        };
        let bytes = serde_json::to_vec(&data).map_err(fail(StorageIOError::write_state_machine))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist_snapshot(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResults>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.state.write();
        let mut results = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(Batch(commands)) => {
                    state.writes_since_snapshot += commands.len() as u64;
                    commands
                        .iter()
                        .map(|command| state.registers.apply(command))
                        .collect()
                }
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            state: self.state.clone(),
            dir: self.dir.clone(),
            snapshot_seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data: AppliedState = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            io_error(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist_snapshot(&stored)?;
        let mut state = self.state.write();
        *state = stored.data;
        // The snapshot's metadata is authoritative for what it covers.
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(stored) = self.load_snapshot()? else {
            return Ok(None);
        };
        let bytes =
            serde_json::to_vec(&stored.data).map_err(fail(StorageIOError::read_state_machine))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
