//! A bounded record of recent peer messages (served at `GET /v1/trace`, wire type
//! `caplab_api::trace`): the sending side records in `network.rs`, the receiving side in the
//! peer API's fault layer. A fixed-capacity ring of plain `Copy` records, so its memory is
//! `CAPACITY * size_of::<Record>()` whatever the traffic (measured in the tests below).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use caplab_api::paths;
use caplab_api::trace::{Fate, MessageEvent, TraceView};

use crate::faults::Faults;
use crate::types::NodeId;

/// Events kept: a few seconds of a busy three-member Raft cluster's traffic (heartbeats and
/// appends), enough for a diagram of the last window.
pub const CAPACITY: usize = 4096;

/// What a message carries that a diagram labels it with (known to the sender only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Note {
    pub term: Option<u64>,
    pub indexes: Option<(u64, u64)>,
}

/// One end of one message, as kept in the ring (no heap: `kind` is a static name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub from: NodeId,
    pub to: NodeId,
    pub number: u64,
    pub kind: &'static str,
    pub note: Note,
    pub sent_ms: Option<u64>,
    pub received_ms: Option<u64>,
    pub fate: Fate,
    pub skew_ms: i64,
}

impl Record {
    /// The time it was recorded at, on the recording member's clock.
    fn at_ms(&self) -> u64 {
        match self.fate {
            Fate::Sent => self.sent_ms.unwrap_or(0),
            _ => self.received_ms.unwrap_or(0),
        }
    }

    fn event(&self) -> MessageEvent {
        MessageEvent {
            from: self.from,
            to: self.to,
            number: self.number,
            kind: self.kind.to_string(),
            term: self.note.term,
            indexes: self.note.indexes,
            sent_ms: self.sent_ms,
            received_ms: self.received_ms,
            fate: self.fate,
            skew_ms: self.skew_ms,
        }
    }
}

/// The ring, and the numbering of this member's outgoing messages.
pub struct Trace {
    ring: Mutex<VecDeque<Record>>,
    next_number: AtomicU64,
    recorded: AtomicU64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            next_number: AtomicU64::new(1),
            recorded: AtomicU64::new(0),
        }
    }
}

impl Trace {
    /// The number of the next message this member sends.
    pub fn number(&self) -> u64 {
        self.next_number.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps `record`, overwriting the oldest when full.
    pub fn record(&self, record: Record) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(record);
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// The events recorded at or after `since` (own clock, ms), oldest first.
    pub fn view(&self, id: NodeId, clock_ms: u64, since: u64) -> TraceView {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        TraceView {
            id,
            clock_ms,
            capacity: CAPACITY,
            recorded: self.recorded.load(Ordering::Relaxed),
            events: ring
                .iter()
                .filter(|r| r.at_ms() >= since)
                .map(Record::event)
                .collect(),
        }
    }

    /// Bytes the ring holds at most (its records are plain data).
    pub fn footprint_bytes(&self) -> usize {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.capacity() * std::mem::size_of::<Record>()
    }
}

/// A message about to leave: its number and send time, for its headers and its record.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    pub number: u64,
    pub sent_ms: u64,
    record: Record,
}

impl Trace {
    /// Numbers and timestamps a message from `from` to `to` on `path` (nothing recorded yet:
    /// [`Trace::sent`] records it with its fate).
    pub fn outgoing(
        &self,
        faults: &Faults,
        from: NodeId,
        to: NodeId,
        path: &str,
        note: Note,
    ) -> Outgoing {
        let number = self.number();
        let (sent_ms, skew_ms) = clock(faults);
        Outgoing {
            number,
            sent_ms,
            record: Record {
                from,
                to,
                number,
                kind: kind_of(path),
                note,
                sent_ms: Some(sent_ms),
                received_ms: None,
                fate: Fate::Sent,
                skew_ms,
            },
        }
    }

    /// Records `message` as sent (delayed when an injected delay held it) or dropped here.
    pub fn sent(&self, faults: &Faults, message: Outgoing, dropped: bool) {
        let fate = fate(faults, message.record.to, dropped);
        self.record(Record {
            fate: if fate == Fate::Received {
                Fate::Sent
            } else {
                fate
            },
            ..message.record
        });
    }

    /// Records a message received on `path` (after the fault layer's verdict).
    pub fn received(&self, faults: &Faults, heard: Heard, path: &str, dropped: bool) {
        let (now, skew_ms) = clock(faults);
        self.record(Record {
            from: heard.from,
            to: heard.to,
            number: heard.number.unwrap_or(0),
            kind: kind_of(path),
            note: Note::default(),
            sent_ms: heard.sent_ms,
            received_ms: Some(now),
            fate: fate(faults, heard.from, dropped),
            skew_ms,
        });
    }
}

/// A received message as its headers name it (number and send time `None` when absent).
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    pub from: NodeId,
    pub to: NodeId,
    pub number: Option<u64>,
    pub sent_ms: Option<u64>,
}

/// The member's clock (ms, skew included) and its skew.
fn clock(faults: &Faults) -> (u64, i64) {
    (millis(faults.now()), faults.current().clock_skew_ms)
}

/// Dropped, delayed (an injected delay names `peer`) or received.
fn fate(faults: &Faults, peer: NodeId, dropped: bool) -> Fate {
    if dropped {
        Fate::Dropped
    } else if faults.current().delay.is_some_and(|d| d.applies_to(peer)) {
        Fate::Delayed
    } else {
        Fate::Received
    }
}

/// The kind of a message by its route (see `caplab_api::trace::MessageEvent::kind`).
pub fn kind_of(path: &str) -> &'static str {
    const KINDS: [(&str, &str); 17] = [
        (paths::RAFT_APPEND, "append"),
        (paths::RAFT_VOTE, "vote"),
        (paths::RAFT_PRE_VOTE, "pre-vote"),
        (paths::RAFT_LEADER_SYNCING, "leader-syncing"),
        (paths::RAFT_SNAPSHOT, "snapshot"),
        (paths::FORWARD_WRITE, "forward-write"),
        (paths::FORWARD_READ, "forward-read"),
        (paths::REPLICATE, "replicate"),
        (paths::EPOCH, "epoch"),
        (paths::QUORUM_STORE, "quorum-store"),
        (paths::QUORUM_FETCH, "quorum-fetch"),
        (paths::QUORUM_SYNC, "quorum-sync"),
        (paths::TWOPC_PREPARE, "2pc-prepare"),
        (paths::TWOPC_DECIDE, "2pc-decide"),
        (paths::TWOPC_MEMBERS, "2pc-members"),
        (paths::TWOPC_QUERY, "2pc-query"),
        (paths::HEALTHZ, "healthz"),
    ];
    KINDS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("other", |(_, kind)| kind)
}

/// Milliseconds since the Unix epoch of a (skewed) clock reading.
pub fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(number: u64, at: u64) -> Record {
        Record {
            from: 1,
            to: 2,
            number,
            kind: kind_of(paths::RAFT_APPEND),
            note: Note::default(),
            sent_ms: Some(at),
            received_ms: None,
            fate: Fate::Sent,
            skew_ms: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_its_memory_is_bounded() {
        let trace = Trace::default();
        let before = trace.footprint_bytes();
        for n in 0..(3 * CAPACITY as u64) {
            trace.record(sent(n, n));
        }
        let view = trace.view(1, 0, 0);
        assert_eq!(view.events.len(), CAPACITY);
        assert_eq!(view.recorded, 3 * CAPACITY as u64);
        assert_eq!(view.events[0].number, 2 * CAPACITY as u64);
        // Filling it three times over allocated nothing more: the footprint is fixed.
        assert_eq!(trace.footprint_bytes(), before);
        let bytes = trace.footprint_bytes();
        println!(
            "trace ring: {CAPACITY} records x {} B = {bytes} B",
            std::mem::size_of::<Record>()
        );
        assert!(bytes <= 1024 * 1024, "the ring takes {bytes} B, over 1 MiB");
    }

    #[test]
    fn since_filters_on_the_recording_clock() {
        let trace = Trace::default();
        for at in [10, 20, 30] {
            trace.record(sent(at, at));
        }
        let numbers: Vec<u64> = trace
            .view(1, 0, 20)
            .events
            .iter()
            .map(|e| e.number)
            .collect();
        assert_eq!(numbers, [20, 30]);
        assert_eq!(kind_of("/nowhere"), "other");
    }
}
