//! A seeded nemesis run against two-phase commit (`--replication 2pc`, three members, member 1
//! the coordinator): concurrent clients read, write (unique values) and compare-and-set a few
//! registers, and write write-once keys, through random members, while the nemesis
//! (`caplab_testkit::nemesis`, `Replication::TwoPc`) cycles partitions, pauses, loss, delay,
//! participant SIGKILL + restart and vetoes, and every third fault crashes the coordinator.
//!
//! What 2pc claims, and this run checks:
//!
//! * every register's history, final reads included, is **linearizable** (`caplab-checker`):
//!   an acknowledged write is seen by every later read, an aborted one (409, 503) by none;
//! * writes are **atomic**: once healed and every transaction finished, every member holds the
//!   same value of every key it touched (the checker's converged rung over the members' local
//!   reads) — no transaction is applied on some participants only;
//! * a coordinator crash **blocks**: no write sent after the kill is acknowledged before the
//!   coordinator is back, a transaction every participant voted yes on stays in doubt, and
//!   after the restart (on its data directory: its log survives) **every participant
//!   resolves**.
//!
//! The members run with `--twopc-decision-delay-ms 25` (a test hook: the coordinator waits
//! that long between the votes and its decision), so that the nemesis's kill lands while a
//! transaction is prepared. The seed comes from `CAPLAB_NEMESIS_SEED` or is drawn, and is
//! printed; a failed run keeps its history, fault windows and members' directories and says
//! where.

mod common;
mod nemesis_common;

use std::time::Duration;

use caplab_checker::{ladder, CheckOptions, History, Report, Verdict};
use caplab_testkit::nemesis::{self, Blocked, Nemesis, Replication, Rng};
use nemesis_common::{
    check_history, drive, final_reads, keep_and_fail, local_reads, touched_keys, Record, Shape,
};

/// How long the clients run.
const RUN: Duration = Duration::from_secs(20);
const SHAPE: Shape = Shape {
    clients: 24,
    once_clients: 4,
    keys: 5,
    cas: true,
};
/// The coordinator's pause between votes and decision (`--twopc-decision-delay-ms`).
const DECISION_DELAY_MS: &str = "25";

#[tokio::test(flavor = "multi_thread")]
async fn two_phase_commit_stays_atomic_and_linearizable_and_blocks_only_on_its_coordinator() {
    let seed = nemesis::seed_from_env();
    let label = format!("2pc run with seed {seed}");
    println!("{label}: 3 members, {} clients, {RUN:?}", SHAPE.clients);
    let mut rng = Rng::new(seed);
    let args = [
        "--replication",
        "2pc",
        "--twopc-decision-delay-ms",
        DECISION_DELAY_MS,
    ];
    let mut cluster = common::start_with(3, &args).await;
    let (nemesis, workload, mut records) = drive(
        &mut cluster,
        &mut rng,
        Replication::TwoPc,
        (SHAPE, RUN),
        &label,
    )
    .await;
    let healed = match nemesis.heal(&mut cluster, common::DEADLINE).await {
        Ok(()) => final_reads(&workload, &records).await,
        Err(e) => Err(format!("the cluster could not be healed (liveness): {e}")),
    };
    let finals = match healed {
        Ok(reads) => {
            records.extend(reads);
            local_reads(&cluster, &touched_keys(&workload, &records)).await
        }
        Err(e) => keep_and_fail("2pc", seed, (&records, &[]), &nemesis, cluster, &e),
    };
    let (history, report) = check_history(&label, &records, &finals).await;
    let verdict = judge(&records, &history, &report, &nemesis);
    if let Err(e) = verdict {
        keep_and_fail("2pc", seed, (&records, &finals), &nemesis, cluster, &e);
    }
}

/// The run's verdict: `Err` says which claim failed.
fn judge(
    records: &[Record],
    history: &History,
    report: &Report,
    nemesis: &Nemesis,
) -> Result<(), String> {
    for key in &report.keys {
        match &key.verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown { reason } => {
                return Err(format!("the checker gave up on key {}: {reason}", key.key))
            }
            Verdict::NotLinearizable(v) => {
                return Err(format!(
                    "key {} is not linearizable: stuck at {} (history index {}), after {} \
                     operations ending with indices {:?}; concurrent: {:?}",
                    key.key,
                    records[v.stuck].describe(),
                    v.stuck,
                    v.linearized,
                    v.linearized_tail,
                    v.concurrent
                ))
            }
        }
    }
    atomic(history, report)?;
    let crashes: Vec<&Blocked> = nemesis
        .events
        .iter()
        .filter_map(|e| e.blocked.as_ref())
        .collect();
    for crash in &crashes {
        blocked(records, crash)?;
    }
    println!(
        "2pc: {} coordinator crashes; transactions prepared at the kill / in doubt while it was \
         down / resolved after its restart in: {:?}",
        crashes.len(),
        crashes
            .iter()
            .map(|c| format!(
                "{}/{}/{:.1} s",
                c.prepared_at_kill,
                c.in_doubt,
                c.resolved_ns.unwrap_or(0).saturating_sub(c.restarted_ns) as f64 / 1e9
            ))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Atomicity: every member's local value of every key is the same once the run is healed
/// (the checker's converged rung).
fn atomic(history: &History, report: &Report) -> Result<(), String> {
    // Every key is linearizable by now, so the ladder searches nothing.
    let rungs = ladder(history, report, &CheckOptions::default());
    let split: Vec<String> = caplab_checker::anomalies(history)
        .into_iter()
        .filter(|a| a.kind == caplab_checker::AnomalyKind::DidNotConverge)
        .map(|a| a.sentence)
        .collect();
    match rungs.converged {
        Some(true) => Ok(()),
        _ => Err(format!(
            "not atomic: the members disagree after every transaction finished: {}",
            split.join("; ")
        )),
    }
}

/// One coordinator crash: nothing sent after the kill was acknowledged before the restart,
/// and the participants resolved after it.
fn blocked(records: &[Record], crash: &Blocked) -> Result<(), String> {
    let committed = records.iter().find(|r| {
        r.status == "ok"
            && r.written().is_some()
            && r.invoke > crash.killed_ns
            && r.complete < crash.restarted_ns
    });
    if let Some(r) = committed {
        return Err(format!(
            "coordinator {} was down from {:.3} s to {:.3} s, yet {} was acknowledged",
            crash.coordinator,
            crash.killed_ns as f64 / 1e9,
            crash.restarted_ns as f64 / 1e9,
            r.describe()
        ));
    }
    if crash.resolved_ns.is_none() {
        return Err(format!(
            "coordinator {} restarted at {:.3} s, and its participants still held transactions \
             in doubt when the nemesis stopped waiting",
            crash.coordinator,
            crash.restarted_ns as f64 / 1e9
        ));
    }
    Ok(())
}
