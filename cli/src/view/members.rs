//! The table of members' own `/v1/status` answers (`caplab status --addr`, and the live
//! rows of `caplab status <cluster> --live`): one row per member, lag as the leader sees it.

use serde_json::Value;

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

fn faults_summary(status: &Value) -> String {
    let mut parts = Vec::new();
    if status["paused"].as_bool() == Some(true) {
        parts.push("paused".to_string());
    }
    if let Some(f) = status["faults"].as_object() {
        for (name, value) in f {
            let active = match value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_i64() != Some(0),
                _ => true,
            };
            if active && name != "pause" {
                parts.push(name.clone());
            }
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Builds the rows; `lag` comes from the leader's view of its peers.
pub fn rows(results: &[(String, Result<Value, String>)]) -> Vec<Row> {
    let leader_view = results.iter().find_map(|(_, r)| {
        let s = r.as_ref().ok()?;
        (s["role"] == "leader").then(|| s["peers"].clone())
    });
    results
        .iter()
        .map(|(addr, result)| match result {
            Ok(s) => {
                let id = s["id"].as_u64();
                let lag = if s["role"] == "leader" {
                    Some(0)
                } else {
                    id.and_then(|id| leader_view.as_ref()?[id.to_string()]["lagEntries"].as_u64())
                };
                Row {
                    addr: addr.clone(),
                    id,
                    role: s["role"].as_str().unwrap_or("?").to_string(),
                    term: s["term"].as_u64(),
                    leader: s["leader"].as_u64(),
                    commit: s["commitIndex"].as_u64(),
                    applied: s["appliedIndex"].as_u64(),
                    lag,
                    faults: faults_summary(s),
                }
            }
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
    use serde_json::json;

    #[test]
    fn rows_show_roles_and_lag_from_the_leader() {
        let leader = json!({"id": 1, "role": "leader", "term": 3, "leader": 1, "commitIndex": 10,
            "appliedIndex": 10, "peers": {"2": {"matchIndex": 7, "lagEntries": 3}}, "paused": false,
            "faults": {"partition": {"peers": [2]}, "pause": false, "clockSkewMs": 0}});
        let follower = json!({"id": 2, "role": "follower", "term": 3, "leader": 1,
            "commitIndex": 7, "appliedIndex": 7, "paused": true, "faults": {"pause": true}});
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
}
