//! The change log of a primary–secondary member, compacted behind a snapshot.
//!
//! Entries every member has acknowledged (the *stable* prefix) are identical everywhere and
//! can never be discarded by a failover, so they are folded into a snapshot of the registers
//! once enough of them pile up: memory and disk then hold only the recent tail. A member that
//! needs entries from before the snapshot (one that joined empty) is sent the snapshot.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::entries::{LogEntry, Snapshot};
use crate::register::Registers;

/// The registers' history since the snapshot, in memory (the store holds it durably).
pub struct ChangeLog {
    base: Snapshot,
    /// Entries `base.seq + 1 ..= last_seq()`, in order.
    entries: VecDeque<LogEntry>,
    /// When each entry was appended here (for lag in milliseconds).
    appended_at: VecDeque<Instant>,
    /// The registers after every entry.
    registers: Registers,
}

impl ChangeLog {
    pub fn new(base: Snapshot, entries: Vec<LogEntry>) -> Self {
        let now = Instant::now();
        let mut log = Self {
            registers: Registers::default(),
            appended_at: entries.iter().map(|_| now).collect(),
            entries: entries.into(),
            base,
        };
        log.replay();
        log
    }

    fn replay(&mut self) {
        self.registers = self.base.registers.clone();
        for entry in &self.entries {
            self.registers.apply(&entry.command);
        }
    }

    pub fn base(&self) -> &Snapshot {
        &self.base
    }

    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    pub fn last_seq(&self) -> u64 {
        self.base.seq + self.entries.len() as u64
    }

    fn offset(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base.seq + 1)
            .and_then(|o| usize::try_from(o).ok())
    }

    /// The epoch of entry `seq` (0 for seq 0); `None` beyond the log or inside the snapshot.
    pub fn epoch_at(&self, seq: u64) -> Option<u64> {
        if seq == self.base.seq {
            return Some(if seq == 0 { 0 } else { self.base.epoch });
        }
        self.offset(seq)
            .and_then(|o| self.entries.get(o))
            .map(|e| e.epoch)
    }

    /// The first sequence number after the snapshot whose entry has an epoch of at least
    /// `epoch` (`last_seq() + 1` when there is none). Epochs never decrease along the log, so
    /// for an epoch the tail holds this is where that epoch starts here.
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        let before = self.entries.partition_point(|e| e.epoch < epoch);
        self.base.seq + 1 + before as u64
    }

    /// The sequence number of the last entry of `epoch`, when the tail (or the snapshot's
    /// edge) shows it; `None` when this log holds no entry of that epoch or it was compacted
    /// away before the edge.
    pub fn epoch_end(&self, epoch: u64) -> Option<u64> {
        let through = self.entries.partition_point(|e| e.epoch <= epoch);
        let last = self.base.seq + through as u64;
        (self.epoch_at(last) == Some(epoch) && last > 0).then_some(last)
    }

    /// Up to `max` entries from `first` on; `None` when `first` is inside the snapshot.
    pub fn entries_from(&self, first: u64, max: usize) -> Option<Vec<LogEntry>> {
        let start = self.offset(first)?.min(self.entries.len());
        let end = start.saturating_add(max).min(self.entries.len());
        Some(self.entries.range(start..end).cloned().collect())
    }

    /// When entry `seq` was appended here, if it is in the tail.
    pub fn appended_at(&self, seq: u64) -> Option<Instant> {
        self.offset(seq)
            .and_then(|o| self.appended_at.get(o))
            .copied()
    }

    /// Appends one entry (already applied by the caller through [`Self::apply`]).
    pub fn push(&mut self, entry: LogEntry) {
        self.entries.push_back(entry);
        self.appended_at.push_back(Instant::now());
    }

    /// Applies and appends one entry.
    pub fn append(&mut self, entry: LogEntry) {
        self.registers.apply(&entry.command);
        self.push(entry);
    }

    /// The registers, to apply a command before logging what it amounted to.
    pub fn registers_mut(&mut self) -> &mut Registers {
        &mut self.registers
    }

    /// Drops every entry after `seq` (never inside the snapshot) and rebuilds the registers.
    pub fn truncate_after(&mut self, seq: u64) {
        let keep = self.offset(seq + 1).unwrap_or(0);
        self.entries.truncate(keep);
        self.appended_at.truncate(keep);
        self.replay();
    }

    /// Folds every entry up to `seq` into the snapshot; returns the new snapshot, or `None`
    /// when `seq` is not in the tail.
    pub fn compact_to(&mut self, seq: u64) -> Option<Snapshot> {
        let fold = self.offset(seq)? + 1;
        if fold > self.entries.len() {
            return None;
        }
        let epoch = self.entries.get(fold - 1)?.epoch;
        let mut previous = self.base.epoch;
        for (entry, seq) in self.entries.drain(..fold).zip(self.base.seq + 1..) {
            self.base.registers.apply(&entry.command);
            if entry.epoch != previous {
                self.base.epoch_starts.insert(seq, entry.epoch);
                previous = entry.epoch;
            }
        }
        self.appended_at.drain(..fold);
        self.base.seq = seq;
        self.base.epoch = epoch;
        Some(self.base.clone())
    }

    /// The last sequence number up to which this log agrees with `snapshot` (the same epoch
    /// at the same position means the same entries up to there); `None` where the snapshot's
    /// history is unknown. Entries after it are the ones installing `snapshot` discards.
    pub fn agreement_with(&self, snapshot: &Snapshot) -> Option<u64> {
        let top = self.last_seq().min(snapshot.seq);
        for seq in (self.base.seq + 1..=top).rev() {
            let theirs = snapshot.epoch_at(seq)?;
            if self.epoch_at(seq) == Some(theirs) {
                return Some(seq);
            }
        }
        // Our own snapshot holds stable entries only: every member has them.
        Some(self.base.seq.min(top))
    }

    /// Replaces everything with `snapshot` (a member that joined empty, or fell behind it).
    pub fn install(&mut self, snapshot: Snapshot) {
        self.base = snapshot;
        self.entries.clear();
        self.appended_at.clear();
        self.replay();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::types::Command;

    fn entry(epoch: u64, key: &str, value: i64) -> LogEntry {
        LogEntry {
            epoch,
            command: Command::Write {
                key: key.into(),
                value,
            },
        }
    }

    #[test]
    fn compaction_keeps_the_state_and_the_epochs_at_the_edge() {
        let mut log = ChangeLog::new(Snapshot::default(), Vec::new());
        for (i, epoch) in [1, 1, 2, 2, 3].into_iter().enumerate() {
            log.append(entry(epoch, "k", i as i64 + 1));
        }
        log.append(entry(3, "other", 9));
        assert_eq!(log.last_seq(), 6);
        let snapshot = log.compact_to(4).expect("4 is in the tail");
        assert_eq!((snapshot.seq, snapshot.epoch), (4, 2));
        assert_eq!(snapshot.registers.read("k"), 4);
        assert_eq!(log.registers().read("k"), 5);
        assert_eq!(log.epoch_at(4), Some(2));
        assert_eq!(log.epoch_at(3), None, "inside the snapshot");
        assert_eq!(log.epoch_at(5), Some(3));
        assert_eq!(log.entries_from(5, 10).map(|e| e.len()), Some(2));
        assert_eq!(log.entries_from(4, 10), None);
        assert_eq!(log.compact_to(2), None, "already compacted");
        assert_eq!(log.compact_to(7), None, "beyond the log");

        log.truncate_after(5);
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.registers().read("other"), 0);
        assert_eq!(log.registers().read("k"), 5);

        let reopened = ChangeLog::new(snapshot, vec![entry(3, "k", 5)]);
        assert_eq!(reopened.registers(), log.registers());
        assert_eq!(reopened.last_seq(), 5);
    }

    #[test]
    fn epochs_start_and_end_where_their_entries_do() {
        let base = Snapshot {
            seq: 10,
            epoch: 2,
            ..Snapshot::default()
        };
        // Sequence numbers 11..=16 with epochs 2, 2, 4, 4, 4, 7.
        let tail = [2, 2, 4, 4, 4, 7].map(|epoch| entry(epoch, "k", 1));
        let log = ChangeLog::new(base, tail.to_vec());
        assert_eq!(
            log.epoch_start(2),
            11,
            "the epoch began inside the snapshot"
        );
        assert_eq!(log.epoch_start(4), 13);
        assert_eq!(log.epoch_start(5), 16, "the next epoch held");
        assert_eq!(log.epoch_start(8), 17, "past the log");
        assert_eq!(log.epoch_end(2), Some(12));
        assert_eq!(log.epoch_end(4), Some(15));
        assert_eq!(log.epoch_end(7), Some(16));
        assert_eq!(log.epoch_end(3), None, "an epoch this log never had");
        assert_eq!(log.epoch_end(1), None, "compacted away");

        let only_snapshot = ChangeLog::new(log.base().clone(), Vec::new());
        assert_eq!(only_snapshot.epoch_end(2), Some(10), "the snapshot's edge");
        let empty = ChangeLog::new(Snapshot::default(), Vec::new());
        assert_eq!((empty.epoch_start(1), empty.epoch_end(0)), (1, None));
    }

    #[test]
    fn a_snapshot_remembers_where_its_epochs_began() {
        let epochs = [1, 1, 2, 2, 2, 5, 5];
        let mut log = ChangeLog::new(Snapshot::default(), Vec::new());
        for epoch in epochs {
            log.append(entry(epoch, "k", 1));
        }
        log.compact_to(4).expect("4 is in the tail");
        let snapshot = log.compact_to(6).expect("6 is in the tail");
        assert_eq!(snapshot.epoch_starts, [(1, 1), (3, 2), (6, 5)].into());
        let folded: Vec<_> = (0..=7).map(|seq| snapshot.epoch_at(seq)).collect();
        let expected = [0, 1, 1, 2, 2, 2, 5].map(Some).into_iter().chain([None]);
        assert_eq!(folded, expected.collect::<Vec<_>>());

        // A deposed primary holding 1..=5 as epochs 1, 1, 2, 3, 3: it agrees up to 3.
        let deposed = ChangeLog::new(
            Snapshot::default(),
            [1, 1, 2, 3, 3].map(|epoch| entry(epoch, "k", 1)).to_vec(),
        );
        assert_eq!(deposed.agreement_with(&snapshot), Some(3));
        let old = Snapshot {
            epoch_starts: BTreeMap::new(),
            ..snapshot.clone()
        };
        assert_eq!(deposed.agreement_with(&old), None, "history unknown");
        let behind = ChangeLog::new(Snapshot::default(), vec![entry(1, "k", 1)]);
        assert_eq!(behind.agreement_with(&snapshot), Some(1));
    }

    #[test]
    fn installing_a_snapshot_replaces_the_log() {
        let mut log = ChangeLog::new(Snapshot::default(), vec![entry(1, "a", 1)]);
        let mut registers = Registers::default();
        registers.apply(&entry(4, "b", 2).command);
        log.install(Snapshot {
            seq: 100,
            epoch: 4,
            epoch_starts: BTreeMap::new(),
            registers,
        });
        assert_eq!(log.last_seq(), 100);
        assert_eq!(log.epoch_at(100), Some(4));
        assert_eq!(log.registers().read("a"), 0);
        assert_eq!(log.registers().read("b"), 2);
        assert_eq!(log.entries_from(101, 5).map(|e| e.len()), Some(0));
    }
}
