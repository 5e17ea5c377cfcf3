//! Whether the operator started a fault the workload put in `spec.faults`, or refused it:
//! read from the RegisterCluster's status (`status.faults[]` and the conditions, see
//! crds/registercluster.yaml), polled until it says one or the other.

use std::time::{Duration, Instant};

use crate::k8s::ClusterRef;
use crate::regc::RegisterCluster;

/// What the status says about one fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The operator started it (`state` active; or expired or reverted already, after a
    /// short fault): `since` as the operator wrote it (RFC 3339).
    Started {
        state: String,
        since: Option<String>,
    },
    /// The operator will not start it: why, in the operator's words.
    Refused(String),
    /// Not decided yet (e.g. `pending`: waiting for a leader); the operator's message if any.
    Waiting(Option<String>),
}

/// Reads what `rc`'s status says about fault `name`, which was added by a change that gave
/// the resource generation `generation` (if known).
///
/// Refused: a fault state other than pending/active/expired/reverted, a `False` condition
/// whose message names the fault, or `SpecValid=False` observed at (or after) `generation`:
/// an invalid spec leaves the running cluster, and every fault, as they were.
pub fn confirmation(rc: &RegisterCluster, name: &str, generation: Option<i64>) -> Confirmation {
    let Some(status) = &rc.status else {
        return Confirmation::Waiting(Some("no status yet: is the operator running?".into()));
    };
    let fault = status.faults.iter().find(|f| f.name == name);
    let mut waiting = None;
    if let Some(f) = fault {
        let state = f.state.to_ascii_lowercase();
        match state.as_str() {
            "active" | "expired" | "reverted" => {
                return Confirmation::Started {
                    state,
                    since: f.since.clone(),
                }
            }
            "pending" | "" => waiting = f.message.clone(),
            _ => {
                return Confirmation::Refused(format!(
                    "state {}{}",
                    f.state,
                    f.message
                        .as_deref()
                        .map_or_else(String::new, |m| format!(": {m}"))
                ))
            }
        }
    }
    let observed = match (generation, status.observed_generation) {
        (Some(g), Some(o)) => o >= g,
        _ => false,
    };
    let refusal = status.conditions.iter().find(|c| {
        c.status == "False"
            && (c.message.as_deref().is_some_and(|m| m.contains(name))
                || (c.type_ == "SpecValid" && observed))
    });
    if let Some(c) = refusal {
        return Confirmation::Refused(format!(
            "{}=False ({}): {}",
            c.type_,
            c.reason.as_deref().unwrap_or("-"),
            c.message.as_deref().unwrap_or("")
        ));
    }
    Confirmation::Waiting(waiting)
}

/// Why waiting for a fault ended without it starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// The operator refused it (the input's fault).
    Refused(String),
    /// Still not started at the deadline: the last thing the status said.
    TimedOut(String),
}

/// How often to read the status again.
const POLL: Duration = Duration::from_millis(250);

/// Polls the status until fault `name` started (returns the state and `since`) or the
/// operator refused it, or `timeout` passes.
pub async fn wait(
    target: &ClusterRef,
    name: &str,
    generation: Option<i64>,
    timeout: Duration,
) -> Result<(String, Option<String>), NotStarted> {
    let started = Instant::now();
    let mut last = "the operator has not reported it yet".to_string();
    loop {
        match target.get().await {
            Ok(value) => match RegisterCluster::from_value(value) {
                Ok(rc) => match confirmation(&rc, name, generation) {
                    Confirmation::Started { state, since } => return Ok((state, since)),
                    Confirmation::Refused(why) => return Err(NotStarted::Refused(why)),
                    Confirmation::Waiting(Some(why)) => last = format!("pending: {why}"),
                    Confirmation::Waiting(None) => {}
                },
                Err(e) => last = format!("the resource is not a RegisterCluster: {e}"),
            },
            Err(e) => last = crate::exit::one_line(&e),
        }
        if started.elapsed() >= timeout {
            return Err(NotStarted::TimedOut(last));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A status as the operator writes it (crds/registercluster.yaml), with `faults` and
    /// `conditions` spliced in.
    fn rc(observed: i64, faults: &str, conditions: &str) -> RegisterCluster {
        let yaml = format!(
            r#"
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {{name: demo, namespace: lab, generation: 4}}
spec:
  replicas: 3
  replication: raft
  faults:
    - {{name: caplab-abc123-0-crash, kind: crash, targets: [leader], durationSeconds: 2}}
status:
  observedGeneration: {observed}
  phase: Ready
  replication: raft
  replicas: 3
  readyReplicas: 3
  leader: demo-1
  term: 2
  faults: {faults}
  conditions: {conditions}
"#
        );
        let value: Value = serde_yaml::from_str(&yaml).expect("fixture is YAML");
        RegisterCluster::from_value(value).expect("fixture is a RegisterCluster")
    }

    const NAME: &str = "caplab-abc123-0-crash";
    const VALID: &str = r#"[{type: Available, status: "True", lastTransitionTime: "2025-01-01T10:00:00Z", reason: QuorumAvailable, message: "3/3 voters reachable"}, {type: SpecValid, status: "True", lastTransitionTime: "2025-01-01T10:00:00Z", reason: Valid, message: spec is valid}]"#;

    #[test]
    fn an_active_fault_is_started() {
        let active = rc(
            4,
            r#"[{name: caplab-abc123-0-crash, kind: crash, state: active, targets: [1], since: "2025-01-01T10:00:05Z", until: "2025-01-01T10:00:07Z", specHash: "9f"}]"#,
            VALID,
        );
        assert_eq!(
            confirmation(&active, NAME, Some(4)),
            Confirmation::Started {
                state: "active".into(),
                since: Some("2025-01-01T10:00:05Z".into())
            }
        );
        // A two-second fault may be over before anyone looks: it did run.
        let expired = rc(
            4,
            r#"[{name: caplab-abc123-0-crash, kind: crash, state: expired, targets: [1], since: "2025-01-01T10:00:05Z"}]"#,
            VALID,
        );
        assert!(matches!(
            confirmation(&expired, NAME, Some(4)),
            Confirmation::Started { state, .. } if state == "expired"
        ));
    }

    #[test]
    fn a_pending_fault_or_an_old_status_is_waited_for() {
        let pending = rc(
            4,
            r#"[{name: caplab-abc123-0-crash, kind: crash, state: pending, message: waiting for the cluster to have a leader}]"#,
            VALID,
        );
        assert_eq!(
            confirmation(&pending, NAME, Some(4)),
            Confirmation::Waiting(Some("waiting for the cluster to have a leader".into()))
        );
        // The operator has not seen the change yet.
        let old = rc(3, "[]", VALID);
        assert_eq!(
            confirmation(&old, NAME, Some(4)),
            Confirmation::Waiting(None)
        );
        let value: Value =
            serde_yaml::from_str("metadata: {name: demo}\nspec: {replicas: 3}\n").expect("yaml");
        let no_status = RegisterCluster::from_value(value).expect("minimal");
        assert!(matches!(
            confirmation(&no_status, NAME, Some(1)),
            Confirmation::Waiting(Some(m)) if m.contains("operator")
        ));
    }

    #[test]
    fn an_invalid_spec_refuses_the_fault() {
        let invalid = r#"[{type: Available, status: "True", lastTransitionTime: "2025-01-01T10:00:00Z", reason: QuorumAvailable, message: "3/3 voters reachable"}, {type: SpecValid, status: "False", lastTransitionTime: "2025-01-01T10:00:06Z", reason: Invalid, message: "fault \"caplab-abc123-0-crash\": ordinal 7 out of range (replicas 3)"}]"#;
        // Named in the message: refused, whatever the generation says.
        for (observed, generation) in [(4, Some(4)), (3, Some(4)), (3, None)] {
            match confirmation(&rc(observed, "[]", invalid), NAME, generation) {
                Confirmation::Refused(why) => {
                    assert!(why.starts_with("SpecValid=False (Invalid)"), "{why}");
                    assert!(why.contains("ordinal 7 out of range"), "{why}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Invalid for another reason, once the operator saw our change: nothing will start.
        let other = r#"[{type: SpecValid, status: "False", lastTransitionTime: "2025-01-01T10:00:06Z", reason: Invalid, message: "heartbeatMs (300) must be below electionTimeoutMs (200)"}]"#;
        assert!(matches!(
            confirmation(&rc(4, "[]", other), NAME, Some(4)),
            Confirmation::Refused(why) if why.contains("heartbeatMs")
        ));
        // ... but a stale condition from before our change is not an answer yet.
        assert_eq!(
            confirmation(&rc(3, "[]", other), NAME, Some(4)),
            Confirmation::Waiting(None)
        );
    }

    #[test]
    fn a_fault_state_the_operator_refused_is_a_refusal() {
        let refused = rc(
            4,
            r#"[{name: caplab-abc123-0-crash, kind: crash, state: refused, message: "ordinal 7 out of range"}]"#,
            VALID,
        );
        assert_eq!(
            confirmation(&refused, NAME, Some(4)),
            Confirmation::Refused("state refused: ordinal 7 out of range".into())
        );
    }
}
