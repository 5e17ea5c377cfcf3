//! Unit tests of [`crate::rollout`].

use std::collections::BTreeMap;

use crate::crd::RegisterCluster;
use crate::resources;
use crate::rollout;
use crate::testing::fixture;

#[test]
fn rollout_finds_pods_built_from_an_older_spec() {
    let old = fixture("raft-3");
    let pods: BTreeMap<u32, _> = (0..3)
        .map(|o| {
            (
                o,
                resources::member_pod(&old, o, u64::from(o) + 1, "caplab/node:0.1.0"),
            )
        })
        .collect();
    let desired = |rc: &RegisterCluster| {
        let rc = rc.clone();
        move |o: u32, pod: &k8s_openapi::api::core::v1::Pod| {
            let id = resources::member_id_of(&pod.metadata).unwrap_or(0);
            resources::member_pod(&rc, o, id, "caplab/node:0.1.0")
        }
    };
    assert!(rollout::outdated(&pods, desired(&old)).is_empty());

    let mut new_image = old.clone();
    new_image.spec.image = Some("caplab/node:0.2.0".into());
    assert_eq!(
        rollout::outdated(&pods, desired(&new_image)),
        [0, 1, 2].into()
    );
    // The operator's own default image moving counts too.
    let moved = |o: u32, pod: &k8s_openapi::api::core::v1::Pod| {
        let id = resources::member_id_of(&pod.metadata).unwrap_or(0);
        resources::member_pod(&old, o, id, "caplab/node:0.2.0")
    };
    assert_eq!(rollout::outdated(&pods, moved).len(), 3);

    let mut unannotated = pods.clone();
    if let Some(p) = unannotated.get_mut(&1) {
        p.metadata.annotations = None;
    }
    assert_eq!(rollout::outdated(&unannotated, desired(&old)), [1].into());
}

#[test]
fn rollout_takes_followers_first_and_the_leader_last() {
    let all = [0, 1, 2].into();
    assert_eq!(rollout::next_to_roll(&all, Some(2)), Some(1));
    assert_eq!(rollout::next_to_roll(&all, Some(0)), Some(2));
    assert_eq!(rollout::next_to_roll(&all, None), Some(2));
    assert_eq!(rollout::next_to_roll(&[0].into(), Some(0)), Some(0));
    assert_eq!(rollout::next_to_roll(&Default::default(), Some(0)), None);
}
