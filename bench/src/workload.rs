//! The closed-loop workload: N clients, each issuing one request at a time, for a warm-up and
//! then a fixed measured window. caplab client c is homed on member c mod 3 and sends writes
//! and linearizable reads to the leader once it has learned it (`caplab_api::ClusterClient`,
//! as etcd's client keeps its requests on one member); local reads stay on its home member.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caplab_api::client::ClusterClient;
use caplab_api::kv::Consistency;
use etcd_client::{GetOptions, KvClient};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Write,
    /// caplab `?consistency=linearizable` (the default); etcd's default (linearizable) Range.
    LinearizableRead,
    /// caplab `?consistency=local`; etcd serializable Range.
    LocalRead,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Write, Op::LinearizableRead, Op::LocalRead];

    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::LinearizableRead => "linearizable read",
            Op::LocalRead => "local/serializable read",
        }
    }
}

/// What the clients talk to.
#[derive(Clone)]
pub enum Target {
    /// caplab members; client c is homed on member c mod len and goes to the leader.
    Caplab { cluster: ClusterClient },
    /// etcd KV clients: each is one HTTP/2 connection to one member; client c uses c mod len.
    Etcd { kv: Vec<KvClient> },
}

enum Conn {
    Caplab(ClusterClient),
    // Boxed: the gRPC client is ~400 bytes, the caplab one a handle.
    Etcd(Box<KvClient>),
}

impl Target {
    fn conn(&self, c: usize) -> Conn {
        match self {
            Target::Caplab { cluster } => Conn::Caplab(cluster.homed(c)),
            Target::Etcd { kv } => Conn::Etcd(Box::new(kv[c % kv.len()].clone())),
        }
    }
}

impl Conn {
    /// One request; Err carries a short description of the failure.
    async fn run(&mut self, op: Op, key: &str, value: u64) -> Result<(), String> {
        match self {
            Conn::Caplab(member) => {
                let result = match op {
                    Op::Write => {
                        let value = i64::try_from(value).map_err(|e| e.to_string())?;
                        member.write(key, value).await
                    }
                    Op::LinearizableRead => member.read(key, Consistency::Linearizable).await,
                    Op::LocalRead => member.read(key, Consistency::Local).await,
                };
                result.map(drop).map_err(|e| e.to_string())
            }
            Conn::Etcd(kv) => {
                let result = match op {
                    Op::Write => kv.put(key, value.to_string(), None).await.map(|_| ()),
                    Op::LinearizableRead => kv.get(key, None).await.map(|_| ()),
                    Op::LocalRead => kv
                        .get(key, Some(GetOptions::new().with_serializable()))
                        .await
                        .map(|_| ()),
                };
                result.map_err(|e| e.to_string())
            }
        }
    }
}

/// One measured cell.
pub struct Cell {
    pub ops: usize,
    pub errors: usize,
    /// A sample error message, if any.
    pub first_error: Option<String>,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Cell {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds (p = 1.0 is the max).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }
}

pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Runs `clients` closed-loop clients for `warmup`, then records for `measure`.
pub async fn run(
    target: &Target,
    op: Op,
    clients: usize,
    keys: usize,
    warmup: Duration,
    measure: Duration,
) -> Cell {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut conn = target.conn(c);
        let (recording, stop) = (recording.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
            let mut first_error = None;
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", i % keys);
                i += clients;
                let started = Instant::now();
                let result = conn.run(op, &key, i as u64).await;
                let took = started.elapsed();
                if recording.load(Ordering::Relaxed) {
                    match result {
                        Ok(()) => {
                            ok += 1;
                            latencies.push(took);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                } else if result.is_err() {
                    // Do not spin on a failing target during warm-up.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (ok, errors, latencies, first_error)
        }));
    }
    tokio::time::sleep(warmup).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut cell = Cell {
        ops: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        elapsed,
    };
    for t in tasks {
        if let Ok((ok, errors, latencies, first_error)) = t.await {
            cell.ops += ok;
            cell.errors += errors;
            cell.latencies.extend(latencies);
            if cell.first_error.is_none() {
                cell.first_error = first_error;
            }
        }
    }
    cell.latencies.sort();
    cell
}
