//! The experiment of `spec.workload`: the fault schedule's clock, the run's Job (created once
//! the cluster is Ready, re-adopted by its name after an operator restart), and
//! `status.experiment` from the Job and its pod (the verdict is the pod's termination
//! message), with Events when the run starts, fails and when its verdict is in.

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch};
use serde::Serialize;
use tracing::info;

use super::observe::Observation;
use super::{apply_params, ts, Error, Pass};
use crate::crd::{ExperimentPhase, ExperimentStatus, Phase, RegisterClusterStatus};
use crate::experiment::{self as exp, Run};
use crate::faults::Schedule;
use crate::pod_wait;

/// How often a run in progress is looked at (its start times the fault schedule).
const POLL: Duration = Duration::seconds(1);

/// A Kubernetes time as chrono's (whole seconds, as Kubernetes records them).
fn chrono_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

fn parse(t: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What the run's pods say: when the newest one started running, and the report of the
/// newest one that ended (its termination message), or why it ended without one. A pod the
/// Job retried is a new attempt of the whole run: the newest attempt's start is the run's
/// start (the faults follow it again) and its report is the run's.
#[derive(Default)]
struct PodView {
    started: Option<DateTime<Utc>>,
    report: Option<exp::Report>,
    ended: Option<String>,
    /// Why a pod has not started (e.g. `ErrImagePull: …`, [`pod_wait::waiting`]), for the
    /// Pending reason.
    waiting: Option<String>,
}

/// A pod's container start (running or ended) and its end, if it ended.
fn attempt(p: &Pod) -> Option<(Option<DateTime<Utc>>, Option<PodEnd>)> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let state = cs.state.as_ref()?;
    if let Some(r) = &state.running {
        return Some((r.started_at.as_ref().and_then(chrono_of), None));
    }
    let t = state.terminated.as_ref()?;
    let end = match t.message.as_deref().and_then(exp::parse_report) {
        Some(r) => PodEnd::Report(Box::new(r)),
        None => PodEnd::Without(format!(
            "pod {} ended ({}, exit code {}) without a verdict",
            p.metadata.name.as_deref().unwrap_or("?"),
            t.reason.as_deref().unwrap_or("no reason"),
            t.exit_code
        )),
    };
    Some((t.started_at.as_ref().and_then(chrono_of), Some(end)))
}

/// How a run's pod ended.
enum PodEnd {
    Report(Box<exp::Report>),
    Without(String),
}

fn view(pods: &[Pod]) -> PodView {
    let mut attempts: Vec<_> = pods.iter().filter_map(attempt).collect();
    let waiting = pods
        .iter()
        .find_map(|p| pod_wait::waiting(p).map(|w| w.to_string()));
    // Oldest first (a pod not started yet sorts first), so the newest end is the last one.
    attempts.sort_by_key(|(started, _)| *started);
    let mut v = PodView {
        waiting,
        ..PodView::default()
    };
    for (started, end) in attempts {
        v.started = v.started.max(started);
        match end {
            Some(PodEnd::Report(r)) => v.report = Some(*r),
            Some(PodEnd::Without(why)) => v.ended = Some(why),
            None => {}
        }
    }
    v
}

/// Whether a run is over (Done or Failed): nothing more is done for it.
fn over(ex: &ExperimentStatus) -> bool {
    matches!(
        ex.phase,
        Some(ExperimentPhase::Done | ExperimentPhase::Failed)
    )
}

/// What each member reported in this pass, for the run's fault windows.
fn reported(seen: &Observation) -> exp::windows::Reported {
    seen.members
        .iter()
        .map(|m| (m.ordinal, m.status.as_ref().map(|s| s.faults.clone())))
        .collect()
}

/// The Job's condition of this type, if true: its message.
fn job_condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.message.clone().unwrap_or_else(|| type_.to_string()))
}

/// What the experiment step decided, for the fault plan and the status.
pub(super) struct Experiment {
    /// `status.readySince`.
    pub ready_since: Option<String>,
    /// `status.experiment`.
    pub status: Option<ExperimentStatus>,
    /// When to look again (a run in progress: within a second).
    pub wake: Option<DateTime<Utc>>,
}

impl Experiment {
    /// The clock fault `startAfterSeconds` count on: the run's start with a workload, else
    /// when the cluster was first Ready. A Failed run (its Job gone or failed, or the run
    /// stopped) has no clock: its faults are not (or no longer) due, so they are reverted
    /// instead of running on with nothing to measure them.
    pub(super) fn schedule(&self, workload: bool) -> Schedule {
        let zero = if workload {
            self.status
                .as_ref()
                .filter(|e| e.phase != Some(ExperimentPhase::Failed))
                .and_then(|e| parse(e.started_at.as_deref()))
        } else {
            parse(self.ready_since.as_deref())
        };
        Schedule { zero, workload }
    }

    /// Writes the decision into the status.
    pub(super) fn record(self, st: &mut RegisterClusterStatus) {
        st.ready_since = self.ready_since;
        st.experiment = self.status;
    }
}

impl Pass<'_> {
    /// Records when the cluster was first Ready and advances the run of `spec.workload`
    /// (before the faults are planned: the run's start is their clock).
    pub(super) async fn step_experiment(&self, seen: &Observation) -> Result<Experiment, Error> {
        let mut out = Experiment {
            ready_since: self.prev.ready_since.clone(),
            status: self.prev.experiment.clone(),
            wake: None,
        };
        if out.ready_since.is_none() && self.prev.phase == Some(Phase::Ready) {
            out.ready_since = Some(ts(self.now));
        }
        let Some(w) = &self.rc.spec.workload else {
            if let Some(ex) = out.status.as_mut().filter(|e| !over(e)) {
                self.stop(ex, "spec.workload was removed".into()).await?;
            }
            return Ok(out);
        };
        let run = exp::run_of(&self.name, w);
        let mut ex = match out.status.take() {
            // The current run: its id and its Job (a workload changed under a fixed runId
            // has another Job, and is a new run).
            Some(e) if e.run() == run.id && e.job.as_deref() == Some(run.job.as_str()) => e,
            prev => {
                if let Some(mut old) = prev.clone().filter(|e| !over(e)) {
                    let why = format!("spec.workload changed: run {} replaces it", run.id);
                    self.stop(&mut old, why).await?;
                }
                let mix = exp::effective_mix(self.rc.spec.replication, &w.mix);
                exp::new_run(prev.as_ref(), &run, mix)
            }
        };
        if !over(&ex) {
            self.advance(&run, &mut ex).await?;
        }
        if let (Some(t), false) = (parse(ex.started_at.as_deref()), over(&ex)) {
            exp::windows::track(
                &mut ex.windows,
                &self.prev.faults,
                &reported(seen),
                t,
                self.now,
            );
        }
        out.wake = (!over(&ex)).then(|| self.now + POLL);
        out.status = Some(ex);
        Ok(out)
    }

    /// One step of a run that is not over: create its Job once the cluster is Ready, then
    /// follow the Job and its pod.
    async fn advance(&self, run: &Run, ex: &mut ExperimentStatus) -> Result<(), Error> {
        let Some(job) = self.api::<Job>().get_opt(&run.job).await? else {
            if ex.started_at.is_some() {
                return self
                    .fail(ex, format!("job {} was deleted mid-run", run.job))
                    .await;
            }
            if self.prev.phase != Some(Phase::Ready) {
                ex.reason = Some("waiting for the cluster to be Ready".into());
                return Ok(());
            }
            return self.start_run(run, ex).await;
        };
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("job-name={}", run.job)))
            .await?;
        let seen = view(&pods.items);
        if let Some(t) = seen.started {
            let at = ts(t);
            if ex.started_at.as_deref() != Some(at.as_str()) {
                // The first attempt, or the Job's retry of a failed one: a fresh run.
                ex.phase = Some(ExperimentPhase::Running);
                ex.reason = None;
                ex.windows.clear();
            }
            ex.started_at = Some(at);
        } else if let Some(why) = seen.waiting {
            ex.reason = Some(format!("job {}: its pod waits: {why}", run.job));
        }
        if job_condition(&job, "Complete").is_some() {
            return match seen.report {
                Some(r) => self.finish(ex, r).await,
                None => {
                    let why = seen.ended.unwrap_or_else(|| "no verdict".into());
                    self.fail(ex, why).await
                }
            };
        }
        if let Some(why) = job_condition(&job, "Failed") {
            let why = match (seen.report.and_then(|r| r.error), seen.ended) {
                (Some(e), _) => format!("{why}: {e}"),
                (None, Some(e)) => format!("{why}: {e}"),
                (None, None) => why,
            };
            return self.fail(ex, why).await;
        }
        let over =
            self.rc.spec.workload.as_ref().map(|w| {
                Duration::seconds(i64::try_from(w.duration_seconds).unwrap_or(i64::MAX / 4))
            });
        if let (Some(t), Some(d)) = (parse(ex.started_at.as_deref()), over) {
            if self.now >= t + d {
                ex.phase = Some(ExperimentPhase::Checking);
            }
        }
        Ok(())
    }

    /// Applies what the run's pod needs (ServiceAccount, Role, RoleBinding, results PVC)
    /// and creates its Job.
    async fn start_run(&self, run: &Run, ex: &mut ExperimentStatus) -> Result<(), Error> {
        let Some(w) = &self.rc.spec.workload else {
            return Ok(());
        };
        self.apply(
            &self.api::<ServiceAccount>(),
            &exp::service_account(self.rc),
        )
        .await?;
        self.apply(&self.api::<Role>(), &exp::role(self.rc)).await?;
        self.apply(&self.api::<RoleBinding>(), &exp::role_binding(self.rc))
            .await?;
        self.apply(
            &self.api::<PersistentVolumeClaim>(),
            &exp::results_pvc(self.rc),
        )
        .await?;
        let job = exp::job(self.rc, w, run, &self.ctx.cli_image);
        self.apply(&self.api::<Job>(), &job).await?;
        ex.reason = Some(format!("job {} created; waiting for its pod", run.job));
        let mix = ex.mix.clone().unwrap_or_else(|| w.mix.clone());
        let mut note = format!(
            "run {} started: job {}, {} clients for {} s on {} keys, read {} % write {} % cas {} %",
            run.id, run.job, w.clients, w.duration_seconds, w.keys, mix.read, mix.write, mix.cas
        );
        for n in &ex.notes {
            note = format!("{note} ({n})");
        }
        info!(cluster = %self.name, %note, "experiment");
        self.event(false, "ExperimentStarted", note).await;
        Ok(())
    }

    /// Server-side applies one object the operator owns (named in its metadata).
    async fn apply<K>(&self, api: &kube::Api<K>, obj: &K) -> Result<(), Error>
    where
        K: kube::Resource + Serialize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        api.patch(&name, &apply_params(), &Patch::Apply(obj))
            .await?;
        Ok(())
    }

    async fn finish(&self, ex: &mut ExperimentStatus, report: exp::Report) -> Result<(), Error> {
        let failed = report.error.is_some();
        exp::finish(ex, report, &ts(self.now), &self.name);
        if failed {
            let why = ex.reason.clone().unwrap_or_default();
            self.event(true, "ExperimentFailed", format!("run {}: {why}", ex.run()))
                .await;
        } else if let Some(v) = &ex.verdict {
            let warning = v.linearizable == Some(false);
            self.event(warning, "Verdict", exp::verdict_note(v)).await;
        }
        Ok(())
    }

    /// Stops a run the spec no longer asks for: its Job (and so its pod) is deleted, so that
    /// one workload at a time runs against the members; the run ends Failed with `why`.
    async fn stop(&self, ex: &mut ExperimentStatus, why: String) -> Result<(), Error> {
        if let Some(job) = &ex.job {
            match self
                .api::<Job>()
                .delete(job, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        ex.phase = Some(ExperimentPhase::Failed);
        ex.finished_at = Some(ts(self.now));
        ex.reason = Some(format!("stopped: {why}"));
        let note = format!("run {} stopped: {why}", ex.run());
        info!(cluster = %self.name, %note, "experiment");
        self.event(false, "ExperimentStopped", note).await;
        Ok(())
    }

    async fn fail(&self, ex: &mut ExperimentStatus, why: String) -> Result<(), Error> {
        ex.phase = Some(ExperimentPhase::Failed);
        ex.finished_at = Some(ts(self.now));
        let note = format!("run {} failed: {why}", ex.run());
        ex.reason = Some(why);
        self.event(true, "ExperimentFailed", note).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
