//! The messages of a window as a space-time diagram's data: each member's trace
//! (`GET /v1/trace`) fetched, and the two ends of every message joined by (sender, number)
//! into one [`Message`] with its send time on the sender's clock and its receive time on the
//! receiver's. The page draws it (`assets/ui/lamport.js`) for `caplab trace` and the UI's
//! messages tab.

use std::collections::BTreeMap;

use caplab_api::trace::{Fate, MessageEvent, TraceView};
use caplab_api::NodeId;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::clock::now_ms;
use crate::client::Member;

/// What became of a message, from both ends' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Received, without an injected delay.
    Delivered,
    /// Received after an injected delay (at either end).
    Delayed,
    /// Dropped by a fault at the sender: it never left.
    DroppedAtSender,
    /// Dropped by a fault at the receiver.
    DroppedAtReceiver,
    /// Sent, and no receipt recorded (receiver down, its trace unread, or still in flight).
    Unreceived,
}

/// One message, both ends joined. Times are ms since the Unix epoch on the named clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexes: Option<(u64, u64)>,
    /// On the sender's clock.
    pub sent_ms: Option<u64>,
    /// The sender's injected skew then (subtract it for the observer's clock).
    pub sent_skew_ms: i64,
    /// On the receiver's clock (when received or dropped there).
    pub received_ms: Option<u64>,
    pub received_skew_ms: i64,
    pub outcome: Outcome,
    /// An injected delay at the sender held it (the receiver's record may not say so).
    #[serde(skip)]
    delayed_at_sender: bool,
}

/// The diagram's data: the members (columns) and the messages of the window (`caplab trace
/// --json` writes it; `caplab report --trace` reads it back).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagram {
    pub members: Vec<NodeId>,
    /// The observer's clock at the window's end, and the window's length (ms).
    pub now_ms: u64,
    pub window_ms: u64,
    pub messages: Vec<Message>,
    /// Members whose trace could not be read, with why.
    pub unread: Vec<String>,
}

/// Reads every member's trace and joins the messages of the last `window_ms`.
pub async fn collect(members: &[Member], window_ms: u64) -> Diagram {
    let now = now_ms();
    let mut calls = JoinSet::new();
    for member in members {
        let member = member.clone();
        // Every clock's `since` is skewed differently: read the whole ring, cut by true time.
        calls.spawn(async move { member.trace(0).await });
    }
    let (mut views, mut unread) = (Vec::new(), Vec::new());
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok(Ok(view)) => views.push(view),
            Ok(Err(why)) => unread.push(why),
            Err(e) => unread.push(e.to_string()),
        }
    }
    unread.sort();
    diagram(&views, now, window_ms, unread)
}

/// Joins the events of `views` into the messages sent (or received) within `window_ms`
/// before `now` on the observer's clock (event time minus its skew).
pub fn diagram(views: &[TraceView], now: u64, window_ms: u64, unread: Vec<String>) -> Diagram {
    let mut members: Vec<NodeId> = views.iter().map(|v| v.id).collect();
    let mut joined: BTreeMap<(NodeId, u64), Message> = BTreeMap::new();
    let start = now.saturating_sub(window_ms) as i64;
    for e in views.iter().flat_map(|v| v.events.iter()) {
        if true_time(e) < start || e.number == 0 {
            continue;
        }
        members.extend([e.from, e.to]);
        let m = joined.entry((e.from, e.number)).or_insert_with(|| empty(e));
        fold(m, e);
    }
    members.sort_unstable();
    members.dedup();
    Diagram {
        members,
        now_ms: now,
        window_ms,
        messages: joined.into_values().collect(),
        unread,
    }
}

/// When the event happened on the observer's (unskewed) clock.
fn true_time(e: &MessageEvent) -> i64 {
    // The receiver's events carry a receive time; the sender's only a send time.
    let at = e.received_ms.or(e.sent_ms);
    at.unwrap_or(0) as i64 - e.skew_ms
}

fn empty(e: &MessageEvent) -> Message {
    Message {
        from: e.from,
        to: e.to,
        kind: e.kind.clone(),
        term: None,
        indexes: None,
        sent_ms: e.sent_ms,
        sent_skew_ms: 0,
        received_ms: None,
        received_skew_ms: 0,
        outcome: Outcome::Unreceived,
        delayed_at_sender: false,
    }
}

/// Adds one end's event to its message.
fn fold(m: &mut Message, e: &MessageEvent) {
    // Only the receiver's events carry a receive time.
    if e.received_ms.is_none() {
        m.sent_ms = e.sent_ms;
        m.sent_skew_ms = e.skew_ms;
        m.term = e.term;
        m.indexes = e.indexes;
        m.delayed_at_sender = e.fate == Fate::Delayed;
        m.outcome = match (e.fate, m.outcome) {
            (Fate::Dropped, _) => Outcome::DroppedAtSender,
            (Fate::Delayed, Outcome::Delivered) => Outcome::Delayed,
            (_, kept) => kept,
        };
        return;
    }
    m.sent_ms = m.sent_ms.or(e.sent_ms);
    m.received_ms = e.received_ms;
    m.received_skew_ms = e.skew_ms;
    m.outcome = match e.fate {
        Fate::Dropped => Outcome::DroppedAtReceiver,
        Fate::Delayed => Outcome::Delayed,
        _ if m.delayed_at_sender => Outcome::Delayed,
        _ => Outcome::Delivered,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fate: Fate, sent: u64, received: Option<u64>, skew: i64) -> MessageEvent {
        MessageEvent {
            from: 1,
            to: 2,
            number: 7,
            kind: "append".into(),
            term: (fate == Fate::Sent).then_some(3),
            indexes: None,
            sent_ms: Some(sent),
            received_ms: received,
            fate,
            skew_ms: skew,
        }
    }

    fn view(id: NodeId, events: Vec<MessageEvent>) -> TraceView {
        TraceView {
            id,
            clock_ms: 0,
            capacity: 8,
            recorded: events.len() as u64,
            events,
        }
    }

    #[test]
    fn both_ends_join_and_a_skewed_receiver_receives_before_the_send() {
        // Member 2's clock is 3 s behind: by the clocks, the message arrives before it left.
        let sender = view(1, vec![event(Fate::Sent, 10_000, None, 0)]);
        let receiver = view(2, vec![event(Fate::Received, 10_000, Some(7_005), -3_000)]);
        let d = diagram(&[sender, receiver], 12_000, 5_000, Vec::new());
        assert_eq!(d.members, [1, 2]);
        let [m] = d.messages.as_slice() else {
            panic!("{:?}", d.messages)
        };
        assert_eq!((m.outcome, m.term), (Outcome::Delivered, Some(3)));
        assert!(m.received_ms < m.sent_ms);
        assert_eq!(
            m.received_ms.map(|r| r as i64 - m.received_skew_ms),
            Some(10_005)
        );
    }

    #[test]
    fn drops_and_the_window_are_kept_apart() {
        let dropped = view(1, vec![event(Fate::Dropped, 10_000, None, 0)]);
        let d = diagram(std::slice::from_ref(&dropped), 12_000, 5_000, Vec::new());
        assert_eq!(d.messages[0].outcome, Outcome::DroppedAtSender);
        assert!(diagram(&[dropped], 20_000, 5_000, Vec::new())
            .messages
            .is_empty());
    }
}
