//! The fault windows of a run as the members saw them (pure): each pass of a run compares the
//! faults the operator made active (`status.faults[]`) with what the members report.
//!
//! A member's `GET /v1/status` carries the fault set in force on it (`faults`): a window opens
//! at the first observation in which a target member reports the fault's kind in force (a
//! crash: a target that does not answer), and closes at the first observation, once the
//! operator lifted the fault, in which no target does. Observations come once a second during
//! a run, so each edge is at most about a second late; two faults of one kind on one member
//! at once are told apart by the operator's order only. A fault that began and ended between
//! two observations gets the operator's own times, marked `seenByMembers: false`.

use std::collections::BTreeMap;

use caplab_api::faults::FaultSet;
use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::crd::{FaultKind, FaultState, FaultStatus, FaultWindow};

/// What each ordinal's member reported in this pass: its fault set, or `None` when it did not
/// answer (no pod, not running, or not answering as itself). Ordinals missing: not answering.
pub type Reported = BTreeMap<u32, Option<FaultSet>>;

fn ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse(t: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a member's reported fault set holds a fault of `kind` (never for a crash, which a
/// member cannot report).
fn holds(kind: FaultKind, set: &FaultSet) -> bool {
    match kind {
        FaultKind::Partition => set.partition.is_some(),
        FaultKind::Delay => set.delay.is_some(),
        FaultKind::Loss => set.loss.is_some(),
        FaultKind::Pause => set.pause,
        FaultKind::ClockSkew => set.clock_skew_ms != 0,
        FaultKind::Veto => set.veto.is_some(),
        FaultKind::Crash => false,
    }
}

/// Whether any target of `f` shows it: reports its kind in force, or, for a crash, is down.
fn shown(f: &FaultStatus, reported: &Reported) -> bool {
    let mut targets = f.targets.iter().chain(f.groups.iter().flatten());
    targets.any(|o| match reported.get(o) {
        Some(Some(set)) => holds(f.kind, set),
        _ => f.kind == FaultKind::Crash,
    })
}

fn window(f: &FaultStatus, since: Option<String>, seen: bool) -> FaultWindow {
    FaultWindow {
        name: f.name.clone(),
        kind: Some(f.kind.as_str().to_string()),
        since,
        seen_by_members: Some(seen),
        ..FaultWindow::default()
    }
}

/// Advances the run's `windows` by one observation at `now`: `faults` as the operator last
/// wrote them, `reported` what the members answered. Only faults made active since the run
/// `started` count (status times are whole seconds: one second of slack).
pub fn track(
    windows: &mut Vec<FaultWindow>,
    faults: &[FaultStatus],
    reported: &Reported,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    for f in faults {
        let Some(since) = parse(f.since.as_deref()) else {
            continue;
        };
        if since < started - Duration::seconds(1) {
            continue;
        }
        let lifted = f.state != FaultState::Active;
        let showing = shown(f, reported);
        match windows.iter_mut().find(|w| w.name == f.name) {
            None if showing => windows.push(window(f, Some(ms(now)), true)),
            None if lifted => {
                let mut w = window(f, f.since.clone(), false);
                w.until = f.until.clone();
                windows.push(w);
            }
            Some(w) if w.until.is_none() && lifted && !showing => w.until = Some(ms(now)),
            _ => {}
        }
    }
}

/// The windows of a finished run: the Job's (with how the clients fared in each, on the
/// clock of its history), completed with what the operator recorded where the Job left it
/// out (a long verdict sheds the windows' times) or read it still open, and the operator's
/// windows the Job did not know of.
pub fn merge(ours: &[FaultWindow], job: Vec<FaultWindow>) -> Vec<FaultWindow> {
    let mut out = job;
    for w in &mut out {
        let Some(mine) = ours.iter().find(|o| o.name == w.name) else {
            continue;
        };
        w.kind = w.kind.take().or_else(|| mine.kind.clone());
        w.since = w.since.take().or_else(|| mine.since.clone());
        w.until = w.until.take().or_else(|| mine.until.clone());
        w.seen_by_members = w.seen_by_members.or(mine.seen_by_members);
    }
    for o in ours {
        if !out.iter().any(|w| w.name == o.name) {
            out.push(o.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use caplab_api::faults::PeerFilter;
    use chrono::TimeZone;

    use super::*;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, s)
            .single()
            .unwrap_or_default()
    }

    fn fault(name: &str, kind: FaultKind, state: FaultState, since: u32) -> FaultStatus {
        FaultStatus {
            name: name.into(),
            kind,
            state,
            targets: if kind == FaultKind::Partition {
                vec![]
            } else {
                vec![0]
            },
            groups: if kind == FaultKind::Partition {
                vec![vec![0], vec![1, 2]]
            } else {
                vec![]
            },
            since: Some(ms(at(since))),
            until: None,
            spec_hash: None,
            message: None,
        }
    }

    fn members(partitioned: bool, down: Option<u32>) -> Reported {
        let set = FaultSet {
            partition: partitioned.then(PeerFilter::default),
            ..FaultSet::default()
        };
        (0..3)
            .map(|o| (o, (Some(o) != down).then(|| set.clone())))
            .collect()
    }

    #[test]
    fn a_window_is_when_the_members_reported_the_fault() {
        let mut w = Vec::new();
        let active = fault("cut", FaultKind::Partition, FaultState::Active, 10);
        // Made active at 10 s; the members report nothing yet: no window.
        track(
            &mut w,
            std::slice::from_ref(&active),
            &members(false, None),
            at(0),
            at(10),
        );
        assert!(w.is_empty());
        track(
            &mut w,
            std::slice::from_ref(&active),
            &members(true, None),
            at(0),
            at(11),
        );
        assert_eq!(w[0].since.as_deref(), Some("2024-01-01T00:00:11.000Z"));
        assert_eq!(w[0].seen_by_members, Some(true));
        assert_eq!(w[0].kind.as_deref(), Some("partition"));
        // Lifted at 30 s, the members still report it: still open.
        let lifted = FaultStatus {
            state: FaultState::Expired,
            ..active
        };
        track(
            &mut w,
            std::slice::from_ref(&lifted),
            &members(true, None),
            at(0),
            at(30),
        );
        assert_eq!(w[0].until, None);
        track(&mut w, &[lifted], &members(false, None), at(0), at(31));
        assert_eq!(w[0].until.as_deref(), Some("2024-01-01T00:00:31.000Z"));
    }

    #[test]
    fn a_crash_is_its_target_not_answering() {
        let mut w = Vec::new();
        let crash = fault("kill", FaultKind::Crash, FaultState::Active, 35);
        track(
            &mut w,
            std::slice::from_ref(&crash),
            &members(false, None),
            at(0),
            at(35),
        );
        assert!(w.is_empty(), "the pod is not gone yet");
        track(
            &mut w,
            std::slice::from_ref(&crash),
            &members(false, Some(0)),
            at(0),
            at(36),
        );
        assert_eq!(w.len(), 1);
        let over = FaultStatus {
            state: FaultState::Expired,
            ..crash
        };
        track(
            &mut w,
            std::slice::from_ref(&over),
            &members(false, Some(0)),
            at(0),
            at(45),
        );
        assert_eq!(w[0].until, None, "recreated but not answering yet");
        track(&mut w, &[over], &members(false, None), at(0), at(48));
        assert_eq!(w[0].until.as_deref(), Some("2024-01-01T00:00:48.000Z"));
    }

    #[test]
    fn faults_of_earlier_runs_and_unseen_ones_are_told_apart() {
        let mut w = Vec::new();
        let old = fault("old", FaultKind::Pause, FaultState::Expired, 0);
        let mut brief = fault("brief", FaultKind::Pause, FaultState::Expired, 20);
        brief.until = Some(ms(at(20)));
        track(&mut w, &[old, brief], &members(false, None), at(10), at(21));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name, "brief");
        assert_eq!(w[0].seen_by_members, Some(false));
        assert_eq!(w[0].until.as_deref(), Some("2024-01-01T00:00:20.000Z"));
    }

    #[test]
    fn the_jobs_windows_are_closed_with_the_operators_end() {
        let ours = vec![
            FaultWindow {
                name: "cut".into(),
                since: Some("t1".into()),
                until: Some("t2".into()),
                ..FaultWindow::default()
            },
            FaultWindow {
                name: "late".into(),
                ..FaultWindow::default()
            },
        ];
        let job = vec![FaultWindow {
            name: "cut".into(),
            availability: Some(0.5),
            ..FaultWindow::default()
        }];
        let merged = merge(&ours, job);
        assert_eq!(merged[0].until.as_deref(), Some("t2"));
        assert_eq!(
            merged[0].since.as_deref(),
            Some("t1"),
            "a slimmed verdict's window"
        );
        assert_eq!(merged[0].availability, Some(0.5));
        assert_eq!(merged[1].name, "late");
    }
}
