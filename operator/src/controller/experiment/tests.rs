//! Unit tests of [`super`]: the fault schedule's clock.

use super::*;

/// A run of `phase` whose pod started at `started`.
fn decided(phase: ExperimentPhase, started: &str) -> Experiment {
    Experiment {
        ready_since: Some("2026-01-01T00:00:00Z".into()),
        status: Some(ExperimentStatus {
            phase: Some(phase),
            started_at: Some(started.into()),
            ..ExperimentStatus::default()
        }),
        wake: None,
    }
}

#[test]
fn a_running_run_times_the_faults_from_its_start() {
    let at = "2026-01-01T00:05:00Z";
    let s = decided(ExperimentPhase::Running, at).schedule(true);
    assert_eq!(s.zero, parse(Some(at)));
    assert!(s.workload);
}

#[test]
fn a_failed_run_schedules_no_faults() {
    // Its Job was deleted mid-run (or the run was stopped): the faults must stop with it.
    let s = decided(ExperimentPhase::Failed, "2026-01-01T00:05:00Z").schedule(true);
    assert_eq!(s.zero, None);
    assert!(s.workload);
}
