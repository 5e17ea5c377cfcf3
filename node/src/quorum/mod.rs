//! Leaderless quorum replication (`--replication quorum`), as in Dynamo (DeCandia et al.,
//! SOSP 2007) and Cassandra: every member coordinates the operations it receives, a write
//! goes to all N replicas and succeeds once W stored it durably, a read asks R replicas and
//! returns the newest version by last-writer-wins timestamp (this member's clock, an injected
//! skew included, then its id), repairing older answers. Anti-entropy converges replicas in
//! the background. There is no leader and no consensus, hence no compare-and-set.
//!
//! R + W > N makes every read quorum meet every write quorum, which is still not
//! linearizability (a read concurrent with a write can see it while a later read does not),
//! and a member whose clock is behind stamps its writes older than earlier ones, which then
//! silently lose: [`counters`] counts those writes per member that stamped them.

pub mod anti_entropy;
pub mod commit;
pub mod coordinator;
pub mod counters;
mod engine_impl;
pub mod error;
pub mod outbox;
pub mod replica;
pub mod replicas;
pub mod store;
pub mod wire;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anti_entropy::AntiEntropy;
use coordinator::{Clock, Coordinator, Quorums};
use counters::{Counters, QuorumMetrics};
use error::QuorumError;
use outbox::Outbox;
use replica::Replica;
use replicas::Replicas;
use store::{Meta, Store, StoreError};
use wire::{FetchResponse, StoreRequest, StoreResponse, SyncRequest, SyncResponse};

use crate::network::PeerClient;
use crate::types::NodeId;

/// How often anti-entropy compares this member with each other replica.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(1);

/// The configured quorum sizes (`None`: a majority of the members).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuorumSettings {
    pub read: Option<usize>,
    pub write: Option<usize>,
}

/// The quorum part of `/v1/status` (the wire type).
pub use caplab_api::status::QuorumStatus;

pub struct QuorumEngine {
    pub id: NodeId,
    settings: QuorumSettings,
    replica: Arc<Replica>,
    replicas: Arc<Replicas>,
    coordinator: Coordinator,
    /// The background comparison, stopped when the engine is dropped.
    anti_entropy: tokio::task::JoinHandle<()>,
}

impl Drop for QuorumEngine {
    fn drop(&mut self) {
        self.anti_entropy.abort();
    }
}

impl QuorumEngine {
    /// Opens the store in `data_dir` (its membership and addresses included) and starts
    /// anti-entropy on the current Tokio runtime.
    pub fn open(
        id: NodeId,
        settings: QuorumSettings,
        data_dir: &Path,
        peers: Arc<PeerClient>,
        metrics: QuorumMetrics,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(data_dir)?;
        let meta = store.meta()?;
        peers.addresses.merge(meta.addresses);
        let faults = peers.faults.clone();
        let replica = Arc::new(Replica::new(store, Arc::new(Counters::new(metrics)))?);
        let replicas = Arc::new(Replicas::new(id, peers, meta.members));
        let anti_entropy = AntiEntropy {
            replica: replica.clone(),
            replicas: replicas.clone(),
            faults: faults.clone(),
            interval: ANTI_ENTROPY_INTERVAL,
        };
        Ok(Arc::new(Self {
            id,
            settings,
            coordinator: Coordinator {
                replica: replica.clone(),
                replicas: replicas.clone(),
                outbox: Outbox::new(replicas.clone()),
                clock: Clock::new(faults),
            },
            replica,
            replicas,
            anti_entropy: tokio::spawn(anti_entropy.run()),
        }))
    }

    /// N, R and W now; refused while this member has no membership.
    fn quorums(&self) -> Result<Quorums, QuorumError> {
        let n = self.replicas.members().len();
        if n == 0 {
            return Err(QuorumError::NotApplied(
                "this member has no membership yet: POST /v1/admin/init with the members".into(),
            ));
        }
        Ok(Quorums::resolve(n, self.settings.read, self.settings.write))
    }

    /// Writes `value` with a fresh stamp; `Ok` once W replicas stored it.
    pub async fn write(
        &self,
        key: &str,
        value: i64,
        deadline: Instant,
    ) -> Result<i64, QuorumError> {
        let q = self.quorums()?;
        let version = self.coordinator.write(q, key, value, deadline).await?;
        Ok(version.value)
    }

    /// Always refused: see [`QuorumError::cas_refused`].
    pub fn cas(&self) -> Result<i64, QuorumError> {
        Err(QuorumError::cas_refused())
    }

    /// The newest value among R replicas (this one included).
    pub async fn read(&self, key: &str, deadline: Instant) -> Result<i64, QuorumError> {
        let q = self.quorums()?;
        Ok(self.coordinator.read(q, key, deadline).await?.value)
    }

    /// What this replica holds (0 when never written here).
    pub async fn read_local(&self, key: &str) -> Result<i64, QuorumError> {
        Ok(self.replica.store.get(key).await?.map_or(0, |v| v.value))
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        self.replicas.members()
    }

    /// Makes `members` the membership (durably, with the address book), after checking that
    /// the configured R and W fit in it.
    pub async fn set_members(&self, members: BTreeSet<NodeId>) -> Result<(), QuorumError> {
        let n = members.len();
        for (name, flag, size) in [
            ("read", "--read-quorum", self.settings.read),
            ("write", "--write-quorum", self.settings.write),
        ] {
            if size.is_some_and(|s| s > n) {
                return Err(QuorumError::BadRequest(format!(
                    "the {name} quorum ({flag} {}) exceeds the {n} members: give at least as \
                     many members, or restart the members with a smaller {flag}",
                    size.unwrap_or_default()
                )));
            }
        }
        let meta = Meta {
            members: members.clone(),
            addresses: self.replicas.peers.addresses.all(),
        };
        self.replica.store.set_meta(&meta).await?;
        self.replicas.set_members(members);
        Ok(())
    }

    /// Ready: a member of a membership, with at least max(R, W) replicas reachable.
    pub fn readiness(&self) -> Result<(), String> {
        let q = self.quorums().map_err(|e| e.to_string())?;
        if !self.replicas.members().contains(&self.id) {
            return Err("not a member of the quorum membership".into());
        }
        let reachable = self.replicas.reachable_count();
        let needed = q.read.max(q.write);
        if reachable < needed {
            return Err(format!(
                "only {reachable} of {} replicas reachable; max(R={}, W={}) = {needed} needed",
                q.n, q.read, q.write
            ));
        }
        Ok(())
    }

    pub fn quorum_status(&self) -> QuorumStatus {
        let n = self.replicas.members().len();
        let q = Quorums::resolve(n, self.settings.read, self.settings.write);
        QuorumStatus {
            n,
            read_quorum: q.read,
            write_quorum: q.write,
            overlapping: q.overlapping(),
            replicas: self.replicas.reach(),
            anti_entropy_interval_ms: ANTI_ENTROPY_INTERVAL.as_millis() as u64,
            counters: self.replica.counters.view(),
        }
    }

    /// Peer message: store a batch (see [`wire::STORE_PATH`]).
    pub async fn handle_store(&self, request: StoreRequest) -> Result<StoreResponse, QuorumError> {
        Ok(self.replica.store(request).await?)
    }

    /// Peer message: this replica's version of a key (see [`wire::FETCH_PATH`]).
    pub async fn handle_fetch(&self, key: &str) -> Result<FetchResponse, QuorumError> {
        Ok(self.replica.fetch(key).await?)
    }

    /// Peer message: compare a digest (see [`wire::SYNC_PATH`]).
    pub async fn handle_sync(&self, request: SyncRequest) -> Result<SyncResponse, QuorumError> {
        Ok(self.replica.sync(request).await?)
    }
}
