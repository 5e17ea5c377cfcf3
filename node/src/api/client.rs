//! The client API: register operations, status, metrics and health, on the client port.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use caplab_api::kv::{CasBody, Consistency, ReadParams, ValueReply, WriteBody};
use caplab_api::paths;

use super::error::ApiError;
use super::{json_body, json_by_default};
use crate::member::{Member, Reply};
use crate::register::validate_key;
use crate::types::Command;

pub fn router(member: Arc<Member>) -> Router {
    Router::new()
        .route(paths::KV, get(read).put(write))
        .route(paths::KV_CAS, post(cas))
        .merge(observability_routes())
        .fallback(super::no_such_route)
        .method_not_allowed_fallback(super::wrong_method)
        .layer(middleware::from_fn(json_by_default))
        .with_state(member)
}

/// Status, metrics and health: served on both ports.
pub fn observability_routes() -> Router<Arc<Member>> {
    Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::TRACE, get(trace))
        .route(paths::LOG_TAIL, get(log_tail))
        .route(paths::METRICS, get(metrics))
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(ready))
}

/// The read's consistency, from its query (400 naming the accepted values otherwise).
fn parse_consistency(raw: Option<&str>) -> Result<Consistency, ApiError> {
    Consistency::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A register's value as the answer of a successful operation.
pub(super) fn value_reply(key: &str, value: i64) -> Response {
    Json(ValueReply {
        key: key.to_string(),
        value,
    })
    .into_response()
}

/// Turns an operation's result into the HTTP answer and records it in the metrics.
fn respond(
    member: &Member,
    op: &str,
    key: &str,
    started: Instant,
    result: Result<Reply, ApiError>,
) -> Response {
    let (outcome, response) = match result {
        Ok(Reply::Value(value)) => ("ok", value_reply(key, value)),
        Ok(Reply::Forwarded(f)) => (f.outcome(), f.into_response()),
        Err(e) => (e.outcome(), e.into_response()),
    };
    member
        .metrics
        .observe_request(op, outcome, started.elapsed().as_secs_f64());
    response
}

/// The register key of a `/v1/kv/{key}` route: percent-decoded UTF-8 of 1–256 bytes;
/// anything else is refused with 400 and a JSON message.
struct Key(String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{}: a key is UTF-8 text, percent-encoded in the path",
                    e.body_text()
                ))
            })?;
        validate_key(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Key(key))
    }
}

async fn read(
    State(member): State<Arc<Member>>,
    Key(key): Key,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let consistency = parse_consistency(params.consistency.as_deref())?;
        Ok(member.read(&key, consistency, true).await?)
    }
    .await;
    respond(&member, "read", &key, started, result)
}

async fn write(
    State(member): State<Arc<Member>>,
    Key(key): Key,
    body: Result<Json<WriteBody>, JsonRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = json_body(body)?;
        let command = Command::Write {
            key: key.clone(),
            value: body.value,
        };
        Ok(member.write(command, true).await?)
    }
    .await;
    respond(&member, "write", &key, started, result)
}

async fn cas(
    State(member): State<Arc<Member>>,
    Key(key): Key,
    body: Result<Json<CasBody>, JsonRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = json_body(body)?;
        let command = Command::Cas {
            key: key.clone(),
            expected: body.expected,
            new: body.new,
        };
        Ok(member.write(command, true).await?)
    }
    .await;
    respond(&member, "cas", &key, started, result)
}

async fn status(State(member): State<Arc<Member>>) -> Response {
    Json(member.status().await).into_response()
}

/// `?since=MS`: events recorded at or after this time on the member's clock.
#[derive(serde::Deserialize)]
struct TraceParams {
    since: Option<u64>,
}

/// `GET /v1/trace`: the recent peer messages (`caplab_api::trace::TraceView`).
async fn trace(
    State(member): State<Arc<Member>>,
    params: Result<Query<TraceParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(e) => {
            let why = format!("{e}: give since as milliseconds since the Unix epoch");
            return ApiError::BadRequest(why).into_response();
        }
    };
    let clock_ms = crate::trace::millis(member.faults.now());
    let view = member
        .peers
        .trace
        .view(member.peers.id, clock_ms, params.since.unwrap_or(0));
    Json(view).into_response()
}

/// `?limit=N`: how many entries (1 to `caplab_api::tail::MAX_LIMIT`).
#[derive(serde::Deserialize)]
struct TailParams {
    limit: Option<usize>,
}

/// `GET /v1/log`: the last few entries of the member's log (`caplab_api::tail::LogTail`).
async fn log_tail(
    State(member): State<Arc<Member>>,
    params: Result<Query<TailParams>, QueryRejection>,
) -> Response {
    use caplab_api::tail::{DEFAULT_LIMIT, MAX_LIMIT};
    let limit = match params {
        Ok(Query(p)) => p.limit.unwrap_or(DEFAULT_LIMIT),
        Err(e) => {
            let why = format!("{e}: give limit as a whole number from 1 to {MAX_LIMIT}");
            return ApiError::BadRequest(why).into_response();
        }
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        let why = format!("limit must be 1 to {MAX_LIMIT}, got {limit}");
        return ApiError::BadRequest(why).into_response();
    }
    Json(member.log_tail(limit).await).into_response()
}

async fn metrics(State(member): State<Arc<Member>>) -> Response {
    member.refresh_gauges().await;
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        member.metrics.render(),
    )
        .into_response()
}

async fn ready(State(member): State<Arc<Member>>) -> Response {
    match member.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels() {
        assert_eq!(
            parse_consistency(None).ok(),
            Some(Consistency::Linearizable)
        );
        assert_eq!(
            parse_consistency(Some("local")).ok(),
            Some(Consistency::Local)
        );
        assert!(parse_consistency(Some("eventual")).is_err());
    }
}
