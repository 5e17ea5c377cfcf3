//! The HTTP surface of a member: the client API (client port) and the peer API (Raft RPCs,
//! forwarded operations and the admin API, on the peer port).

pub mod client;
pub mod error;
pub mod peer;

use axum::extract::rejection::JsonRejection;
use axum::Json;

use error::ApiError;

/// Unwraps a JSON body, turning every kind of rejection into a 400 with a JSON message.
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}
