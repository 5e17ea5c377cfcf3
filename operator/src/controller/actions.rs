//! Member actions every replication mode shares: `init`, a switchover, deleting a scaled-away
//! member's pod, and how a failed admin call is reported.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::DeleteParams;
use tracing::{info, warn};

use super::Pass;
use crate::member_client::{AddressBook, AdminAuth, MemberError};
use crate::membership::Observed;
use crate::resources;

impl Pass<'_> {
    /// Deletes the pod of a member that was scaled away (and its claim), once no member
    /// replicates to it any more.
    pub(super) async fn delete_member_pod(&self, ordinal: u32) -> Option<String> {
        let pn = resources::pod_name(&self.name, ordinal);
        if let Err(e) = self
            .api::<Pod>()
            .delete(&pn, &DeleteParams::default())
            .await
        {
            warn!(error = %e, pod = %pn, "deleting pod failed");
            return Some(format!("deleting {pn}"));
        }
        if self.rc.spec.storage.is_some() || ordinal >= self.replicas {
            // Best effort: a claim left behind is deleted with the cluster (owner reference).
            let _ = self
                .api::<PersistentVolumeClaim>()
                .delete(
                    &resources::pvc_name(&self.name, ordinal),
                    &DeleteParams::default(),
                )
                .await;
        }
        let note = format!("scaled down: deleted {pn}");
        self.event(false, "MemberDeleted", note).await;
        Some(format!("deleted {pn}"))
    }

    /// A planned switchover from primary `from` to member `to`, with an Event either way; says
    /// what happened (a failure is retried by the next pass).
    pub(super) async fn switchover(
        &self,
        auth: &AdminAuth,
        (from, to): (&Observed, &Observed),
        why: &str,
    ) -> String {
        let Some(recipient) = from.recipient() else {
            return format!("waiting for the primary {}'s address", from.name);
        };
        match self
            .ctx
            .members
            .transfer_leader(recipient, auth, to.id)
            .await
        {
            Ok(()) => {
                info!(cluster = %self.name, from = %from.name, to = %to.name, why, "switchover");
                let note = format!(
                    "primary {} handed its role to {} {why}",
                    from.label(),
                    to.label()
                );
                self.event(false, "Switchover", note).await;
                format!("handed the primary role from {} to {}", from.name, to.name)
            }
            Err(e) if e.is_misdirected() => self.misdirected(from, &e),
            Err(e) => {
                warn!(cluster = %self.name, error = %e, "switchover failed");
                let note = format!(
                    "switchover from primary {} to {} failed: {e}; retrying",
                    from.label(),
                    to.label()
                );
                self.event(true, "SwitchoverFailed", note).await;
                format!(
                    "switchover from {} to {} failed; retrying",
                    from.name, to.name
                )
            }
        }
    }

    /// `init` on member `m`; on success a `Bootstrapped` event saying `note`.
    pub(super) async fn bootstrap(
        &self,
        m: &Observed,
        auth: &AdminAuth,
        members: &AddressBook,
        note: String,
    ) -> Option<String> {
        match self.ctx.members.init(m.recipient()?, auth, members).await {
            Ok(()) => {
                self.event(false, "Bootstrapped", note).await;
                Some("bootstrapped".into())
            }
            Err(e) => self.member_failed(m, "init", e),
        }
    }

    /// A failed admin call to member `m`: counted and logged; says what failed.
    pub(super) fn member_failed(&self, m: &Observed, what: &str, e: MemberError) -> Option<String> {
        if e.is_misdirected() {
            return Some(self.misdirected(m, &e));
        }
        self.ctx.metrics.error("member");
        warn!(error = %e, what, pod = %m.name, "member admin call failed");
        Some(format!("{what} on {} failed: {e}", m.name))
    }

    /// A 421 from member `m`: whoever answers at its address is not the member the operator
    /// thinks (another cluster, id or incarnation). Nothing is retried: the next pass observes
    /// the pods and members again and addresses whoever is really there.
    pub(super) fn misdirected(&self, m: &Observed, e: &MemberError) -> String {
        self.ctx.metrics.error("misdirected");
        warn!(error = %e, pod = %m.name, id = m.id, "the pod is not the member the operator thinks");
        format!(
            "{} is not {} any more ({e}); observing again",
            m.name,
            m.label()
        )
    }
}
