//! The 2pc engine's errors; the HTTP layer maps them to the member's error contract.

use thiserror::Error;

use super::store::StoreError;
use crate::engine::{EngineError, Outcome, Unsupported};
use crate::types::NodeId;

#[derive(Debug, Error)]
pub enum TwoPcError {
    /// Not the coordinator: the member forwards the operation to `coordinator`.
    #[error("this member is a participant; the coordinator is {coordinator:?}")]
    Redirect { coordinator: Option<NodeId> },
    /// 400: the request cannot work here.
    #[error("{0}")]
    BadRequest(String),
    /// 409: a participant voted no (an injected veto, a key held by another transaction);
    /// certainly not applied. The message names the member and why.
    #[error("{0}")]
    Refused(String),
    /// 409 with the current value: a compare-and-set precondition did not hold.
    #[error("compare-and-set failed: the current value is {current}")]
    CasMismatch { current: i64 },
    /// 503 not-applied: certainly had no effect (aborted, or never begun).
    #[error("{0}")]
    NotApplied(String),
    /// 504 unknown: decided commit (or maybe), but not every participant acknowledged yet.
    #[error("{0}")]
    Unknown(String),
    /// 503 not-applied: this member's store failed before anything was decided.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// An operation of another mode (e.g. promote), or one this mode lacks.
    #[error(transparent)]
    Unsupported(Unsupported),
}

impl EngineError for TwoPcError {
    fn outcome(&self) -> Outcome {
        match self {
            TwoPcError::Redirect { coordinator } => Outcome::Redirect {
                leader: *coordinator,
                addr: None,
            },
            TwoPcError::BadRequest(_) => Outcome::Invalid,
            TwoPcError::Refused(_) => Outcome::Conflict,
            TwoPcError::CasMismatch { current } => Outcome::CasMismatch { current: *current },
            TwoPcError::NotApplied(_) | TwoPcError::Storage(_) => Outcome::NotApplied,
            TwoPcError::Unknown(_) => Outcome::Unknown,
            TwoPcError::Unsupported(u) => u.outcome(),
        }
    }
}

impl From<Unsupported> for TwoPcError {
    fn from(u: Unsupported) -> Self {
        TwoPcError::Unsupported(u)
    }
}
