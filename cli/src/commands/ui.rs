//! `caplab ui`: serves a live view of a cluster (members in a ring, links and the faults on
//! them, a timeline of the last minutes) on `--listen` and prints its URL. Members are
//! polled through the API server's pod proxy (`--cluster`) or directly (`--addr`), each at
//! most once a second whatever the number of open pages.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::Member;
use crate::k8s::{ClusterRef, KubeArgs};
use crate::ui::{hub::Hub, server};

#[derive(clap::Args)]
pub struct UiArgs {
    /// The RegisterCluster to watch (its members through the API server's pod proxy).
    #[arg(long, required_unless_present = "addr")]
    pub cluster: Option<String>,
    /// Client (or peer) addresses of the members, host:port, comma separated.
    #[arg(
        long,
        env = "CAPLAB_ADDR",
        value_delimiter = ',',
        conflicts_with = "cluster"
    )]
    pub addr: Vec<String>,
    /// Where to serve the page, host:port (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// How long each member may take to answer a poll, in milliseconds (below the 1 s
    /// period, so a hung member shows as unreachable within two polls).
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(50..=1000))]
    pub timeout_ms: u64,
}

pub async fn run(kube: &KubeArgs, args: UiArgs) -> Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let members = members(kube, args.cluster.as_deref(), &args.addr, timeout).await?;
    let title = args.cluster.unwrap_or_else(|| args.addr.join(","));
    let (listener, addr) = server::bind(&args.listen).await?;
    println!("caplab ui: http://{addr}/ (Ctrl-C to stop)");
    let hub = Hub::spawn(title, members);
    server::serve(listener, hub).await?;
    Ok(ExitCode::SUCCESS)
}

/// The members of RegisterCluster `cluster` (through the pod proxy), or those at `addrs`.
pub async fn members(
    kube: &KubeArgs,
    cluster: Option<&str>,
    addrs: &[String],
    timeout: Duration,
) -> Result<Vec<Member>> {
    match cluster {
        Some(name) => cluster_members(kube, name, timeout).await,
        None => addr_members(addrs, timeout),
    }
}

/// Every member of the RegisterCluster `name`, through the pod proxy.
async fn cluster_members(kube: &KubeArgs, name: &str, timeout: Duration) -> Result<Vec<Member>> {
    let cluster = ClusterRef::connect(kube, name).await?;
    let rc = cluster.read().await?;
    Ok((0..rc.replicas())
        .map(|o| Member::proxied(&cluster, &cluster.pod(o), timeout))
        .collect())
}

/// The members at `addrs`, over one shared connection pool.
fn addr_members(addrs: &[String], timeout: Duration) -> Result<Vec<Member>> {
    let http = reqwest::Client::builder()
        .build()
        .context("building the HTTP client")?;
    addrs
        .iter()
        .map(|a| Member::with_client(a, http.clone(), timeout))
        .collect()
}
