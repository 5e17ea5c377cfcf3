//! Outgoing member-to-member traffic: Raft RPCs over HTTP/JSON on the peer port, through the
//! fault layer, to addresses from the member's address book (pushed by the operator, so a
//! member that comes back with a new pod IP is reachable again without DNS).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::faults::{Faults, Verdict};
use crate::types::{Entry, NodeId, TypeConfig};

/// The header that names the sending member, so the receiver can apply its own fault filter.
pub const FROM_HEADER: &str = "x-caplab-from";

/// id → `host:port` of each member's peer listener.
#[derive(Clone, Default)]
pub struct AddressBook(Arc<RwLock<BTreeMap<NodeId, String>>>);

impl AddressBook {
    pub fn get(&self, id: NodeId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn merge(&self, entries: impl IntoIterator<Item = (NodeId, String)>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(entries);
    }

    pub fn all(&self) -> BTreeMap<NodeId, String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything outgoing peer traffic needs; shared by every connection.
pub struct PeerClient {
    pub id: NodeId,
    pub http: reqwest::Client,
    pub token: String,
    pub addresses: AddressBook,
    pub faults: Arc<Faults>,
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
}

impl PeerError {
    /// True when the request certainly never reached the peer.
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            PeerError::Dropped(_) | PeerError::NoAddress(_) | PeerError::Connect { .. }
        )
    }
}

impl PeerClient {
    pub fn new(id: NodeId, token: String, addresses: AddressBook, faults: Arc<Faults>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Self {
            id,
            http,
            token,
            addresses,
            faults,
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
        let addr = self
            .addresses
            .get(peer)
            .or_else(|| fallback_addr.map(str::to_string))
            .ok_or(PeerError::NoAddress(peer))?;
        if self.faults.filter(peer).await == Verdict::Drop {
            return Err(PeerError::Dropped(peer));
        }
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .bearer_auth(&self.token)
            .header(FROM_HEADER, self.id)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|source| {
                if source.is_connect() {
                    PeerError::Connect { peer, source }
                } else {
                    PeerError::Transport { peer, source }
                }
            })?;
        Ok(response)
    }

    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        peer: NodeId,
        node: &BasicNode,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let response = self
            .post(peer, Some(&node.addr), path, request, option.hard_ttl())
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
    node: BasicNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
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
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if let Some(fits) = entries_that_fit(&rpc.entries, MAX_APPEND_BYTES) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits),
            ));
        }
        self.client
            .rpc(self.target, &self.node, "/raft/append", &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.client
            .rpc(self.target, &self.node, "/raft/snapshot", &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.client
            .rpc(self.target, &self.node, "/raft/vote", &rpc, &option)
            .await
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
