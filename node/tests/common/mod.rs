//! This crate's settings for the shared loopback harness (`caplab-testkit`).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::time::Duration;

pub use caplab_testkit::Cluster;
use caplab_testkit::Harness;

pub const TOKEN: &str = "test-token";

/// Generous: the CI machine has two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn harness() -> Harness {
    Harness {
        node_binary: env!("CARGO_BIN_EXE_caplab-node").into(),
        token: TOKEN,
        deadline: DEADLINE,
        http_timeout: Duration::from_secs(30),
    }
}

/// Starts `n` members (ids 1..=n) as one Raft cluster and waits for its leader.
pub async fn start(n: u64) -> Cluster {
    start_with(n, &[]).await
}

/// [`start`] with extra `caplab-node` arguments for every member.
pub async fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
    let cluster = Cluster::start(harness(), n, extra_args).await;
    cluster.wait_for_leader().await;
    cluster
}

/// Polls `probe` until it yields a value or [`DEADLINE`] passes (then panics naming `what`).
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    caplab_testkit::wait_until(DEADLINE, what, probe).await
}
