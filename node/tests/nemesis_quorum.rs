//! Seeded nemesis runs against leaderless quorums (`--replication quorum`, N = 3, R = W = 2,
//! so R + W > N): concurrent clients read and write (unique values; quorum members refuse
//! compare-and-set) a few registers, and write write-once keys, through random members, while
//! the nemesis (`caplab_testkit::nemesis`, `Replication::Quorum`) cycles partitions, pauses,
//! loss, delay and SIGKILL + restart — or, in the second case, clock skew on one member every
//! third fault.
//!
//! What the mode claims (Dynamo, DeCandia et al., SOSP 2007; README "Leaderless quorums"), and
//! these runs check — nothing stronger: R + W > N is not linearizability, and stale reads and
//! reads going backwards are printed, not failed.
//!
//! * **converged**: once the faults heal, anti-entropy and read repair bring every member to
//!   the same value of every key (the checker's converged rung over the members' local reads,
//!   waited for up to the harness deadline);
//! * **no acknowledged write lost except to last-writer-wins**: every write a read quorum
//!   cannot see any more must have lost to a write with a newer stamp. The checker's
//!   `lost acknowledged write` anomaly proves that a write B acknowledged *before* the lost
//!   write A began won, i.e. B's stamp was newer although B was stamped earlier. On one shared
//!   wall clock that happens only through the stamps themselves (whole milliseconds, ties to
//!   the higher member id, each member raising a stamp past its last one): the run bounds B's
//!   newest possible stamp from the writes its member coordinated and A's oldest, and fails
//!   when even those cannot put B after A — an acknowledged write-once key gone, say.
//!   Otherwise only a skewed clock explains it (B's member ahead, even after its skew ended,
//!   since stamps never go back; or A's member behind).
//! * under **clock skew**, last-writer-wins does drop writes that came later in real time: the
//!   lesson, not a failure. The run asserts that each such loss is explained by a skew window
//!   and that the members report it: their `lwwLostWrites` counters (status) add up to at
//!   least the losses the checker found. (This case kills no member: the counters live in
//!   memory. Each such loss is counted on at least one member: the winner was on W replicas
//!   before the lost write began, and W + W > N.)
//!
//! The seed comes from `CAPLAB_NEMESIS_SEED` or is drawn, and is printed; a failed run keeps
//! its history, fault windows and members' directories and says where.

mod common;
mod nemesis_common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use caplab_checker::{anomalies, ladder, Anomaly, AnomalyKind, CheckOptions, History, Report};
use caplab_testkit::nemesis::{self, Nemesis, Replication, Rng};
use caplab_testkit::Cluster;
use nemesis_common::{
    check_history, drive, final_reads, keep_and_fail, local_reads, touched_keys, Final, Op, Record,
    Shape,
};

/// How long the clients run.
const RUN: Duration = Duration::from_secs(20);
const SHAPE: Shape = Shape {
    clients: 24,
    once_clients: 4,
    keys: 5,
    cas: false,
};
/// The ladder's sequential search gets little time: with R + W > N most registers are not
/// linearizable, the sequential rung is only printed, and convergence needs no search.
const LADDER: CheckOptions = CheckOptions {
    per_key_timeout: Some(Duration::from_secs(2)),
    total_timeout: Some(Duration::from_secs(5)),
    threads: 0,
};

/// Runs one quorum test at a time: each runs its members flat out.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn quorum_converges_and_loses_acknowledged_writes_only_to_last_writer_wins() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let found = run(false).await;
    println!(
        "quorum: {} acknowledged writes lost within the stamps' resolution",
        found.by_tie
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_clock_skew_loses_later_writes_to_last_writer_wins_and_says_so() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let found = run(true).await;
    println!(
        "quorum with clock skew: {} acknowledged writes lost to a skewed clock, {} within the \
         stamps' resolution; the members counted {} writes lost to last-writer-wins",
        found.by_skew,
        found.by_tie,
        found.counted.unwrap_or_default()
    );
}

/// What a run that passed found.
struct Found {
    /// Lost acknowledged writes explained by a skewed clock, and by the stamps' resolution.
    by_skew: usize,
    by_tie: usize,
    /// The members' `lwwLostWrites`, summed; `None` when members were killed (their counters
    /// restarted from zero).
    counted: Option<u64>,
}

/// One seeded run: cluster, workload and nemesis, healing, convergence, final reads, checks.
/// Panics with the seed and the kept files when a claim fails.
async fn run(clock_skew: bool) -> Found {
    let seed = nemesis::seed_from_env();
    let mode = if clock_skew { "quorum-skew" } else { "quorum" };
    let label = format!("{mode} run with seed {seed}");
    println!("{label}: 3 members, {} clients, {RUN:?}", SHAPE.clients);
    let mut rng = Rng::new(seed);
    let mut cluster = start().await;
    let (nemesis, workload, mut records) = drive(
        &mut cluster,
        &mut rng,
        Replication::Quorum { clock_skew },
        (SHAPE, RUN),
        &label,
    )
    .await;
    if let Err(e) = nemesis.heal(&mut cluster, common::DEADLINE).await {
        let e = format!("the cluster could not be healed (liveness): {e}");
        keep_and_fail(mode, seed, (&records, &[]), &nemesis, cluster, &e);
    }
    let finals = converged(&cluster, &touched_keys(&workload, &records)).await;
    match final_reads(&workload, &records).await {
        Ok(reads) => records.extend(reads),
        Err(e) => keep_and_fail(mode, seed, (&records, &finals), &nemesis, cluster, &e),
    }
    let (history, report) = check_history(&label, &records, &finals).await;
    let counted = match clock_skew {
        true => Some(lww_lost_writes(&cluster).await),
        false => None,
    };
    match judge(&records, &history, &report, &nemesis, counted) {
        Ok(found) => found,
        Err(e) => keep_and_fail(mode, seed, (&records, &finals), &nemesis, cluster, &e),
    }
}

/// Starts three quorum members (default R = W = 2) and waits until every one is ready: it
/// reaches max(R, W) replicas. There is no leader to wait for.
async fn start() -> Cluster {
    let cluster = Cluster::start(common::harness(), 3, &["--replication", "quorum"]).await;
    for m in cluster.members.values() {
        let url = m.url(caplab_api::paths::READYZ);
        common::wait_until(&format!("member {} to be ready", m.id), || async {
            let answer = cluster.http.get(&url).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
    }
    cluster
}

/// Waits (up to the harness deadline) until every member holds the same value of every key
/// locally; returns the members' last local reads either way (the checker judges them).
async fn converged(cluster: &Cluster, keys: &[String]) -> Vec<Final> {
    let give_up = Instant::now() + common::DEADLINE;
    let mut settled: Vec<Final> = Vec::new();
    let mut pending = keys.to_vec();
    loop {
        let reads = local_reads(cluster, &pending).await;
        let mut per_key: BTreeMap<&str, Vec<&Final>> = BTreeMap::new();
        for f in &reads {
            per_key.entry(f.key.as_str()).or_default().push(f);
        }
        let split: Vec<String> = per_key
            .iter()
            .filter(|(_, fs)| !agree(fs))
            .map(|(k, _)| k.to_string())
            .collect();
        if split.is_empty() || Instant::now() >= give_up {
            settled.extend(reads);
            return settled;
        }
        settled.extend(reads.into_iter().filter(|f| !split.contains(&f.key)));
        pending = split;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every member answered, with one value.
fn agree(reads: &[&Final]) -> bool {
    let first = reads.first().and_then(|f| f.value);
    first.is_some() && reads.iter().all(|f| f.value == first)
}

/// The writes the members say last-writer-wins dropped (`lwwLostWrites`), summed.
async fn lww_lost_writes(cluster: &Cluster) -> u64 {
    let mut sum = 0;
    for id in cluster.members.keys() {
        if let Some(quorum) = cluster.member_status(*id).await.and_then(|s| s.quorum) {
            sum += quorum.counters.lww_lost_writes.values().sum::<u64>();
        }
    }
    sum
}

/// The run's verdict: the claims in the module docs.
fn judge(
    records: &[Record],
    history: &History,
    report: &Report,
    nemesis: &Nemesis,
    counted: Option<u64>,
) -> Result<Found, String> {
    let rungs = ladder(history, report, &LADDER);
    let found = anomalies(history);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &found {
        *kinds.entry(a.kind.words()).or_default() += 1;
    }
    println!(
        "quorum: linearizable {:?}, sequential {:?}, converged {:?} (strongest {:?}); \
         anomalies {kinds:?}",
        rungs.linearizable,
        rungs.sequential,
        rungs.converged,
        rungs.strongest()
    );
    if rungs.converged != Some(true) {
        let split: Vec<&str> = found
            .iter()
            .filter(|a| a.kind == AnomalyKind::DidNotConverge)
            .map(|a| a.sentence.as_str())
            .collect();
        return Err(format!(
            "the members did not converge within {:?} of healing: {}",
            common::DEADLINE,
            split.join("; ")
        ));
    }
    let skews = skew_windows(nemesis);
    let coordinated = Coordinated::new(records);
    let writers: HashMap<i64, &Record> = records
        .iter()
        .filter_map(|r| Some((r.written()?, r)))
        .collect();
    let mut result = Found {
        by_skew: 0,
        by_tie: 0,
        counted,
    };
    for lost in found
        .iter()
        .filter(|a| a.kind == AnomalyKind::LostAcknowledgedWrite)
    {
        match explain(lost, records, &writers, &coordinated, &skews)? {
            Loss::Tie => result.by_tie += 1,
            Loss::Skew => result.by_skew += 1,
        }
    }
    let losses = (result.by_skew + result.by_tie) as u64;
    if let Some(counted) = counted.filter(|c| losses > *c) {
        return Err(format!(
            "the checker found {losses} acknowledged writes lost to last-writer-wins, but the \
             members' lwwLostWrites add up to only {counted}"
        ));
    }
    Ok(result)
}

/// Why an acknowledged write was lost.
enum Loss {
    /// One wall clock can order the winner's stamp after the lost write's: millisecond
    /// stamps, ties to the higher member id, and a member raising each stamp past its last.
    Tie,
    /// Only a skewed clock can: the winner's member ahead, or the lost write's behind.
    Skew,
}

/// A clock skew on `member` by `ms`, from the fault's start to its end.
struct SkewWindow {
    member: u64,
    ms: i64,
    from_ns: u64,
    to_ns: u64,
}

fn skew_windows(nemesis: &Nemesis) -> Vec<SkewWindow> {
    nemesis
        .events
        .iter()
        .filter_map(|e| {
            let (member, ms) = e.skew?;
            Some(SkewWindow {
                member,
                ms,
                from_ns: e.start_ns,
                to_ns: e.end_ns,
            })
        })
        .collect()
}

/// The writes each member coordinated (quorum members coordinate what they receive), as
/// (invoke, complete) in ns, with their invoke and complete times sorted: what bounds the
/// stamps that member gave.
struct Coordinated {
    by_member: HashMap<u64, Vec<(u64, u64)>>,
    invokes: HashMap<u64, Vec<u64>>,
    completes: HashMap<u64, Vec<u64>>,
}

impl Coordinated {
    fn new(records: &[Record]) -> Coordinated {
        let mut by_member: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for r in records.iter().filter(|r| matches!(r.op, Op::Write(_))) {
            by_member
                .entry(r.member)
                .or_default()
                .push((r.invoke, r.complete));
        }
        let sorted = |pick: fn(&(u64, u64)) -> u64| -> HashMap<u64, Vec<u64>> {
            by_member
                .iter()
                .map(|(m, writes)| {
                    let mut times: Vec<u64> = writes.iter().map(pick).collect();
                    times.sort_unstable();
                    (*m, times)
                })
                .collect()
        };
        Coordinated {
            invokes: sorted(|w| w.0),
            completes: sorted(|w| w.1),
            by_member,
        }
    }

    /// The newest stamp (ns on the shared wall clock) `b`'s member can have given it. A
    /// member stamps `max(its clock, its last stamp + 1 ms)`, so a stamp is at most, over
    /// every write `j` stamped there before `b` (invoked before `b` completed), `j`'s clock
    /// then (at most its completion, plus an ahead skew over it) plus 1 ms per write stamped
    /// from `j` to `b` (invoked before `b` completed, completed after `j` was invoked).
    /// `skews` empty: one unskewed wall clock.
    fn newest_stamp(&self, b: &Record, skews: &[SkewWindow]) -> i128 {
        let (Some(writes), Some(invokes), Some(completes)) = (
            self.by_member.get(&b.member),
            self.invokes.get(&b.member),
            self.completes.get(&b.member),
        ) else {
            return i128::from(b.complete);
        };
        let before_b = invokes.partition_point(|t| *t <= b.complete);
        writes
            .iter()
            .filter(|(invoke, _)| *invoke <= b.complete)
            .map(|&(invoke, complete)| {
                let clock = i128::from(complete.min(b.complete));
                let ahead = skew_over(skews, b.member, (invoke, complete), i64::max);
                let later = before_b.saturating_sub(completes.partition_point(|t| *t < invoke));
                clock + i128::from(ahead) * 1_000_000 + later as i128 * 1_000_000
            })
            .max()
            .unwrap_or(i128::from(b.complete))
    }
}

/// The largest (`pick` = `i64::max`) or smallest (`i64::min`) skew in ms on `member` over
/// `(from, to)` ns, 0 included (no skew at some point of it).
fn skew_over(
    skews: &[SkewWindow],
    member: u64,
    (from, to): (u64, u64),
    pick: fn(i64, i64) -> i64,
) -> i64 {
    skews
        .iter()
        .filter(|s| s.member == member && s.from_ns <= to && s.to_ns >= from)
        .map(|s| s.ms)
        .fold(0, pick)
}

/// The oldest stamp (ns on the shared wall clock) write `a` can have: its member's clock when
/// it was sent, moved by a behind skew over it, less 1 ms (stamps are whole milliseconds).
fn oldest_stamp(a: &Record, skews: &[SkewWindow]) -> i128 {
    let behind = skew_over(skews, a.member, (a.invoke, a.complete), i64::min);
    i128::from(a.invoke) + i128::from(behind) * 1_000_000 - 1_000_000
}

/// Explains one `lost acknowledged write` anomaly (operations: the lost write A, then a read
/// that returned the value of a write B that ended before A began): B's stamp was newer, so
/// B's newest possible stamp must reach A's oldest — on one wall clock ([`Loss::Tie`]) or only
/// with the run's skews ([`Loss::Skew`]). Anything else is a loss last-writer-wins cannot
/// explain.
fn explain(
    lost: &Anomaly,
    records: &[Record],
    writers: &HashMap<i64, &Record>,
    coordinated: &Coordinated,
    skews: &[SkewWindow],
) -> Result<Loss, String> {
    let (Some(&w), Some(&r)) = (lost.operations.first(), lost.operations.get(1)) else {
        return Err(format!(
            "an anomaly without its operations: {}",
            lost.sentence
        ));
    };
    let (a, read) = (&records[w], &records[r]);
    let winner = match read.op {
        Op::Read(Some(v)) => writers.get(&v).copied(),
        _ => None,
    };
    let Some(b) = winner else {
        return Err(format!(
            "{}: {} was lost although no write could have won over it ({} returned the \
             register's initial value)",
            lost.sentence,
            a.describe(),
            read.describe()
        ));
    };
    if coordinated.newest_stamp(b, &[]) >= oldest_stamp(a, &[]) {
        return Ok(Loss::Tie);
    }
    if coordinated.newest_stamp(b, skews) >= oldest_stamp(a, skews) {
        return Ok(Loss::Skew);
    }
    Err(format!(
        "{}: {} lost to {}, which ended {:.1} ms before it began; neither the stamps' \
         resolution, a member raising its stamps nor a clock skew can give the earlier write \
         the newer stamp (last-writer-wins cannot explain it); seen by {}",
        lost.sentence,
        a.describe(),
        b.describe(),
        a.invoke.saturating_sub(b.complete) as f64 / 1e6,
        read.describe()
    ))
}
