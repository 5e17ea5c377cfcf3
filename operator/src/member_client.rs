//! HTTP client for the member API (client port 8080, peer/admin port 7000).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::FaultSet;

/// Client port of a member.
pub const CLIENT_PORT: u16 = 8080;
/// Peer (Raft + admin) port of a member.
pub const PEER_PORT: u16 = 7000;

/// Errors talking to a member.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// Transport error or timeout.
    #[error("request to {url} failed: {source}")]
    Http {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The member at this address is not the member the call was meant for (`421
    /// Misdirected Request`: another cluster, member id or incarnation). Never retried
    /// blindly: the caller observes again.
    #[error("{url} is not the member the call was meant for ({reason}): {body}")]
    Misdirected {
        /// URL.
        url: String,
        /// `wrong-cluster` | `wrong-member` | `wrong-incarnation` (as the member says), or
        /// `unexpected-incarnation` when its `x-caplab-incarnation` answer header differs.
        reason: String,
        /// Body (truncated).
        body: String,
    },
    /// Non-success status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Body (truncated).
        body: String,
    },
}

impl MemberError {
    /// HTTP status, when the member answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            MemberError::Status { status, .. } => Some(*status),
            MemberError::Misdirected { .. } => Some(MISDIRECTED),
            MemberError::Http { .. } => None,
        }
    }

    /// The member at that address is someone else (see [`MemberError::Misdirected`]).
    pub fn misdirected(&self) -> bool {
        matches!(self, MemberError::Misdirected { .. })
    }
}

/// `421 Misdirected Request`: the member is not the one the call was addressed to.
pub const MISDIRECTED: u16 = 421;
/// Request header: the cluster id (`<namespace>/<name>/<uid>`).
pub const HEADER_CLUSTER: &str = "x-caplab-cluster";
/// Request header: the sender's member id (`0`: the operator or a tool).
pub const HEADER_FROM: &str = "x-caplab-from";
/// Request header: the intended receiver's member id.
pub const HEADER_TO: &str = "x-caplab-to";
/// Request header: the intended receiver's incarnation.
pub const HEADER_TO_INCARNATION: &str = "x-caplab-to-incarnation";
/// Answer header: the answering member's incarnation.
pub const HEADER_INCARNATION: &str = "x-caplab-incarnation";

/// The identity every admin call carries: the admin token and the cluster id the members
/// were started with (`CAPLAB_CLUSTER_ID`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdminAuth {
    /// Bearer token.
    pub token: String,
    /// `<namespace>/<name>/<uid>` of the RegisterCluster.
    pub cluster: String,
}

/// The member an admin call is meant for: where it is and who it must be. A member that is
/// someone else answers 421 ([`MemberError::Misdirected`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipient<'a> {
    /// Pod IP.
    pub ip: &'a str,
    /// Member id.
    pub id: u64,
    /// Incarnation (16 hex digits) from the member's own `/v1/status`, when known.
    pub incarnation: Option<&'a str>,
}

/// One address-book entry: where member `id` is and which incarnation of it lives there.
/// Serialised in the object form `{"addr": "ip:port", "incarnation": "<16 hex>"}`, or as the
/// plain `"ip:port"` string when the member reported no incarnation (an older member image:
/// the receiver then pins whichever incarnation answers first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// `ip:port` of the peer port.
    pub addr: String,
    /// The incarnation the member reported at that address.
    pub incarnation: Option<String>,
}

impl Serialize for PeerEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.incarnation {
            Some(inc) => json!({ "addr": self.addr, "incarnation": inc }).serialize(s),
            None => s.serialize_str(&self.addr),
        }
    }
}

/// An address book: member id -> entry.
pub type AddressBook = BTreeMap<u64, PeerEntry>;

/// Replication progress of a peer, as the leader sees it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerProgress {
    /// Highest log index known replicated.
    pub match_index: Option<u64>,
    /// Entries behind.
    pub lag_entries: Option<u64>,
    /// Milliseconds since last contact.
    pub last_contact_ms: Option<u64>,
}

/// How long the leader may go without hearing from a member before the member counts as
/// cut off from the majority (heartbeats arrive every few hundred milliseconds).
pub const CONTACT_LIMIT_MS: u64 = 2_000;

/// `GET /v1/status`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    /// Member id.
    pub id: u64,
    /// raft | async | sync.
    pub replication: String,
    /// Role.
    pub role: String,
    /// Term.
    pub term: u64,
    /// Leader (or primary) id.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// Leader only: progress per peer id.
    pub peers: BTreeMap<String, PeerProgress>,
    /// The fault set in force.
    pub faults: Option<serde_json::Value>,
    /// Random id drawn when the member's data directory was initialised (16 hex digits);
    /// `None` from member images that predate it.
    pub incarnation: Option<String>,
    /// Primary modes: acknowledged entries this member dropped because a newer primary never
    /// had them (cumulative over the member's life).
    pub discarded_writes: Option<u64>,
}

impl NodeStatus {
    /// As the leader: whether member `id` answered replication recently.
    pub fn hears_from(&self, id: u64) -> bool {
        self.id == id
            || self
                .peers
                .get(&id.to_string())
                .and_then(|p| p.last_contact_ms)
                .is_some_and(|ms| ms < CONTACT_LIMIT_MS)
    }

    /// Is this member the leader (or primary)?
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || self.role == "primary"
    }

    /// The fault set it reports (unparseable = unknown).
    pub fn fault_set(&self) -> Option<FaultSet> {
        match &self.faults {
            None | Some(serde_json::Value::Null) => Some(FaultSet::default()),
            Some(v) => serde_json::from_value::<FaultSet>(v.clone()).ok(),
        }
    }
}

/// Talks to members by pod IP.
#[derive(Clone)]
pub struct MemberClient {
    http: reqwest::Client,
    slow: reqwest::Client,
    client_port: u16,
    peer_port: u16,
}

impl MemberClient {
    /// Builds the client (2 s timeout; 30 s for blocking admin calls).
    pub fn new() -> Result<Self, MemberError> {
        let build = |t| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(t))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .map_err(|source| MemberError::Http {
                    url: String::new(),
                    source,
                })
        };
        Ok(Self {
            http: build(2)?,
            slow: build(30)?,
            client_port: CLIENT_PORT,
            peer_port: PEER_PORT,
        })
    }

    /// Overrides the ports the client connects to (default [`CLIENT_PORT`] for
    /// `/v1/status`, [`PEER_PORT`] for admin calls).
    ///
    /// For tests that stand in for members with local servers; production
    /// always uses the defaults. Only where requests go changes: the peer
    /// addresses the operator hands to members still name [`PEER_PORT`].
    pub fn with_ports(mut self, client_port: u16, peer_port: u16) -> Self {
        self.client_port = client_port;
        self.peer_port = peer_port;
        self
    }

    /// `GET http://<ip>:8080/v1/status`.
    pub async fn status(&self, ip: &str) -> Result<NodeStatus, MemberError> {
        let url = format!("http://{ip}:{}/v1/status", self.client_port);
        let resp = send(&url, self.http.get(&url)).await?;
        resp.json()
            .await
            .map_err(|source| MemberError::Http { url, source })
    }

    /// One admin call: `call.method` `call.path` on the peer port of `to`, with the bearer
    /// token, the identity headers and a JSON body. A 421 (or an answer from another
    /// incarnation than `to.incarnation`) is [`MemberError::Misdirected`]; any other
    /// non-success answer is [`MemberError::Status`].
    async fn admin(
        &self,
        call: AdminCall,
        to: Recipient<'_>,
        auth: &AdminAuth,
        body: serde_json::Value,
    ) -> Result<reqwest::Response, MemberError> {
        let url = format!("http://{}:{}{}", to.ip, self.peer_port, call.path);
        let client = if call.slow { &self.slow } else { &self.http };
        let mut request = client
            .request(call.method, &url)
            .bearer_auth(&auth.token)
            .header(HEADER_CLUSTER, &auth.cluster)
            .header(HEADER_FROM, "0")
            .header(HEADER_TO, to.id.to_string())
            .json(&body);
        if let Some(inc) = to.incarnation {
            request = request.header(HEADER_TO_INCARNATION, inc);
        }
        let resp = send(&url, request).await?;
        check_incarnation(&url, &resp, to.incarnation)?;
        Ok(resp)
    }

    /// `POST /v1/admin/init` (`members`: id -> entry, the receiver among them).
    pub async fn init(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        members: &AddressBook,
    ) -> Result<(), MemberError> {
        let body = json!({ "members": members });
        self.admin(INIT, to, auth, body).await.map(drop)
    }

    /// `PUT /v1/admin/peers`: the address book.
    pub async fn peers(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        peers: &AddressBook,
    ) -> Result<(), MemberError> {
        let body = json!({ "peers": peers });
        self.admin(PEERS, to, auth, body).await.map(drop)
    }

    /// `POST /v1/admin/learners` (to the leader): adds member `id` at `entry`
    /// (`{"id": 4, "addr": <entry>}`).
    pub async fn add_learner(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        id: u64,
        entry: &PeerEntry,
    ) -> Result<(), MemberError> {
        let body = json!({ "id": id, "addr": entry });
        self.admin(LEARNERS, to, auth, body).await.map(drop)
    }

    /// `PUT /v1/admin/voters` (Raft voters; in the primary modes the member set every
    /// secondary of which receives the log, and which sync writes wait for).
    pub async fn set_voters(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        voters: &[u64],
    ) -> Result<(), MemberError> {
        let body = json!({ "voters": voters });
        self.admin(VOTERS, to, auth, body).await.map(drop)
    }

    /// `POST /v1/admin/transfer-leader`.
    pub async fn transfer_leader(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        target: u64,
    ) -> Result<(), MemberError> {
        let body = json!({ "to": target });
        self.admin(TRANSFER_LEADER, to, auth, body).await.map(drop)
    }

    /// `PUT /v1/admin/faults`.
    pub async fn faults(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        set: &FaultSet,
    ) -> Result<(), MemberError> {
        let body = serde_json::to_value(set).unwrap_or_else(|_| json!({}));
        self.admin(FAULTS, to, auth, body).await.map(drop)
    }

    /// `POST /v1/admin/promote` (primary modes); returns the epoch the member is primary of
    /// (`None` when its answer does not say).
    pub async fn promote(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
    ) -> Result<Option<u64>, MemberError> {
        let resp = self.admin(PROMOTE, to, auth, json!({})).await?;
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        Ok(answer.get("epoch").and_then(serde_json::Value::as_u64))
    }

    /// `PUT /v1/admin/primary` (primary modes): follow member `primary` at `entry`
    /// (`{"id": 3, "addr": <entry>}`).
    pub async fn set_primary(
        &self,
        to: Recipient<'_>,
        auth: &AdminAuth,
        primary: u64,
        entry: &PeerEntry,
    ) -> Result<(), MemberError> {
        let body = json!({ "id": primary, "addr": entry });
        self.admin(PRIMARY, to, auth, body).await.map(drop)
    }
}

/// An admin endpoint: method, path, and whether it blocks on Raft (then it gets the 30 s
/// client).
struct AdminCall {
    method: Method,
    path: &'static str,
    slow: bool,
}

impl AdminCall {
    /// A call that waits for Raft (a membership change, an election): the 30 s client.
    const fn blocking(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            slow: true,
        }
    }

    /// A call that only sets local state: the 2 s client.
    const fn quick(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            slow: false,
        }
    }
}

const INIT: AdminCall = AdminCall::blocking(Method::POST, "/v1/admin/init");
const PEERS: AdminCall = AdminCall::quick(Method::PUT, "/v1/admin/peers");
const LEARNERS: AdminCall = AdminCall::blocking(Method::POST, "/v1/admin/learners");
const VOTERS: AdminCall = AdminCall::blocking(Method::PUT, "/v1/admin/voters");
const TRANSFER_LEADER: AdminCall = AdminCall::blocking(Method::POST, "/v1/admin/transfer-leader");
const FAULTS: AdminCall = AdminCall::quick(Method::PUT, "/v1/admin/faults");
const PROMOTE: AdminCall = AdminCall::blocking(Method::POST, "/v1/admin/promote");
const PRIMARY: AdminCall = AdminCall::quick(Method::PUT, "/v1/admin/primary");

/// `text` cut to at most `max` bytes, at a character boundary (a member's answer is not
/// trusted to be ASCII).
fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
    }
    text
}

/// An answer from another incarnation than the one addressed is misdirected too (a member
/// image that does not check the request headers still names itself in the answer).
fn check_incarnation(
    url: &str,
    resp: &reqwest::Response,
    expected: Option<&str>,
) -> Result<(), MemberError> {
    let answered = resp
        .headers()
        .get(HEADER_INCARNATION)
        .and_then(|v| v.to_str().ok());
    match (expected, answered) {
        (Some(want), Some(got)) if want != got => Err(MemberError::Misdirected {
            url: url.to_string(),
            reason: "unexpected-incarnation".into(),
            body: format!("addressed incarnation {want}, answered by {got}"),
        }),
        _ => Ok(()),
    }
}

/// Sends `request` (to `url`); a transport error or a non-success answer is an error.
async fn send(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, MemberError> {
    let resp = request.send().await.map_err(|source| MemberError::Http {
        url: url.to_string(),
        source,
    })?;
    check(url, resp).await
}

async fn check(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, MemberError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = truncated(resp.text().await.unwrap_or_default(), 300);
    if status.as_u16() == MISDIRECTED {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("reason")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "misdirected".into());
        return Err(MemberError::Misdirected {
            url: url.to_string(),
            reason,
            body,
        });
    }
    Err(MemberError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body,
    })
}
