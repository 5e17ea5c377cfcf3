//! Crash faults that together take a Raft majority without `storage`.
//!
//! A crashed pod without storage comes back empty, as a new member: a member that lost its
//! log must never vote as the old one (it could elect a leader without committed entries,
//! Raft thesis §3.8). If the crashes in force at one time leave the survivors no majority,
//! they can neither commit nor admit the new members, and the cluster stays without a leader
//! for good; with storage the crashed ones come back with their logs and it recovers. So the
//! schedule is judged by the union of the members crashed at the same time, not one fault
//! at a time, on the spec's windows: what is certain from the spec alone. When faults really
//! start is judged again at runtime (`faults/survival.rs`: a crash waits until a majority of
//! the voters would survive it), so windows that only touch (one starting when the other
//! ends) are accepted: the later crash waits for the member crashed before to be back as a
//! voter.

use std::collections::BTreeSet;

use crate::crd::{
    FaultKind, FaultSpec, FaultState, FaultStatus, RegisterCluster, Replication, Target,
};
use crate::faults::spec_hash;

/// A crash fault's window in seconds on the schedule's clock: `[start, end)`, `end` `None`
/// for a fault without `durationSeconds` (in force until removed from the spec).
fn window(f: &FaultSpec) -> (u64, Option<u64>) {
    let start = f.start_after_seconds.unwrap_or(0);
    (start, f.duration_seconds.map(|d| start.saturating_add(d)))
}

/// Is `f` in force at second `t`?
fn active_at(f: &FaultSpec, t: u64) -> bool {
    let (start, end) = window(f);
    start <= t && end.is_none_or(|e| t < e)
}

/// At most how many distinct members of `replicas` the crash faults `faults`, in force at
/// once, take down. The worst case: `leader` (or its alias `primary`) is resolved when its
/// fault starts and may be any member, so each fault naming it counts one member no other
/// target names (`[leader, 1]` is 2; `[leader, leader]` is 1); `followers` is every member
/// but its fault's leader, which any other target (or another fault's `followers`, resolved
/// against another leader) may name. A fault counts each of its targets once however often it
/// lists it: it resolves them to one set of members.
fn members_down(faults: &[&FaultSpec], replicas: u32) -> u32 {
    let mut ordinals = BTreeSet::new();
    let (mut leaders, mut followers) = (0u32, 0u32);
    for f in faults {
        ordinals.extend(f.targets.iter().filter_map(|t| match t {
            Target::Ordinal(o) if *o < replicas => Some(*o),
            _ => None,
        }));
        leaders += u32::from(f.targets.contains(&Target::Leader));
        followers += u32::from(f.targets.contains(&Target::Followers));
    }
    let named = u32::try_from(ordinals.len()).unwrap_or(u32::MAX) + leaders;
    let down = match followers {
        0 => named,
        1 => replicas.saturating_sub(1) + u32::from(named > 0),
        _ => replicas,
    };
    down.min(replicas)
}

/// Has `f` run and ended for good? Without a workload a fault runs once per spec: its status
/// says `expired` under the same spec hash (with a workload, each run starts it again).
fn over(rc: &RegisterCluster, f: &FaultSpec) -> bool {
    let hash = spec_hash(f);
    let ended = |s: &FaultStatus| {
        s.name == f.name
            && s.state == FaultState::Expired
            && s.spec_hash.as_deref() == Some(hash.as_str())
    };
    rc.spec.workload.is_none()
        && rc
            .status
            .as_ref()
            .is_some_and(|st| st.faults.iter().any(ended))
}

/// Problems with the crash faults of a Raft cluster without `spec.storage`: every fault
/// alone, and every set of them in force at once (at some fault's start, where overlaps
/// peak), that leaves no majority, each reported once (a set containing one already reported is left out); each
/// says which faults overlap and how to fix it.
pub(super) fn raft_crash_problems(rc: &RegisterCluster) -> Vec<String> {
    let spec = &rc.spec;
    if spec.replication != Replication::Raft || spec.storage.is_some() {
        return Vec::new();
    }
    let replicas = u32::try_from(spec.replicas).unwrap_or(0);
    let crashes: Vec<&FaultSpec> = spec
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Crash && !over(rc, f))
        .collect();
    let mut together: Vec<Vec<&FaultSpec>> = crashes
        .iter()
        .map(|f| {
            let t = window(f).0;
            crashes
                .iter()
                .copied()
                .filter(|g| active_at(g, t))
                .collect()
        })
        .collect();
    // Each fault alone too, first: one that leaves no majority by itself is reported as such
    // (staggering would not help it), not as an overlap.
    together.extend(crashes.iter().map(|f| vec![*f]));
    together.sort_by_key(Vec::len);
    let mut reported: Vec<BTreeSet<&str>> = Vec::new();
    let mut problems = Vec::new();
    for set in together {
        let names: BTreeSet<&str> = set.iter().map(|f| f.name.as_str()).collect();
        if reported.iter().any(|r| r.is_subset(&names)) {
            continue;
        }
        let down = members_down(&set, replicas);
        let survivors = replicas.saturating_sub(down);
        if down > 0 && survivors * 2 <= replicas {
            problems.push(no_majority(&set, down, replicas));
            reported.push(names);
        }
    }
    problems
}

/// Says that the crash faults `set` (in force at once) take `down` of `replicas` members,
/// leaving no majority, and how to fix it.
fn no_majority(set: &[&FaultSpec], down: u32, replicas: u32) -> String {
    let survivors = replicas.saturating_sub(down);
    let names: Vec<String> = set.iter().map(|f| format!("{:?}", f.name)).collect();
    let which = match names.as_slice() {
        [init @ .., last] if !init.is_empty() => format!(
            "faults {} and {last} overlap (in force at the same time)",
            init.join(", ")
        ),
        _ => format!("fault {}", names.join(", ")),
    };
    let worst = if set.iter().any(|f| f.targets.contains(&Target::Leader)) {
        " (counting each fault's 'leader' as a member no other target names: it is resolved \
         when its fault starts and may be any member, the worst case)"
    } else {
        ""
    };
    format!(
        "{which}: a crash of {down} of {} without spec.storage leaves {survivors}, no \
         majority{worst}: the crashed ones would come back empty, as new members the survivors \
         cannot admit without a majority, and the cluster would stay without a leader for \
         good: {}",
        plural(replicas, "Raft member"),
        advice(set, replicas)
    )
}

/// `1 member`, `3 members`.
fn plural(n: u32, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// What can be done about crash faults `set` that together leave no majority of `replicas`,
/// each piece of advice one that can be followed: staggering needs every fault to end (the
/// ones without `durationSeconds` are named), and a cluster of fewer than 3 members has no
/// member to spare at all.
fn advice(set: &[&FaultSpec], replicas: u32) -> String {
    let storage = "create a new cluster with spec.storage (e.g. storage: {size: 64Mi})";
    let spare = replicas.saturating_sub(1) / 2;
    if spare == 0 {
        return format!(
            "a cluster of {} has no member to spare: remove the crash, raise spec.replicas to \
             at least 3, or {storage}",
            plural(replicas, "Raft member")
        );
    }
    let endless: Vec<String> = set
        .iter()
        .filter(|f| f.duration_seconds.is_none())
        .map(|f| format!("{:?}", f.name))
        .collect();
    let stagger = match (set.len(), endless.as_slice()) {
        (1, _) => String::new(),
        (_, []) => format!("stagger them ({STAGGER}), "),
        (_, endless) => format!(
            "give {} a durationSeconds and stagger them ({STAGGER}), ",
            endless.join(" and ")
        ),
    };
    let example = match spare {
        1 => "one ordinal".to_string(),
        n => format!("up to {n} ordinals"),
    };
    format!(
        "{stagger}crash at most {} at a time (e.g. targets: [leader] or {example}), or {storage}",
        plural(spare, "member")
    )
}

/// How to stagger crash faults, and why touching windows are enough.
const STAGGER: &str = "startAfterSeconds of one at least the other's startAfterSeconds + \
                       durationSeconds; the operator also waits before starting a crash until a \
                       majority would survive, so the later one starts once the member crashed \
                       before is back as a voter";
