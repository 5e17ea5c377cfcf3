//! The `RegisterCluster` custom resource (group `caplab.dev`, version `v1alpha1`).
// kube's `printcolumn(...)` repeats `type_ = "string"`, which clippy flags.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// API group of the resource.
pub const GROUP: &str = "caplab.dev";
/// Field manager used for every server-side apply.
pub const MANAGER: &str = "caplab-operator";

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
}

impl Replication {
    /// The wire name (`raft`, `async`, `sync`).
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Raft => "raft",
            Replication::Async => "async",
            Replication::Sync => "sync",
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
    validation = Rule::new("self.kind != 'clockSkew' || has(self.offsetMs)").message("clockSkew needs offsetMs")
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
    /// loss: drop probability in [0, 1].
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

/// Observed state: what the members reported when the operator last polled them
/// (`observedAt`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterClusterStatus {
    /// `metadata.generation` of the spec the operator last processed (valid or not: see the
    /// `SpecValid` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the operator last polled the members (RFC 3339, UTC). It is refreshed about every
    /// second while anything changes and every 10 s when the cluster is Ready and quiet: an
    /// observedAt older than ~30 s means the operator is not running and this status is old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// What the cluster is doing: Creating | Ready | Degraded | NoQuorum | Failed (see the
    /// phase values). An invalid spec change does not change the phase (see `SpecValid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The replication the members run (raft | async | sync), recorded when the cluster was
    /// created; a rejected change of `spec.replication` does not alter it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// Member count the operator converges to (`spec.replicas` of the last valid spec).
    #[serde(default)]
    pub replicas: i32,
    /// Members that are healthy: reachable, replicating, voters (every member in the primary
    /// modes) and at most a few entries behind.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `readyReplicas/replicas`, for printing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Pod name of the leader (or primary); empty while there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Member id of the leader (or primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    /// The most recent leader (or primary) seen, kept while there is none, so that a leader
    /// change names the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_leader: Option<LeaderRecord>,
    /// Highest term (Raft) or epoch (primary modes) any member reports. It can be above the
    /// leader's term: members that campaign without winning raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Leader's commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<u64>,
    /// The cluster was initialised (init sent and a leader seen).
    #[serde(default)]
    pub bootstrapped: bool,
    /// Next member id to hand out (ids are never reused).
    #[serde(default)]
    pub next_member_id: u64,
    /// Voter ids as reported by the leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<u64>,
    /// Learner ids as reported by the leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<u64>,
    /// Per-member observations.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Per-fault state.
    #[serde(default)]
    pub faults: Vec<FaultStatus>,
    /// Names of the active faults, for printing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_faults: Option<String>,
    /// async/sync: when the primary was first seen unreachable (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unreachable_since: Option<String>,
    /// async/sync: the last failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverStatus>,
    /// async/sync: the primary as last observed, kept while it is down (a failover's loss
    /// bound starts from its last sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_primary: Option<PrimaryRecord>,
    /// Standard conditions: Available, Progressing, Degraded, SpecValid.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A leader (or primary) as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// Pod name.
    pub name: String,
    /// Member id.
    pub id: u64,
    /// Its term (Raft) or epoch (primary modes).
    pub term: u64,
}

/// Cluster phase: what the cluster is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Pods starting; the cluster is not bootstrapped yet (no leader seen).
    Creating,
    /// Every wanted member is healthy (reachable, replicating, a voter, caught up) and a
    /// leader (or primary) exists.
    Ready,
    /// A leader (or primary) exists but some member is down, unreachable, not replicating
    /// or lagging.
    Degraded,
    /// No leader (or primary): writes are refused.
    NoQuorum,
    /// The very first spec is invalid, so nothing was created (see `SpecValid`). An invalid
    /// change to an existing cluster never sets Failed.
    Failed,
}

impl Phase {
    /// Name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::NoQuorum => "NoQuorum",
            Phase::Failed => "Failed",
        }
    }
}

/// One member as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// Ordinal.
    pub ordinal: u32,
    /// Member id (changes when the member's data is lost).
    pub id: u64,
    /// Pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// leader | follower | candidate | learner | primary | secondary | unknown | down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Term (Raft) or epoch (primary modes) the member reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<u64>,
    /// Applied index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    /// Entries behind the leader's commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// The operator polled this member's `GET /v1/status` successfully at `observedAt`.
    /// Says nothing about the member's links to its peers (the operator's traffic is never
    /// cut by a fault): see `replicating`.
    #[serde(default)]
    pub reachable: bool,
    /// The leader (or primary) acknowledged this member within the last 2 s, as it reported
    /// at `observedAt`: Raft: the leader has a matched log index for it and last heard from
    /// it under 2 s ago; async/sync: the primary last heard an acknowledgement from this
    /// secondary under 2 s ago. For the leader (or primary) itself: it can commit writes
    /// (Raft: it heard from a majority of the voters within 2 s; sync: from every secondary;
    /// async: always). False while no leader (or primary) is known.
    #[serde(default)]
    pub replicating: bool,
    /// Kinds of the faults active on this member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
}

/// State of one fault.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FaultState {
    /// Waiting for its targets to be resolvable (e.g. no leader yet).
    Pending,
    /// In force.
    Active,
    /// durationSeconds elapsed.
    Expired,
    /// Removed from the spec and healed.
    Reverted,
}

/// Status of one fault.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// Fault name.
    pub name: String,
    /// Fault kind.
    pub kind: FaultKind,
    /// State.
    pub state: FaultState,
    /// Resolved target ordinals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<u32>,
    /// Resolved partition groups (ordinals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Vec<u32>>,
    /// When it became active (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When it expires / expired / was reverted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Fingerprint of the spec entry, to restart the fault when it is edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Why it is pending, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A primary as the operator last observed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryRecord {
    /// Pod name.
    pub name: String,
    /// Member id.
    pub id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its last sequence number: every write up to it may have been acknowledged.
    pub last_seq: u64,
    /// Its `discardedWrites` counter then (cumulative over the member's life).
    pub discarded_writes: u64,
    /// When it was observed (RFC 3339).
    pub observed_at: String,
}

/// The last primary failover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverStatus {
    /// When (RFC 3339).
    pub time: String,
    /// Old primary id (0: never observed).
    pub from: u64,
    /// Old primary's pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    /// New primary id.
    pub to: u64,
    /// New primary's pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_name: Option<String>,
    /// The epoch the new primary took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Upper bound on the acknowledged writes lost: `acknowledgedSeq - promotedSeq`. Writes
    /// the old primary acknowledged after `acknowledgedSeq` was observed are not in it;
    /// `discardedWrites` gives the actual number once the old primary returns.
    pub possible_loss: u64,
    /// The old primary's last sequence number as last observed before the promotion.
    #[serde(default)]
    pub acknowledged_seq: u64,
    /// The promoted member's last durable sequence number at promotion.
    #[serde(default)]
    pub promoted_seq: u64,
    /// The old primary's `discardedWrites` counter when it was last observed before the
    /// failover (the baseline of `discardedWrites`).
    #[serde(default)]
    pub discarded_before: u64,
    /// Acknowledged writes the old primary actually dropped when it rejoined (its own
    /// count); unset until it is back and following the new primary, and for good when it
    /// came back without its data (as a new member id: the number cannot be known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded_writes: Option<u64>,
    /// Set once the failover's outcome is known: why `discardedWrites` is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<String>,
}

/// A standard condition (metav1.Condition shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Available | Progressing | Degraded | SpecValid.
    #[serde(rename = "type")]
    pub type_: String,
    /// True | False | Unknown.
    pub status: String,
    /// Last time the status changed (RFC 3339).
    pub last_transition_time: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests;
