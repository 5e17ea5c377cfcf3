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
    StoreKind, StoreRequest, StoreResponse, SyncRequest, SyncResponse, Versioned, STORE_PATH,
    SYNC_PAGE_KEYS, SYNC_PATH,
};
use crate::faults::Faults;
use crate::types::NodeId;

/// The deadline of one anti-entropy call: a page makes the other replica read its key range
/// and store up to [`SYNC_PAGE_KEYS`] versions (one fsync), which a busy machine may not do
/// within a second; a replica that misses it counts as unreachable.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

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
        let pages = pages(&mine);
        let others = self.replicas.others();
        let rounds = others.iter().map(|id| self.sync_with(*id, &mine, &pages));
        let in_sync = futures::future::join_all(rounds).await;
        if in_sync.iter().all(|ok| *ok) {
            if let Some(since_heal) = self.replicas.take_heal() {
                let ms = since_heal.as_millis() as u64;
                tracing::info!(ms, "anti-entropy: every replica in sync after the heal");
                self.replica.counters.converged_after(ms);
            }
        }
    }

    /// Exchanges differences with one replica, page by page; true when both now hold the
    /// same versions.
    async fn sync_with(
        &self,
        peer: NodeId,
        mine: &BTreeMap<String, Versioned>,
        pages: &[SyncRequest],
    ) -> bool {
        for page in pages {
            if !self.sync_page(peer, mine, page).await {
                return false;
            }
        }
        true
    }

    /// One page of [`Self::sync_with`].
    async fn sync_page(
        &self,
        peer: NodeId,
        mine: &BTreeMap<String, Versioned>,
        digest: &SyncRequest,
    ) -> bool {
        let timeout = self.interval.max(SYNC_TIMEOUT);
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

/// `mine`'s digest in pages of at most [`SYNC_PAGE_KEYS`] keys whose ranges together cover
/// every key: the first open below, the last open above (so the other replica also answers the
/// keys this one lacks beyond its own first and last). No keys: one empty, unbounded page.
pub fn pages(mine: &BTreeMap<String, Versioned>) -> Vec<SyncRequest> {
    let keys: Vec<(&String, &Versioned)> = mine.iter().collect();
    let chunks: Vec<_> = keys.chunks(SYNC_PAGE_KEYS).collect();
    let Some(last) = chunks.len().checked_sub(1) else {
        return vec![SyncRequest::default()];
    };
    let mut after = None;
    let mut pages = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let through = (i < last)
            .then(|| chunk.last().map(|(k, _)| (*k).clone()))
            .flatten();
        pages.push(SyncRequest {
            digest: chunk.iter().map(|(k, v)| ((*k).clone(), v.stamp)).collect(),
            after: after.clone(),
            through: through.clone(),
        });
        after = through;
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::wire::Stamp;

    #[test]
    fn pages_cover_every_key_in_bounded_pieces() {
        assert_eq!(pages(&BTreeMap::new()), [SyncRequest::default()]);
        let version = Versioned {
            value: 1,
            stamp: Stamp { ms: 1, node: 1 },
        };
        let mine: BTreeMap<String, Versioned> = (0..2 * SYNC_PAGE_KEYS + 1)
            .map(|i| (format!("k{i:05}"), version))
            .collect();
        let pages = pages(&mine);
        assert_eq!(pages.len(), 3);
        assert!(pages.iter().all(|p| p.digest.len() <= SYNC_PAGE_KEYS));
        assert_eq!((&pages[0].after, &pages[2].through), (&None, &None));
        for pair in pages.windows(2) {
            assert_eq!(pair[0].through, pair[1].after, "contiguous ranges");
            assert_eq!(pair[0].digest.keys().last(), pair[0].through.as_ref());
        }
        let covered: usize = pages.iter().map(|p| p.digest.len()).sum();
        assert_eq!(covered, mine.len());
    }
}
