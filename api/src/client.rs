//! [`MemberClient`]: a typed async client of one member, whose errors say what the outcome
//! contract ([`crate::error`]) says: certainly not applied, or maybe applied.
//!
//! ```no_run
//! # async fn demo() -> Result<(), caplab_api::MemberError> {
//! use caplab_api::{kv::Consistency, MemberClient};
//! let member = MemberClient::at_host(reqwest::Client::new(), "10.0.0.5")?;
//! member.write("x", 5).await?;
//! assert_eq!(member.read("x", Consistency::Linearizable).await?, 5);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::admin::{
    Ack, InitRequest, MemberEntry, PeersRequest, PeersView, PromoteRequest, TransferRequest,
    VotersRequest,
};
use crate::error::ErrorBody;
use crate::faults::{FaultSet, FaultsView};
use crate::identity::{
    Incarnation, Misdirection, PeerAddr, CLUSTER_HEADER, FROM_HEADER, TO_HEADER,
    TO_INCARNATION_HEADER,
};
use crate::kv::{CasBody, Consistency, ValueReply, WriteBody};
use crate::paths::{self, Port};
use crate::status::{Readiness, Status};
use crate::transport::{bearer, BadAddress, HttpTransport, Transport, WireAnswer, WireRequest};
use crate::NodeId;

pub use crate::transport;

pub mod routed;
pub use routed::ClusterClient;

/// Why a call to a member failed, in the terms of the outcome contract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemberError {
    /// `503` in the member's own shape: the operation certainly did not take effect.
    #[error("{target}: not applied: {message}")]
    NotApplied { target: String, message: String },
    /// `504`, another `5xx`, an answer not in the member's shape, or no answer after the
    /// request may have been sent: the operation may or may not have taken effect.
    #[error("{target}: outcome unknown: {message}")]
    Unknown { target: String, message: String },
    /// A `4xx` other than 421: refused, certainly not applied. A compare-and-set whose
    /// comparison failed is `409` with the register's `current` value.
    #[error("{target}: refused with HTTP {status}: {message}")]
    Rejected {
        target: String,
        status: u16,
        message: String,
        current: Option<i64>,
    },
    /// `421`, or an answer from another incarnation than the one addressed: the member at
    /// that address is not the one the call was meant for. Not applied; never retry blindly,
    /// observe again. `reason`: `wrong-cluster`, `wrong-member`, `wrong-incarnation` (as the
    /// member says) or `unexpected-incarnation` (from the answer header).
    #[error("{target} is not the member the call was meant for ({reason}): {message}")]
    Misdirected {
        target: String,
        reason: String,
        message: String,
    },
    /// `501`: this replication mode does not do that (e.g. a Raft leader transfer).
    #[error("{target}: not implemented by this member: {message}")]
    NotImplemented { target: String, message: String },
    /// No connection: the request certainly never reached the member.
    #[error("{target}: unreachable: {message}")]
    Unavailable { target: String, message: String },
    /// A success whose body is not the expected shape: it took effect, but what it answered
    /// is unknown (for a write, treat the value as unknown).
    #[error("{target}: unexpected answer: {message}")]
    BadAnswer { target: String, message: String },
}

impl MemberError {
    /// The HTTP status the member answered, when it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            MemberError::Rejected { status, .. } => Some(*status),
            MemberError::Misdirected { .. } => Some(421),
            MemberError::NotImplemented { .. } => Some(501),
            MemberError::NotApplied { .. } => Some(503),
            _ => None,
        }
    }

    /// Whether the operation may have taken effect (`false`: it certainly did not).
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            MemberError::Unknown { .. } | MemberError::BadAnswer { .. }
        )
    }

    /// A failed compare-and-set: the value the register held.
    pub fn cas_current(&self) -> Option<i64> {
        match self {
            MemberError::Rejected {
                status: 409,
                current,
                ..
            } => *current,
            _ => None,
        }
    }

    /// Whether the member is not the one addressed ([`MemberError::Misdirected`]).
    pub fn is_misdirected(&self) -> bool {
        matches!(self, MemberError::Misdirected { .. })
    }

    /// Which misdirection the member reported (`None` for other errors and for
    /// `unexpected-incarnation`).
    pub fn misdirection(&self) -> Option<Misdirection> {
        match self {
            MemberError::Misdirected { reason, .. } => Misdirection::from_reason(reason),
            _ => None,
        }
    }

    /// The member's (or the transport's) message, without the target.
    pub fn message(&self) -> &str {
        match self {
            MemberError::NotApplied { message, .. }
            | MemberError::Unknown { message, .. }
            | MemberError::Rejected { message, .. }
            | MemberError::Misdirected { message, .. }
            | MemberError::NotImplemented { message, .. }
            | MemberError::Unavailable { message, .. }
            | MemberError::BadAnswer { message, .. } => message,
        }
    }
}

impl From<BadAddress> for MemberError {
    fn from(e: BadAddress) -> Self {
        MemberError::Unavailable {
            target: e.0.clone(),
            message: e.to_string(),
        }
    }
}

/// Who an admin call is meant for: sent as the identity headers on every peer-port request,
/// so that a member that is someone else refuses it (421) instead of acting on it. `None`
/// fields are not sent (a member accepts a request without them, as from curl).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// `<namespace>/<name>/<uid>` of the RegisterCluster (`CAPLAB_CLUSTER_ID`).
    pub cluster: Option<String>,
    /// The member id meant.
    pub member: Option<NodeId>,
    /// The incarnation meant (from the member's own status).
    pub incarnation: Option<Incarnation>,
}

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Register operations, status, metrics and admin calls that set local state.
    pub request: Duration,
    /// Admin calls that wait for replication (init, learners, voters, transfer, promote).
    pub blocking: Duration,
}

impl Default for Timeouts {
    /// 2 s, and 30 s for blocking admin calls.
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(2),
            blocking: Duration::from_secs(30),
        }
    }
}

/// A client of one member: register operations and status on its client port, admin calls
/// (with the bearer token and the [`Recipient`]'s identity headers, `x-caplab-from: 0`) on its
/// peer port. Cheap to clone; build one per member over a shared `reqwest::Client`.
#[derive(Clone)]
pub struct MemberClient {
    transport: Arc<dyn Transport>,
    token: Option<String>,
    recipient: Recipient,
    timeouts: Timeouts,
}

impl fmt::Debug for MemberClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberClient")
            .field("client", &self.transport.target(Port::Client, ""))
            .field("recipient", &self.recipient)
            .finish()
    }
}

/// Whether an admin call waits for replication ([`Timeouts::blocking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Quick,
    Blocking,
}

impl MemberClient {
    /// A client over any transport (e.g. a Kubernetes API server pod proxy).
    pub fn new(transport: impl Transport + 'static) -> Self {
        MemberClient {
            transport: Arc::new(transport),
            token: None,
            recipient: Recipient::default(),
            timeouts: Timeouts::default(),
        }
    }

    /// The member on `host` (pod IP or DNS name) at its standard ports, 8080 and 7000.
    pub fn at_host(http: reqwest::Client, host: &str) -> Result<Self, MemberError> {
        Ok(Self::new(HttpTransport::host(http, host)?))
    }

    /// The member whose client and peer listeners are at these addresses (`host:port`, or
    /// base URLs; see [`HttpTransport::new`]).
    pub fn at(http: reqwest::Client, client: &str, peer: &str) -> Result<Self, MemberError> {
        Ok(Self::new(HttpTransport::new(http, client, peer)?))
    }

    /// Sends `token` as the bearer token of peer-port requests.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends the recipient's identity headers on peer-port requests.
    pub fn with_recipient(mut self, recipient: Recipient) -> Self {
        self.recipient = recipient;
        self
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Where a request to `port` and `path` goes (for messages).
    pub fn target(&self, port: Port, path: &str) -> String {
        self.transport.target(port, path)
    }

    /// Reads register `key` (`GET /v1/kv/<key>`); returns its value.
    pub async fn read(&self, key: &str, consistency: Consistency) -> Result<i64, MemberError> {
        let path = paths::kv_read(key, consistency);
        let reply: ValueReply = self.call(Method::GET, Port::Client, path, None).await?;
        Ok(reply.value)
    }

    /// Writes `value` to register `key` (`PUT /v1/kv/<key>`); returns the value written.
    pub async fn write(&self, key: &str, value: i64) -> Result<i64, MemberError> {
        let body = Some(json(&WriteBody { value }));
        let reply: ValueReply = self
            .call(Method::PUT, Port::Client, paths::kv(key), body)
            .await?;
        Ok(reply.value)
    }

    /// Sets register `key` to `new` if it holds `expected` (`POST /v1/kv/<key>/cas`);
    /// returns the new value. A comparison that failed is [`MemberError::Rejected`] with
    /// status 409 and [`MemberError::cas_current`].
    pub async fn cas(&self, key: &str, expected: i64, new: i64) -> Result<i64, MemberError> {
        let body = Some(json(&CasBody { expected, new }));
        let path = paths::kv_cas(key);
        let reply: ValueReply = self.call(Method::POST, Port::Client, path, body).await?;
        Ok(reply.value)
    }

    /// `GET /v1/status` on the client port.
    pub async fn status(&self) -> Result<Status, MemberError> {
        self.call(Method::GET, Port::Client, paths::STATUS.into(), None)
            .await
    }

    /// `GET /readyz`: ready, or why not (a `503` with the member's reason).
    pub async fn ready(&self) -> Result<Readiness, MemberError> {
        let request = self.request(Method::GET, Port::Client, paths::READYZ.into(), None);
        let answer = self.exchange(request).await?;
        match answer.status {
            200 => Ok(Readiness::Ready),
            503 => Ok(Readiness::NotReady(
                String::from_utf8_lossy(&answer.body).trim().to_string(),
            )),
            _ => Err(self.failure(Port::Client, paths::READYZ, &answer)),
        }
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub async fn metrics(&self) -> Result<String, MemberError> {
        let body = self.text(paths::METRICS).await?;
        Ok(body)
    }

    /// `GET /healthz`: `Ok` while the member serves HTTP.
    pub async fn healthz(&self) -> Result<(), MemberError> {
        self.text(paths::HEALTHZ).await.map(drop)
    }

    /// `POST /v1/admin/init`: bootstraps a cluster of `members` (the receiver among them).
    pub async fn init(&self, members: &BTreeMap<NodeId, PeerAddr>) -> Result<Ack, MemberError> {
        let body = InitRequest {
            members: members.clone(),
        };
        self.admin(Method::POST, paths::ADMIN_INIT, &body, Wait::Blocking)
            .await
    }

    /// `POST /v1/admin/learners` (to the leader): adds member `id` at `addr` as a learner
    /// (primary modes: to the member set).
    pub async fn add_learner(&self, id: NodeId, addr: PeerAddr) -> Result<Ack, MemberError> {
        let body = MemberEntry { id, addr };
        self.admin(Method::POST, paths::ADMIN_LEARNERS, &body, Wait::Blocking)
            .await
    }

    /// `PUT /v1/admin/voters` (to the leader): the voters (primary modes: the member set).
    pub async fn set_voters(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Ack, MemberError> {
        let body = VotersRequest {
            voters: voters.into_iter().collect(),
        };
        self.admin(Method::PUT, paths::ADMIN_VOTERS, &body, Wait::Blocking)
            .await
    }

    /// `POST /v1/admin/transfer-leader`: hands leadership to member `to`; the answer carries
    /// the new epoch. A Raft member answers 501 ([`MemberError::NotImplemented`]).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<Ack, MemberError> {
        let body = TransferRequest { to };
        self.admin(
            Method::POST,
            paths::ADMIN_TRANSFER_LEADER,
            &body,
            Wait::Blocking,
        )
        .await
    }

    /// `POST /v1/admin/promote` (primary modes): makes the member primary in an epoch of at
    /// least `epoch` (`None`: one more than its own); the answer carries the epoch.
    pub async fn promote(&self, epoch: Option<u64>) -> Result<Ack, MemberError> {
        let body = PromoteRequest { epoch };
        self.admin(Method::POST, paths::ADMIN_PROMOTE, &body, Wait::Blocking)
            .await
    }

    /// `PUT /v1/admin/primary` (primary modes): follow primary `id` at `addr`.
    pub async fn follow(&self, id: NodeId, addr: PeerAddr) -> Result<Ack, MemberError> {
        let body = MemberEntry { id, addr };
        self.admin(Method::PUT, paths::ADMIN_PRIMARY, &body, Wait::Quick)
            .await
    }

    /// `PUT /v1/admin/peers`: replaces the address book.
    pub async fn set_peers(
        &self,
        peers: &BTreeMap<NodeId, PeerAddr>,
    ) -> Result<PeersView, MemberError> {
        let body = PeersRequest {
            peers: peers.clone(),
        };
        self.admin(Method::PUT, paths::ADMIN_PEERS, &body, Wait::Quick)
            .await
    }

    /// `GET /v1/admin/peers`.
    pub async fn peers(&self) -> Result<PeersView, MemberError> {
        self.call(Method::GET, Port::Peer, paths::ADMIN_PEERS.into(), None)
            .await
    }

    /// `PUT /v1/admin/faults`: replaces the fault set (`FaultSet::default()` heals).
    pub async fn set_faults(&self, faults: &FaultSet) -> Result<FaultsView, MemberError> {
        self.admin(Method::PUT, paths::ADMIN_FAULTS, faults, Wait::Quick)
            .await
    }

    /// `GET /v1/admin/faults`.
    pub async fn faults(&self) -> Result<FaultsView, MemberError> {
        self.call(Method::GET, Port::Peer, paths::ADMIN_FAULTS.into(), None)
            .await
    }

    /// Any request, answered as it comes (whatever its status): for tests that send what
    /// the typed calls never would. Peer-port requests carry the token and identity headers.
    pub async fn send_raw(
        &self,
        method: Method,
        port: Port,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<WireAnswer, transport::TransportError> {
        let request = self.request(method, port, path.to_string(), body.map(json));
        self.transport.send(request).await
    }

    async fn admin<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        wait: Wait,
    ) -> Result<T, MemberError> {
        let mut request = self.request(method, Port::Peer, path.to_string(), Some(json(body)));
        if wait == Wait::Blocking {
            request.timeout = self.timeouts.blocking;
        }
        let answer = self.exchange(request).await?;
        self.decode(Port::Peer, path, &answer)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        port: Port,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<T, MemberError> {
        let request = self.request(method, port, path.clone(), body);
        let answer = self.exchange(request).await?;
        self.decode(port, &path, &answer)
    }

    async fn text(&self, path: &str) -> Result<String, MemberError> {
        let request = self.request(Method::GET, Port::Client, path.into(), None);
        let answer = self.exchange(request).await?;
        if (200..300).contains(&answer.status) {
            Ok(String::from_utf8_lossy(&answer.body).into_owned())
        } else {
            Err(self.failure(Port::Client, path, &answer))
        }
    }

    fn request(
        &self,
        method: Method,
        port: Port,
        path: String,
        body: Option<Vec<u8>>,
    ) -> WireRequest {
        let headers = match port {
            Port::Client => Vec::new(),
            Port::Peer => self.identity_headers(),
        };
        WireRequest {
            method,
            port,
            path,
            headers,
            body,
            timeout: self.timeouts.request,
        }
    }

    fn identity_headers(&self) -> Vec<(&'static str, String)> {
        let r = &self.recipient;
        let mut headers = vec![(FROM_HEADER, "0".to_string())];
        headers.extend(self.token.as_deref().map(bearer));
        headers.extend(r.cluster.clone().map(|c| (CLUSTER_HEADER, c)));
        headers.extend(r.member.map(|m| (TO_HEADER, m.to_string())));
        headers.extend(
            r.incarnation
                .as_ref()
                .map(|i| (TO_INCARNATION_HEADER, i.to_string())),
        );
        headers
    }

    /// Sends the request; a transport error becomes [`MemberError::Unavailable`] (never
    /// sent) or [`MemberError::Unknown`]; an answer from another incarnation than the one
    /// addressed becomes [`MemberError::Misdirected`].
    async fn exchange(&self, request: WireRequest) -> Result<WireAnswer, MemberError> {
        let target = self.transport.target(request.port, &request.path);
        let answer = self.transport.send(request).await.map_err(|e| {
            if e.maybe_delivered {
                MemberError::Unknown {
                    target: target.clone(),
                    message: e.message,
                }
            } else {
                MemberError::Unavailable {
                    target: target.clone(),
                    message: e.message,
                }
            }
        })?;
        // A 421 carries the member's own reason (wrong-member, wrong-incarnation, …), more
        // precise than the header comparison below: let `decode` classify it.
        if answer.status == 421 {
            return Ok(answer);
        }
        let expected = self.recipient.incarnation.as_ref().map(Incarnation::as_str);
        match (expected, answer.incarnation.as_deref()) {
            (Some(want), Some(got)) if want != got => Err(MemberError::Misdirected {
                target,
                reason: "unexpected-incarnation".into(),
                message: format!("addressed incarnation {want}, answered by {got}"),
            }),
            _ => Ok(answer),
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        port: Port,
        path: &str,
        answer: &WireAnswer,
    ) -> Result<T, MemberError> {
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(port, path, answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| MemberError::BadAnswer {
            target: self.target(port, path),
            message: format!("{e}: {}", excerpt(&answer.body)),
        })
    }

    fn failure(&self, port: Port, path: &str, answer: &WireAnswer) -> MemberError {
        classify(self.target(port, path), answer.status, &answer.body)
    }
}

/// The error an unsuccessful answer means under the outcome contract ([`crate::error`]).
/// Only a `503` in the member's own shape (`{"error": …}`) is trusted to mean "not applied":
/// a gateway's or proxy's 503 may come after the member received the request.
pub fn classify(target: String, status: u16, body: &[u8]) -> MemberError {
    let parsed = ErrorBody::parse(body);
    let message = parsed
        .as_ref()
        .map_or_else(|| excerpt(body), |b| b.error.clone());
    match status {
        421 => MemberError::Misdirected {
            target,
            reason: parsed
                .and_then(|b| b.reason)
                .unwrap_or_else(|| "misdirected".into()),
            message,
        },
        400..=499 => MemberError::Rejected {
            target,
            status,
            current: parsed.and_then(|b| b.current),
            message,
        },
        501 => MemberError::NotImplemented { target, message },
        503 if parsed.is_some() => MemberError::NotApplied { target, message },
        _ => MemberError::Unknown {
            target,
            message: format!("HTTP {status}: {message}"),
        },
    }
}

/// A body for messages: its text, cut to 300 bytes at a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut = (0..=text.len().min(300))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[..cut].to_string()
}

/// A wire type as its JSON body. Serialising these types cannot fail (string keys or
/// integer keys, no non-finite floats reach here unvalidated); a failure sends `null`, which
/// the member refuses with 400.
fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, body: &str) -> MemberError {
        classify("t".into(), status, body.as_bytes())
    }

    #[test]
    fn the_outcome_contract() {
        let mismatch = error(409, r#"{"current":3,"error":"compare-and-set failed"}"#);
        assert_eq!(mismatch.cas_current(), Some(3));
        assert!(!mismatch.maybe_applied());
        let not_applied = error(503, r#"{"error":"no leader","outcome":"not-applied"}"#);
        assert!(
            matches!(not_applied, MemberError::NotApplied { ref message, .. } if message == "no leader")
        );
        assert!(!not_applied.maybe_applied());
        let unknown = error(504, r#"{"error":"timed out","outcome":"unknown"}"#);
        assert!(matches!(unknown, MemberError::Unknown { .. }));
        assert!(unknown.maybe_applied());
        // Not the member's shape: a gateway's 503 may come after the member got the write.
        assert!(error(503, "upstream connect error").maybe_applied());
        assert!(error(500, "").maybe_applied());
        assert!(matches!(
            error(501, r#"{"error":"raft has no leader transfer"}"#),
            MemberError::NotImplemented { .. }
        ));
        let bad = error(400, r#"{"error":"key must not be empty"}"#);
        assert_eq!(bad.status(), Some(400));
        assert_eq!(bad.message(), "key must not be empty");
        // The Kubernetes API server's own refusal: never forwarded.
        let forbidden = error(403, r#"{"kind":"Status","apiVersion":"v1","code":403}"#);
        assert!(!forbidden.maybe_applied());
    }

    #[test]
    fn misdirected_answers_say_why() {
        let e = error(
            421,
            r#"{"error":"this is member 2","reason":"wrong-member"}"#,
        );
        assert!(e.is_misdirected());
        assert_eq!(e.misdirection(), Some(Misdirection::WrongMember));
        assert!(!e.maybe_applied());
        assert_eq!(error(421, "").misdirection(), None);
    }

    #[test]
    fn excerpts_cut_at_character_boundaries() {
        let long = "é".repeat(400);
        let cut = excerpt(long.as_bytes());
        assert!(cut.len() <= 300 && cut.chars().all(|c| c == 'é'));
    }
}
