//! Two-phase commit (`--replication 2pc`): the member that receives `POST /v1/admin/init` is
//! the coordinator, every member (the coordinator too) a participant. Each write or
//! compare-and-set is a transaction: PREPARE and a vote from every participant, then COMMIT
//! (all voted yes) or ABORT (a no, or a vote missing at the deadline), each acknowledged: at
//! least four messages per participant per change ([`coordinator`]). Any participant can veto,
//! and a participant that voted yes and lost the coordinator is *in doubt*: it holds the key
//! and can only wait or learn the decision from a peer ([`resolver`]). Synchronous
//! primary–secondary replication is the special case in which participants always vote yes.

pub mod contacts;
pub mod coordinator;
pub mod counters;
mod engine_impl;
pub mod error;
pub mod link;
pub mod participant;
pub mod resolver;
pub mod store;
pub mod wire;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use caplab_api::admin::Ack;
use caplab_api::paths;
use caplab_api::status::TwoPcStatus;
use tokio::time::Instant;

use coordinator::Coordinator;
use counters::{Counters, Phase, TwoPcMetrics};
use error::TwoPcError;
use participant::Participant;
use resolver::Resolver;
use store::{Meta, Store, StoreError};
use wire::{
    DecideRequest, Decision, DecisionAck, MembersRequest, PrepareRequest, QueryRequest,
    QueryResponse, TxId, Vote,
};

use crate::faults::Faults;
use crate::network::PeerClient;
use crate::types::{Command, NodeId};

/// How often the coordinator sends the membership to every member (its heartbeat).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);

/// Timing of the 2pc engine.
#[derive(Debug, Clone, Copy)]
pub struct TwoPcSettings {
    /// How long the coordinator waits for votes (within the client's deadline).
    pub vote_timeout: Duration,
    /// Test hook: a pause between the votes and the decision (zero: none).
    pub decision_delay: Duration,
}

pub struct TwoPcEngine {
    pub id: NodeId,
    store: Store,
    participant: Arc<Participant>,
    coordinator: Arc<Coordinator>,
    peers: Arc<PeerClient>,
    faults: Arc<Faults>,
    counters: Arc<Counters>,
    meta: RwLock<Meta>,
    /// Transactions run under the read side; a membership change takes the write side, so it
    /// happens only while no transaction is in flight.
    changes: Arc<tokio::sync::RwLock<()>>,
}

impl TwoPcEngine {
    /// Opens the store in `data_dir` and starts, on the current Tokio runtime, in-doubt
    /// resolution, and on the coordinator its recovery and membership announcements.
    pub fn open(
        id: NodeId,
        data_dir: &Path,
        peers: Arc<PeerClient>,
        metrics: TwoPcMetrics,
        settings: TwoPcSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Store::open(data_dir)?;
        let meta = store.meta()?;
        peers.addresses.merge(meta.addresses.clone());
        let faults = peers.faults.clone();
        let counters = Arc::new(Counters::new(metrics));
        let participant = Arc::new(Participant::open(
            id,
            store.clone(),
            counters.clone(),
            faults.clone(),
        )?);
        let coordinator = Arc::new(Coordinator::new(
            participant.clone(),
            store.clone(),
            peers.clone(),
            counters.clone(),
            settings.vote_timeout,
            settings.decision_delay,
        ));
        let coordinates = meta.coordinator == Some(id);
        let engine = Arc::new(Self {
            id,
            store,
            participant: participant.clone(),
            coordinator: coordinator.clone(),
            peers: peers.clone(),
            faults: faults.clone(),
            counters: counters.clone(),
            meta: RwLock::new(meta),
            changes: Arc::new(tokio::sync::RwLock::new(())),
        });
        let resolver = Resolver {
            participant,
            peers,
            counters,
            faults,
        };
        tokio::spawn(resolver.run());
        if coordinates {
            tokio::spawn(coordinator.recover());
        }
        tokio::spawn(announce(Arc::downgrade(&engine)));
        Ok(engine)
    }

    fn meta(&self) -> Meta {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_coordinator(&self) -> bool {
        self.meta().coordinator == Some(self.id)
    }

    /// Makes `meta` the membership, durably.
    async fn set_meta(&self, meta: Meta) -> Result<(), TwoPcError> {
        self.store.set_meta(&meta).await?;
        *self.meta.write().unwrap_or_else(|p| p.into_inner()) = meta;
        Ok(())
    }

    /// A write or compare-and-set: run here on the coordinator; elsewhere refused while its
    /// key is in doubt here, else forwarded to the coordinator.
    pub async fn write(&self, command: Command, deadline: Instant) -> Result<i64, TwoPcError> {
        let meta = self.meta();
        match meta.coordinator {
            None => Err(not_initialised()),
            Some(c) if c != self.id => {
                self.participant.refuse_in_doubt(command.key())?;
                Err(TwoPcError::Redirect {
                    coordinator: Some(c),
                })
            }
            Some(_) => {
                let no_membership_change = self.changes.clone().read_owned().await;
                let participants = self.meta().members;
                let coordinator = self.coordinator.clone();
                // On its own task: a client that goes away (its request future dropped) must
                // not stop a transaction between its steps, which left it undecided in the
                // log and its key held here and on every yes voter until a restart.
                let transaction = tokio::spawn(async move {
                    let _no_membership_change = no_membership_change;
                    coordinator.run(participants, command, deadline).await
                });
                transaction.await.map_err(|e| {
                    TwoPcError::Unknown(format!("the transaction's task failed: {e}"))
                })?
            }
        }
    }

    /// Linearizable: the committed value once no transaction holds the key; local: the
    /// committed value as is.
    pub async fn read(
        &self,
        key: &str,
        linearizable: bool,
        deadline: Instant,
    ) -> Result<i64, TwoPcError> {
        if linearizable {
            self.participant.read_released(key, deadline).await
        } else {
            self.participant.read_committed(key).await
        }
    }

    pub fn members(&self) -> BTreeSet<NodeId> {
        self.meta().members
    }

    /// `init`: this member becomes the coordinator of `members`. Idempotent for the same
    /// membership on the same coordinator.
    pub async fn initialize(&self, members: BTreeSet<NodeId>) -> Result<(), TwoPcError> {
        let meta = self.meta();
        match meta.coordinator {
            Some(c) if c == self.id && meta.members == members => return Ok(()),
            Some(c) => {
                return Err(TwoPcError::Refused(format!(
                    "already initialised: coordinator {c}, participants {:?}; 2pc never changes \
                     its coordinator (start new members to make another cluster)",
                    meta.members
                )))
            }
            None => {}
        }
        self.become_coordinator(members).await
    }

    async fn become_coordinator(&self, members: BTreeSet<NodeId>) -> Result<(), TwoPcError> {
        let meta = Meta {
            coordinator: Some(self.id),
            members,
            addresses: self.peers.addresses.all(),
        };
        self.set_meta(meta).await?;
        self.announce_once().await;
        Ok(())
    }

    /// Changes the participants (coordinator only, once no transaction is in flight); the
    /// coordinator stays one.
    pub async fn set_members(&self, members: BTreeSet<NodeId>) -> Result<(), TwoPcError> {
        let meta = self.meta();
        match meta.coordinator {
            None => return Err(not_initialised()),
            Some(c) if c != self.id => {
                return Err(TwoPcError::Redirect {
                    coordinator: Some(c),
                })
            }
            Some(_) => {}
        }
        if !members.contains(&self.id) {
            return Err(TwoPcError::BadRequest(format!(
                "the participants must include the coordinator (member {}): 2pc never changes \
                 its coordinator",
                self.id
            )));
        }
        let _no_transaction_in_flight = self.changes.write().await;
        self.become_coordinator(members).await
    }

    /// Sends the membership to every other member (coordinator only).
    async fn announce_once(&self) {
        let meta = self.meta();
        if meta.coordinator != Some(self.id) {
            return;
        }
        let request = MembersRequest {
            coordinator: self.id,
            members: meta.members.clone(),
            addresses: self.peers.addresses.all(),
        };
        let others = meta.members.iter().filter(|m| **m != self.id);
        for member in others.copied() {
            let sent: Result<Ack, String> = link::call(
                &self.peers,
                member,
                paths::TWOPC_MEMBERS,
                &request,
                ANNOUNCE_INTERVAL,
            )
            .await;
            match sent {
                Ok(_) => self.coordinator.contacts.heard(member),
                Err(why) => tracing::debug!(member, why, "membership not acknowledged"),
            }
        }
    }

    /// Peer message: the coordinator's membership.
    pub async fn handle_members(&self, request: MembersRequest) -> Result<Ack, TwoPcError> {
        let meta = self.meta();
        if let Some(c) = meta.coordinator.filter(|c| *c != request.coordinator) {
            return Err(TwoPcError::Refused(format!(
                "this member's coordinator is {c}, not {}: 2pc never changes its coordinator",
                request.coordinator
            )));
        }
        self.peers.addresses.merge(request.addresses.clone());
        let meta = Meta {
            coordinator: Some(request.coordinator),
            members: request.members,
            addresses: request.addresses,
        };
        self.set_meta(meta).await?;
        Ok(Ack::OK)
    }

    /// Peer message: PREPARE.
    pub async fn handle_prepare(&self, request: PrepareRequest) -> Result<Vote, TwoPcError> {
        self.counters.messages(Phase::Prepare, 1);
        let vote = self.participant.prepare(&request).await?;
        let op = crate::tail::describe(&request.command);
        let mut entry = caplab_api::tail::TailEntry::new(request.txid, None, op);
        entry.decision = Some(if vote.yes { "prepared" } else { "voted no" }.to_string());
        self.participant.recent.push(entry);
        self.counters.messages(Phase::Vote, 1);
        Ok(vote)
    }

    /// Peer message: the decision.
    pub async fn handle_decide(&self, request: DecideRequest) -> Result<DecisionAck, TwoPcError> {
        self.counters.messages(Phase::Decision, 1);
        self.participant
            .apply(request.txid, request.decision, false)
            .await?;
        self.counters.messages(Phase::Ack, 1);
        Ok(DecisionAck { txid: request.txid })
    }

    /// Peer message: what this member knows of a transaction (as its coordinator, else as a
    /// participant).
    pub async fn handle_query(&self, request: QueryRequest) -> Result<QueryResponse, TwoPcError> {
        self.counters.messages(Phase::Query, 1);
        let state = match self.coordinator.state(request.txid).await? {
            Some(state) => state,
            None => self.participant.state(request.txid).await?,
        };
        Ok(QueryResponse { state })
    }

    /// Admin: a person forces `decision` on `txid`, which this member holds in doubt.
    pub async fn force(&self, txid: TxId, decision: Decision) -> Result<(), TwoPcError> {
        let Some(hold) = self
            .participant
            .holds()
            .into_iter()
            .find(|h| h.record.txid == txid)
        else {
            return Err(TwoPcError::BadRequest(format!(
                "member {} holds no transaction {txid}; in doubt here: {:?}",
                self.id,
                self.participant
                    .in_doubt()
                    .iter()
                    .map(|t| t.txid)
                    .collect::<Vec<_>>()
            )));
        };
        if !hold.in_doubt {
            return Err(TwoPcError::Refused(format!(
                "transaction {txid} is not in doubt: its coordinator answers and will decide"
            )));
        }
        self.participant.apply(txid, decision, true).await?;
        self.counters.heuristic(decision);
        tracing::warn!(
            txid,
            decision = decision.as_str(),
            "heuristic decision forced by an admin call"
        );
        Ok(())
    }

    /// Ready: initialised, a participant, and nothing in doubt.
    pub fn readiness(&self) -> Result<(), String> {
        let meta = self.meta();
        let Some(coordinator) = meta.coordinator else {
            return Err(not_initialised().to_string());
        };
        if !meta.members.contains(&self.id) {
            return Err(format!(
                "not a participant (participants {:?})",
                meta.members
            ));
        }
        let in_doubt = self.participant.in_doubt();
        if let Some(oldest) = in_doubt.first() {
            return Err(format!(
                "blocked: {} transactions in doubt since unix ms {} (coordinator {coordinator} \
                 unreachable): restart the coordinator or force a decision",
                in_doubt.len(),
                oldest.since_ms
            ));
        }
        Ok(())
    }

    /// Per participant: milliseconds since the coordinator last heard from it, and the last
    /// transaction it acknowledged (empty on participants).
    pub fn contacts(&self) -> std::collections::BTreeMap<NodeId, (u64, TxId)> {
        self.coordinator.contacts.view()
    }

    pub fn twopc_status(&self) -> TwoPcStatus {
        let meta = self.meta();
        let in_doubt = self.participant.in_doubt();
        let now_ms = self
            .faults
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut status = TwoPcStatus {
            coordinator: meta.coordinator,
            participants: meta.members.into_iter().collect(),
            prepared: self.participant.holds().len() as u64,
            in_doubt: in_doubt.len() as u64,
            oldest_in_doubt_ms: in_doubt
                .iter()
                .map(|t| now_ms.saturating_sub(t.since_ms))
                .max(),
            in_doubt_transactions: in_doubt,
            ..TwoPcStatus::default()
        };
        self.counters.fill(&mut status);
        status
    }
}

fn not_initialised() -> TwoPcError {
    TwoPcError::NotApplied(
        "no coordinator known: POST /v1/admin/init with the members to the member that is to \
         coordinate"
            .into(),
    )
}

/// Every [`ANNOUNCE_INTERVAL`], the coordinator sends its membership to every member: a
/// participant that was down or cut off at init learns it, and the answers show which
/// participants the coordinator hears from ([`contacts`]). Ends with the engine.
async fn announce(engine: std::sync::Weak<TwoPcEngine>) {
    loop {
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if engine.is_coordinator() && !engine.faults.is_paused() {
            engine.announce_once().await;
        }
    }
}
