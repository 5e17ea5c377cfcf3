//! Crash faults that together take a Raft majority without `storage`.
//!
//! A crashed pod without storage comes back empty, as a new member: a member that lost its
//! log must never vote as the old one (it could elect a leader without committed entries,
//! Raft thesis §3.8). If the crashes in force at one time leave the survivors no majority,
//! they can neither commit nor admit the new members, and the cluster stays without a leader
//! for good; with storage the crashed ones come back with their logs and it recovers. So the
//! schedule is judged by the union of the members crashed at the same time, not one fault
//! at a time.

use std::collections::BTreeSet;

use crate::crd::{FaultKind, FaultSpec, RegisterCluster, Replication, Target};

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
/// once, take down. The worst case: `leader` is resolved when its fault starts and may be
/// any member, so each `leader` counts as one no other target names (`[leader, 1]` is 2);
/// `followers` is every member but its fault's leader, which any other target (or another
/// `followers`, resolved against another leader) may name.
fn members_down(faults: &[&FaultSpec], replicas: u32) -> u32 {
    let targets = faults.iter().flat_map(|f| f.targets.iter());
    let (mut ordinals, mut leaders, mut followers) = (BTreeSet::new(), 0u32, 0u32);
    for t in targets {
        match t {
            Target::Ordinal(o) if *o < replicas => {
                ordinals.insert(*o);
            }
            Target::Leader => leaders += 1,
            Target::Followers => followers += 1,
            _ => {}
        }
    }
    let named = u32::try_from(ordinals.len()).unwrap_or(u32::MAX) + leaders;
    let down = match followers {
        0 => named,
        1 => replicas.saturating_sub(1) + u32::from(named > 0),
        _ => replicas,
    };
    down.min(replicas)
}

/// Problems with the crash faults of a Raft cluster without `spec.storage`: every set of
/// them in force at once (at some fault's start, where overlaps peak) that leaves no
/// majority, each reported once (a set containing one already reported is left out); each
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
        .filter(|f| f.kind == FaultKind::Crash)
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
        " (counting each 'leader' as a member no other target names: it is resolved when its \
         fault starts and may be any member, the worst case)"
    } else {
        ""
    };
    let stagger = if set.len() > 1 {
        "stagger them (startAfterSeconds of one at least the other's startAfterSeconds + \
         durationSeconds), "
    } else {
        ""
    };
    format!(
        "{which}: a crash of {down} of {replicas} Raft members without spec.storage leaves \
         {survivors}, no majority{worst}: the crashed ones would come back empty, as new members the \
         survivors cannot admit without a majority, and the cluster would stay without a \
         leader for good: {stagger}crash at most {} members at a time (e.g. targets: [leader] \
         or one ordinal), or create a new cluster with spec.storage (e.g. storage: {{size: \
         64Mi}})",
        replicas.saturating_sub(1) / 2
    )
}
