//! The live view's HTTP server (axum): `GET /` the page, `GET /state` the aggregated JSON
//! the [`Hub`] last built, `GET /trace?window=S` the message diagram; anything else `404 {"error": ...}`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::hub::Hub;

/// The page's JSON path.
pub const STATE_PATH: &str = "/state";
/// The message diagram's JSON path (`?window=SECONDS`, 1 to 60, default 10).
pub const TRACE_PATH: &str = "/trace";
/// The longest diagram window, in seconds: a member's ring holds a few seconds of a busy
/// cluster's messages, longer windows would only show its oldest ones missing.
pub const MAX_WINDOW_SECONDS: u64 = 60;

struct Shared {
    page: String,
    hub: Hub,
}

/// Binds `listen` (a clear error naming `--listen` when it cannot) and returns the listener
/// with the address it got (port 0 picks a free one).
pub async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: choose another --listen host:port"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    Ok((listener, addr))
}

/// Serves the page and the hub's JSON until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, hub: Hub) -> Result<()> {
    let shared = Arc::new(Shared {
        page: super::page::html(),
        hub,
    });
    let app = Router::new()
        .route("/", get(page))
        .route(STATE_PATH, get(state))
        .route(TRACE_PATH, get(trace))
        .fallback(not_found)
        .with_state(shared);
    axum::serve(listener, app)
        .await
        .context("serving the live view")
}

async fn page(State(shared): State<Arc<Shared>>) -> Html<String> {
    Html(shared.page.clone())
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    json_response(shared.hub.latest().as_str().to_owned())
}

/// Cached JSON, never cached again by the browser.
fn json_response(json: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TraceParams {
    window: Option<u64>,
}

async fn trace(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<TraceParams>, QueryRejection>,
) -> Response {
    let window = match params {
        Ok(Query(p)) => p.window.unwrap_or(10),
        Err(e) => return bad_request(format!("{e}: give window as whole seconds")),
    };
    if !(1..=MAX_WINDOW_SECONDS).contains(&window) {
        return bad_request(format!(
            "window must be 1 to {MAX_WINDOW_SECONDS} seconds, got {window}"
        ));
    }
    json_response(shared.hub.trace(window * 1000).await.as_str().to_owned())
}

fn bad_request(error: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}

async fn not_found() -> Response {
    let body = serde_json::json!({"error": format!("no such page: open / (the view) or {STATE_PATH} (its JSON)")});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
