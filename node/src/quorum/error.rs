//! The quorum engine's errors; the HTTP layer maps them to the member's error contract.

use thiserror::Error;

use super::store::StoreError;
use crate::engine::Unsupported;

#[derive(Debug, Error)]
pub enum QuorumError {
    /// 400: the request cannot work in this mode or with these parameters.
    #[error("{0}")]
    BadRequest(String),
    /// 503 not-applied: the operation certainly had no effect.
    #[error("{0}")]
    NotApplied(String),
    /// 504 unknown: the write may have been stored by some replicas (and may spread).
    #[error("{0}")]
    Unknown(String),
    /// 503 not-applied: this member's own store failed before anything was stored.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// An operation of another mode (e.g. promote), or one this mode lacks.
    #[error(transparent)]
    Unsupported(Unsupported),
}

impl QuorumError {
    /// CAS has no atomic meaning without consensus: refused in this mode.
    pub fn cas_refused() -> Self {
        QuorumError::BadRequest(
            "compare-and-set needs consensus, which a leaderless quorum does not have (two \
             coordinators can both see the expected value, and last-writer-wins keeps one \
             write): use --replication raft, async or sync (spec.replication raft|async|sync), \
             where the leader or primary applies CAS atomically"
                .into(),
        )
    }
}
