//! Member pods: crash faults kept down, failed pods replaced, missing ones created, and pods
//! built from an older spec rolled one at a time.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch};
use kube::ResourceExt;
use tracing::{info, warn};

use super::blame::{self, blame};
use super::observe::Observation;
use super::{apply_params, Error, Pass};
use crate::crd::{Phase, Replication};
use crate::faults::FaultPlan;
use crate::member_client::AdminAuth;
use crate::pod_wait::{self, Waiting};
use crate::resources;
use crate::rollout;

/// Has the pod ended (Failed or Succeeded: it is replaced)?
fn finished(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed") | Some("Succeeded"))
}

impl Pass<'_> {
    /// Member pods: crash-fault targets kept down, failed pods replaced, missing ones created.
    pub(super) async fn apply_members(
        &self,
        seen: &mut Observation,
        plan: &FaultPlan,
        progress: &mut Vec<String>,
    ) -> Result<(), Error> {
        self.keep_crashed_down(seen, plan).await?;
        self.replace_failed(seen, plan, progress).await?;
        self.report_unstartable(seen, plan, progress).await;
        self.create_missing(seen, plan, progress).await
    }

    /// Names the member pods that cannot start (an image that cannot be pulled, a crash loop,
    /// a missing Secret, no node or volume for it: [`pod_wait::waiting`]) in `progress`, with
    /// one Warning Event `MemberCannotStart` per pod and kind of trouble. Pods being replaced
    /// or kept down by a crash fault are left out.
    async fn report_unstartable(
        &self,
        seen: &Observation,
        plan: &FaultPlan,
        progress: &mut Vec<String>,
    ) {
        let stuck: Vec<(String, String, Waiting)> = seen
            .pods
            .iter()
            .filter(|(o, p)| !plan.crashed.contains(o) && !finished(p))
            .filter_map(|(_, p)| Some((pod_wait::pod_key(p), p.name_any(), pod_wait::waiting(p)?)))
            .collect();
        let live = seen.pods.values().map(pod_wait::pod_key).collect();
        let keyed: Vec<(String, &Waiting)> = stuck.iter().map(|(k, _, w)| (k.clone(), w)).collect();
        let news = self
            .ctx
            .announced
            .news(&super::cluster_key(self.rc), &live, &keyed);
        for (i, (_, pod, w)) in stuck.iter().enumerate() {
            let note = w.member_note(pod, self.rc.spec.storage.as_ref());
            if news.contains(&i) {
                warn!(cluster = %self.name, %pod, reason = %w.reason, "member pod cannot start");
                self.event(true, "MemberCannotStart", note.clone()).await;
            }
            progress.push(note);
        }
    }

    async fn keep_crashed_down(
        &self,
        seen: &mut Observation,
        plan: &FaultPlan,
    ) -> Result<(), Error> {
        for o in &plan.crashed {
            if let Some(p) = seen.pods.get(o) {
                let pn = p.name_any();
                info!(cluster = %self.name, pod = %pn, "crash fault: deleting pod");
                self.api::<Pod>()
                    .delete(&pn, &DeleteParams::default().grace_period(0))
                    .await?;
                let note = format!("crash fault: deleted pod {pn}");
                self.event(false, "MemberCrashed", note).await;
            }
            if let Some(m) = seen.members.iter_mut().find(|m| m.ordinal == *o) {
                m.pod_exists = false;
                m.pod_ip = None;
                m.status = None;
            }
        }
        Ok(())
    }

    async fn replace_failed(
        &self,
        seen: &Observation,
        plan: &FaultPlan,
        progress: &mut Vec<String>,
    ) -> Result<(), Error> {
        for (o, p) in &seen.pods {
            if finished(p) && !plan.crashed.contains(o) {
                self.api::<Pod>()
                    .delete(&p.name_any(), &DeleteParams::default())
                    .await?;
                progress.push(format!("replacing failed pod {}", p.name_any()));
            }
        }
        Ok(())
    }

    async fn create_missing(
        &self,
        seen: &mut Observation,
        plan: &FaultPlan,
        progress: &mut Vec<String>,
    ) -> Result<(), Error> {
        let pvc_api = self.api::<PersistentVolumeClaim>();
        for o in 0..self.replicas {
            if seen.pods.contains_key(&o)
                || seen.terminating.contains(&o)
                || plan.crashed.contains(&o)
            {
                continue;
            }
            let claim = resources::pvc_name(&self.name, o);
            let mut id = 0;
            if self.rc.spec.storage.is_some() {
                if let Some(pvc) = pvc_api.get_opt(&claim).await? {
                    // A claim being deleted (by hand) would take the new pod's data with it,
                    // and the pod would wait for it for ever: make the pod once it is gone.
                    if pvc.metadata.deletion_timestamp.is_some() {
                        progress.push(format!("waiting for claim {claim} to be deleted"));
                        continue;
                    }
                    id = resources::member_id_of(&pvc.metadata).unwrap_or(0);
                }
            }
            // A claim that carries its member id is kept as it is: its class and size were
            // fixed when it was made (a PVC's spec is immutable), so applying a changed
            // spec.storage to it would only be refused, again at every pass. A changed
            // spec.storage applies to the claims made from then on.
            let claimed = id != 0;
            if id == 0 {
                id = seen.next_id;
                seen.next_id += 1;
            }
            if let Some(pvc) = resources::member_pvc(self.rc, o, id).filter(|_| !claimed) {
                pvc_api
                    .patch(&claim, &apply_params(), &Patch::Apply(&pvc))
                    .await
                    .map_err(blame(
                        format!("PersistentVolumeClaim {claim}"),
                        &blame::member_pvc_fields(),
                    ))?;
            }
            let pod = resources::member_pod(self.rc, o, id, &self.ctx.node_image);
            let pn = resources::pod_name(&self.name, o);
            self.api::<Pod>()
                .patch(&pn, &apply_params(), &Patch::Apply(&pod))
                .await
                .map_err(blame(
                    format!("pod {pn}"),
                    &blame::member_pod_fields(self.rc),
                ))?;
            info!(cluster = %self.name, pod = %pn, id, "created member pod");
            let note = format!("created pod {pn} as member {id}");
            self.event(false, "MemberCreated", note).await;
            progress.push(format!("created {pn}"));
            if let Some(m) = seen.members.iter_mut().find(|m| m.ordinal == o) {
                m.id = id;
                m.pod_exists = true;
            }
        }
        Ok(())
    }

    /// Deletes the next pod built from an outdated template (it is recreated from the current
    /// one by a later pass), when the cluster can spare it; says whether pods are still
    /// outdated.
    pub(super) async fn roll_outdated(
        &self,
        seen: &Observation,
        plan: &FaultPlan,
        converging: bool,
        auth: &AdminAuth,
        progress: &mut Vec<String>,
    ) -> Result<bool, Error> {
        let outdated = rollout::outdated(&seen.pods, |o, pod| {
            let id = resources::member_id_of(&pod.metadata).unwrap_or(0);
            resources::member_pod(self.rc, o, id, &self.ctx.node_image)
        });
        if outdated.is_empty() {
            return Ok(false);
        }
        let whole = self.prev.phase == Some(Phase::Ready)
            && !converging
            && progress.is_empty()
            && seen.terminating.is_empty()
            && plan.member_faults.values().all(Vec::is_empty)
            && (0..self.replicas).all(|o| seen.pods.contains_key(&o));
        let leader = seen.leader.as_ref().map(|l| l.ordinal);
        let Some(next) = rollout::next_to_roll(&outdated, leader).filter(|_| whole) else {
            progress.push(format!(
                "{} pod(s) wait to be recreated from the changed spec",
                outdated.len()
            ));
            return Ok(true);
        };
        let twopc = self.rc.spec.replication == Replication::TwoPc;
        let keeps_log = self.rc.spec.storage.is_some()
            && seen
                .pods
                .get(&next)
                .is_some_and(crate::validation::on_claim);
        if Some(next) == leader && twopc && !keeps_log {
            // 2pc never changes its coordinator: recreated empty (its pod or the new one on an
            // emptyDir), it would be a new member and the participants would wait for the old
            // one for ever.
            progress.push(super::twopc::COORDINATOR_NOT_ROLLED.into());
            return Ok(true);
        }
        if Some(next) == leader && !twopc && self.rc.spec.replication != Replication::Raft {
            // A primary's pod goes only once another member holds the primary role: a
            // failover could lose acknowledged writes (async), a switchover loses none.
            progress.push(self.hand_over_primary(seen, &outdated, auth).await);
            return Ok(true);
        }
        let pn = resources::pod_name(&self.name, next);
        info!(cluster = %self.name, pod = %pn, outdated = outdated.len(), "recreating pod from the changed spec");
        self.api::<Pod>()
            .delete(&pn, &DeleteParams::default())
            .await?;
        let role = match Some(next) == leader {
            true if twopc => " (the coordinator: writes block until it is back)",
            true => " (the leader: expect a failover)",
            false => "",
        };
        let note = format!("deleted pod {pn}{role} to recreate it from the changed spec");
        self.event(false, "MemberRolled", note).await;
        progress.push(format!("recreating {pn} from the changed spec"));
        Ok(true)
    }

    /// Hands the primary role to the most caught-up secondary already built from the current
    /// spec (a planned switchover); says what happened. On failure the next pass retries.
    async fn hand_over_primary(
        &self,
        seen: &Observation,
        outdated: &BTreeSet<u32>,
        auth: &AdminAuth,
    ) -> String {
        let Some(primary) = seen.leader.as_ref().filter(|p| p.pod_ip.is_some()) else {
            return "waiting for the primary's address to hand its role over".into();
        };
        let Some(to) = seen
            .members
            .iter()
            .filter(|m| m.ordinal != primary.ordinal && !outdated.contains(&m.ordinal))
            .filter(|m| m.reachable())
            .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.engine.applied_index))
        else {
            return "waiting for an up-to-date secondary to hand the primary role to".into();
        };
        let why = "before its pod is recreated from the changed spec";
        self.switchover(auth, (primary, to), why).await
    }
}
