//! Status and report: the status a pass computes from what it saw and did, its transitions
//! as Events, the status write, and the requeue interval.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Patch;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::warn;

use super::observe::Observation;
use super::quorum;
use super::{apply_params, cluster_key, ts, Error, Pass, FAST, SLOW};
use crate::crd::{
    MemberStatus, Phase, RegisterCluster, RegisterClusterStatus, Replication, LEADERLESS,
};
use crate::faults::FaultPlan;
use crate::membership;
use crate::resources;
use crate::status::{self, Leaderless, Summary};

/// The status written by the last pass, with the resourceVersion that pass started from.
///
/// The controller hands each pass the object from its watch cache, which may not show the
/// previous pass's status write yet (a pod deleted by a crash fault triggers the next pass at
/// once). Reconciling against that stale status would, for example, start a fault again and
/// resolve `leader` anew after the leader was killed. While the cache still shows the
/// resourceVersion the last pass read, the status that pass wrote is the truth.
#[derive(Default)]
pub struct WrittenStatus(std::sync::Mutex<BTreeMap<String, (String, RegisterClusterStatus)>>);

impl WrittenStatus {
    /// Forgets every cluster whose key ([`super::cluster_key`]) is not in `live`.
    pub(super) fn retain(&self, live: &BTreeSet<String>) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        memo.retain(|key, _| live.contains(key));
    }

    /// The freshest known status of `rc`.
    pub(super) fn current(&self, rc: &RegisterCluster) -> RegisterClusterStatus {
        let memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (memo.get(&cluster_key(rc)), &rc.metadata.resource_version) {
            (Some((read, written)), Some(seen)) if read == seen => written.clone(),
            _ => rc.status.clone().unwrap_or_default(),
        }
    }

    fn remember(&self, rc: &RegisterCluster, st: &RegisterClusterStatus) {
        if let Some(rv) = &rc.metadata.resource_version {
            let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
            memo.insert(cluster_key(rc), (rv.clone(), st.clone()));
        }
    }
}

impl Pass<'_> {
    /// With an invalid spec: says so once (a Warning Event saying how to fix it) and keeps
    /// observing and reporting the members, touching nothing (no pod, Secret, Service or
    /// admin call).
    pub(super) async fn report_invalid(&self, seen: &Observation) -> Result<Action, Error> {
        let msg = self.errors.join("; ");
        let known = self
            .prev
            .conditions
            .iter()
            .any(|c| c.type_ == "SpecValid" && c.status == "False" && c.message == msg);
        if !known {
            warn!(cluster = %self.name, namespace = %self.ns, %msg, "invalid spec");
            self.event(true, "InvalidSpec", msg).await;
        }
        self.finish_status(seen, None, self.prev.clone(), false, &[])
            .await
    }

    fn leader_name(&self, seen: &Observation) -> Option<String> {
        seen.leader
            .as_ref()
            .map(|l| resources::pod_name(&self.name, l.ordinal))
    }

    fn conditions(&self, summary: &Summary<'_>, phase: Phase) -> Vec<crate::crd::Condition> {
        status::conditions(
            &self.prev.conditions,
            summary,
            phase,
            self.rc.metadata.generation,
            &ts(self.now),
        )
    }

    /// Completes `st` from what the pass saw and did, announces transitions, writes it, and
    /// picks the requeue: about a second while anything changes ([`status::busy`]), the calm
    /// interval otherwise, and the next fault expiry at the latest. `plan` is `None` when the
    /// spec is invalid: the faults keep the state the last valid pass gave them.
    pub(super) async fn finish_status(
        &self,
        seen: &Observation,
        plan: Option<&FaultPlan>,
        mut st: RegisterClusterStatus,
        converging: bool,
        progress: &[String],
    ) -> Result<Action, Error> {
        let converging = converging || !progress.is_empty();
        self.complete_status(seen, plan, &mut st, converging, progress);
        self.report_blocked(seen, &mut st).await;
        for n in status::transitions(&self.prev, &st) {
            self.event(n.warning, n.reason, n.note).await;
        }
        self.write_status(&st).await?;

        let mut wait = if status::busy(&st, &self.prev, converging) {
            FAST
        } else {
            SLOW
        };
        if let Some(exp) = plan.and_then(|p| next_expiry(p, self.now)) {
            wait = wait.min(exp);
        }
        Ok(Action::requeue(wait))
    }

    /// The member count the status reports against: `spec.replicas` when the spec is valid,
    /// else what the last valid spec asked for (the operator does not act on an invalid one).
    fn reported_replicas(&self) -> u32 {
        if self.errors.is_empty() {
            self.replicas
        } else {
            u32::try_from(self.prev.replicas.max(0)).unwrap_or(0)
        }
    }

    /// Fills in `st`: phase, conditions, members, leader, terms, membership, faults.
    fn complete_status(
        &self,
        seen: &Observation,
        plan: Option<&FaultPlan>,
        st: &mut RegisterClusterStatus,
        converging: bool,
        progress: &[String],
    ) {
        let prev = &self.prev;
        let replicas = self.reported_replicas();
        let leader_status = seen.leader_status.as_ref();
        let leader_name = self.leader_name(seen);
        // What runs: recorded once something was created from a valid spec, never from a
        // rejected one.
        let replication = match self.errors.is_empty() {
            true => Some(prev.replication.unwrap_or(self.rc.spec.replication)),
            false => prev.replication,
        };
        let leaderless = replication == Some(Replication::Quorum);
        // Leaderless: initialised is bootstrapped (no leader will ever be seen).
        let bootstrapped = prev.bootstrapped
            || ((seen.leader.is_some() || leaderless) && membership::initialised(&seen.members));
        let members = self.member_statuses(seen, replicas, plan, leaderless);
        let voters: Vec<u64> = match replication {
            Some(Replication::Async) | Some(Replication::Sync) => {
                members.iter().map(|m| m.id).collect()
            }
            Some(Replication::Quorum) => quorum::common_membership(&seen.members),
            _ => leader_status
                .map(|s| s.engine.voters.clone())
                .unwrap_or_default(),
        };
        let quorum_summary =
            leaderless.then(|| quorum::summary(&seen.members, self.quorum_sizes()));
        let wanted: Vec<MemberStatus> = members
            .iter()
            .filter(|m| m.ordinal < replicas)
            .cloned()
            .collect();
        let progress_msg = progress.join("; ");
        let summary = Summary {
            errors: &self.errors,
            created: bootstrapped || !seen.pods.is_empty() || !seen.terminating.is_empty(),
            bootstrapped,
            leader: leader_name.as_deref(),
            replicas,
            members: &wanted,
            voters: &voters,
            converging,
            term: leader_status.map(|s| s.engine.term),
            progress: Some(progress_msg.as_str()).filter(|p| !p.is_empty()),
            campaigning: status::campaigning(&members, prev.term),
            leaderless: quorum_summary.as_ref().map(|q| Leaderless {
                read: q.read_quorum,
                write: q.write_quorum,
                serving: &q.serving,
            }),
        };
        let phase = status::phase(&summary);
        let ready = wanted
            .iter()
            .filter(|m| status::member_ok(m, &voters) && m.term >= summary.term)
            .count();
        st.conditions = self.conditions(&summary, phase);
        st.observed_generation = self.rc.metadata.generation;
        st.observed_at = Some(ts(self.now));
        st.phase = Some(phase);
        st.replication = replication;
        st.replicas = i32::try_from(replicas).unwrap_or(0);
        st.ready_replicas = i32::try_from(ready).unwrap_or(0);
        st.ready = Some(format!("{ready}/{replicas}"));
        st.last_leader = status::last_leader(
            seen.leader.as_ref().map(|l| (l.name.as_str(), l.id)),
            leader_status.map(|s| s.engine.term),
            &members,
            prev.last_leader.as_ref(),
        );
        st.leader = match leaderless {
            true => Some(LEADERLESS.to_string()),
            false => leader_name,
        };
        st.leader_id = seen.leader.as_ref().map(|l| l.id);
        st.term = status::highest_term(&members, prev.term);
        st.commit_index = leader_status
            .map(|s| s.engine.commit_index)
            .or(prev.commit_index);
        st.bootstrapped = bootstrapped;
        st.next_member_id = seen.next_id;
        if let Some(ls) = leader_status {
            st.voters = ls.engine.voters.clone();
            st.learners = ls.engine.learners.clone();
        }
        if leaderless {
            st.voters = voters.clone();
        }
        st.quorum = quorum_summary.clone();
        st.members = members;
        if let Some(plan) = plan {
            st.faults = plan.statuses.clone();
            let active = plan.active_names();
            st.active_faults = Some(active.join(",")).filter(|a| !a.is_empty());
        }
    }

    /// `status.members`: every wanted ordinal and every other one that still has a pod, with
    /// what it reported, its lag behind the leader's commit index (entries) and its faults
    /// (the last valid pass's when `plan` is `None`).
    fn member_statuses(
        &self,
        seen: &Observation,
        replicas: u32,
        plan: Option<&FaultPlan>,
        leaderless: bool,
    ) -> Vec<MemberStatus> {
        let leader = seen.leader_status.as_ref();
        seen.members
            .iter()
            .filter(|m| m.ordinal < replicas || m.pod_exists)
            .map(|m| {
                let s = m.status.as_ref();
                let lag = match (leader, s) {
                    (Some(l), Some(s)) => {
                        Some(l.engine.commit_index.saturating_sub(s.engine.applied_index))
                    }
                    _ => None,
                };
                let faults = match plan {
                    Some(p) => p.member_faults.get(&m.ordinal).cloned().unwrap_or_default(),
                    None => self
                        .prev
                        .members
                        .iter()
                        .find(|x| x.ordinal == m.ordinal)
                        .map(|x| x.faults.clone())
                        .unwrap_or_default(),
                };
                MemberStatus {
                    name: resources::pod_name(&self.name, m.ordinal),
                    ordinal: m.ordinal,
                    id: m.id,
                    pod_ip: m.pod_ip.clone(),
                    role: Some(s.map(|s| s.engine.role.to_string()).unwrap_or_else(|| {
                        if m.pod_exists { "unknown" } else { "down" }.to_string()
                    })),
                    term: s.map(|s| s.engine.term),
                    commit_index: s.map(|s| s.engine.commit_index),
                    applied_index: s.map(|s| s.engine.applied_index),
                    lag,
                    // Client traffic is never cut, so the operator reaching a member says nothing
                    // about its links: `replicating` is what the leader hears from it.
                    reachable: m.reachable(),
                    // Leaderless: no one acknowledges anyone; the member's own view of its
                    // replicas says whether it is cut off.
                    replicating: match leaderless {
                        true => quorum::reaches_all(s),
                        false => status::replicating(leader, m.id),
                    },
                    faults,
                }
            })
            .collect()
    }

    /// Writes `st` by server-side apply of the status subresource, unless it is what the
    /// last pass wrote.
    async fn write_status(&self, st: &RegisterClusterStatus) -> Result<(), Error> {
        if self.ctx.written.current(self.rc) == *st {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": "caplab.dev/v1alpha1",
            "kind": "RegisterCluster",
            "status": st,
        });
        self.api::<RegisterCluster>()
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&patch))
            .await?;
        self.ctx.written.remember(self.rc, st);
        Ok(())
    }
}

/// How long until the plan's next fault starts or ends (at least 100 ms).
fn next_expiry(plan: &FaultPlan, now: DateTime<Utc>) -> Option<Duration> {
    let t = plan.next_expiry?;
    let ms = (t - now).num_milliseconds().max(100);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(100)))
}
