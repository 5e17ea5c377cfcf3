//! `caplab status`: one row per member from its `/v1/status`, lag as the leader sees it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::client::Member;

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

/// Left-aligned columns two spaces apart, trailing blanks trimmed.
pub fn grid(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for line in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

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

/// Asks every member for its `/v1/status`.
pub async fn gather(members: &[Member]) -> Vec<(String, Result<Value, String>)> {
    let mut results = Vec::with_capacity(members.len());
    for m in members {
        let result = m.status().await.map_err(|e| format!("{e:#}"));
        results.push((m.label().to_string(), result));
    }
    results
}

pub async fn run(addrs: &[String], timeout: Duration) -> Result<ExitCode> {
    let mut results = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let result = match Member::new(addr, timeout) {
            Ok(m) => m.status().await.map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
        results.push((addr.clone(), result));
    }
    let rows = rows(&results);
    print!("{}", table(&rows));
    let all_up = results.iter().all(|(_, r)| r.is_ok());
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
