//! Every port and route path of the member API: the one place that knows them.
//!
//! Route constants use axum's `{param}` syntax where a segment varies (`/v1/kv/{key}`), so the
//! member can route on them; clients build concrete paths with the functions here ([`kv`],
//! [`kv_cas`]), which percent-encode the key.

/// The client port: register operations, status, metrics and health.
pub const CLIENT_PORT: u16 = 8080;
/// The peer port: Raft and replication messages between members, and the admin API (bearer
/// token). Status, metrics and health are served here too.
pub const PEER_PORT: u16 = 7000;

/// Which of a member's two listeners a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// [`CLIENT_PORT`].
    Client,
    /// [`PEER_PORT`].
    Peer,
}

impl Port {
    /// The port number a member listens on in a pod (8080 or 7000).
    pub fn number(self) -> u16 {
        match self {
            Port::Client => CLIENT_PORT,
            Port::Peer => PEER_PORT,
        }
    }
}

/// `GET` reads, `PUT` writes a register (client port).
pub const KV: &str = "/v1/kv/{key}";
/// `POST` compare-and-set of a register (client port).
pub const KV_CAS: &str = "/v1/kv/{key}/cas";
/// The query parameter of a read: `linearizable` (default) or `local`.
pub const CONSISTENCY_PARAM: &str = "consistency";

/// `GET` the member's status (both ports).
pub const STATUS: &str = "/v1/status";
/// `GET` Prometheus/OpenMetrics text (both ports).
pub const METRICS: &str = "/metrics";
/// `GET` the member's record of recent peer messages ([`crate::trace::TraceView`]; both
/// ports, read-only like the status).
pub const TRACE: &str = "/v1/trace";
/// `GET` the last few entries of the member's log ([`crate::tail::LogTail`]; both ports).
pub const LOG_TAIL: &str = "/v1/log";
/// `GET` liveness: `200 ok` while the process serves HTTP (both ports).
pub const HEALTHZ: &str = "/healthz";
/// `GET` readiness: `200 ready`, or `503 not ready: <why>` (both ports).
pub const READYZ: &str = "/readyz";

/// Raft `AppendEntries` (peer port, member to member).
pub const RAFT_APPEND: &str = "/raft/append";
/// Raft `RequestVote` (peer port, member to member).
pub const RAFT_VOTE: &str = "/raft/vote";
/// Pre-vote: would the receiver vote? (peer port, member to member; Raft thesis §9.6).
pub const RAFT_PRE_VOTE: &str = "/raft/pre-vote";
/// A leader tells its followers that its log is in a long sync (peer port, leader to
/// follower; caplab's, see the node's `election/leader_syncing.rs`).
pub const RAFT_LEADER_SYNCING: &str = "/raft/leader-syncing";
/// Raft `InstallSnapshot` (peer port, member to member).
pub const RAFT_SNAPSHOT: &str = "/raft/snapshot";
/// A write forwarded to the member that can serve it (peer port, member to member).
pub const FORWARD_WRITE: &str = "/v1/internal/forward/write";
/// A linearizable read forwarded to the member that can serve it (peer port).
pub const FORWARD_READ: &str = "/v1/internal/forward/read";
/// Primary–secondary log replication (peer port, primary to secondary).
pub const REPLICATE: &str = "/v1/internal/replicate";
/// The epoch and primary a member knows, asked by a fenced primary (peer port).
pub const EPOCH: &str = "/v1/internal/epoch";
/// Quorum mode: a replica stores a batch of versioned values (peer port, member to member).
pub const QUORUM_STORE: &str = "/v1/internal/quorum/store";
/// Quorum mode: a coordinator asks a replica for its version of one key (peer port).
pub const QUORUM_FETCH: &str = "/v1/internal/quorum/fetch";
/// Quorum mode: anti-entropy digest exchange (peer port, member to member).
pub const QUORUM_SYNC: &str = "/v1/internal/quorum/sync";

/// 2pc mode: a coordinator asks a participant to prepare a transaction and vote (peer port).
pub const TWOPC_PREPARE: &str = "/v1/internal/2pc/prepare";
/// 2pc mode: a coordinator tells a participant the decision, commit or abort (peer port).
pub const TWOPC_DECIDE: &str = "/v1/internal/2pc/decide";
/// 2pc mode: the coordinator tells a member the membership and that it coordinates (peer port).
pub const TWOPC_MEMBERS: &str = "/v1/internal/2pc/members";
/// 2pc mode: a participant in doubt asks another member what it knows of a transaction
/// (cooperative termination; peer port).
pub const TWOPC_QUERY: &str = "/v1/internal/2pc/query";

/// `POST` bootstrap a cluster ([`crate::admin::InitRequest`]).
pub const ADMIN_INIT: &str = "/v1/admin/init";
/// `POST` add a learner ([`crate::admin::MemberEntry`]).
pub const ADMIN_LEARNERS: &str = "/v1/admin/learners";
/// `PUT` (or `POST`) the voters ([`crate::admin::VotersRequest`]).
pub const ADMIN_VOTERS: &str = "/v1/admin/voters";
/// `POST` hand leadership to a member ([`crate::admin::TransferRequest`]).
pub const ADMIN_TRANSFER_LEADER: &str = "/v1/admin/transfer-leader";
/// `POST` make this member the primary ([`crate::admin::PromoteRequest`]).
pub const ADMIN_PROMOTE: &str = "/v1/admin/promote";
/// `PUT` follow a primary ([`crate::admin::MemberEntry`]).
pub const ADMIN_PRIMARY: &str = "/v1/admin/primary";
/// `PUT` replace / `GET` the address book ([`crate::admin::PeersRequest`]).
pub const ADMIN_PEERS: &str = "/v1/admin/peers";
/// `POST` force a heuristic decision on a transaction this member holds in doubt (2pc mode;
/// [`crate::admin::HeuristicRequest`]).
pub const ADMIN_TWOPC_DECIDE: &str = "/v1/admin/2pc/decide";
/// `PUT` replace / `GET` the fault set ([`crate::faults::FaultSet`]).
pub const ADMIN_FAULTS: &str = "/v1/admin/faults";

/// The path of register `key` (percent-encoded): `/v1/kv/<key>`.
pub fn kv(key: &str) -> String {
    format!("/v1/kv/{}", encode_segment(key))
}

/// The compare-and-set path of register `key`: `/v1/kv/<key>/cas`.
pub fn kv_cas(key: &str) -> String {
    format!("{}/cas", kv(key))
}

/// The read path of register `key` with its consistency query.
pub fn kv_read(key: &str, consistency: crate::kv::Consistency) -> String {
    format!("{}?{CONSISTENCY_PARAM}={}", kv(key), consistency.as_str())
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so a key holding `/`, `?`, `%` or spaces stays one segment.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Consistency;

    #[test]
    fn keys_become_one_encoded_segment() {
        assert_eq!(kv("x"), "/v1/kv/x");
        assert_eq!(kv_cas("a/b c"), "/v1/kv/a%2Fb%20c/cas");
        assert_eq!(kv("k%é"), "/v1/kv/k%25%C3%A9");
        assert_eq!(
            kv_read("x", Consistency::Local),
            "/v1/kv/x?consistency=local"
        );
    }

    #[test]
    fn route_patterns_match_the_built_paths() {
        assert_eq!(KV.replace("{key}", "x"), kv("x"));
        assert_eq!(KV_CAS.replace("{key}", "x"), kv_cas("x"));
        assert_eq!((Port::Client.number(), Port::Peer.number()), (8080, 7000));
    }
}
