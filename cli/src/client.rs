//! A client of one member's HTTP API, and the outcome contract: `200` took effect, `503` and a
//! CAS mismatch (`409`) certainly did not, `504` and anything cut off may have.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

/// What a register operation's answer means for a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect; for a read or a write, the value the member returned.
    Ok(i64),
    /// It certainly did not take effect.
    Fail(String),
    /// A CAS whose comparison failed (`409`): it did not take effect, and the register held
    /// this value (the answer's `current`) when it was compared.
    Found(i64),
    /// It may or may not have taken effect.
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Cas,
}

/// Maps an HTTP answer to an outcome. Reads never change anything, so any failed read is a
/// `Fail`; for writes an unexpected status is treated as `Unknown`, the safe assumption.
pub fn classify(kind: Kind, status: u16, body: &Value) -> Outcome {
    let reason = || {
        body.get("error").and_then(Value::as_str).map_or_else(
            || format!("HTTP {status}"),
            |e| format!("HTTP {status}: {e}"),
        )
    };
    match status {
        200 => match body.get("value").and_then(Value::as_i64) {
            Some(v) => Outcome::Ok(v),
            None if kind == Kind::Read => {
                Outcome::Fail(format!("HTTP 200 without a value: {body}"))
            }
            None => Outcome::Unknown(format!("HTTP 200 without a value: {body}")),
        },
        _ if kind == Kind::Read => Outcome::Fail(reason()),
        409 if kind == Kind::Cas => body
            .get("current")
            .and_then(Value::as_i64)
            .map_or_else(|| Outcome::Fail(reason()), Outcome::Found),
        // 409 is a CAS whose comparison failed; 503 promises nothing was applied; 400 was refused.
        400 | 409 | 503 => Outcome::Fail(reason()),
        _ => Outcome::Unknown(reason()),
    }
}

/// A request that got no answer. `maybe_delivered`: it may have reached the member (anything
/// past connecting), so a write's outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub message: String,
    pub maybe_delivered: bool,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

impl From<reqwest::Error> for TransportError {
    fn from(error: reqwest::Error) -> Self {
        TransportError {
            message: format!("{error}"),
            maybe_delivered: !(error.is_connect() || error.is_builder()),
        }
    }
}

/// A transport error: a refused connection never reached the member; anything later might have.
pub fn classify_transport(kind: Kind, error: &TransportError) -> Outcome {
    let message = format!("transport: {}", error.message);
    if kind == Kind::Read || !error.maybe_delivered {
        Outcome::Fail(message)
    } else {
        Outcome::Unknown(message)
    }
}

/// Like [`classify`], for answers that came through the API server's proxy: the API server
/// answers for itself with a `metav1.Status` (4xx: it never forwarded the request; 5xx: it
/// could not reach the member, or lost it halfway). Only answers in the member's own shape are
/// trusted to mean "not applied".
pub fn classify_proxied(kind: Kind, status: u16, body: &Value) -> Outcome {
    let from_api_server = body.get("kind").and_then(Value::as_str) == Some("Status")
        && body.get("apiVersion").is_some();
    if from_api_server {
        let message = body.get("message").and_then(Value::as_str).unwrap_or("");
        let reason = format!("API server HTTP {status}: {message}");
        let never_forwarded = (400..500).contains(&status)
            || message.contains("connection refused")
            || message.contains("no route to host");
        return if kind == Kind::Read || never_forwarded {
            Outcome::Fail(reason)
        } else {
            Outcome::Unknown(reason)
        };
    }
    let members_own = body.get("error").is_some();
    match status {
        200 => classify(kind, status, body),
        _ if kind == Kind::Read => classify(kind, status, body),
        400 | 409 | 503 if members_own => classify(kind, status, body),
        _ => Outcome::Unknown(format!(
            "HTTP {status} through the API server proxy: {body}"
        )),
    }
}

/// `host:port` or a full `http://…` address, as a base URL.
pub fn base_url(addr: &str) -> Result<Url> {
    let text = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let url = Url::parse(&text).with_context(|| format!("bad address {addr:?}"))?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(anyhow!("bad address {addr:?}: expected host:port"));
    }
    Ok(url)
}

/// A body as JSON; a body that is not JSON as a string of its text (`null` if empty).
fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(bytes).trim().to_string();
        if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        }
    })
}

fn direct_url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

#[derive(Clone)]
enum Transport {
    /// Straight to the member's client port.
    Direct { base: Url, http: reqwest::Client },
    /// Through the API server's pod proxy (`prefix` ends in `/proxy`).
    Proxy {
        client: kube::Client,
        prefix: String,
        timeout: Duration,
    },
}

/// One member's client API, reached directly or through the Kubernetes API server.
#[derive(Clone)]
pub struct Member {
    label: String,
    transport: Transport,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("label", &self.label)
            .finish()
    }
}

impl Member {
    pub fn new(addr: &str, timeout: Duration) -> Result<Member> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Member::with_client(addr, http)
    }

    pub fn with_client(addr: &str, http: reqwest::Client) -> Result<Member> {
        Ok(Member {
            label: addr.to_string(),
            transport: Transport::Direct {
                base: base_url(addr)?,
                http,
            },
        })
    }

    /// The member in pod `pod` of `namespace`, through the API server's pod proxy.
    pub fn proxied(client: kube::Client, namespace: &str, pod: &str, timeout: Duration) -> Member {
        Member {
            label: pod.to_string(),
            transport: Transport::Proxy {
                client,
                prefix: crate::k8s::pod_proxy_prefix(namespace, pod, crate::k8s::CLIENT_PORT),
                timeout,
            },
        }
    }

    /// The address or the pod name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The request target, for messages and tests: a URL or an API server path.
    pub fn target(&self, segments: &[&str], query: &[(&str, &str)]) -> String {
        match &self.transport {
            Transport::Direct { base, .. } => direct_url(base, segments, query).to_string(),
            Transport::Proxy { prefix, .. } => crate::k8s::join_path(prefix, segments, query),
        }
    }

    /// Sends a request and returns the status and the body (see [`body_value`]).
    async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(u16, Value), TransportError> {
        match &self.transport {
            Transport::Direct { base, http } => {
                let url = direct_url(base, segments, query);
                let mut request = http.request(method, url);
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let response = request.send().await?;
                let status = response.status().as_u16();
                let bytes = response.bytes().await?;
                Ok((status, body_value(&bytes)))
            }
            Transport::Proxy {
                client,
                prefix,
                timeout,
            } => {
                let path = crate::k8s::join_path(prefix, segments, query);
                let method = http::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| {
                    TransportError {
                        message: format!("bad method: {e}"),
                        maybe_delivered: false,
                    }
                })?;
                let (status, bytes) =
                    crate::k8s::proxy_send(client, method, &path, body.as_ref(), *timeout)
                        .await
                        .map_err(|e| TransportError {
                            message: e.message,
                            maybe_delivered: true,
                        })?;
                Ok((status, body_value(&bytes)))
            }
        }
    }

    pub async fn raw_read(
        &self,
        key: &str,
        consistency: &str,
    ) -> Result<(u16, Value), TransportError> {
        self.send(
            reqwest::Method::GET,
            &["v1", "kv", key],
            &[("consistency", consistency)],
            None,
        )
        .await
    }

    pub async fn raw_write(&self, key: &str, value: i64) -> Result<(u16, Value), TransportError> {
        self.send(
            reqwest::Method::PUT,
            &["v1", "kv", key],
            &[],
            Some(json!({ "value": value })),
        )
        .await
    }

    pub async fn raw_cas(
        &self,
        key: &str,
        expected: i64,
        new: i64,
    ) -> Result<(u16, Value), TransportError> {
        self.send(
            reqwest::Method::POST,
            &["v1", "kv", key, "cas"],
            &[],
            Some(json!({ "expected": expected, "new": new })),
        )
        .await
    }

    pub async fn read(&self, key: &str, consistency: &str) -> Outcome {
        self.outcome(Kind::Read, self.raw_read(key, consistency).await)
    }

    pub async fn write(&self, key: &str, value: i64) -> Outcome {
        self.outcome(Kind::Write, self.raw_write(key, value).await)
    }

    pub async fn cas(&self, key: &str, expected: i64, new: i64) -> Outcome {
        self.outcome(Kind::Cas, self.raw_cas(key, expected, new).await)
    }

    /// `GET /readyz`: `Ok(())` when the member says it is ready, else why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self
            .send(reqwest::Method::GET, &["readyz"], &[], None)
            .await
        {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => {
                let why = body
                    .as_str()
                    .or_else(|| body.get("error").and_then(Value::as_str))
                    .unwrap_or("not ready");
                Err(format!("{}: HTTP {status}: {why}", self.label))
            }
            Err(e) => Err(format!("{}: {e}", self.label)),
        }
    }

    pub async fn status(&self) -> Result<Value> {
        let target = self.target(&["v1", "status"], &[]);
        let (status, body) = self
            .send(reqwest::Method::GET, &["v1", "status"], &[], None)
            .await
            .with_context(|| format!("GET {target}"))?;
        if status != StatusCode::OK.as_u16() {
            return Err(anyhow!("GET {target}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// Maps an answer (or its absence) to an outcome under the contract of the transport.
    pub fn outcome(&self, kind: Kind, result: Result<(u16, Value), TransportError>) -> Outcome {
        match (result, &self.transport) {
            (Ok((status, body)), Transport::Direct { .. }) => classify(kind, status, &body),
            (Ok((status, body)), Transport::Proxy { .. }) => classify_proxied(kind, status, &body),
            (Err(e), _) => classify_transport(kind, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_contract() {
        let ok = json!({"key": "x", "value": 4});
        assert_eq!(classify(Kind::Write, 200, &ok), Outcome::Ok(4));
        assert_eq!(classify(Kind::Read, 200, &ok), Outcome::Ok(4));
        let mismatch = json!({"error": "compare-and-set failed", "current": 3});
        assert_eq!(classify(Kind::Cas, 409, &mismatch), Outcome::Found(3));
        let without_current = json!({"error": "compare-and-set failed"});
        assert!(matches!(
            classify(Kind::Cas, 409, &without_current),
            Outcome::Fail(_)
        ));
        let not_applied = json!({"error": "no leader", "outcome": "not-applied"});
        assert!(
            matches!(classify(Kind::Write, 503, &not_applied), Outcome::Fail(m) if m.contains("no leader"))
        );
        let unknown = json!({"error": "timed out", "outcome": "unknown"});
        assert!(matches!(
            classify(Kind::Write, 504, &unknown),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify(Kind::Cas, 504, &unknown),
            Outcome::Unknown(_)
        ));
        // A read changes nothing: whatever went wrong, it did not take effect.
        assert!(matches!(
            classify(Kind::Read, 504, &unknown),
            Outcome::Fail(_)
        ));
        // Unexpected answers to writes are not trusted to mean "not applied".
        assert!(matches!(
            classify(Kind::Write, 500, &Value::Null),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify(Kind::Write, 200, &Value::Null),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify(Kind::Read, 200, &Value::Null),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn the_outcome_contract_through_the_api_server_proxy() {
        let status = |code: u16, message: &str| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": message, "code": code})
        };
        // The member's own answers mean what they mean directly.
        let ok = json!({"key": "x", "value": 4});
        assert_eq!(classify_proxied(Kind::Write, 200, &ok), Outcome::Ok(4));
        let not_applied = json!({"error": "no leader", "outcome": "not-applied"});
        assert!(matches!(
            classify_proxied(Kind::Write, 503, &not_applied),
            Outcome::Fail(_)
        ));
        let mismatch = json!({"error": "compare-and-set failed", "current": 3});
        assert_eq!(
            classify_proxied(Kind::Cas, 409, &mismatch),
            Outcome::Found(3)
        );
        // The API server refused or could not connect: never forwarded.
        for (code, message) in [
            (403, "pods \"x-0\" is forbidden"),
            (404, "pods \"x-0\" not found"),
            (503, "error trying to reach service: dial tcp 10.0.0.1:8080: connect: connection refused"),
        ] {
            assert!(
                matches!(classify_proxied(Kind::Write, code, &status(code, message)), Outcome::Fail(m) if m.contains("API server")),
                "{code} {message}"
            );
        }
        // Lost halfway: the write may have been applied.
        let lost = status(503, "error trying to reach service: EOF");
        assert!(matches!(
            classify_proxied(Kind::Cas, 503, &lost),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify_proxied(Kind::Read, 503, &lost),
            Outcome::Fail(_)
        ));
        // A 503 not in the member's shape (e.g. plain text from a gateway) is not trusted.
        assert!(matches!(
            classify_proxied(Kind::Write, 503, &Value::Null),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify_proxied(Kind::Write, 502, &json!({"error": "bad gateway"})),
            Outcome::Unknown(_)
        ));
        // Transport errors: a refused connection never got anywhere.
        let refused = TransportError {
            message: "refused".into(),
            maybe_delivered: false,
        };
        let cut = TransportError {
            message: "timed out".into(),
            maybe_delivered: true,
        };
        assert!(matches!(
            classify_transport(Kind::Write, &refused),
            Outcome::Fail(_)
        ));
        assert!(matches!(
            classify_transport(Kind::Write, &cut),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            classify_transport(Kind::Read, &cut),
            Outcome::Fail(_)
        ));
    }

    #[tokio::test]
    async fn proxied_members_address_the_pod_proxy() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let client = kube::Client::try_from(config).expect("client");
        let m = Member::proxied(client, "lab", "raft5-2", Duration::from_secs(1));
        assert_eq!(m.label(), "raft5-2");
        assert_eq!(
            m.target(&["v1", "kv", "k 1"], &[("consistency", "linearizable")]),
            "/api/v1/namespaces/lab/pods/raft5-2:8080/proxy/v1/kv/k%201?consistency=linearizable"
        );
        assert_eq!(
            m.target(&["v1", "kv", "x", "cas"], &[]),
            "/api/v1/namespaces/lab/pods/raft5-2:8080/proxy/v1/kv/x/cas"
        );
    }

    #[test]
    fn addresses_and_urls() {
        let m = Member::with_client("127.0.0.1:8080", reqwest::Client::new()).expect("valid");
        assert_eq!(
            m.target(&["v1", "kv", "x"], &[]),
            "http://127.0.0.1:8080/v1/kv/x"
        );
        assert_eq!(
            m.target(&["v1", "kv", "a/b c", "cas"], &[]),
            "http://127.0.0.1:8080/v1/kv/a%2Fb%20c/cas"
        );
        let m =
            Member::with_client("http://node-0.demo:80/", reqwest::Client::new()).expect("valid");
        assert_eq!(
            m.target(&["v1", "status"], &[]),
            "http://node-0.demo/v1/status"
        );
        assert_eq!(
            m.target(&["v1", "kv", "x"], &[("consistency", "local")]),
            "http://node-0.demo/v1/kv/x?consistency=local"
        );
        assert!(base_url("").is_err());
        assert!(base_url("mailto:x").is_err());
    }
}
