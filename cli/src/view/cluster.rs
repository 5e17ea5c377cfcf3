//! The `caplab status <cluster>` text: a RegisterCluster's summary, its members, faults and
//! conditions, and optionally the members' own `/v1/status` rows.

use crate::regc::{ClusterStatus, FaultStatus, MemberStatus, RegisterCluster};
use crate::view::grid::grid;
use crate::view::members::{table, Row};

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn ordinals(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn fault_targets(f: &FaultStatus) -> String {
    if !f.groups.is_empty() {
        f.groups
            .iter()
            .map(|g| format!("[{}]", ordinals(g)))
            .collect::<Vec<_>>()
            .join(" | ")
    } else if !f.targets.is_empty() {
        ordinals(&f.targets)
    } else {
        "-".into()
    }
}

/// What the members run (the status's, recorded at creation), and the spec's if it asks for
/// something else (a change the operator refuses: replication is immutable).
fn replication(rc: &RegisterCluster) -> String {
    let running = rc.status.as_ref().and_then(|s| s.replication.clone());
    match (running, &rc.spec.replication) {
        (Some(r), Some(asked)) if r != *asked => {
            format!("{r} (spec.replication {asked} is refused: it is immutable)")
        }
        (Some(r), _) => r,
        (None, Some(asked)) => asked.clone(),
        (None, None) => "raft".into(),
    }
}

/// `label:` padded to a column, then the value.
fn push_fields(out: &mut String, fields: Vec<(&str, String)>) {
    for (k, v) in fields {
        out.push_str(&format!("{:<16}{v}\n", format!("{k}:")));
    }
}

/// The text: a summary, the members, faults and conditions, and the members' own
/// `/v1/status` if `live` rows are given.
pub fn render(rc: &RegisterCluster, live: Option<&[Row]>) -> String {
    let mut out = String::new();
    let ns = rc.metadata.namespace.as_deref().unwrap_or("default");
    let mut summary: Vec<(&str, String)> = vec![
        ("Cluster", format!("{} (namespace {ns})", rc.metadata.name)),
        ("Replication", replication(rc)),
    ];
    let Some(status) = &rc.status else {
        summary.push((
            "Phase",
            "- (no status yet: is the operator running?)".into(),
        ));
        push_fields(&mut out, summary);
        return out;
    };
    summary.extend(summary_fields(rc, status));
    push_fields(&mut out, summary);
    out.push_str("\nMembers\n");
    out.push_str(&members_section(status));
    if !status.faults.is_empty() {
        out.push_str("\nFaults\n");
        out.push_str(&faults_section(status));
    }
    if !status.conditions.is_empty() {
        out.push_str("\nConditions\n");
        out.push_str(&conditions_section(status));
    }
    if let Some(rows) = live {
        out.push_str("\nLive (each member's /v1/status through the API server)\n");
        out.push_str(&table(rows));
    }
    out
}

/// The summary lines after Cluster and Replication.
fn summary_fields(rc: &RegisterCluster, status: &ClusterStatus) -> Vec<(&'static str, String)> {
    let mut summary: Vec<(&str, String)> = vec![("Phase", opt(&status.phase))];
    if let Some(at) = &status.observed_at {
        summary.push(("Observed at", at.clone()));
    }
    summary.push((
        "Ready",
        status.ready.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                opt(&status.ready_replicas),
                status.replicas.unwrap_or(i64::from(rc.replicas()))
            )
        }),
    ));
    let leader = match (&status.leader, status.leader_id) {
        (Some(pod), Some(id)) => format!("{pod} (id {id})"),
        (Some(pod), None) => pod.clone(),
        (None, Some(id)) => format!("id {id}"),
        (None, None) => "none".into(),
    };
    summary.push(("Leader", leader));
    summary.push(("Term", opt(&status.term)));
    summary.push(("Commit index", opt(&status.commit_index)));
    if !status.voters.is_empty() || !status.learners.is_empty() {
        summary.push(("Voters", voters(status)));
    }
    summary.push((
        "Active faults",
        status
            .active_faults
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into()),
    ));
    if let Some(since) = &status.primary_unreachable_since {
        summary.push(("Primary lost", format!("unreachable since {since}")));
    }
    if let Some(f) = &status.last_failover {
        summary.push((
            "Last failover",
            format!(
                "{}: id {} -> id {}, up to {} acknowledged writes may be lost",
                opt(&f.time),
                opt(&f.from),
                opt(&f.to),
                opt(&f.possible_loss)
            ),
        ));
    }
    if let (Some(seen), Some(generation)) = (status.observed_generation, rc.metadata.generation) {
        if seen < generation {
            summary.push((
                "Note",
                format!("status reflects generation {seen}, the spec is at {generation}"),
            ));
        }
    }
    summary
}

/// `1,2,3`, and `  learners: 4` if there are any.
fn voters(status: &ClusterStatus) -> String {
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    if status.learners.is_empty() {
        ids(&status.voters)
    } else {
        format!(
            "{}  learners: {}",
            ids(&status.voters),
            ids(&status.learners)
        )
    }
}

/// One row per member by ordinal, the leader starred.
fn members_section(status: &ClusterStatus) -> String {
    let mut members: Vec<&MemberStatus> = status.members.iter().collect();
    members.sort_by_key(|m| (m.ordinal, m.name.clone()));
    let rows = members
        .iter()
        .map(|m| {
            let is_leader = status.leader.as_deref() == Some(m.name.as_str());
            vec![
                format!("{}{}", m.name, if is_leader { " *" } else { "" }),
                opt(&m.id),
                m.role.clone().unwrap_or_else(|| "unknown".into()),
                opt(&m.term),
                opt(&m.commit_index),
                opt(&m.applied_index),
                opt(&m.lag),
                if m.reachable { "yes" } else { "NO" }.to_string(),
                list(&m.faults),
                opt(&m.pod_ip),
            ]
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        return "  (none observed yet)\n".into();
    }
    grid(
        &[
            "NAME",
            "ID",
            "ROLE",
            "TERM",
            "COMMIT",
            "APPLIED",
            "LAG",
            "REACHABLE",
            "FAULTS",
            "POD IP",
        ],
        &rows,
    )
}

fn faults_section(status: &ClusterStatus) -> String {
    let rows = status
        .faults
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.kind.clone(),
                f.state.clone(),
                fault_targets(f),
                opt(&f.since),
                opt(&f.until),
                opt(&f.message),
            ]
        })
        .collect::<Vec<_>>();
    grid(
        &[
            "NAME", "KIND", "STATE", "TARGETS", "SINCE", "UNTIL", "MESSAGE",
        ],
        &rows,
    )
}

fn conditions_section(status: &ClusterStatus) -> String {
    let rows = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                opt(&c.reason),
                opt(&c.last_transition_time),
                opt(&c.message),
            ]
        })
        .collect::<Vec<_>>();
    grid(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FIXTURE: &str = r#"
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata:
  name: raft5
  namespace: lab
  generation: 3
spec:
  replicas: 3
  replication: raft
  faults:
    - name: cut-leader
      kind: partition
      groups: [["leader"], ["followers"]]
      durationSeconds: 60
status:
  observedGeneration: 3
  observedAt: "2025-01-01T10:00:07Z"
  phase: Degraded
  replication: raft
  replicas: 3
  readyReplicas: 2
  ready: 2/3
  leader: raft5-1
  leaderId: 2
  term: 4
  commitIndex: 120
  bootstrapped: true
  nextMemberId: 4
  voters: [1, 2, 3]
  members:
    - {name: raft5-1, ordinal: 1, id: 2, podIp: 10.244.0.6, role: leader, term: 4, commitIndex: 120, appliedIndex: 120, lag: 0, reachable: true}
    - {name: raft5-0, ordinal: 0, id: 1, podIp: 10.244.0.5, role: follower, term: 3, commitIndex: 97, appliedIndex: 95, lag: 23, reachable: false, faults: [partition]}
    - {name: raft5-2, ordinal: 2, id: 3, role: follower, term: 4, commitIndex: 120, appliedIndex: 120, lag: 0, reachable: true}
  faults:
    - name: cut-leader
      kind: partition
      state: Active
      groups: [[0], [1, 2]]
      since: "2025-01-01T10:00:00Z"
      until: "2025-01-01T10:01:00Z"
      specHash: abc
  activeFaults: cut-leader
  conditions:
    - {type: Available, status: "True", lastTransitionTime: "2025-01-01T09:59:00Z", reason: QuorumAvailable, message: "2/3 voters reachable"}
    - {type: Degraded, status: "True", lastTransitionTime: "2025-01-01T10:00:05Z", reason: MemberUnreachable, message: "raft5-0 unreachable"}
  someFutureField: {x: 1}
"#;

    fn fixture() -> RegisterCluster {
        let value: Value = serde_yaml::from_str(FIXTURE).expect("fixture is YAML");
        RegisterCluster::from_value(value).expect("fixture is a RegisterCluster")
    }

    #[test]
    fn renders_the_status_of_a_fixture() {
        let rc = fixture();
        assert_eq!(rc.replicas(), 3);
        assert_eq!(rc.leader_pod(), Some("raft5-1"));
        let text = render(&rc, None);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{text}"))
                .to_string()
        };
        assert!(line("Cluster:").contains("raft5 (namespace lab)"));
        assert!(line("Replication:").ends_with("raft"));
        assert!(line("Observed at:").ends_with("2025-01-01T10:00:07Z"));
        assert!(line("Phase:").ends_with("Degraded"));
        assert!(line("Ready:").ends_with("2/3"));
        assert!(line("Leader:").ends_with("raft5-1 (id 2)"));
        assert!(line("Term:").ends_with('4'));
        assert!(line("Active faults:").ends_with("cut-leader"));
        // Members sorted by ordinal, the leader starred, the cut-off member flagged.
        let header = line("NAME ");
        assert!(header.contains("ROLE") && header.contains("LAG") && header.contains("REACHABLE"));
        let m0 = line("raft5-0");
        let cells: Vec<&str> = m0.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "raft5-0",
                "1",
                "follower",
                "3",
                "97",
                "95",
                "23",
                "NO",
                "partition",
                "10.244.0.5"
            ]
        );
        assert!(line("raft5-1 *").contains("leader"));
        let m2: Vec<String> = line("raft5-2")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(m2.last().map(String::as_str), Some("-"), "no pod IP");
        let order: Vec<usize> = ["raft5-0", "raft5-1", "raft5-2"]
            .iter()
            .filter_map(|n| text.find(&format!("\n{n}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Faults with resolved groups and times; conditions.
        let fault = line("cut-leader");
        assert!(fault.contains("partition") && fault.contains("Active"));
        assert!(fault.contains("[0] | [1,2]"));
        assert!(fault.contains("2025-01-01T10:00:00Z") && fault.contains("2025-01-01T10:01:00Z"));
        assert!(line("Degraded ").contains("MemberUnreachable"));
        assert!(line("Available").contains("2/3 voters reachable"));
        assert!(!text.contains("Live"));
    }

    #[test]
    fn replication_is_what_the_members_run() {
        let value: Value = serde_yaml::from_str(
            "metadata: {name: x}\nspec: {replication: async}\nstatus: {replication: raft}\n",
        )
        .expect("yaml");
        let rc = RegisterCluster::from_value(value).expect("minimal");
        assert_eq!(
            replication(&rc),
            "raft (spec.replication async is refused: it is immutable)"
        );
    }

    #[test]
    fn renders_without_a_status_and_with_live_rows() {
        let value: Value =
            serde_yaml::from_str("metadata: {name: fresh}\nspec: {replicas: 3}\n").expect("yaml");
        let rc = RegisterCluster::from_value(value).expect("minimal");
        let text = render(&rc, None);
        assert!(text.contains("no status yet"), "{text}");
        assert_eq!(rc.replicas(), 3);
        assert_eq!(rc.leader_pod(), None);
        let leaderless: Value = serde_yaml::from_str(
            "metadata: {name: lq}\nspec: {replicas: 3}\nstatus: {leader: leaderless}\n",
        )
        .expect("yaml");
        let lq = RegisterCluster::from_value(leaderless).expect("quorum");
        assert_eq!(lq.leader_pod(), None, "quorum mode names no leader pod");

        let rows = vec![Row {
            addr: "raft5-0".into(),
            id: Some(1),
            role: "follower".into(),
            faults: "-".into(),
            ..Row::default()
        }];
        let text = render(&fixture(), Some(&rows));
        let live = text.split("Live").nth(1).expect("a live section");
        assert!(
            live.contains("ADDRESS") && live.contains("raft5-0"),
            "{text}"
        );
    }
}
