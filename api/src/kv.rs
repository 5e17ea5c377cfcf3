//! Register operations on the client port: every key is an `i64` register that reads 0 until
//! written.
//!
//! | call | path | body | answer |
//! |---|---|---|---|
//! | read | `GET /v1/kv/<key>?consistency=linearizable\|local` | – | [`ValueReply`] |
//! | write | `PUT /v1/kv/<key>` | [`WriteBody`] | [`ValueReply`] |
//! | compare-and-set | `POST /v1/kv/<key>/cas` | [`CasBody`] | [`ValueReply`], or `409` with `current` |
//!
//! Errors follow [`crate::error`]'s outcome contract.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Served by the leader (or primary) after confirming it still leads: sees every write
    /// acknowledged before the read began (Raft §8 "read index").
    #[default]
    Linearizable,
    /// Served from this member's applied state, however stale.
    Local,
}

/// A `consistency` value that is neither `linearizable` nor `local`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown consistency {0:?}: use linearizable or local")]
pub struct UnknownConsistency(pub String);

impl Consistency {
    /// The query value: `linearizable` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    }

    /// The query value as given (`None`: the default, linearizable).
    pub fn parse(raw: Option<&str>) -> Result<Self, UnknownConsistency> {
        raw.map_or(Ok(Consistency::Linearizable), str::parse)
    }
}

impl std::str::FromStr for Consistency {
    type Err = UnknownConsistency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "local" => Ok(Consistency::Local),
            other => Err(UnknownConsistency(other.to_string())),
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The query of a read. `consistency` stays text here so that a wrong value gets
/// [`UnknownConsistency`]'s message, which names the accepted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

/// `PUT /v1/kv/<key>`: `{"value": 5}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    pub value: i64,
}

/// `POST /v1/kv/<key>/cas`: `{"expected": 5, "new": 6}`: set `new` if the register holds
/// `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasBody {
    pub expected: i64,
    pub new: i64,
}

/// A successful operation's answer: `{"key": "x", "value": 5}`, the register's value after a
/// write or CAS, or the value read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueReply {
    pub key: String,
    pub value: i64,
}

/// The body of a read forwarded between members ([`crate::paths::FORWARD_READ`]):
/// `{"key": "x"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels() {
        assert_eq!(Consistency::parse(None), Ok(Consistency::Linearizable));
        assert_eq!(Consistency::parse(Some("local")), Ok(Consistency::Local));
        let e = Consistency::parse(Some("eventual")).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown consistency "eventual": use linearizable or local"#
        );
    }

    #[test]
    fn bodies_are_strict() {
        assert!(serde_json::from_str::<WriteBody>(r#"{"value": 1, "x": 2}"#).is_err());
        assert!(serde_json::from_str::<CasBody>(r#"{"expected": 1}"#).is_err());
        let reply: ValueReply = serde_json::from_str(r#"{"key":"x","value":5}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"key":"x","value":5}"#
        );
    }
}
