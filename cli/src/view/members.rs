//! The table of members' own `/v1/status` answers (`caplab status --addr`, and the live
//! rows of `caplab status <cluster> --live`): one row per member, lag as the leader sees it.

use caplab_api::status::Status;

use crate::view::grid::grid;

/// One table row; `None` fields print as `-`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub addr: String,
    pub id: Option<u64>,
    pub role: String,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub commit: Option<u64>,
    pub applied: Option<u64>,
    pub lag: Option<u64>,
    pub faults: String,
}

/// `paused` and the active faults by their wire names (`partition`, `delay`, `loss`,
/// `clockSkewMs`), or `-`.
fn faults_summary(status: &Status) -> String {
    let f = &status.faults;
    let parts: Vec<&str> = [
        (status.paused, "paused"),
        (f.partition.is_some(), "partition"),
        (f.delay.is_some(), "delay"),
        (f.loss.is_some(), "loss"),
        (f.clock_skew_ms != 0, "clockSkewMs"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Builds the rows; `lag` comes from the leader's (or primary's) view of its peers.
pub fn rows(results: &[(String, Result<Status, String>)]) -> Vec<Row> {
    let leader_view = results.iter().find_map(|(_, r)| {
        let s = r.as_ref().ok()?;
        s.is_leader().then_some(&s.engine.peers)
    });
    results
        .iter()
        .map(|(addr, result)| match result {
            Ok(s) => Row {
                addr: addr.clone(),
                id: Some(s.id),
                role: s.engine.role.to_string(),
                term: Some(s.engine.term),
                leader: s.engine.leader,
                commit: Some(s.engine.commit_index),
                applied: Some(s.engine.applied_index),
                lag: if s.is_leader() {
                    Some(0)
                } else {
                    leader_view.and_then(|peers| Some(peers.get(&s.id)?.lag_entries))
                },
                faults: faults_summary(s),
            },
            Err(e) => Row {
                addr: addr.clone(),
                role: format!("unreachable ({e})"),
                faults: "-".into(),
                ..Row::default()
            },
        })
        .collect()
}

/// The rows under an ADDRESS, ID, ROLE, TERM, LEADER, COMMIT, APPLIED, LAG, FAULTS header.
pub fn table(rows: &[Row]) -> String {
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.addr.clone(),
                show(r.id),
                r.role.clone(),
                show(r.term),
                show(r.leader),
                show(r.commit),
                show(r.applied),
                show(r.lag),
                r.faults.clone(),
            ]
        })
        .collect();
    grid(
        &[
            "ADDRESS", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "FAULTS",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_api::faults::PeerFilter;
    use caplab_api::status::PeerStatus;
    use serde_json::json;

    /// A member's status as members serve it (fields added later read as defaults): term 3,
    /// member 1 leads.
    fn status(id: u64, replication: &str, role: &str, commit: u64) -> Status {
        serde_json::from_value(json!({
            "id": id, "incarnation": format!("{id:016x}"), "voter": true,
            "replication": replication, "role": role, "term": 3, "leader": 1,
            "commitIndex": commit, "appliedIndex": commit, "lastLogIndex": commit,
            "voters": [1, 2, 3], "learners": [], "peers": {}, "paused": false, "faults": {}
        }))
        .expect("a member's status")
    }

    #[test]
    fn rows_show_roles_and_lag_from_the_leader() {
        let mut leader = status(1, "raft", "leader", 10);
        leader.engine.peers.insert(
            2,
            PeerStatus {
                match_index: Some(7),
                lag_entries: 3,
                ..PeerStatus::default()
            },
        );
        leader.faults.partition = Some(PeerFilter {
            peers: [2].into(),
            ..PeerFilter::default()
        });
        let mut follower = status(2, "raft", "follower", 7);
        follower.paused = true;
        follower.faults.pause = true;
        let rows = rows(&[
            ("a:1".into(), Ok(leader)),
            ("b:2".into(), Ok(follower)),
            ("c:3".into(), Err("connection refused".into())),
        ]);
        assert_eq!(rows[0].lag, Some(0));
        assert_eq!(rows[0].faults, "partition");
        assert_eq!(rows[1].lag, Some(3));
        assert_eq!(rows[1].faults, "paused");
        assert!(rows[2].role.contains("unreachable"));
        let text = table(&rows);
        assert!(text.starts_with("ADDRESS"));
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("leader"));
    }

    #[test]
    fn a_primary_s_view_gives_the_lag_of_its_secondaries() {
        let mut primary = status(1, "async", "primary", 9);
        primary.engine.peers.insert(
            2,
            PeerStatus {
                lag_entries: 4,
                ..PeerStatus::default()
            },
        );
        let secondary = status(2, "async", "secondary", 5);
        let rows = rows(&[("p".into(), Ok(primary)), ("s".into(), Ok(secondary))]);
        assert_eq!((rows[0].lag, rows[1].lag), (Some(0), Some(4)));
    }
}
