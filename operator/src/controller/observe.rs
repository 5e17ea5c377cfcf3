//! Observe: the member pods and what each member reports, as one [`Observation`].

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::{Error, Pass};
use crate::crd::RegisterClusterStatus;
use caplab_api::status::Status;

use crate::member_client::MemberClient;
use crate::membership::{self, Observed};
use crate::resources::{self, LABEL_CLUSTER};

/// What a pass observed of the pods and members, updated as the pass deletes and creates pods.
pub(super) struct Observation {
    /// Live (not terminating) member pods by ordinal.
    pub(super) pods: BTreeMap<u32, Pod>,
    /// Ordinals whose pod is terminating.
    pub(super) terminating: BTreeSet<u32>,
    /// Every wanted or existing ordinal.
    pub(super) members: Vec<Observed>,
    /// The member that leads, as first observed.
    pub(super) leader: Option<Observed>,
    /// What the leader reported.
    pub(super) leader_status: Option<Status>,
    /// The next member id to hand out: ids are never reused.
    pub(super) next_id: u64,
}

impl Pass<'_> {
    /// Lists the member pods and polls every member's status (concurrently).
    pub(super) async fn observe(&self) -> Result<Observation, Error> {
        let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", self.name));
        let pod_list = self.api::<Pod>().list(&lp).await?;
        let mut pods: BTreeMap<u32, Pod> = BTreeMap::new();
        let mut terminating: BTreeSet<u32> = BTreeSet::new();
        for p in pod_list.items {
            let Some(o) = resources::ordinal_of(&p.metadata) else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() {
                terminating.insert(o);
            } else {
                pods.insert(o, p);
            }
        }
        let statuses = poll_members(&self.ctx.members, &pods).await;
        let members = self.observed_members(&pods, &statuses);
        let leader = membership::find_leader(&members).cloned();
        let leader_status = leader.as_ref().and_then(|l| l.status.clone());
        let next_id = next_member_id(&self.prev, &members, &statuses);
        Ok(Observation {
            pods,
            terminating,
            members,
            leader,
            leader_status,
            next_id,
        })
    }

    /// One [`Observed`] per wanted or existing ordinal.
    fn observed_members(
        &self,
        pods: &BTreeMap<u32, Pod>,
        statuses: &BTreeMap<u32, Status>,
    ) -> Vec<Observed> {
        let mut ordinals: BTreeSet<u32> = (0..self.replicas).collect();
        ordinals.extend(pods.keys().copied());
        ordinals
            .into_iter()
            .map(|o| {
                let pod = pods.get(&o);
                let id = pod
                    .and_then(|p| resources::member_id_of(&p.metadata))
                    .or_else(|| {
                        self.prev
                            .members
                            .iter()
                            .find(|m| m.ordinal == o)
                            .map(|m| m.id)
                    })
                    .unwrap_or(0);
                // Another member id answering at this pod's IP means the IP went to someone
                // else (the pod list lags): the member is neither reachable nor addressed
                // there, so it drops out of the address book.
                let answered = statuses.get(&o);
                let someone_else = answered.is_some_and(|s| s.id != id);
                Observed {
                    ordinal: o,
                    name: resources::pod_name(&self.name, o),
                    id,
                    pod_exists: pod.is_some(),
                    pod_ip: pod.and_then(running_ip).filter(|_| !someone_else),
                    status: answered.filter(|_| !someone_else).cloned(),
                }
            })
            .collect()
    }
}

fn running_ip(pod: &Pod) -> Option<String> {
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() != Some("Running") {
        return None;
    }
    st.pod_ip.clone().filter(|ip| !ip.is_empty())
}

/// `GET /v1/status` of every running member pod, concurrently; members that do not answer
/// are left out.
async fn poll_members(client: &MemberClient, pods: &BTreeMap<u32, Pod>) -> BTreeMap<u32, Status> {
    let polls = pods.iter().map(|(o, p)| {
        let ip = running_ip(p);
        let mc = client.clone();
        async move {
            let st = match &ip {
                Some(ip) => mc.status(ip).await.ok(),
                None => None,
            };
            (*o, st)
        }
    });
    join_all(polls)
        .await
        .into_iter()
        .filter_map(|(o, st)| Some((o, st?)))
        .collect()
}

/// One past the highest member id ever seen (in the status, on pods, in any member's
/// membership): ids are never reused.
fn next_member_id(
    prev: &RegisterClusterStatus,
    observed: &[Observed],
    statuses: &BTreeMap<u32, Status>,
) -> u64 {
    let seen = observed
        .iter()
        .map(|m| m.id)
        .chain(prev.members.iter().map(|m| m.id))
        .chain(prev.voters.iter().copied())
        .chain(prev.learners.iter().copied())
        .chain(statuses.values().flat_map(|s| {
            s.engine
                .voters
                .iter()
                .chain(s.engine.learners.iter())
                .copied()
        }));
    seen.fold(prev.next_member_id.max(1), |next, id| next.max(id + 1))
}
