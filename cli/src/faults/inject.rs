//! Runs a fault schedule (see [`crate::faults::schedule`]) against a RegisterCluster: each
//! fault is added to `spec.faults` at its start, confirmed from the status (see
//! [`crate::confirm`]) and removed when its window closes; the windows it returns go to the
//! events file that `caplab report --events` shades.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::confirm;
use crate::faults::schedule::Scheduled;
use crate::k8s::ClusterRef;
use crate::report::Window;

/// The `spec.faults` name of schedule entry `index` in run `run_id`: unique per run, so the
/// operator starts it afresh even if an earlier run used the same schedule.
pub fn fault_name(run_id: &str, index: usize, fault: &Map<String, Value>) -> String {
    let kind = fault
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("fault")
        .to_ascii_lowercase();
    let mut name = format!("caplab-{run_id}-{index}-{kind}");
    name.truncate(63);
    name
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start(usize),
    Stop(usize),
}

/// Start and stop actions in time order (stops first at equal times).
fn actions(schedule: &[Scheduled]) -> Vec<(Duration, Action)> {
    let mut actions = Vec::new();
    for (i, s) in schedule.iter().enumerate() {
        actions.push((s.at, Action::Start(i)));
        if let Some(d) = s.duration {
            actions.push((s.at.saturating_add(d), Action::Stop(i)));
        }
    }
    actions.sort_by_key(|(t, a)| (*t, matches!(a, Action::Start(_))));
    actions
}

fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a schedule did: the fault windows, and why it stopped the workload early, if it did.
pub struct Ran {
    pub windows: Vec<Window>,
    /// A fault the operator refused ([`crate::exit::BadInput`]) or did not start in time.
    pub failure: Option<anyhow::Error>,
}

/// Runs the schedule from `start` until `end` (or `stop`), then removes whatever is still
/// injected. After each fault is added to the spec, waits (up to `confirm_timeout`) until
/// the operator reports it started; a fault it refuses, or does not start in time, ends the
/// schedule and the workload (through `halt`). Returns the windows of the faults that
/// started (a patch that fails is reported on stderr and leaves no window), each starting
/// when the operator reports it started the fault if that was later (see [`later_start`]).
pub async fn run(
    target: &ClusterRef,
    schedule: &[Scheduled],
    run_id: &str,
    start: Instant,
    end: Duration,
    confirm_timeout: Duration,
    halt: &watch::Sender<bool>,
) -> Ran {
    let mut stop = halt.subscribe();
    let mut injector = Injector::new(target, schedule, run_id, start);
    let mut failure = None;
    for (at, action) in actions(schedule) {
        if at >= end || !sleep_until(start + at, &mut stop).await {
            break;
        }
        match action {
            Action::Start(i) => {
                if let Err(e) = injector.start_fault(i, confirm_timeout).await {
                    failure = Some(e);
                    let _ = halt.send(true);
                    break;
                }
            }
            Action::Stop(i) => injector.stop_fault(i).await,
        }
    }
    // Wait for the end of the workload, then heal whatever is left.
    sleep_until(start + end, &mut stop).await;
    let windows = injector.heal(run_id).await;
    Ran { windows, failure }
}

/// Sleeps until `when` or until `stop` turns true; `false` if stopped.
async fn sleep_until(when: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(when)) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    !*stop.borrow()
}

/// The state of a running schedule: which faults are in the spec, and since when.
struct Injector<'a> {
    target: &'a ClusterRef,
    schedule: &'a [Scheduled],
    /// The `spec.faults` name of each entry.
    names: Vec<String>,
    start: Instant,
    /// The wall-clock time of `start`, to place the operator's timestamps.
    start_wall: SystemTime,
    /// Entries in `spec.faults` now.
    active: Vec<usize>,
    /// When each started entry's patch was accepted (ns from `start`), until it closes.
    opened: Vec<Option<u64>>,
    /// Closed windows, by entry.
    windows: Vec<(usize, Window)>,
}

impl<'a> Injector<'a> {
    fn new(
        target: &'a ClusterRef,
        schedule: &'a [Scheduled],
        run_id: &str,
        start: Instant,
    ) -> Self {
        let names = schedule
            .iter()
            .enumerate()
            .map(|(i, s)| fault_name(run_id, i, &s.fault))
            .collect();
        let start_wall = SystemTime::now()
            .checked_sub(start.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Injector {
            target,
            schedule,
            names,
            start,
            start_wall,
            active: Vec::new(),
            opened: vec![None; schedule.len()],
            windows: Vec::new(),
        }
    }

    /// Makes our entries of `spec.faults` exactly `active`; the resource's generation.
    async fn apply(&self, active: &[usize]) -> anyhow::Result<Option<i64>> {
        let specs: Vec<Value> = active
            .iter()
            .map(|&i| {
                let mut f = self.schedule[i].fault.clone();
                f.insert("name".into(), Value::String(self.names[i].clone()));
                Value::Object(f)
            })
            .collect();
        let t = self.target;
        crate::k8s::set_faults(&t.client, &t.namespace, &t.name, &self.names, &specs).await
    }

    fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Adds entry `i` and waits for the operator to start it; an error if it refused or
    /// did not start it in time (a patch that fails is only reported).
    async fn start_fault(&mut self, i: usize, confirm_timeout: Duration) -> anyhow::Result<()> {
        let mut next = self.active.clone();
        next.push(i);
        let (name, label) = (&self.names[i], &self.schedule[i].label);
        let generation = match self.apply(&next).await {
            Ok(generation) => generation,
            Err(e) => {
                eprintln!("\nfault {name}: could not inject it: {e:#}");
                return Ok(());
            }
        };
        self.active = next;
        let patched = ns_since(self.start);
        match confirm::wait(self.target, name, generation, confirm_timeout).await {
            Ok((state, since)) => {
                self.opened[i] = Some(patched);
                eprintln!(
                    "\n[{:>5.1}s] fault {name} ({label}) {state} since {}",
                    self.elapsed_s(),
                    since.as_deref().unwrap_or("-")
                );
                Ok(())
            }
            Err(why) => Err(not_started_error(name, label, why, confirm_timeout)),
        }
    }

    /// Removes entry `i` and closes its window.
    async fn stop_fault(&mut self, i: usize) {
        if !self.active.contains(&i) {
            return;
        }
        let next: Vec<usize> = self.active.iter().copied().filter(|&j| j != i).collect();
        if let Err(e) = self.apply(&next).await {
            eprintln!("\nfault {}: could not remove it: {e:#}", self.names[i]);
            return;
        }
        self.active = next;
        if let Some(from) = self.opened[i].take() {
            let end = Some(ns_since(self.start));
            self.close(i, from, end);
        }
        eprintln!(
            "\n[{:>5.1}s] fault {} removed",
            self.elapsed_s(),
            self.names[i]
        );
    }

    fn close(&mut self, i: usize, start: u64, end: Option<u64>) {
        let name = self.schedule[i].label.clone();
        self.windows.push((i, Window { name, start, end }));
    }

    /// Removes every entry still in the spec and returns all windows in start order, each
    /// moved to when the operator says it started the fault if that was later. A window
    /// whose removal failed stays open (`end` none).
    async fn heal(mut self, run_id: &str) -> Vec<Window> {
        let cleanup = self.apply(&[]).await;
        let healed = ns_since(self.start);
        if let Err(e) = &cleanup {
            eprintln!(
                "\ncould not remove the workload's faults from {}/{}: {e:#}\n\
                 remove the entries named caplab-{run_id}-* from spec.faults by hand",
                self.target.namespace, self.target.name
            );
        }
        for i in 0..self.opened.len() {
            if let Some(from) = self.opened[i].take() {
                self.close(i, from, cleanup.is_ok().then_some(healed));
            }
        }
        let started = operator_starts(self.target).await;
        let mut windows: Vec<Window> = self
            .windows
            .into_iter()
            .map(|(i, mut w)| {
                if let Some(since) = started.get(&self.names[i]) {
                    w.start = later_start(w.start, *since, self.start_wall);
                }
                w
            })
            .collect();
        windows.sort_by_key(|w| w.start);
        windows
    }
}

/// The error that ends a workload whose fault did not start.
fn not_started_error(
    name: &str,
    label: &str,
    why: confirm::NotStarted,
    timeout: Duration,
) -> anyhow::Error {
    match why {
        confirm::NotStarted::Refused(why) => anyhow::Error::new(crate::exit::BadInput(format!(
            "the operator refused fault {name} ({label}): {why}"
        ))),
        confirm::NotStarted::TimedOut(why) => anyhow!(
            "fault {name} ({label}) did not start within {timeout:?} (--fault-timeout): {why}"
        ),
    }
}

/// When the operator says it started each fault (`status.faults[].since`), by fault name;
/// empty when the status cannot be read (the windows then keep the patch times).
async fn operator_starts(target: &ClusterRef) -> BTreeMap<String, SystemTime> {
    let Ok(rc) = target.read().await else {
        return BTreeMap::new();
    };
    rc.status
        .map(|st| st.faults)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| {
            let since = chrono::DateTime::parse_from_rfc3339(f.since.as_deref()?).ok()?;
            Some((f.name, SystemTime::from(since)))
        })
        .collect()
}

/// A fault window starts when its patch was accepted (`patched`, ns from the start), unless
/// the operator started the fault more than a second later (it waits for a leader before it
/// resolves targets, for one): then at the operator's `since`, which has whole seconds.
pub fn later_start(patched: u64, since: SystemTime, start_wall: SystemTime) -> u64 {
    let since = since
        .duration_since(start_wall)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if since > patched.saturating_add(1_000_000_000) {
        since
    } else {
        patched
    }
}

/// A short identifier for this run's fault names, from the wall clock.
pub fn run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut n = secs % 36u64.pow(6);
    let mut id = Vec::new();
    for _ in 0..6 {
        let digit = (n % 36) as u8;
        id.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
        n /= 36;
    }
    id.reverse();
    String::from_utf8(id).unwrap_or_else(|_| "run".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::schedule::parse_fault_at;
    use serde_json::json;

    #[test]
    fn windows_start_when_the_operator_started_a_late_fault() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: u64| wall + Duration::from_secs(secs);
        let s = 1_000_000_000;
        // Patched at 3.2 s; the operator's whole-second "since" of 3 s is no later: kept.
        assert_eq!(later_start(3 * s + s / 5, at(3), wall), 3 * s + s / 5);
        assert_eq!(later_start(3 * s + s / 5, at(4), wall), 3 * s + s / 5);
        // Started at 9 s (waiting for a leader): the window starts there.
        assert_eq!(later_start(3 * s, at(9), wall), 9 * s);
        // A clock before the workload began cannot move a window earlier.
        assert_eq!(
            later_start(2 * s, wall - Duration::from_secs(5), wall),
            2 * s
        );
    }

    #[test]
    fn names_and_actions() {
        let s = parse_fault_at("1s:partition-leader:2s").expect("valid");
        assert_eq!(
            fault_name("abc123", 0, &s.fault),
            "caplab-abc123-0-partition"
        );
        let mut skew = Map::new();
        skew.insert("kind".into(), json!("clockSkew"));
        assert_eq!(fault_name("r", 4, &skew), "caplab-r-4-clockskew");
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));

        let schedule = vec![
            parse_fault_at("5s:crash-leader:5s").expect("valid"),
            parse_fault_at("1s:partition-leader:4s").expect("valid"),
            parse_fault_at("20s:pause-1").expect("valid"),
        ];
        assert_eq!(
            actions(&schedule),
            vec![
                (Duration::from_secs(1), Action::Start(1)),
                (Duration::from_secs(5), Action::Stop(1)),
                (Duration::from_secs(5), Action::Start(0)),
                (Duration::from_secs(10), Action::Stop(0)),
                (Duration::from_secs(20), Action::Start(2)),
            ]
        );
    }
}
