//! The clock a Raft member's election timers run on: wall time minus the time its own log
//! writer spent writing and syncing (`fdatasync`).
//!
//! openraft 0.9's core waits for every log write's sync before it handles the next message,
//! so while a member's disk stalls it hears nothing, whatever its leader sends. Counting that
//! time as the leader's silence made a disk stall shared by every member (a busy host, another
//! process's writeback) look like a dead leader: the followers' timers ran out together and
//! they deposed a healthy leader (seen in the benchmarks: a 300 ms stall, a new term). etcd's
//! election timer is a count of ticks taken by the same loop that persists the log, so it
//! stands still while that loop waits for the disk (etcd `raft/node.go`, `etcdserver/raft.go`);
//! this clock gives caplab's timers the same property. A member whose disk never answers
//! never campaigns, as one that stopped would not; the others elect without it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time the Raft log's writer spent writing and syncing (openraft's core waits for it): the
/// sum of finished writes and the one under way. Written by the writer thread, read by the
/// election tasks.
#[derive(Debug, Default)]
pub struct SyncTime {
    inner: Mutex<Syncs>,
}

#[derive(Debug, Default)]
struct Syncs {
    finished: Duration,
    under_way_since: Option<Instant>,
}

impl Syncs {
    fn total_at(&self, now: Instant) -> Duration {
        self.finished
            + self
                .under_way_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// Ends the write under way when dropped, so a panicking write does not freeze the clock.
struct UnderWay<'a>(&'a SyncTime);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl SyncTime {
    /// Runs `write`, counts the time it takes and returns that time with its result.
    pub fn measure<T>(&self, write: impl FnOnce() -> T) -> (T, Duration) {
        // The start is read under the lock: a reading taken between an instant read outside
        // it and the lock would count time this write then claims as its own.
        {
            let mut syncs = self.lock();
            syncs.under_way_since = Some(Instant::now());
        }
        let _unfinished = UnderWay(self);
        let result = write();
        (result, self.finish())
    }

    /// Ends the write under way and returns how long it took (zero when none was).
    fn finish(&self) -> Duration {
        let mut syncs = self.lock();
        let took = syncs
            .under_way_since
            .take()
            .map_or(Duration::ZERO, |s| s.elapsed());
        syncs.finished += took;
        took
    }

    /// Time spent so far, the write under way included (the clock reads it with the wall
    /// time at one instant instead: [`ElectionClock::now`]).
    #[cfg(test)]
    fn total(&self) -> Duration {
        self.lock().total_at(Instant::now())
    }

    /// How long the write under way has taken so far; `None` between writes.
    pub fn under_way(&self) -> Option<Duration> {
        self.lock().under_way_since.map(|since| since.elapsed())
    }

    /// Wall time since `origin` and the total, both at one instant.
    fn reading(&self, origin: Instant) -> (Duration, Duration) {
        let syncs = self.lock();
        let now = Instant::now();
        (now.saturating_duration_since(origin), syncs.total_at(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Syncs> {
        // Two durations cannot be left half-updated: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A reading of the election clock: time since the clock started, writes left out.
pub type ElectionTime = Duration;

/// Wall time from the clock's start minus the log's [`SyncTime`] over the same span.
#[derive(Debug, Clone)]
pub struct ElectionClock {
    origin: Instant,
    syncs: Arc<SyncTime>,
    /// Sync time already spent when the clock started.
    syncs_at_origin: Duration,
}

impl ElectionClock {
    pub fn new(syncs: Arc<SyncTime>) -> Self {
        let origin = Instant::now();
        let syncs_at_origin = syncs.lock().total_at(origin);
        Self {
            origin,
            syncs,
            syncs_at_origin,
        }
    }

    /// Now on this clock. Both parts are read at one instant under the writer's lock, so
    /// readings never go backwards and the clock never runs faster than wall time: sleeping
    /// the wall time left until a reading never wakes early.
    pub fn now(&self) -> ElectionTime {
        let (elapsed, syncing) = self.syncs.reading(self.origin);
        elapsed.saturating_sub(syncing.saturating_sub(self.syncs_at_origin))
    }

    /// How long this member's log has been in the write under way; `None` between writes.
    pub fn sync_under_way(&self) -> Option<Duration> {
        self.syncs.under_way()
    }

    /// Time on this clock since `since` (a reading of it).
    pub fn since(&self, since: ElectionTime) -> Duration {
        self.now().saturating_sub(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_sync_does_not_advance_the_clock() {
        let syncs = Arc::new(SyncTime::default());
        let clock = ElectionClock::new(syncs.clone());
        let wall_before = Instant::now();
        let before = clock.now();
        syncs.measure(|| std::thread::sleep(Duration::from_millis(200)));
        let on_clock = clock.since(before);
        let on_wall = wall_before.elapsed();
        // Whatever the scheduler did, the clock ran at most the wall time outside the sync.
        assert!(
            on_clock + Duration::from_millis(200) <= on_wall,
            "the clock ran {on_clock:?} of {on_wall:?}, a 200 ms sync among them"
        );
        assert!(syncs.total() >= Duration::from_millis(200));
    }

    #[test]
    fn without_syncs_the_clock_follows_wall_time() {
        let clock = ElectionClock::new(Arc::new(SyncTime::default()));
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(50));
        assert!(clock.since(before) >= Duration::from_millis(50));
    }

    #[test]
    fn a_sync_under_way_counts_before_it_ends() {
        let syncs = Arc::new(SyncTime::default());
        let clock = ElectionClock::new(syncs.clone());
        let (started, wait) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let writer = {
            let syncs = syncs.clone();
            std::thread::spawn(move || {
                syncs.measure(|| {
                    let _ = started.send(());
                    let _ = finished.recv();
                })
            })
        };
        let _ = wait.recv();
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(100));
        let during = clock.since(before);
        let _ = finish.send(());
        let _ = writer.join();
        assert!(
            during < Duration::from_millis(50),
            "the clock ran {during:?} while a sync was under way"
        );
    }

    #[test]
    fn readings_never_go_backwards_while_writes_come_and_go() {
        let syncs = Arc::new(SyncTime::default());
        let clock = ElectionClock::new(syncs.clone());
        let writer = {
            let syncs = syncs.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    syncs.measure(|| std::thread::sleep(Duration::from_micros(300)));
                }
            })
        };
        let mut last = clock.now();
        while !writer.is_finished() {
            let now = clock.now();
            assert!(now >= last, "the clock went back from {last:?} to {now:?}");
            last = now;
        }
        let _ = writer.join();
    }

    #[test]
    fn a_panicking_write_still_ends() {
        let syncs = Arc::new(SyncTime::default());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            syncs.measure(|| panic!("a write that fails loudly"))
        }));
        assert!(panicked.is_err());
        assert_eq!(syncs.under_way(), None);
    }
}
