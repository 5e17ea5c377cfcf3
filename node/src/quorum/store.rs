//! The durable state of a quorum replica, in redb: one versioned value per key, and the
//! membership with its addresses. Every change is one fsynced transaction, and a value is
//! only ever replaced by a newer one (last writer wins), inside that transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::wire::{Stamp, Versioned};
use crate::types::NodeId;

/// The file in the data directory.
const REGISTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("registers");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(String),
    #[error("corrupt quorum store: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// The membership, kept so that a restarted member knows its replicas and where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub members: BTreeSet<NodeId>,
    /// member id → `host:port` of its peer listener.
    pub addresses: BTreeMap<NodeId, String>,
}

/// What one [`Store::apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys that now hold the version sent.
    pub changed: Vec<String>,
    /// Keys that held a newer version, which they kept.
    pub superseded: Vec<String>,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) `<data_dir>/quorum.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let db =
            Database::create(data_dir.join(crate::data_files::QUORUM_STORE)).map_err(redb_err)?;
        let tx = db.begin_write().map_err(redb_err)?;
        tx.open_table(REGISTERS).map_err(redb_err)?;
        tx.open_table(META).map_err(redb_err)?;
        tx.commit().map_err(redb_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Stores each entry whose stamp is newer than the one held, in one durable transaction.
    /// Blocks until it is fsynced: call it from a thread that may block (the group commit's).
    pub fn apply(&self, entries: BTreeMap<String, Versioned>) -> Result<Applied, StoreError> {
        let tx = self.db.begin_write().map_err(redb_err)?;
        let mut applied = Applied::default();
        {
            let mut table = tx.open_table(REGISTERS).map_err(redb_err)?;
            for (key, version) in entries {
                let held = match table.get(key.as_str()).map_err(redb_err)? {
                    Some(bytes) => Some(serde_json::from_slice::<Versioned>(bytes.value())?),
                    None => None,
                };
                let held_stamp = held.map(|h| h.stamp).unwrap_or_default();
                if version.stamp > held_stamp {
                    let bytes = serde_json::to_vec(&version)?;
                    table
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(redb_err)?;
                    applied.changed.push(key);
                } else if version.stamp < held_stamp {
                    applied.superseded.push(key);
                }
            }
        }
        tx.commit().map_err(redb_err)?;
        Ok(applied)
    }

    /// The version held for `key` (`None`: never written here).
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            let table = tx.open_table(REGISTERS).map_err(redb_err)?;
            let value = table.get(key.as_str()).map_err(redb_err)?;
            Ok(value
                .map(|bytes| serde_json::from_slice(bytes.value()))
                .transpose()?)
        })
        .await?
    }

    /// Every key held with its version.
    pub async fn all(&self) -> Result<BTreeMap<String, Versioned>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            let table = tx.open_table(REGISTERS).map_err(redb_err)?;
            let mut all = BTreeMap::new();
            for row in table.iter().map_err(redb_err)? {
                let (key, bytes) = row.map_err(redb_err)?;
                all.insert(
                    key.value().to_string(),
                    serde_json::from_slice(bytes.value())?,
                );
            }
            Ok(all)
        })
        .await?
    }

    /// The keys held after `after` (exclusive) up to `through` (inclusive), with their
    /// versions; an unset bound leaves that side open.
    pub async fn range(
        &self,
        after: Option<String>,
        through: Option<String>,
    ) -> Result<BTreeMap<String, Versioned>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            let table = tx.open_table(REGISTERS).map_err(redb_err)?;
            let bounds = (
                after.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                through.as_deref().map_or(Bound::Unbounded, Bound::Included),
            );
            let mut held = BTreeMap::new();
            for row in table.range::<&str>(bounds).map_err(redb_err)? {
                let (key, bytes) = row.map_err(redb_err)?;
                held.insert(
                    key.value().to_string(),
                    serde_json::from_slice(bytes.value())?,
                );
            }
            Ok(held)
        })
        .await?
    }

    /// Every key held with its stamp.
    pub async fn digest(&self) -> Result<BTreeMap<String, Stamp>, StoreError> {
        let all = self.all().await?;
        Ok(all.into_iter().map(|(k, v)| (k, v.stamp)).collect())
    }

    pub fn meta(&self) -> Result<Meta, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = tx.open_table(META).map_err(redb_err)?;
        let value = table.get(META_KEY).map_err(redb_err)?;
        match value {
            Some(bytes) => Ok(serde_json::from_slice(bytes.value())?),
            None => Ok(Meta::default()),
        }
    }

    pub async fn set_meta(&self, meta: &Meta) -> Result<(), StoreError> {
        let db = self.db.clone();
        let bytes = serde_json::to_vec(meta)?;
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(redb_err)?;
            {
                let mut table = tx.open_table(META).map_err(redb_err)?;
                table.insert(META_KEY, bytes.as_slice()).map_err(redb_err)?;
            }
            tx.commit().map_err(redb_err)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(value: i64, ms: u64, node: NodeId) -> Versioned {
        Versioned {
            value,
            stamp: Stamp { ms, node },
        }
    }

    #[tokio::test]
    async fn only_newer_versions_replace_and_older_ones_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let first = store
            .apply([("x".to_string(), version(1, 100, 1))].into())
            .expect("apply");
        assert_eq!(first.changed, ["x"]);
        let older = store
            .apply([("x".to_string(), version(2, 99, 3))].into())
            .expect("apply");
        assert_eq!(older.superseded, ["x"], "an older write loses");
        let tie = store
            .apply([("x".to_string(), version(3, 100, 2))].into())
            .expect("apply");
        assert_eq!(tie.changed, ["x"], "equal times: the higher member id wins");
        assert_eq!(store.get("x").await.expect("get"), Some(version(3, 100, 2)));
        drop(store);
        let reopened = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.get("x").await.expect("get"),
            Some(version(3, 100, 2))
        );
        assert_eq!(reopened.get("y").await.expect("get"), None);
    }
}
