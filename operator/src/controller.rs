//! The reconcile pipeline: observe → validate → build → apply → status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::{
    FailoverStatus, MemberStatus, Phase, PrimaryRecord, RegisterCluster, RegisterClusterStatus,
    Replication, MANAGER,
};
use crate::faults::{self, FaultEvent, FaultPlan};
use crate::member_client::{AddressBook, AdminAuth, MemberClient, MemberError, NodeStatus};
use crate::membership::{self, Observed, PrimarySeen, PrimaryStep, Step};
use crate::metrics::Metrics;
use crate::resources::{self, LABEL_CLUSTER, TOKEN_KEY};
use crate::rollout;
use crate::status::{self, Summary};
use crate::validation;

/// Requeue while anything changes (see [`status::busy`]): status follows the members within
/// about this plus one pass.
pub const FAST: Duration = Duration::from_secs(1);
/// Requeue when Ready and quiet (`status.observedAt` is refreshed this often at least).
pub const SLOW: Duration = Duration::from_secs(10);
/// Default async failover grace period.
pub const DEFAULT_FAILOVER_SECS: u64 = 10;

/// Reconcile errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API error.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Member API error.
    #[error("member API: {0}")]
    Member(#[from] MemberError),
    /// The resource has no namespace.
    #[error("RegisterCluster has no namespace")]
    MissingNamespace,
    /// The admin token Secret is malformed.
    #[error("secret {0} has no usable token")]
    BadSecret(String),
}

impl Error {
    /// Label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Member(_) => "member",
            Error::MissingNamespace => "namespace",
            Error::BadSecret(_) => "secret",
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Member HTTP client.
    pub members: MemberClient,
    /// Default member image.
    pub node_image: String,
    /// The last status this operator wrote, per cluster.
    pub written: WrittenStatus,
}

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
    fn key(rc: &RegisterCluster) -> String {
        rc.metadata.uid.clone().unwrap_or_else(|| rc.name_any())
    }

    /// The freshest known status of `rc`.
    fn current(&self, rc: &RegisterCluster) -> RegisterClusterStatus {
        let memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (memo.get(&Self::key(rc)), &rc.metadata.resource_version) {
            (Some((read, written)), Some(seen)) if read == seen => written.clone(),
            _ => rc.status.clone().unwrap_or_default(),
        }
    }

    fn remember(&self, rc: &RegisterCluster, st: &RegisterClusterStatus) {
        if let Some(rv) = &rc.metadata.resource_version {
            let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
            memo.insert(Self::key(rc), (rv.clone(), st.clone()));
        }
    }
}

impl Context {
    async fn event(&self, rc: &RegisterCluster, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            // The recorder groups events by action: keep distinct notes distinct.
            action: note.chars().take(128).collect(),
            note: Some(note),
            secondary: None,
        };
        self.metrics.action(reason);
        if let Err(e) = self.recorder.publish(&ev, &rc.object_ref(&())).await {
            warn!(error = %e, reason, "publishing event failed");
        }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn running_ip(pod: &Pod) -> Option<String> {
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() != Some("Running") {
        return None;
    }
    st.pod_ip.clone().filter(|ip| !ip.is_empty())
}

/// The controller's entry point for one RegisterCluster.
pub async fn reconcile(rc: Arc<RegisterCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start();
    if rc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        return Ok(Action::await_change());
    }
    let pass = Pass::new(&ctx, &rc)?;
    let mut seen = pass.observe().await?;
    if !pass.errors.is_empty() {
        return pass.report_invalid(&seen).await;
    }
    let auth = AdminAuth {
        token: pass.apply_owned().await?,
        cluster: resources::cluster_id(&rc),
    };
    let plan = pass.plan_faults(&seen).await;
    let mut progress = Vec::new();
    pass.apply_members(&mut seen, &plan, &mut progress).await?;
    pass.push_faults(&seen, &plan, &auth).await;
    let mut st = pass.prev.clone();
    let mut converging = pass
        .step_membership(&seen, &auth, &mut st, &mut progress)
        .await;
    converging |= pass
        .roll_outdated(&seen, &plan, converging, &auth, &mut progress)
        .await?;
    pass.finish_status(&seen, Some(&plan), st, converging, &progress)
        .await
}

/// One reconcile of one RegisterCluster: what it reconciles against, fixed for the pass.
struct Pass<'a> {
    ctx: &'a Context,
    rc: &'a RegisterCluster,
    ns: String,
    name: String,
    /// The status as the pass found it.
    prev: RegisterClusterStatus,
    now: DateTime<Utc>,
    /// What is wrong with the spec (empty: valid).
    errors: Vec<String>,
    /// `spec.replicas`, clamped to what the operator manages.
    replicas: u32,
}

/// What a pass observed of the pods and members, updated as the pass deletes and creates pods.
struct Observation {
    /// Live (not terminating) member pods by ordinal.
    pods: BTreeMap<u32, Pod>,
    /// Ordinals whose pod is terminating.
    terminating: BTreeSet<u32>,
    /// Every wanted or existing ordinal.
    members: Vec<Observed>,
    /// The member that leads, as first observed.
    leader: Option<Observed>,
    leader_status: Option<NodeStatus>,
    /// The next member id to hand out: ids are never reused.
    next_id: u64,
}

impl<'a> Pass<'a> {
    fn new(ctx: &'a Context, rc: &'a RegisterCluster) -> Result<Self, Error> {
        let ns = rc.namespace().ok_or(Error::MissingNamespace)?;
        Ok(Pass {
            ctx,
            rc,
            ns,
            name: rc.name_any(),
            prev: ctx.written.current(rc),
            now: Utc::now(),
            errors: validation::validate(rc),
            replicas: u32::try_from(rc.spec.replicas.clamp(0, validation::MAX_REPLICAS))
                .unwrap_or(0),
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    async fn event(&self, warning: bool, reason: &str, note: String) {
        self.ctx.event(self.rc, warning, reason, note).await;
    }

    /// Lists the member pods and polls every member's status (concurrently).
    async fn observe(&self) -> Result<Observation, Error> {
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
        statuses: &BTreeMap<u32, NodeStatus>,
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

    /// With an invalid spec: says so once (a Warning Event saying how to fix it) and keeps
    /// observing and reporting the members, touching nothing (no pod, Secret, Service or
    /// admin call).
    async fn report_invalid(&self, seen: &Observation) -> Result<Action, Error> {
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

    /// The admin token Secret (created once), the client Service and the
    /// PodDisruptionBudget; returns the token.
    async fn apply_owned(&self) -> Result<String, Error> {
        let token = ensure_secret(self.ctx, self.rc, &self.ns).await?;
        self.api::<Service>()
            .patch(
                &self.name,
                &apply_params(),
                &Patch::Apply(&resources::client_service(self.rc)),
            )
            .await?;
        if let Err(e) = self.apply_disruption_budget().await {
            // The members run without it; say what is missing rather than stop managing them.
            warn!(cluster = %self.name, error = %e, "applying the PodDisruptionBudget failed");
            self.ctx.metrics.error("kube");
            let note = format!(
                "could not apply PodDisruptionBudget {}: {e}; a drain may take more than one \
                 member at a time (the operator needs get/create/patch on \
                 policy/poddisruptionbudgets)",
                resources::pdb_name(&self.name)
            );
            self.event(true, "DisruptionBudgetFailed", note).await;
        }
        Ok(token)
    }

    /// Applies the PodDisruptionBudget as `policy/v1`, or as `policy/v1beta1` where the
    /// server does not serve v1 (Kubernetes before 1.21 answers 404 for the v1 resource).
    async fn apply_disruption_budget(&self) -> Result<(), kube::Error> {
        let pdb = serde_json::to_value(resources::disruption_budget(self.rc))
            .map_err(kube::Error::SerdeError)?;
        let name = resources::pdb_name(&self.name);
        match self.apply_pdb_as("v1", &name, &pdb).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                debug!(cluster = %self.name, "policy/v1 not served: PodDisruptionBudget as policy/v1beta1");
                self.apply_pdb_as("v1beta1", &name, &pdb).await
            }
            other => other,
        }
    }

    async fn apply_pdb_as(
        &self,
        version: &str,
        name: &str,
        pdb: &serde_json::Value,
    ) -> Result<(), kube::Error> {
        let gvk = kube::api::GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
        let mut body = pdb.clone();
        body["apiVersion"] = json!(resource.api_version);
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.ns, &resource);
        api.patch(name, &apply_params(), &Patch::Apply(&body))
            .await
            .map(drop)
    }

    /// What the faults in the spec mean now; announces faults that start or end.
    async fn plan_faults(&self, seen: &Observation) -> FaultPlan {
        let ids: BTreeMap<u32, u64> = seen
            .members
            .iter()
            .filter(|m| m.id > 0)
            .map(|m| (m.ordinal, m.id))
            .collect();
        let leader_ordinal = seen.leader.as_ref().map(|l| l.ordinal);
        let plan = faults::plan(
            &self.rc.spec.faults,
            &self.prev.faults,
            self.now,
            self.replicas,
            &ids,
            leader_ordinal,
        );
        let name_of = |o: u32| match seen.members.iter().find(|m| m.ordinal == o) {
            Some(m) if m.id > 0 => m.label(),
            _ => resources::pod_name(&self.name, o),
        };
        for ev in &plan.events {
            let note = ev.note(name_of);
            info!(cluster = %self.name, %note, "fault changed");
            let reason = match ev {
                FaultEvent::Started { .. } => "FaultStarted",
                FaultEvent::Ended { .. } => "FaultEnded",
            };
            self.event(false, reason, note).await;
        }
        plan
    }

    /// Member pods: crash-fault targets kept down, failed pods replaced, missing ones created.
    async fn apply_members(
        &self,
        seen: &mut Observation,
        plan: &FaultPlan,
        progress: &mut Vec<String>,
    ) -> Result<(), Error> {
        self.keep_crashed_down(seen, plan).await?;
        self.replace_failed(seen, plan, progress).await?;
        self.create_missing(seen, plan, progress).await
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
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Failed") | Some("Succeeded")) && !plan.crashed.contains(o) {
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
            let mut id = 0;
            if self.rc.spec.storage.is_some() {
                if let Some(pvc) = pvc_api.get_opt(&resources::pvc_name(&self.name, o)).await? {
                    id = resources::member_id_of(&pvc.metadata).unwrap_or(0);
                }
            }
            if id == 0 {
                id = seen.next_id;
                seen.next_id += 1;
            }
            if let Some(pvc) = resources::member_pvc(self.rc, o, id) {
                pvc_api
                    .patch(
                        &resources::pvc_name(&self.name, o),
                        &apply_params(),
                        &Patch::Apply(&pvc),
                    )
                    .await?;
            }
            let pod = resources::member_pod(self.rc, o, id, &self.ctx.node_image);
            let pn = resources::pod_name(&self.name, o);
            self.api::<Pod>()
                .patch(&pn, &apply_params(), &Patch::Apply(&pod))
                .await?;
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
    async fn roll_outdated(
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
        if Some(next) == leader && self.rc.spec.replication != Replication::Raft {
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
        let role = if Some(next) == leader {
            " (the leader: expect a failover)"
        } else {
            ""
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
            .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.applied_index))
        else {
            return "waiting for an up-to-date secondary to hand the primary role to".into();
        };
        let why = "before its pod is recreated from the changed spec";
        switchover(self.ctx, self.rc, auth, (primary, to), why).await
    }

    /// The address book and each member's fault set, to every reachable member (failures are
    /// logged; the next pass retries). The book holds exactly the members whose pod runs now,
    /// each under the id and incarnation that answered at its address.
    async fn push_faults(&self, seen: &Observation, plan: &FaultPlan, auth: &AdminAuth) {
        let members = &self.ctx.members;
        let book = membership::address_book(&seen.members);
        for m in seen.members.iter().filter(|m| m.reachable()) {
            let Some(to) = m.recipient() else {
                continue;
            };
            if let Err(e) = members.peers(to, auth, &book).await {
                if e.misdirected() {
                    // Not the member we think: nothing more for it until it is observed again.
                    misdirected(self.ctx, m, &e);
                    continue;
                }
                debug!(error = %e, pod = %m.name, "pushing peers failed");
            }
            let desired = plan
                .sets
                .get(&m.ordinal)
                .cloned()
                .unwrap_or_default()
                .normalized();
            let reported = m
                .status
                .as_ref()
                .and_then(NodeStatus::fault_set)
                .map(|f| f.normalized());
            if reported.as_ref() == Some(&desired) {
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

    /// Takes the next membership step of the replication mode (recording a failover in `st`);
    /// returns whether membership is still converging.
    async fn step_membership(
        &self,
        seen: &Observation,
        auth: &AdminAuth,
        st: &mut RegisterClusterStatus,
        progress: &mut Vec<String>,
    ) -> bool {
        let (converging, done) = match self.rc.spec.replication {
            Replication::Raft => {
                let step = membership::next_raft_step(
                    self.replicas,
                    &seen.members,
                    self.prev.bootstrapped,
                );
                let converging = step.converging();
                let done = raft_step(
                    self.ctx,
                    self.rc,
                    &seen.members,
                    seen.leader.as_ref(),
                    auth,
                    step,
                )
                .await;
                (converging, done)
            }
            Replication::Async | Replication::Sync => {
                self.reconcile_failover(seen, st).await;
                let step = self.next_primary_step(seen, st);
                let converging = !matches!(step, PrimaryStep::Stable);
                let done = primary_step(self.ctx, self.rc, &seen.members, auth, step, st).await;
                (converging, done.map(|d| self.write_set_note(d)))
            }
        };
        progress.extend(done);
        converging
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
            epoch: s.term,
            last_seq: s.last_log_index,
            discarded_writes: s.discarded_writes.unwrap_or(0),
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

    /// Completes `st` from what the pass saw and did, announces transitions, writes it, and
    /// picks the requeue: about a second while anything changes ([`status::busy`]), the calm
    /// interval otherwise, and the next fault expiry at the latest. `plan` is `None` when the
    /// spec is invalid: the faults keep the state the last valid pass gave them.
    async fn finish_status(
        &self,
        seen: &Observation,
        plan: Option<&FaultPlan>,
        mut st: RegisterClusterStatus,
        converging: bool,
        progress: &[String],
    ) -> Result<Action, Error> {
        let converging = converging || !progress.is_empty();
        self.complete_status(seen, plan, &mut st, converging, progress);
        for n in status::transitions(&self.prev, &st) {
            self.event(n.warning, n.reason, n.note).await;
        }
        write_status(self.ctx, self.rc, &self.ns, &st).await?;

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
        let bootstrapped =
            prev.bootstrapped || (seen.leader.is_some() && membership::initialised(&seen.members));
        // What runs: recorded once something was created from a valid spec, never from a
        // rejected one.
        let replication = match self.errors.is_empty() {
            true => Some(prev.replication.unwrap_or(self.rc.spec.replication)),
            false => prev.replication,
        };
        let members = member_statuses(self.rc, &seen.members, replicas, leader_status, prev, plan);
        let voters: Vec<u64> = match replication {
            Some(Replication::Async) | Some(Replication::Sync) => {
                members.iter().map(|m| m.id).collect()
            }
            _ => leader_status.map(|s| s.voters.clone()).unwrap_or_default(),
        };
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
            term: leader_status.map(|s| s.term),
            progress: Some(progress_msg.as_str()).filter(|p| !p.is_empty()),
            campaigning: status::campaigning(&members, prev.term),
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
            &members,
            prev.last_leader.as_ref(),
        );
        st.leader = leader_name;
        st.leader_id = seen.leader.as_ref().map(|l| l.id);
        st.term = status::highest_term(&members, prev.term);
        st.commit_index = leader_status.map(|s| s.commit_index).or(prev.commit_index);
        st.bootstrapped = bootstrapped;
        st.next_member_id = seen.next_id;
        if let Some(ls) = leader_status {
            st.voters = ls.voters.clone();
            st.learners = ls.learners.clone();
        }
        st.members = members;
        if let Some(plan) = plan {
            st.faults = plan.statuses.clone();
            let active = plan.active_names();
            st.active_faults = Some(active.join(",")).filter(|a| !a.is_empty());
        }
    }
}

/// Server-side apply as the operator's field manager.
fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// `GET /v1/status` of every running member pod, concurrently; members that do not answer
/// are left out.
async fn poll_members(
    client: &MemberClient,
    pods: &BTreeMap<u32, Pod>,
) -> BTreeMap<u32, NodeStatus> {
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
    statuses: &BTreeMap<u32, NodeStatus>,
) -> u64 {
    let seen = observed
        .iter()
        .map(|m| m.id)
        .chain(prev.members.iter().map(|m| m.id))
        .chain(prev.voters.iter().copied())
        .chain(prev.learners.iter().copied())
        .chain(
            statuses
                .values()
                .flat_map(|s| s.voters.iter().chain(s.learners.iter()).copied()),
        );
    seen.fold(prev.next_member_id.max(1), |next, id| next.max(id + 1))
}

fn next_expiry(plan: &FaultPlan, now: DateTime<Utc>) -> Option<Duration> {
    let t = plan.next_expiry?;
    let ms = (t - now).num_milliseconds().max(100);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(100)))
}

fn member_statuses(
    rc: &RegisterCluster,
    observed: &[Observed],
    replicas: u32,
    leader: Option<&NodeStatus>,
    prev: &RegisterClusterStatus,
    plan: Option<&FaultPlan>,
) -> Vec<MemberStatus> {
    let name = rc.name_any();
    observed
        .iter()
        .filter(|m| m.ordinal < replicas || m.pod_exists)
        .map(|m| {
            let s = m.status.as_ref();
            let lag = match (leader, s) {
                (Some(l), Some(s)) => Some(l.commit_index.saturating_sub(s.applied_index)),
                _ => None,
            };
            let faults = match plan {
                Some(p) => p.member_faults.get(&m.ordinal).cloned().unwrap_or_default(),
                None => prev
                    .members
                    .iter()
                    .find(|x| x.ordinal == m.ordinal)
                    .map(|x| x.faults.clone())
                    .unwrap_or_default(),
            };
            MemberStatus {
                name: resources::pod_name(&name, m.ordinal),
                ordinal: m.ordinal,
                id: m.id,
                pod_ip: m.pod_ip.clone(),
                role: Some(
                    s.map(|s| s.role.clone()).unwrap_or_else(|| {
                        if m.pod_exists { "unknown" } else { "down" }.to_string()
                    }),
                ),
                term: s.map(|s| s.term),
                commit_index: s.map(|s| s.commit_index),
                applied_index: s.map(|s| s.applied_index),
                lag,
                // Client traffic is never cut, so the operator reaching a member says nothing
                // about its links: `replicating` is what the leader hears from it.
                reachable: m.reachable(),
                replicating: status::replicating(leader, m.id),
                faults,
            }
        })
        .collect()
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
        && s.leader == Some(primary.id)
        && primary.hears_from(m.id)
        && primary
            .peers
            .get(&m.id.to_string())
            .is_some_and(|p| p.match_index.is_some());
    rejoined.then(|| {
        Some(
            s.discarded_writes
                .unwrap_or(0)
                .saturating_sub(f.discarded_before),
        )
    })
}

/// Takes one Raft membership step; says what was done (or why nothing), `None` when stable.
async fn raft_step(
    ctx: &Context,
    rc: &RegisterCluster,
    observed: &[Observed],
    leader: Option<&Observed>,
    auth: &AdminAuth,
    step: Step,
) -> Option<String> {
    let at = |o: u32| observed.iter().find(|m| m.ordinal == o);
    let names = |ids: &[u64]| membership::labels_of(observed, ids);
    let leader_to = leader.and_then(Observed::recipient);
    match step {
        Step::Stable => None,
        Step::Wait(why) => Some(why),
        Step::Bootstrap { ordinal, members } => {
            let ids: Vec<u64> = members.keys().copied().collect();
            let note = format!("initialised Raft with voters {}", names(&ids));
            bootstrap(ctx, rc, at(ordinal)?, auth, &members, note).await
        }
        Step::AddLearner { ordinal, id, entry } => {
            let to = leader_to?;
            let m = at(ordinal)?;
            match ctx.members.add_learner(to, auth, id, &entry).await {
                Ok(()) => {
                    let note = format!("{} joined as a learner", m.label());
                    ctx.event(rc, false, "MemberAdded", note).await;
                    Some(format!("added learner {}", m.name))
                }
                Err(e) => member_failed(ctx, leader?, "add-learner", e),
            }
        }
        Step::SetVoters {
            voters,
            added,
            removed,
        } => {
            let to = leader_to?;
            match ctx.members.set_voters(to, auth, &voters).await {
                Ok(()) => {
                    let all = names(&voters);
                    if !added.is_empty() {
                        let note = format!("promoted {} to voter; voters {all}", names(&added));
                        ctx.event(rc, false, "MemberPromoted", note).await;
                    }
                    if !removed.is_empty() {
                        let note = format!("removed voter {}; voters {all}", names(&removed));
                        ctx.event(rc, false, "MemberRemoved", note).await;
                    }
                    Some(format!("voters now {all}"))
                }
                Err(e) => member_failed(ctx, leader?, "set-voters", e),
            }
        }
        Step::TransferLeader {
            to: target,
            fallback_voters,
        } => {
            let (l, to) = (leader?, leader_to?);
            let target_name = membership::label_of(observed, target);
            match ctx.members.transfer_leader(to, auth, target).await {
                Ok(()) => {
                    let note = format!(
                        "moving leadership from {} to {target_name} before its removal",
                        l.label()
                    );
                    ctx.event(rc, false, "LeaderTransfer", note).await;
                    Some(format!("transferring leadership to {target_name}"))
                }
                Err(e) if matches!(e.status(), Some(501) | Some(404)) => {
                    match ctx.members.set_voters(to, auth, &fallback_voters).await {
                        Ok(()) => {
                            let note = format!(
                                "removed voter {} (the leader); voters {}",
                                l.label(),
                                names(&fallback_voters)
                            );
                            ctx.event(rc, false, "MemberRemoved", note).await;
                            Some(format!("removed the leader {}", l.name))
                        }
                        Err(e) => member_failed(ctx, l, "set-voters", e),
                    }
                }
                Err(e) => member_failed(ctx, l, "transfer-leader", e),
            }
        }
        Step::DeletePod { ordinal } => delete_member_pod(ctx, rc, ordinal).await,
    }
}

/// Deletes the pod of a member that was scaled away (and its claim), once no member
/// replicates to it any more.
async fn delete_member_pod(ctx: &Context, rc: &RegisterCluster, ordinal: u32) -> Option<String> {
    let pn = resources::pod_name(&rc.name_any(), ordinal);
    let ns = rc.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = pods.delete(&pn, &DeleteParams::default()).await {
        warn!(error = %e, pod = %pn, "deleting pod failed");
        return Some(format!("deleting {pn}"));
    }
    if rc.spec.storage.is_some() || ordinal >= u32::try_from(rc.spec.replicas.max(0)).unwrap_or(0) {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = pvcs
            .delete(
                &resources::pvc_name(&rc.name_any(), ordinal),
                &DeleteParams::default(),
            )
            .await;
    }
    ctx.event(
        rc,
        false,
        "MemberDeleted",
        format!("scaled down: deleted {pn}"),
    )
    .await;
    Some(format!("deleted {pn}"))
}

/// A planned switchover from primary `from` to member `to`, with an Event either way; says
/// what happened (a failure is retried by the next pass).
async fn switchover(
    ctx: &Context,
    rc: &RegisterCluster,
    auth: &AdminAuth,
    (from, to): (&Observed, &Observed),
    why: &str,
) -> String {
    let Some(recipient) = from.recipient() else {
        return format!("waiting for the primary {}'s address", from.name);
    };
    match ctx.members.transfer_leader(recipient, auth, to.id).await {
        Ok(()) => {
            info!(cluster = %rc.name_any(), from = %from.name, to = %to.name, why, "switchover");
            let note = format!(
                "primary {} handed its role to {} {why}",
                from.label(),
                to.label()
            );
            ctx.event(rc, false, "Switchover", note).await;
            format!("handed the primary role from {} to {}", from.name, to.name)
        }
        Err(e) if e.misdirected() => misdirected(ctx, from, &e),
        Err(e) => {
            warn!(cluster = %rc.name_any(), error = %e, "switchover failed");
            let note = format!(
                "switchover from primary {} to {} failed: {e}; retrying",
                from.label(),
                to.label()
            );
            ctx.event(rc, true, "SwitchoverFailed", note).await;
            format!(
                "switchover from {} to {} failed; retrying",
                from.name, to.name
            )
        }
    }
}

/// Takes one primary–secondary step (recording a failover's epoch in `st`); says what was
/// done (or why nothing), `None` when stable.
async fn primary_step(
    ctx: &Context,
    rc: &RegisterCluster,
    observed: &[Observed],
    auth: &AdminAuth,
    step: PrimaryStep,
    st: &mut RegisterClusterStatus,
) -> Option<String> {
    let at = |o: u32| observed.iter().find(|m| m.ordinal == o);
    let by_id = |id: u64| observed.iter().find(|m| m.id == id);
    match step {
        PrimaryStep::Stable => None,
        PrimaryStep::Wait(w) => Some(w),
        PrimaryStep::PrimaryDown => Some("primary unreachable; waiting before failover".into()),
        PrimaryStep::Bootstrap { ordinal, members } => {
            let m = at(ordinal)?;
            let note = format!("{} is the primary of epoch 1", m.label());
            bootstrap(ctx, rc, m, auth, &members, note).await
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
                if let Err(e) = ctx.members.set_primary(to, auth, primary, &entry).await {
                    failed.extend(member_failed(ctx, m, "set-primary", e));
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
            Some(switchover(ctx, rc, auth, (at(ordinal)?, by_id(to)?), why).await)
        }
        PrimaryStep::DeletePod { ordinal } => delete_member_pod(ctx, rc, ordinal).await,
        PrimaryStep::SetMembers {
            ordinal,
            members,
            added,
            removed,
        } => {
            let p = at(ordinal)?;
            match ctx.members.set_voters(p.recipient()?, auth, &members).await {
                Ok(()) => {
                    Some(set_members_done(ctx, rc, observed, &members, &added, &removed).await)
                }
                Err(e) => member_failed(ctx, p, "set-members", e),
            }
        }
        PrimaryStep::Failover { ordinal, loss, .. } => {
            let m = at(ordinal)?;
            match ctx.members.promote(m.recipient()?, auth).await {
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
                    ctx.event(rc, true, "Failover", note).await;
                    st.primary_unreachable_since = None;
                    Some(format!("promoted {}", m.name))
                }
                Err(e) => {
                    st.last_failover = None;
                    member_failed(ctx, m, "promote", e)
                }
            }
        }
    }
}

/// Reports a changed member set: an Event for members that left because they are down
/// (or were scaled away) and for those that joined; says what the set is now.
async fn set_members_done(
    ctx: &Context,
    rc: &RegisterCluster,
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
        ctx.event(rc, false, "MemberRemoved", note).await;
    }
    if !added.is_empty() {
        let note = format!(
            "added {} to the primary's write set (it catches up as a secondary); write set {all}",
            names(added)
        );
        ctx.event(rc, false, "MemberAdded", note).await;
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

/// `init` on member `m`; on success a `Bootstrapped` event saying `note`.
async fn bootstrap(
    ctx: &Context,
    rc: &RegisterCluster,
    m: &Observed,
    auth: &AdminAuth,
    members: &AddressBook,
    note: String,
) -> Option<String> {
    match ctx.members.init(m.recipient()?, auth, members).await {
        Ok(()) => {
            ctx.event(rc, false, "Bootstrapped", note).await;
            Some("bootstrapped".into())
        }
        Err(e) => member_failed(ctx, m, "init", e),
    }
}

/// A failed admin call to member `m`: counted and logged; says what failed.
fn member_failed(ctx: &Context, m: &Observed, what: &str, e: MemberError) -> Option<String> {
    if e.misdirected() {
        return Some(misdirected(ctx, m, &e));
    }
    ctx.metrics.error("member");
    warn!(error = %e, what, pod = %m.name, "member admin call failed");
    Some(format!("{what} on {} failed: {e}", m.name))
}

/// A 421 from member `m`: whoever answers at its address is not the member the operator
/// thinks (another cluster, id or incarnation). Nothing is retried: the next pass observes
/// the pods and members again and addresses whoever is really there.
fn misdirected(ctx: &Context, m: &Observed, e: &MemberError) -> String {
    ctx.metrics.error("misdirected");
    warn!(error = %e, pod = %m.name, id = m.id, "the pod is not the member the operator thinks");
    format!(
        "{} is not {} any more ({e}); observing again",
        m.name,
        m.label()
    )
}

async fn ensure_secret(ctx: &Context, rc: &RegisterCluster, ns: &str) -> Result<String, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = resources::secret_name(&rc.name_any());
    let read = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    if let Some(s) = api.get_opt(&name).await? {
        return read(&s).ok_or(Error::BadSecret(name));
    }
    let token = new_token();
    let secret = resources::admin_secret(rc, &token);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(token),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(&name).await?;
            read(&s).ok_or(Error::BadSecret(name))
        }
        Err(e) => Err(e.into()),
    }
}

fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

async fn write_status(
    ctx: &Context,
    rc: &RegisterCluster,
    ns: &str,
    st: &RegisterClusterStatus,
) -> Result<(), Error> {
    if ctx.written.current(rc) == *st {
        return Ok(());
    }
    let api: Api<RegisterCluster> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": "caplab.dev/v1alpha1",
        "kind": "RegisterCluster",
        "status": st,
    });
    api.patch_status(
        &rc.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.written.remember(rc, st);
    Ok(())
}

/// Requeue policy on errors.
pub fn error_policy(rc: Arc<RegisterCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %rc.name_any(), error = %err, "reconcile failed");
    ctx.metrics.error(err.kind());
    Action::requeue(Duration::from_secs(5))
}
