//! A reader's view of a `RegisterCluster`: the fields `caplab` reads, all optional so that a
//! newer or older operator's status still parses. The full type lives in
//! operator/src/crd.rs; the CLI does not depend on the operator crate.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RegisterCluster {
    pub metadata: Metadata,
    pub spec: Spec,
    pub status: Option<ClusterStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
    pub generation: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub replicas: Option<u32>,
    pub replication: Option<String>,
    pub faults: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterStatus {
    pub observed_generation: Option<i64>,
    pub observed_at: Option<String>,
    pub phase: Option<String>,
    pub replication: Option<String>,
    pub replicas: Option<i64>,
    pub ready_replicas: Option<i64>,
    pub ready: Option<String>,
    pub leader: Option<String>,
    pub leader_id: Option<u64>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub members: Vec<MemberStatus>,
    pub faults: Vec<FaultStatus>,
    pub active_faults: Option<String>,
    pub primary_unreachable_since: Option<String>,
    pub last_failover: Option<Failover>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub ordinal: Option<u32>,
    pub id: Option<u64>,
    pub pod_ip: Option<String>,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    pub reachable: bool,
    pub faults: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultStatus {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub targets: Vec<u32>,
    pub groups: Vec<Vec<u32>>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Failover {
    pub time: Option<String>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub possible_loss: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_transition_time: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl RegisterCluster {
    pub fn from_value(value: Value) -> Result<RegisterCluster, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// Member count: the spec's, else the status's, else the members listed.
    pub fn replicas(&self) -> u32 {
        self.spec
            .replicas
            .or_else(|| {
                self.status
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .and_then(|r| u32::try_from(r).ok())
            })
            .or_else(|| {
                self.status
                    .as_ref()
                    .and_then(|s| u32::try_from(s.members.len()).ok())
            })
            .unwrap_or(0)
    }

    /// Pod name of the leader (or primary), if the status names one (quorum mode's
    /// `leaderless` names none).
    pub fn leader_pod(&self) -> Option<&str> {
        let leader = self.status.as_ref()?.leader.as_deref();
        leader.filter(|l| *l != "leaderless")
    }
}
