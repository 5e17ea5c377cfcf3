//! One member: a replication engine (Raft, primary–secondary or leaderless quorum; see
//! `engine.rs` for the interface) plus what every mode shares: the pause gate, forwarding to the member that can
//! serve an operation, status, readiness and the membership/admin operations. Any member
//! accepts any operation. Answers are [`MemberError`]s, which the HTTP layer maps to
//! responses; this module knows nothing of HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use caplab_api::kv::ReadRequest;
use caplab_api::paths::{ADMIN_INIT, ADMIN_LEARNERS, ADMIN_VOTERS, FORWARD_READ, FORWARD_WRITE};
use caplab_api::status::{Role, Status};
use caplab_api::tail::LogTail;
use serde::Serialize;
use thiserror::Error;
use tokio::time::Instant;

pub use crate::engine::Consistency;
use crate::engine::{EngineError, Outcome, ReplicationEngine, Unsupported};
use crate::faults::{FaultSet, Faults};
use crate::identity::PeerAddr;
use crate::metrics::Metrics;
use crate::network::{PeerClient, Relayed};
use crate::primary::{EpochView, PrimaryEngine, ReplicateRequest, ReplicateResponse};
use crate::quorum::QuorumEngine;
use crate::raft_engine::RaftEngine;
use crate::twopc::TwoPcEngine;
use crate::types::{Command, Node, NodeId};

/// The result of an operation: a register value, or the serving member's own answer.
pub enum Reply {
    Value(i64),
    Forwarded(Relayed),
}

/// Why a member did not serve an operation: what it means for the client ([`Outcome`]; never
/// a redirect once forwarding was tried) and a message saying what happened.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct MemberError {
    pub outcome: Outcome,
    pub message: String,
}

impl MemberError {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
        }
    }

    fn not_applied(message: impl Into<String>) -> Self {
        Self::new(Outcome::NotApplied, message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(Outcome::Invalid, message)
    }

    fn from_engine(e: impl EngineError) -> Self {
        Self::new(e.outcome(), e.to_string())
    }
}

/// For operations served where they are asked, never forwarded.
fn served_here<T, E: EngineError>(result: Result<T, E>, what: &str) -> Result<T, MemberError> {
    result.map_err(|e| match e.outcome() {
        Outcome::Redirect { .. } => {
            MemberError::new(Outcome::Conflict, format!("cannot {what} on this member"))
        }
        _ => MemberError::from_engine(e),
    })
}

/// The replication engine a member runs: one variant per mode, each implementing
/// [`ReplicationEngine`]. A new mode adds a variant here and a line to [`each!`].
pub enum Engine {
    Raft(RaftEngine),
    Primary(Arc<PrimaryEngine>),
    Quorum(Arc<QuorumEngine>),
    TwoPc(Arc<TwoPcEngine>),
}

/// Runs `$body` with `$e` bound to whichever engine `$engine` holds (static dispatch: the
/// engines' async methods cannot go through a trait object without boxing).
macro_rules! each {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            Engine::Raft($e) => $body,
            Engine::Primary($e) => $body,
            Engine::Quorum($e) => $body,
            Engine::TwoPc($e) => $body,
        }
    };
}

/// The outcome of an engine call, with the engine's error turned into the member's
/// classification (redirects kept, for [`Member::settle`] to forward).
type Served<T> = Result<T, MemberError>;

fn engine_result<T>(result: Result<T, impl EngineError>) -> Served<T> {
    result.map_err(MemberError::from_engine)
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
    pub async fn gate(&self, deadline: Instant) -> Result<(), MemberError> {
        if self.faults.wait_unpaused(deadline).await {
            Ok(())
        } else {
            Err(MemberError::not_applied(
                "member is paused by an injected fault",
            ))
        }
    }

    /// The primary-mode engine; other modes refuse primary-mode operations (400).
    fn primary_engine(&self) -> Result<&Arc<PrimaryEngine>, MemberError> {
        if let Engine::Primary(p) = &self.engine {
            return Ok(p);
        }
        let mode = each!(&self.engine, e => e.mode());
        let refused = Unsupported::other_mode(mode, "take primary-mode messages");
        Err(MemberError::new(refused.outcome(), refused.to_string()))
    }

    pub async fn write(&self, command: Command, may_forward: bool) -> Result<Reply, MemberError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        let result =
            each!(&self.engine, e => engine_result(e.write(command.clone(), deadline).await));
        self.settle(result, may_forward, FORWARD_WRITE, &command, deadline, true)
            .await
    }

    pub async fn read(
        &self,
        key: &str,
        consistency: Consistency,
        may_forward: bool,
    ) -> Result<Reply, MemberError> {
        let deadline = self.deadline();
        self.gate(deadline).await?;
        let result =
            each!(&self.engine, e => engine_result(e.read(key, consistency, deadline).await));
        let request = ReadRequest {
            key: key.to_string(),
        };
        self.settle(result, may_forward, FORWARD_READ, &request, deadline, false)
            .await
    }

    /// Turns an engine result into a reply, forwarding to the leader/primary when redirected.
    /// `effectful` operations whose request may have reached it end as "unknown" when no
    /// answer comes back.
    async fn settle(
        &self,
        result: Served<i64>,
        may_forward: bool,
        path: &str,
        body: &impl Serialize,
        deadline: Instant,
        effectful: bool,
    ) -> Result<Reply, MemberError> {
        let (leader, addr) = match result {
            Ok(value) => return Ok(Reply::Value(value)),
            Err(MemberError {
                outcome: Outcome::Redirect { leader, addr },
                ..
            }) => (leader, addr),
            Err(e) => return Err(e),
        };
        let Some(leader) = leader else {
            return Err(MemberError::not_applied("no leader is known"));
        };
        if !may_forward {
            return Err(MemberError::not_applied(
                "this member is no longer the leader",
            ));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .peers
            .relay(leader, addr.as_deref(), path, body, remaining)
            .await
        {
            Ok(answer) => Ok(Reply::Forwarded(answer)),
            Err(e) if e.cut_off() => Err(MemberError::new(Outcome::Unknown, e.to_string())),
            Err(e) if e.not_sent() || !effectful => Err(MemberError::not_applied(e.to_string())),
            Err(e) => Err(MemberError::new(Outcome::Unknown, e.to_string())),
        }
    }

    /// Admin operations that only the leader/primary performs: forwarded there when needed.
    async fn settle_admin(
        &self,
        result: Served<()>,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Option<Relayed>, MemberError> {
        let result = result.map(|()| 0);
        match self
            .settle(result, true, path, body, self.deadline(), true)
            .await?
        {
            Reply::Forwarded(f) => Ok(Some(f)),
            Reply::Value(_) => Ok(None),
        }
    }

    /// The last `limit` entries of this member's log (`GET /v1/log`).
    pub async fn log_tail(&self, limit: usize) -> LogTail {
        let entries = each!(&self.engine, e => e.log_tail(limit).await);
        LogTail {
            id: self.id,
            entries,
        }
    }

    pub async fn status(&self) -> Status {
        let contacts = self.peers.last_contact_ms();
        let mut engine = each!(&self.engine, e => e.status(&contacts).await);
        let voter = engine.voters.contains(&self.id);
        let fenced = each!(&self.engine, e => e.fenced().await);
        if !voter && matches!(engine.role, Role::Leader | Role::Follower | Role::Candidate) {
            // openraft keeps a removed voter in its role until it notices; what it does then
            // counts for nothing.
            engine.role = if engine.learners.contains(&self.id) {
                Role::Learner
            } else {
                Role::Removed
            };
        }
        let mut status = Status {
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
            quorum: None,
            twopc: None,
            client_ops: Some(self.metrics.client_ops()),
        };
        each!(&self.engine, e => e.extend_status(&mut status));
        status
    }

    /// Ready to serve: not paused, not fenced, and ready as the engine judges it (see
    /// [`ReplicationEngine::ready`]); else why not.
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
        each!(&self.engine, e => e.ready(&s))
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
        let mut ids = each!(&self.engine, e => e.members().await);
        ids.extend(self.peers.addresses.all().into_keys());
        ids.remove(&self.id);
        ids
    }

    pub async fn set_faults(&self, faults: FaultSet) -> Result<FaultSet, MemberError> {
        faults
            .validate(&self.known_members().await)
            .map_err(|e| MemberError::invalid(e.to_string()))?;
        each!(&self.engine, e => e.set_paused(faults.pause));
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

    /// `POST /v1/admin/init`. In a mode where every member must be initialised (Raft, until
    /// a reachable leader is known: a member never initialised grants no vote), the member asked
    /// (`from_peer` false) initialises every other member with the same membership,
    /// incarnations included (those not given are asked for first), and succeeds once a
    /// majority holds it; the others learn it from the leader. Elsewhere (or once a reachable
    /// leader is known) the member asked alone takes it.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, PeerAddr>,
        from_peer: bool,
    ) -> Result<(), MemberError> {
        if !members.contains_key(&self.id) {
            return Err(MemberError::invalid(format!(
                "members must include this member (id {})",
                self.id
            )));
        }
        self.peers.addresses.merge(members.clone());
        let pass_on = !from_peer && each!(&self.engine, e => e.init_every_member());
        if pass_on {
            self.learn_incarnations(&members).await;
        }
        let nodes: BTreeMap<NodeId, Node> = members
            .iter()
            .map(|(id, addr)| (*id, self.node(*id, addr)))
            .collect();
        each!(&self.engine, e => served_here(e.initialize(nodes.clone()).await, "initialize"))?;
        if !pass_on {
            return Ok(());
        }
        let holding = 1 + self.initialize_others(&nodes).await;
        if holding > nodes.len() / 2 {
            Ok(())
        } else {
            Err(MemberError::not_applied(format!(
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
                .post(id, None, ADMIN_INIT, body, self.request_timeout)
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
    ) -> Result<Option<Relayed>, MemberError> {
        self.peers.addresses.merge([(id, addr.clone())]);
        let (node, deadline) = (self.node(id, &addr), self.deadline());
        let result =
            each!(&self.engine, e => engine_result(e.add_learner(id, node, deadline).await));
        let body = serde_json::json!({ "id": id, "addr": addr });
        self.settle_admin(result, ADMIN_LEARNERS, &body).await
    }

    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
    ) -> Result<Option<Relayed>, MemberError> {
        if voters.is_empty() {
            return Err(MemberError::invalid("voters must not be empty"));
        }
        let deadline = self.deadline();
        let result =
            each!(&self.engine, e => engine_result(e.set_voters(voters.clone(), deadline).await));
        let body = serde_json::json!({ "voters": voters });
        self.settle_admin(result, ADMIN_VOTERS, &body).await
    }

    /// A planned switchover to member `to` (primary modes; openraft 0.9 has no leadership
    /// transfer).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<u64, MemberError> {
        let deadline = self.deadline();
        each!(&self.engine, e => served_here(e.transfer_leader(to, deadline).await, "hand over the primary role"))
    }

    pub async fn promote(&self, at_least: Option<u64>) -> Result<u64, MemberError> {
        each!(&self.engine, e => served_here(e.promote(at_least).await, "promote"))
    }

    pub async fn follow(&self, primary: NodeId, addr: PeerAddr) -> Result<(), MemberError> {
        let engine = self.primary_engine()?;
        self.peers.addresses.merge([(primary, addr)]);
        served_here(engine.follow(primary).await, "follow")
    }

    /// The epoch and primary this member knows (primary modes).
    pub async fn epoch_view(&self) -> Result<EpochView, MemberError> {
        Ok(self.primary_engine()?.epoch_view().await)
    }

    pub async fn replicate(
        &self,
        request: ReplicateRequest,
    ) -> Result<ReplicateResponse, MemberError> {
        engine_result(self.primary_engine()?.replicate(request).await)
    }
}
