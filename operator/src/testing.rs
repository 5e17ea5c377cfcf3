//! Fixtures and builders the unit tests of several modules share.

use caplab_api::identity::Incarnation;
use caplab_api::status::{PeerStatus, Replication, Role, Status};

use crate::crd::RegisterCluster;
use crate::membership::Observed;

/// The RegisterCluster in `operator/tests/fixtures/<name>.yaml` (namespace `test`).
pub(crate) fn fixture(name: &str) -> RegisterCluster {
    let text = match name {
        "raft-3" => include_str!("../tests/fixtures/raft-3.yaml"),
        "storage-5" => include_str!("../tests/fixtures/storage-5.yaml"),
        "faults" => include_str!("../tests/fixtures/faults.yaml"),
        "invalid" => include_str!("../tests/fixtures/invalid.yaml"),
        "quorum-3" => include_str!("../tests/fixtures/quorum-3.yaml"),
        other => panic!("no fixture {other}"),
    };
    serde_yaml::from_str(text).expect("fixture parses")
}

/// A member's status with nothing replicated yet, as the member API reports it: Raft, its
/// incarnation derived from its id.
pub(crate) fn status(id: u64, role: Role) -> Status {
    // From the wire form: fields the member API adds later keep their defaults.
    let wire = serde_json::json!({
        "id": id,
        "incarnation": Incarnation::from_bits(id),
        "replication": Replication::Raft,
        "role": role,
        "term": 0,
        "leader": null,
        "commitIndex": 0,
        "appliedIndex": 0,
        "lastLogIndex": 0,
        "voters": [],
        "learners": [],
    });
    serde_json::from_value(wire).expect("a member status")
}

/// The role with this wire name (`leader`, `follower`, …).
pub(crate) fn role(name: &str) -> Role {
    serde_json::from_value(serde_json::Value::String(name.into())).expect("a role")
}

/// A Raft member's status at index 100 (member 1 leads once there are voters).
pub(crate) fn node(
    id: u64,
    role_name: &str,
    term: u64,
    voters: &[u64],
    learners: &[u64],
) -> Status {
    let mut st = status(id, role(role_name));
    let e = &mut st.engine;
    e.term = term;
    e.leader = if voters.is_empty() { None } else { Some(1) };
    e.commit_index = 100;
    e.applied_index = 100;
    e.last_log_index = 100;
    e.voters = voters.to_vec();
    e.learners = learners.to_vec();
    st
}

/// Member `id` at ordinal `ordinal` with a running pod (`10.0.0.<ordinal + 10>`) that
/// answered `st`.
pub(crate) fn obs(ordinal: u32, id: u64, st: Option<Status>) -> Observed {
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
    st.engine.leader = Some(primary);
    st.engine.applied_index = applied;
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
        s.engine.replication = Replication::Sync;
        s.engine.peers = heard.iter().map(|h| (*h, heard_at(100, 20))).collect();
    }
    m
}

/// A peer as its leader reports it: replicated up to `match_index`, nothing missing, last
/// heard `contact_ms` ago.
pub(crate) fn heard_at(match_index: u64, contact_ms: u64) -> PeerStatus {
    PeerStatus {
        match_index: Some(match_index),
        lag_entries: 0,
        lag_ms: None,
        last_contact_ms: Some(contact_ms),
    }
}
