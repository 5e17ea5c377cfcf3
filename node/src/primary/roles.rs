//! Role changes: the first epoch (`init`), promotion, a planned switchover (hand-over),
//! following another primary, the member set, and the fencing of a primary restarted in its
//! epoch until a majority confirms it (or a newer epoch deposes it).

use std::collections::BTreeSet;
use std::sync::Arc;

use caplab_api::paths;
use tokio::time::Instant;

use super::store::{Meta, Role};
use super::wire::EpochView;
use super::{PrimaryEngine, PrimaryError, PrimaryResult, State, ROUND_DEADLINE_HEARTBEATS};
use crate::types::NodeId;

impl PrimaryEngine {
    /// `POST /v1/admin/init`: this member becomes the primary of epoch 1.
    pub(super) async fn start_epoch_one(
        self: &Arc<Self>,
        members: BTreeSet<NodeId>,
    ) -> PrimaryResult<()> {
        let mut state = self.state.lock().await;
        if state.meta.epoch > 0 {
            return if state.meta.members == members && state.meta.primary == Some(self.id) {
                Ok(())
            } else {
                Err(PrimaryError::Conflict(format!(
                    "already initialized (epoch {}, members {:?})",
                    state.meta.epoch, state.meta.members
                )))
            };
        }
        let meta = Meta {
            epoch: 1,
            role: Role::Primary,
            primary: Some(self.id),
            members,
            ..Meta::default()
        };
        self.persist_meta(&mut state, meta).await?;
        self.start_replicators(&mut state);
        Ok(())
    }

    /// `POST /v1/admin/promote`: become the primary of a newer epoch.
    /// On a primary fenced after a restart, the operator's word that it is the primary:
    /// it serves again in its epoch.
    pub(super) async fn become_primary(
        self: &Arc<Self>,
        at_least: Option<u64>,
    ) -> PrimaryResult<u64> {
        let mut state = self.state.lock().await;
        if state.meta.role == Role::Primary {
            if state.fenced {
                self.unfence(&mut state, "promoted by the operator");
            }
            return Ok(state.meta.epoch);
        }
        let mut meta = state.meta.clone();
        meta.epoch = (meta.epoch + 1).max(at_least.unwrap_or(0));
        meta.role = Role::Primary;
        meta.primary = Some(self.id);
        meta.members.insert(self.id);
        self.persist_meta(&mut state, meta).await?;
        state.fenced = false;
        tracing::info!(epoch = state.meta.epoch, "promoted to primary");
        self.start_replicators(&mut state);
        Ok(state.meta.epoch)
    }

    /// `POST /v1/admin/transfer-leader` on the primary: a planned switchover to `to` that
    /// loses no write. New writes are refused (redirected to `to`) until `to` holds every
    /// entry; then this member steps down to follow `to` and asks it to become the primary of
    /// the next epoch. Returns that epoch.
    pub(super) async fn hand_over(
        self: &Arc<Self>,
        to: NodeId,
        deadline: Instant,
    ) -> PrimaryResult<u64> {
        {
            let mut state = self.state.lock().await;
            if state.meta.role != Role::Primary {
                return Err(state.redirect());
            }
            if state.fenced {
                return Err(state.fence_error());
            }
            if let Some(other) = state.handing_over {
                return Err(PrimaryError::Conflict(format!(
                    "a switchover to member {other} is already under way"
                )));
            }
            if to == self.id || !state.meta.members.contains(&to) {
                return Err(PrimaryError::Invalid(format!(
                    "member {to} is not a secondary of this primary (members {:?})",
                    state.meta.members
                )));
            }
            state.handing_over = Some(to);
        }
        if !self.caught_up(to, deadline).await {
            self.state.lock().await.handing_over = None;
            return Err(PrimaryError::NotApplied(format!(
                "member {to} did not catch up before the deadline; this member stays the primary"
            )));
        }
        let epoch = {
            let mut state = self.state.lock().await;
            let mut meta = state.meta.clone();
            meta.role = Role::Secondary;
            meta.primary = Some(to);
            let stepped_down = self.persist_meta(&mut state, meta).await;
            state.handing_over = None;
            stepped_down?;
            state.meta.epoch
        };
        self.stop_replicators();
        tracing::info!(to, epoch, "stepped down for a switchover");
        let request = serde_json::json!({ "epoch": epoch + 1 });
        let wait = deadline.saturating_duration_since(Instant::now());
        let promoted = self
            .peers
            .post(to, None, paths::ADMIN_PROMOTE, &request, wait)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| match r.status().is_success() {
                true => Ok(()),
                false => Err(format!("answered {}", r.status())),
            });
        // Not undone on failure: `to` may have been promoted all the same, and a primary that
        // took its writes back could then lose them. With no primary, the operator's failover
        // promotes the most caught-up member, and every member has every entry.
        promoted.map(|()| epoch + 1).map_err(|e| {
            PrimaryError::Unknown(format!(
                "stepped down, but promoting member {to} failed ({e}); a failover will pick the next primary"
            ))
        })
    }

    /// Waits until `to` has acknowledged every entry this primary holds.
    pub(super) async fn caught_up(&self, to: NodeId, deadline: Instant) -> bool {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let state = self.state.lock().await;
                let last = state.last_seq();
                if state.progress.get(&to).is_some_and(|p| p.match_seq >= last) {
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

    /// `PUT /v1/admin/primary`: follow another member.
    pub(super) async fn follow_primary(&self, primary: NodeId) -> PrimaryResult<()> {
        if primary == self.id {
            return Err(PrimaryError::Invalid(
                "to make this member the primary, use /v1/admin/promote".into(),
            ));
        }
        let mut state = self.state.lock().await;
        let mut meta = state.meta.clone();
        meta.role = Role::Secondary;
        meta.primary = Some(primary);
        self.persist_meta(&mut state, meta).await?;
        self.stop_replicators();
        Ok(())
    }

    /// Sets the member set (on the primary; others redirect).
    pub(super) async fn set_members(
        self: &Arc<Self>,
        change: impl FnOnce(&mut BTreeSet<NodeId>),
    ) -> PrimaryResult<()> {
        let mut state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return Err(state.redirect());
        }
        if state.fenced {
            return Err(state.fence_error());
        }
        let mut meta = state.meta.clone();
        change(&mut meta.members);
        meta.members.insert(self.id);
        self.persist_meta(&mut state, meta).await?;
        self.start_replicators(&mut state);
        Ok(())
    }

    pub(super) async fn restart_replication(self: Arc<Self>) {
        let mut state = self.state.lock().await;
        if state.meta.role != Role::Primary {
            return;
        }
        if state.fenced {
            drop(state);
            self.confirm_epoch().await;
        } else {
            self.start_replicators(&mut state);
        }
    }

    /// What this member answers at [`paths::EPOCH`].
    pub async fn epoch_view(&self) -> EpochView {
        let state = self.state.lock().await;
        EpochView {
            epoch: state.meta.epoch,
            primary: state.meta.primary,
        }
    }

    /// Run by a primary fenced after a restart: asks every other member for its epoch, every
    /// heartbeat, until a majority of the member set (this member included) confirms it: in
    /// this very epoch, following this member. A member at an older epoch does not count (a
    /// wiped member answers epoch 0 and knows nothing of a failover). Then it serves. When a
    /// member knows a newer epoch, it steps down and follows that primary.
    pub(super) async fn confirm_epoch(self: Arc<Self>) {
        loop {
            let (epoch, others) = {
                let state = self.state.lock().await;
                if !state.fenced || state.meta.role != Role::Primary {
                    return;
                }
                let others: Vec<NodeId> = state.secondaries(self.id).collect();
                (state.meta.epoch, others)
            };
            let views = futures::future::join_all(others.iter().map(|id| self.ask_epoch(*id)));
            let mut confirmed = 1;
            for view in views.await.into_iter().flatten() {
                if view.epoch > epoch {
                    self.step_down_to(view).await;
                    return;
                }
                if view.epoch == epoch && view.primary == Some(self.id) {
                    confirmed += 1;
                }
            }
            let members = others.len() + 1;
            if confirmed > members / 2 {
                let mut state = self.state.lock().await;
                self.unfence(&mut state, "a majority confirmed its epoch");
                return;
            }
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    pub(super) async fn ask_epoch(&self, member: NodeId) -> Option<EpochView> {
        let deadline = self.heartbeat * ROUND_DEADLINE_HEARTBEATS;
        let body = serde_json::json!({});
        let answer = self
            .peers
            .post(member, None, paths::EPOCH, &body, deadline)
            .await;
        match answer {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        }
    }

    pub(super) fn unfence(self: &Arc<Self>, state: &mut State, why: &str) {
        if state.fenced && state.meta.role == Role::Primary {
            state.fenced = false;
            tracing::info!(
                epoch = state.meta.epoch,
                why,
                "serving as the primary again"
            );
            self.start_replicators(state);
        }
    }

    /// A fenced primary learnt of a newer epoch: it becomes a secondary of that primary,
    /// whose replication then drops any entry it never had.
    pub(super) async fn step_down_to(&self, view: EpochView) {
        let mut state = self.state.lock().await;
        if !state.fenced || state.meta.role != Role::Primary {
            return;
        }
        tracing::warn!(
            epoch = view.epoch,
            primary = ?view.primary,
            "a newer epoch exists: the member that was primary before its restart steps down"
        );
        let mut meta = state.meta.clone();
        meta.epoch = view.epoch;
        meta.role = Role::Secondary;
        meta.primary = view.primary.filter(|p| *p != self.id);
        if let Err(e) = self.persist_meta(&mut state, meta).await {
            tracing::error!(error = %e, "cannot record stepping down; still fenced");
        }
    }

    /// A primary fenced after a restart, not serving yet.
    pub(super) async fn is_fenced(&self) -> bool {
        let state = self.state.lock().await;
        state.fenced && state.meta.role == Role::Primary
    }
}
