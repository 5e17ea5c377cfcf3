//! One module per `caplab` subcommand: its arguments and its body. `check` lives in
//! [`crate::check`], next to the verdict it prints.

pub mod experiment;
pub mod kv;
pub mod report;
pub mod results;
pub mod status;
pub mod trace;
pub mod ui;
pub mod workload;

use anyhow::{Context, Result};
use caplab_api::kv::Consistency;

/// The async runtime of the commands that talk to members or to Kubernetes.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `--consistency`: the member API's read consistencies, by their wire names.
pub fn consistency_values() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new([
        Consistency::Linearizable.as_str(),
        Consistency::Local.as_str(),
    ])
}

/// `--consistency`'s default: the member API's (linearizable).
pub fn default_consistency() -> &'static str {
    Consistency::default().as_str()
}
