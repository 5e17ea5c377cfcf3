//! A seeded, Jepsen-style nemesis for loopback clusters: it cycles faults through the members'
//! own fault layer (`PUT /v1/admin/faults`), SIGKILLs and restarts processes, changes the Raft
//! membership and fails primaries over through the admin API, makes 2pc participants veto and
//! crashes the 2pc coordinator (watching its participants block, then resolve), and records
//! when each fault was active so that a test can relate anomalies to faults.
//!
//! Everything random comes from one [`Rng`] seeded by the test (see [`seed_from_env`]), so a
//! seed names a schedule: the same faults, targets and durations in the same order. Timing on
//! a busy machine is not reproducible, so a seed reproduces the schedule, not the interleaving.
//!
//! The nemesis is deliberately patient but never fails a test for liveness: an admin call the
//! cluster refuses for too long is recorded as a note in the [`Event`] and the schedule moves on.
//! Only [`Nemesis::heal`] must succeed (the final checks need a whole cluster).

mod admin;
mod kinds;
mod rng;
mod twopc;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use caplab_api::faults::{CutDirection, DelayFault, FaultSet, LossFault, VetoFault};
use serde_json::{json, Value};

use crate::Cluster;
pub use admin::{current_leader, retry_admin, AdminCall};
use admin::{cut, members_known_to, poll};
use kinds::{
    Kind, Loss, Target, PRIMARY_KINDS, QUORUM_KINDS, QUORUM_SKEW_KINDS, RAFT_KINDS, TWOPC_KINDS,
};
pub use rng::{seed_from_env, Rng, SEED_ENV};
pub use twopc::Blocked;

/// Which replication the cluster runs: it decides which faults make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Raft,
    /// `async` or `sync`: failovers through `POST /v1/admin/promote` + `PUT /v1/admin/primary`.
    Primary,
    /// `2pc`: member 1 (given the init) coordinates; every third fault is a coordinator crash.
    TwoPc,
    /// `quorum`: no leader; with `clock_skew`, every third fault skews one member's clock (and
    /// no member is killed: its counters of writes lost to last-writer-wins would restart).
    Quorum {
        clock_skew: bool,
    },
}

/// What the nemesis did, in the time base of the run (nanoseconds since its `start`).
#[derive(Debug, Clone)]
pub struct Event {
    /// A human description with the resolved targets, e.g. `bridge [1, 2] <3> [4, 5]`.
    pub fault: String,
    pub start_ns: u64,
    /// When the fault was healed (for a failover: when every member followed the new primary).
    pub end_ns: u64,
    /// A failover: the one fault after which the primary modes may lose acknowledged writes.
    pub failover: bool,
    /// Steps the cluster refused until the nemesis gave up on them (liveness, not safety).
    pub notes: Vec<String>,
    /// A clock skew: the member and its offset in milliseconds (negative: behind).
    pub skew: Option<(u64, i64)>,
    /// A 2pc coordinator crash: what the participants did while it was down.
    pub blocked: Option<Blocked>,
}

/// The nemesis of one run.
pub struct Nemesis {
    rng: Rng,
    replication: Replication,
    start: Instant,
    /// Whether the members accept `"direction"` in a partition (one-way cuts); else a one-way
    /// cut is applied as a cut of the same links both ways.
    one_way: bool,
    /// How long one admin step may be refused before the nemesis gives up on it.
    patience: Duration,
    pub events: Vec<Event>,
}

/// How long a fault lasts, and the calm between two faults.
const FAULT_MS: (u64, u64) = (800, 4_000);
const CALM_MS: (u64, u64) = (300, 1_500);

impl Nemesis {
    /// `start` is the run's time zero, shared with the workload's history.
    pub fn new(seed: u64, replication: Replication, start: Instant) -> Nemesis {
        Nemesis {
            rng: Rng::new(seed),
            replication,
            start,
            one_way: false,
            patience: Duration::from_secs(20),
            events: Vec::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Finds out whether the members support one-way partitions (`"direction"`); call once
    /// before the workload starts. Returns what it found.
    pub async fn probe_one_way(&mut self, cluster: &Cluster) -> bool {
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        let (first, other) = (ids[0], ids[ids.len() - 1]);
        let probe = cluster
            .client(first)
            .set_faults(&cut(&[other], CutDirection::Outgoing))
            .await;
        self.one_way = probe.is_ok();
        retry_admin(cluster, first, &AdminCall::heal(), self.patience)
            .await
            .unwrap_or_else(|e| panic!("healing the one-way probe on member {first}: {e}"));
        if let Err(e) = probe {
            println!(
                "nemesis: the members refuse \"direction\" in a partition ({e}); one-way cuts \
                 are applied both ways"
            );
        }
        self.one_way
    }

    /// Runs faults one after another, each followed by a calm, until `until`; every fault is
    /// healed before the next starts. In the primary modes every other fault is a failover,
    /// in 2pc every third a coordinator crash and in quorum mode with skew every third a clock
    /// skew, so that even a short run has several.
    pub async fn run(&mut self, cluster: &mut Cluster, until: Instant) {
        let mut step = 0u64;
        while Instant::now() < until {
            let kind = self.draw(step);
            step += 1;
            let hold = Duration::from_millis(self.rng.between(FAULT_MS.0, FAULT_MS.1));
            let start_ns = self.now_ns();
            let mut event = self.apply(cluster, kind, hold).await;
            event.start_ns = start_ns;
            event.end_ns = self.now_ns();
            println!(
                "nemesis [{:>6.2}s – {:>6.2}s] {}{}",
                start_ns as f64 / 1e9,
                event.end_ns as f64 / 1e9,
                event.fault,
                if event.notes.is_empty() {
                    String::new()
                } else {
                    format!(" (gave up: {})", event.notes.join("; "))
                }
            );
            self.events.push(event);
            let calm = self.rng.between(CALM_MS.0, CALM_MS.1);
            tokio::time::sleep(Duration::from_millis(calm)).await;
        }
    }

    /// The kind of the `step`th fault of the run.
    fn draw(&mut self, step: u64) -> Kind {
        match self.replication {
            Replication::Raft => self.rng.pick(RAFT_KINDS),
            Replication::Primary if step % 2 == 1 => self
                .rng
                .pick(&[Kind::Failover(Loss::Crash), Kind::Failover(Loss::Isolate)]),
            Replication::Primary => self.rng.pick(PRIMARY_KINDS),
            Replication::TwoPc if step % 3 == 1 => Kind::CoordinatorCrash,
            Replication::TwoPc => self.rng.pick(TWOPC_KINDS),
            Replication::Quorum { clock_skew: true } if step % 3 == 1 => {
                Kind::ClockSkew(Target::Any)
            }
            Replication::Quorum { clock_skew: true } => self.rng.pick(QUORUM_SKEW_KINDS),
            Replication::Quorum { clock_skew: false } => self.rng.pick(QUORUM_KINDS),
        }
    }

    /// Applies one fault, holds it for `hold` and heals it.
    async fn apply(&mut self, cluster: &mut Cluster, kind: Kind, hold: Duration) -> Event {
        let mut event = Event {
            fault: String::new(),
            start_ns: 0,
            end_ns: 0,
            failover: false,
            notes: Vec::new(),
            skew: None,
            blocked: None,
        };
        match kind {
            Kind::Halves | Kind::Bridge | Kind::Ring | Kind::OneWay => {
                let (fault, cuts) = self.topology(cluster, kind);
                event.fault = fault;
                self.hold_faults(cluster, &cuts, hold, &mut event).await;
            }
            Kind::Pause(t)
            | Kind::Loss(t)
            | Kind::Delay(t)
            | Kind::ClockSkew(t)
            | Kind::Veto(t) => {
                let member = self.resolve(cluster, t).await;
                let (fault, set) = self.member_fault(kind, member);
                event.fault = fault;
                if set.clock_skew_ms != 0 {
                    event.skew = Some((member, set.clock_skew_ms));
                }
                self.hold_faults(cluster, &[(member, set)], hold, &mut event)
                    .await;
            }
            Kind::Kill(t) => {
                let member = self.resolve(cluster, t).await;
                event.fault = format!("SIGKILL {member}, restart after {hold:?}");
                cluster.kill(member);
                tokio::time::sleep(hold).await;
                cluster.restart(member);
            }
            Kind::Membership(t) => {
                let member = self.resolve(cluster, t).await;
                event.fault = format!("remove voter {member}, re-add as learner, then voter");
                self.membership_cycle(cluster, member, hold, &mut event)
                    .await;
            }
            Kind::Failover(loss) => {
                event.failover = true;
                self.failover(cluster, loss, hold, &mut event).await;
            }
            Kind::CoordinatorCrash => {
                let (start, patience) = (self.start, self.patience);
                twopc::coordinator_crash(cluster, start, hold, patience, &mut event).await;
            }
        }
        event
    }

    /// The member a target names now; any running member when the leader is unknown.
    async fn resolve(&mut self, cluster: &Cluster, target: Target) -> u64 {
        let running: Vec<u64> = cluster.running().map(|m| m.id).collect();
        let leader = current_leader(cluster).await;
        let followers: Vec<u64> = running
            .iter()
            .copied()
            .filter(|id| Some(*id) != leader)
            .collect();
        match (target, leader) {
            (Target::Leader, Some(l)) => l,
            (Target::Follower, _) if !followers.is_empty() => self.rng.pick(&followers),
            _ => self.rng.pick(&running),
        }
    }

    /// A partial topology as per-member partitions: (description, [(member, fault set)]).
    fn topology(&mut self, cluster: &Cluster, kind: Kind) -> (String, Vec<(u64, FaultSet)>) {
        let mut ids: Vec<u64> = cluster.members.keys().copied().collect();
        self.rng.shuffle(&mut ids);
        let n = ids.len();
        let cut = |peers: &[u64]| cut(peers, CutDirection::Both);
        match kind {
            Kind::Halves => {
                let (a, b) = ids.split_at(n / 2);
                let (a, b) = (sorted(a), sorted(b));
                let cuts = a
                    .iter()
                    .map(|&m| (m, cut(&b)))
                    .chain(b.iter().map(|&m| (m, cut(&a))))
                    .collect();
                (format!("partition {a:?} | {b:?}"), cuts)
            }
            Kind::Bridge => {
                let bridge = ids[0];
                let (a, b) = ids[1..].split_at((n - 1) / 2);
                let (a, b) = (sorted(a), sorted(b));
                let cuts = a
                    .iter()
                    .map(|&m| (m, cut(&b)))
                    .chain(b.iter().map(|&m| (m, cut(&a))))
                    .chain([(bridge, FaultSet::default())])
                    .collect();
                (format!("bridge {a:?} <{bridge}> {b:?}"), cuts)
            }
            Kind::Ring => {
                let cuts = (0..n)
                    .map(|i| {
                        let near = [ids[(i + 1) % n], ids[(i + n - 1) % n]];
                        let far: Vec<u64> = ids
                            .iter()
                            .copied()
                            .filter(|p| *p != ids[i] && !near.contains(p))
                            .collect();
                        (ids[i], cut(&sorted(&far)))
                    })
                    .collect();
                (format!("ring {ids:?}"), cuts)
            }
            _ => {
                let from = ids[0];
                let count = self.rng.between(1, (n as u64 - 1).max(1)) as usize;
                let to = sorted(&ids[1..=count.min(n - 1)]);
                let outgoing = self.rng.chance(0.5);
                let (set, how) = match (self.one_way, outgoing) {
                    (true, true) => (
                        admin::cut(&to, CutDirection::Outgoing),
                        "one-way cut (outgoing)",
                    ),
                    (true, false) => (
                        admin::cut(&to, CutDirection::Incoming),
                        "one-way cut (incoming)",
                    ),
                    (false, _) => (cut(&to), "cut (both ways: no one-way support)"),
                };
                (format!("{how} {from} -> {to:?}"), vec![(from, set)])
            }
        }
    }

    /// A fault on one member's links: (description, fault set).
    fn member_fault(&mut self, kind: Kind, member: u64) -> (String, FaultSet) {
        let none = FaultSet::default();
        match kind {
            Kind::Pause(_) => (
                format!("pause {member}"),
                FaultSet {
                    pause: true,
                    ..none
                },
            ),
            Kind::Loss(_) => {
                let probability = self.rng.between(10, 60) as f64 / 100.0;
                let loss = LossFault {
                    peers: BTreeSet::new(),
                    probability,
                };
                let set = FaultSet {
                    loss: Some(loss),
                    ..none
                };
                (format!("loss {probability} at {member}"), set)
            }
            Kind::Delay(_) => {
                // Mostly below the 100 ms heartbeat (openraft's RPC deadline), sometimes above.
                let latency_ms = self.rng.between(5, 150);
                let jitter_ms = self.rng.between(0, latency_ms / 2);
                let delay = DelayFault {
                    peers: BTreeSet::new(),
                    latency_ms,
                    jitter_ms,
                };
                let set = FaultSet {
                    delay: Some(delay),
                    ..none
                };
                (
                    format!("delay {latency_ms}±{jitter_ms} ms at {member}"),
                    set,
                )
            }
            Kind::Veto(_) => {
                let probability = self.rng.between(20, 100) as f64 / 100.0;
                let set = FaultSet {
                    veto: Some(VetoFault { probability }),
                    ..none
                };
                (format!("veto {probability} at {member}"), set)
            }
            _ => {
                let skew = self.rng.between(500, 10_000) as i64;
                let clock_skew_ms = if self.rng.chance(0.5) { skew } else { -skew };
                let set = FaultSet {
                    clock_skew_ms,
                    ..none
                };
                (format!("clock skew {clock_skew_ms} ms at {member}"), set)
            }
        }
    }

    /// Sets fault sets, holds them, heals those members.
    async fn hold_faults(
        &self,
        cluster: &Cluster,
        cuts: &[(u64, FaultSet)],
        hold: Duration,
        event: &mut Event,
    ) {
        for (member, set) in cuts {
            let call = AdminCall::Faults(set.clone());
            self.admin_step(cluster, *member, call, event).await;
        }
        tokio::time::sleep(hold).await;
        for (member, _) in cuts {
            self.admin_step(cluster, *member, AdminCall::heal(), event)
                .await;
        }
    }

    /// Raft: removes `member` from the voters, then adds it back as a learner and a voter.
    async fn membership_cycle(
        &self,
        cluster: &Cluster,
        member: u64,
        hold: Duration,
        event: &mut Event,
    ) {
        let all: BTreeSet<u64> = cluster.members.keys().copied().collect();
        let rest: BTreeSet<u64> = all.iter().copied().filter(|id| *id != member).collect();
        let via = *rest.iter().next().unwrap_or(&member);
        let removed = self
            .admin_step(cluster, via, AdminCall::Voters(rest), event)
            .await;
        if !removed {
            return;
        }
        tokio::time::sleep(hold).await;
        let learner = AdminCall::Learner {
            id: member,
            addr: cluster.members[&member].peer.clone(),
        };
        if self.admin_step(cluster, via, learner, event).await {
            self.admin_step(cluster, via, AdminCall::Voters(all), event)
                .await;
        }
    }

    /// Primary modes: takes the primary away, promotes a random secondary, points everyone at
    /// it, and brings the old primary back as its secondary.
    async fn failover(
        &mut self,
        cluster: &mut Cluster,
        loss: Loss,
        hold: Duration,
        event: &mut Event,
    ) {
        let Some(old) = current_leader(cluster).await else {
            event.fault = "failover skipped: no primary known".into();
            return;
        };
        let others = cluster.ids_except(old);
        let new = self.rng.pick(&others);
        event.fault = format!(
            "failover {old} -> {new} ({})",
            match loss {
                Loss::Crash => "SIGKILL",
                Loss::Isolate => "isolated",
            }
        );
        match loss {
            Loss::Crash => cluster.kill(old),
            Loss::Isolate => {
                let isolate = AdminCall::Faults(cut(&others, CutDirection::Both));
                self.admin_step(cluster, old, isolate, event).await;
            }
        }
        // The detection delay of a real failover, while clients keep writing.
        tokio::time::sleep(hold / 2).await;
        if !self
            .admin_step(cluster, new, AdminCall::Promote, event)
            .await
        {
            // No new primary: the old one comes back as it was.
            self.bring_back(cluster, old, loss, event).await;
            return;
        }
        let survivors: BTreeSet<u64> = others.iter().copied().collect();
        self.admin_step(cluster, new, AdminCall::Voters(survivors), event)
            .await;
        let follow = AdminCall::Follow {
            id: new,
            addr: cluster.members[&new].peer.clone(),
        };
        for id in others.iter().copied().filter(|id| *id != new) {
            self.admin_step(cluster, id, follow.clone(), event).await;
        }
        tokio::time::sleep(hold / 2).await;
        self.bring_back(cluster, old, loss, event).await;
        self.admin_step(cluster, old, follow, event).await;
        let all: BTreeSet<u64> = cluster.members.keys().copied().collect();
        self.admin_step(cluster, new, AdminCall::Voters(all), event)
            .await;
    }

    /// Undoes how a failover took the primary `old` away: restarts it or heals its cut.
    async fn bring_back(&self, cluster: &mut Cluster, old: u64, loss: Loss, event: &mut Event) {
        match loss {
            Loss::Crash => cluster.restart(old),
            Loss::Isolate => {
                self.admin_step(cluster, old, AdminCall::heal(), event)
                    .await;
            }
        }
    }

    /// One admin call, retried while refused for at most the nemesis's patience; a refusal
    /// past it is noted in `event`. Returns whether it succeeded.
    async fn admin_step(
        &self,
        cluster: &Cluster,
        member: u64,
        call: AdminCall,
        event: &mut Event,
    ) -> bool {
        match retry_admin(cluster, member, &call, self.patience).await {
            Ok(()) => true,
            Err(e) => {
                event.notes.push(format!("{call} on {member}: {e}"));
                false
            }
        }
    }

    /// Brings the whole cluster back: every process running, every fault cleared, every
    /// member a voter (Raft) or following one primary with every member in its set (primary
    /// modes), or in 2pc nothing left prepared or in doubt on any member. Errors name the step
    /// the cluster still refused after `deadline`: the final checks need a whole cluster, and
    /// one that cannot be healed is a finding.
    pub async fn heal(&self, cluster: &mut Cluster, deadline: Duration) -> Result<(), String> {
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        for id in &ids {
            if !cluster.members[id].is_running() {
                cluster.restart(*id);
            }
        }
        for id in &ids {
            retry_admin(cluster, *id, &AdminCall::heal(), deadline)
                .await
                .map_err(|e| format!("healing the faults of member {id}: {e}"))?;
        }
        match self.replication {
            Replication::Raft | Replication::Primary => self.rejoin(cluster, deadline).await,
            Replication::TwoPc => twopc::settled(cluster, deadline).await,
            Replication::Quorum { .. } => Ok(()),
        }
    }

    /// After healing, Raft and the primary modes: every member a voter of the leader, or
    /// following the primary with every member in its set.
    async fn rejoin(&self, cluster: &Cluster, deadline: Duration) -> Result<(), String> {
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        let leader = poll(deadline, || current_leader(cluster))
            .await
            .ok_or(format!(
                "no leader or primary within {deadline:?} of healing"
            ))?;
        if self.replication == Replication::Raft {
            let known = poll(deadline, || members_known_to(cluster, leader))
                .await
                .ok_or(format!(
                    "no status from leader {leader} within {deadline:?}"
                ))?;
            for id in ids.iter().filter(|id| !known.contains(id)) {
                let learner = AdminCall::Learner {
                    id: *id,
                    addr: cluster.members[id].peer.clone(),
                };
                retry_admin(cluster, leader, &learner, deadline)
                    .await
                    .map_err(|e| format!("re-adding member {id} as a learner: {e}"))?;
            }
        } else {
            let follow = AdminCall::Follow {
                id: leader,
                addr: cluster.members[&leader].peer.clone(),
            };
            for id in ids.iter().filter(|id| **id != leader) {
                retry_admin(cluster, *id, &follow, deadline)
                    .await
                    .map_err(|e| format!("pointing member {id} at primary {leader}: {e}"))?;
            }
        }
        let all: BTreeSet<u64> = ids.iter().copied().collect();
        retry_admin(cluster, leader, &AdminCall::Voters(all), deadline)
            .await
            .map_err(|e| format!("restoring every member as a voter: {e}"))
    }

    /// Every fault as a window for `caplab report --events`:
    /// `[{"name": "...", "start": ns, "end": ns}]`.
    pub fn windows_json(&self) -> Value {
        self.events
            .iter()
            .map(|e| json!({"name": e.fault, "start": e.start_ns, "end": e.end_ns}))
            .collect()
    }

    /// The failover windows, `(start_ns, end_ns)`.
    pub fn failover_windows(&self) -> Vec<(u64, u64)> {
        self.events
            .iter()
            .filter(|e| e.failover)
            .map(|e| (e.start_ns, e.end_ns))
            .collect()
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}
