//! `caplab status`: a RegisterCluster's status from the Kubernetes API (with `--live`, also
//! every member's own `/v1/status` through the API server's pod proxy), or a table of the
//! `/v1/status` of members given by `--addr`. Exit 1 if the cluster is not Ready (or a member
//! is unreachable).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use caplab_api::status::Status;

use crate::client::Member;
use crate::k8s::{ClusterRef, KubeArgs};
use crate::view;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The RegisterCluster's name.
    #[arg(required_unless_present = "addr")]
    pub cluster: Option<String>,
    /// Client (or peer) addresses, host:port, comma separated (instead of a cluster).
    #[arg(
        long,
        env = "CAPLAB_ADDR",
        value_delimiter = ',',
        conflicts_with = "cluster"
    )]
    pub addr: Vec<String>,
    /// Also ask every member for its /v1/status through the API server's pod proxy.
    #[arg(long, short = 'l')]
    pub live: bool,
    /// How long each member may take to answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub async fn run(kube: &KubeArgs, args: StatusArgs) -> Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    match &args.cluster {
        Some(name) => cluster(kube, name, args.live, timeout).await,
        None => members(&args.addr, timeout).await,
    }
}

/// Exit 0 when `ok`, else 1.
fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NO)
    }
}

/// The RegisterCluster's status, and with `live` every member's own `/v1/status`.
async fn cluster(kube: &KubeArgs, name: &str, live: bool, timeout: Duration) -> Result<ExitCode> {
    let cluster = ClusterRef::connect(kube, name).await?;
    let mut rc = cluster.read().await?;
    let live_rows = if live {
        let members = (0..rc.replicas())
            .map(|o| {
                let pod = cluster.pod(o);
                let member = Member::proxied(&cluster, &pod, timeout);
                (member.label().to_string(), Ok(member))
            })
            .collect();
        Some(view::members::rows(&gather(members).await))
    } else {
        None
    };
    if rc.metadata.namespace.is_none() {
        rc.metadata.namespace = Some(cluster.namespace.clone());
    }
    print!("{}", view::cluster::render(&rc, live_rows.as_deref()));
    let ready = rc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Ready");
    Ok(exit(ready))
}

/// The members at `addrs`, one row each.
async fn members(addrs: &[String], timeout: Duration) -> Result<ExitCode> {
    let members = addrs
        .iter()
        .map(|addr| (addr.clone(), Member::new(addr, timeout)))
        .collect();
    let results = gather(members).await;
    print!("{}", view::members::table(&view::members::rows(&results)));
    Ok(exit(results.iter().all(|(_, r)| r.is_ok())))
}

/// Asks every member for its `/v1/status`; a member that could not be addressed keeps its
/// error. Labels are the addresses or pod names.
async fn gather(members: Vec<(String, Result<Member>)>) -> Vec<(String, Result<Status, String>)> {
    let mut results = Vec::with_capacity(members.len());
    for (label, member) in members {
        let result = match member {
            Ok(m) => m.status().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        results.push((label, result));
    }
    results
}
