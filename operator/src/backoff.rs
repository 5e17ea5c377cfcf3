//! Per-object exponential back-off for failed reconciles.
//!
//! A reconcile that fails for a reason that may pass (the API server unreachable, a conflict,
//! RBAC fixed later) is retried after [`FIRST`], doubling with every consecutive failure of
//! the same object up to [`MAX`]; one successful reconcile resets it. Failures are counted per
//! object, so one broken cluster backing off does not slow the others. This is the
//! controller-runtime / client-go default (`ItemExponentialFailureRateLimiter`, 5 ms doubling
//! to 1000 s), with a first delay and ceiling that suit a handful of clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The delay after an object's first failed reconcile.
pub const FIRST: Duration = Duration::from_secs(5);
/// The longest delay between retries of a failing object.
pub const MAX: Duration = Duration::from_secs(300);

/// Consecutive failed reconciles per object key, and the last refusal announced for it.
#[derive(Default)]
pub struct Backoff(Mutex<BTreeMap<String, Failing>>);

#[derive(Default)]
struct Failing {
    failures: u32,
    announced: Option<String>,
}

/// The delay after `failures` consecutive failures (≥ 1): [`FIRST`] · 2^(failures − 1), at most
/// [`MAX`].
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

impl Backoff {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Failing>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one more failed reconcile of `key`; returns how long to wait before the next.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.lock();
        let f = map.entry(key.to_string()).or_default();
        f.failures = f.failures.saturating_add(1);
        delay(f.failures)
    }

    /// Records a refusal of `key` that only a change of the object can cure (it is not
    /// retried); `true` when `why` is news (not the refusal last recorded for it), i.e. worth
    /// one Warning Event.
    pub fn refused(&self, key: &str, why: &str) -> bool {
        let mut map = self.lock();
        let f = map.entry(key.to_string()).or_default();
        let news = f.announced.as_deref() != Some(why);
        f.announced = Some(why.to_string());
        news
    }

    /// A reconcile of `key` succeeded: its next failure starts again at [`FIRST`].
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Forgets every object whose key is not in `live`: those were deleted (possibly while
    /// failing, when no success ever reset them).
    pub fn retain(&self, live: &BTreeSet<String>) {
        self.lock().retain(|key, _| live.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_five_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn failures_are_counted_per_object_and_reset_by_a_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), FIRST);
        assert_eq!(b.failed("a"), FIRST * 2);
        assert_eq!(b.failed("b"), FIRST, "another object has its own count");
        b.succeeded("a");
        assert_eq!(b.failed("a"), FIRST);
    }

    #[test]
    fn deleted_objects_are_forgotten_and_live_ones_kept() {
        let b = Backoff::default();
        b.failed("gone");
        b.failed("gone");
        assert!(b.refused("refused-gone", "x"));
        b.failed("live");
        b.retain(&BTreeSet::from(["live".to_string()]));
        assert_eq!(b.lock().len(), 1, "only the live object is remembered");
        assert_eq!(b.failed("live"), FIRST * 2, "the live count is kept");
        assert_eq!(
            b.failed("gone"),
            FIRST,
            "a new object of that key starts afresh"
        );
        assert!(b.refused("refused-gone", "x"), "its refusal is news again");
    }

    #[test]
    fn a_refusal_is_news_once_until_it_changes_or_the_object_succeeds() {
        let b = Backoff::default();
        assert!(b.refused("a", "x"));
        assert!(!b.refused("a", "x"));
        assert!(b.refused("a", "y"));
        b.succeeded("a");
        assert!(b.refused("a", "y"));
    }
}
