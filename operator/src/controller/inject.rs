//! Fault injection: what the spec's faults mean now (a [`FaultPlan`]) and each member's fault
//! set and address book pushed to it.

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use super::observe::Observation;
use super::Pass;
use crate::crd::Replication;
use crate::faults::{self, Cluster, FaultEvent, FaultPlan, Schedule, Voters};
use crate::member_client::AdminAuth;
use crate::membership;
use crate::resources;
use crate::validation::on_claim;

impl Pass<'_> {
    /// What the faults in the spec mean now, on the `schedule`'s clock; announces faults
    /// that start or end.
    pub(super) async fn plan_faults(&self, seen: &Observation, schedule: &Schedule) -> FaultPlan {
        let ids: BTreeMap<u32, u64> = seen
            .members
            .iter()
            .filter(|m| m.id > 0)
            .map(|m| (m.ordinal, m.id))
            .collect();
        let cluster = Cluster {
            replicas: self.replicas,
            ids: &ids,
            leader: self.fault_anchor(seen),
            voters: self.voters_to_keep(seen),
        };
        let plan = faults::plan_scheduled(
            &self.rc.spec.faults,
            &self.prev.faults,
            self.now,
            &cluster,
            schedule,
        );
        let name_of = |o: u32| match seen.members.iter().find(|m| m.ordinal == o) {
            Some(m) if m.id > 0 => m.label(),
            _ => resources::pod_name(&self.name, o),
        };
        for ev in &plan.events {
            let note = ev.note(name_of);
            info!(cluster = %self.name, %note, "fault changed");
            // A deferral is Normal: the operator keeps the cluster able to admit its crashed
            // members, as documented, and starts the fault by itself; nothing needs fixing.
            let reason = match ev {
                FaultEvent::Started { .. } => "FaultStarted",
                FaultEvent::Ended { .. } => "FaultEnded",
                FaultEvent::Deferred { .. } => "FaultDeferred",
            };
            self.event(false, reason, note).await;
        }
        plan
    }

    /// The voters a crash must leave a majority of running, on a Raft cluster whose pods do
    /// not all keep their data on a claim (crashed members come back empty and need that
    /// majority to be admitted): the leader's voters, and which of them answered this pass.
    /// `None` elsewhere, or without a leader (then no fault starts anyway). The pods decide,
    /// not `spec.storage`: storage added to a running cluster reaches its pods only through
    /// the rollout, which waits for the crash faults.
    fn voters_to_keep(&self, seen: &Observation) -> Option<Voters> {
        let spec = &self.rc.spec;
        let all_on_claims = spec.storage.is_some() && seen.pods.values().all(on_claim);
        if spec.replication != Replication::Raft || all_on_claims {
            return None;
        }
        let leader = seen.leader_status.as_ref()?;
        let answering = seen.members.iter().filter(|m| m.reachable()).map(|m| m.id);
        Some(Voters::new(&self.name, &leader.engine.voters, answering))
    }

    /// The member faults are planned around, once the cluster serves: the leader (Raft
    /// leader, primary, 2pc coordinator). Leaderless quorum mode never has one: there faults
    /// wait until the members are initialised, and the lowest answering member only opens that
    /// gate (validation refuses `leader`/`followers` targets in that mode).
    fn fault_anchor(&self, seen: &Observation) -> Option<u32> {
        match self.rc.spec.replication {
            Replication::Quorum if membership::initialised(&seen.members) => seen
                .members
                .iter()
                .filter(|m| m.reachable())
                .map(|m| m.ordinal)
                .min(),
            Replication::Quorum => None,
            _ => seen.leader.as_ref().map(|l| l.ordinal),
        }
    }

    /// The address book and each member's fault set, to every reachable member (failures are
    /// logged; the next pass retries). The book holds exactly the members whose pod runs now,
    /// each under the id and incarnation that answered at its address.
    pub(super) async fn push_faults(&self, seen: &Observation, plan: &FaultPlan, auth: &AdminAuth) {
        let members = &self.ctx.members;
        let book = membership::address_book(&seen.members);
        for m in seen.members.iter().filter(|m| m.reachable()) {
            let Some(to) = m.recipient() else {
                continue;
            };
            if let Err(e) = members.peers(to, auth, &book).await {
                if e.is_misdirected() {
                    // Not the member we think: nothing more for it until it is observed again.
                    self.misdirected(m, &e);
                    continue;
                }
                debug!(error = %e, pod = %m.name, "pushing peers failed");
            }
            let desired = plan.sets.get(&m.ordinal).cloned().unwrap_or_default();
            let reported = m.status.as_ref().map(|s| &s.faults);
            if reported == Some(&desired) {
                continue;
            }
            match members.faults(to, auth, &desired).await {
                Ok(()) => {
                    info!(cluster = %self.name, pod = %m.name, faults = ?desired, "pushed fault set");
                    self.ctx.metrics.action("PushFaults");
                }
                Err(e) => {
                    self.ctx.metrics.error("member");
                    warn!(error = %e, pod = %m.name, "pushing faults failed");
                }
            }
        }
    }
}
