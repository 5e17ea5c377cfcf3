//! What the live view shows, computed from the members' `/v1/status` answers: each member's
//! state, the fault acting on each directed link, and one timeline sample per poll. Pure
//! functions (no I/O), so the rules are unit-tested here and the page only draws.

use std::collections::BTreeMap;

use caplab_api::faults::FaultSet;
use caplab_api::status::{Replication, Status};
use caplab_api::tail::TailEntry;
use caplab_api::NodeId;
use serde::Serialize;

use super::workload::Ops;

/// One member as the page draws it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// The address or pod name it is polled at.
    pub label: String,
    /// Its member id, from its last answer (`None`: it never answered).
    pub id: Option<NodeId>,
    /// Whether it answered the last poll.
    pub up: bool,
    /// Whether it answered that it is paused (then `up` is false: it takes part in nothing).
    pub paused: bool,
    /// Why the last poll failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its clock minus the observer's when it answered, in milliseconds (request time
    /// included: accurate to the round trip).
    pub clock_offset_ms: i64,
    /// The last answer (kept while it is down, so its last known indexes stay visible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Peer messages it sent per second over the last poll interval, by receiver and kind
    /// (from its message trace; empty when the trace could not be read).
    pub sent_per_second: BTreeMap<NodeId, BTreeMap<String, f64>>,
    /// Where the next trace read starts (its clock, ms).
    #[serde(skip)]
    pub trace_since: Option<u64>,
    /// The last entries of its log (`GET /v1/log`), oldest first; kept while it is down.
    pub log: Vec<TailEntry>,
}

impl MemberView {
    /// A member not polled yet.
    pub fn new(label: String) -> Self {
        MemberView {
            label,
            id: None,
            up: false,
            paused: false,
            error: Some("not polled yet".to_string()),
            clock_offset_ms: 0,
            status: None,
            sent_per_second: BTreeMap::new(),
            trace_since: None,
            log: Vec::new(),
        }
    }
}

/// What acts on the messages of one direction of a link, the worst first: a cut, then
/// loss, then delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkFault {
    Cut,
    Lossy,
    Delayed,
}

/// One direction of a link between two members.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub from: NodeId,
    pub to: NodeId,
    /// `None`: nothing injected acts on it.
    pub fault: Option<LinkFault>,
    /// Peer messages per second sent on it over the last poll interval (from the members'
    /// message traces; `None`: no trace seen yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<f64>,
    /// The same by message kind (`append`, `vote`, …).
    pub by_kind: BTreeMap<String, f64>,
}

/// The fault `faults` (installed on member `owner`) puts on messages `from` -> `to`, where
/// `owner` is one end. A partition cuts by direction; delay and loss act on both directions
/// of the links they name (caplab_api::faults).
pub fn fault_on(owner: NodeId, faults: &FaultSet, from: NodeId, to: NodeId) -> Option<LinkFault> {
    let (peer, outgoing) = if from == owner {
        (to, true)
    } else if to == owner {
        (from, false)
    } else {
        return None;
    };
    let cut = faults.partition.as_ref().is_some_and(|p| {
        p.applies_to(peer)
            && if outgoing {
                p.direction.cuts_outgoing()
            } else {
                p.direction.cuts_incoming()
            }
    });
    if cut || faults.pause {
        return Some(LinkFault::Cut);
    }
    if faults
        .loss
        .as_ref()
        .is_some_and(|l| l.probability > 0.0 && l.applies_to(peer))
    {
        return Some(LinkFault::Lossy);
    }
    faults
        .delay
        .as_ref()
        .filter(|d| d.applies_to(peer))
        .map(|_| LinkFault::Delayed)
}

/// The worst of two faults on one link (one from each end's fault set).
fn worst(a: Option<LinkFault>, b: Option<LinkFault>) -> Option<LinkFault> {
    [a, b].into_iter().flatten().min_by_key(|f| *f as u8)
}

/// Every directed link between the members with a known id, with the fault acting on it
/// (from both ends' fault sets; a member that is down cuts its links).
pub fn links(members: &[MemberView]) -> Vec<Link> {
    let known: Vec<(NodeId, &MemberView)> = members
        .iter()
        .filter_map(|m| m.id.map(|id| (id, m)))
        .collect();
    let mut out = Vec::new();
    for &(from, a) in &known {
        for &(to, b) in &known {
            if from == to {
                continue;
            }
            let fault = if !a.up || !b.up {
                Some(LinkFault::Cut)
            } else {
                worst(end_fault(a, from, to), end_fault(b, from, to))
            };
            let by_kind = a.sent_per_second.get(&to).cloned().unwrap_or_default();
            out.push(Link {
                from,
                to,
                fault,
                messages_per_second: a.sent_per_second.get(&to).map(|k| k.values().sum()),
                by_kind,
            });
        }
    }
    out
}

fn end_fault(m: &MemberView, from: NodeId, to: NodeId) -> Option<LinkFault> {
    let status = m.status.as_ref()?;
    fault_on(status.id, &status.faults, from, to)
}

/// One poll, for the timeline strip.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The observer's clock, milliseconds since the Unix epoch.
    pub t: u64,
    /// The member that serves writes (Raft leader, primary, 2pc coordinator) as the members
    /// that answered agree on; `None`: none (or leaderless quorum mode).
    pub leader: Option<NodeId>,
    /// The highest term (epoch) an answering member reports.
    pub term: u64,
    pub up: usize,
    pub total: usize,
    /// Whether the cluster can commit writes: a leader with a majority of voters answering
    /// (Raft, primary modes), W replicas answering (quorum), every participant (2pc).
    pub quorum: bool,
    /// 2pc: transactions in doubt, summed over the members.
    pub in_doubt: u64,
    /// Faults in force, one short name each (`partition n1`, `down n3`, `skew n2 +3000ms`).
    pub faults: Vec<String>,
    /// The client operations of the poll interval (`None`: the first poll, or members that
    /// do not count them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<Ops>,
}

/// The timeline sample of one poll at `t`.
pub fn sample(t: u64, members: &[MemberView]) -> Sample {
    let answering: Vec<&Status> = members
        .iter()
        .filter(|m| m.up)
        .filter_map(|m| m.status.as_ref())
        .collect();
    let leader = answering
        .iter()
        .find(|s| s.engine.role.is_leader())
        .map(|s| s.id);
    let term = answering.iter().map(|s| s.engine.term).max().unwrap_or(0);
    let in_doubt = answering
        .iter()
        .filter_map(|s| s.twopc.as_ref())
        .map(|t| t.in_doubt)
        .sum();
    let mut faults: Vec<String> = members.iter().flat_map(fault_names).collect();
    faults.sort();
    faults.dedup();
    Sample {
        t,
        leader,
        term,
        up: answering.len(),
        total: members.len(),
        quorum: has_quorum(&answering, leader, members.len()),
        in_doubt,
        faults,
        ops: None,
    }
}

/// Whether the answering members can commit a write (see [`Sample::quorum`]).
fn has_quorum(answering: &[&Status], leader: Option<NodeId>, total: usize) -> bool {
    let Some(first) = answering.first() else {
        return false;
    };
    match first.engine.replication {
        Replication::Quorum => first
            .quorum
            .as_ref()
            .is_some_and(|q| answering.len() >= q.write_quorum),
        Replication::TwoPc => leader.is_some() && answering.len() == total,
        Replication::Raft | Replication::Async | Replication::Sync => {
            let voters = answering
                .iter()
                .find(|s| Some(s.id) == leader)
                .map_or(total, |s| s.engine.voters.len().max(1));
            let up_voters = answering.iter().filter(|s| s.voter).count();
            leader.is_some() && up_voters * 2 > voters
        }
    }
}

/// Short names of the faults one member is under.
fn fault_names(m: &MemberView) -> Vec<String> {
    let who = m.id.map_or_else(|| m.label.clone(), |id| format!("n{id}"));
    if !m.up && !m.paused {
        return vec![format!("down {who}")];
    }
    let Some(f) = m.status.as_ref().map(|s| &s.faults) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut add = |present: bool, kind: &str| {
        if present {
            names.push(format!("{kind} {who}"));
        }
    };
    add(f.partition.is_some(), "partition");
    add(f.delay.is_some(), "delay");
    add(f.loss.is_some(), "loss");
    add(f.pause, "pause");
    add(f.veto.is_some(), "veto");
    if f.clock_skew_ms != 0 {
        names.push(format!("skew {who} {:+}ms", f.clock_skew_ms));
    }
    names
}

/// The aggregated JSON the page fetches once a second.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View<'a> {
    /// What is watched: the cluster's name or the addresses.
    pub title: &'a str,
    pub now: u64,
    pub members: &'a [MemberView],
    pub links: &'a [Link],
    /// Oldest first, one a poll, the last few minutes.
    pub history: Vec<&'a Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use caplab_api::faults::{CutDirection, DelayFault, LossFault, PeerFilter};

    #[test]
    fn a_partition_cuts_by_direction() {
        let faults = FaultSet {
            partition: Some(PeerFilter {
                peers: [2].into(),
                direction: CutDirection::Outgoing,
            }),
            ..FaultSet::default()
        };
        assert_eq!(fault_on(1, &faults, 1, 2), Some(LinkFault::Cut));
        assert_eq!(fault_on(1, &faults, 2, 1), None);
        assert_eq!(fault_on(1, &faults, 1, 3), None);
        assert_eq!(fault_on(1, &faults, 2, 3), None);
    }

    #[test]
    fn loss_outranks_delay_and_acts_both_ways() {
        let faults = FaultSet {
            delay: Some(DelayFault {
                peers: Default::default(),
                latency_ms: 50,
                jitter_ms: 0,
            }),
            loss: Some(LossFault {
                peers: [3].into(),
                probability: 0.5,
            }),
            ..FaultSet::default()
        };
        assert_eq!(fault_on(1, &faults, 3, 1), Some(LinkFault::Lossy));
        assert_eq!(fault_on(1, &faults, 1, 2), Some(LinkFault::Delayed));
        assert_eq!(
            worst(Some(LinkFault::Delayed), Some(LinkFault::Cut)),
            Some(LinkFault::Cut)
        );
    }
}
