//! Why a pod has not started, as the kubelet or the scheduler says it, and what to do about a
//! member pod stuck so: shared by the experiment (its Job's pod, `status.experiment.reason`)
//! and the member pods (`Progressing`, one `MemberCannotStart` Warning Event per pod and
//! reason).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

use crate::crd::Storage;

/// Why a pod waits: a container's waiting reason other than the normal ones on the way up
/// (`ContainerCreating`, `PodInitializing`), e.g. `ImagePullBackOff`, `ErrImagePull`,
/// `CrashLoopBackOff`, `CreateContainerConfigError`; or `Unschedulable`, the scheduler's
/// `PodScheduled=False` reason (e.g. its claim is not bound: a StorageClass that does not
/// exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The kubelet's or scheduler's reason, e.g. `ImagePullBackOff`.
    pub reason: String,
    /// Its message, when it gives one.
    pub message: Option<String>,
}

/// `Reason: message`, as `status.experiment.reason` quotes it.
impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{}: {m}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Container waiting reasons of a pod that is merely on its way up.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// Why `pod` waits (its first container's waiting state, else the scheduler's refusal);
/// `None` while it is merely starting, or runs.
pub fn waiting(pod: &Pod) -> Option<Waiting> {
    let st = pod.status.as_ref()?;
    let container = st
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref()?.waiting.as_ref())
        .filter(|w| w.reason.as_deref().is_some_and(|r| !STARTING.contains(&r)))
        .map(|w| Waiting {
            reason: w.reason.clone().unwrap_or_default(),
            message: w.message.clone(),
        });
    let unschedulable = || {
        let c = st.conditions.as_ref()?.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
        Some(Waiting {
            reason: "Unschedulable".into(),
            message: c.message.clone(),
        })
    };
    container.or_else(unschedulable)
}

impl Waiting {
    /// The kind of trouble, for announcing it once: the kubelet alternates `ErrImagePull` and
    /// `ImagePullBackOff` for one image that cannot be pulled.
    fn kind(&self) -> &str {
        match self.reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" => "image",
            r => r,
        }
    }

    /// `pod demo-1 cannot start: ImagePullBackOff (…); <what to do>` for member pod `pod`
    /// of a cluster whose spec asks for `storage`.
    pub fn member_note(&self, pod: &str, storage: Option<&Storage>) -> String {
        let why = match &self.message {
            Some(m) => format!("{} ({m})", self.reason),
            None => self.reason.clone(),
        };
        format!(
            "pod {pod} cannot start: {why}; {}",
            self.advice(pod, storage)
        )
    }

    fn advice(&self, pod: &str, storage: Option<&Storage>) -> String {
        let describe = format!("see kubectl describe pod {pod}");
        match self.reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                "fix spec.image or load the image onto the nodes (kind load docker-image, \
                 minikube image load)"
                    .into()
            }
            "CrashLoopBackOff" => {
                format!("the member exits soon after it starts: see kubectl logs {pod} --previous")
            }
            "Unschedulable" if self.message.as_deref().is_some_and(unbound_claim) => {
                let class = storage.and_then(|s| s.storage_class_name.as_deref());
                match class {
                    Some(c) => format!(
                        "its volume claim is not bound: check that StorageClass {c} \
                         (spec.storage.storageClassName) exists (kubectl get storageclass)"
                    ),
                    None => "its volume claim is not bound: the cluster has no default \
                             StorageClass; set spec.storage.storageClassName to one that \
                             exists (kubectl get storageclass)"
                        .into(),
                }
            }
            "Unschedulable" => format!("no node can take it (check spec.resources): {describe}"),
            _ => describe,
        }
    }
}

/// Does the scheduler's message say the pod waits for a claim to be bound?
fn unbound_claim(message: &str) -> bool {
    message.contains("PersistentVolumeClaim")
}

/// The member pods already announced as unable to start, per cluster: (pod uid, kind of
/// trouble). A pod is announced once per kind for its lifetime, however often the kubelet
/// retries it; its replacement (a new uid) is announced anew.
#[derive(Default)]
pub struct Announced(Mutex<BTreeMap<String, BTreeSet<(String, String)>>>);

impl Announced {
    /// Records that `stuck` pods (uid, why) of `cluster` wait, forgetting pods no longer in
    /// `live` (uids); returns the indexes in `stuck` not announced before.
    pub fn news(
        &self,
        cluster: &str,
        live: &BTreeSet<String>,
        stuck: &[(String, &Waiting)],
    ) -> Vec<usize> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let known = map.entry(cluster.to_string()).or_default();
        known.retain(|(uid, _)| live.contains(uid));
        stuck
            .iter()
            .enumerate()
            .filter(|(_, (uid, w))| known.insert((uid.clone(), w.kind().to_string())))
            .map(|(i, _)| i)
            .collect()
    }

    /// Forgets every cluster not in `live` (its key, as given to [`Announced::news`]): those
    /// were deleted.
    pub fn retain(&self, live: &BTreeSet<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|cluster, _| live.contains(cluster));
    }
}

/// A pod's uid, or its name where it has none (as a key for [`Announced`]).
pub fn pod_key(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
