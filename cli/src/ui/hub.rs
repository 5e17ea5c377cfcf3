//! The one poller behind every open page: asks each member for its `/v1/status` once a
//! period (at most once a second; a member that answers is then asked for its new trace
//! events and its log tail), keeps the last few minutes of timeline samples (with the live
//! workload's rates), and holds the aggregated JSON the pages fetch. Browsers read the cached JSON, so the members see the
//! same load however many pages are open.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use caplab_api::status::ClientOps;
use caplab_api::trace::{Fate, TraceView};
use caplab_api::NodeId;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::clock::now_ms;
use super::model::{self, MemberView, Sample, View};
use super::workload;
use crate::client::Member;

/// How often every member is polled: the ceiling of one status call per member per
/// second.
pub const PERIOD: Duration = Duration::from_millis(PERIOD_MS);
/// [`PERIOD`] in milliseconds.
const PERIOD_MS: u64 = 1000;
/// Samples kept for the timeline strip: five minutes at one a second.
const HISTORY: usize = 300;
/// Log entries shown per member.
const TAIL: usize = 6;

/// A diagram's JSON, when it was built and for which window (ms).
type CachedTrace = Option<(Instant, u64, Arc<String>)>;

/// The poller's shared state: the latest aggregated JSON, and the last message diagram.
#[derive(Clone)]
pub struct Hub {
    latest: Arc<Mutex<Arc<String>>>,
    members: Arc<Vec<Member>>,
    trace: Arc<tokio::sync::Mutex<CachedTrace>>,
}

impl Hub {
    /// Starts polling `members` (on the current tokio runtime) and returns the hub the server
    /// reads. `title` names what is watched.
    pub fn spawn(title: String, members: Vec<Member>) -> Hub {
        let hub = Hub {
            latest: Arc::new(Mutex::new(Arc::new("{}".to_string()))),
            members: Arc::new(members),
            trace: Arc::default(),
        };
        let writer = hub.clone();
        tokio::spawn(async move { writer.poll_forever(title).await });
        hub
    }

    /// The message diagram of the last `window_ms` as JSON ([`super::lamport::Diagram`]);
    /// rebuilt at most once a [`PERIOD`] whatever the number of pages asking.
    pub async fn trace(&self, window_ms: u64) -> Arc<String> {
        let mut cache = self.trace.lock().await;
        if let Some((at, window, json)) = cache.as_ref() {
            if *window == window_ms && at.elapsed() < PERIOD {
                return json.clone();
            }
        }
        let diagram = super::lamport::collect(&self.members, window_ms).await;
        let json = Arc::new(serde_json::to_string(&diagram).unwrap_or_else(|e| {
            serde_json::json!({"error": format!("could not serialise the diagram: {e}")})
                .to_string()
        }));
        *cache = Some((Instant::now(), window_ms, json.clone()));
        json
    }

    /// The last aggregated JSON (`{}` before the first poll ends).
    pub fn latest(&self) -> Arc<String> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn poll_forever(self, title: String) {
        let members = self.members.clone();
        let mut views: Vec<MemberView> = members
            .iter()
            .map(|m| MemberView::new(m.label().to_string()))
            .collect();
        let mut ops = workload::Tracker::default();
        let mut history: VecDeque<Sample> = VecDeque::with_capacity(HISTORY);
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            poll(&members, &mut views).await;
            let now = now_ms();
            if history.len() == HISTORY {
                history.pop_front();
            }
            let mut sample = model::sample(now, &views);
            sample.ops = ops.sample(now, client_ops(&views)).map(|mut o| {
                let sent = views.iter().filter(|v| v.up).map(|v| &v.sent_per_second);
                o.messages_per_operation = workload::per_operation(o.ops_per_second, sent);
                o
            });
            history.push_back(sample);
            let links = model::links(&views);
            let view = View {
                title: &title,
                now,
                members: &views,
                links: &links,
                history: history.iter().collect(),
            };
            match serde_json::to_string(&view) {
                Ok(json) => {
                    *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(json)
                }
                // Plain data always serialises; should it not, the pages keep the last view.
                Err(e) => eprintln!("caplab ui: could not serialise the view: {e}"),
            }
        }
    }
}

/// The client-operation counts of the members that answered this poll, by index.
fn client_ops(views: &[MemberView]) -> BTreeMap<usize, ClientOps> {
    views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.up || v.paused)
        .filter_map(|(i, v)| Some((i, v.status.as_ref()?.client_ops.clone()?)))
        .collect()
}

/// Messages per second this member sent to each peer since `since` (its clock, ms), by
/// kind, from its own send records (dropped ones included: they were sent, a fault ate them).
fn sent_per_second(trace: &TraceView, since: u64) -> BTreeMap<NodeId, BTreeMap<String, f64>> {
    let seconds = (trace.clock_ms.saturating_sub(since).max(1)) as f64 / 1000.0;
    let mut rates: BTreeMap<NodeId, BTreeMap<String, f64>> = BTreeMap::new();
    for e in &trace.events {
        if e.from == trace.id && e.fate != Fate::Received {
            let per_kind = rates.entry(e.to).or_default();
            *per_kind.entry(e.kind.clone()).or_default() += 1.0 / seconds;
        }
    }
    rates
}

/// Asks every member at once (each bounded by the member's timeout, below [`PERIOD`]) and
/// folds the answers into `views`.
async fn poll(members: &[Member], views: &mut [MemberView]) {
    let mut calls = JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        let member = member.clone();
        let since = views.get(i).and_then(|v| v.trace_since);
        calls.spawn(async move {
            let asked = now_ms();
            let result = member.status().await;
            let answered = now_ms();
            let (trace, log) = match &result {
                Ok(status) => {
                    let since = since.unwrap_or(status.clock_ms.saturating_sub(PERIOD_MS));
                    let (trace, log) = tokio::join!(member.trace(since), member.log_tail(TAIL));
                    (trace.ok().map(|t| (since, t)), log.ok())
                }
                Err(_) => (None, None),
            };
            (i, asked, answered, result, trace, log)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let Ok((i, asked, answered, result, trace, log)) = joined else {
            continue;
        };
        let Some(view) = views.get_mut(i) else {
            continue;
        };
        match result {
            Ok(status) => {
                // The member read its clock somewhere in the round trip: compare with its middle.
                let observer = (asked + answered) / 2;
                view.clock_offset_ms = status.clock_ms as i64 - observer as i64;
                view.id = Some(status.id);
                // A paused member answers but takes part in nothing: drawn apart, links cut.
                view.up = !status.paused;
                view.paused = status.paused;
                view.error = None;
                if let Some((since, trace)) = trace {
                    view.sent_per_second = sent_per_second(&trace, since);
                    view.trace_since = Some(trace.clock_ms + 1);
                }
                // An older member image has no log route: the page shows no tail.
                view.log = log.map(|l| l.entries).unwrap_or_default();
                view.status = Some(status);
            }
            Err(e) => {
                view.up = false;
                view.paused = false;
                view.sent_per_second.clear();
                view.error = Some(e.to_string());
            }
        }
    }
}
