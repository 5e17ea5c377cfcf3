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
use crate::identity::{Incarnation, PeerAddr};
use crate::metrics::Metrics;
use crate::network::PeerClient;
use crate::primary::{EpochView, PrimaryEngine, ReplicateRequest, ReplicateResponse};
use crate::raft_engine::RaftEngine;
use crate::types::{Command, Node, NodeId};

pub const FORWARD_WRITE_PATH: &str = "/v1/internal/forward/write";
pub const FORWARD_READ_PATH: &str = "/v1/internal/forward/read";
pub const INIT_PATH: &str = "/v1/admin/init";

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
    /// Drawn when the data directory was first initialised; 16 lowercase hex characters.
    pub incarnation: Incarnation,
    /// The cluster id this member accepts peer messages for (`None`: any).
    pub cluster_id: Option<String>,
    /// Whether this member is a voter (Raft) or in the primary's member set; a member removed
    /// from the voters reports `false` and role `learner` or `removed`, never `leader`.
    pub voter: bool,
    /// Primary modes: this member was the primary before it restarted and serves nothing
    /// until it has confirmed its epoch with a majority (role `fenced` meanwhile).
    pub fenced: bool,
    #[serde(flatten)]
    pub engine: EngineStatus,
    /// Peer messages refused with 421 because they named another cluster, member or
    /// incarnation.
    pub misdirected_messages: u64,
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
        let mut engine = match &self.engine {
            Engine::Raft(raft) => raft.status(&self.peers.last_contact_ms()),
            Engine::Primary(p) => p.status().await,
        };
        let voter = engine.voters.contains(&self.id);
        let fenced = match &self.engine {
            Engine::Raft(_) => false,
            Engine::Primary(p) => p.is_fenced().await,
        };
        if !voter && matches!(engine.role, "leader" | "follower" | "candidate") {
            // openraft keeps a removed voter in its role until it notices; what it does then
            // counts for nothing.
            engine.role = if engine.learners.contains(&self.id) {
                "learner"
            } else {
                "removed"
            };
        }
        Status {
            id: self.id,
            incarnation: self.peers.identity.incarnation.clone(),
            cluster_id: self.peers.identity.cluster.clone(),
            voter,
            fenced,
            misdirected_messages: self.metrics.misdirected_total(),
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

    /// Ready to serve: a voter (or in the primary's member set), a leader known, everything
    /// known committed applied, not paused, not fenced; else why not.
    pub async fn readiness(&self) -> Result<(), String> {
        let s = self.status().await;
        if s.paused {
            return Err("paused by an injected fault".into());
        }
        if s.fenced {
            return Err(format!(
                "fenced: was the primary of epoch {} before a restart and is confirming its \
                 epoch with the other members",
                s.engine.term
            ));
        }
        if !s.voter {
            return Err(format!(
                "not a voter (voters {:?}): this member was removed from the cluster or not yet added",
                s.engine.voters
            ));
        }
        if s.engine.leader.is_none() {
            return Err("no leader known".into());
        }
        if s.engine.applied_index < s.engine.commit_index {
            return Err(format!(
                "still applying ({} of {} committed entries applied)",
                s.engine.applied_index, s.engine.commit_index
            ));
        }
        Ok(())
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

    /// The membership record of member `id` at `addr`: with the incarnation given, else the
    /// one known (this member's own, or one pinned in the address book).
    fn node(&self, id: NodeId, addr: &PeerAddr) -> Node {
        let known = if id == self.id {
            Some(self.peers.identity.incarnation.clone())
        } else {
            self.peers.addresses.incarnation(id)
        };
        Node {
            addr: addr.addr().to_string(),
            incarnation: addr.incarnation().cloned().or(known),
        }
    }

    /// `POST /v1/admin/init`. In Raft mode a member never initialised grants no vote, so
    /// the member asked (`from_peer` false) initialises every other member with the same
    /// membership, incarnations included (those not given are asked for first), and succeeds
    /// once a majority holds it; the others learn it from the leader.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, PeerAddr>,
        from_peer: bool,
    ) -> Result<(), ApiError> {
        if !members.contains_key(&self.id) {
            return Err(ApiError::BadRequest(format!(
                "members must include this member (id {})",
                self.id
            )));
        }
        self.peers.addresses.merge(members.clone());
        let raft = match &self.engine {
            Engine::Primary(p) => {
                let initialized = p.initialize(members.into_keys().collect()).await;
                return served_here(initialized, "initialize");
            }
            Engine::Raft(raft) => raft,
        };
        if !from_peer {
            self.learn_incarnations(&members).await;
        }
        let nodes: BTreeMap<NodeId, Node> = members
            .iter()
            .map(|(id, addr)| (*id, self.node(*id, addr)))
            .collect();
        served_here(raft.initialize(nodes.clone()).await, "initialize")?;
        if from_peer {
            return Ok(());
        }
        let holding = 1 + self.initialize_others(&nodes).await;
        if holding > nodes.len() / 2 {
            Ok(())
        } else {
            Err(ApiError::NotApplied(format!(
                "only {holding} of {} members accepted the membership; call init again when \
                 more are up (it is idempotent)",
                nodes.len()
            )))
        }
    }

    /// Pins the incarnation of every member given without one (those that answer).
    async fn learn_incarnations(&self, members: &BTreeMap<NodeId, PeerAddr>) {
        let timeout = self.request_timeout;
        let probes = members
            .iter()
            .filter(|(id, addr)| **id != self.id && addr.incarnation().is_none())
            .map(|(id, _)| self.peers.probe(*id, timeout));
        for result in futures::future::join_all(probes).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot learn a member's incarnation for init");
            }
        }
    }

    /// Sends the membership to every other member; returns how many accepted it.
    async fn initialize_others(&self, nodes: &BTreeMap<NodeId, Node>) -> usize {
        let entries: BTreeMap<NodeId, PeerAddr> = nodes
            .iter()
            .map(|(id, n)| {
                let entry = PeerAddr::Pinned {
                    addr: n.addr.clone(),
                    incarnation: n.incarnation.clone(),
                };
                (*id, entry)
            })
            .collect();
        let body = serde_json::json!({ "members": entries });
        let body = &body;
        let others = nodes.keys().copied().filter(|id| *id != self.id);
        let sends = others.map(|id| async move {
            let sent = self
                .peers
                .post(id, None, INIT_PATH, body, self.request_timeout)
                .await;
            match sent {
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    let status = r.status();
                    let answer = r.text().await.unwrap_or_default();
                    tracing::warn!(peer = id, %status, answer, "a member refused init");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot initialise a member");
                    false
                }
            }
        });
        let accepted = futures::future::join_all(sends).await;
        accepted.into_iter().filter(|ok| *ok).count()
    }

    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: PeerAddr,
    ) -> Result<Option<Forwarded>, ApiError> {
        self.peers.addresses.merge([(id, addr.clone())]);
        let result = match &self.engine {
            Engine::Raft(raft) => {
                let node = self.node(id, &addr);
                raft.add_learner(id, node, self.deadline()).await
            }
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

    pub async fn follow(&self, primary: NodeId, addr: PeerAddr) -> Result<(), ApiError> {
        let engine = self.primary_engine()?;
        self.peers.addresses.merge([(primary, addr)]);
        served_here(engine.follow(primary).await, "follow")
    }

    /// The epoch and primary this member knows (primary modes).
    pub async fn epoch_view(&self) -> Result<EpochView, ApiError> {
        Ok(self.primary_engine()?.epoch_view().await)
    }

    pub async fn replicate(
        &self,
        request: ReplicateRequest,
    ) -> Result<ReplicateResponse, ApiError> {
        self.primary_engine()?.replicate(request).await
    }
}
