//! One module per `caplab` subcommand: its arguments and its body. `check` lives in
//! [`crate::check`], next to the verdict it prints.

pub mod kv;
pub mod report;
pub mod status;
pub mod workload;

use anyhow::{Context, Result};

/// The async runtime of the commands that talk to members or to Kubernetes.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
