//! The ladder (linearizable, sequential, converged) and the anomalies in plain words: the
//! issue's A/B/C/D example and its "neither" variant, convergence from final reads, and
//! properties relating the rungs.

use std::time::Instant;

use caplab_checker::generate::{generate, GenConfig};
use caplab_checker::sequential::{self, Sequential};
use caplab_checker::{anomalies, check, ladder, AnomalyKind, CheckOptions, History};
use proptest::prelude::*;

fn options() -> CheckOptions {
    CheckOptions {
        per_key_timeout: None,
        total_timeout: None,
        threads: 1,
    }
}

/// A writes x=1 (0–1 ms); B writes x=2 (2–3 ms); C reads `c` (4–5 ms, 6–7 ms); D reads `d`
/// (4–5 ms, 6–7 ms). Times in ms.
fn abcd(c: [i64; 2], d: [i64; 2]) -> History {
    let read = |p: u64, v: i64, at: u64| {
        format!(
            r#"{{"process": {p}, "type": "read", "key": "x", "output": {v}, "invoke": {}, "complete": {}, "status": "ok"}}"#,
            at * 1_000_000,
            (at + 1) * 1_000_000
        )
    };
    let text = format!(
        r#"[{{"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1000000, "status": "ok"}},
            {{"process": 1, "type": "write", "key": "x", "value": 2, "invoke": 2000000, "complete": 3000000, "status": "ok"}},
            {}, {}, {}, {}]"#,
        read(2, c[0], 4),
        read(2, c[1], 6),
        read(3, d[0], 4),
        read(3, d[1], 6)
    );
    History::from_json(&text).expect("a valid history")
}

fn rungs(history: &History) -> (Option<bool>, Option<bool>, Option<bool>) {
    let report = check(history, &options());
    let l = ladder(history, &report, &options());
    (l.linearizable, l.sequential, l.converged)
}

#[test]
fn abcd_is_sequential_but_not_linearizable() {
    let history = abcd([2, 1], [2, 1]);
    assert_eq!(rungs(&history), (Some(false), Some(true), None));
    let report = check(&history, &options());
    let l = ladder(&history, &report, &options());
    assert_eq!(l.keys.len(), 1);
    assert_eq!(l.keys[0].strongest(), Some("sequential"));
    let found = anomalies(&history);
    let backwards: Vec<&str> = found
        .iter()
        .filter(|a| a.kind == AnomalyKind::ReadsWentBackwards)
        .map(|a| a.sentence.as_str())
        .collect();
    assert_eq!(
        backwards,
        [
            "process 2 read 2 then 1 (reads went backwards)",
            "process 3 read 2 then 1 (reads went backwards)"
        ]
    );
    // Reading 1 at 6 ms although 2 was acknowledged at 3 ms.
    assert!(
        found.iter().any(|a| a.kind == AnomalyKind::StaleRead
            && a.sentence
                == "read of x returned 1 at 6.0 ms although the write of 2 was acknowledged at 3.0 ms (stale read)"
            && a.operations[..2] == [3, 1]),
        "{found:#?}"
    );
}

#[test]
fn abcd_with_d_reading_the_other_way_is_neither() {
    let history = abcd([2, 1], [1, 2]);
    assert_eq!(rungs(&history), (Some(false), Some(false), None));
    let report = check(&history, &options());
    let l = ladder(&history, &report, &options());
    // Without final reads convergence is unknown, so the strongest rung is too.
    assert_eq!(l.keys[0].strongest(), None);
}

#[test]
fn a_linearizable_history_is_on_the_top_rung() {
    let history = abcd([2, 2], [2, 2]);
    assert_eq!(rungs(&history), (Some(true), Some(true), None));
    assert!(anomalies(&history).is_empty());
}

fn with_final(history: History, finals: &str) -> History {
    let mut text = history.to_json();
    // The bare array becomes the object form with final reads.
    text = format!(r#"{{"operations": {text}, "final": {finals}}}"#);
    History::from_json(&text).expect("a valid history with final reads")
}

#[test]
fn convergence_comes_from_the_members_final_reads() {
    let agreed = with_final(
        abcd([2, 1], [1, 2]),
        r#"[{"member": "demo-0", "key": "x", "value": 2}, {"member": "demo-1", "key": "x", "value": 2},
            {"member": "demo-2", "key": "x", "value": null}]"#,
    );
    assert_eq!(rungs(&agreed), (Some(false), Some(false), Some(true)));
    let report = check(&agreed, &options());
    assert_eq!(
        ladder(&agreed, &report, &options()).keys[0].strongest(),
        Some("converged")
    );
    // The final reads survive a round trip.
    assert_eq!(
        History::from_json(&agreed.to_json()).expect("round trip"),
        agreed
    );

    let split = with_final(
        abcd([2, 1], [1, 2]),
        r#"[{"member": "demo-0", "key": "x", "value": 7}, {"member": "demo-1", "key": "x", "value": 7},
            {"member": "demo-2", "key": "x", "value": 5}]"#,
    );
    assert_eq!(rungs(&split), (Some(false), Some(false), Some(false)));
    let report = check(&split, &options());
    assert_eq!(
        ladder(&split, &report, &options()).keys[0].strongest(),
        Some("none")
    );
    let diverged: Vec<String> = anomalies(&split)
        .into_iter()
        .filter(|a| a.kind == AnomalyKind::DidNotConverge)
        .map(|a| a.sentence)
        .collect();
    assert_eq!(
        diverged,
        ["members disagree on x after the workload: 7 on demo-0 and demo-1, 5 on demo-2 (did not converge)"]
    );
}

#[test]
fn final_reads_are_validated() {
    for (finals, needle) in [
        (r#"[{"member": "a", "key": "x"}]"#, "value"),
        (
            r#"[{"member": "a", "key": "x", "value": "7"}]"#,
            "invalid type",
        ),
        (
            r#"[{"member": "", "key": "x", "value": 7}]"#,
            "must not be empty",
        ),
        (
            r#"[{"member": "a", "key": "x", "value": 7}, {"member": "a", "key": "x", "value": 8}]"#,
            "twice",
        ),
        (
            r#"[{"member": "a", "key": "x", "value": 7, "extra": 1}]"#,
            "extra",
        ),
    ] {
        let text = format!(r#"{{"operations": [], "final": {finals}}}"#);
        let message = History::from_json(&text)
            .expect_err("invalid final reads accepted")
            .to_string();
        assert!(
            message.contains("\"final\" entry") && message.contains(needle),
            "{message} lacks {needle}"
        );
    }
}

#[test]
fn an_acknowledged_write_nobody_sees_again_is_lost() {
    // p0 writes 1 (acknowledged), p1 writes 2 (acknowledged at 3 ms), then p2 reads 1 at 5 ms:
    // the write of 2 was lost (and the read is stale).
    let history = History::from_json(
        r#"[{"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1000000, "status": "ok"},
            {"process": 1, "type": "write", "key": "x", "value": 2, "invoke": 2000000, "complete": 3000000, "status": "ok"},
            {"process": 2, "type": "read", "key": "x", "output": 1, "invoke": 5000000, "complete": 6000000, "status": "ok"}]"#,
    )
    .expect("valid");
    let found = anomalies(&history);
    let lost: Vec<(&str, &[usize])> = found
        .iter()
        .filter(|a| a.kind == AnomalyKind::LostAcknowledgedWrite)
        .map(|a| (a.sentence.as_str(), a.operations.as_slice()))
        .collect();
    assert_eq!(
        lost,
        [(
            "the write of 2 acknowledged at 3.0 ms is never seen again (lost acknowledged write)",
            &[1usize, 2][..]
        )]
    );
    let counts = caplab_checker::anomalies::counts(&found);
    assert_eq!(counts[&AnomalyKind::StaleRead], 1);
    assert_eq!(counts[&AnomalyKind::DidNotConverge], 0);
}

#[test]
fn an_unknown_write_is_optional_and_after_its_process_s_earlier_operations() {
    // p0 reads 0, then its write of 1 times out; p1 reads 1 then 0. Sequential only if the
    // unknown write is placed between p1's reads... which would make p1 read 0 after 1: no.
    // With p1 reading 0 then 1 it is sequential (the write took effect in between).
    let text = |a: i64, b: i64| {
        format!(
            r#"[{{"process": 0, "type": "read", "key": "x", "output": 0, "invoke": 10, "complete": 20, "status": "ok"}},
                {{"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 30, "complete": 40, "status": "unknown"}},
                {{"process": 1, "type": "read", "key": "x", "output": {a}, "invoke": 0, "complete": 5, "status": "ok"}},
                {{"process": 1, "type": "read", "key": "x", "output": {b}, "invoke": 6, "complete": 8, "status": "ok"}}]"#
        )
    };
    let sequential_of = |t: String| {
        let h = History::from_json(&t).expect("valid");
        sequential::check_key(&h, &[0, 1, 2, 3], 0, None)
    };
    // Not linearizable (p1 read 1 before the write was sent) but sequential.
    assert_eq!(sequential_of(text(0, 1)), Sequential::Yes);
    assert_eq!(sequential_of(text(1, 0)), Sequential::No);
    // p0's own read of 0 must come before its write: p0 reading 1 first is impossible.
    let h = History::from_json(
        r#"[{"process": 0, "type": "read", "key": "x", "output": 1, "invoke": 10, "complete": 20, "status": "ok"},
            {"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 30, "complete": 40, "status": "unknown"}]"#,
    )
    .expect("valid");
    assert_eq!(sequential::check_key(&h, &[0, 1], 0, None), Sequential::No);
}

fn generated(seed: u64, operations: usize, processes: usize, unknown: bool) -> History {
    generate(&GenConfig {
        keys: 1,
        processes,
        operations,
        unknown_rate: if unknown { 0.1 } else { 0.0 },
        fail_rate: if unknown { 0.05 } else { 0.0 },
        max_latency_ns: 1_000,
        seed,
        ..GenConfig::default()
    })
}

fn sequential_of(history: &History) -> Sequential {
    let all: Vec<usize> = (0..history.entries.len()).collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    sequential::check_key(history, &all, 0, Some(deadline))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every linearizable history is sequential: the search itself agrees (the ladder would
    /// not even run it).
    #[test]
    fn every_linearizable_history_is_sequential(
        seed in any::<u64>(),
        operations in 1usize..300,
        processes in 1usize..6,
        unknown in any::<bool>(),
    ) {
        let history = generated(seed, operations, processes, unknown);
        prop_assert_eq!(sequential_of(&history), Sequential::Yes);
    }

    /// A sequential execution whose processes keep their own order but whose real time is
    /// scrambled (each process's timeline shifted by its own random amount) is sequential,
    /// whatever it does to linearizability.
    #[test]
    fn scrambled_real_time_stays_sequential(
        seed in any::<u64>(),
        operations in 1usize..300,
        processes in 1usize..6,
        unknown in any::<bool>(),
        shifts in prop::collection::vec(0u64..1_000_000, 6),
    ) {
        let mut history = generated(seed, operations, processes, unknown);
        for e in &mut history.entries {
            let shift = shifts[e.process as usize % shifts.len()];
            e.invoke += shift;
            e.complete = e.complete.map(|c| c + shift);
        }
        let history = History::new(history.entries).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(sequential_of(&history), Sequential::Yes);
        let report = check(&history, &options());
        let l = ladder(&history, &report, &options());
        prop_assert_eq!(l.sequential, Some(true));
    }
}

#[test]
fn times_in_sentences_are_to_the_millisecond() {
    use caplab_checker::anomalies::seconds;
    assert_eq!(seconds(12_345_000_000), "12.345 s");
    assert_eq!(seconds(350_000_000), "350.0 ms");
}
