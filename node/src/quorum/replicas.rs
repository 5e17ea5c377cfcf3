//! The other replicas as this member sees them: the membership, calls to them over the peer
//! port (through the fault layer and with the identity headers, like every peer message), and
//! whether each answered its last call. A replica that answers again after failing marks a
//! heal, from which anti-entropy measures its time to convergence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::network::PeerClient;
use crate::types::NodeId;

/// A call to a replica that got no usable answer.
#[derive(Debug, Clone, Error)]
pub enum CallError {
    /// The message certainly did not take effect (dropped by a fault, refused, no address).
    #[error("{0}")]
    NotDelivered(String),
    /// The message may have taken effect (sent, but the answer was lost or late).
    #[error("{0}")]
    MaybeDelivered(String),
}

/// The last call to one replica (the wire type).
pub use caplab_api::status::Reach;

#[derive(Default)]
struct Contact {
    last_ok: Option<Instant>,
    failed: Option<String>,
}

pub struct Replicas {
    pub id: NodeId,
    pub peers: Arc<PeerClient>,
    members: RwLock<BTreeSet<NodeId>>,
    contacts: Mutex<BTreeMap<NodeId, Contact>>,
    /// When a replica answered again after failing, until anti-entropy sees every replica in
    /// sync.
    healed_at: Mutex<Option<Instant>>,
}

impl Replicas {
    pub fn new(id: NodeId, peers: Arc<PeerClient>, members: BTreeSet<NodeId>) -> Self {
        Self {
            id,
            peers,
            members: RwLock::new(members),
            contacts: Mutex::default(),
            healed_at: Mutex::default(),
        }
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_members(&self, members: BTreeSet<NodeId>) {
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = members;
    }

    /// Every member but this one.
    pub fn others(&self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|m| *m != self.id)
            .collect()
    }

    /// This member plus the replicas whose last call succeeded or that were not called yet.
    pub fn reachable_count(&self) -> usize {
        let contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.members();
        let up = |m: &NodeId| *m == self.id || contacts.get(m).is_none_or(|c| c.failed.is_none());
        members.iter().filter(|m| up(m)).count()
    }

    /// Per member (this one included): reachable, last contact, last error.
    pub fn reach(&self) -> BTreeMap<NodeId, Reach> {
        let now = Instant::now();
        let contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        let view = |m: NodeId| {
            if m == self.id {
                return Reach {
                    reachable: true,
                    last_contact_ms: Some(0),
                    last_error: None,
                };
            }
            let c = contacts.get(&m);
            Reach {
                reachable: c.is_none_or(|c| c.failed.is_none()),
                last_contact_ms: c
                    .and_then(|c| c.last_ok)
                    .map(|at| now.duration_since(at).as_millis() as u64),
                last_error: c.and_then(|c| c.failed.clone()),
            }
        };
        self.members().into_iter().map(|m| (m, view(m))).collect()
    }

    /// The time since the last heal, taken (anti-entropy found every replica in sync).
    pub fn take_heal(&self) -> Option<Duration> {
        let healed = self
            .healed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        healed.map(|at| at.elapsed())
    }

    fn record(&self, peer: NodeId, result: Result<(), &CallError>) {
        let mut contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        let contact = contacts.entry(peer).or_default();
        match result {
            Ok(()) => {
                if contact.failed.take().is_some() {
                    tracing::info!(peer, "replica reachable again");
                    let mut healed = self.healed_at.lock().unwrap_or_else(|p| p.into_inner());
                    healed.get_or_insert_with(Instant::now);
                }
                contact.last_ok = Some(Instant::now());
            }
            Err(e) => {
                if contact.failed.is_none() {
                    tracing::info!(peer, error = %e, "replica unreachable");
                }
                contact.failed = Some(e.to_string());
            }
        }
    }

    /// POSTs `request` to `path` on replica `peer` and decodes its JSON answer; records
    /// whether it answered.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: NodeId,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let result = self.send(peer, path, request, timeout).await;
        self.record(peer, result.as_ref().map(drop));
        result
    }

    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: NodeId,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let response = self
            .peers
            .post(peer, None, path, request, timeout)
            .await
            .map_err(|e| {
                if e.not_sent() {
                    CallError::NotDelivered(e.to_string())
                } else {
                    CallError::MaybeDelivered(e.to_string())
                }
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            let why = format!("member {peer} answered {status}: {body}");
            // 503 (paused, or dropped by an injected fault on its side), 421 and other 4xx
            // answers come before the message is acted on; anything else may come after.
            return Err(if status == 503 || (400..500).contains(&status) {
                CallError::NotDelivered(why)
            } else {
                CallError::MaybeDelivered(why)
            });
        }
        response
            .json()
            .await
            .map_err(|e| CallError::MaybeDelivered(format!("member {peer}'s answer: {e}")))
    }
}
