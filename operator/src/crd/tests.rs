//! Unit tests of [`crate::crd`].

use kube::CustomResourceExt;

use crate::crd::RegisterCluster;

#[test]
fn crd_file_is_fresh() {
    let generated = serde_yaml::to_string(&RegisterCluster::crd()).expect("yaml");
    let checked_in = include_str!("../../../crds/registercluster.yaml");
    assert_eq!(
        generated, checked_in,
        "crds/registercluster.yaml is stale: run `cargo run -p caplab-operator --bin crdgen > crds/registercluster.yaml`"
    );
    assert!(checked_in.contains("x-kubernetes-validations"));
    assert!(checked_in.contains("self == oldSelf"));
    assert!(checked_in.contains("shortNames"));
}
