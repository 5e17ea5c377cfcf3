//! Who a member is, so that a message meant for another member cannot be taken for its own:
//! the cluster id (set by the operator), the member id and the incarnation (a random id drawn
//! when the data directory is first initialised, so a member whose data was wiped and that
//! restarts under its old id is a different member).
//!
//! Every peer-port request may carry [`CLUSTER_HEADER`], [`FROM_HEADER`], [`TO_HEADER`] and
//! [`TO_INCARNATION_HEADER`]; a member answers any that does not match it with `421
//! Misdirected Request`. Every peer-port answer carries [`INCARNATION_HEADER`].

use std::fmt;
use std::io::Write;
use std::path::Path;

use axum::http::HeaderMap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::NodeId;

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

/// The file in the data directory that holds the incarnation.
const INCARNATION_FILE: &str = "incarnation";
/// Files whose presence means the data directory already belongs to a member: the Raft log
/// and snapshot, the primary–secondary store.
const MEMBER_DATA_FILES: [&str; 4] = [
    "raft-log.redb",
    "snapshot.json",
    "primary-secondary.redb",
    "quorum.redb",
];

/// 16 lowercase hex characters (64 random bits), fixed for the life of a data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Incarnation(String);

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("incarnation {0:?} is not 16 lowercase hex characters")]
    BadIncarnation(String),
    #[error(
        "{dir} holds a member's data ({found}) but no incarnation file: restore {dir}/incarnation \
         from a backup, or empty the directory so the member rejoins as a new one"
    )]
    MissingWithData {
        dir: std::path::PathBuf,
        found: String,
    },
    #[error("cannot read or create {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Incarnation {
    fn random() -> Self {
        Self(format!("{:016x}", rand::rng().random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads `<data_dir>/incarnation`, or draws one and makes it durable (temp file, fsync,
    /// rename) when the directory holds no member data yet. A directory with a log or store
    /// but no incarnation file is refused ([`IdentityError::MissingWithData`]): a new
    /// incarnation there would make the member's peers shut it out for good.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(INCARNATION_FILE);
        let file_error = |source| IdentityError::File {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return text.trim().parse(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(e)),
        }
        let found: Vec<&str> = MEMBER_DATA_FILES
            .iter()
            .copied()
            .filter(|name| data_dir.join(name).exists())
            .collect();
        if !found.is_empty() {
            return Err(IdentityError::MissingWithData {
                dir: data_dir.to_path_buf(),
                found: found.join(", "),
            });
        }
        let fresh = Self::random();
        std::fs::create_dir_all(data_dir).map_err(file_error)?;
        let temp = data_dir.join(format!("{INCARNATION_FILE}.tmp"));
        let mut file = std::fs::File::create(&temp).map_err(file_error)?;
        file.write_all(fresh.0.as_bytes()).map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
        std::fs::rename(&temp, &path).map_err(file_error)?;
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(file_error)?;
        tracing::info!(incarnation = %fresh, "new data directory: drew an incarnation");
        Ok(fresh)
    }
}

impl std::str::FromStr for Incarnation {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(IdentityError::BadIncarnation(s.to_string()))
        }
    }
}

impl TryFrom<String> for Incarnation {
    type Error = IdentityError;

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

/// Why a message was refused with 421 (the `reason` field and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misdirection {
    WrongCluster,
    WrongMember,
    WrongIncarnation,
}

impl Misdirection {
    pub const ALL: [Misdirection; 3] = [
        Misdirection::WrongCluster,
        Misdirection::WrongMember,
        Misdirection::WrongIncarnation,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Misdirection::WrongCluster => "wrong-cluster",
            Misdirection::WrongMember => "wrong-member",
            Misdirection::WrongIncarnation => "wrong-incarnation",
        }
    }
}

/// A refused message: why, and a sentence for the sender.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct Misdirected {
    pub kind: Misdirection,
    pub message: String,
}

/// This member's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None`: messages for any cluster are accepted.
    pub cluster: Option<String>,
    pub id: NodeId,
    pub incarnation: Incarnation,
}

impl Identity {
    /// Checks the identity headers of an incoming peer-port request; absent headers pass (an
    /// admin call made with curl), present ones must name this member.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Misdirected> {
        let header = |name| headers.get(name).map(|v| v.to_str().unwrap_or_default());
        let misdirected = |kind, message: String| Err(Misdirected { kind, message });
        if let (Some(mine), Some(theirs)) = (&self.cluster, header(CLUSTER_HEADER)) {
            if mine != theirs {
                return misdirected(
                    Misdirection::WrongCluster,
                    format!("this member belongs to cluster {mine:?}, not {theirs:?}"),
                );
            }
        }
        if let Some(to) = header(TO_HEADER) {
            if to.parse::<NodeId>().ok() != Some(self.id) {
                return misdirected(
                    Misdirection::WrongMember,
                    format!(
                        "this is member {}, not member {to}: its address now belongs to another member",
                        self.id
                    ),
                );
            }
        }
        if let Some(to) = header(TO_INCARNATION_HEADER) {
            if to != self.incarnation.as_str() {
                return misdirected(
                    Misdirection::WrongIncarnation,
                    format!(
                        "this is member {} incarnation {}, not incarnation {to}: its data \
                         directory was recreated, so it is not the member you knew",
                        self.id, self.incarnation
                    ),
                );
            }
        }
        Ok(())
    }
}

/// An address-book entry as the admin API takes it: `"host:port"`, or
/// `{"addr": "host:port", "incarnation": "<16 hex>"}` to name the incarnation expected there.
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
    pub fn addr(&self) -> &str {
        match self {
            PeerAddr::Plain(addr) | PeerAddr::Pinned { addr, .. } => addr,
        }
    }

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

    fn identity(cluster: Option<&str>) -> Identity {
        Identity {
            cluster: cluster.map(str::to_string),
            id: 3,
            incarnation: "0123456789abcdef".parse().unwrap(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn incarnations_are_16_lowercase_hex() {
        assert!("0123456789abcdef".parse::<Incarnation>().is_ok());
        assert!("0123456789ABCDEF".parse::<Incarnation>().is_err());
        assert!("0123".parse::<Incarnation>().is_err());
        assert_eq!(Incarnation::random().as_str().len(), 16);
    }

    #[test]
    fn incarnation_survives_restarts_and_changes_with_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Incarnation::load_or_create(dir.path()).unwrap();
        assert_eq!(Incarnation::load_or_create(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Incarnation::load_or_create(other.path()).unwrap(), first);
    }

    #[test]
    fn a_data_directory_with_member_data_but_no_incarnation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raft-log.redb"), b"log").unwrap();
        let err = Incarnation::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::MissingWithData { .. }),
            "{err}"
        );
        assert!(!dir.path().join(INCARNATION_FILE).exists());
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
    fn headers_must_name_this_member() {
        let me = identity(Some("ns/demo/uid-1"));
        assert!(me.check(&HeaderMap::new()).is_ok(), "curl users");
        let ok = headers(&[
            (CLUSTER_HEADER, "ns/demo/uid-1"),
            (FROM_HEADER, "1"),
            (TO_HEADER, "3"),
            (TO_INCARNATION_HEADER, "0123456789abcdef"),
        ]);
        assert!(me.check(&ok).is_ok());
        let kind = |pairs| me.check(&headers(pairs)).unwrap_err().kind;
        assert_eq!(
            kind(&[(CLUSTER_HEADER, "ns/demo/uid-2")]),
            Misdirection::WrongCluster
        );
        assert_eq!(kind(&[(TO_HEADER, "4")]), Misdirection::WrongMember);
        assert_eq!(
            kind(&[(TO_INCARNATION_HEADER, "fedcba9876543210")]),
            Misdirection::WrongIncarnation
        );
        let any_cluster = identity(None);
        assert!(any_cluster
            .check(&headers(&[(CLUSTER_HEADER, "elsewhere")]))
            .is_ok());
    }

    #[test]
    fn address_entries_take_both_forms() {
        let plain: PeerAddr = serde_json::from_str(r#""10.0.0.5:7000""#).unwrap();
        assert_eq!((plain.addr(), plain.incarnation()), ("10.0.0.5:7000", None));
        let pinned: PeerAddr =
            serde_json::from_str(r#"{"addr": "10.0.0.5:7000", "incarnation": "00000000000000ff"}"#)
                .unwrap();
        assert_eq!(
            pinned.incarnation().map(Incarnation::as_str),
            Some("00000000000000ff")
        );
        assert!(
            serde_json::from_str::<PeerAddr>(r#"{"addr": "a:1", "incarnation": "x"}"#).is_err()
        );
    }
}
