//! How a [`crate::MemberClient`] reaches a member: [`HttpTransport`] straight over HTTP (to
//! `host:port` or any base URL, path prefix included), or any other [`Transport`], such as
//! the Kubernetes API server's pod proxy (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy`),
//! which a caller implements with its own Kubernetes client.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use thiserror::Error;

use crate::identity::INCARNATION_HEADER;
use crate::paths::Port;

/// A boxed future, as [`Transport::send`] returns it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request as the client built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    pub method: Method,
    pub port: Port,
    /// Path and query, percent-encoded, starting with `/` (see [`crate::paths`]).
    pub path: String,
    /// Header name (lowercase) and value: the bearer token and the identity headers.
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// How long to wait for the whole answer.
    pub timeout: Duration,
}

/// A member's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAnswer {
    pub status: u16,
    /// The answer's `x-caplab-incarnation` header (peer port).
    pub incarnation: Option<String>,
    pub body: Vec<u8>,
}

impl WireAnswer {
    /// The body as JSON; a body that is not JSON as a string of its text (`null` if empty).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&self.body).trim().to_string();
            if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(text)
            }
        })
    }
}

/// A request that got no answer from the member.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
    /// Whether the request may have reached the member (anything past connecting): a write's
    /// outcome is then unknown. `false` only when it certainly never left (connection
    /// refused, a proxy that refused to forward it).
    pub maybe_delivered: bool,
}

impl From<reqwest::Error> for TransportError {
    fn from(error: reqwest::Error) -> Self {
        TransportError {
            message: error.to_string(),
            maybe_delivered: !(error.is_connect() || error.is_builder()),
        }
    }
}

/// Carries [`WireRequest`]s to one member.
pub trait Transport: Send + Sync {
    /// Sends the request; any answer (whatever its status) is `Ok`.
    fn send(&self, request: WireRequest) -> BoxFuture<'_, Result<WireAnswer, TransportError>>;

    /// Where a request to `port` and `path` goes, for messages (a URL or a proxy path).
    fn target(&self, port: Port, path: &str) -> String;
}

/// An address that is not `host:port` or an `http(s)://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad member address {0:?}: expected host:port or http(s)://host:port[/prefix]")]
pub struct BadAddress(pub String);

/// Plain HTTP to a member's two listeners.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    client_base: String,
    peer_base: String,
}

impl HttpTransport {
    /// The member on `host` at its standard ports (8080 and 7000): a pod IP or DNS name.
    pub fn host(http: reqwest::Client, host: &str) -> Result<Self, BadAddress> {
        let at = |port: Port| format!("{host}:{}", port.number());
        Self::new(http, &at(Port::Client), &at(Port::Peer))
    }

    /// The member whose client and peer listeners are at these addresses: each `host:port`,
    /// or a base URL `http(s)://host[:port][/prefix]` that paths are appended to.
    pub fn new(http: reqwest::Client, client: &str, peer: &str) -> Result<Self, BadAddress> {
        Ok(Self {
            http,
            client_base: base_url(client)?,
            peer_base: base_url(peer)?,
        })
    }

    fn url(&self, port: Port, path: &str) -> String {
        let base = match port {
            Port::Client => &self.client_base,
            Port::Peer => &self.peer_base,
        };
        format!("{base}{path}")
    }
}

/// `host:port` or a URL, as a base without a trailing slash.
fn base_url(addr: &str) -> Result<String, BadAddress> {
    let bad = || BadAddress(addr.to_string());
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port_ok) = match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => (host, port.parse::<u16>().is_ok()),
        _ => (authority, true),
    };
    if host.is_empty() || !port_ok || authority.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Transport for HttpTransport {
    fn send(&self, request: WireRequest) -> BoxFuture<'_, Result<WireAnswer, TransportError>> {
        Box::pin(async move {
            let url = self.url(request.port, &request.path);
            let mut builder = self
                .http
                .request(request.method, url)
                .timeout(request.timeout);
            for (name, value) in request.headers {
                builder = builder.header(name, value);
            }
            if let Some(body) = request.body {
                builder = builder.header(CONTENT_TYPE, "application/json").body(body);
            }
            let response = builder.send().await?;
            let status = response.status().as_u16();
            let incarnation = response
                .headers()
                .get(INCARNATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.bytes().await.map_err(|e| TransportError {
                message: format!("the answer was cut off: {e}"),
                maybe_delivered: true,
            })?;
            Ok(WireAnswer {
                status,
                incarnation,
                body: body.to_vec(),
            })
        })
    }

    fn target(&self, port: Port, path: &str) -> String {
        self.url(port, path)
    }
}

/// The `authorization` header value for a bearer token.
pub(crate) fn bearer(token: &str) -> (&'static str, String) {
    (AUTHORIZATION.as_str(), format!("Bearer {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let t = HttpTransport::new(
            reqwest::Client::new(),
            "127.0.0.1:8080",
            "https://api.example:6443/api/v1/namespaces/lab/pods/demo-0:7000/proxy/",
        )
        .unwrap();
        assert_eq!(
            t.target(Port::Client, "/v1/kv/x"),
            "http://127.0.0.1:8080/v1/kv/x"
        );
        assert_eq!(
            t.target(Port::Peer, "/v1/admin/faults"),
            "https://api.example:6443/api/v1/namespaces/lab/pods/demo-0:7000/proxy/v1/admin/faults"
        );
        let pod = HttpTransport::host(reqwest::Client::new(), "10.0.0.5").unwrap();
        assert_eq!(pod.target(Port::Peer, "/x"), "http://10.0.0.5:7000/x");
        for bad in ["", ":80", "mailto:x", "ftp://h:1", "h o:1"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_as_json_or_text() {
        let answer = |body: &[u8]| WireAnswer {
            status: 200,
            incarnation: None,
            body: body.to_vec(),
        };
        assert_eq!(answer(br#"{"a":1}"#).json(), serde_json::json!({"a": 1}));
        assert_eq!(answer(b"ready\n").json(), serde_json::json!("ready"));
        assert_eq!(answer(b"").json(), serde_json::Value::Null);
    }
}
