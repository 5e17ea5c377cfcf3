//! Anti-entropy: every interval, this member sends its digest (every key with its stamp) to
//! each other replica, takes what that replica holds newer, and pushes what it holds newer,
//! so replicas converge after a partition heals without any client traffic (Dynamo, §4.7;
//! Cassandra's repair). When a round finds every replica in sync after one had come back, the
//! time since it came back is recorded as the time to convergence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::replica::Replica;
use super::replicas::Replicas;
use super::wire::{
    StoreKind, StoreRequest, StoreResponse, SyncRequest, SyncResponse, STORE_PATH, SYNC_PATH,
};
use crate::faults::Faults;
use crate::types::NodeId;

pub struct AntiEntropy {
    pub replica: Arc<Replica>,
    pub replicas: Arc<Replicas>,
    pub faults: Arc<Faults>,
    pub interval: Duration,
}

impl AntiEntropy {
    /// Runs rounds for ever (a paused member skips them: it sends nothing).
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.faults.is_paused() {
                self.round().await;
            }
        }
    }

    /// One comparison with every other replica; records a convergence when all are in sync.
    pub async fn round(&self) {
        let mine = match self.replica.store.all().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy cannot read the store");
                return;
            }
        };
        let digest = SyncRequest {
            digest: mine.iter().map(|(k, v)| (k.clone(), v.stamp)).collect(),
        };
        let others = self.replicas.others();
        let rounds = others.iter().map(|id| self.sync_with(*id, &mine, &digest));
        let in_sync = futures::future::join_all(rounds).await;
        if in_sync.iter().all(|ok| *ok) {
            if let Some(since_heal) = self.replicas.take_heal() {
                let ms = since_heal.as_millis() as u64;
                tracing::info!(ms, "anti-entropy: every replica in sync after the heal");
                self.replica.counters.converged_after(ms);
            }
        }
    }

    /// Exchanges differences with one replica; true when both now hold the same versions.
    async fn sync_with(
        &self,
        peer: NodeId,
        mine: &BTreeMap<String, super::wire::Versioned>,
        digest: &SyncRequest,
    ) -> bool {
        let timeout = self.interval.max(Duration::from_secs(1));
        let answer: SyncResponse = match self.replicas.call(peer, SYNC_PATH, digest, timeout).await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(peer, error = %e, "anti-entropy round failed");
                return false;
            }
        };
        let mut in_sync = true;
        if !answer.newer.is_empty() {
            let request = StoreRequest {
                kind: StoreKind::AntiEntropy,
                entries: answer.newer,
            };
            if let Err(e) = self.replica.store(request).await {
                tracing::warn!(error = %e, "anti-entropy cannot store");
                in_sync = false;
            }
        }
        if !answer.wanted.is_empty() {
            let entries = answer
                .wanted
                .iter()
                .filter_map(|k| Some((k.clone(), *mine.get(k)?)))
                .collect();
            let request = StoreRequest {
                kind: StoreKind::AntiEntropy,
                entries,
            };
            let pushed: Result<StoreResponse, _> = self
                .replicas
                .call(peer, STORE_PATH, &request, timeout)
                .await;
            in_sync &= pushed.is_ok();
        }
        in_sync
    }
}
