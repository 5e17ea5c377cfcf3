//! The error contract shared by every endpoint: JSON `{"error": "…"}` with a status code that
//! tells a client whether its operation took effect (503 certainly not, 504 maybe); the body
//! and the contract are `caplab_api::error`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use caplab_api::error::ErrorBody;
use thiserror::Error;

use crate::engine::Outcome;
use crate::identity::Misdirected;
use crate::member::MemberError;
use crate::network::Relayed;

#[derive(Debug, Clone, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("compare-and-set failed: the current value is {current}")]
    CasMismatch { current: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotImplemented(String),
    /// A peer message meant for another cluster, member or incarnation (421).
    #[error("{0}")]
    Misdirected(Misdirected),
    /// The operation certainly did not take effect.
    #[error("{0}")]
    NotApplied(String),
    /// The operation may or may not have taken effect.
    #[error("{0}")]
    Unknown(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorBody::new(message)),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorBody::new(message)),
            ApiError::CasMismatch { current } => (
                StatusCode::CONFLICT,
                ErrorBody::cas_mismatch(message, current),
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorBody::new(message)),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, ErrorBody::new(message)),
            ApiError::Misdirected(m) => (
                StatusCode::MISDIRECTED_REQUEST,
                ErrorBody::misdirected(message, m.kind.reason()),
            ),
            ApiError::NotApplied(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::not_applied(message),
            ),
            ApiError::Unknown(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorBody::unknown(message)),
        };
        (status, Json(body)).into_response()
    }
}

impl ApiError {
    /// The outcome label used in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::CasMismatch { .. } => "cas-mismatch",
            ApiError::Conflict(_) => "conflict",
            ApiError::NotImplemented(_) => "not-implemented",
            ApiError::Misdirected(_) => "misdirected",
            ApiError::NotApplied(_) => "not-applied",
            ApiError::Unknown(_) => "unknown",
        }
    }
}

impl From<MemberError> for ApiError {
    /// The member's classification of a refusal as the HTTP answer it gets (a redirect that
    /// reaches this layer could not be forwarded: not applied).
    fn from(e: MemberError) -> Self {
        let MemberError { outcome, message } = e;
        match outcome {
            Outcome::Redirect { .. } | Outcome::NotApplied => ApiError::NotApplied(message),
            Outcome::Unknown => ApiError::Unknown(message),
            Outcome::CasMismatch { current } => ApiError::CasMismatch { current },
            Outcome::Conflict => ApiError::Conflict(message),
            Outcome::Invalid => ApiError::BadRequest(message),
            Outcome::NotSupported => ApiError::NotImplemented(message),
        }
    }
}

/// Another member's answer, relayed unchanged (`Relayed` is declared in `network.rs`, which
/// knows nothing of HTTP responses).
impl Relayed {
    /// The outcome label used in metrics.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            200..=299 => "ok",
            409 => "cas-mismatch",
            503 => "not-applied",
            504 => "unknown",
            _ => "error",
        }
    }
}

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        (status, [("content-type", "application/json")], self.body).into_response()
    }
}
