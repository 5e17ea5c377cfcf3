//! Outgoing member-to-member traffic: Raft RPCs over HTTP/JSON on the peer port, through the
//! fault layer, to addresses from the member's address book (pushed by the operator, so a
//! member that comes back with a new pod IP is reachable again without DNS).
//!
//! Every message names the cluster, the sender, and the member and incarnation it is meant
//! for (see `identity.rs`); an address now held by another member, or by the same id after
//! its data was wiped, answers 421 instead of taking part in Raft.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use caplab_api::paths;
use caplab_api::trace::{MESSAGE_HEADER, SENT_HEADER};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::faults::{Direction, Faults, Verdict};
pub use crate::identity::FROM_HEADER;
use crate::identity::{
    Identity, Incarnation, PeerAddr, CLUSTER_HEADER, INCARNATION_HEADER, TO_HEADER,
    TO_INCARNATION_HEADER,
};
use crate::trace::{Note, Trace};
use crate::types::{Entry, Node, NodeId, TypeConfig};

/// Where a member is and, once known, which incarnation is expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BookEntry {
    addr: String,
    incarnation: Option<Incarnation>,
}

/// id → `host:port` of each member's peer listener, and the incarnation expected there: given
/// by the admin API's object form, or pinned from the member's first answer.
#[derive(Clone, Default)]
pub struct AddressBook(Arc<RwLock<BTreeMap<NodeId, BookEntry>>>);

impl AddressBook {
    pub fn get(&self, id: NodeId) -> Option<String> {
        self.read(id).map(|e| e.addr)
    }

    /// The incarnation expected at member `id`, if known.
    pub fn incarnation(&self, id: NodeId) -> Option<Incarnation> {
        self.read(id).and_then(|e| e.incarnation)
    }

    fn read(&self, id: NodeId) -> Option<BookEntry> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Records addresses; an entry without an incarnation keeps the one already known (a
    /// member that moved to a new address keeps its incarnation).
    pub fn merge(&self, entries: impl IntoIterator<Item = (NodeId, impl IntoPeerAddr)>) {
        let mut book = self.0.write().unwrap_or_else(|p| p.into_inner());
        for (id, entry) in entries {
            let entry = entry.into_peer_addr();
            let known = book.get(&id).and_then(|e| e.incarnation.clone());
            let incarnation = entry.incarnation().cloned().or(known);
            let addr = entry.addr().to_string();
            book.insert(id, BookEntry { addr, incarnation });
        }
    }

    /// Makes `entries` the whole book: members not listed are forgotten at once (their pod is
    /// gone, and its address may soon belong to another member), listed ones are recorded as
    /// by [`AddressBook::merge`].
    pub fn replace(&self, entries: impl IntoIterator<Item = (NodeId, impl IntoPeerAddr)>) {
        let entries: Vec<(NodeId, PeerAddr)> = entries
            .into_iter()
            .map(|(id, e)| (id, e.into_peer_addr()))
            .collect();
        {
            let mut book = self.0.write().unwrap_or_else(|p| p.into_inner());
            book.retain(|id, _| entries.iter().any(|(listed, _)| listed == id));
        }
        self.merge(entries);
    }

    /// Pins the incarnation a member answered with, unless one is already expected there.
    fn pin(&self, id: NodeId, incarnation: Incarnation) {
        let mut book = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = book.get_mut(&id) {
            if entry.incarnation.is_none() {
                tracing::info!(peer = id, %incarnation, "pinned the incarnation of a peer");
                entry.incarnation = Some(incarnation);
            }
        }
    }

    pub fn all(&self) -> BTreeMap<NodeId, String> {
        let book = self.0.read().unwrap_or_else(|p| p.into_inner());
        book.iter().map(|(id, e)| (*id, e.addr.clone())).collect()
    }

    /// The incarnations known, by member id.
    pub fn incarnations(&self) -> BTreeMap<NodeId, Incarnation> {
        let book = self.0.read().unwrap_or_else(|p| p.into_inner());
        book.iter()
            .filter_map(|(id, e)| Some((*id, e.incarnation.clone()?)))
            .collect()
    }
}

/// What the address book takes: an admin-API entry, or a plain `host:port` (as the primary
/// replicates its book).
pub trait IntoPeerAddr {
    fn into_peer_addr(self) -> PeerAddr;
}

impl IntoPeerAddr for PeerAddr {
    fn into_peer_addr(self) -> PeerAddr {
        self
    }
}

impl IntoPeerAddr for String {
    fn into_peer_addr(self) -> PeerAddr {
        PeerAddr::Plain(self)
    }
}

/// A peer as a message is addressed: the address to use when the book has none, and the
/// incarnation the Raft membership recorded for it (preferred over the book's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub fallback_addr: Option<&'a str>,
    pub incarnation: Option<&'a Incarnation>,
    /// What the message carries, for the message trace.
    pub note: Note,
}

impl<'a> From<&'a Node> for Target<'a> {
    fn from(node: &'a Node) -> Self {
        Target {
            fallback_addr: Some(&node.addr),
            incarnation: node.incarnation.as_ref(),
            note: Note::default(),
        }
    }
}

/// Everything outgoing peer traffic needs; shared by every connection.
pub struct PeerClient {
    pub id: NodeId,
    pub identity: Identity,
    pub http: reqwest::Client,
    pub token: String,
    pub addresses: AddressBook,
    pub faults: Arc<Faults>,
    /// Recent peer messages sent and received (`GET /v1/trace`).
    pub trace: Arc<Trace>,
    last_contact: Mutex<BTreeMap<NodeId, Instant>>,
}

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("message to member {0} dropped by an injected fault")]
    Dropped(NodeId),
    #[error("no address known for member {0}")]
    NoAddress(NodeId),
    #[error("could not reach member {peer}: {source}")]
    Connect {
        peer: NodeId,
        source: reqwest::Error,
    },
    #[error("request to member {peer} failed: {source}")]
    Transport {
        peer: NodeId,
        source: reqwest::Error,
    },
    #[error("member {peer} answered {status}: {body}")]
    Status {
        peer: NodeId,
        status: u16,
        body: String,
    },
    /// The answer's head arrived, its body did not (the request was handled).
    #[error("the leader's answer was cut off: {source}")]
    CutOff {
        peer: NodeId,
        source: reqwest::Error,
    },
}

/// A peer's whole answer, to relay unchanged to a client: HTTP status code and (JSON) body.
/// The HTTP layer turns it into a response (`api/error.rs`).
#[derive(Debug)]
pub struct Relayed {
    pub status: u16,
    pub body: Bytes,
}

impl PeerError {
    /// True when the request certainly never reached the peer.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            PeerError::Dropped(_) | PeerError::NoAddress(_) | PeerError::Connect { .. }
        )
    }

    /// True when the peer handled the request but its answer was lost on the way.
    pub fn cut_off(&self) -> bool {
        matches!(self, PeerError::CutOff { .. })
    }
}

impl PeerClient {
    pub fn new(
        identity: Identity,
        token: String,
        addresses: AddressBook,
        faults: Arc<Faults>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Self {
            id: identity.id,
            identity,
            http,
            token,
            addresses,
            faults,
            trace: Arc::default(),
            last_contact: Mutex::default(),
        }
    }

    /// Milliseconds since each peer last answered a Raft RPC from this member.
    pub fn last_contact_ms(&self) -> BTreeMap<NodeId, u64> {
        let now = Instant::now();
        let contacts = self.last_contact.lock().unwrap_or_else(|p| p.into_inner());
        contacts
            .iter()
            .map(|(id, at)| (*id, now.duration_since(*at).as_millis() as u64))
            .collect()
    }

    /// POSTs `body` as JSON to `path` on a peer (through the fault layer) and returns the raw
    /// response; `fallback_addr` is used when the address book has no entry.
    pub async fn post(
        &self,
        peer: NodeId,
        fallback_addr: Option<&str>,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<reqwest::Response, PeerError> {
        let target = Target {
            fallback_addr,
            incarnation: None,
            note: Note::default(),
        };
        self.post_to(peer, target, path, body, timeout).await
    }

    /// [`PeerClient::post`], reading the whole answer to relay it (an operation forwarded to
    /// the leader or primary).
    pub async fn relay(
        &self,
        peer: NodeId,
        fallback_addr: Option<&str>,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<Relayed, PeerError> {
        let response = self.post(peer, fallback_addr, path, body, timeout).await?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|source| PeerError::CutOff { peer, source })?;
        Ok(Relayed { status, body })
    }

    /// [`PeerClient::post`] to a peer as `target` addresses it. The request names the
    /// cluster, this member, the peer and the incarnation expected there (once known); the
    /// incarnation the peer answers with is pinned when none was known.
    pub async fn post_to(
        &self,
        peer: NodeId,
        target: Target<'_>,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<reqwest::Response, PeerError> {
        let request = |url: String| self.http.post(url).json(body);
        self.send(peer, target, path, request, timeout).await
    }

    /// Asks a peer's `/healthz`, which pins its incarnation (when none is known yet).
    pub async fn probe(&self, peer: NodeId, timeout: Duration) -> Result<(), PeerError> {
        let request = |url: String| self.http.get(url);
        self.send(peer, Target::default(), paths::HEALTHZ, request, timeout)
            .await
            .map(drop)
    }

    async fn send(
        &self,
        peer: NodeId,
        target: Target<'_>,
        path: &str,
        request: impl FnOnce(String) -> reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, PeerError> {
        let addr = self
            .addresses
            .get(peer)
            .or_else(|| target.fallback_addr.map(str::to_string))
            .ok_or(PeerError::NoAddress(peer))?;
        let message = self
            .trace
            .outgoing(&self.faults, self.id, peer, path, target.note);
        let dropped = self.faults.filter(peer, Direction::Outgoing).await == Verdict::Drop;
        // Health probes are not protocol messages: kept out of the diagram.
        if path != paths::HEALTHZ {
            self.trace.sent(&self.faults, message, dropped);
        }
        if dropped {
            return Err(PeerError::Dropped(peer));
        }
        let expected = target
            .incarnation
            .cloned()
            .or_else(|| self.addresses.incarnation(peer));
        let mut request = request(format!("http://{addr}{path}"))
            .bearer_auth(&self.token)
            .header(FROM_HEADER, self.id)
            .header(TO_HEADER, peer)
            .header(MESSAGE_HEADER, message.number)
            .header(SENT_HEADER, message.sent_ms);
        if let Some(cluster) = &self.identity.cluster {
            request = request.header(CLUSTER_HEADER, cluster);
        }
        if let Some(incarnation) = &expected {
            request = request.header(TO_INCARNATION_HEADER, incarnation.as_str());
        }
        let response = request.timeout(timeout).send().await.map_err(|source| {
            if source.is_connect() {
                PeerError::Connect { peer, source }
            } else {
                PeerError::Transport { peer, source }
            }
        })?;
        if expected.is_none() && response.status() != reqwest::StatusCode::MISDIRECTED_REQUEST {
            let answered = response
                .headers()
                .get(INCARNATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if let Some(incarnation) = answered {
                self.addresses.pin(peer, incarnation);
            }
        }
        Ok(response)
    }

    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        peer: NodeId,
        node: &Node,
        path: &str,
        (request, note): (&Req, Note),
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>> {
        let target = Target {
            note,
            ..node.into()
        };
        let response = self
            .post_to(peer, target, path, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                e if e.not_sent() => RPCError::Unreachable(Unreachable::new(&e)),
                e => RPCError::Network(NetworkError::new(&e)),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let e = PeerError::Status {
                peer,
                status: status.as_u16(),
                body,
            };
            // A paused or partitioned receiver refuses the message: treat it as lost on the way.
            // So is one meant for another member or incarnation (421): whoever answered at
            // that address must not take part in this member's Raft.
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            response.json().await.map_err(|source| {
                RPCError::Network(NetworkError::new(&PeerError::Transport { peer, source }))
            })?;
        self.last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, Instant::now());
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(peer, node.clone(), e)))
    }
}

/// Creates one [`PeerConnection`] per replication target.
#[derive(Clone)]
pub struct Network(pub Arc<PeerClient>);

pub struct PeerConnection {
    client: Arc<PeerClient>,
    target: NodeId,
    node: Node,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection {
            client: self.0.clone(),
            target,
            node: node.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        if let Some(fits) = entries_that_fit(&rpc.entries, MAX_APPEND_BYTES) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits),
            ));
        }
        let note = Note {
            term: Some(rpc.vote.leader_id().get_term()),
            indexes: rpc
                .entries
                .first()
                .zip(rpc.entries.last())
                .map(|(first, last)| (first.log_id.index, last.log_id.index)),
        };
        self.client
            .rpc(
                self.target,
                &self.node,
                paths::RAFT_APPEND,
                (&rpc, note),
                &option,
            )
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.client
            .rpc(
                self.target,
                &self.node,
                paths::RAFT_SNAPSHOT,
                (&rpc, term_of(&rpc.vote)),
                &option,
            )
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.client
            .rpc(
                self.target,
                &self.node,
                paths::RAFT_VOTE,
                (&rpc, term_of(&rpc.vote)),
                &option,
            )
            .await
    }
}

/// The trace note of a Raft message carrying `vote`: its term.
fn term_of(vote: &openraft::Vote<NodeId>) -> Note {
    Note {
        term: Some(vote.leader_id().get_term()),
        indexes: None,
    }
}

/// AppendEntries bodies above this many bytes are split. openraft 0.9 gives each request one
/// heartbeat interval, and one entry may carry a whole batch of writes, so a follower catching
/// up must get the log in pieces it can take within that deadline.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// `None` when `entries` fit in `limit` bytes (or there is only one); else how many leading
/// entries do (at least one), as the hint openraft retries with.
fn entries_that_fit(entries: &[Entry], limit: usize) -> Option<u64> {
    if entries.len() < 2 {
        return None;
    }
    let mut total = 0;
    for (fits, entry) in entries.iter().enumerate() {
        total += match &entry.payload {
            EntryPayload::Normal(batch) => batch.approx_bytes(),
            _ => 256,
        };
        if total > limit {
            return Some((fits as u64).max(1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Batch, Command, LogId};

    fn entry(index: u64, commands: usize) -> Entry {
        let write = Command::Write {
            key: "k".repeat(100),
            value: 1,
        };
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch(vec![write; commands])),
        }
    }

    #[test]
    fn a_replaced_book_forgets_members_not_listed_and_keeps_known_incarnations() {
        let incarnation: Incarnation = "0123456789abcdef".parse().expect("valid incarnation");
        let book = AddressBook::default();
        book.merge([
            (
                1,
                PeerAddr::Pinned {
                    addr: "10.0.0.1:7000".into(),
                    incarnation: Some(incarnation.clone()),
                },
            ),
            (2, PeerAddr::Plain("10.0.0.2:7000".into())),
        ]);
        book.replace([(1, PeerAddr::Plain("10.0.0.9:7000".into()))]);
        assert_eq!(book.get(1).as_deref(), Some("10.0.0.9:7000"));
        assert_eq!(
            book.incarnation(1),
            Some(incarnation),
            "a moved member keeps its incarnation"
        );
        assert_eq!(
            book.get(2),
            None,
            "a member whose pod went away is forgotten"
        );
    }

    #[test]
    fn large_appends_are_split_at_whole_entries() {
        // Each entry counts 16 × (100-byte key + 64) = 2,624 bytes.
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 16)).collect();
        assert_eq!(entries_that_fit(&entries, 100_000), None);
        assert_eq!(entries_that_fit(&entries, 8_000), Some(3));
        assert_eq!(
            entries_that_fit(&entries, 100),
            Some(1),
            "at least one entry"
        );
        assert_eq!(
            entries_that_fit(&entries[..1], 100),
            None,
            "one entry always goes"
        );
    }
}
