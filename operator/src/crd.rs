//! The `RegisterCluster` custom resource (group `caplab.dev`, version `v1alpha1`).
// kube's `printcolumn(...)` repeats `type_ = "string"`, which clippy flags.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod experiment;
mod status;

pub use experiment::{
    ExperimentPhase, ExperimentStatus, FaultWindow, OperationCounts, OperationMix, Verdict,
    WorkloadSpec, MAX_DURATION_SECONDS,
};
pub use status::{
    Condition, FailoverStatus, FaultState, FaultStatus, LeaderRecord, MemberStatus, Phase,
    PrimaryRecord, QuorumSummary, RegisterClusterStatus, LEADERLESS,
};

/// API group of the resource.
pub const GROUP: &str = "caplab.dev";
/// Field manager used for every server-side apply.
pub const MANAGER: &str = "caplab-operator";

/// The most members a RegisterCluster may have (the schema's `replicas` maximum; the UI's ring
/// and the member's `--read-quorum`/`--write-quorum` range assume it too).
pub const MAX_REPLICAS: i32 = 9;

/// Desired state of a replicated-register cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "caplab.dev",
    version = "v1alpha1",
    kind = "RegisterCluster",
    plural = "registerclusters",
    shortname = "regc",
    namespaced,
    status = "RegisterClusterStatus",
    // Pod names `<name>-<ordinal>` are hostnames (at most 63 characters): the longest name is
    // `validation::max_name_len()`, 61 (a test checks). The character rules (the name is also
    // the client Service's, a DNS-1035 label) are the operator's alone: a regex on a string
    // of unknown length could exceed the CEL cost budget and get the CRD refused.
    validation = Rule::new("size(self.metadata.name) <= 61").message("name too long: the longest name allowed is 61 characters (pod names <name>-<ordinal> must be hostnames of at most 63)"),
    // The operator says the same with the fault's name (`experiment::validate`).
    validation = Rule::new("!has(self.spec.workload) || !has(self.spec.faults) || self.spec.faults.all(f, !has(f.startAfterSeconds) || f.startAfterSeconds < self.spec.workload.durationSeconds)").message("a fault starts after the workload ends: lower its startAfterSeconds below workload.durationSeconds"),
    printcolumn(
        name = "Replication",
        type_ = "string",
        json_path = ".status.replication"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Term", type_ = "integer", json_path = ".status.term"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Faults", type_ = "string", json_path = ".status.activeFaults"),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.experiment.summary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RegisterClusterSpec {
    /// Number of members (1-9).
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Replication protocol; immutable after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replication is immutable"))]
    pub replication: Replication,
    /// Member image (default: the operator's --node-image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of each member container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Persistent storage per member (without it members use an emptyDir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Raft election timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 60000))]
    pub election_timeout_ms: Option<u64>,
    /// Raft heartbeat interval in milliseconds (must be below electionTimeoutMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 30000))]
    pub heartbeat_ms: Option<u64>,
    /// quorum: R, the replicas a read asks and waits for (1 ≤ R ≤ replicas; default a
    /// majority). R + W > replicas makes every read quorum overlap every write quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub read_quorum: Option<i32>,
    /// quorum: W, the durable acknowledgements a write waits for (1 ≤ W ≤ replicas; default a
    /// majority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub write_quorum: Option<i32>,
    /// async/sync: seconds the primary may be unreachable before a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub failover_after_seconds: Option<u64>,
    /// Topology spread constraints for the member pods, in the Kubernetes Pod
    /// `topologySpreadConstraints` shape (e.g. `{maxSkew: 1, topologyKey:
    /// topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}`); a constraint
    /// without `labelSelector` selects this cluster's members. Members are also spread over
    /// nodes by a preferred pod anti-affinity on `kubernetes.io/hostname` without this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "topology_spread_schema")]
    pub topology_spread_constraints: Vec<serde_json::Value>,
    /// Faults to inject.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g.name == f.name))").message("fault names must be unique"))]
    pub faults: Vec<FaultSpec>,
    /// An experiment: clients run against the members while the faults follow their
    /// `startAfterSeconds` schedule, and a Job checks the history (omitted: no load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSpec>,
}

/// Schema of `topologySpreadConstraints`: the required fields are checked by the API server,
/// the rest is kept as given and checked by the operator (`SpecValid`).
fn topology_spread_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 8,
        "items": {
            "type": "object",
            "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"],
            "properties": {
                "maxSkew": {"type": "integer", "minimum": 1},
                "topologyKey": {"type": "string", "minLength": 1},
                "whenUnsatisfiable": {"type": "string", "enum": ["DoNotSchedule", "ScheduleAnyway"]}
            },
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}

/// Replication protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// Raft consensus (openraft).
    #[default]
    Raft,
    /// Asynchronous primary-secondary replication.
    Async,
    /// Synchronous primary-secondary replication.
    Sync,
    /// Leaderless quorums (Dynamo-style): every member coordinates, a write waits for W
    /// replicas, a read asks R; last writer wins by timestamp.
    Quorum,
    /// Two-phase commit: the member given init coordinates; every write is a transaction
    /// every participant must vote yes on (Gray 1978). A down coordinator blocks.
    #[serde(rename = "2pc")]
    TwoPc,
}

impl Replication {
    /// The wire name (`raft`, `async`, `sync`, `quorum`).
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Raft => "raft",
            Replication::Async => "async",
            Replication::Sync => "sync",
            Replication::Quorum => "quorum",
            Replication::TwoPc => "2pc",
        }
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Container resources (quantities as strings, e.g. `100m`, `64Mi`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Resources {
    /// Requests, e.g. `{cpu: 100m, memory: 64Mi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// Persistent storage for members.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Volume size, e.g. `1Gi`.
    pub size: String,
    /// Storage class (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Kind of an injected fault.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// Cut links between groups of members.
    Partition,
    /// Keep the target pods down.
    Crash,
    /// Freeze the target members.
    Pause,
    /// Delay the target members' peer messages.
    Delay,
    /// Drop a fraction of the target members' peer messages.
    Loss,
    /// Offset the target members' clocks.
    ClockSkew,
    /// 2pc: the target participants vote no on a share (`probability`) of prepares.
    Veto,
}

impl FaultKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::ClockSkew => "clockSkew",
            FaultKind::Veto => "veto",
        }
    }
}

/// One named fault.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'partition' || (has(self.groups) && size(self.groups) >= 2)").message("partition needs at least two groups"),
    validation = Rule::new("self.kind == 'partition' || (has(self.targets) && size(self.targets) >= 1)").message("targets must not be empty"),
    validation = Rule::new("self.kind != 'delay' || has(self.latencyMs)").message("delay needs latencyMs"),
    validation = Rule::new("self.kind != 'loss' || (has(self.probability) && self.probability >= 0.0 && self.probability <= 1.0)").message("loss needs probability in [0,1]"),
    validation = Rule::new("self.kind != 'clockSkew' || has(self.offsetMs)").message("clockSkew needs offsetMs"),
    validation = Rule::new("self.kind != 'veto' || (has(self.probability) && self.probability >= 0.0 && self.probability <= 1.0)").message("veto needs probability in [0,1]")
)]
pub struct FaultSpec {
    /// Unique name of the fault.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// What to inject.
    pub kind: FaultKind,
    /// Target members: ordinals, or `leader` / `followers` (resolved when the fault starts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub targets: Vec<Target>,
    /// Partition groups, e.g. `[[0], [1, 2]]` or `[[leader], [followers]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub groups: Vec<Vec<Target>>,
    /// delay: latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub latency_ms: Option<u64>,
    /// delay: jitter in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub jitter_ms: Option<u64>,
    /// loss: drop probability in [0, 1]; veto: the share of prepares voted no, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub probability: Option<f64>,
    /// clockSkew: clock offset in milliseconds (negative: behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -86400000, max = 86400000))]
    pub offset_ms: Option<i64>,
    /// Seconds the fault stays active (omitted: until removed from the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub duration_seconds: Option<u64>,
    /// Seconds to wait before starting the fault, counted from the start of the workload
    /// when there is one, else from when the cluster was first Ready (omitted or 0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub start_after_seconds: Option<u64>,
}

/// A fault target: a member ordinal or a symbolic role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Member ordinal.
    Ordinal(u32),
    /// The leader (or primary) when the fault starts.
    Leader,
    /// Every member except the leader when the fault starts.
    Followers,
    /// In partition groups: every member not named in another group.
    Others,
    /// Anything else (reported as invalid by validation).
    Unknown(String),
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Ordinal(o) => s.serialize_u32(*o),
            Target::Leader => s.serialize_str("leader"),
            Target::Followers => s.serialize_str("followers"),
            Target::Others => s.serialize_str("others"),
            Target::Unknown(x) => s.serialize_str(x),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Int(i) => match u32::try_from(i) {
                Ok(o) => Target::Ordinal(o),
                Err(_) => Target::Unknown(i.to_string()),
            },
            Raw::Str(s) => match s.as_str() {
                "leader" | "primary" => Target::Leader,
                "followers" | "secondaries" => Target::Followers,
                "others" => Target::Others,
                other => match other.parse::<u32>() {
                    Ok(o) => Target::Ordinal(o),
                    Err(_) => Target::Unknown(s),
                },
            },
        })
    }
}

impl JsonSchema for Target {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "member ordinal, or leader | followers | others"
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ordinal(o) => write!(f, "{o}"),
            Target::Leader => f.write_str("leader"),
            Target::Followers => f.write_str("followers"),
            Target::Others => f.write_str("others"),
            Target::Unknown(x) => f.write_str(x),
        }
    }
}

#[cfg(test)]
mod tests;
