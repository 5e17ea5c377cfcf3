//! A seeded, Jepsen-style nemesis for loopback clusters: it cycles faults through the members'
//! own fault layer (`PUT /v1/admin/faults`), SIGKILLs and restarts processes, changes the Raft
//! membership and fails primaries over through the admin API, and records when each fault was
//! active so that a test can relate anomalies to faults.
//!
//! Everything random comes from one [`Rng`] seeded by the test (see [`seed_from_env`]), so a
//! seed names a schedule: the same faults, targets and durations in the same order. Timing on
//! a busy machine is not reproducible, so a seed reproduces the schedule, not the interleaving.
//!
//! The nemesis is deliberately patient but never fails a test for liveness: an admin call the
//! cluster refuses for too long is recorded as a note in the [`Event`] and the schedule moves on.
//! Only [`Nemesis::heal`] must succeed (the final checks need a whole cluster).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::Cluster;

/// The environment variable that fixes the seed of a nemesis test.
pub const SEED_ENV: &str = "CAPLAB_NEMESIS_SEED";

/// The seed from [`SEED_ENV`] (decimal or `0x` hex), or a fresh one drawn from the clock and
/// the process id; printed either way so that a failed run can be repeated.
///
/// Panics with a one-line reason when the variable is set but not a `u64`.
pub fn seed_from_env() -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => parse_seed(&text).unwrap_or_else(|| {
            panic!("{SEED_ENV}={text:?} is not a u64: give a decimal or 0x-prefixed hex number")
        }),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng::new(nanos ^ u64::from(std::process::id())).next_u64()
        }
    };
    println!("nemesis seed: {seed} (repeat this schedule with {SEED_ENV}={seed})");
    seed
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// SplitMix64: small, fast, and good enough to draw schedules and workloads from a seed
/// (the harness has no dependency on a random-number crate).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p` (0 to 1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A child generator for another purpose (a client, a run), independent of later draws.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// Which replication the cluster runs: it decides which faults make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Raft,
    /// `async` or `sync`: failovers through `POST /v1/admin/promote` + `PUT /v1/admin/primary`.
    Primary,
}

/// A member named by its role, resolved when the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The Raft leader or the primary.
    Leader,
    /// Any member but the leader or primary.
    Follower,
    Any,
}

/// How a primary is taken away before a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// SIGKILL; restarted once the new primary serves.
    Crash,
    /// Cut off from every other member; it keeps serving clients (async: acknowledging writes
    /// the new primary never gets).
    Isolate,
}

/// One step of a schedule, before its targets are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Two random halves that cannot reach each other.
    Halves,
    /// Two halves cut apart except for one member that reaches both.
    Bridge,
    /// Every member reaches only its two neighbours in a random ring.
    Ring,
    /// One member's messages to some others are cut in one direction only (outgoing or
    /// incoming, drawn), the other direction still works.
    OneWay,
    Pause(Target),
    Loss(Target),
    Delay(Target),
    ClockSkew(Target),
    Kill(Target),
    /// Remove a voter, then add it back as a learner and make it a voter again.
    Membership(Target),
    /// Take the primary away and promote a secondary.
    Failover(Loss),
}

const RAFT_KINDS: &[Kind] = &[
    Kind::Halves,
    Kind::Halves,
    Kind::Bridge,
    Kind::Bridge,
    Kind::Ring,
    Kind::OneWay,
    Kind::OneWay,
    Kind::Pause(Target::Leader),
    Kind::Pause(Target::Any),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::ClockSkew(Target::Any),
    Kind::Kill(Target::Leader),
    Kind::Kill(Target::Any),
    Kind::Membership(Target::Leader),
    Kind::Membership(Target::Follower),
];

const PRIMARY_KINDS: &[Kind] = &[
    Kind::Failover(Loss::Crash),
    Kind::Failover(Loss::Isolate),
    Kind::Pause(Target::Follower),
    Kind::Loss(Target::Any),
    Kind::Delay(Target::Any),
    Kind::ClockSkew(Target::Any),
    Kind::Kill(Target::Follower),
];

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
        let cut = json!({"partition": {"peers": [other], "direction": "outgoing"}});
        let (status, _) = cluster
            .admin(first, Method::PUT, "/v1/admin/faults", cut)
            .await;
        self.one_way = status == 200;
        retry_admin(
            cluster,
            first,
            Method::PUT,
            "/v1/admin/faults",
            json!({}),
            self.patience,
        )
        .await
        .unwrap_or_else(|e| panic!("healing the one-way probe on member {first}: {e}"));
        if !self.one_way {
            println!(
                "nemesis: the members refuse \"direction\" in a partition (HTTP {status}); \
                 one-way cuts are applied both ways"
            );
        }
        self.one_way
    }

    /// Runs faults one after another, each followed by a calm, until `until`; every fault is
    /// healed before the next starts. In the primary modes every other fault is a failover, so
    /// that even a short run has several.
    pub async fn run(&mut self, cluster: &mut Cluster, until: Instant) {
        let mut step = 0u64;
        while Instant::now() < until {
            let kind = match self.replication {
                Replication::Raft => self.rng.pick(RAFT_KINDS),
                Replication::Primary if step % 2 == 1 => self
                    .rng
                    .pick(&[Kind::Failover(Loss::Crash), Kind::Failover(Loss::Isolate)]),
                Replication::Primary => self.rng.pick(PRIMARY_KINDS),
            };
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

    /// Applies one fault, holds it for `hold` and heals it.
    async fn apply(&mut self, cluster: &mut Cluster, kind: Kind, hold: Duration) -> Event {
        let mut event = Event {
            fault: String::new(),
            start_ns: 0,
            end_ns: 0,
            failover: false,
            notes: Vec::new(),
        };
        match kind {
            Kind::Halves | Kind::Bridge | Kind::Ring | Kind::OneWay => {
                let (fault, cuts) = self.topology(cluster, kind);
                event.fault = fault;
                self.hold_faults(cluster, &cuts, hold, &mut event).await;
            }
            Kind::Pause(t) | Kind::Loss(t) | Kind::Delay(t) | Kind::ClockSkew(t) => {
                let member = self.resolve(cluster, t).await;
                let (fault, set) = self.member_fault(kind, member);
                event.fault = fault;
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
    fn topology(&mut self, cluster: &Cluster, kind: Kind) -> (String, Vec<(u64, Value)>) {
        let mut ids: Vec<u64> = cluster.members.keys().copied().collect();
        self.rng.shuffle(&mut ids);
        let n = ids.len();
        let cut = |peers: &[u64]| json!({"partition": {"peers": peers}});
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
                    .chain([(bridge, json!({}))])
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
                        json!({"partition": {"peers": to, "direction": "outgoing"}}),
                        "one-way cut (outgoing)",
                    ),
                    (true, false) => (
                        json!({"partition": {"peers": to, "direction": "incoming"}}),
                        "one-way cut (incoming)",
                    ),
                    (false, _) => (cut(&to), "cut (both ways: no one-way support)"),
                };
                (format!("{how} {from} -> {to:?}"), vec![(from, set)])
            }
        }
    }

    /// A fault on one member's links: (description, fault set).
    fn member_fault(&mut self, kind: Kind, member: u64) -> (String, Value) {
        match kind {
            Kind::Pause(_) => (format!("pause {member}"), json!({"pause": true})),
            Kind::Loss(_) => {
                let p = self.rng.between(10, 60) as f64 / 100.0;
                (
                    format!("loss {p} at {member}"),
                    json!({"loss": {"peers": [], "probability": p}}),
                )
            }
            Kind::Delay(_) => {
                // Mostly below the 100 ms heartbeat (openraft's RPC deadline), sometimes above.
                let latency = self.rng.between(5, 150);
                let jitter = self.rng.between(0, latency / 2);
                (
                    format!("delay {latency}±{jitter} ms at {member}"),
                    json!({"delay": {"peers": [], "latencyMs": latency, "jitterMs": jitter}}),
                )
            }
            _ => {
                let skew = self.rng.between(500, 10_000) as i64;
                let skew = if self.rng.chance(0.5) { skew } else { -skew };
                (
                    format!("clock skew {skew} ms at {member}"),
                    json!({"clockSkewMs": skew}),
                )
            }
        }
    }

    /// Sets fault sets, holds them, heals those members.
    async fn hold_faults(
        &self,
        cluster: &Cluster,
        cuts: &[(u64, Value)],
        hold: Duration,
        event: &mut Event,
    ) {
        for (member, set) in cuts {
            self.admin_step(
                cluster,
                *member,
                Method::PUT,
                "/v1/admin/faults",
                set.clone(),
                event,
            )
            .await;
        }
        tokio::time::sleep(hold).await;
        for (member, _) in cuts {
            self.admin_step(
                cluster,
                *member,
                Method::PUT,
                "/v1/admin/faults",
                json!({}),
                event,
            )
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
            .admin_step(
                cluster,
                via,
                Method::PUT,
                "/v1/admin/voters",
                json!({"voters": rest}),
                event,
            )
            .await;
        if !removed {
            return;
        }
        tokio::time::sleep(hold).await;
        let learner = json!({"id": member, "addr": cluster.members[&member].peer});
        if self
            .admin_step(
                cluster,
                via,
                Method::POST,
                "/v1/admin/learners",
                learner,
                event,
            )
            .await
        {
            self.admin_step(
                cluster,
                via,
                Method::PUT,
                "/v1/admin/voters",
                json!({"voters": all}),
                event,
            )
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
        let others: Vec<u64> = cluster
            .members
            .keys()
            .copied()
            .filter(|id| *id != old)
            .collect();
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
                let cut = json!({"partition": {"peers": others}});
                self.admin_step(cluster, old, Method::PUT, "/v1/admin/faults", cut, event)
                    .await;
            }
        }
        // The detection delay of a real failover, while clients keep writing.
        tokio::time::sleep(hold / 2).await;
        if !self
            .admin_step(
                cluster,
                new,
                Method::POST,
                "/v1/admin/promote",
                json!({}),
                event,
            )
            .await
        {
            // No new primary: the old one comes back as it was.
            self.bring_back(cluster, old, loss, event).await;
            return;
        }
        let survivors: BTreeSet<u64> = others.iter().copied().collect();
        self.admin_step(
            cluster,
            new,
            Method::PUT,
            "/v1/admin/voters",
            json!({"voters": survivors}),
            event,
        )
        .await;
        let primary = json!({"id": new, "addr": cluster.members[&new].peer});
        for id in others.iter().copied().filter(|id| *id != new) {
            self.admin_step(
                cluster,
                id,
                Method::PUT,
                "/v1/admin/primary",
                primary.clone(),
                event,
            )
            .await;
        }
        tokio::time::sleep(hold / 2).await;
        self.bring_back(cluster, old, loss, event).await;
        self.admin_step(
            cluster,
            old,
            Method::PUT,
            "/v1/admin/primary",
            primary,
            event,
        )
        .await;
        let all: BTreeSet<u64> = cluster.members.keys().copied().collect();
        self.admin_step(
            cluster,
            new,
            Method::PUT,
            "/v1/admin/voters",
            json!({"voters": all}),
            event,
        )
        .await;
    }

    /// Undoes how a failover took the primary `old` away: restarts it or heals its cut.
    async fn bring_back(&self, cluster: &mut Cluster, old: u64, loss: Loss, event: &mut Event) {
        match loss {
            Loss::Crash => cluster.restart(old),
            Loss::Isolate => {
                let heal = json!({});
                self.admin_step(cluster, old, Method::PUT, "/v1/admin/faults", heal, event)
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
        method: Method,
        path: &str,
        body: Value,
        event: &mut Event,
    ) -> bool {
        match retry_admin(cluster, member, method, path, body.clone(), self.patience).await {
            Ok(()) => true,
            Err(e) => {
                event.notes.push(format!("{path} {body} on {member}: {e}"));
                false
            }
        }
    }

    /// Brings the whole cluster back: every process running, every fault cleared, every
    /// member a voter (Raft) or following one primary with every member in its set (primary
    /// modes). Errors name the step the cluster still refused after `deadline`: the final
    /// checks need a whole cluster, and one that cannot be healed is a finding.
    pub async fn heal(&self, cluster: &mut Cluster, deadline: Duration) -> Result<(), String> {
        let ids: Vec<u64> = cluster.members.keys().copied().collect();
        for id in &ids {
            if !cluster.members[id].is_running() {
                cluster.restart(*id);
            }
        }
        let put = Method::PUT;
        for id in &ids {
            retry_admin(
                cluster,
                *id,
                put.clone(),
                "/v1/admin/faults",
                json!({}),
                deadline,
            )
            .await
            .map_err(|e| format!("healing the faults of member {id}: {e}"))?;
        }
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
                let learner = json!({"id": id, "addr": cluster.members[id].peer});
                let path = "/v1/admin/learners";
                retry_admin(cluster, leader, Method::POST, path, learner, deadline)
                    .await
                    .map_err(|e| format!("re-adding member {id} as a learner: {e}"))?;
            }
        } else {
            let primary = json!({"id": leader, "addr": cluster.members[&leader].peer});
            for id in ids.iter().filter(|id| **id != leader) {
                let path = "/v1/admin/primary";
                retry_admin(cluster, *id, put.clone(), path, primary.clone(), deadline)
                    .await
                    .map_err(|e| format!("pointing member {id} at primary {leader}: {e}"))?;
            }
        }
        let all: BTreeSet<u64> = ids.iter().copied().collect();
        retry_admin(
            cluster,
            leader,
            put,
            "/v1/admin/voters",
            json!({"voters": all}),
            deadline,
        )
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

/// Polls `probe` every 100 ms until it yields a value or `deadline` passes.
async fn poll<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The voters and learners member `id` reports.
async fn members_known_to(cluster: &Cluster, id: u64) -> Option<Vec<u64>> {
    let status = cluster.status(id).await?;
    let listed = |field: &str| -> Option<Vec<u64>> {
        status[field]
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect()
    };
    Some([listed("voters")?, listed("learners")?].concat())
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// The leader (Raft) or primary the running members name, preferring the highest term; `None`
/// when none names one that says so itself.
pub async fn current_leader(cluster: &Cluster) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for m in cluster.running() {
        let Some(status) = cluster.status(m.id).await else {
            continue;
        };
        let role = status["role"].as_str().unwrap_or("");
        let term = status["term"].as_u64().unwrap_or(0);
        if matches!(role, "leader" | "primary") && best.is_none_or(|(t, _)| term > t) {
            best = Some((term, m.id));
        }
    }
    best.map(|(_, id)| id)
}

/// An admin call retried every 100 ms while the answer says "not now" (no answer, 409, 421,
/// 5xx) until `patience` passes; a 4xx other than those is a mistake of the caller and is
/// returned at once.
pub async fn retry_admin(
    cluster: &Cluster,
    member: u64,
    method: Method,
    path: &str,
    body: Value,
    patience: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let (status, answer) = cluster
            .admin(member, method.clone(), path, body.clone())
            .await;
        match status {
            200..=299 => return Ok(()),
            0 | 409 | 421 | 500..=599 if start.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {
                return Err(format!(
                    "HTTP {status} {answer} after {:?}",
                    start.elapsed()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_sequence() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..8).map(|_| rng.below(100)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn ranges_stay_within_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            assert!((3..=5).contains(&rng.between(3, 5)));
            assert!(rng.below(4) < 4);
        }
        let mut items: Vec<u32> = (0..10).collect();
        rng.shuffle(&mut items);
        items.sort_unstable();
        assert_eq!(items, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0xff "), Some(255));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
