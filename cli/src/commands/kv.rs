//! `caplab kv get|put|cas`: one register operation through a member's client API, directly
//! (`--addr`) or through the Kubernetes API server's pod proxy (`--cluster`). Prints the
//! member's JSON answer; exit 1 with `HTTP <status>: <body>` on stderr if it was not a 2xx.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::client::{Member, RawOp};
use crate::exit::bad_input;
use crate::k8s::{ClusterRef, KubeArgs};

/// Which member a `kv` command talks to.
#[derive(clap::Args)]
pub struct MemberArgs {
    /// A member's client address, host:port.
    #[arg(long, env = "CAPLAB_ADDR", required_unless_present = "cluster")]
    addr: Option<String>,
    /// A RegisterCluster: reach its member through the Kubernetes API server's pod proxy
    /// (takes precedence over --addr).
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER")]
    cluster: Option<String>,
    /// With --cluster: the member's ordinal (default: the leader the status names, else 0).
    #[arg(long, requires = "cluster")]
    member: Option<u32>,
}

#[derive(clap::Subcommand)]
pub enum KvOp {
    /// GET /v1/kv/{key}.
    Get {
        key: String,
        #[command(flatten)]
        to: MemberArgs,
        #[arg(long, default_value = super::default_consistency(), value_parser = super::consistency_values())]
        consistency: String,
    },
    /// PUT /v1/kv/{key}.
    Put {
        key: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
        #[command(flatten)]
        to: MemberArgs,
    },
    /// POST /v1/kv/{key}/cas.
    Cas {
        key: String,
        #[arg(allow_negative_numbers = true)]
        expected: i64,
        #[arg(allow_negative_numbers = true)]
        new: i64,
        #[command(flatten)]
        to: MemberArgs,
    },
}

/// How long one operation may take, end to end.
const TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(kube: &KubeArgs, op: KvOp) -> Result<ExitCode> {
    let (to, raw) = match &op {
        KvOp::Get {
            key,
            to,
            consistency,
        } => {
            let consistency = consistency.parse().map_err(|e| bad_input(anyhow!("{e}")))?;
            (to, RawOp::Read { key, consistency })
        }
        KvOp::Put { key, value, to } => (to, RawOp::Write { key, value: *value }),
        KvOp::Cas {
            key,
            expected,
            new,
            to,
        } => (
            to,
            RawOp::Cas {
                key,
                expected: *expected,
                new: *new,
            },
        ),
    };
    let (status, body) = member(kube, to)
        .await?
        .raw(&raw)
        .await
        .context("the request failed")?;
    let shown = if body == Value::Null {
        format!("HTTP {status}")
    } else {
        body.to_string()
    };
    if (200..300).contains(&status) {
        println!("{shown}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("HTTP {status}: {shown}");
        Ok(ExitCode::from(crate::exit::NO))
    }
}

/// The member the command talks to: `--addr`, or with `--cluster` the pod of `--member`
/// (default: the leader the status names, else ordinal 0).
async fn member(kube: &KubeArgs, to: &MemberArgs) -> Result<Member> {
    let Some(name) = &to.cluster else {
        let addr = to
            .addr
            .as_deref()
            .ok_or_else(|| anyhow!("give --addr or --cluster"))?;
        return Member::new(addr, TIMEOUT);
    };
    let cluster = ClusterRef::connect(kube, name).await?;
    let pod = match to.member {
        Some(ordinal) => cluster.pod(ordinal),
        None => cluster
            .read()
            .await?
            .leader_pod()
            .map_or_else(|| cluster.pod(0), str::to_string),
    };
    Ok(Member::proxied(&cluster, &pod, TIMEOUT))
}
