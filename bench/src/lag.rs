//! Replication lag under load: polls the leader/primary's GET /v1/status while a write cell
//! runs and collects every peer's `lagEntries` and `lagMs` (the latter only in async/sync).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use caplab_api::MemberClient;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct LagSamples {
    pub entries: Vec<u64>,
    pub ms: Vec<u64>,
}

impl LagSamples {
    pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
        if sorted.is_empty() {
            return None;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        Some(sorted[i.min(sorted.len() - 1)])
    }
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<LagSamples>,
}

impl Sampler {
    /// Starts polling `member` (the leader or primary) every `every`.
    pub fn start(member: MemberClient, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = LagSamples::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(status) = member.status().await {
                    for peer in status.engine.peers.values() {
                        samples.entries.push(peer.lag_entries);
                        samples.ms.extend(peer.lag_ms);
                    }
                }
                tokio::time::sleep(every).await;
            }
            samples.entries.sort_unstable();
            samples.ms.sort_unstable();
            samples
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> LagSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
