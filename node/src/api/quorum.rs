//! Quorum mode's peer messages (member to member, behind the token, the identity check and
//! the fault layer like every peer message): store a batch, fetch a key, compare digests.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use caplab_api::paths;

use super::error::ApiError;
use super::json_body;
use crate::engine::EngineError;
use crate::member::{Engine, Member, MemberError};
use crate::quorum::wire::{FetchRequest, StoreRequest, SyncRequest};
use crate::quorum::QuorumEngine;

/// The routes, to merge under the peer port's fault layer.
pub fn routes() -> Router<Arc<Member>> {
    Router::new()
        .route(paths::QUORUM_STORE, post(store))
        .route(paths::QUORUM_FETCH, post(fetch))
        .route(paths::QUORUM_SYNC, post(sync))
}

fn engine(m: &Member) -> Result<&Arc<QuorumEngine>, ApiError> {
    match &m.engine {
        Engine::Quorum(q) => Ok(q),
        _ => Err(ApiError::BadRequest(
            "this member does not run --replication quorum".into(),
        )),
    }
}

fn answer<T: serde::Serialize>(result: Result<T, impl EngineError>) -> Result<Response, ApiError> {
    match result {
        Ok(body) => Ok(Json(body).into_response()),
        Err(e) => Err(MemberError::new(e.outcome(), e.to_string()).into()),
    }
}

async fn store(
    State(m): State<Arc<Member>>,
    body: Result<Json<StoreRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_store(json_body(body)?).await)
}

async fn fetch(
    State(m): State<Arc<Member>>,
    body: Result<Json<FetchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(body)?;
    answer(engine(&m)?.handle_fetch(&request.key).await)
}

async fn sync(
    State(m): State<Arc<Member>>,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_sync(json_body(body)?).await)
}
