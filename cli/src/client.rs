//! The CLI's access to one member: [`caplab_api::MemberClient`] over plain HTTP or through
//! the Kubernetes API server's pod proxy ([`crate::pod_proxy`]), and what a register
//! operation's result means for a history ([`Outcome`]), read from the client's error
//! contract (see [`caplab_api::error`]): certainly not applied, or maybe applied.

use std::time::Duration;

use anyhow::{Context, Result};
use caplab_api::kv::{CasBody, Consistency, WriteBody};
use caplab_api::paths::{self, Port};
use caplab_api::status::{Readiness, Status};
use caplab_api::tail::LogTail;
use caplab_api::trace::TraceView;
use caplab_api::transport::TransportError;
use caplab_api::{MemberClient, MemberError};
use reqwest::Method;
use serde_json::Value;

use crate::k8s::ClusterRef;
use crate::pod_proxy::PodProxy;

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

/// The outcome of a register operation's result. A read never changes anything, so any
/// failed read is a `Fail`; otherwise [`MemberError::maybe_applied`] decides.
pub fn outcome(kind: Kind, result: Result<i64, MemberError>) -> Outcome {
    let error = match result {
        Ok(value) => return Outcome::Ok(value),
        Err(error) => error,
    };
    match (kind, error.cas_current()) {
        (Kind::Read, _) => Outcome::Fail(error.to_string()),
        (Kind::Cas, Some(current)) => Outcome::Found(current),
        _ if error.maybe_applied() => Outcome::Unknown(error.to_string()),
        _ => Outcome::Fail(error.to_string()),
    }
}

/// One member's client API, reached directly or through the Kubernetes API server.
#[derive(Clone)]
pub struct Member {
    label: String,
    api: MemberClient,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("label", &self.label)
            .finish()
    }
}

/// Every call of a CLI member client may take `timeout` (the CLI makes no admin calls).
fn timeouts(timeout: Duration) -> caplab_api::client::Timeouts {
    caplab_api::client::Timeouts {
        request: timeout,
        blocking: timeout,
    }
}

impl Member {
    /// The member whose client listener is at `addr` (`host:port` or a base URL); each
    /// request may take `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Result<Member> {
        let http = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Member::with_client(addr, http, timeout)
    }

    /// Like [`Member::new`], over a shared HTTP client (its connection pool).
    pub fn with_client(addr: &str, http: reqwest::Client, timeout: Duration) -> Result<Member> {
        // Only the client port is used: the peer address is never called.
        let api = MemberClient::at(http, addr, addr)
            .with_context(|| format!("bad address {addr:?}: expected host:port"))?;
        Ok(Member {
            label: addr.to_string(),
            api: api.with_timeouts(timeouts(timeout)),
        })
    }

    /// The member in pod `pod` of `cluster`'s namespace, through the API server's pod proxy,
    /// over the client that never retries member calls ([`ClusterRef::members_client`]).
    pub fn proxied(cluster: &ClusterRef, pod: &str, timeout: Duration) -> Member {
        let proxy = PodProxy::new(cluster, pod);
        Member {
            label: pod.to_string(),
            api: MemberClient::new(proxy).with_timeouts(timeouts(timeout)),
        }
    }

    /// The address or the pod name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Reads register `key` with `consistency` (`linearizable` or `local`; anything else is
    /// a `Fail`): `Ok(value)`, or why not.
    pub async fn read(&self, key: &str, consistency: &str) -> Outcome {
        let consistency = match consistency.parse::<Consistency>() {
            Ok(c) => c,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        outcome(Kind::Read, self.api.read(key, consistency).await)
    }

    /// Writes `value` to register `key`: `Ok(value)`, `Fail` or `Unknown`.
    pub async fn write(&self, key: &str, value: i64) -> Outcome {
        outcome(Kind::Write, self.api.write(key, value).await)
    }

    /// Sets register `key` to `new` if it holds `expected`: `Ok(new)`, `Found(current)` when
    /// the comparison failed, `Fail` or `Unknown`.
    pub async fn cas(&self, key: &str, expected: i64, new: i64) -> Outcome {
        outcome(Kind::Cas, self.api.cas(key, expected, new).await)
    }

    /// A register operation's answer as it came, whatever its status: `caplab kv` prints it.
    pub async fn raw(&self, op: &RawOp<'_>) -> Result<(u16, Value), TransportError> {
        let (method, path, body) = match *op {
            RawOp::Read { key, consistency } => {
                (Method::GET, paths::kv_read(key, consistency), None)
            }
            RawOp::Write { key, value } => {
                let body = serde_json::to_value(WriteBody { value }).ok();
                (Method::PUT, paths::kv(key), body)
            }
            RawOp::Cas { key, expected, new } => {
                let body = serde_json::to_value(CasBody { expected, new }).ok();
                (Method::POST, paths::kv_cas(key), body)
            }
        };
        let answer = self
            .api
            .send_raw(method, Port::Client, &path, body.as_ref())
            .await?;
        Ok((answer.status, answer.json()))
    }

    /// `GET /readyz`: `Ok(())` when the member says it is ready, else why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self.api.ready().await {
            Ok(Readiness::Ready) => Ok(()),
            Ok(Readiness::NotReady(why)) => Err(format!("{}: HTTP 503: {why}", self.label)),
            Err(e) => Err(format!("{}: {}", self.label, e.message())),
        }
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, MemberError> {
        self.api.status().await
    }

    /// `GET /v1/trace?since=MS`: the member's recent peer messages (`since` on its clock).
    pub async fn trace(&self, since: u64) -> Result<TraceView, String> {
        let path = format!(
            "{}?{}={since}",
            paths::TRACE,
            caplab_api::trace::SINCE_PARAM
        );
        self.get_json(&path, "a trace", paths::TRACE).await
    }

    /// `GET /v1/log?limit=N`: the last `limit` entries of the member's log.
    pub async fn log_tail(&self, limit: usize) -> Result<LogTail, String> {
        let path = format!(
            "{}?{}={limit}",
            paths::LOG_TAIL,
            caplab_api::tail::LIMIT_PARAM
        );
        self.get_json(&path, "a log tail", paths::LOG_TAIL).await
    }

    /// A read-only JSON route on the client port; `what` and `route` word the error when the
    /// answer is not the type (an older member image).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
        route: &str,
    ) -> Result<T, String> {
        let answer = self
            .api
            .send_raw(Method::GET, Port::Client, path, None)
            .await
            .map_err(|e| format!("{}: {e}", self.label))?;
        if answer.status != 200 {
            return Err(format!(
                "{}: HTTP {}: {}",
                self.label,
                answer.status,
                answer.json()
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "{}: not {what} ({e}): is the member older than {route}?",
                self.label
            )
        })
    }
}

/// A register operation of `caplab kv`.
#[derive(Debug, Clone, Copy)]
pub enum RawOp<'a> {
    Read {
        key: &'a str,
        consistency: Consistency,
    },
    Write {
        key: &'a str,
        value: i64,
    },
    Cas {
        key: &'a str,
        expected: i64,
        new: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_api::client::classify;

    fn target(m: &Member, path: &str) -> String {
        m.api.target(Port::Client, path)
    }

    fn answered(status: u16, body: &str) -> Result<i64, MemberError> {
        Err(classify("t".into(), status, body.as_bytes()))
    }

    #[test]
    fn the_outcome_contract() {
        assert_eq!(outcome(Kind::Write, Ok(4)), Outcome::Ok(4));
        let mismatch = r#"{"error": "compare-and-set failed", "current": 3}"#;
        assert_eq!(
            outcome(Kind::Cas, answered(409, mismatch)),
            Outcome::Found(3)
        );
        let without_current = r#"{"error": "compare-and-set failed"}"#;
        assert!(matches!(
            outcome(Kind::Cas, answered(409, without_current)),
            Outcome::Fail(_)
        ));
        let not_applied = r#"{"error": "no leader", "outcome": "not-applied"}"#;
        assert!(
            matches!(outcome(Kind::Write, answered(503, not_applied)), Outcome::Fail(m) if m.contains("no leader"))
        );
        let unknown = r#"{"error": "timed out", "outcome": "unknown"}"#;
        for kind in [Kind::Write, Kind::Cas] {
            assert!(matches!(
                outcome(kind, answered(504, unknown)),
                Outcome::Unknown(_)
            ));
        }
        // A read changes nothing: whatever went wrong, it did not take effect.
        assert!(matches!(
            outcome(Kind::Read, answered(504, unknown)),
            Outcome::Fail(_)
        ));
        // Answers not in the member's shape are not trusted to mean "not applied".
        assert!(matches!(
            outcome(Kind::Write, answered(500, "")),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            outcome(Kind::Write, answered(503, "upstream connect error")),
            Outcome::Unknown(_)
        ));
        let bad_answer = Err(MemberError::BadAnswer {
            target: "t".into(),
            message: "no value".into(),
        });
        assert!(matches!(
            outcome(Kind::Write, bad_answer.clone()),
            Outcome::Unknown(_)
        ));
        assert!(matches!(outcome(Kind::Read, bad_answer), Outcome::Fail(_)));
        // No connection: the request never reached the member.
        let refused = Err(MemberError::Unavailable {
            target: "t".into(),
            message: "connection refused".into(),
        });
        assert!(matches!(outcome(Kind::Write, refused), Outcome::Fail(_)));
    }

    #[tokio::test]
    async fn proxied_members_address_the_pod_proxy() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let cluster = ClusterRef::from_config(config, "lab".into(), "raft5").expect("clients");
        let m = Member::proxied(&cluster, "raft5-2", Duration::from_secs(1));
        assert_eq!(m.label(), "raft5-2");
        assert_eq!(
            target(&m, &paths::kv_read("k 1", Consistency::Linearizable)),
            "/api/v1/namespaces/lab/pods/raft5-2:8080/proxy/v1/kv/k%201?consistency=linearizable"
        );
        assert_eq!(
            target(&m, &paths::kv_cas("x")),
            "/api/v1/namespaces/lab/pods/raft5-2:8080/proxy/v1/kv/x/cas"
        );
    }

    #[test]
    fn addresses_and_urls() {
        let second = Duration::from_secs(1);
        let m =
            Member::with_client("127.0.0.1:8080", reqwest::Client::new(), second).expect("valid");
        assert_eq!(target(&m, &paths::kv("x")), "http://127.0.0.1:8080/v1/kv/x");
        assert_eq!(
            target(&m, &paths::kv_cas("a/b c")),
            "http://127.0.0.1:8080/v1/kv/a%2Fb%20c/cas"
        );
        let m = Member::with_client("http://node-0.demo:80/", reqwest::Client::new(), second)
            .expect("valid");
        assert_eq!(target(&m, paths::STATUS), "http://node-0.demo:80/v1/status");
        for bad in ["", "mailto:x"] {
            assert!(Member::new(bad, second).is_err(), "{bad}");
        }
    }

    /// A write answered `504` (outcome unknown) through the pod proxy reaches the member once:
    /// kube's default retry of 504 would send it again, and a second application of a write
    /// is not the history the client records.
    #[tokio::test]
    async fn member_calls_through_the_pod_proxy_are_never_retried() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    http::StatusCode::GATEWAY_TIMEOUT,
                    r#"{"error":"deadline passed","outcome":"unknown"}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let uri = format!("http://{addr}").parse().expect("uri");
        let cluster = ClusterRef::from_config(kube::Config::new(uri), "lab".into(), "raft5")
            .expect("clients");
        let member = Member::proxied(&cluster, "raft5-0", Duration::from_secs(5));
        let outcome = member.write("k", 7).await;
        assert!(matches!(outcome, Outcome::Unknown(_)), "{outcome:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the write was sent again");
    }
}
