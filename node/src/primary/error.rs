//! The primary–secondary engine's refusals and what each means for the client.

use thiserror::Error;

use super::store::StoreError;
use crate::engine::{EngineError, Outcome, Unsupported};
use crate::types::NodeId;

/// Why the primary–secondary engine did not serve an operation.
#[derive(Debug, Clone, Error)]
pub enum PrimaryError {
    /// Not the primary, or handing the role over: `primary` (if known) serves it. Nothing
    /// was done.
    #[error("this member is not the primary")]
    NotPrimary { primary: Option<NodeId> },
    /// A primary restarted in its epoch, confirming it with a majority; nothing was done.
    #[error(
        "this member was the primary of epoch {epoch} before it restarted and is confirming its \
         epoch with the other members (a failover may have happened meanwhile); retry shortly"
    )]
    Fenced { epoch: u64 },
    #[error("member is shutting down")]
    ShuttingDown,
    #[error("compare-and-set failed: the current value is {current}")]
    CasMismatch { current: i64 },
    /// A change was not confirmed durable: it may or may not take effect (a failed sync can
    /// leave it in the file, and a restart replays the file).
    #[error("{0}")]
    NotDurable(String),
    /// Refused before anything changed (e.g. a switchover target that did not catch up).
    #[error("{0}")]
    NotApplied(String),
    /// May or may not take effect: a sync write not confirmed by every secondary in time, a
    /// write still queued at the deadline, a switchover whose promotion got no answer.
    #[error("{0}")]
    Unknown(String),
    /// Conflicts with this member's state (initialised otherwise, a switchover under way).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

impl EngineError for PrimaryError {
    fn outcome(&self) -> Outcome {
        match self {
            PrimaryError::NotPrimary { primary } => Outcome::Redirect {
                leader: *primary,
                addr: None,
            },
            PrimaryError::Fenced { .. }
            | PrimaryError::ShuttingDown
            | PrimaryError::NotApplied(_) => Outcome::NotApplied,
            PrimaryError::NotDurable(_) | PrimaryError::Unknown(_) => Outcome::Unknown,
            PrimaryError::CasMismatch { current } => Outcome::CasMismatch { current: *current },
            PrimaryError::Conflict(_) => Outcome::Conflict,
            PrimaryError::Invalid(_) => Outcome::Invalid,
            PrimaryError::Unsupported(u) => u.outcome(),
        }
    }
}

pub type PrimaryResult<T> = Result<T, PrimaryError>;

pub(super) fn store_error(e: StoreError) -> PrimaryError {
    PrimaryError::NotDurable(format!("could not make the change durable: {e}"))
}
