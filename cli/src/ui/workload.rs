//! The live workload, from the client-operation counts every member reports in its status
//! (`clientOps`: operations by outcome and a latency histogram, cumulative since the member
//! started): ops/s, errors/s and latency percentiles over each poll interval, summed over
//! the members. Whatever drives the load (the RegisterCluster's experiment Job, `caplab
//! workload`, curl), the members see it, so the view needs no hook into the driver. Pure
//! functions; the hub keeps the previous poll.

use std::collections::BTreeMap;

use caplab_api::status::ClientOps;
use serde::Serialize;

/// Outcomes that are answers to the client, not failures: a CAS whose compare failed was
/// served correctly.
const SERVED: [&str; 2] = ["ok", "cas-mismatch"];

/// The cluster's client operations over one poll interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ops {
    /// Operations answered per second (every outcome).
    pub ops_per_second: f64,
    /// Of those, answered with a failure per second (503 not applied, 504 unknown, 4xx other
    /// than a CAS mismatch).
    pub errors_per_second: f64,
    /// Upper bounds (ms) of the latency buckets holding the median and the 99th percentile
    /// (`None`: no operation in the interval). The histogram's buckets double, so these are
    /// within a factor of two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Peer messages sent per client operation over the interval, by kind (`append`,
    /// `forward-write`, `2pc-prepare`, …; heartbeats included): the protocol's cost per
    /// operation. Empty when no operation completed or no trace was read.
    pub messages_per_operation: BTreeMap<String, f64>,
}

/// Peer messages per client operation by kind: `sent` is each member's messages per second by
/// receiver and kind (over the same interval as `ops_per_second`).
pub fn per_operation<'a>(
    ops_per_second: f64,
    sent: impl Iterator<Item = &'a BTreeMap<u64, BTreeMap<String, f64>>>,
) -> BTreeMap<String, f64> {
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    if ops_per_second <= 0.0 {
        return by_kind;
    }
    for (kind, rate) in sent.flat_map(|to| to.values()).flatten() {
        *by_kind.entry(kind.clone()).or_default() += rate / ops_per_second;
    }
    by_kind
}

/// What one member answered since the previous poll: `now` minus `before`, or all of `now`
/// when a counter went down (the member restarted and counts from zero again).
fn delta(before: Option<&ClientOps>, now: &ClientOps) -> ClientOps {
    let Some(before) = before else {
        return ClientOps {
            latency_bounds_ms: now.latency_bounds_ms.clone(),
            latency_counts: vec![0; now.latency_counts.len()],
            outcomes: BTreeMap::new(),
        };
    };
    let restarted = now
        .outcomes
        .iter()
        .any(|(k, n)| before.outcomes.get(k).is_some_and(|b| b > n))
        || now.latency_bounds_ms != before.latency_bounds_ms;
    if restarted {
        return now.clone();
    }
    let outcomes = now
        .outcomes
        .iter()
        .map(|(k, n)| (k.clone(), n - before.outcomes.get(k).copied().unwrap_or(0)))
        .collect();
    let latency_counts = now
        .latency_counts
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.latency_counts.get(i).copied().unwrap_or(0)))
        .collect();
    ClientOps {
        outcomes,
        latency_bounds_ms: now.latency_bounds_ms.clone(),
        latency_counts,
    }
}

/// The smallest bucket bound below which `share` (0–1) of the operations fall; past the last
/// bound, twice it.
fn percentile(bounds: &[f64], counts: &[u64], share: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * share).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= wanted {
            return bounds.get(i).copied().or(bounds.last().map(|b| b * 2.0));
        }
    }
    bounds.last().map(|b| b * 2.0)
}

/// Follows the members' counts from poll to poll.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The previous poll: when (observer's clock, ms) and each member's counts by index.
    last: Option<(u64, BTreeMap<usize, ClientOps>)>,
}

impl Tracker {
    /// The operations since the previous call, from `counts` (member index → its counts, for
    /// the members that answered) at `now` (ms). `None` on the first call, or when no member
    /// reports counts (an older member image).
    pub fn sample(&mut self, now: u64, counts: BTreeMap<usize, ClientOps>) -> Option<Ops> {
        let previous = self.last.replace((now, counts.clone()));
        let (then, before) = previous?;
        if counts.is_empty() {
            return None;
        }
        let seconds = now.saturating_sub(then).max(1) as f64 / 1000.0;
        let (mut served, mut failed) = (0u64, 0u64);
        let mut bounds = Vec::new();
        let mut latency: Vec<u64> = Vec::new();
        for (i, now_counts) in &counts {
            let d = delta(before.get(i), now_counts);
            for (outcome, n) in &d.outcomes {
                if SERVED.contains(&outcome.as_str()) {
                    served += n;
                } else {
                    failed += n;
                }
            }
            if latency.len() < d.latency_counts.len() {
                latency.resize(d.latency_counts.len(), 0);
                bounds = d.latency_bounds_ms.clone();
            }
            for (sum, n) in latency.iter_mut().zip(&d.latency_counts) {
                *sum += n;
            }
        }
        Some(Ops {
            ops_per_second: (served + failed) as f64 / seconds,
            errors_per_second: failed as f64 / seconds,
            p50_ms: percentile(&bounds, &latency, 0.5),
            p99_ms: percentile(&bounds, &latency, 0.99),
            messages_per_operation: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ok: u64, unknown: u64, latency: [u64; 3]) -> ClientOps {
        ClientOps {
            outcomes: [("ok".into(), ok), ("unknown".into(), unknown)].into(),
            latency_bounds_ms: vec![1.0, 2.0],
            latency_counts: latency.to_vec(),
        }
    }

    #[test]
    fn rates_come_from_the_difference_of_two_polls() {
        let mut t = Tracker::default();
        assert_eq!(
            t.sample(1_000, [(0, counts(10, 0, [10, 0, 0]))].into()),
            None
        );
        // Half a second later: 40 more ok (30 under 1 ms, 10 under 2 ms), 10 unknown (slower).
        let ops = t
            .sample(1_500, [(0, counts(50, 10, [40, 10, 10]))].into())
            .unwrap();
        assert_eq!(ops.ops_per_second, 100.0);
        assert_eq!(ops.errors_per_second, 20.0);
        assert_eq!(ops.p50_ms, Some(1.0));
        assert_eq!(ops.p99_ms, Some(4.0), "past the last bound: twice it");
    }

    #[test]
    fn a_restarted_member_counts_from_zero_and_members_add_up() {
        let mut t = Tracker::default();
        t.sample(
            0,
            [
                (0, counts(100, 0, [100, 0, 0])),
                (1, counts(5, 0, [5, 0, 0])),
            ]
            .into(),
        );
        // Member 0 restarted (its counts went down): its 3 operations are all new.
        let ops = t
            .sample(
                1_000,
                [(0, counts(3, 0, [0, 3, 0])), (1, counts(7, 1, [7, 0, 1]))].into(),
            )
            .unwrap();
        assert_eq!(ops.ops_per_second, 6.0);
        assert_eq!(ops.errors_per_second, 1.0);
        assert_eq!(ops.p50_ms, Some(2.0));
    }

    #[test]
    fn messages_per_operation_add_up_over_senders() {
        let one = BTreeMap::from([(2, BTreeMap::from([("append".to_string(), 100.0)]))]);
        let two = BTreeMap::from([(1, BTreeMap::from([("append".to_string(), 50.0)]))]);
        let per = per_operation(50.0, [&one, &two].into_iter());
        assert_eq!(per, BTreeMap::from([("append".to_string(), 3.0)]));
        assert!(per_operation(0.0, [&one].into_iter()).is_empty());
    }

    #[test]
    fn no_counts_no_sample() {
        let mut t = Tracker::default();
        t.sample(0, BTreeMap::new());
        assert_eq!(t.sample(1_000, BTreeMap::new()), None);
    }
}
