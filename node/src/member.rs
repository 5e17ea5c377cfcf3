//! One member: a replication engine (Raft, or primary–secondary) plus what every mode shares:
//! the pause gate, forwarding to the member that can serve an operation, status and the
//! membership/admin operations. Any member accepts any operation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::api::error::{ApiError, Forwarded};
use crate::engine::{EngineError, EngineResult};
use crate::faults::{FaultCounters, FaultSet, Faults};
use crate::metrics::Metrics;
use crate::network::PeerClient;
use crate::primary::{PrimaryEngine, ReplicateRequest, ReplicateResponse};
use crate::raft_engine::RaftEngine;
use crate::types::{Command, NodeId};

pub const FORWARD_WRITE_PATH: &str = "/v1/internal/forward/write";
pub const FORWARD_READ_PATH: &str = "/v1/internal/forward/read";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Local,
}

/// The result of an operation: a register value, or the serving member's own answer.
pub enum Reply {
    Value(i64),
    Forwarded(Forwarded),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub match_index: Option<u64>,
    pub lag_entries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    pub last_contact_ms: Option<u64>,
}

/// The part of the status an engine knows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    pub replication: &'static str,
    pub role: &'static str,
    /// Raft term, or the primary's epoch.
    pub term: u64,
    /// The Raft leader or the primary.
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The last entry folded into the snapshot the log is compacted behind (0: none).
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub peers: BTreeMap<NodeId, PeerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded_writes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub id: NodeId,
    #[serde(flatten)]
    pub engine: EngineStatus,
    pub paused: bool,
    /// Milliseconds since the Unix epoch by this member's clock (clock skew included).
    pub clock_ms: u64,
    pub faults: FaultSet,
    pub fault_counters: BTreeMap<NodeId, FaultCounters>,
}

/// For operations served where they are asked, never forwarded.
fn served_here<T>(result: EngineResult<T>, what: &str) -> Result<T, ApiError> {
    result.map_err(|e| match e {
        EngineError::Api(e) => e,
        EngineError::NotLeader { .. } => {
            ApiError::Conflict(format!("cannot {what} on this member"))
        }
    })
}

pub enum Engine {
    Raft(RaftEngine),
    Primary(Arc<PrimaryEngine>),
}

pub struct Member {
    pub id: NodeId,
    pub engine: Engine,
    pub faults: Arc<Faults>,
    pub peers: Arc<PeerClient>,
    pub metrics: Arc<Metrics>,
    pub request_timeout: Duration,
}

impl Member {
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// Waits out a pause (a paused member answers nobody until resumed or the deadline).
    pub async fn gate(&self, deadline: Instant) -> Result<(), ApiError> {
        if self.faults.wait_unpaused(deadline).await {
            Ok(())
        } else {
            Err(ApiError::NotApplied(
                "member is paused by an injected fault".into(),
            ))
        }
    }

    fn primary_engine(&self) -> Result<&Arc<PrimaryEngine>, ApiError> {
        match &self.engine {
            Engine::Primary(p) => Ok(p),
            Engine::Raft(_) => Err(ApiError::BadRequest(
                "this member runs Raft; promote/primary/replicate are for --replication async|sync"
                    .into(),
            )),
        }
    }

    pub async fn write(&self, command: Command, may_forward: bool) -> Result<Reply, ApiError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        let result = match &self.engine {
            Engine::Raft(raft) => raft.write(command.clone(), deadline).await,
            Engine::Primary(primary) => primary.write(command.clone(), deadline).await,
        };
        self.settle(
            result,
            may_forward,
            FORWARD_WRITE_PATH,
            &command,
            deadline,
            true,
        )
        .await
    }

    pub async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        may_forward: bool,
    ) -> Result<Reply, ApiError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        let result = match (&self.engine, consistency) {
            (Engine::Raft(raft), Consistency::Local) => Ok(raft.read_local(key)),
            (Engine::Raft(raft), Consistency::Linearizable) => {
                raft.read_linearizable(key, deadline).await
            }
            (Engine::Primary(p), Consistency::Local) => Ok(p.read_local(key).await),
            (Engine::Primary(p), Consistency::Linearizable) => p.read_linearizable(key).await,
        };
        let request = ReadRequest {
            key: key.to_string(),
        };
        self.settle(
            result,
            may_forward,
            FORWARD_READ_PATH,
            &request,
            deadline,
            false,
        )
        .await
    }

    /// Turns an engine result into a reply, forwarding to the leader/primary when redirected.
    /// `effectful` operations whose request may have reached it end as "unknown" when no
    /// answer comes back.
    async fn settle(
        &self,
        result: EngineResult<i64>,
        may_forward: bool,
        path: &str,
        body: &impl Serialize,
        deadline: Instant,
        effectful: bool,
    ) -> Result<Reply, ApiError> {
        match result {
            Ok(value) => Ok(Reply::Value(value)),
            Err(EngineError::Api(e)) => Err(e),
            Err(EngineError::NotLeader { leader: None, .. }) => {
                Err(ApiError::NotApplied("no leader is known".into()))
            }
            Err(EngineError::NotLeader {
                leader: Some(_), ..
            }) if !may_forward => Err(ApiError::NotApplied(
                "this member is no longer the leader".into(),
            )),
            Err(EngineError::NotLeader {
                leader: Some(leader),
                addr,
            }) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self
                    .peers
                    .post(leader, addr.as_deref(), path, body, remaining)
                    .await
                {
                    Ok(response) => Ok(Reply::Forwarded(Forwarded::from_response(response).await?)),
                    Err(e) if e.not_sent() || !effectful => {
                        Err(ApiError::NotApplied(e.to_string()))
                    }
                    Err(e) => Err(ApiError::Unknown(e.to_string())),
                }
            }
        }
    }

    /// Admin operations that only the leader/primary performs: forwarded there when needed.
    async fn settle_admin(
        &self,
        result: EngineResult<()>,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Option<Forwarded>, ApiError> {
        let result = result.map(|()| 0);
        match self
            .settle(result, true, path, body, self.deadline(), true)
            .await?
        {
            Reply::Forwarded(f) => Ok(Some(f)),
            Reply::Value(_) => Ok(None),
        }
    }

    pub async fn status(&self) -> Status {
        let engine = match &self.engine {
            Engine::Raft(raft) => raft.status(&self.peers.last_contact_ms()),
            Engine::Primary(p) => p.status().await,
        };
        Status {
            id: self.id,
            engine,
            paused: self.faults.is_paused(),
            clock_ms: self
                .faults
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            faults: self.faults.current(),
            fault_counters: self.faults.counters(),
        }
    }

    /// Ready to serve: a leader is known, everything known committed is applied, not paused.
    pub async fn is_ready(&self) -> bool {
        let s = self.status().await;
        s.engine.leader.is_some() && s.engine.applied_index >= s.engine.commit_index && !s.paused
    }

    pub async fn refresh_gauges(&self) {
        let s = self.status().await;
        self.metrics.term.set(s.engine.term as i64);
        self.metrics.commit_index.set(s.engine.commit_index as i64);
        self.metrics
            .applied_index
            .set(s.engine.applied_index as i64);
        self.metrics
            .discarded_writes
            .set(s.engine.discarded_writes.unwrap_or(0) as i64);
    }

    /// Every other member this one knows of: membership plus address book.
    pub async fn known_members(&self) -> BTreeSet<NodeId> {
        let mut ids = match &self.engine {
            Engine::Raft(raft) => raft.members(),
            Engine::Primary(p) => p.members().await,
        };
        ids.extend(self.peers.addresses.all().into_keys());
        ids.remove(&self.id);
        ids
    }

    pub async fn set_faults(&self, faults: FaultSet) -> Result<FaultSet, ApiError> {
        faults
            .validate(&self.known_members().await)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Engine::Raft(raft) = &self.engine {
            raft.set_paused(faults.pause);
        }
        self.faults.replace(faults.clone());
        Ok(faults)
    }

    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), ApiError> {
        if !members.contains_key(&self.id) {
            return Err(ApiError::BadRequest(format!(
                "members must include this member (id {})",
                self.id
            )));
        }
        self.peers.addresses.merge(members.clone());
        let result = match &self.engine {
            Engine::Raft(raft) => raft.initialize(members).await,
            Engine::Primary(p) => p.initialize(members.into_keys().collect()).await,
        };
        served_here(result, "initialize")
    }

    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
    ) -> Result<Option<Forwarded>, ApiError> {
        self.peers.addresses.merge([(id, addr.clone())]);
        let result = match &self.engine {
            Engine::Raft(raft) => raft.add_learner(id, addr.clone(), self.deadline()).await,
            Engine::Primary(p) => {
                p.set_members(|m| {
                    m.insert(id);
                })
                .await
            }
        };
        let body = serde_json::json!({ "id": id, "addr": addr });
        self.settle_admin(result, "/v1/admin/learners", &body).await
    }

    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
    ) -> Result<Option<Forwarded>, ApiError> {
        if voters.is_empty() {
            return Err(ApiError::BadRequest("voters must not be empty".into()));
        }
        let result = match &self.engine {
            Engine::Raft(raft) => raft.set_voters(voters.clone(), self.deadline()).await,
            Engine::Primary(p) => {
                let wanted = voters.clone();
                p.set_members(move |m| *m = wanted).await
            }
        };
        let body = serde_json::json!({ "voters": voters });
        self.settle_admin(result, "/v1/admin/voters", &body).await
    }

    /// A planned switchover to member `to` (primary modes; openraft 0.9 has no leadership
    /// transfer).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<u64, ApiError> {
        match &self.engine {
            Engine::Primary(p) => {
                let handed = p.hand_over(to, self.deadline()).await;
                served_here(handed, "hand over the primary role")
            }
            Engine::Raft(_) => Err(ApiError::NotImplemented(
                "openraft 0.9 has no leadership transfer; remove the leader from the voters \
                 instead (it steps down once the change commits)"
                    .into(),
            )),
        }
    }

    pub async fn promote(&self, at_least: Option<u64>) -> Result<u64, ApiError> {
        served_here(self.primary_engine()?.promote(at_least).await, "promote")
    }

    pub async fn follow(&self, primary: NodeId, addr: String) -> Result<(), ApiError> {
        let engine = self.primary_engine()?;
        self.peers.addresses.merge([(primary, addr)]);
        served_here(engine.follow(primary).await, "follow")
    }

    pub async fn replicate(
        &self,
        request: ReplicateRequest,
    ) -> Result<ReplicateResponse, ApiError> {
        self.primary_engine()?.replicate(request).await
    }
}
