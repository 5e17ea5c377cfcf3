//! Closed-loop writers for the scaling runs: `clients` tasks, each writing one key at a time
//! (over 100 keys) for a warm-up and then a measured window. caplab writes go straight to the
//! leader (the group size, not the forwarding hop, is what these runs vary); etcd's go to
//! member c mod 3 over shared HTTP/2 connections, as in the main comparison.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caplab_api::MemberClient;
use etcd_client::KvClient;

/// Keys the writers spread over (the main comparison's 100).
const KEYS: u64 = 100;

/// Where the writes go.
#[derive(Clone)]
pub enum Sink {
    /// A caplab leader.
    Caplab(MemberClient),
    /// etcd connections; client c uses connection c mod len.
    Etcd(Vec<KvClient>),
}

impl Sink {
    fn write(&self, client: usize, i: u64) -> impl Future<Output = bool> + Send + 'static {
        let key = format!("k{}", i % KEYS);
        let sink = self.clone();
        async move {
            match sink {
                Sink::Caplab(m) => m.write(&key, i64::try_from(i).unwrap_or(0)).await.is_ok(),
                Sink::Etcd(kv) => {
                    let mut kv = kv[client % kv.len()].clone();
                    kv.put(key, i.to_string(), None).await.is_ok()
                }
            }
        }
    }
}

/// What a measured window gave.
pub struct Writes {
    pub ok: usize,
    pub errors: usize,
    /// Latencies of the acknowledged writes, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Writes {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p` quantile (0..=1) of the latencies in milliseconds (NaN: none).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        crate::workload::percentile_ms(&self.latencies, p)
    }
}

/// Runs `clients` writers against `sink` for `warmup`, then records for `measure`.
pub async fn run(sink: &Sink, clients: usize, warmup: Duration, measure: Duration) -> Writes {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (sink, recording, stop) = (sink.clone(), recording.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
                let mut i = c as u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let acked = sink.write(c, i).await;
                    i += clients as u64;
                    if !recording.load(Ordering::Relaxed) {
                        continue;
                    }
                    if acked {
                        ok += 1;
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                        // Do not spin on a failing member.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut writes = Writes {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed,
    };
    for t in tasks {
        if let Ok((ok, errors, latencies)) = t.await {
            writes.ok += ok;
            writes.errors += errors;
            writes.latencies.extend(latencies);
        }
    }
    writes.latencies.sort();
    writes
}
