//! The primary's write path: one writer task takes every queued write, applies the batch,
//! makes it durable with one fsync (group commit) and answers; in sync mode once every
//! secondary holds it. Reads are served here too.

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::entries::LogEntry;
use super::store::{Change, Role};
use super::{store_error, Mode, PrimaryEngine, PrimaryError, PrimaryResult};
use crate::types::{Command, CommandResult};

/// Writes collected into one group commit.
pub(super) const GROUP_COMMIT: usize = 1024;

pub(super) struct WriteRequest {
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<PrimaryResult<i64>>,
}

impl PrimaryEngine {
    pub(super) async fn submit(&self, command: Command, deadline: Instant) -> PrimaryResult<i64> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest {
                command,
                deadline,
                reply,
            })
            .await
            .map_err(|_| PrimaryError::ShuttingDown)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PrimaryError::Unknown(
                "the write was dropped while in flight".into(),
            )),
            Err(_) => Err(PrimaryError::Unknown(
                "deadline passed after the write was queued".into(),
            )),
        }
    }

    /// The single writer: takes every queued write, applies them in order, makes the batch
    /// durable with one fsync, then answers (sync mode: once every secondary has it).
    pub(super) async fn group_commit(
        engine: std::sync::Weak<Self>,
        mut queue: mpsc::Receiver<WriteRequest>,
    ) {
        let mut batch = Vec::with_capacity(GROUP_COMMIT);
        while queue.recv_many(&mut batch, GROUP_COMMIT).await > 0 {
            let batch = std::mem::take(&mut batch);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.commit_batch(batch).await;
        }
    }

    pub(super) async fn commit_batch(&self, batch: Vec<WriteRequest>) {
        let mut state = self.state.lock().await;
        if let Err(e) = state.serving() {
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
            return;
        }
        let first_seq = state.last_seq() + 1;
        let epoch = state.meta.epoch;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut appended = Vec::new();
        for w in batch {
            let outcome = match state.log.registers_mut().apply(&w.command) {
                CommandResult::Applied { value } => {
                    let key = w.command.key().to_string();
                    // A successful CAS is logged as the write it amounts to: replay is then
                    // independent of the secondary's state.
                    let entry = LogEntry {
                        epoch,
                        command: Command::Write { key, value },
                    };
                    state.log.push(entry.clone());
                    appended.push((state.last_seq(), entry));
                    Ok((value, state.last_seq()))
                }
                CommandResult::CasMismatch { current } => {
                    Err(PrimaryError::CasMismatch { current })
                }
            };
            outcomes.push((w, outcome));
        }
        if !appended.is_empty() {
            let change = Change {
                append: appended,
                ..Change::default()
            };
            if let Err(e) = self.store.commit(change).await {
                tracing::error!(error = %e, "group commit failed; reloading the durable state");
                self.reload(&mut state);
                let e = store_error(e);
                for (w, _) in outcomes {
                    let _ = w.reply.send(Err(e.clone()));
                }
                return;
            }
        }
        let stable = state.stable_seq(self.id);
        self.compact(&mut state, stable).await;
        drop(state);
        self.changed.send_modify(|v| *v += 1);
        tracing::trace!(first_seq, "group commit");
        for (w, outcome) in outcomes {
            match (outcome, self.mode) {
                (Ok((value, seq)), Mode::Sync) => {
                    let engine_changed = self.changed.subscribe();
                    let acked = self.wait_for_secondaries(seq, w.deadline, engine_changed);
                    let result = match acked.await {
                        true => Ok(value),
                        false => Err(PrimaryError::Unknown(
                            "not every secondary confirmed the write before the deadline; it is durable on \
                             the primary and may or may not survive a failover"
                                .into(),
                        )),
                    };
                    let _ = w.reply.send(result);
                }
                (Ok((value, _)), Mode::Async) => {
                    let _ = w.reply.send(Ok(value));
                }
                (Err(e), _) => {
                    let _ = w.reply.send(Err(e));
                }
            }
        }
    }

    /// Waits until every current secondary has made `seq` durable.
    pub(super) async fn wait_for_secondaries(
        &self,
        seq: u64,
        deadline: Instant,
        mut changed: watch::Receiver<u64>,
    ) -> bool {
        loop {
            {
                let state = self.state.lock().await;
                let all = state
                    .secondaries(self.id)
                    .all(|id| state.progress.get(&id).is_some_and(|p| p.match_seq >= seq));
                if all {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    pub(super) async fn read_local(&self, key: &str) -> i64 {
        self.state.lock().await.log.registers().read(key)
    }

    /// Linearizable reads are served by the primary only (as far as it knows it is one).
    pub(super) async fn read_linearizable(&self, key: &str) -> PrimaryResult<i64> {
        let state = self.state.lock().await;
        match state.meta.role {
            Role::Primary if state.fenced => Err(state.fence_error()),
            Role::Primary => Ok(state.log.registers().read(key)),
            _ => Err(state.redirect()),
        }
    }
}
