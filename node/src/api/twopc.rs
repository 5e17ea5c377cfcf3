//! 2pc mode's peer messages (member to member, behind the token, the identity check and the
//! fault layer like every peer message): PREPARE, the decision, the in-doubt question and the
//! membership; and the admin call that forces a heuristic decision.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use caplab_api::admin::{Ack, HeuristicRequest};
use caplab_api::paths;

use super::error::ApiError;
use super::json_body;
use crate::engine::EngineError;
use crate::member::{Engine, Member, MemberError};
use crate::twopc::wire::{DecideRequest, MembersRequest, PrepareRequest, QueryRequest};
use crate::twopc::TwoPcEngine;

/// The peer routes, to merge under the peer port's fault layer.
pub fn routes() -> Router<Arc<Member>> {
    Router::new()
        .route(paths::TWOPC_PREPARE, post(prepare))
        .route(paths::TWOPC_DECIDE, post(decide))
        .route(paths::TWOPC_QUERY, post(query))
        .route(paths::TWOPC_MEMBERS, post(members))
}

/// The admin route (token and identity checked, no fault layer: a person's call).
pub fn admin_routes() -> Router<Arc<Member>> {
    Router::new().route(paths::ADMIN_TWOPC_DECIDE, post(force))
}

fn engine(m: &Member) -> Result<&Arc<TwoPcEngine>, ApiError> {
    match &m.engine {
        Engine::TwoPc(e) => Ok(e),
        _ => Err(ApiError::BadRequest(
            "this member does not run --replication 2pc".into(),
        )),
    }
}

fn answer<T: serde::Serialize>(result: Result<T, impl EngineError>) -> Result<Response, ApiError> {
    match result {
        Ok(body) => Ok(Json(body).into_response()),
        Err(e) => Err(MemberError::new(e.outcome(), e.to_string()).into()),
    }
}

async fn prepare(
    State(m): State<Arc<Member>>,
    body: Result<Json<PrepareRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_prepare(json_body(body)?).await)
}

async fn decide(
    State(m): State<Arc<Member>>,
    body: Result<Json<DecideRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_decide(json_body(body)?).await)
}

async fn query(
    State(m): State<Arc<Member>>,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_query(json_body(body)?).await)
}

async fn members(
    State(m): State<Arc<Member>>,
    body: Result<Json<MembersRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    answer(engine(&m)?.handle_members(json_body(body)?).await)
}

async fn force(
    State(m): State<Arc<Member>>,
    body: Result<Json<HeuristicRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let HeuristicRequest { txid, decision } = json_body(body)?;
    let forced = engine(&m)?.force(txid, decision).await.map(|()| Ack::OK);
    answer(forced)
}
