//! What every replication engine answers with: a value, a redirect to the member that can
//! serve the operation (the Raft leader or the primary), or an API error.

use crate::api::error::ApiError;
use crate::types::NodeId;

#[derive(Debug, Clone)]
pub enum EngineError {
    /// This member cannot serve the operation; `leader` (if known) can.
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    Api(ApiError),
}

impl From<ApiError> for EngineError {
    fn from(e: ApiError) -> Self {
        EngineError::Api(e)
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
