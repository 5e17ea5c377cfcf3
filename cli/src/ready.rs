//! Waiting for a cluster to be ready before a workload starts recording: through
//! `--cluster`, the RegisterCluster's status (its `Available` condition, else phase `Ready`);
//! through `--addr`, the members' own `/readyz` (a majority of them ready: a leader is known
//! and serves).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::client::Member;
use crate::exit::one_line;
use crate::k8s::ClusterRef;
use crate::regc::RegisterCluster;

/// What to ask whether the cluster is ready.
pub enum Probe<'a> {
    /// The RegisterCluster's status.
    Cluster(&'a ClusterRef),
    /// The members' `/readyz`.
    Members(&'a [Member]),
}

impl Probe<'_> {
    /// `Ok(())` if ready now, else why not.
    async fn readiness(&self) -> Result<(), String> {
        match self {
            Probe::Cluster(cluster) => {
                let rc = cluster.read().await.map_err(|e| one_line(&e))?;
                cluster_readiness(&rc)
            }
            Probe::Members(members) => {
                let mut answers = Vec::with_capacity(members.len());
                for m in members.iter() {
                    answers.push(m.ready().await);
                }
                members_readiness(&answers)
            }
        }
    }
}

/// How often to ask again.
const POLL: Duration = Duration::from_millis(500);

/// Waits until the cluster is ready, saying once on stderr that it waits and why; fails with
/// the last reason once `timeout` has passed.
pub async fn wait(probe: &Probe<'_>, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let why = match probe.readiness().await {
            Ok(()) => {
                if said {
                    eprintln!(
                        "the cluster is ready after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(());
            }
            Err(why) => why,
        };
        if started.elapsed() >= timeout {
            return Err(anyhow!(
                "the cluster was not ready within {timeout:?} (--ready-timeout): {why}"
            ));
        }
        if !said {
            eprintln!(
                "the cluster is not ready ({why}); waiting up to {timeout:?} (--ready-timeout)"
            );
            said = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ready when the `Available` condition is true (a quorum serves writes, even if Degraded);
/// without that condition, when the phase is `Ready`.
pub fn cluster_readiness(rc: &RegisterCluster) -> Result<(), String> {
    let Some(status) = &rc.status else {
        return Err("it has no status yet: is the operator running?".into());
    };
    let phase = status.phase.as_deref().unwrap_or("unknown");
    match status.conditions.iter().find(|c| c.type_ == "Available") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "phase {phase}, Available={}: {}",
            c.status,
            c.message.as_deref().or(c.reason.as_deref()).unwrap_or("")
        )),
        None if phase == "Ready" => Ok(()),
        None => Err(format!("phase {phase}")),
    }
}

/// Ready when a majority of the members answer `/readyz` with 200.
pub fn members_readiness(answers: &[Result<(), String>]) -> Result<(), String> {
    let ready = answers.iter().filter(|a| a.is_ok()).count();
    if ready * 2 > answers.len() {
        return Ok(());
    }
    let why: Vec<&str> = answers
        .iter()
        .filter_map(|a| a.as_ref().err().map(String::as_str))
        .collect();
    Err(format!(
        "{ready} of {} members ready; {}",
        answers.len(),
        why.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn rc(yaml: &str) -> RegisterCluster {
        let value: Value = serde_yaml::from_str(yaml).expect("yaml");
        RegisterCluster::from_value(value).expect("a RegisterCluster")
    }

    #[test]
    fn a_cluster_is_ready_when_a_quorum_serves() {
        let creating = rc("metadata: {name: demo}\nspec: {replicas: 3}\nstatus:\n  phase: Creating\n  conditions:\n    - {type: Available, status: \"False\", reason: NoLeader, message: no leader elected yet}\n");
        let why = cluster_readiness(&creating).expect_err("not ready");
        assert!(
            why.contains("Creating") && why.contains("no leader elected yet"),
            "{why}"
        );
        let degraded = rc("metadata: {name: demo}\nstatus:\n  phase: Degraded\n  conditions:\n    - {type: Available, status: \"True\", reason: QuorumAvailable, message: 2/3 voters}\n    - {type: Degraded, status: \"True\"}\n");
        assert_eq!(cluster_readiness(&degraded), Ok(()));
        let older = rc("metadata: {name: demo}\nstatus: {phase: Ready}\n");
        assert_eq!(cluster_readiness(&older), Ok(()));
        let no_quorum = rc("metadata: {name: demo}\nstatus: {phase: NoQuorum}\n");
        assert!(cluster_readiness(&no_quorum).is_err());
        let fresh = rc("metadata: {name: demo}\nspec: {replicas: 3}\n");
        let why = cluster_readiness(&fresh).expect_err("no status");
        assert!(why.contains("operator"), "{why}");
    }

    #[test]
    fn members_are_ready_when_a_majority_is() {
        let up = || Ok(());
        let down = |m: &str| Err(format!("{m}: connection refused"));
        assert_eq!(members_readiness(&[up(), up(), down("c")]), Ok(()));
        let why = members_readiness(&[up(), down("b"), down("c")]).expect_err("minority");
        assert!(why.starts_with("1 of 3 members ready"), "{why}");
        assert!(why.contains("b: connection refused"), "{why}");
        assert!(members_readiness(&[]).is_err());
        assert_eq!(members_readiness(&[up()]), Ok(()));
    }
}
