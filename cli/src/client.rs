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
        // 409 is a CAS whose comparison failed; 503 promises nothing was applied; 400 was refused.
        400 | 409 | 503 => Outcome::Fail(reason()),
        _ => Outcome::Unknown(reason()),
    }
}

/// A transport error: a refused connection never reached the member; anything later might have.
pub fn classify_transport(kind: Kind, error: &reqwest::Error) -> Outcome {
    let message = format!("transport: {error}");
    if kind == Kind::Read || error.is_connect() || error.is_builder() {
        Outcome::Fail(message)
    } else {
        Outcome::Unknown(message)
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

#[derive(Debug, Clone)]
pub struct Member {
    base: Url,
    http: reqwest::Client,
}

impl Member {
    pub fn new(addr: &str, timeout: Duration) -> Result<Member> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Member {
            base: base_url(addr)?,
            http,
        })
    }

    pub fn with_client(addr: &str, http: reqwest::Client) -> Result<Member> {
        Ok(Member {
            base: base_url(addr)?,
            http,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn key_url(&self, key: &str, suffix: Option<&str>) -> Url {
        let mut segments = vec!["v1", "kv", key];
        segments.extend(suffix);
        self.url(&segments)
    }

    /// Sends a request and returns the status and JSON body (`null` if the body is not JSON).
    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    pub async fn raw_read(&self, key: &str, consistency: &str) -> reqwest::Result<(u16, Value)> {
        let mut url = self.key_url(key, None);
        url.query_pairs_mut()
            .append_pair("consistency", consistency);
        self.send(self.http.get(url)).await
    }

    pub async fn raw_write(&self, key: &str, value: i64) -> reqwest::Result<(u16, Value)> {
        let url = self.key_url(key, None);
        self.send(self.http.put(url).json(&json!({ "value": value })))
            .await
    }

    pub async fn raw_cas(
        &self,
        key: &str,
        expected: i64,
        new: i64,
    ) -> reqwest::Result<(u16, Value)> {
        let url = self.key_url(key, Some("cas"));
        self.send(
            self.http
                .post(url)
                .json(&json!({ "expected": expected, "new": new })),
        )
        .await
    }

    pub async fn read(&self, key: &str, consistency: &str) -> Outcome {
        outcome(Kind::Read, self.raw_read(key, consistency).await)
    }

    pub async fn write(&self, key: &str, value: i64) -> Outcome {
        outcome(Kind::Write, self.raw_write(key, value).await)
    }

    pub async fn cas(&self, key: &str, expected: i64, new: i64) -> Outcome {
        outcome(Kind::Cas, self.raw_cas(key, expected, new).await)
    }

    pub async fn status(&self) -> Result<Value> {
        let (status, body) = self
            .send(self.http.get(self.url(&["v1", "status"])))
            .await
            .with_context(|| format!("GET {}v1/status", self.base))?;
        if status != StatusCode::OK.as_u16() {
            return Err(anyhow!("GET {}v1/status: HTTP {status}: {body}", self.base));
        }
        Ok(body)
    }
}

fn outcome(kind: Kind, result: reqwest::Result<(u16, Value)>) -> Outcome {
    match result {
        Ok((status, body)) => classify(kind, status, &body),
        Err(e) => classify_transport(kind, &e),
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
        assert!(matches!(
            classify(Kind::Cas, 409, &mismatch),
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
    fn addresses_and_urls() {
        let m = Member::with_client("127.0.0.1:8080", reqwest::Client::new()).expect("valid");
        assert_eq!(
            m.key_url("x", None).as_str(),
            "http://127.0.0.1:8080/v1/kv/x"
        );
        assert_eq!(
            m.key_url("a/b c", Some("cas")).as_str(),
            "http://127.0.0.1:8080/v1/kv/a%2Fb%20c/cas"
        );
        let m =
            Member::with_client("http://node-0.demo:80/", reqwest::Client::new()).expect("valid");
        assert_eq!(
            m.url(&["v1", "status"]).as_str(),
            "http://node-0.demo/v1/status"
        );
        assert!(base_url("").is_err());
        assert!(base_url("mailto:x").is_err());
    }
}
