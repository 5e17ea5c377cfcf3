//! `caplab trace`: the members' recent peer messages as a self-contained HTML space-time
//! diagram (a line per member, an arrow per message, a cross per dropped one), drawn at each
//! member's own clock with a switch to the observer's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::k8s::KubeArgs;
use crate::ui::{lamport, page, server::MAX_WINDOW_SECONDS};

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The RegisterCluster whose members to read (through the API server's pod proxy).
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
    /// The window drawn: the last this many seconds (1 to 60).
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WINDOW_SECONDS))]
    pub window_seconds: u64,
    /// Where to write the page (default trace.html), or the JSON with --json (default
    /// trace.json).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Write the diagram's data as JSON instead of the page (for `caplab report --trace`).
    #[arg(long)]
    pub json: bool,
    /// How long each member may take to answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub async fn run(kube: &KubeArgs, args: TraceArgs) -> Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let members = super::ui::members(kube, args.cluster.as_deref(), &args.addr, timeout).await?;
    let diagram = lamport::collect(&members, args.window_seconds * 1000).await;
    let json = serde_json::to_string(&diagram).context("serialising the diagram")?;
    let (written, default_out) = if args.json {
        (json, "trace.json")
    } else {
        (page::trace_html(&json), "trace.html")
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from(default_out));
    std::fs::write(&out, written).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "caplab trace: {} messages among {} members in the last {} s -> {}",
        diagram.messages.len(),
        diagram.members.len(),
        args.window_seconds,
        out.display()
    );
    for why in &diagram.unread {
        eprintln!("caplab trace: no trace from {why}");
    }
    Ok(if diagram.unread.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NO)
    })
}
