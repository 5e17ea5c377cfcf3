//! Rolling member pods onto a changed pod template (`spec.image`, `spec.resources`, Raft
//! timing): a pod's container cannot take most of these in place, so the pod is deleted and
//! recreated from the new template. One pod at a time, only while the cluster is whole (the
//! last pass found it Ready and nothing else is moving), followers before the leader (or
//! primary), so the cluster never loses more than one member to a rollout and fails over
//! once at most.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::ObjectMeta;

/// Annotation recording the fingerprint of the template a pod was created from.
pub const ANN_TEMPLATE_HASH: &str = "caplab.dev/template-hash";

/// A stable fingerprint of a pod spec: FNV-1a (64 bit) over its JSON, whose field order is
/// fixed by the types (maps are ordered), so equal specs always give equal fingerprints.
pub fn template_hash(spec: &PodSpec) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    format!("{hash:016x}")
}

/// The fingerprint recorded on a pod.
pub fn recorded_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANN_TEMPLATE_HASH))
        .map(String::as_str)
}

/// The ordinals whose pod was created from another template than `desired(ordinal, pod)`
/// builds now (a pod without a fingerprint counts as outdated).
pub fn outdated(pods: &BTreeMap<u32, Pod>, desired: impl Fn(u32, &Pod) -> Pod) -> BTreeSet<u32> {
    pods.iter()
        .filter(|(o, pod)| {
            let want = desired(**o, pod);
            recorded_hash(&pod.metadata) != recorded_hash(&want.metadata)
        })
        .map(|(o, _)| *o)
        .collect()
}

/// The next pod to recreate: the highest outdated follower ordinal, the leader only when it
/// is the last one outdated.
pub fn next_to_roll(outdated: &BTreeSet<u32>, leader: Option<u32>) -> Option<u32> {
    outdated
        .iter()
        .rev()
        .find(|o| Some(**o) != leader)
        .or_else(|| outdated.iter().next())
        .copied()
}

#[cfg(test)]
mod tests;
