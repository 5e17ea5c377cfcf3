//! The reconcile pipeline of one `RegisterCluster`, one step per module:
//!
//! 1. `observe`: list the member pods and poll every member → an `Observation`;
//! 2. validate ([`crate::validation`]): an invalid spec is only observed and reported;
//! 3. `owned`: build and apply the admin Secret, client Service, PodDisruptionBudget →
//!    the `AdminAuth` for admin calls;
//! 4. `experiment`: the run of `spec.workload` as a Job, followed into `status.experiment`
//!    (its start is the clock of the fault schedule);
//! 5. `inject`: the spec's faults now (a `FaultPlan`, with Events), pushed to the members;
//! 6. `pods`: apply the member pods (crash faults, failed pods, missing pods, rolling);
//! 7. membership, one file per replication mode (`raft`, `primary`, `quorum`) over the shared
//!    member actions (`actions`) → what it did and whether it still converges;
//! 8. `report`: the status from all of the above, its transitions as Events, the status
//!    write and the requeue.
//!
//! Every step is a method of the pass (`Pass`: the resource, its namespace, the status it
//! started from, the time), taking the values the earlier steps returned. The layout follows
//! kube-rs's controller-rs example and Stackable's operators (typed steps, one reconcile).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::backoff::Backoff;
use crate::crd::{RegisterCluster, RegisterClusterStatus, Replication, MANAGER};
use crate::member_client::{AdminAuth, MemberClient};
use crate::metrics::Metrics;
use crate::pod_wait::Announced;
use crate::validation;

mod actions;
mod blame;
mod experiment;
mod inject;
mod observe;
mod owned;
mod pods;
mod primary;
mod quorum;
mod raft;
mod report;
mod twopc;

use observe::Observation;
pub use report::WrittenStatus;

/// Requeue while anything changes (see [`crate::status::busy`]): status follows the members within
/// about this plus one pass.
pub const FAST: Duration = Duration::from_secs(1);
/// Requeue when Ready and quiet (`status.observedAt` is refreshed this often at least).
pub const SLOW: Duration = Duration::from_secs(10);
/// Default async failover grace period.
pub const DEFAULT_FAILOVER_SECS: u64 = 10;

/// Reconcile errors. Whose fault each is decides [`error_policy`]: only
/// [`Error::MissingNamespace`] and [`Error::SpecRefused`] wait for a change of the
/// RegisterCluster; every other error is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed: the server unreachable, a conflict, a permission missing,
    /// or a refusal of something the operator made (its own status patch, a field it
    /// computed): passing, or a defect of ours, not the spec's ([`blame`]).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The API server refused `object` as invalid (400, 422) at a field the spec gave
    /// verbatim, `field` (e.g. `spec.image`): retrying the same spec would fail the same way.
    #[error("the API server refused {object} at {field}, which comes from the spec: {source}")]
    SpecRefused {
        /// The refused object, e.g. `pod demo-0`.
        object: String,
        /// The RegisterCluster field at fault, e.g. `spec.image`.
        field: &'static str,
        /// The API server's refusal.
        source: kube::Error,
    },
    /// The resource has no namespace.
    #[error("RegisterCluster has no namespace")]
    MissingNamespace,
    /// The admin token Secret is malformed.
    #[error("secret {0} has no usable token")]
    BadSecret(String),
}

impl Error {
    /// The RegisterCluster field only whose change cures this error (`metadata.namespace`,
    /// or the spec field the API server refused); `None` for errors worth retrying as they are.
    pub fn spec_field(&self) -> Option<&'static str> {
        match self {
            Error::MissingNamespace => Some("metadata.namespace"),
            Error::SpecRefused { field, .. } => Some(field),
            Error::Kube(_) | Error::BadSecret(_) => None,
        }
    }

    /// Label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::SpecRefused { .. } => "spec",
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
    /// Image of the `caplab` CLI, which runs experiments (`spec.workload`) as Jobs.
    pub cli_image: String,
    /// The last status this operator wrote, per cluster.
    pub written: WrittenStatus,
    /// Consecutive failed reconciles per cluster, for [`error_policy`].
    pub backoff: Backoff,
    /// Member pods already announced as unable to start.
    pub announced: Announced,
}

impl Context {
    /// Forgets what is remembered about every cluster not in `live` (the watch's store of
    /// RegisterClusters): its back-off, announced pods and written status. Called on every
    /// watch event, so a cluster deleted while failing is forgotten at its Delete event,
    /// or, when the watch was down then, at the re-list (which reports no Delete).
    pub fn forget_deleted(&self, live: &[Arc<RegisterCluster>]) {
        let keys: BTreeSet<String> = live.iter().map(|rc| cluster_key(rc)).collect();
        self.backoff.retain(&keys);
        self.announced.retain(&keys);
        self.written.retain(&keys);
    }

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

/// The key the operator remembers a cluster under ([`Backoff`], [`Announced`],
/// [`WrittenStatus`]): its uid, else namespace/name.
fn cluster_key(rc: &RegisterCluster) -> String {
    rc.metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any()))
}

/// The controller's entry point for one RegisterCluster. A success resets the cluster's
/// back-off ([`error_policy`]).
pub async fn reconcile(rc: Arc<RegisterCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start();
    let action = reconcile_once(&rc, &ctx).await?;
    ctx.backoff.succeeded(&cluster_key(&rc));
    Ok(action)
}

async fn reconcile_once(rc: &RegisterCluster, ctx: &Context) -> Result<Action, Error> {
    if rc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        return Ok(Action::await_change());
    }
    let mut pass = Pass::new(ctx, rc)?;
    let mut seen = pass.observe().await?;
    pass.errors.extend(validation::against_pods(rc, &seen.pods));
    if !pass.errors.is_empty() {
        return pass.report_invalid(&seen).await;
    }
    let auth = pass.apply_owned().await?;
    let experiment = pass.step_experiment(&seen).await?;
    let schedule = experiment.schedule(rc.spec.workload.is_some());
    let mut plan = pass.plan_faults(&seen, &schedule).await;
    if let Some(wake) = experiment.wake {
        plan.next_expiry = Some(plan.next_expiry.map_or(wake, |t| t.min(wake)));
    }
    let mut progress = Vec::new();
    pass.apply_members(&mut seen, &plan, &mut progress).await?;
    pass.push_faults(&seen, &plan, &auth).await;
    let mut st = pass.prev.clone();
    let stepped = pass.step_membership(&seen, &auth, &mut st).await;
    progress.extend(stepped.done);
    experiment.record(&mut st);
    let rolling = pass
        .roll_outdated(&seen, &plan, stepped.converging, &auth, &mut progress)
        .await?;
    let converging = stepped.converging || rolling;
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

/// What a replication mode's membership step did in one pass.
struct Stepped {
    /// Membership still moves towards the spec (the status is refreshed fast meanwhile).
    converging: bool,
    /// What was done, or why nothing could be, for `Progressing`; `None` when stable.
    done: Option<String>,
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

    /// Takes the next membership step of the replication mode (recording a failover in `st`).
    /// A new mode is a new module with its own step method, and an arm here.
    async fn step_membership(
        &self,
        seen: &Observation,
        auth: &AdminAuth,
        st: &mut RegisterClusterStatus,
    ) -> Stepped {
        match self.rc.spec.replication {
            Replication::Raft => self.raft_membership(seen, auth).await,
            Replication::Async | Replication::Sync => self.primary_membership(seen, auth, st).await,
            Replication::Quorum => self.quorum_membership(seen, auth).await,
            Replication::TwoPc => self.twopc_membership(seen, auth).await,
        }
    }
}

/// Server-side apply as the operator's field manager.
fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Requeue policy on errors: per-cluster exponential back-off ([`crate::backoff`]: 5 s
/// doubling to 5 min, reset by a successful reconcile). An error only a spec change cures
/// ([`Error::spec_field`]) is not retried at all (the next change of the resource, or of one
/// of its pods, reconciles it again) and is announced by one Warning Event `ReconcileFailed`
/// per distinct error, naming the field to fix.
pub fn error_policy(rc: Arc<RegisterCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.kind());
    let key = cluster_key(&rc);
    let Some(field) = err.spec_field() else {
        let wait = ctx.backoff.failed(&key);
        warn!(cluster = %rc.name_any(), error = %err, retry_in_s = wait.as_secs(), "reconcile failed");
        return Action::requeue(wait);
    };
    warn!(cluster = %rc.name_any(), error = %err, field, "reconcile refused: waiting for a spec change");
    let note =
        format!("{err}; fix {field} in the RegisterCluster (nothing is retried until it changes)");
    if ctx.backoff.refused(&key, &note) {
        tokio::spawn(async move { ctx.event(&rc, true, "ReconcileFailed", note).await });
    }
    Action::await_change()
}
