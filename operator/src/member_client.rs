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
            MemberError::Http { .. } => None,
        }
    }
}

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

    /// One admin call: `call.method` `call.path` on the peer port with the bearer token and a
    /// JSON body; any non-success answer is an error.
    async fn admin(
        &self,
        call: AdminCall,
        ip: &str,
        token: &str,
        body: serde_json::Value,
    ) -> Result<(), MemberError> {
        let url = format!("http://{ip}:{}{}", self.peer_port, call.path);
        let client = if call.slow { &self.slow } else { &self.http };
        let request = client
            .request(call.method, &url)
            .bearer_auth(token)
            .json(&body);
        send(&url, request).await.map(|_| ())
    }

    /// `POST /v1/admin/init`.
    pub async fn init(
        &self,
        ip: &str,
        token: &str,
        members: &BTreeMap<u64, String>,
    ) -> Result<(), MemberError> {
        let body = json!({ "members": id_map(members) });
        self.admin(INIT, ip, token, body).await
    }

    /// `PUT /v1/admin/peers`.
    pub async fn peers(
        &self,
        ip: &str,
        token: &str,
        peers: &BTreeMap<u64, String>,
    ) -> Result<(), MemberError> {
        let body = json!({ "peers": id_map(peers) });
        self.admin(PEERS, ip, token, body).await
    }

    /// `POST /v1/admin/learners`.
    pub async fn add_learner(
        &self,
        ip: &str,
        token: &str,
        id: u64,
        addr: &str,
    ) -> Result<(), MemberError> {
        let body = json!({ "id": id, "addr": addr });
        self.admin(LEARNERS, ip, token, body).await
    }

    /// `PUT /v1/admin/voters`.
    pub async fn set_voters(
        &self,
        ip: &str,
        token: &str,
        voters: &[u64],
    ) -> Result<(), MemberError> {
        let body = json!({ "voters": voters });
        self.admin(VOTERS, ip, token, body).await
    }

    /// `POST /v1/admin/transfer-leader`.
    pub async fn transfer_leader(&self, ip: &str, token: &str, to: u64) -> Result<(), MemberError> {
        let body = json!({ "to": to });
        self.admin(TRANSFER_LEADER, ip, token, body).await
    }

    /// `PUT /v1/admin/faults`.
    pub async fn faults(&self, ip: &str, token: &str, set: &FaultSet) -> Result<(), MemberError> {
        let body = serde_json::to_value(set).unwrap_or_else(|_| json!({}));
        self.admin(FAULTS, ip, token, body).await
    }

    /// `POST /v1/admin/promote` (primary modes).
    pub async fn promote(&self, ip: &str, token: &str) -> Result<(), MemberError> {
        self.admin(PROMOTE, ip, token, json!({})).await
    }

    /// `PUT /v1/admin/primary` (primary modes).
    pub async fn set_primary(
        &self,
        ip: &str,
        token: &str,
        id: u64,
        addr: &str,
    ) -> Result<(), MemberError> {
        let body = json!({ "id": id, "addr": addr });
        self.admin(PRIMARY, ip, token, body).await
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

fn id_map(m: &BTreeMap<u64, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
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
    let mut body = resp.text().await.unwrap_or_default();
    body.truncate(300);
    Err(MemberError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body,
    })
}
