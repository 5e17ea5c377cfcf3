//! `GET /v1/status` (both ports): what a member is doing, as [`Status`].
//!
//! Fields added after the first release are `#[serde(default)]`, so a client reads the status
//! of an older member image (absent fields read as zero, false or empty).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::faults::{FaultCounters, FaultSet};
use crate::identity::Incarnation;
use crate::NodeId;

/// The replication protocol a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// Raft (openraft): a majority of voters commits every write.
    Raft,
    /// Primary–secondary, asynchronous: the primary acknowledges once durable locally.
    Async,
    /// Primary–secondary, synchronous: the primary acknowledges once every secondary in the
    /// write set holds the write.
    Sync,
    /// Leaderless quorums: every member coordinates; writes wait for W replicas, reads ask R.
    Quorum,
    /// Two-phase commit: the coordinator commits a write once every participant voted yes.
    #[serde(rename = "2pc")]
    TwoPc,
}

impl Replication {
    /// The wire name: `raft`, `async`, `sync`, `quorum` or `2pc`.
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

/// A member's role, in the protocol's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Raft: the leader of its term.
    Leader,
    /// Raft: a voter following a leader (or waiting for one).
    Follower,
    /// Raft: campaigning for leadership.
    Candidate,
    /// Raft: receives the log but does not vote.
    Learner,
    /// Raft: no longer in the membership (removed from the voters and learners).
    Removed,
    /// Raft: shutting down.
    Shutdown,
    /// Primary modes: orders and replicates every write.
    Primary,
    /// Primary modes: applies the primary's log (also before any primary is known).
    Secondary,
    /// Primary modes: was the primary before it restarted, and serves nothing until a
    /// majority confirmed no newer epoch exists.
    Fenced,
    /// Quorum mode: every member stores every key and coordinates what it receives.
    Replica,
    /// 2pc mode: runs every transaction (prepare, decide) and logs its decisions.
    Coordinator,
    /// 2pc mode: prepares, votes and applies what the coordinator decides.
    Participant,
    /// A role this client does not know (a newer member image).
    #[serde(other)]
    Unknown,
}

impl Role {
    /// The wire name (`leader`, `follower`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Removed => "removed",
            Role::Shutdown => "shutdown",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Fenced => "fenced",
            Role::Replica => "replica",
            Role::Coordinator => "coordinator",
            Role::Participant => "participant",
            Role::Unknown => "unknown",
        }
    }

    /// The member that serves writes: a Raft leader, a primary or a 2pc coordinator.
    pub fn is_leader(self) -> bool {
        matches!(self, Role::Leader | Role::Primary | Role::Coordinator)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's replication progress as the leader (or primary) sees it; empty elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The last log index (sequence number) known replicated to the peer (`null`: none yet).
    pub match_index: Option<u64>,
    /// Entries the peer is behind the leader's last one.
    #[serde(default)]
    pub lag_entries: u64,
    /// Primary modes: milliseconds since the oldest entry the peer lacks was appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Milliseconds since the peer last answered (`null`: never).
    pub last_contact_ms: Option<u64>,
}

/// The part of the status a replication engine knows (flattened into [`Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    pub replication: Replication,
    pub role: Role,
    /// Raft term, or the primary's epoch.
    pub term: u64,
    /// The Raft leader or the primary.
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The last entry folded into the snapshot the log is compacted behind (0: none).
    #[serde(default)]
    pub snapshot_index: u64,
    /// Raft voters, or the primary modes' member set.
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Leader (primary) only: progress per peer id.
    #[serde(default, deserialize_with = "member_id_keys")]
    pub peers: BTreeMap<NodeId, PeerStatus>,
    /// Primary modes: acknowledged entries this member dropped because a newer primary never
    /// had them (cumulative over the member's life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded_writes: Option<u64>,
}

/// A map keyed by member id, read from JSON's string keys. serde's flatten (which
/// [`Status::engine`] uses) hands integer keys over as strings, which `u64` keys refuse.
fn member_id_keys<'de, D, T>(d: D) -> Result<BTreeMap<NodeId, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::Error;
    BTreeMap::<String, T>::deserialize(d)?
        .into_iter()
        .map(|(key, value)| match key.parse() {
            Ok(id) => Ok((id, value)),
            Err(_) => Err(D::Error::custom(format!(
                "member id {key:?} is not a non-negative integer"
            ))),
        })
        .collect()
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub id: NodeId,
    /// Drawn when the data directory was first initialised.
    pub incarnation: Incarnation,
    /// The cluster id this member accepts peer messages for (`None`: any).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Whether this member is a voter (Raft) or in the primary's member set; a member removed
    /// from the voters reports `false` and role `learner` or `removed`, never `leader`.
    #[serde(default)]
    pub voter: bool,
    /// Primary modes: this member was the primary before it restarted and serves nothing
    /// until it has confirmed its epoch with a majority (role `fenced` meanwhile).
    #[serde(default)]
    pub fenced: bool,
    #[serde(flatten)]
    pub engine: EngineStatus,
    /// Peer messages refused with 421 because they named another cluster, member or
    /// incarnation.
    #[serde(default)]
    pub misdirected_messages: u64,
    #[serde(default)]
    pub paused: bool,
    /// Milliseconds since the Unix epoch by this member's clock (clock skew included).
    #[serde(default)]
    pub clock_ms: u64,
    #[serde(default)]
    pub faults: FaultSet,
    #[serde(default)]
    pub fault_counters: BTreeMap<NodeId, FaultCounters>,
    /// Quorum mode: N, R, W, reachability and the last-writer-wins counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    /// 2pc mode: transactions, their outcomes, what is in doubt, messages per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twopc: Option<TwoPcStatus>,
    /// The client operations this member answered on its client port (`None`: an older
    /// member). Cumulative: a watcher derives rates from the difference of two polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ops: Option<ClientOps>,
}

/// Client operations (reads, writes, CAS) answered on a member's client port since it
/// started, by outcome, with a latency histogram. An operation a follower forwards counts at
/// the member the client called, once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientOps {
    /// Outcome label → operations: `ok`, `cas-mismatch`, `not-applied` (503), `unknown`
    /// (504), `bad-request`, … (the `outcome` label of `caplab_requests_total`).
    pub outcomes: BTreeMap<String, u64>,
    /// Upper bounds of the latency buckets, in milliseconds, ascending.
    pub latency_bounds_ms: Vec<f64>,
    /// Operations per bucket (not cumulative): one more than the bounds, the last counting
    /// those slower than every bound.
    pub latency_counts: Vec<u64>,
}

/// The two-phase-commit part of `/v1/status` (2pc mode only). Counts are since the member
/// started; times are milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwoPcStatus {
    /// The coordinator this member knows (`None`: not initialised).
    pub coordinator: Option<NodeId>,
    /// Every participant (the coordinator is one too).
    pub participants: Vec<NodeId>,
    /// Transactions this member voted yes on and still holds (decision not yet applied).
    pub prepared: u64,
    /// Coordinator: transactions committed.
    pub committed: u64,
    /// Coordinator: transactions aborted, by cause.
    pub aborted: AbortCounts,
    /// Transactions this member prepared (voted yes on) whose decision it does not know and
    /// whose coordinator it cannot reach: their keys stay held.
    pub in_doubt: u64,
    /// Age of the oldest of them, from its vote (`None`: none in doubt).
    pub oldest_in_doubt_ms: Option<u64>,
    /// The transactions in doubt here, oldest first (for `POST /v1/admin/2pc/decide`).
    #[serde(default)]
    pub in_doubt_transactions: Vec<InDoubt>,
    /// Decisions forced by a person on in-doubt transactions.
    pub heuristic: HeuristicCounts,
    /// Messages sent or received by this member, per phase.
    pub messages: PhaseMessages,
    /// Coordinator: each participant's vote on the last transaction and how long it took.
    #[serde(default, deserialize_with = "member_id_keys")]
    pub last_votes: BTreeMap<NodeId, LastVote>,
}

/// Aborted transactions by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortCounts {
    /// A participant voted no (an injected veto, or a compare-and-set precondition that does
    /// not hold).
    pub veto: u64,
    /// A participant held the key for another prepared transaction.
    pub conflict: u64,
    /// A vote did not arrive before the vote deadline (or the coordinator restarted before
    /// deciding: presumed abort).
    pub timeout: u64,
}

/// Heuristic decisions taken here, and how many the coordinator later contradicted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeuristicCounts {
    pub commit: u64,
    pub abort: u64,
    /// The coordinator's decision, when it arrived, was the other one.
    pub mismatches: u64,
}

/// Messages per phase (sent and received by this member; the coordinator's own participant
/// counts like any other, so one write costs 4 messages per participant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseMessages {
    pub prepare: u64,
    pub vote: u64,
    pub decision: u64,
    pub ack: u64,
    /// Cooperative termination: what-was-decided questions sent or answered.
    pub query: u64,
}

/// A participant's vote as the coordinator last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastVote {
    /// `yes`, `no`, or `missing` (no vote before the deadline).
    pub vote: String,
    /// From sending PREPARE to the vote (to the deadline when missing).
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One transaction a participant holds in doubt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InDoubt {
    pub txid: u64,
    pub key: String,
    /// When this member voted yes, in milliseconds since the Unix epoch (its clock).
    pub since_ms: u64,
}

/// The quorum part of `/v1/status` (quorum mode only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuorumStatus {
    /// N: the members holding every key.
    pub n: usize,
    /// R: answers a read waits for.
    pub read_quorum: usize,
    /// W: durable acknowledgements a write waits for.
    pub write_quorum: usize,
    /// R + W > N: every read quorum meets every write quorum.
    pub overlapping: bool,
    /// Per member (this one included): did it answer its last call.
    #[serde(deserialize_with = "member_id_keys")]
    pub replicas: BTreeMap<NodeId, Reach>,
    pub anti_entropy_interval_ms: u64,
    #[serde(flatten)]
    pub counters: QuorumCounters,
}

/// The last call to one replica, as a quorum member saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reach {
    pub reachable: bool,
    /// Milliseconds since it last answered (`None`: never).
    pub last_contact_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What last-writer-wins and repair did on a quorum member (flattened into
/// [`QuorumStatus`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuorumCounters {
    /// Source member id → writes it stamped that arrived here older than the value held.
    #[serde(default, deserialize_with = "member_id_keys")]
    pub lww_lost_writes: BTreeMap<NodeId, u64>,
    #[serde(default)]
    pub read_repairs: u64,
    #[serde(default)]
    pub anti_entropy_repaired_keys: u64,
    /// Milliseconds from the last heal (a replica answering again) until anti-entropy found
    /// every replica in sync (`None`: no heal since this member started).
    #[serde(default)]
    pub last_convergence_ms: Option<u64>,
}

impl Status {
    /// Whether this member serves writes (a Raft leader or a primary).
    pub fn is_leader(&self) -> bool {
        self.engine.role.is_leader()
    }
}

/// The answer of `GET /readyz`: `200 ready`, or `503 not ready: <why>` (plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Why not, as the member says.
    NotReady(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_modes_use_the_wire_names() {
        for role in [Role::Leader, Role::Fenced, Role::Removed, Role::Secondary] {
            let text = serde_json::to_string(&role).unwrap();
            assert_eq!(text, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&text).unwrap(), role);
        }
        assert_eq!(
            serde_json::from_str::<Role>(r#""witness""#).unwrap(),
            Role::Unknown
        );
        assert_eq!(
            serde_json::to_string(&Replication::Sync).unwrap(),
            r#""sync""#
        );
        assert!(Role::Primary.is_leader() && !Role::Follower.is_leader());
    }

    #[test]
    fn two_phase_commit_names_and_section() {
        assert_eq!(
            serde_json::to_string(&Replication::TwoPc).unwrap(),
            r#""2pc""#
        );
        assert_eq!(Replication::TwoPc.as_str(), "2pc");
        assert!(Role::Coordinator.is_leader() && !Role::Participant.is_leader());
        let section = r#"{"coordinator":1,"participants":[1,2,3],"prepared":1,"committed":4,"aborted":{"veto":1,"conflict":0,"timeout":2},"inDoubt":1,"oldestInDoubtMs":1500,"inDoubtTransactions":[{"txid":7,"key":"x","sinceMs":1796003689125}],"heuristic":{"commit":0,"abort":0,"mismatches":0},"messages":{"prepare":12,"vote":12,"decision":12,"ack":12,"query":0},"lastVotes":{"3":{"vote":"missing","latencyMs":1500,"reason":"the vote deadline passed"}}}"#;
        let parsed: TwoPcStatus = serde_json::from_str(section).unwrap();
        assert_eq!(parsed.last_votes[&3].vote, "missing");
        assert_eq!(serde_json::to_string(&parsed).unwrap(), section);
    }
}
