//! The live view's HTTP server (axum): `GET /` the page, `GET /state` the aggregated JSON
//! the [`Hub`] last built; anything else `404 {"error": ...}`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::hub::Hub;

/// The page's JSON path.
pub const STATE_PATH: &str = "/state";

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
    let json = shared.hub.latest();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found() -> Response {
    let body = serde_json::json!({"error": format!("no such page: open / (the view) or {STATE_PATH} (its JSON)")});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
