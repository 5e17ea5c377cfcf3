//! Who a member is, so that a message meant for another member cannot be taken for its own:
//! the cluster id (set by the operator), the member id and the incarnation (a random id drawn
//! when the data directory is first initialised, so a member whose data was wiped and that
//! restarts under its old id is a different member).
//!
//! Every peer-port request may carry [`CLUSTER_HEADER`], [`FROM_HEADER`], [`TO_HEADER`] and
//! [`TO_INCARNATION_HEADER`]; a member answers any that does not match it with `421
//! Misdirected Request`. Every peer-port answer carries [`INCARNATION_HEADER`].

use std::path::Path;

use axum::http::HeaderMap;
use rand::Rng;
use thiserror::Error;

use crate::data_files;
use crate::types::NodeId;

pub use caplab_api::identity::{
    BadIncarnation, Incarnation, Misdirection, PeerAddr, CLUSTER_HEADER, FROM_HEADER,
    INCARNATION_HEADER, TO_HEADER, TO_INCARNATION_HEADER,
};

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error(transparent)]
    BadIncarnation(#[from] BadIncarnation),
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

/// A fresh incarnation: 64 random bits.
fn random_incarnation() -> Incarnation {
    Incarnation::from_bits(rand::rng().random::<u64>())
}

/// Reads `<data_dir>/incarnation`, or draws one and makes it durable (temp file, fsync,
/// rename) when the directory holds no member data yet. A directory with a log or store
/// but no incarnation file is refused ([`IdentityError::MissingWithData`]): a new
/// incarnation there would make the member's peers shut it out for good.
pub fn load_or_create_incarnation(data_dir: &Path) -> Result<Incarnation, IdentityError> {
    let path = data_dir.join(data_files::INCARNATION);
    let file_error = |source| IdentityError::File {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text.trim().parse()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    let found: Vec<&str> = data_files::MEMBER_DATA
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
    let fresh = random_incarnation();
    std::fs::create_dir_all(data_dir).map_err(file_error)?;
    crate::durable_file::replace(&path, fresh.as_str().as_bytes()).map_err(file_error)?;
    tracing::info!(incarnation = %fresh, "new data directory: drew an incarnation");
    Ok(fresh)
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
    fn drawn_incarnations_are_valid() {
        let drawn = random_incarnation();
        assert_eq!(drawn.as_str().parse::<Incarnation>().ok(), Some(drawn));
    }

    #[test]
    fn incarnation_survives_restarts_and_changes_with_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_incarnation(dir.path()).unwrap();
        assert_eq!(load_or_create_incarnation(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_incarnation(other.path()).unwrap(), first);
    }

    #[test]
    fn a_data_directory_with_member_data_but_no_incarnation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raft-log.redb"), b"log").unwrap();
        let err = load_or_create_incarnation(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::MissingWithData { .. }),
            "{err}"
        );
        assert!(!dir.path().join(data_files::INCARNATION).exists());
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
}
