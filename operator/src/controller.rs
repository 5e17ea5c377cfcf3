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
    FailoverStatus, MemberStatus, Phase, RegisterCluster, RegisterClusterStatus, Replication,
    MANAGER,
};
use crate::faults::{self, FaultEvent, FaultPlan};
use crate::member_client::{MemberClient, MemberError, NodeStatus};
use crate::membership::{self, Observed, PrimaryStep, Step};
use crate::metrics::Metrics;
use crate::resources::{self, LABEL_CLUSTER, TOKEN_KEY};
use crate::rollout;
use crate::status::{self, Summary};
use crate::validation;

/// Requeue while converging.
pub const FAST: Duration = Duration::from_secs(2);
/// Requeue when stable.
pub const SLOW: Duration = Duration::from_secs(15);
/// Requeue with an invalid spec.
pub const INVALID: Duration = Duration::from_secs(60);
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
    if let Some(action) = pass.validate_or_report(&seen).await? {
        return Ok(action);
    }
    let token = pass.apply_owned().await?;
    let plan = pass.plan_faults(&seen).await;
    let mut progress = Vec::new();
    pass.apply_members(&mut seen, &plan, &mut progress).await?;
    pass.push_faults(&seen, &plan, &token).await;
    let mut st = pass.prev.clone();
    let mut converging = pass
        .step_membership(&seen, &token, &mut st, &mut progress)
        .await;
    converging |= pass
        .roll_outdated(&seen, &plan, converging, &token, &mut progress)
        .await?;
    pass.finish_status(&seen, &plan, st, converging, &progress)
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
                Observed {
                    ordinal: o,
                    id,
                    pod_exists: pod.is_some(),
                    pod_ip: pod.and_then(running_ip),
                    status: statuses.get(&o).cloned(),
                }
            })
            .collect()
    }

    /// With an invalid spec: says so once (a Warning event), writes the Failed status and
    /// touches nothing else; returns the requeue. `None` with a valid spec.
    async fn validate_or_report(&self, seen: &Observation) -> Result<Option<Action>, Error> {
        if self.errors.is_empty() {
            return Ok(None);
        }
        let prev = &self.prev;
        let msg = self.errors.join("; ");
        let known = prev
            .conditions
            .iter()
            .any(|c| c.type_ == "SpecValid" && c.status == "False" && c.message == msg);
        if !known {
            warn!(cluster = %self.name, namespace = %self.ns, %msg, "invalid spec");
            self.event(true, "InvalidSpec", msg.clone()).await;
        }
        let mut st = prev.clone();
        let leader_status = seen.leader_status.as_ref();
        let members = member_statuses(
            self.rc,
            &seen.members,
            self.replicas,
            leader_status,
            prev,
            None,
        );
        let voters = leader_status.map(|s| s.voters.clone()).unwrap_or_default();
        let leader_name = self.leader_name(seen);
        let summary = Summary {
            errors: &self.errors,
            bootstrapped: prev.bootstrapped,
            leader: leader_name.as_deref(),
            replicas: u32::try_from(prev.replicas.max(0)).unwrap_or(0),
            members: &members,
            voters: &voters,
            converging: false,
            progress: None,
            term: leader_status.map(|s| s.term),
        };
        st.phase = Some(Phase::Failed);
        st.conditions = self.conditions(&summary, Phase::Failed);
        st.members = members;
        st.leader = leader_name;
        st.observed_generation = self.rc.metadata.generation;
        write_status(self.ctx, self.rc, &self.ns, &st).await?;
        Ok(Some(Action::requeue(INVALID)))
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

    /// The admin token Secret (created once) and the client Service; returns the token.
    async fn apply_owned(&self) -> Result<String, Error> {
        let token = ensure_secret(self.ctx, self.rc, &self.ns).await?;
        self.api::<Service>()
            .patch(
                &self.name,
                &apply_params(),
                &Patch::Apply(&resources::client_service(self.rc)),
            )
            .await?;
        Ok(token)
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
        for ev in &plan.events {
            match ev {
                FaultEvent::Started { name: f, detail } => {
                    info!(cluster = %self.name, fault = %f, %detail, "fault started");
                    let note = format!("fault {f} started: {detail}");
                    self.event(false, "FaultStarted", note).await;
                }
                FaultEvent::Ended { name: f, why } => {
                    info!(cluster = %self.name, fault = %f, why, "fault ended");
                    let note = format!("fault {f} ended ({why})");
                    self.event(false, "FaultEnded", note).await;
                }
            }
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
        token: &str,
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
            progress.push(self.hand_over_primary(seen, &outdated, token).await);
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
        token: &str,
    ) -> String {
        let Some((primary, ip)) = seen
            .leader
            .as_ref()
            .and_then(|p| Some((p, p.pod_ip.clone()?)))
        else {
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
        switchover(self.ctx, self.rc, (&ip, token), (primary.id, to.id), why).await
    }

    /// The address book and each member's fault set, to every reachable member (failures are
    /// logged; the next pass retries).
    async fn push_faults(&self, seen: &Observation, plan: &FaultPlan, token: &str) {
        let members = &self.ctx.members;
        let book: BTreeMap<u64, String> = seen
            .members
            .iter()
            .filter(|m| m.id > 0)
            .filter_map(|m| m.peer_addr().map(|a| (m.id, a)))
            .collect();
        for m in seen.members.iter().filter(|m| m.reachable()) {
            let Some(ip) = m.pod_ip.as_deref() else {
                continue;
            };
            if let Err(e) = members.peers(ip, token, &book).await {
                debug!(error = %e, ordinal = m.ordinal, "pushing peers failed");
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
            match members.faults(ip, token, &desired).await {
                Ok(()) => {
                    info!(cluster = %self.name, ordinal = m.ordinal, faults = ?desired, "pushed fault set");
                    self.ctx.metrics.action("PushFaults");
                }
                Err(e) => {
                    self.ctx.metrics.error("member");
                    warn!(error = %e, ordinal = m.ordinal, "pushing faults failed");
                }
            }
        }
    }

    /// Takes the next membership step of the replication mode (recording a failover in `st`);
    /// returns whether membership is still converging.
    async fn step_membership(
        &self,
        seen: &Observation,
        token: &str,
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
                    token,
                    step,
                )
                .await;
                (converging, done)
            }
            Replication::Async | Replication::Sync => {
                let step = self.next_primary_step(seen, st);
                let converging = !matches!(step, PrimaryStep::Stable);
                let done = primary_step(self.ctx, self.rc, &seen.members, token, step, st).await;
                (converging, done)
            }
        };
        progress.extend(done);
        converging
    }

    /// The primary modes' next step; tracks since when the primary is unreachable and records
    /// a failover about to happen in `st`.
    fn next_primary_step(&self, seen: &Observation, st: &mut RegisterClusterStatus) -> PrimaryStep {
        let prev = &self.prev;
        let down_since = if seen.leader.is_none() && prev.bootstrapped {
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
        let last_primary = prev
            .leader_id
            .map(|id| (id, prev.commit_index.unwrap_or(0)));
        let step = membership::next_primary_step(
            self.replicas,
            &seen.members,
            prev.bootstrapped,
            last_primary,
            down_since.map(|t| (self.now - t).num_seconds()),
            self.rc
                .spec
                .failover_after_seconds
                .unwrap_or(DEFAULT_FAILOVER_SECS),
        );
        if let PrimaryStep::Failover {
            to,
            from,
            possible_loss,
            ..
        } = &step
        {
            st.last_failover = Some(FailoverStatus {
                time: ts(self.now),
                from: *from,
                to: *to,
                possible_loss: *possible_loss,
            });
        }
        step
    }

    /// Completes `st` from what the pass saw and did, announces transitions, writes it, and
    /// picks the requeue: soon while anything is moving, at the next fault expiry at the latest.
    async fn finish_status(
        &self,
        seen: &Observation,
        plan: &FaultPlan,
        mut st: RegisterClusterStatus,
        converging: bool,
        progress: &[String],
    ) -> Result<Action, Error> {
        let phase = self.complete_status(seen, plan, &mut st, converging, progress);
        announce(self.ctx, self.rc, &self.prev, &st).await;
        write_status(self.ctx, self.rc, &self.ns, &st).await?;

        let mut wait = if converging || phase != Phase::Ready || !progress.is_empty() {
            FAST
        } else {
            SLOW
        };
        if let Some(exp) = next_expiry(plan, self.now) {
            wait = wait.min(exp);
        }
        Ok(Action::requeue(wait))
    }

    /// Fills in `st`: phase, conditions, members, leader, membership, faults; returns the phase.
    fn complete_status(
        &self,
        seen: &Observation,
        plan: &FaultPlan,
        st: &mut RegisterClusterStatus,
        converging: bool,
        progress: &[String],
    ) -> Phase {
        let prev = &self.prev;
        let replicas = self.replicas;
        let leader_status = seen.leader_status.as_ref();
        let leader_name = self.leader_name(seen);
        let bootstrapped =
            prev.bootstrapped || (seen.leader.is_some() && membership::initialised(&seen.members));
        let members = member_statuses(
            self.rc,
            &seen.members,
            replicas,
            leader_status,
            prev,
            Some(plan),
        );
        let voters: Vec<u64> = match self.rc.spec.replication {
            Replication::Raft => leader_status.map(|s| s.voters.clone()).unwrap_or_default(),
            _ => members.iter().map(|m| m.id).collect(),
        };
        let wanted: Vec<MemberStatus> = members
            .iter()
            .filter(|m| m.ordinal < replicas)
            .cloned()
            .collect();
        let progress_msg = progress.join("; ");
        let summary = Summary {
            errors: &self.errors,
            bootstrapped,
            leader: leader_name.as_deref(),
            replicas,
            members: &wanted,
            voters: &voters,
            converging: converging || !progress.is_empty(),
            term: leader_status.map(|s| s.term),
            progress: if progress.is_empty() {
                None
            } else {
                Some(progress_msg.as_str())
            },
        };
        let phase = status::phase(&summary);
        let ready = wanted
            .iter()
            .filter(|m| status::member_ok(m, &voters) && m.term >= summary.term)
            .count();
        st.conditions = self.conditions(&summary, phase);
        st.observed_generation = self.rc.metadata.generation;
        st.phase = Some(phase);
        st.replication = Some(prev.replication.unwrap_or(self.rc.spec.replication));
        st.replicas = self.rc.spec.replicas;
        st.ready_replicas = i32::try_from(ready).unwrap_or(0);
        st.ready = Some(format!("{ready}/{replicas}"));
        st.leader = leader_name;
        st.leader_id = seen.leader.as_ref().map(|l| l.id);
        st.term = leader_status.map(|s| s.term).or(prev.term);
        st.commit_index = leader_status.map(|s| s.commit_index).or(prev.commit_index);
        st.bootstrapped = bootstrapped;
        st.next_member_id = seen.next_id;
        if let Some(ls) = leader_status {
            st.voters = ls.voters.clone();
            st.learners = ls.learners.clone();
        }
        st.members = members;
        st.faults = plan.statuses.clone();
        let active = plan.active_names();
        st.active_faults = if active.is_empty() {
            None
        } else {
            Some(active.join(","))
        };
        phase
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

/// Events derived from status transitions (leader, quorum, membership).
async fn announce(
    ctx: &Context,
    rc: &RegisterCluster,
    prev: &RegisterClusterStatus,
    st: &RegisterClusterStatus,
) {
    if st.leader_id.is_some() && st.leader_id != prev.leader_id {
        let old = prev
            .leader
            .as_deref()
            .map(|l| format!("{l} (term {})", prev.term.unwrap_or(0)))
            .unwrap_or_else(|| "none".into());
        let new = format!(
            "{} (term {})",
            st.leader.as_deref().unwrap_or("?"),
            st.term.unwrap_or(0)
        );
        ctx.event(rc, false, "LeaderChanged", format!("leader {old} -> {new}"))
            .await;
    }
    let was = prev.phase;
    let is = st.phase;
    if is == Some(Phase::NoQuorum) && was != Some(Phase::NoQuorum) {
        ctx.event(rc, true, "QuorumLost", "no member is leader".into())
            .await;
    }
    if was == Some(Phase::NoQuorum) && matches!(is, Some(Phase::Ready) | Some(Phase::Degraded)) {
        ctx.event(
            rc,
            false,
            "QuorumRegained",
            format!("leader {}", st.leader.as_deref().unwrap_or("?")),
        )
        .await;
    }
    if is == Some(Phase::Ready) && was != Some(Phase::Ready) {
        ctx.event(
            rc,
            false,
            "Ready",
            format!("{} members ready", st.ready_replicas),
        )
        .await;
    }
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
                // Client traffic is never cut, so the operator reaching a member is not enough:
                // a partitioned member is one the leader no longer hears from.
                reachable: m.reachable() && leader.is_none_or(|l| l.hears_from(m.id)),
                faults,
            }
        })
        .collect()
}

async fn raft_step(
    ctx: &Context,
    rc: &RegisterCluster,
    observed: &[Observed],
    leader: Option<&Observed>,
    token: &str,
    step: Step,
) -> Option<String> {
    let ip_of = |o: u32| pod_ip_of(observed, o);
    let leader_ip = leader.and_then(|l| l.pod_ip.clone());
    let cluster = rc.name_any();
    match step {
        Step::Stable => None,
        Step::Wait(why) => Some(why),
        Step::Bootstrap { ordinal, members } => {
            let ids: Vec<u64> = members.keys().copied().collect();
            let note = format!("initialised Raft with voters {ids:?}");
            bootstrap(ctx, rc, &ip_of(ordinal)?, token, &members, note).await
        }
        Step::AddLearner { ordinal, id, addr } => {
            let ip = leader_ip?;
            match ctx.members.add_learner(&ip, token, id, &addr).await {
                Ok(()) => {
                    ctx.event(
                        rc,
                        false,
                        "MemberAdded",
                        format!(
                            "{} joined as learner {id}",
                            resources::pod_name(&cluster, ordinal)
                        ),
                    )
                    .await;
                    Some(format!("added learner {id}"))
                }
                Err(e) => member_failed(ctx, "add-learner", e),
            }
        }
        Step::SetVoters {
            voters,
            added,
            removed,
        } => {
            let ip = leader_ip?;
            match ctx.members.set_voters(&ip, token, &voters).await {
                Ok(()) => {
                    if !added.is_empty() {
                        ctx.event(
                            rc,
                            false,
                            "MemberPromoted",
                            format!("promoted {added:?} to voter; voters {voters:?}"),
                        )
                        .await;
                    }
                    if !removed.is_empty() {
                        ctx.event(
                            rc,
                            false,
                            "MemberRemoved",
                            format!("removed voters {removed:?}; voters {voters:?}"),
                        )
                        .await;
                    }
                    Some(format!("voters now {voters:?}"))
                }
                Err(e) => member_failed(ctx, "set-voters", e),
            }
        }
        Step::TransferLeader {
            to,
            fallback_voters,
        } => {
            let ip = leader_ip?;
            match ctx.members.transfer_leader(&ip, token, to).await {
                Ok(()) => {
                    ctx.event(
                        rc,
                        false,
                        "LeaderTransfer",
                        format!("moving leadership to {to} before removal"),
                    )
                    .await;
                    Some(format!("transferring leadership to {to}"))
                }
                Err(e) if matches!(e.status(), Some(501) | Some(404)) => {
                    match ctx.members.set_voters(&ip, token, &fallback_voters).await {
                        Ok(()) => {
                            ctx.event(
                                rc,
                                false,
                                "MemberRemoved",
                                format!("removed the leader; voters {fallback_voters:?}"),
                            )
                            .await;
                            Some("removed leader".into())
                        }
                        Err(e) => member_failed(ctx, "set-voters", e),
                    }
                }
                Err(e) => member_failed(ctx, "transfer-leader", e),
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

/// A planned switchover from primary `from` (at `ip`) to member `to`, with an Event either
/// way; says what happened (a failure is retried by the next pass).
async fn switchover(
    ctx: &Context,
    rc: &RegisterCluster,
    (ip, token): (&str, &str),
    (from, to): (u64, u64),
    why: &str,
) -> String {
    match ctx.members.transfer_leader(ip, token, to).await {
        Ok(()) => {
            info!(cluster = %rc.name_any(), from, to, why, "switchover");
            let note = format!("primary {from} handed its role to {to} {why}");
            ctx.event(rc, false, "Switchover", note).await;
            format!("handed the primary role from {from} to {to}")
        }
        Err(e) => {
            warn!(cluster = %rc.name_any(), error = %e, "switchover failed");
            let note = format!("switchover from primary {from} to {to} failed: {e}; retrying");
            ctx.event(rc, true, "SwitchoverFailed", note).await;
            format!("switchover from {from} to {to} failed; retrying")
        }
    }
}

async fn primary_step(
    ctx: &Context,
    rc: &RegisterCluster,
    observed: &[Observed],
    token: &str,
    step: PrimaryStep,
    st: &mut RegisterClusterStatus,
) -> Option<String> {
    let ip_of = |o: u32| pod_ip_of(observed, o);
    match step {
        PrimaryStep::Stable => None,
        PrimaryStep::Wait(w) => Some(w),
        PrimaryStep::PrimaryDown => Some("primary unreachable; waiting before failover".into()),
        PrimaryStep::Bootstrap { ordinal, members } => {
            let note = format!("member at ordinal {ordinal} is primary");
            bootstrap(ctx, rc, &ip_of(ordinal)?, token, &members, note).await
        }
        PrimaryStep::Repoint {
            ordinals,
            primary,
            addr,
        } => {
            for o in ordinals {
                if let Some(ip) = ip_of(o) {
                    if let Err(e) = ctx.members.set_primary(&ip, token, primary, &addr).await {
                        member_failed(ctx, "set-primary", e);
                    }
                }
            }
            Some(format!("pointing secondaries at primary {primary}"))
        }
        PrimaryStep::HandOver { ordinal, from, to } => {
            let ip = ip_of(ordinal)?;
            let why = "before its ordinal is scaled away";
            Some(switchover(ctx, rc, (&ip, token), (from, to), why).await)
        }
        PrimaryStep::DeletePod { ordinal } => delete_member_pod(ctx, rc, ordinal).await,
        PrimaryStep::SetMembers { ordinal, members } => {
            let ip = ip_of(ordinal)?;
            match ctx.members.set_voters(&ip, token, &members).await {
                Ok(()) => Some(format!("primary replicates to members {members:?}")),
                Err(e) => member_failed(ctx, "set-members", e),
            }
        }
        PrimaryStep::Failover {
            ordinal,
            to,
            from,
            possible_loss,
        } => {
            let ip = ip_of(ordinal)?;
            match ctx.members.promote(&ip, token).await {
                Ok(()) => {
                    ctx.event(
                        rc,
                        true,
                        "Failover",
                        format!("primary {from} unreachable: promoted {to}; up to {possible_loss} acknowledged writes may be lost"),
                    )
                    .await;
                    st.primary_unreachable_since = None;
                    Some(format!("promoted {to}"))
                }
                Err(e) => {
                    st.last_failover = None;
                    member_failed(ctx, "promote", e)
                }
            }
        }
    }
}

fn pod_ip_of(observed: &[Observed], ordinal: u32) -> Option<String> {
    observed
        .iter()
        .find(|m| m.ordinal == ordinal)
        .and_then(|m| m.pod_ip.clone())
}

/// `init` on the member at `ip`; on success a `Bootstrapped` event saying `note`.
async fn bootstrap(
    ctx: &Context,
    rc: &RegisterCluster,
    ip: &str,
    token: &str,
    members: &BTreeMap<u64, String>,
    note: String,
) -> Option<String> {
    match ctx.members.init(ip, token, members).await {
        Ok(()) => {
            ctx.event(rc, false, "Bootstrapped", note).await;
            Some("bootstrapped".into())
        }
        Err(e) => member_failed(ctx, "init", e),
    }
}

fn member_failed(ctx: &Context, what: &str, e: MemberError) -> Option<String> {
    ctx.metrics.error("member");
    warn!(error = %e, what, "member admin call failed");
    Some(format!("{what} failed: {e}"))
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
