//! The durable state of a 2pc member, in redb (`twopc.redb`), every change one fsynced
//! transaction: the committed registers; as a participant, its prepare records (the keys it
//! holds) and the decisions it learned; as the coordinator, its log of transactions (begun,
//! then decided) until every participant acknowledged the decision; the membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::wire::{Decision, TxId};
use crate::types::{Command, NodeId};

/// The file in the data directory.
const REGISTERS: TableDefinition<&str, i64> = TableDefinition::new("registers");
/// Participant: txid → [`Prepared`] (JSON).
const PREPARED: TableDefinition<u64, &[u8]> = TableDefinition::new("prepared");
/// Participant: txid → [`Learned`] (JSON).
const DECIDED: TableDefinition<u64, &[u8]> = TableDefinition::new("decided");
/// Coordinator: txid → [`Logged`] (JSON).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("coordinator-log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";
const NEXT_TXID: &str = "next-txid";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(String),
    #[error("corrupt 2pc store: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// The membership: who coordinates, who participates, where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub coordinator: Option<NodeId>,
    pub members: BTreeSet<NodeId>,
    /// member id → `host:port` of its peer listener.
    pub addresses: BTreeMap<NodeId, String>,
}

/// A participant's prepare record: it voted yes and holds `command`'s key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub txid: TxId,
    pub coordinator: NodeId,
    pub participants: BTreeSet<NodeId>,
    pub command: Command,
    /// When it voted, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

impl Prepared {
    /// The value the register takes on commit.
    pub fn value(&self) -> i64 {
        new_value(&self.command)
    }
}

/// The value a register holds once `command` is applied.
pub fn new_value(command: &Command) -> i64 {
    match command {
        Command::Write { value, .. } => *value,
        Command::Cas { new, .. } => *new,
    }
}

/// A decision a participant learned, and whether a person forced it (heuristic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    pub decision: Decision,
    pub heuristic: bool,
}

/// A coordinator's log record of one transaction; `decision` is written before anyone is
/// told it. Removed once every participant acknowledged the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    pub participants: BTreeSet<NodeId>,
    pub command: Command,
    pub decision: Option<Decision>,
}

/// What applying a decision found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The prepare record released (`None`: nothing was held for it).
    pub released: Option<Prepared>,
    /// The decision learned before, if any (a heuristic one, or a repeat).
    pub earlier: Option<Learned>,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

/// Runs `f` in one redb write transaction on a blocking thread and commits it (fsync).
async fn write<T: Send + 'static>(
    db: &Arc<Database>,
    f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let tx = db.begin_write().map_err(redb_err)?;
        let result = f(&tx)?;
        tx.commit().map_err(redb_err)?;
        Ok(result)
    })
    .await?
}

fn get_json<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'static>>,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(redb_err)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

fn all_json<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<BTreeMap<TxId, T>, StoreError> {
    let mut all = BTreeMap::new();
    for row in table.iter().map_err(redb_err)? {
        let (txid, bytes) = row.map_err(redb_err)?;
        all.insert(txid.value(), serde_json::from_slice(bytes.value())?);
    }
    Ok(all)
}

impl Store {
    /// Opens (or creates) `<data_dir>/twopc.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let db =
            Database::create(data_dir.join(crate::data_files::TWOPC_STORE)).map_err(redb_err)?;
        let tx = db.begin_write().map_err(redb_err)?;
        tx.open_table(REGISTERS).map_err(redb_err)?;
        tx.open_table(PREPARED).map_err(redb_err)?;
        tx.open_table(DECIDED).map_err(redb_err)?;
        tx.open_table(LOG).map_err(redb_err)?;
        tx.open_table(META).map_err(redb_err)?;
        tx.commit().map_err(redb_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The committed value of `key` (0 when never written).
    pub async fn get(&self, key: &str) -> Result<i64, StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            let table = tx.open_table(REGISTERS).map_err(redb_err)?;
            let value = table.get(key.as_str()).map_err(redb_err)?;
            Ok(value.map_or(0, |v| v.value()))
        })
        .await?
    }

    /// Every prepare record (what this member holds), at startup.
    pub fn prepared(&self) -> Result<BTreeMap<TxId, Prepared>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        all_json(&tx.open_table(PREPARED).map_err(redb_err)?)
    }

    /// The coordinator log, at startup.
    pub fn log(&self) -> Result<BTreeMap<TxId, Logged>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        all_json(&tx.open_table(LOG).map_err(redb_err)?)
    }

    /// The decision learned for `txid`, if any.
    pub async fn learned(&self, txid: TxId) -> Result<Option<Learned>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            get_json(&tx.open_table(DECIDED).map_err(redb_err)?, txid)
        })
        .await?
    }

    /// Makes `record` durable (the participant then holds its key).
    pub async fn prepare(&self, record: &Prepared) -> Result<(), StoreError> {
        let (txid, bytes) = (record.txid, serde_json::to_vec(record)?);
        write(&self.db, move |tx| {
            let mut table = tx.open_table(PREPARED).map_err(redb_err)?;
            table.insert(txid, bytes.as_slice()).map_err(redb_err)?;
            Ok(())
        })
        .await
    }

    /// Learns `decision` for `txid` in one transaction: on commit the prepared value becomes
    /// the committed one; the prepare record goes; the decision is kept to answer peers.
    pub async fn apply(&self, txid: TxId, learned: Learned) -> Result<Applied, StoreError> {
        let bytes = serde_json::to_vec(&learned)?;
        write(&self.db, move |tx| {
            let mut prepared = tx.open_table(PREPARED).map_err(redb_err)?;
            let mut decided = tx.open_table(DECIDED).map_err(redb_err)?;
            let earlier: Option<Learned> = get_json(&decided, txid)?;
            let released: Option<Prepared> = get_json(&prepared, txid)?;
            if let Some(record) = &released {
                prepared.remove(txid).map_err(redb_err)?;
                if learned.decision == Decision::Commit {
                    let mut registers = tx.open_table(REGISTERS).map_err(redb_err)?;
                    let key = record.command.key();
                    registers.insert(key, record.value()).map_err(redb_err)?;
                }
            }
            // A heuristic decision stays recorded as such; the coordinator's is compared with it.
            if earlier.is_none() {
                decided.insert(txid, bytes.as_slice()).map_err(redb_err)?;
            }
            Ok(Applied { released, earlier })
        })
        .await
    }

    /// Coordinator: draws the next transaction id and logs the transaction as begun.
    pub async fn begin(&self, record: Logged) -> Result<TxId, StoreError> {
        let bytes = serde_json::to_vec(&record)?;
        write(&self.db, move |tx| {
            let mut meta = tx.open_table(META).map_err(redb_err)?;
            let last = match meta.get(NEXT_TXID).map_err(redb_err)? {
                Some(v) => serde_json::from_slice::<TxId>(v.value())?,
                None => 0,
            };
            let txid = last + 1;
            meta.insert(NEXT_TXID, serde_json::to_vec(&txid)?.as_slice())
                .map_err(redb_err)?;
            let mut log = tx.open_table(LOG).map_err(redb_err)?;
            log.insert(txid, bytes.as_slice()).map_err(redb_err)?;
            Ok(txid)
        })
        .await
    }

    /// Coordinator: logs the decision of `txid` (before telling anyone).
    pub async fn decide(&self, txid: TxId, decision: Decision) -> Result<(), StoreError> {
        write(&self.db, move |tx| {
            let mut log = tx.open_table(LOG).map_err(redb_err)?;
            let mut record: Logged = get_json(&log, txid)?.ok_or_else(|| {
                StoreError::Redb(format!("transaction {txid} is not in the coordinator log"))
            })?;
            record.decision = Some(decision);
            log.insert(txid, serde_json::to_vec(&record)?.as_slice())
                .map_err(redb_err)?;
            Ok(())
        })
        .await
    }

    /// Coordinator: every participant acknowledged the decision of `txid`; forget it.
    pub async fn forget(&self, txid: TxId) -> Result<(), StoreError> {
        write(&self.db, move |tx| {
            let mut log = tx.open_table(LOG).map_err(redb_err)?;
            log.remove(txid).map_err(redb_err)?;
            Ok(())
        })
        .await
    }

    /// Coordinator: the log record of `txid`, if it is still there.
    pub async fn logged(&self, txid: TxId) -> Result<Option<Logged>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(redb_err)?;
            get_json(&tx.open_table(LOG).map_err(redb_err)?, txid)
        })
        .await?
    }

    pub fn meta(&self) -> Result<Meta, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = tx.open_table(META).map_err(redb_err)?;
        Ok(get_json(&table, META_KEY)?.unwrap_or_default())
    }

    pub async fn set_meta(&self, meta: &Meta) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(meta)?;
        write(&self.db, move |tx| {
            let mut table = tx.open_table(META).map_err(redb_err)?;
            table.insert(META_KEY, bytes.as_slice()).map_err(redb_err)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(txid: TxId, value: i64) -> Prepared {
        Prepared {
            txid,
            coordinator: 1,
            participants: [1, 2].into(),
            command: Command::Write {
                key: "x".into(),
                value,
            },
            since_ms: 0,
        }
    }

    #[tokio::test]
    async fn prepare_records_survive_a_restart_and_only_a_commit_applies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.prepare(&prepared(1, 5)).await.expect("prepare");
        store.prepare(&prepared(2, 6)).await.expect("prepare");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.prepared().expect("read").len(), 2);
        let abort = Learned {
            decision: Decision::Abort,
            heuristic: false,
        };
        let commit = Learned {
            decision: Decision::Commit,
            heuristic: false,
        };
        let applied = store.apply(2, abort).await.expect("abort");
        assert!(applied.released.is_some() && applied.earlier.is_none());
        store.apply(1, commit).await.expect("commit");
        assert_eq!(store.get("x").await.expect("get"), 5);
        assert!(store.prepared().expect("read").is_empty());
        let again = store.apply(1, commit).await.expect("repeat");
        assert_eq!((again.released, again.earlier), (None, Some(commit)));
    }

    #[tokio::test]
    async fn the_coordinator_log_numbers_transactions_and_keeps_decisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let record = Logged {
            participants: [1].into(),
            command: Command::Write {
                key: "x".into(),
                value: 1,
            },
            decision: None,
        };
        assert_eq!(store.begin(record.clone()).await.expect("begin"), 1);
        assert_eq!(store.begin(record).await.expect("begin"), 2);
        store.decide(1, Decision::Commit).await.expect("decide");
        store.forget(2).await.expect("forget");
        let log = store.log().expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[&1].decision, Some(Decision::Commit));
        assert!(store.decide(9, Decision::Abort).await.is_err());
    }
}
