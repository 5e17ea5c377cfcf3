//! caplab operator: the `RegisterCluster` resource and its control loops.
#![warn(missing_docs)]

pub mod backoff;
pub mod controller;
pub mod crd;
pub mod experiment;
pub mod faults;
pub mod lease;
pub mod member_client;
pub mod membership;
pub mod metrics;
pub mod pod_wait;
pub mod resources;
pub mod rollout;
pub mod status;
pub mod telemetry;
pub mod validation;

#[cfg(test)]
mod testing;
