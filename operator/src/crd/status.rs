//! The observed state of a `RegisterCluster` (its `status`): phase, members, leader, faults,
//! failovers and conditions, as the operator last polled them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExperimentStatus, FaultKind, Replication};

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
    /// The replication the members run (raft | async | sync | quorum), recorded when the cluster was
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
    /// Pod name of the leader (or primary); empty while there is none; [`LEADERLESS`] in
    /// quorum mode.
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
    /// quorum: R, W and what last-writer-wins and repair did, summed over the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumSummary>,
    /// Standard conditions: Available, Progressing, Degraded, SpecValid.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the cluster was first Ready (RFC 3339): without a workload, fault
    /// `startAfterSeconds` count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<String>,
    /// The experiment of `spec.workload`: its run and the last verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentStatus>,
}

/// `status.leader` in quorum mode (the LEADER column): every member coordinates.
pub const LEADERLESS: &str = "leaderless";

/// Quorum mode: the quorum sizes and the last-writer-wins counters, as the members report
/// them (Dynamo's N, R, W: DeCandia et al., SOSP 2007).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuorumSummary {
    /// N, the replication factor (Cassandra's name for Dynamo's N): the members in the
    /// membership the members report (the largest one reported).
    // Not `n` on the wire: YAML 1.1 parsers (Helm's among them) read a bare `n` in the CRD's
    // schema as the boolean false, and the API server then refuses the CRD.
    #[serde(rename = "replicationFactor")]
    pub n: u32,
    /// R: the replicas a read waits for.
    pub read_quorum: u32,
    /// W: the durable acknowledgements a write waits for.
    pub write_quorum: u32,
    /// R + W > N: every read quorum meets every write quorum (still not linearizable).
    pub overlapping: bool,
    /// Pods that reach at least max(R, W) replicas (themselves included): they serve reads
    /// and writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serving: Vec<String>,
    /// Source pod (or `member id N` once gone) → acknowledged writes it stamped that lost to
    /// a newer timestamp (last writer wins), as counted by the replica that counted most.
    /// Clock skew makes this move.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lww_lost_writes: std::collections::BTreeMap<String, u64>,
    /// Read repairs, summed over the members (since each started).
    #[serde(default)]
    pub read_repairs: u64,
    /// Keys repaired by anti-entropy, summed over the members (since each started).
    #[serde(default)]
    pub anti_entropy_repaired_keys: u64,
    /// Milliseconds from the last heal until anti-entropy found every replica in sync (the
    /// longest any member reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_convergence_ms: Option<u64>,
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
    /// async: always). False while no leader (or primary) is known. Quorum mode (no leader):
    /// the member reached every replica of its membership on its last call to each.
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
