//! Why the Raft engine did not serve an operation, and what each refusal means to a client.

use std::collections::BTreeSet;

use thiserror::Error;

use crate::election::SteppedAside;
use crate::engine::{EngineError, Outcome, Unsupported};
use crate::types::NodeId;

/// Why the Raft engine did not serve an operation.
#[derive(Debug, Clone, Error)]
pub enum RaftEngineError {
    /// Not the leader, or a leader that stepped aside (`leader` None): nothing was proposed.
    #[error("this member is not the leader")]
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    #[error("member is shutting down")]
    ShuttingDown,
    #[error("compare-and-set failed: the current value is {current}")]
    CasMismatch { current: i64 },
    /// openraft refused before anything was appended.
    #[error("{0}")]
    NotApplied(String),
    /// After the write was queued or proposed, or a leadership round began: it may or may not
    /// take effect.
    #[error("{0}")]
    Unknown(String),
    /// openraft refused a membership change (e.g. one is already in progress).
    #[error("{0}")]
    MembershipConflict(String),
    #[error("already initialized with voters {0:?}; change membership instead")]
    AlreadyInitialized(BTreeSet<NodeId>),
    /// openraft refused `initialize` for another reason (e.g. this member is not listed).
    #[error("{0}")]
    InitRefused(String),
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

impl EngineError for RaftEngineError {
    fn outcome(&self) -> Outcome {
        match self {
            RaftEngineError::NotLeader { leader, addr } => Outcome::Redirect {
                leader: *leader,
                addr: addr.clone(),
            },
            RaftEngineError::ShuttingDown | RaftEngineError::NotApplied(_) => Outcome::NotApplied,
            RaftEngineError::Unknown(_) => Outcome::Unknown,
            RaftEngineError::CasMismatch { current } => Outcome::CasMismatch { current: *current },
            RaftEngineError::MembershipConflict(_) | RaftEngineError::AlreadyInitialized(_) => {
                Outcome::Conflict
            }
            RaftEngineError::InitRefused(_) => Outcome::Invalid,
            RaftEngineError::Unsupported(u) => u.outcome(),
        }
    }
}

impl From<SteppedAside> for RaftEngineError {
    /// A leader that stepped aside knows no leader to send the client to.
    fn from(_: SteppedAside) -> Self {
        RaftEngineError::NotLeader {
            leader: None,
            addr: None,
        }
    }
}
