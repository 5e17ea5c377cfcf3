//! The checker on small histories whose answer is known, including the source text's examples.

use std::time::Duration;

use caplab_checker::{check, CheckOptions, Entry, History, Op, Overall, Status, Verdict};

fn op(process: u64, op: Op, invoke: u64, complete: Option<u64>, status: Status) -> Entry {
    Entry {
        process,
        key: "x".into(),
        op,
        invoke,
        complete,
        status,
    }
}

fn w(p: u64, v: i64, a: u64, b: u64) -> Entry {
    op(p, Op::Write { value: v }, a, Some(b), Status::Ok)
}

fn r(p: u64, v: i64, a: u64, b: u64) -> Entry {
    op(p, Op::Read { output: Some(v) }, a, Some(b), Status::Ok)
}

fn cas(p: u64, expected: i64, new: i64, a: u64, b: Option<u64>, status: Status) -> Entry {
    let op_ = Op::Cas {
        expected,
        new,
        output: None,
    };
    op(p, op_, a, b, status)
}

/// A CAS whose comparison failed and found `seen`.
fn cas_saw(p: u64, expected: i64, new: i64, seen: i64, a: u64, b: u64) -> Entry {
    let op_ = Op::Cas {
        expected,
        new,
        output: Some(seen),
    };
    op(p, op_, a, Some(b), Status::Fail)
}

fn verdict(entries: Vec<Entry>) -> Verdict {
    let history = History::new(entries).expect("valid history");
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.keys.len(), 1);
    report.keys[0].verdict.clone()
}

#[test]
fn concurrent_read_may_return_either_value() {
    // A read concurrent with w(x,1) may see 0 or 1.
    for seen in [0, 1] {
        let v = verdict(vec![w(0, 1, 0, 100), r(1, seen, 10, 90)]);
        assert_eq!(v, Verdict::Linearizable, "read of {seen}");
    }
    // Two reads concurrent with the write, the later-invoked one seeing the old value: fine.
    let v = verdict(vec![w(0, 1, 0, 100), r(1, 1, 10, 50), r(2, 0, 20, 90)]);
    assert_eq!(v, Verdict::Linearizable);
}

#[test]
fn stale_read_after_newer_value_was_returned_is_not_linearizable() {
    // w(x,1) completes; a read returns 1; a later read returns 0 again.
    let entries = vec![w(0, 1, 0, 10), r(1, 1, 20, 30), r(2, 0, 40, 50)];
    let Verdict::NotLinearizable(v) = verdict(entries) else {
        panic!("expected a violation")
    };
    assert_eq!(v.stuck, 2, "{v:?}");
    assert_eq!(v.last_state, 1);
    assert_eq!(v.linearized, 2);
    assert_eq!(v.linearized_tail, vec![0, 1]);
}

#[test]
fn sequentially_consistent_but_not_linearizable() {
    // A: w(x,1) finishes before B: w(x,2) starts; C then reads 2 and D afterwards reads 1.
    // Some total order explains each process (w2, r2, w1, r1) but not the real-time order.
    let entries = vec![
        w(0, 1, 0, 10),
        w(1, 2, 20, 30),
        r(2, 2, 40, 50),
        r(3, 1, 60, 70),
    ];
    let Verdict::NotLinearizable(v) = verdict(entries) else {
        panic!("expected a violation")
    };
    assert_eq!(v.stuck, 3, "{v:?}");
    assert_eq!(v.last_state, 2);
}

#[test]
fn the_issue_example_is_linearizable() {
    let text = r#"[
      {"process": 0, "type": "write", "key": "x", "value": 1, "invoke": 0, "complete": 1500000, "status": "ok"},
      {"process": 1, "type": "read", "key": "x", "output": 1, "invoke": 100000, "complete": 900000, "status": "ok"},
      {"process": 2, "type": "cas", "key": "x", "expected": 1, "new": 2, "invoke": 200000, "complete": null, "status": "unknown"}]"#;
    let history = History::from_json(text).expect("valid");
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.overall(), Overall::Linearizable);
}

#[test]
fn unknown_writes_may_take_effect_late_or_never() {
    // An unknown write invoked early is seen long after its client gave up.
    let late = vec![
        op(0, Op::Write { value: 5 }, 0, Some(10), Status::Unknown),
        r(1, 0, 20, 30),
        r(1, 5, 40, 50),
    ];
    assert_eq!(verdict(late), Verdict::Linearizable);
    // Or never: nobody reads 5.
    let never = vec![
        op(0, Op::Write { value: 5 }, 0, None, Status::Unknown),
        r(1, 0, 20, 30),
        w(1, 6, 40, 50),
        r(1, 6, 60, 70),
    ];
    assert_eq!(verdict(never), Verdict::Linearizable);
    // But not before it was invoked.
    let early = vec![
        r(1, 5, 0, 10),
        op(0, Op::Write { value: 5 }, 20, None, Status::Unknown),
    ];
    assert!(matches!(verdict(early), Verdict::NotLinearizable(_)));
    // And once overwritten it cannot come back after the overwrite was seen... unless it is
    // applied after that: 1 then 5 then 1 needs two writes of 1.
    let back = vec![
        w(0, 1, 0, 10),
        op(1, Op::Write { value: 5 }, 5, None, Status::Unknown),
        r(2, 5, 20, 30),
        r(2, 1, 40, 50),
    ];
    assert!(matches!(verdict(back), Verdict::NotLinearizable(_)));
}

#[test]
fn failed_operations_did_not_take_effect() {
    let entries = vec![
        op(0, Op::Write { value: 5 }, 0, Some(10), Status::Fail),
        r(1, 5, 20, 30),
    ];
    assert!(matches!(verdict(entries), Verdict::NotLinearizable(_)));
    // A failed CAS (409) did not write either.
    let entries = vec![cas(0, 0, 7, 0, Some(10), Status::Fail), r(1, 0, 20, 30)];
    assert_eq!(verdict(entries), Verdict::Linearizable);
}

#[test]
fn cas_chains() {
    let ok = vec![
        w(0, 1, 0, 10),
        cas(1, 1, 2, 20, Some(30), Status::Ok),
        cas(2, 2, 3, 25, Some(35), Status::Ok),
        r(0, 3, 40, 50),
    ];
    assert_eq!(verdict(ok), Verdict::Linearizable);
    // Two successful CASes from the same expected value cannot both have happened.
    let both = vec![
        w(0, 1, 0, 10),
        cas(1, 1, 2, 20, Some(30), Status::Ok),
        cas(2, 1, 3, 20, Some(30), Status::Ok),
    ];
    assert!(matches!(verdict(both), Verdict::NotLinearizable(_)));
    // An unknown CAS explains a value nothing else wrote.
    let unknown = vec![
        w(0, 1, 0, 10),
        cas(1, 1, 9, 20, None, Status::Unknown),
        r(2, 9, 100, 110),
    ];
    assert_eq!(verdict(unknown), Verdict::Linearizable);
    // But only if its comparison could have matched.
    let mismatch = vec![
        w(0, 1, 0, 10),
        cas(1, 4, 9, 20, None, Status::Unknown),
        r(2, 9, 100, 110),
    ];
    assert!(matches!(verdict(mismatch), Verdict::NotLinearizable(_)));
}

#[test]
fn unknown_reads_and_touching_intervals() {
    let entries = vec![
        w(0, 1, 0, 10),
        op(1, Op::Read { output: None }, 0, None, Status::Unknown),
        // Invoked exactly when the write completed: treated as concurrent.
        r(2, 0, 10, 20),
    ];
    assert_eq!(verdict(entries), Verdict::Linearizable);
}

#[test]
fn keys_are_independent_and_verdicts_combine() {
    let mut entries = vec![w(0, 1, 0, 10), r(1, 1, 20, 30)];
    let mut bad_y = vec![w(2, 1, 0, 10), r(3, 0, 20, 30)];
    for e in &mut bad_y {
        e.key = "y".into();
    }
    entries.append(&mut bad_y);
    let report = check(
        &History::new(entries).expect("valid"),
        &CheckOptions::default(),
    );
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.keys[0].key, "x");
    assert_eq!(report.keys[0].verdict, Verdict::Linearizable);
    assert!(matches!(
        report.keys[1].verdict,
        Verdict::NotLinearizable(_)
    ));
    assert_eq!(report.overall(), Overall::NotLinearizable);
    assert!(report.violating_ops().contains(&3));
}

#[test]
fn a_deadline_gives_unknown_not_a_wrong_answer() {
    // Many fully concurrent writes with one impossible read at the end: the search must try
    // a great many orders before it can say no; a zero deadline stops it first.
    let mut entries: Vec<Entry> = (0..24).map(|p| w(p, p as i64 + 1, 0, 1000)).collect();
    entries.push(r(99, -1, 2000, 2100));
    let history = History::new(entries).expect("valid");
    let options = CheckOptions {
        per_key_timeout: Some(Duration::ZERO),
        total_timeout: None,
        threads: 1,
    };
    let report = check(&history, &options);
    match &report.keys[0].verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("did not finish"), "{reason}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    assert_eq!(report.overall(), Overall::Unknown);
}

#[test]
fn a_failed_cas_is_a_read_of_what_it_found() {
    // w(x,1) completes; later a CAS expecting 5 fails, having found 0: the register was 1.
    let stale = vec![w(0, 1, 0, 10), cas_saw(1, 5, 6, 0, 20, 30)];
    let Verdict::NotLinearizable(v) = verdict(stale) else {
        panic!("a failed CAS that found a stale value must be caught")
    };
    assert_eq!(v.stuck, 1, "{v:?}");
    assert_eq!(v.last_state, 1);
    // Without the observation the failed CAS says nothing.
    let blind = vec![w(0, 1, 0, 10), cas(1, 5, 6, 20, Some(30), Status::Fail)];
    assert_eq!(verdict(blind), Verdict::Linearizable);
    // What it found may be any value the register held during the CAS.
    for seen in [0, 1] {
        let concurrent = vec![w(0, 1, 0, 100), cas_saw(1, 5, 6, seen, 10, 90)];
        assert_eq!(verdict(concurrent), Verdict::Linearizable, "found {seen}");
    }
    // It also keeps an unknown write that only it observed.
    let unknown_write = op(0, Op::Write { value: 4 }, 0, None, Status::Unknown);
    let v = verdict(vec![unknown_write, cas_saw(1, 0, 6, 4, 20, 30)]);
    assert_eq!(v, Verdict::Linearizable);
}

#[test]
fn registers_start_at_the_initial_value_the_history_gives() {
    // A second run on the same cluster: x already holds 7 when the history starts.
    let entries = vec![
        r(0, 7, 0, 10),
        cas(1, 7, 8, 20, Some(30), Status::Ok),
        r(2, 8, 40, 50),
    ];
    let from_zero = History::new(entries).expect("valid");
    let report = check(&from_zero, &CheckOptions::default());
    assert_eq!(report.overall(), Overall::NotLinearizable);
    let from_seven = from_zero.with_initial([("x".to_string(), 7)].into());
    let report = check(&from_seven, &CheckOptions::default());
    assert_eq!(report.overall(), Overall::Linearizable, "{report:?}");
    assert_eq!(report.keys[0].initial, 7);
    // The same through the JSON form.
    let again = History::from_json(&from_seven.to_json()).expect("round trip");
    assert_eq!(
        check(&again, &CheckOptions::default()).overall(),
        Overall::Linearizable
    );
}

#[test]
fn a_whole_run_deadline_gives_unknown_for_every_unfinished_key() {
    let mut entries: Vec<Entry> = (0..24).map(|p| w(p, p as i64 + 1, 0, 1000)).collect();
    entries.push(r(99, -1, 2000, 2100));
    let history = History::new(entries).expect("valid");
    let options = CheckOptions {
        per_key_timeout: None,
        total_timeout: Some(Duration::ZERO),
        threads: 1,
    };
    let report = check(&history, &options);
    match &report.keys[0].verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("whole check"), "{reason}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    assert_eq!(report.overall(), Overall::Unknown);
}

#[test]
fn verdicts_have_one_name_each() {
    assert_eq!(Verdict::Linearizable.kind(), Overall::Linearizable);
    assert_eq!(Overall::NotLinearizable.as_str(), "not-linearizable");
    assert_eq!(Overall::NotLinearizable.label(), "NOT linearizable");
    assert_eq!(
        serde_json::to_value(Overall::Unknown).ok(),
        Some(serde_json::json!(Overall::Unknown.as_str()))
    );
    assert_eq!(Status::Unknown.as_str(), "unknown");
}
