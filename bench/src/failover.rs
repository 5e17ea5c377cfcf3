//! Failover: SIGKILL the leader, then time until the first write the surviving members
//! acknowledge. Probes go round-robin to the survivors with a short per-request timeout, so a
//! request stuck on the dead leader does not hide a new one. The killed member is restarted on
//! its data (and the cluster waited on until healthy) before the next trial.

use std::time::{Duration, Instant};

use anyhow::Context;
use caplab_api::client::Timeouts;
use caplab_api::MemberClient;

use crate::cluster::{Caplab, Etcd};

/// Per-probe timeout.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Give up on a trial after this long.
const GIVE_UP: Duration = Duration::from_secs(30);

pub struct Trial {
    pub to_first_write: Duration,
    pub probes: usize,
}

/// A cluster to run failover trials on.
pub enum Target<'a> {
    Caplab(&'a mut Caplab),
    Etcd(&'a mut Etcd),
}

impl Target<'_> {
    /// One trial: kill the leader, time the first acknowledged write, restart the killed member.
    pub async fn trial(&mut self) -> anyhow::Result<Trial> {
        match self {
            Target::Caplab(cluster) => caplab_trial(cluster).await,
            Target::Etcd(cluster) => etcd_trial(cluster).await,
        }
    }
}

async fn caplab_trial(cluster: &mut Caplab) -> anyhow::Result<Trial> {
    let leader = cluster.leader().await.context("no caplab leader")?;
    let probe_timeouts = Timeouts {
        request: PROBE_TIMEOUT,
        blocking: PROBE_TIMEOUT,
    };
    let survivors: Vec<MemberClient> = (0..cluster.members.len())
        .filter(|&i| i != leader)
        .map(|i| cluster.members[i].clone().with_timeouts(probe_timeouts))
        .collect();
    // Warm the connections to the survivors so the first probe measures failover, not connect.
    for s in &survivors {
        let _ = s.healthz().await;
    }
    cluster.kill(leader);
    let killed = Instant::now();
    let result = first_write(killed, |probe| {
        let member = survivors[probe % survivors.len()].clone();
        let value = i64::try_from(probe).unwrap_or(i64::MAX);
        async move { member.write("failover", value).await.is_ok() }
    })
    .await;
    cluster.restart(leader).await?;
    result
}

async fn etcd_trial(cluster: &mut Etcd) -> anyhow::Result<Trial> {
    let leader = cluster.leader().await.context("no etcd leader")?;
    let mut survivors = Vec::new();
    for i in (0..cluster.endpoints.len()).filter(|&i| i != leader) {
        survivors.push(cluster.connect(i, PROBE_TIMEOUT).await?.kv_client());
    }
    for s in &mut survivors {
        let _ = s.get("failover", None).await;
    }
    cluster.kill(leader);
    let killed = Instant::now();
    let result = first_write(killed, |probe| {
        // Clients are cheap handles on one connection each.
        let mut kv = survivors[probe % survivors.len()].clone();
        async move { kv.put("failover", probe.to_string(), None).await.is_ok() }
    })
    .await;
    cluster.restart(leader).await?;
    result
}

/// Probes (`attempt(n)` for n = 1, 2, ...) until one write is acknowledged or [`GIVE_UP`].
async fn first_write<F, Fut>(killed: Instant, mut attempt: F) -> anyhow::Result<Trial>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut probes = 0;
    loop {
        probes += 1;
        if attempt(probes).await {
            return Ok(Trial {
                to_first_write: killed.elapsed(),
                probes,
            });
        }
        if killed.elapsed() > GIVE_UP {
            anyhow::bail!("no write succeeded within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
