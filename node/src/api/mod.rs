//! The HTTP surface of a member: the client API (client port) and the peer API (Raft RPCs,
//! forwarded operations and the admin API, on the peer port).

pub mod client;
pub mod error;
pub mod peer;
pub mod quorum;
pub mod twopc;

use axum::extract::rejection::JsonRejection;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use caplab_api::error::ErrorBody;

use error::ApiError;

/// Unwraps a JSON body, turning every kind of rejection into a 400 with a JSON message.
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Any route a port does not serve: 404 with a JSON error naming it, where the routes are
/// listed (instead of axum's empty 404).
pub async fn no_such_route(method: Method, uri: Uri) -> (StatusCode, Json<ErrorBody>) {
    let message = format!(
        "no route {method} {}: see README.md, \"The member (caplab-node)\", for the routes of each port",
        uri.path()
    );
    (StatusCode::NOT_FOUND, Json(ErrorBody::new(message)))
}

/// A known route called with a method it does not take: 405 with a JSON error.
pub async fn wrong_method(method: Method, uri: Uri) -> (StatusCode, Json<ErrorBody>) {
    let message = format!("{} does not take {method}", uri.path());
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(ErrorBody::new(message)),
    )
}

/// Takes a request body sent without a JSON content type as JSON: curl's `-d` sends none but
/// `application/x-www-form-urlencoded`, and every body this API accepts is JSON. A body that
/// is not JSON is still refused (400, saying what did not parse); other declared types get 415.
pub async fn json_by_default(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0");
    let untyped = headers.get(CONTENT_TYPE).is_none_or(|t| {
        t.to_str()
            .is_ok_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    });
    if has_body && untyped {
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    next.run(request).await
}
