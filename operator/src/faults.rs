//! Turns `spec.faults` into per-member fault sets (pure).
//!
//! Targets are resolved to ordinals when a fault starts (symbolic `leader` /
//! `followers` use the leader of that moment) and recorded in status, so a
//! fault keeps hitting the same members even after leadership moves. Ordinals
//! are mapped to member ids on every reconcile, because a replaced member
//! comes back under a new id. A crash on a Raft cluster without storage starts only while a
//! majority of the voters would keep running ([`survival`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use caplab_api::faults::{DelayFault, FaultSet, LossFault, PeerFilter, VetoFault};

use crate::crd::{FaultKind, FaultSpec, FaultState, FaultStatus, Target};

mod survival;

pub use survival::Voters;

/// Something worth an Event.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultEvent {
    /// A fault became active.
    Started {
        /// Fault name.
        name: String,
        /// Its kind.
        kind: FaultKind,
        /// Resolved target ordinals (not partitions).
        targets: Vec<u32>,
        /// Resolved partition groups (ordinals).
        groups: Vec<Vec<u32>>,
    },
    /// A fault ended (expired or removed).
    Ended {
        /// Fault name.
        name: String,
        /// `expired` or `removed`.
        why: &'static str,
    },
    /// A due crash fault waits until a majority of the voters would survive it (announced
    /// once per fault, when it begins to wait).
    Deferred {
        /// Fault name.
        name: String,
        /// Why, naming pods: `crashing demo-1 now would leave 1 of 3 voters running …`.
        why: String,
    },
}

impl FaultEvent {
    /// What people read in the Event, naming members with `name_of(ordinal)` (pod names):
    /// `fault cut started: partition [demo-0] | [demo-1, demo-2]`.
    pub fn note(&self, name_of: impl Fn(u32) -> String) -> String {
        let list = |os: &[u32]| {
            os.iter()
                .map(|o| name_of(*o))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            FaultEvent::Started {
                name,
                kind,
                targets,
                groups,
            } => {
                let on = if *kind == FaultKind::Partition {
                    let gs: Vec<String> = groups.iter().map(|g| format!("[{}]", list(g))).collect();
                    gs.join(" | ")
                } else {
                    format!("on {}", list(targets))
                };
                format!("fault {name} started: {} {on}", kind.as_str())
            }
            FaultEvent::Ended { name, why } => format!("fault {name} ended ({why})"),
            FaultEvent::Deferred { name, why } => format!("fault {name} deferred: {why}"),
        }
    }
}

/// The result of planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// New `status.faults`.
    pub statuses: Vec<FaultStatus>,
    /// Desired fault set per ordinal (every ordinal in range has an entry).
    pub sets: BTreeMap<u32, FaultSet>,
    /// Ordinals whose pods must stay down.
    pub crashed: BTreeSet<u32>,
    /// Active fault kinds per ordinal.
    pub member_faults: BTreeMap<u32, Vec<String>>,
    /// Earliest expiry of an active fault, or start of a scheduled one (a wake-up time).
    pub next_expiry: Option<DateTime<Utc>>,
    /// Events to publish.
    pub events: Vec<FaultEvent>,
}

impl FaultPlan {
    /// Names of active faults.
    pub fn active_names(&self) -> Vec<String> {
        self.statuses
            .iter()
            .filter(|f| f.state == FaultState::Active)
            .map(|f| f.name.clone())
            .collect()
    }
}

/// Stable fingerprint of a fault spec (FNV-1a over its JSON).
pub fn spec_hash(f: &FaultSpec) -> String {
    let json = serde_json::to_string(f).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn resolve_one(t: &Target, replicas: u32, leader: Option<u32>) -> Result<Vec<u32>, String> {
    match t {
        Target::Ordinal(o) if *o < replicas => Ok(vec![*o]),
        Target::Ordinal(o) => Err(format!("ordinal {o} out of range")),
        Target::Leader => leader
            .map(|l| vec![l])
            .ok_or_else(|| "no leader yet".to_string()),
        Target::Followers | Target::Others => leader
            .map(|l| (0..replicas).filter(|o| *o != l).collect())
            .ok_or_else(|| "no leader yet".to_string()),
        Target::Unknown(x) => Err(format!("unknown target {x:?}")),
    }
}

/// Resolves a target list to sorted, unique ordinals.
pub fn resolve_targets(
    targets: &[Target],
    replicas: u32,
    leader: Option<u32>,
) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    for t in targets {
        out.extend(resolve_one(t, replicas, leader)?);
    }
    Ok(out.into_iter().collect())
}

/// Resolves partition groups; `others` is every member not named elsewhere.
pub fn resolve_groups(
    groups: &[Vec<Target>],
    replicas: u32,
    leader: Option<u32>,
) -> Result<Vec<Vec<u32>>, String> {
    let mut named = BTreeSet::new();
    let mut out: Vec<Option<BTreeSet<u32>>> = Vec::new();
    for g in groups {
        if g.contains(&Target::Others) {
            out.push(None);
            continue;
        }
        let set: BTreeSet<u32> = resolve_targets(g, replicas, leader)?.into_iter().collect();
        named.extend(set.iter().copied());
        out.push(Some(set));
    }
    Ok(out
        .into_iter()
        .map(|g| match g {
            Some(s) => s.into_iter().collect(),
            None => (0..replicas).filter(|o| !named.contains(o)).collect(),
        })
        .collect())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_ts(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How long reverted/expired faults stay listed after they are removed from the spec.
const KEEP_REVERTED: i64 = 600;

/// The clock that fault `startAfterSeconds` count on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Time zero: the workload's start when there is a workload, else when the cluster was
    /// first Ready; `None` while it has not come.
    pub zero: Option<DateTime<Utc>>,
    /// There is a workload: every fault waits for its start (and a new run restarts them);
    /// without one only faults with `startAfterSeconds > 0` wait.
    pub workload: bool,
}

impl Schedule {
    /// `Ok` when the fault may start now, else when it will (if known) and why it waits.
    fn due(
        &self,
        f: &FaultSpec,
        now: DateTime<Utc>,
    ) -> Result<(), (Option<DateTime<Utc>>, String)> {
        let after = f.start_after_seconds.unwrap_or(0);
        if after == 0 && !self.workload {
            return Ok(());
        }
        let from = if self.workload {
            "the workload's start"
        } else {
            "the cluster's first Ready"
        };
        let Some(zero) = self.zero else {
            return Err((None, format!("waiting for {from}")));
        };
        let at = zero + Duration::seconds(i64::try_from(after).unwrap_or(i64::MAX / 2));
        if at <= now {
            return Ok(());
        }
        Err((
            Some(at),
            format!("starts at {} ({after} s after {from})", ts(at)),
        ))
    }

    /// The fingerprint a fault's status carries: a new run of a workload is a new start.
    fn hash(&self, f: &FaultSpec) -> String {
        match (self.workload, self.zero) {
            (true, Some(zero)) => format!("{}@{}", spec_hash(f), zero.timestamp()),
            _ => spec_hash(f),
        }
    }
}

/// The cluster a pass plans the faults against.
#[derive(Clone, Debug)]
pub struct Cluster<'a> {
    /// `spec.replicas`.
    pub replicas: u32,
    /// Current member id of each ordinal (missing ordinals get no peers).
    pub ids: &'a BTreeMap<u32, u64>,
    /// Ordinal of the current leader, if known (faults wait for one).
    pub leader: Option<u32>,
    /// A Raft cluster without storage: the voters a crash must leave a majority of running
    /// ([`Voters`]); `None` elsewhere (crashed members come back with their logs, or the
    /// mode has no voters to lose).
    pub voters: Option<Voters>,
}

/// Plans the faults, each starting at once (no schedule, no voters to keep): [`plan_scheduled`].
pub fn plan(
    spec: &[FaultSpec],
    prev: &[FaultStatus],
    now: DateTime<Utc>,
    replicas: u32,
    ids: &BTreeMap<u32, u64>,
    leader: Option<u32>,
) -> FaultPlan {
    let cluster = Cluster {
        replicas,
        ids,
        leader,
        voters: None,
    };
    plan_scheduled(spec, prev, now, &cluster, &Schedule::default())
}

/// Plans the faults against `cluster`.
///
/// `schedule` says when faults with `startAfterSeconds` (or every fault, with a workload)
/// may start; a fault not yet due stays `pending`, and its start is a wake-up time
/// (`next_expiry`). A due crash that would leave no majority of `cluster.voters` running
/// stays `pending` too (its message says why, a [`FaultEvent::Deferred`] once), and is tried
/// again every pass (pending faults keep the requeue at about a second).
pub fn plan_scheduled(
    spec: &[FaultSpec],
    prev: &[FaultStatus],
    now: DateTime<Utc>,
    cluster: &Cluster<'_>,
    schedule: &Schedule,
) -> FaultPlan {
    let mut plan = FaultPlan::default();
    let mut down = crashed(prev);
    for f in spec {
        let hash = schedule.hash(f);
        let old = prev.iter().find(|p| p.name == f.name);
        let st = match old {
            Some(p)
                if p.spec_hash.as_deref() == Some(hash.as_str())
                    && matches!(p.state, FaultState::Active | FaultState::Expired) =>
            {
                keep(p, now, &mut plan.events)
            }
            _ => match schedule.due(f, now) {
                Ok(()) => {
                    let mut st = start(f, &hash, now, cluster, &down, &mut plan.events);
                    announce_deferral(&mut st, old, &mut plan.events);
                    if f.kind == FaultKind::Crash && st.state == FaultState::Active {
                        down.extend(st.targets.iter().copied());
                    }
                    st
                }
                Err((at, why)) => {
                    if let Some(at) = at {
                        plan.next_expiry = Some(plan.next_expiry.map_or(at, |n| n.min(at)));
                    }
                    waiting(f, &hash, Some(why))
                }
            },
        };
        plan.statuses.push(st);
    }
    ended(spec, prev, now, &mut plan);
    for o in 0..cluster.replicas {
        plan.sets.insert(o, FaultSet::default());
    }
    let active: Vec<FaultStatus> = plan
        .statuses
        .iter()
        .filter(|s| s.state == FaultState::Active)
        .cloned()
        .collect();
    for st in &active {
        if let Some(until) = parse_ts(&st.until) {
            plan.next_expiry = Some(plan.next_expiry.map_or(until, |n| n.min(until)));
        }
        let Some(f) = spec.iter().find(|f| f.name == st.name) else {
            continue;
        };
        apply(f, st, cluster.ids, &mut plan);
    }
    plan
}

/// The faults of `prev` no longer in `spec`: an active one is reverted now (an Event); a
/// reverted or expired one stays listed as reverted for [`KEEP_REVERTED`] seconds.
fn ended(spec: &[FaultSpec], prev: &[FaultStatus], now: DateTime<Utc>, plan: &mut FaultPlan) {
    for p in prev {
        if spec.iter().any(|f| f.name == p.name) {
            continue;
        }
        match p.state {
            FaultState::Active => {
                let mut p = p.clone();
                p.state = FaultState::Reverted;
                p.until = Some(ts(now));
                plan.events.push(FaultEvent::Ended {
                    name: p.name.clone(),
                    why: "removed",
                });
                plan.statuses.push(p);
            }
            FaultState::Reverted | FaultState::Expired => {
                let recent = parse_ts(&p.until)
                    .map(|u| (now - u).num_seconds() < KEEP_REVERTED)
                    .unwrap_or(false);
                if recent {
                    let mut p = p.clone();
                    p.state = FaultState::Reverted;
                    plan.statuses.push(p);
                }
            }
            FaultState::Pending => {}
        }
    }
}

/// An active or expired fault as it was, expired once its `until` has passed.
fn keep(p: &FaultStatus, now: DateTime<Utc>, events: &mut Vec<FaultEvent>) -> FaultStatus {
    let mut p = p.clone();
    if p.state == FaultState::Active && parse_ts(&p.until).is_some_and(|until| until <= now) {
        p.state = FaultState::Expired;
        events.push(FaultEvent::Ended {
            name: p.name.clone(),
            why: "expired",
        });
    }
    p
}

/// Ordinals that crash faults active before this pass keep down (or that come back empty:
/// counted down whether the fault ends in this pass or not, as they are no voters yet).
fn crashed(prev: &[FaultStatus]) -> BTreeSet<u32> {
    prev.iter()
        .filter(|p| p.kind == FaultKind::Crash && p.state == FaultState::Active)
        .flat_map(|p| p.targets.iter().copied())
        .collect()
}

/// Announces a deferral once per fault, not per pass: a [`FaultEvent::Deferred`] when `st`
/// was just held back by [`survival`] and its previous status `old` (the same spec) was not.
/// A held-back fault that now waits for something else (a leader, lost with the crash before
/// it) keeps saying it waits for the voters: it still does, and must not be announced again.
/// The status is the memory, so an operator restart announces nothing again either.
fn announce_deferral(
    st: &mut FaultStatus,
    old: Option<&FaultStatus>,
    events: &mut Vec<FaultEvent>,
) {
    let was = old
        .filter(|p| p.spec_hash == st.spec_hash)
        .and_then(|p| survival::deferred(p).map(|_| p.message.clone()));
    match (survival::deferred(st).map(str::to_string), was) {
        (Some(why), None) => events.push(FaultEvent::Deferred {
            name: st.name.clone(),
            why,
        }),
        (None, Some(message)) if st.state == FaultState::Pending => st.message = message,
        _ => {}
    }
}

/// A fault that is not due yet.
fn waiting(f: &FaultSpec, hash: &str, why: Option<String>) -> FaultStatus {
    FaultStatus {
        name: f.name.clone(),
        kind: f.kind,
        state: FaultState::Pending,
        targets: vec![],
        groups: vec![],
        since: None,
        until: None,
        spec_hash: Some(hash.to_string()),
        message: why,
    }
}

/// Starts `f` now, resolving its targets, unless the cluster has no leader yet, its targets
/// cannot be resolved, or (a crash) it would leave no majority of the voters running while
/// `down` are crashed: then it stays pending, saying why.
fn start(
    f: &FaultSpec,
    hash: &str,
    now: DateTime<Utc>,
    cluster: &Cluster<'_>,
    down: &BTreeSet<u32>,
    events: &mut Vec<FaultEvent>,
) -> FaultStatus {
    let mut st = waiting(f, hash, None);
    // Faults act on a serving cluster: before there is a leader (still bootstrapping, or no
    // quorum) even ordinal targets wait, so that a crash cannot stall the bootstrap itself.
    if cluster.leader.is_none() {
        st.message = Some("waiting for the cluster to have a leader".into());
        return st;
    }
    let (replicas, leader) = (cluster.replicas, cluster.leader);
    let resolved = if f.kind == FaultKind::Partition {
        resolve_groups(&f.groups, replicas, leader).map(|g| (vec![], g))
    } else {
        resolve_targets(&f.targets, replicas, leader).map(|t| (t, vec![]))
    };
    let (targets, groups) = match resolved {
        Ok(resolved) => resolved,
        Err(m) => {
            st.message = Some(m);
            return st;
        }
    };
    let guard = cluster
        .voters
        .as_ref()
        .filter(|_| f.kind == FaultKind::Crash);
    if let Some(Err(why)) = guard.map(|v| v.admit(cluster, &targets, down)) {
        st.message = Some(why);
        return st;
    }
    st.state = FaultState::Active;
    st.since = Some(ts(now));
    st.until = f
        .duration_seconds
        .map(|d| ts(now + Duration::seconds(i64::try_from(d).unwrap_or(i64::MAX / 2))));
    events.push(FaultEvent::Started {
        name: f.name.clone(),
        kind: f.kind,
        targets: targets.clone(),
        groups: groups.clone(),
    });
    st.targets = targets;
    st.groups = groups;
    st
}

fn apply(f: &FaultSpec, st: &FaultStatus, ids: &BTreeMap<u32, u64>, plan: &mut FaultPlan) {
    let mark = |plan: &mut FaultPlan, o: u32| {
        let v = plan.member_faults.entry(o).or_default();
        if !v.iter().any(|k| k == f.kind.as_str()) {
            v.push(f.kind.as_str().to_string());
        }
    };
    match f.kind {
        FaultKind::Partition => {
            for (gi, g) in st.groups.iter().enumerate() {
                let others: Vec<u64> = st
                    .groups
                    .iter()
                    .enumerate()
                    .filter(|(gj, _)| *gj != gi)
                    .flat_map(|(_, g)| g.iter())
                    .filter(|o| !g.contains(o))
                    .filter_map(|o| ids.get(o).copied())
                    .collect();
                if others.is_empty() {
                    continue;
                }
                for o in g {
                    if let Some(set) = plan.sets.get_mut(o) {
                        let p = set.partition.get_or_insert_with(PeerFilter::default);
                        p.peers.extend(others.iter().copied());
                        mark(plan, *o);
                    }
                }
            }
        }
        FaultKind::Crash => {
            for o in &st.targets {
                plan.crashed.insert(*o);
                mark(plan, *o);
            }
        }
        FaultKind::Pause
        | FaultKind::Delay
        | FaultKind::Loss
        | FaultKind::ClockSkew
        | FaultKind::Veto => {
            for o in &st.targets {
                let Some(set) = plan.sets.get_mut(o) else {
                    continue;
                };
                match f.kind {
                    FaultKind::Pause => set.pause = true,
                    FaultKind::Delay => {
                        let latency = f.latency_ms.unwrap_or(0);
                        let keep = set.delay.as_ref().is_some_and(|d| d.latency_ms > latency);
                        if !keep {
                            set.delay = Some(DelayFault {
                                peers: BTreeSet::new(),
                                latency_ms: latency,
                                jitter_ms: f.jitter_ms.unwrap_or(0),
                            });
                        }
                    }
                    FaultKind::Loss => {
                        let p = f.probability.unwrap_or(0.0);
                        // A zero probability loses nothing: no loss fault at all.
                        let keep = p == 0.0 || set.loss.as_ref().is_some_and(|l| l.probability > p);
                        if !keep {
                            set.loss = Some(LossFault {
                                peers: BTreeSet::new(),
                                probability: p,
                            });
                        }
                    }
                    FaultKind::Veto => {
                        let p = f.probability.unwrap_or(0.0);
                        // Like loss: the strongest veto on a member wins; zero vetoes nothing.
                        let keep = p == 0.0 || set.veto.as_ref().is_some_and(|v| v.probability > p);
                        if !keep {
                            set.veto = Some(VetoFault { probability: p });
                        }
                    }
                    _ => set.clock_skew_ms = f.offset_ms.unwrap_or(0),
                }
                mark(plan, *o);
            }
        }
    }
}

#[cfg(test)]
mod tests;
