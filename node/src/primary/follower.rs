//! A secondary's side: applying the primary's replication messages strictly in order,
//! dropping (and counting) entries the primary never had, installing its snapshot.

use super::entries::{LogEntry, Snapshot};
use super::log::ChangeLog;
use super::store::{Change, Role};
use super::wire::{ReplicateRequest, ReplicateResponse};
use super::{PrimaryEngine, PrimaryResult};

impl PrimaryEngine {
    /// Handles a replication message from a primary (as a secondary).
    pub async fn replicate(&self, request: ReplicateRequest) -> PrimaryResult<ReplicateResponse> {
        let mut state = self.state.lock().await;
        if request.epoch < state.meta.epoch {
            return Ok(ReplicateResponse {
                ok: false,
                epoch: state.meta.epoch,
                last_seq: state.last_seq(),
                conflict_epoch: None,
                conflict_seq: None,
            });
        }
        self.peers.addresses.merge(request.addresses.clone());
        let mut meta = state.meta.clone();
        meta.members = request.members.clone();
        meta.addresses = self.peers.addresses.all();
        if request.epoch > meta.epoch
            || meta.role != Role::Secondary
            || meta.primary != Some(request.primary)
        {
            if meta.role == Role::Primary {
                tracing::warn!(
                    epoch = request.epoch,
                    primary = request.primary,
                    "deposed by a newer primary"
                );
            }
            meta.epoch = request.epoch;
            meta.role = Role::Secondary;
            meta.primary = Some(request.primary);
        }
        let base = state.log.base().clone();
        let (prev_seq, prev_epoch, entries) = match &request.snapshot {
            // Entries up to our own snapshot are stable, hence the ones we hold.
            Some(snapshot) if snapshot.seq <= base.seq => {
                after_snapshot(&base, request.prev_seq, &request.entries)
            }
            Some(snapshot) if state.log.epoch_at(snapshot.seq) != Some(snapshot.epoch) => {
                // Without the snapshot's epoch history (an older primary), count what
                // lies beyond it.
                let kept = state.log.agreement_with(snapshot).unwrap_or(snapshot.seq);
                let replaced = state.last_seq().saturating_sub(kept);
                if replaced > 0 {
                    meta.discarded += replaced;
                    tracing::warn!(replaced, "entries replaced by the primary's snapshot");
                }
                let change = Change {
                    truncate_after: Some(0),
                    snapshot: Some(snapshot.clone()),
                    meta: Some(meta.clone()),
                    ..Change::default()
                };
                self.commit(change).await?;
                state.meta = meta.clone();
                state.log.install(snapshot.clone());
                tracing::info!(seq = snapshot.seq, "installed the primary's snapshot");
                (snapshot.seq, Some(snapshot.epoch), &request.entries[..])
            }
            _ => after_snapshot(&base, request.prev_seq, &request.entries),
        };
        let prev_epoch = prev_epoch.unwrap_or(request.prev_epoch);
        if prev_seq > state.last_seq() || state.log.epoch_at(prev_seq) != Some(prev_epoch) {
            self.persist_meta(&mut state, meta).await?;
            return Ok(conflict(&state.log, prev_seq, state.meta.epoch));
        }
        // Entries held with the same epoch at the same position are identical: skip them. At
        // the first conflict our tail goes; so does anything beyond the primary's last entry.
        let held = state.last_seq();
        let mut matched = prev_seq;
        let mut skip = 0;
        while skip < entries.len()
            && matched < held
            && state.log.epoch_at(matched + 1) == Some(entries[skip].epoch)
        {
            matched += 1;
            skip += 1;
        }
        let keep = if skip < entries.len() {
            matched
        } else {
            request.last_seq.max(matched)
        };
        let truncate_after = (held > keep).then_some(keep);
        if let Some(after) = truncate_after {
            meta.discarded += held - after;
            tracing::warn!(
                discarded = held - after,
                epoch = request.epoch,
                "discarding entries the new primary never had"
            );
        }
        let append: Vec<(u64, LogEntry)> = entries[skip..]
            .iter()
            .cloned()
            .zip(matched + 1..)
            .map(|(e, seq)| (seq, e))
            .collect();
        let change = Change {
            truncate_after,
            append: append.clone(),
            meta: (meta != state.meta).then(|| meta.clone()),
            ..Change::default()
        };
        self.commit(change).await?;
        state.meta = meta;
        if let Some(after) = truncate_after {
            state.log.truncate_after(after);
        }
        for (_, entry) in append {
            state.log.append(entry);
        }
        self.stop_replicators();
        let stable = request.stable_seq.min(state.last_seq());
        self.compact(&mut state, stable).await;
        Ok(ReplicateResponse {
            ok: true,
            epoch: state.meta.epoch,
            last_seq: state.last_seq(),
            conflict_epoch: None,
            conflict_seq: None,
        })
    }
}

/// A secondary's refusal of entries after `prev_seq`, which it lacks or holds with another
/// epoch: says where its log stops matching, for [`resume_at`].
pub(super) fn conflict(log: &ChangeLog, prev_seq: u64, epoch: u64) -> ReplicateResponse {
    let conflict_epoch = log.epoch_at(prev_seq);
    let conflict_seq = match conflict_epoch {
        Some(held) => log.epoch_start(held).min(prev_seq),
        None => log.last_seq() + 1,
    };
    ReplicateResponse {
        ok: false,
        epoch,
        last_seq: prev_seq.saturating_sub(1).min(log.last_seq()),
        conflict_epoch,
        conflict_seq: Some(conflict_seq),
    }
}

/// The part of a replication message after our own snapshot (entries up to it are stable,
/// so the ones we hold): the previous sequence number, its epoch when the snapshot decided
/// it, and the entries left.
fn after_snapshot<'a>(
    base: &Snapshot,
    prev_seq: u64,
    entries: &'a [LogEntry],
) -> (u64, Option<u64>, &'a [LogEntry]) {
    if prev_seq >= base.seq {
        return (prev_seq, None, entries);
    }
    let inside = usize::try_from(base.seq - prev_seq).unwrap_or(usize::MAX);
    let rest = entries.get(inside..).unwrap_or_default();
    (base.seq, Some(base.epoch), rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn entries(epochs: &[u64]) -> Vec<LogEntry> {
        epochs
            .iter()
            .map(|&epoch| LogEntry {
                epoch,
                command: Command::Write {
                    key: "k".into(),
                    value: 1,
                },
            })
            .collect()
    }

    #[test]
    fn entries_inside_our_snapshot_are_skipped() {
        let base = Snapshot {
            seq: 10,
            epoch: 2,
            ..Snapshot::default()
        };
        let sent = entries(&[2, 2, 2, 3]);
        // prev 8: entries 9 and 10 are ours already; 11 and 12 remain.
        let (prev, epoch, rest) = after_snapshot(&base, 8, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, Some(2), 2));
        // Everything sent is inside the snapshot.
        let (prev, epoch, rest) = after_snapshot(&base, 2, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, Some(2), 0));
        // At or past the snapshot nothing changes; the sender's epoch is checked as usual.
        let (prev, epoch, rest) = after_snapshot(&base, 10, &sent);
        assert_eq!((prev, epoch, rest.len()), (10, None, 4));
    }
}
