//! The interface every replication mode implements: [`ReplicationEngine`].
//!
//! A member holds exactly one engine (`member::Engine`, an enum with one variant per mode) and
//! dispatches every client operation, the status and the admin operations to it. Everything
//! every mode shares — the pause gate, forwarding to the member that can serve an operation
//! (an error whose [`Outcome`] is a redirect), the status fields outside the engine, the
//! pause and fence checks of readiness, the address book — stays in `member.rs`.
//!
//! **Why a trait plus an enum, not `dyn`:** the methods are async, and async trait methods
//! (here `fn … -> impl Future + Send`, stable since Rust 1.75) cannot be called through a trait
//! object without boxing every future. The enum keeps static dispatch, lets the peer API reach
//! a mode's own messages (Raft RPCs, primary replication) with a plain `match`, and the trait
//! makes each mode state the whole surface, with defaults for what it does not support.
//!
//! **Adding a replication mode** (as `quorum/` did; 2pc is next):
//! 1. implement [`ReplicationEngine`] for the engine (or an `Arc` of it, when its methods
//!    spawn tasks), with its own error type implementing [`EngineError`]: say which refusals
//!    are *not applied* and which are *unknown* (a client retries the first and must read back
//!    the second), and which redirect to another member; override what the mode supports
//!    (leader transfer, promote, follow: the defaults refuse with [`Unsupported`]), its
//!    readiness ([`ReplicationEngine::ready`]) and its status section
//!    ([`ReplicationEngine::extend_status`]; the wire types are `caplab_api::status`'s);
//! 2. add a variant to `member::Engine` and one line to its `each!` dispatch macro;
//! 3. construct it in `server::start` from its `--replication` value (`config.rs`);
//! 4. its own peer messages get a route file under `api/` (as `api/quorum.rs`) and paths in
//!    `caplab_api::paths`, and travel through `network::PeerClient`: engines never import
//!    axum, reqwest or `crate::api`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use thiserror::Error;
use tokio::time::Instant;

use crate::types::{Command, Node, NodeId};
use caplab_api::status::{EngineStatus, Status};
use caplab_api::tail::TailEntry;

/// How a client read is served (the wire type: `linearizable` or `local`).
pub use caplab_api::kv::Consistency;

/// What a refusal means for the client and for forwarding; the HTTP layer maps each to a
/// status code (in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not served here, nothing done: `leader` (the Raft leader, the primary), if known, can
    /// serve it at `addr` (when the engine knows an address the address book may lack).
    Redirect {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    /// The operation certainly did not take effect (503): safe to retry.
    NotApplied,
    /// The operation may or may not take effect (504): read back before retrying.
    Unknown,
    /// A compare-and-set found `current` and changed nothing (409).
    CasMismatch { current: i64 },
    /// The request conflicts with the member's state, e.g. initialised otherwise (409).
    Conflict,
    /// The request is invalid, or belongs to another replication mode (400).
    Invalid,
    /// The mode has no such operation (501).
    NotSupported,
}

/// Implemented by each engine's own error type.
pub trait EngineError: std::error::Error + Send + Sync + 'static {
    fn outcome(&self) -> Outcome;
}

/// An operation the engine's mode does not have.
#[derive(Debug, Clone, Error)]
pub enum Unsupported {
    /// No mode-independent equivalent exists here (501), e.g. leader transfer in openraft 0.9.
    #[error("{0}")]
    NotImplemented(String),
    /// The operation belongs to another replication mode (400).
    #[error("{0}")]
    OtherMode(String),
}

impl Unsupported {
    /// The refusal of a primary-mode operation (`what`, for the log) by an engine of
    /// another mode.
    pub fn other_mode(mode: &str, what: &str) -> Self {
        tracing::debug!(mode, what, "refused an operation of the primary modes");
        // Raft's wording predates the other modes; clients and the operator's mocks show it.
        let mode = if mode == "raft" { "Raft" } else { mode };
        Unsupported::OtherMode(format!(
            "this member runs {mode}; promote/primary/replicate are for --replication async|sync"
        ))
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Unsupported::NotImplemented(_) => Outcome::NotSupported,
            Unsupported::OtherMode(_) => Outcome::Invalid,
        }
    }
}

/// One replication mode. Deadlines are absolute; an operation still running at its deadline
/// answers an error whose outcome says whether it may yet take effect.
pub trait ReplicationEngine: Send + Sync {
    type Error: EngineError + From<Unsupported>;

    /// `replication` in the status (`raft`, `async`, `sync`, …).
    fn mode(&self) -> &'static str;

    /// Writes or compare-and-sets one register; returns the value it now holds.
    fn write(
        &self,
        command: Command,
        deadline: Instant,
    ) -> impl Future<Output = Result<i64, Self::Error>> + Send;

    /// Reads one register (0 when never written).
    fn read(
        &self,
        key: &str,
        consistency: Consistency,
        deadline: Instant,
    ) -> impl Future<Output = Result<i64, Self::Error>> + Send;

    /// The engine's part of the status; `contacts` is milliseconds since each peer last
    /// answered this member's peer messages.
    fn status(&self, contacts: &BTreeMap<NodeId, u64>)
        -> impl Future<Output = EngineStatus> + Send;

    /// True while the member must serve nothing until it has confirmed its standing (a
    /// primary restarted in its epoch); part of readiness.
    fn fenced(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }

    /// The last `limit` entries of the member's log, oldest first, for `GET /v1/log`
    /// (`caplab_api::tail` says what an entry is in each mode); none by default.
    fn log_tail(&self, _limit: usize) -> impl Future<Output = Vec<TailEntry>> + Send {
        async { Vec::new() }
    }

    /// Adds the mode's own section to the member's status (e.g. `quorum`); none by default.
    fn extend_status(&self, _status: &mut Status) {}

    /// Whether the member is ready to serve, given its `status` (not paused and not fenced:
    /// the member checked those); else why not, in words for `/readyz`. By default, for modes
    /// with a leader: a voter (or in the member set), a leader known, every committed entry
    /// applied.
    fn ready(&self, status: &Status) -> Result<(), String> {
        let engine = &status.engine;
        if !status.voter {
            return Err(format!(
                "not a voter (voters {:?}): this member was removed from the cluster or not yet added",
                engine.voters
            ));
        }
        if engine.leader.is_none() {
            return Err("no leader known".into());
        }
        if engine.applied_index < engine.commit_index {
            return Err(format!(
                "still applying ({} of {} committed entries applied)",
                engine.applied_index, engine.commit_index
            ));
        }
        Ok(())
    }

    /// The members in this member's membership (voters, learners, member set).
    fn members(&self) -> impl Future<Output = BTreeSet<NodeId>> + Send;

    /// A paused member's engine timers stand still, like a stopped process.
    fn set_paused(&self, _paused: bool) {}

    /// True when every member must be given the membership by `init` now (the member asked
    /// passes it on): in Raft a member never initialised grants no vote, until a leader is
    /// elected. False when the member asked alone takes it (a primary, which then replicates
    /// the member set).
    fn init_every_member(&self) -> bool {
        false
    }

    /// `init`: start a cluster of `members` (this member included). Idempotent for the same
    /// membership; another one is a [`Outcome::Conflict`].
    fn initialize(
        &self,
        members: BTreeMap<NodeId, Node>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Adds member `id` as a non-voting learner (Raft) or to the member set (primary modes).
    fn add_learner(
        &self,
        id: NodeId,
        node: Node,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes `voters` (non-empty) the voting members / the member set.
    fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A planned handover of the leader/primary role to `to`; returns the new term or epoch.
    fn transfer_leader(
        &self,
        _to: NodeId,
        _deadline: Instant,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send {
        let mode = self.mode();
        async move {
            Err(Unsupported::NotImplemented(format!(
                "{mode} replication has no leadership transfer"
            ))
            .into())
        }
    }

    /// Makes this member the primary of an epoch at least `at_least`; returns the epoch.
    fn promote(
        &self,
        _at_least: Option<u64>,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send {
        let unsupported = Unsupported::other_mode(self.mode(), "promote");
        async move { Err(unsupported.into()) }
    }

    /// Makes this member follow `primary`.
    fn follow(&self, _primary: NodeId) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let unsupported = Unsupported::other_mode(self.mode(), "follow a primary");
        async move { Err(unsupported.into()) }
    }
}
