//! Who a member is, on the wire: its incarnation, address-book entries, and the identity
//! headers that keep a message meant for one member from being taken by another.
//!
//! Every peer-port request may carry [`CLUSTER_HEADER`], [`FROM_HEADER`], [`TO_HEADER`] and
//! [`TO_INCARNATION_HEADER`]; a member answers any that does not match it with `421
//! Misdirected Request` ([`Misdirection`] says why). Every peer-port answer carries
//! [`INCARNATION_HEADER`].

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The cluster the sender believes it talks to (`<namespace>/<name>/<uid>` from the operator).
pub const CLUSTER_HEADER: &str = "x-caplab-cluster";
/// The sending member's id (`0` for tools and the operator).
pub const FROM_HEADER: &str = "x-caplab-from";
/// The member id the sender means to reach.
pub const TO_HEADER: &str = "x-caplab-to";
/// The incarnation the sender means to reach.
pub const TO_INCARNATION_HEADER: &str = "x-caplab-to-incarnation";
/// On every peer-port answer: the answering member's incarnation.
pub const INCARNATION_HEADER: &str = "x-caplab-incarnation";

/// A member's incarnation: 16 lowercase hex characters (64 random bits) drawn when its data
/// directory is first initialised, so a member whose data was wiped and that restarts under
/// its old id is told apart from the member it was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Incarnation(String);

/// Text that is not an incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("incarnation {0:?} is not 16 lowercase hex characters")]
pub struct BadIncarnation(pub String);

impl Incarnation {
    /// The incarnation spelling `bits` (e.g. drawn at random) as 16 lowercase hex characters.
    pub fn from_bits(bits: u64) -> Self {
        Self(format!("{bits:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Incarnation {
    type Err = BadIncarnation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(BadIncarnation(s.to_string()))
        }
    }
}

impl TryFrom<String> for Incarnation {
    type Error = BadIncarnation;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Incarnation> for String {
    fn from(i: Incarnation) -> Self {
        i.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a member refused a message with 421: the `reason` field of the answer, and the label
/// of its `misdirected` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misdirection {
    /// `wrong-cluster`: the member belongs to another cluster.
    WrongCluster,
    /// `wrong-member`: another member id now lives at that address.
    WrongMember,
    /// `wrong-incarnation`: the member's data directory was recreated.
    WrongIncarnation,
}

impl Misdirection {
    pub const ALL: [Misdirection; 3] = [
        Misdirection::WrongCluster,
        Misdirection::WrongMember,
        Misdirection::WrongIncarnation,
    ];

    /// The wire name: `wrong-cluster`, `wrong-member` or `wrong-incarnation`.
    pub fn reason(self) -> &'static str {
        match self {
            Misdirection::WrongCluster => "wrong-cluster",
            Misdirection::WrongMember => "wrong-member",
            Misdirection::WrongIncarnation => "wrong-incarnation",
        }
    }

    /// The misdirection a `reason` names (`None`: not one of the three).
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.reason() == reason)
    }
}

/// An address-book entry as the admin API takes it: `"host:port"`, or
/// `{"addr": "host:port", "incarnation": "<16 hex>"}` to name the incarnation expected there
/// (a message to it then carries [`TO_INCARNATION_HEADER`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PeerAddr {
    Plain(String),
    Pinned {
        addr: String,
        incarnation: Option<Incarnation>,
    },
}

/// The object form, strictly: a misspelt field is an error, not an entry without an
/// incarnation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedForm {
    addr: String,
    #[serde(default)]
    incarnation: Option<Incarnation>,
}

impl<'de> Deserialize<'de> for PeerAddr {
    /// Errors name the accepted shapes (an untagged enum would only say "no variant
    /// matched").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(addr) => Ok(PeerAddr::Plain(addr)),
            object @ serde_json::Value::Object(_) => serde_json::from_value::<PinnedForm>(object)
                .map(|p| PeerAddr::Pinned {
                    addr: p.addr,
                    incarnation: p.incarnation,
                })
                .map_err(|e| {
                    D::Error::custom(format!(
                        "an address entry {{\"addr\": \"ip:port\", \"incarnation\": \"<16 \
                         lowercase hex>\"}}: {e}"
                    ))
                }),
            other => Err(D::Error::custom(format!(
                "an address entry is \"ip:port\" or {{\"addr\": \"ip:port\", \"incarnation\": \
                 \"<16 lowercase hex>\"}}, not {other}"
            ))),
        }
    }
}

impl PeerAddr {
    /// The entry for `addr`: pinned to `incarnation` when it is known (the object form), the
    /// plain string otherwise (the receiver then pins whichever incarnation answers first).
    pub fn new(addr: impl Into<String>, incarnation: Option<Incarnation>) -> Self {
        match incarnation {
            Some(incarnation) => PeerAddr::Pinned {
                addr: addr.into(),
                incarnation: Some(incarnation),
            },
            None => PeerAddr::Plain(addr.into()),
        }
    }

    /// `host:port` of the member's peer listener.
    pub fn addr(&self) -> &str {
        match self {
            PeerAddr::Plain(addr) | PeerAddr::Pinned { addr, .. } => addr,
        }
    }

    /// The incarnation expected at the address, when the entry names one.
    pub fn incarnation(&self) -> Option<&Incarnation> {
        match self {
            PeerAddr::Plain(_) => None,
            PeerAddr::Pinned { incarnation, .. } => incarnation.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_are_16_lowercase_hex() {
        assert!("0123456789abcdef".parse::<Incarnation>().is_ok());
        assert!("0123456789ABCDEF".parse::<Incarnation>().is_err());
        assert!("0123".parse::<Incarnation>().is_err());
        assert_eq!(Incarnation::from_bits(255).as_str(), "00000000000000ff");
    }

    #[test]
    fn address_entries_say_what_is_wrong_with_them() {
        let parse = |v: serde_json::Value| serde_json::from_value::<PeerAddr>(v);
        assert_eq!(
            parse(serde_json::json!("10.0.0.1:7000")).unwrap(),
            PeerAddr::Plain("10.0.0.1:7000".into())
        );
        let misspelt = parse(serde_json::json!({"addr": "a:1", "incarnaton": "0123456789abcdef"}));
        assert!(misspelt.unwrap_err().to_string().contains("incarnaton"));
        let bad = parse(serde_json::json!({"addr": "a:1", "incarnation": "XYZ"}));
        assert!(bad.unwrap_err().to_string().contains("16 lowercase hex"));
        assert!(parse(serde_json::json!(7)).is_err());
    }

    #[test]
    fn address_entries_take_and_give_both_forms() {
        let plain: PeerAddr = serde_json::from_str(r#""10.0.0.5:7000""#).unwrap();
        assert_eq!((plain.addr(), plain.incarnation()), ("10.0.0.5:7000", None));
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#""10.0.0.5:7000""#);
        let text = r#"{"addr":"10.0.0.5:7000","incarnation":"00000000000000ff"}"#;
        let pinned: PeerAddr = serde_json::from_str(text).unwrap();
        assert_eq!(
            pinned.incarnation().map(Incarnation::as_str),
            Some("00000000000000ff")
        );
        assert_eq!(serde_json::to_string(&pinned).unwrap(), text);
        assert_eq!(
            PeerAddr::new("10.0.0.5:7000", Some(Incarnation::from_bits(255))),
            pinned
        );
    }

    #[test]
    fn misdirection_reasons_round_trip() {
        for m in Misdirection::ALL {
            assert_eq!(Misdirection::from_reason(m.reason()), Some(m));
        }
        assert_eq!(Misdirection::from_reason("elsewhere"), None);
    }
}
