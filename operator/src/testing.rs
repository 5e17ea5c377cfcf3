//! Fixtures and builders the unit tests of several modules share.

use crate::crd::RegisterCluster;
use crate::member_client::{NodeStatus, PeerProgress};
use crate::membership::Observed;

/// The RegisterCluster in `operator/tests/fixtures/<name>.yaml` (namespace `test`).
pub(crate) fn fixture(name: &str) -> RegisterCluster {
    let text = match name {
        "raft-3" => include_str!("../tests/fixtures/raft-3.yaml"),
        "storage-5" => include_str!("../tests/fixtures/storage-5.yaml"),
        "faults" => include_str!("../tests/fixtures/faults.yaml"),
        "invalid" => include_str!("../tests/fixtures/invalid.yaml"),
        other => panic!("no fixture {other}"),
    };
    serde_yaml::from_str(text).expect("fixture parses")
}

pub(crate) fn node(id: u64, role: &str, term: u64, voters: &[u64], learners: &[u64]) -> NodeStatus {
    NodeStatus {
        id,
        replication: "raft".into(),
        role: role.into(),
        term,
        leader: if voters.is_empty() { None } else { Some(1) },
        commit_index: 100,
        applied_index: 100,
        last_log_index: 100,
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..NodeStatus::default()
    }
}

pub(crate) fn obs(ordinal: u32, id: u64, st: Option<NodeStatus>) -> Observed {
    Observed {
        ordinal,
        name: format!("demo-{ordinal}"),
        id,
        pod_exists: true,
        pod_ip: Some(format!("10.0.0.{}", ordinal + 10)),
        status: st,
    }
}

/// A primary–secondary member: `primary` is whom it follows (or itself), `members` the set
/// the primary replicates to (the primary reports it as its voters).
pub(crate) fn ps(ordinal: u32, id: u64, primary: u64, members: &[u64], applied: u64) -> Observed {
    let role = if id == primary {
        "primary"
    } else {
        "secondary"
    };
    let mut st = node(id, role, 1, members, &[]);
    st.leader = Some(primary);
    st.applied_index = applied;
    obs(ordinal, id, Some(st))
}

/// A sync/async member following `primary` (or primary itself), reporting `members` as its
/// member set; the primary hears from `heard`.
pub(crate) fn sync_member(
    ordinal: u32,
    id: u64,
    primary: u64,
    members: &[u64],
    heard: &[u64],
) -> Observed {
    let mut m = ps(ordinal, id, primary, members, 100);
    if let Some(s) = m.status.as_mut() {
        s.replication = "sync".into();
        s.peers = heard
            .iter()
            .map(|h| {
                let p = PeerProgress {
                    match_index: Some(100),
                    lag_entries: Some(0),
                    last_contact_ms: Some(20),
                };
                (h.to_string(), p)
            })
            .collect();
    }
    m
}
