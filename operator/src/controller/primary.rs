//! Primary–secondary membership (async and sync replication): bootstrap, secondaries pointed
//! at the primary, the write set, switchovers, and failovers with their loss accounting.

use chrono::{DateTime, Utc};
use tracing::info;

use super::observe::Observation;
use super::{ts, Pass, Stepped, DEFAULT_FAILOVER_SECS};
use crate::crd::{FailoverStatus, PrimaryRecord, RegisterClusterStatus, Replication};
use crate::member_client::{hears_from, AdminAuth};
use crate::membership::{self, LossBound, Observed, PrimarySeen, PrimaryStep};
use crate::resources;

impl Pass<'_> {
    /// The next primary–secondary step ([`membership::next_primary_step`]), taken; first
    /// settles the last failover's loss once its old primary is back.
    pub(super) async fn primary_membership(
        &self,
        seen: &Observation,
        auth: &AdminAuth,
        st: &mut RegisterClusterStatus,
    ) -> Stepped {
        self.reconcile_failover(seen, st).await;
        let step = self.next_primary_step(seen, st);
        let converging = !matches!(step, PrimaryStep::Stable);
        let done = self.primary_step(&seen.members, auth, step, st).await;
        Stepped {
            converging,
            done: done.map(|d| self.write_set_note(d)),
        }
    }

    /// The primary modes' next step; tracks since when the primary is unreachable, keeps the
    /// primary's last observation, and records a failover about to happen in `st`.
    fn next_primary_step(&self, seen: &Observation, st: &mut RegisterClusterStatus) -> PrimaryStep {
        let prev = &self.prev;
        // Members that hold a member set were initialised, even if the primary died before
        // this operator ever saw it lead: its absence must start the failover clock.
        let bootstrapped = prev.bootstrapped || membership::initialised(&seen.members);
        let down_since = if seen.leader.is_none() && bootstrapped {
            Some(
                prev.primary_unreachable_since
                    .as_deref()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(self.now),
            )
        } else {
            None
        };
        st.primary_unreachable_since = down_since.map(ts);
        if let Some(record) = self.primary_record(seen) {
            st.last_primary = Some(record);
        }
        let last_primary = prev.last_primary.as_ref().map(|p| PrimarySeen {
            id: p.id,
            last_seq: p.last_seq,
        });
        let step = membership::next_primary_step(
            self.replicas,
            &seen.members,
            bootstrapped,
            last_primary,
            down_since.map(|t| (self.now - t).num_seconds()),
            self.rc
                .spec
                .failover_after_seconds
                .unwrap_or(DEFAULT_FAILOVER_SECS),
        );
        if let PrimaryStep::Failover {
            ordinal,
            to,
            from,
            loss,
        } = &step
        {
            let old = prev.last_primary.as_ref().filter(|p| p.id == *from);
            st.last_failover = Some(FailoverStatus {
                time: ts(self.now),
                from: *from,
                from_name: old.map(|p| p.name.clone()),
                to: *to,
                to_name: Some(resources::pod_name(&self.name, *ordinal)),
                epoch: None,
                possible_loss: loss.possible_loss(),
                acknowledged_seq: loss.acknowledged_seq,
                promoted_seq: loss.promoted_seq,
                discarded_before: old.map_or(0, |p| p.discarded_writes),
                discarded_writes: None,
                reconciled: None,
            });
        }
        step
    }

    /// The primary as seen this pass, for `status.lastPrimary`.
    fn primary_record(&self, seen: &Observation) -> Option<PrimaryRecord> {
        let p = seen.leader.as_ref()?;
        let s = p.status.as_ref()?;
        Some(PrimaryRecord {
            name: p.name.clone(),
            id: p.id,
            epoch: s.engine.term,
            last_seq: s.engine.last_log_index,
            discarded_writes: s.engine.discarded_writes.unwrap_or(0),
            observed_at: ts(self.now),
        })
    }

    /// Once the old primary of the last failover is back, following the new primary and
    /// acknowledged by it (so it has dropped what the new primary never had), records how
    /// many acknowledged writes it actually discarded, with an Event. If its ordinal came
    /// back as another member (its data was lost), says that the number cannot be known.
    async fn reconcile_failover(&self, seen: &Observation, st: &mut RegisterClusterStatus) {
        let Some(f) = st.last_failover.as_mut().filter(|f| f.reconciled.is_none()) else {
            return;
        };
        let Some(name) = f.from_name.clone() else {
            return;
        };
        let Some(outcome) = failover_outcome(f, &name, seen) else {
            return;
        };
        let note = match outcome {
            Some(actual) => {
                f.discarded_writes = Some(actual);
                format!(
                    "{name} (member id {}) rejoined as a secondary and discarded {actual} \
                     acknowledged writes the new primary {} never had (the failover estimated \
                     up to {})",
                    f.from,
                    f.to_name.as_deref().unwrap_or("?"),
                    f.possible_loss
                )
            }
            None => format!(
                "{name} came back without its data (as a new member): the acknowledged writes \
                 lost in the failover cannot be counted (estimated up to {})",
                f.possible_loss
            ),
        };
        f.reconciled = Some(note.clone());
        info!(cluster = %self.name, %note, "failover reconciled");
        self.event(outcome != Some(0), "FailoverReconciled", note)
            .await;
    }

    /// In sync mode, a note saying what writes wait for, whenever a member is out of the
    /// write set.
    fn write_set_note(&self, done: String) -> String {
        if self.rc.spec.replication == Replication::Sync && done.contains("write set") {
            format!("sync: writes wait for every secondary in the write set; {done}")
        } else {
            done
        }
    }

    /// Takes one primary–secondary step (recording a failover's epoch in `st`); says what was
    /// done (or why nothing), `None` when stable.
    async fn primary_step(
        &self,
        observed: &[Observed],
        auth: &AdminAuth,
        step: PrimaryStep,
        st: &mut RegisterClusterStatus,
    ) -> Option<String> {
        let at = |o: u32| observed.iter().find(|m| m.ordinal == o);
        let by_id = |id: u64| observed.iter().find(|m| m.id == id);
        let members = &self.ctx.members;
        match step {
            PrimaryStep::Stable => None,
            PrimaryStep::Wait(w) => Some(w),
            PrimaryStep::PrimaryDown => Some("primary unreachable; waiting before failover".into()),
            PrimaryStep::Bootstrap { ordinal, members } => {
                let m = at(ordinal)?;
                let note = format!("{} is the primary of epoch 1", m.label());
                self.bootstrap(m, auth, &members, note).await
            }
            PrimaryStep::Repoint {
                ordinals,
                primary,
                entry,
            } => {
                let p = membership::label_of(observed, primary);
                let mut failed = Vec::new();
                for m in ordinals.iter().filter_map(|o| at(*o)) {
                    let Some(to) = m.recipient() else { continue };
                    if let Err(e) = members.set_primary(to, auth, primary, &entry).await {
                        failed.extend(self.member_failed(m, "set-primary", e));
                    }
                }
                if failed.is_empty() {
                    Some(format!("pointing secondaries at primary {p}"))
                } else {
                    Some(failed.join("; "))
                }
            }
            PrimaryStep::HandOver { ordinal, to, .. } => {
                let why = "before its ordinal is scaled away";
                Some(self.switchover(auth, (at(ordinal)?, by_id(to)?), why).await)
            }
            PrimaryStep::DeletePod { ordinal } => self.delete_member_pod(ordinal).await,
            PrimaryStep::SetMembers {
                ordinal,
                members: set,
                added,
                removed,
            } => {
                let p = at(ordinal)?;
                match members.set_voters(p.recipient()?, auth, &set).await {
                    Ok(()) => Some(
                        self.set_members_done(observed, &set, &added, &removed)
                            .await,
                    ),
                    Err(e) => self.member_failed(p, "set-members", e),
                }
            }
            PrimaryStep::Failover { ordinal, loss, .. } => {
                self.promote(at(ordinal)?, auth, &loss, st).await
            }
        }
    }

    /// Promotes `m` after its primary failed (the failover `st.lastFailover` records); on
    /// success a Warning Event bounding the acknowledged writes that may be lost, on failure
    /// the record is dropped and the next pass decides again.
    async fn promote(
        &self,
        m: &Observed,
        auth: &AdminAuth,
        loss: &LossBound,
        st: &mut RegisterClusterStatus,
    ) -> Option<String> {
        match self.ctx.members.promote(m.recipient()?, auth).await {
            Ok(epoch) => {
                let f = st.last_failover.as_mut()?;
                f.epoch = epoch;
                let old = f
                    .from_name
                    .clone()
                    .unwrap_or_else(|| "(never observed)".into());
                let epoch = epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default();
                let note = format!(
                    "primary {old} failed; promoted {}{epoch}; up to {} acknowledged writes \
                     may be lost (the old primary's last sequence number as last observed \
                     {} vs {}'s {}; writes it acknowledged after that observation are not \
                     counted until it returns)",
                    m.name,
                    loss.possible_loss(),
                    loss.acknowledged_seq,
                    m.name,
                    loss.promoted_seq,
                );
                self.event(true, "Failover", note).await;
                st.primary_unreachable_since = None;
                Some(format!("promoted {}", m.name))
            }
            Err(e) => {
                st.last_failover = None;
                self.member_failed(m, "promote", e)
            }
        }
    }

    /// Reports a changed member set: an Event for members that left because they are down
    /// (or were scaled away) and for those that joined; says what the set is now.
    async fn set_members_done(
        &self,
        observed: &[Observed],
        members: &[u64],
        added: &[u64],
        removed: &[u64],
    ) -> String {
        let names = |ids: &[u64]| membership::labels_of(observed, ids);
        let all = names(members);
        if !removed.is_empty() {
            let note = format!(
                "removed {} from the primary's write set (down or scaled away); write set {all}",
                names(removed)
            );
            self.event(false, "MemberRemoved", note).await;
        }
        if !added.is_empty() {
            let note = format!(
                "added {} to the primary's write set (it catches up as a secondary); write set {all}",
                names(added)
            );
            self.event(false, "MemberAdded", note).await;
        }
        let down: Vec<&str> = removed
            .iter()
            .filter_map(|id| observed.iter().find(|m| m.id == *id))
            .map(|m| m.name.as_str())
            .collect();
        if down.is_empty() {
            format!("primary replicates to {all}")
        } else {
            format!(
                "{} down and removed from the write set; write set {all}",
                down.join(", ")
            )
        }
    }
}

/// The old primary's outcome after a failover: `None` while unknown, `Some(Some(n))` once it
/// follows the current primary and was acknowledged by it (it discarded `n` writes since it
/// was last seen as primary), `Some(None)` when its ordinal came back as another member.
fn failover_outcome(f: &FailoverStatus, name: &str, seen: &Observation) -> Option<Option<u64>> {
    let m = seen.members.iter().find(|m| m.name == name)?;
    if m.id != f.from {
        return m.pod_exists.then_some(None);
    }
    let s = m.status.as_ref()?;
    let primary = seen.leader_status.as_ref()?;
    let rejoined = !s.is_leader()
        && s.engine.leader == Some(primary.id)
        && hears_from(primary, m.id)
        && primary
            .engine
            .peers
            .get(&m.id)
            .is_some_and(|p| p.match_index.is_some());
    rejoined.then(|| {
        Some(
            s.engine
                .discarded_writes
                .unwrap_or(0)
                .saturating_sub(f.discarded_before),
        )
    })
}
