//! The primary's side of replication: one task per secondary streams the log (or the
//! snapshot the log was compacted into), records acknowledgements (which wake synchronous
//! writers) and resumes a diverging secondary past its whole conflicting epoch.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use caplab_api::paths;
use tokio::time::Instant;

use super::log::ChangeLog;
use super::store::Role;
use super::wire::{ReplicateRequest, ReplicateResponse};
use super::{PrimaryEngine, Progress, State, ROUND_DEADLINE_HEARTBEATS};
use crate::types::NodeId;

/// Entries per replication message.
const BATCH: usize = 512;

impl PrimaryEngine {
    pub(super) fn stop_replicators(&self) {
        let mut replicators = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in std::mem::take(&mut *replicators) {
            task.abort();
        }
    }

    /// One replication task per secondary; tasks of removed members stop.
    pub(super) fn start_replicators(self: &Arc<Self>, state: &mut State) {
        let secondaries: BTreeSet<NodeId> = state.secondaries(self.id).collect();
        let last = state.last_seq();
        state.progress.retain(|id, _| secondaries.contains(id));
        let mut replicators = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        replicators.retain(|id, task| {
            let keep = secondaries.contains(id) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for id in secondaries {
            state.progress.entry(id).or_insert(Progress {
                next_seq: last + 1,
                ..Default::default()
            });
            replicators
                .entry(id)
                .or_insert_with(|| tokio::spawn(self.clone().replicate_to(id)));
        }
    }

    /// Streams the log to one secondary, as a heartbeat when there is nothing new.
    pub(super) async fn replicate_to(self: Arc<Self>, target: NodeId) {
        let mut changed = self.changed.subscribe();
        loop {
            if self.peers.faults.is_paused() {
                self.peers
                    .faults
                    .wait_unpaused(Instant::now() + Duration::from_secs(3600))
                    .await;
            }
            let Some(request) = self.next_request(target).await else {
                return;
            };
            let sent = request.entries.len() as u64;
            let answer = self
                .peers
                .post(
                    target,
                    None,
                    paths::REPLICATE,
                    &request,
                    self.heartbeat * ROUND_DEADLINE_HEARTBEATS,
                )
                .await
                .ok()
                .filter(|r| r.status().is_success());
            let response = match answer {
                Some(r) => r.json::<ReplicateResponse>().await.ok(),
                None => None,
            };
            match response {
                Some(response) => {
                    if !self.record(target, &request, response).await {
                        return;
                    }
                }
                None => {
                    tokio::time::sleep(self.heartbeat / 2).await;
                    continue;
                }
            }
            if sent == 0 {
                let _ = tokio::time::timeout(self.heartbeat, changed.changed()).await;
            }
        }
    }

    pub(super) async fn next_request(&self, target: NodeId) -> Option<ReplicateRequest> {
        let state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return None;
        }
        let next = state
            .progress
            .get(&target)?
            .next_seq
            .clamp(1, state.last_seq() + 1);
        // Entries compacted away travel as the snapshot they were folded into.
        let base = state.log.base();
        let (prev_seq, snapshot) = if next <= base.seq {
            (base.seq, Some(base.clone()))
        } else {
            (next - 1, None)
        };
        Some(ReplicateRequest {
            epoch: state.meta.epoch,
            primary: self.id,
            prev_seq,
            prev_epoch: state.log.epoch_at(prev_seq).unwrap_or_default(),
            last_seq: state.last_seq(),
            entries: state
                .log
                .entries_from(prev_seq + 1, BATCH)
                .unwrap_or_default(),
            snapshot,
            stable_seq: state.stable_seq(self.id),
            members: state.meta.members.clone(),
            addresses: self.peers.addresses.all(),
        })
    }

    /// Applies a secondary's answer; returns false when this member must stop replicating.
    pub(super) async fn record(
        &self,
        target: NodeId,
        request: &ReplicateRequest,
        response: ReplicateResponse,
    ) -> bool {
        let mut state = self.state.lock().await;
        if response.epoch > state.meta.epoch {
            tracing::warn!(
                epoch = response.epoch,
                "a newer epoch exists: stepping down"
            );
            let mut meta = state.meta.clone();
            meta.epoch = response.epoch;
            meta.role = Role::Secondary;
            meta.primary = None;
            if let Err(e) = self.persist_meta(&mut state, meta).await {
                tracing::error!(error = %e, "cannot record stepping down");
            }
            return false;
        }
        let resume = resume_at(&state.log, request.prev_seq, &response);
        let Some(progress) = state.progress.get_mut(&target) else {
            return false;
        };
        progress.last_contact = Some(Instant::now());
        if response.ok {
            progress.match_seq = response
                .last_seq
                .min(request.prev_seq + request.entries.len() as u64);
            progress.next_seq = progress.match_seq + 1;
            let stable = state.stable_seq(self.id);
            self.compact(&mut state, stable).await;
        } else {
            progress.next_seq = resume;
        }
        drop(state);
        self.changed.send_modify(|v| *v += 1);
        true
    }
}

/// Where the primary resumes replicating to a secondary that refused entries after
/// `prev_seq`: past the secondary's whole conflicting epoch at once. When the primary holds
/// that epoch too, right after its last entry of it (the logs agree up to there); otherwise
/// at the first entry the secondary holds in it. Always below `prev_seq + 1`, so every
/// refusal makes progress; a result inside the primary's snapshot sends the snapshot. A
/// secondary without hints (an older version) gets the old one-entry back-off.
fn resume_at(log: &ChangeLog, prev_seq: u64, response: &ReplicateResponse) -> u64 {
    let hinted = match (response.conflict_epoch, response.conflict_seq) {
        (Some(epoch), Some(first)) => log.epoch_end(epoch).map_or(first, |end| end + 1),
        (None, Some(first)) => first,
        (_, None) => response.last_seq + 1,
    };
    hinted.min(prev_seq).max(1)
}

#[cfg(test)]
mod tests {
    use super::super::entries::{LogEntry, Snapshot};
    use super::super::follower::conflict;
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

    /// A deposed primary holding entries 1..=50 of epoch 1, rejoining a primary whose log is
    /// 1..=10 of epoch 1 then 11..=100 of epoch 2: one refusal for the missing tail, one for
    /// the divergent epoch, then the logs agree.
    #[test]
    fn a_divergent_epoch_is_skipped_in_one_round_trip() {
        let secondary = ChangeLog::new(Snapshot::default(), entries(&[1; 50]));
        let mut epochs = vec![1; 10];
        epochs.extend([2; 90]);
        let primary = ChangeLog::new(Snapshot::default(), entries(&epochs));

        let lacking = conflict(&secondary, 100, 2);
        assert_eq!(
            (lacking.conflict_epoch, lacking.conflict_seq),
            (None, Some(51))
        );
        let next = resume_at(&primary, 100, &lacking);
        assert_eq!(next, 51);

        let diverging = conflict(&secondary, next - 1, 2);
        assert_eq!(
            (diverging.conflict_epoch, diverging.conflict_seq),
            (Some(1), Some(1))
        );
        let next = resume_at(&primary, 50, &diverging);
        assert_eq!(next, 11, "right after the primary's last entry of epoch 1");
        assert_eq!(secondary.epoch_at(next - 1), primary.epoch_at(next - 1));

        // Without the epoch on the primary (compacted away, or never held), the secondary's
        // first entry of it; an old secondary without hints, one entry back.
        let compacted = ChangeLog::new(
            Snapshot {
                seq: 20,
                epoch: 2,
                ..Snapshot::default()
            },
            entries(&[2; 80]),
        );
        assert_eq!(resume_at(&compacted, 50, &diverging), 1);
        let old = ReplicateResponse {
            conflict_epoch: None,
            conflict_seq: None,
            ..diverging
        };
        assert_eq!(resume_at(&primary, 50, &old), 50);
    }
}
