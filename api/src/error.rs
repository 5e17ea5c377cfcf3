//! The error body every endpoint answers with, and the outcome contract: what a status code
//! says about whether an operation took effect.
//!
//! | status | meaning | body |
//! |---|---|---|
//! | 200 | it took effect (or, for a read, the value) | the call's answer |
//! | 400, 401, 404, 409 … (4xx) | refused: certainly not applied | `{"error"}`; a CAS mismatch (409) adds `current` |
//! | 421 | misdirected: this member is not the one the sender addressed; not applied | `{"error", "reason"}` |
//! | 501 | not implemented by this replication mode; not applied | `{"error"}` |
//! | 503 | certainly not applied (no leader, paused, dropped by a fault …) | `{"error", "outcome": "not-applied"}` |
//! | 504 | may or may not have been applied | `{"error", "outcome": "unknown"}` |
//!
//! The same idea as the "indeterminate" results of Jepsen histories: an answer that cannot
//! say whether the write happened must not be reported as a failure.

use serde::{Deserialize, Serialize};

/// `outcome` of a 503: the operation certainly did not take effect.
pub const OUTCOME_NOT_APPLIED: &str = "not-applied";
/// `outcome` of a 504: the operation may or may not have taken effect.
pub const OUTCOME_UNKNOWN: &str = "unknown";

/// A member's error answer: `{"error": "…"}` plus, depending on the status, the CAS
/// mismatch's `current` value (409), the misdirection `reason` (421, see
/// [`crate::identity::Misdirection`]) or the `outcome` (503 `not-applied`, 504 `unknown`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ErrorBody {
    /// `{"error": message}`.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorBody {
            error: message.into(),
            ..ErrorBody::default()
        }
    }

    /// A CAS that found `current` (409).
    pub fn cas_mismatch(message: impl Into<String>, current: i64) -> Self {
        ErrorBody {
            current: Some(current),
            ..ErrorBody::new(message)
        }
    }

    /// A misdirected message (421) refused for `reason`.
    pub fn misdirected(message: impl Into<String>, reason: &str) -> Self {
        ErrorBody {
            reason: Some(reason.to_string()),
            ..ErrorBody::new(message)
        }
    }

    /// 503: certainly not applied.
    pub fn not_applied(message: impl Into<String>) -> Self {
        ErrorBody {
            outcome: Some(OUTCOME_NOT_APPLIED.into()),
            ..ErrorBody::new(message)
        }
    }

    /// 504: maybe applied.
    pub fn unknown(message: impl Into<String>) -> Self {
        ErrorBody {
            outcome: Some(OUTCOME_UNKNOWN.into()),
            ..ErrorBody::new(message)
        }
    }

    /// The body of an answer, when it is in the member's own shape (`None`: no JSON object
    /// with an `error` string, e.g. a gateway's or proxy's answer).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_what_members_send() {
        let text = |b: &ErrorBody| serde_json::to_string(b).unwrap();
        assert_eq!(text(&ErrorBody::new("bad")), r#"{"error":"bad"}"#);
        assert_eq!(
            text(&ErrorBody::cas_mismatch(
                "compare-and-set failed: the current value is 3",
                3
            )),
            r#"{"current":3,"error":"compare-and-set failed: the current value is 3"}"#
        );
        assert_eq!(
            text(&ErrorBody::not_applied("no leader")),
            r#"{"error":"no leader","outcome":"not-applied"}"#
        );
        assert_eq!(
            text(&ErrorBody::misdirected("not me", "wrong-member")),
            r#"{"error":"not me","reason":"wrong-member"}"#
        );
        assert_eq!(ErrorBody::parse(b"not ready: paused"), None);
        assert_eq!(
            ErrorBody::parse(br#"{"error":"timed out","outcome":"unknown"}"#),
            Some(ErrorBody::unknown("timed out"))
        );
    }
}
