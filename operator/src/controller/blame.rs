//! Whose fault is an API server's refusal: the user's spec, or the operator?
//!
//! The API server refuses an object it cannot accept with 422 Invalid (naming the fields in its
//! message and `details.causes[].field`, e.g. `spec.containers[0].image`) or 400 BadRequest (a
//! server-side apply whose typed patch does not decode names the path in its message, e.g.
//! `.spec.topologySpreadConstraints[0].maxSkew: expected numeric`). Such a refusal is the
//! spec's fault only when it names a field the RegisterCluster's spec gave verbatim to an
//! object the operator builds from it: retrying the same spec would fail the same way. Every
//! other failure, a refusal of the operator's own status patch or of a field the operator
//! computed included, stays [`Error::Kube`]: a defect of ours or a server that does not take a
//! field, which the normal back-off retries (and the operator's logs and metrics show).

use super::Error;
use crate::crd::RegisterCluster;

/// A field of an object the operator builds that the spec gives verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FromSpec {
    /// Where the API server names it in the built object, e.g. `spec.containers[0].image`.
    object_path: &'static str,
    /// The RegisterCluster field the user fixes, e.g. `spec.image`.
    spec_path: &'static str,
    /// Paths under `object_path` the operator fills in itself (e.g.
    /// `spec.topologySpreadConstraints[0].labelSelector` of a constraint given without one):
    /// a refusal there is the operator's.
    filled: Vec<String>,
}

const fn from_spec(object_path: &'static str, spec_path: &'static str) -> FromSpec {
    FromSpec {
        object_path,
        spec_path,
        filled: Vec::new(),
    }
}

/// `spec.topologySpreadConstraints[i].labelSelector` of each constraint the spec gives
/// without one: [`crate::resources::topology_spread`] fills in the cluster's members.
fn filled_selectors(rc: &RegisterCluster) -> Vec<String> {
    let constraints = rc.spec.topology_spread_constraints.iter().enumerate();
    constraints
        .filter(|(_, c)| {
            c.get("labelSelector")
                .is_none_or(serde_json::Value::is_null)
        })
        .map(|(i, _)| format!("spec.topologySpreadConstraints[{i}].labelSelector"))
        .collect()
}

/// The fields of a member pod ([`crate::resources::member_pod`]) the spec of `rc` sets
/// (`spec.image` only when given: the default image is the operator's `--node-image`).
pub(super) fn member_pod_fields(rc: &RegisterCluster) -> Vec<FromSpec> {
    let spec = &rc.spec;
    [
        (
            spec.image.is_some(),
            from_spec("spec.containers[0].image", "spec.image"),
        ),
        (
            spec.resources.is_some(),
            from_spec("spec.containers[0].resources", "spec.resources"),
        ),
        (
            !spec.topology_spread_constraints.is_empty(),
            FromSpec {
                filled: filled_selectors(rc),
                ..from_spec(
                    "spec.topologySpreadConstraints",
                    "spec.topologySpreadConstraints",
                )
            },
        ),
    ]
    .into_iter()
    .filter_map(|(set, f)| set.then_some(f))
    .collect()
}

/// The fields of a member's PersistentVolumeClaim ([`crate::resources::member_pvc`]) that
/// `spec.storage` gives.
pub(super) fn member_pvc_fields() -> Vec<FromSpec> {
    vec![
        from_spec("spec.resources.requests", "spec.storage.size"),
        from_spec("spec.storageClassName", "spec.storage.storageClassName"),
    ]
}

/// The spec field among `fields` that the refusal `e` names, if `e` is a refusal as invalid
/// (400 BadRequest, 422 Invalid) naming one.
fn spec_field(e: &kube::Error, fields: &[FromSpec]) -> Option<&'static str> {
    let kube::Error::Api(s) = e else {
        return None;
    };
    if !(s.is_invalid() || s.code == 400) {
        return None;
    }
    let causes = s.details.iter().flat_map(|d| d.causes.iter());
    let named: Vec<&str> = std::iter::once(s.message.as_str())
        .chain(causes.map(|c| c.field.as_str()))
        .collect();
    let by_spec = |f: &FromSpec, text: &str| {
        names(text, f.object_path) && !f.filled.iter().any(|p| names(text, p))
    };
    fields
        .iter()
        .find(|f| named.iter().any(|text| by_spec(f, text)))
        .map(|f| f.spec_path)
}

/// Does `text` name `path` or a field under it (`spec.containers[0].image`, not
/// `spec.containers[0].imagePullPolicy`)?
fn names(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let next = text[i + path.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Classifies the failure `e` of applying `object`, whose `fields` come from the spec:
/// [`Error::SpecRefused`] when the API server refused one of them as invalid, else
/// [`Error::Kube`].
pub(super) fn blame(object: String, fields: &[FromSpec]) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| match spec_field(&e, fields) {
        Some(field) => Error::SpecRefused {
            object,
            field,
            source: e,
        },
        None => Error::Kube(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    /// The API server's 422 for `object` naming `field`, as it sends it (message and causes).
    fn invalid(object: &str, field: &str) -> kube::Error {
        let wire = serde_json::json!({
            "status": "Failure", "reason": "Invalid", "code": 422,
            "message": format!("{object} is invalid: {field}: Invalid value: \"x\""),
            "details": {"name": object, "causes": [
                {"reason": "FieldValueInvalid", "message": "Invalid value: \"x\"", "field": field}
            ]},
        });
        kube::Error::Api(Box::new(serde_json::from_value(wire).expect("a Status")))
    }

    fn pod_fields() -> Vec<FromSpec> {
        let mut rc = fixture("raft-3");
        rc.spec.image = Some("Not An Image".into());
        member_pod_fields(&rc)
    }

    #[test]
    fn a_refusal_naming_a_field_the_spec_gave_blames_the_spec() {
        let e = invalid("Pod \"demo-0\"", "spec.containers[0].image");
        assert_eq!(spec_field(&e, &pod_fields()), Some("spec.image"));
        let e = invalid(
            "PersistentVolumeClaim \"data-demo-0\"",
            "spec.storageClassName",
        );
        assert_eq!(
            spec_field(&e, &member_pvc_fields()),
            Some("spec.storage.storageClassName")
        );
    }

    #[test]
    fn a_refusal_of_what_the_operator_computed_blames_the_operator() {
        let pull = invalid("Pod \"demo-0\"", "spec.containers[0].imagePullPolicy");
        assert_eq!(spec_field(&pull, &pod_fields()), None, "not spec.image");
        let status = invalid("RegisterCluster \"demo\"", "status.members");
        assert_eq!(spec_field(&status, &[]), None, "the operator's own status");
        let default_image = invalid("Pod \"demo-0\"", "spec.containers[0].image");
        let rc = fixture("raft-3");
        assert_eq!(rc.spec.image, None);
        assert_eq!(
            spec_field(&default_image, &member_pod_fields(&rc)),
            None,
            "the default image is the operator's --node-image"
        );
        assert!(matches!(
            blame("pod demo-0".into(), &[])(status),
            Error::Kube(_)
        ));
    }

    /// A constraint given without `labelSelector` gets the operator's: a refusal there is
    /// the operator's, one at a field the constraint gave (or a selector it gave) the spec's.
    #[test]
    fn a_label_selector_the_operator_filled_in_is_not_blamed_on_the_spec() {
        let mut rc = fixture("raft-3");
        rc.spec.topology_spread_constraints = vec![
            serde_json::json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}),
            serde_json::json!({"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule",
                               "labelSelector": {"matchLabels": {"x": "y"}}}),
        ];
        let fields = member_pod_fields(&rc);
        let at = |field: &str| spec_field(&invalid("Pod \"demo-0\"", field), &fields);
        assert_eq!(at("spec.topologySpreadConstraints[0].labelSelector"), None);
        let spread = Some("spec.topologySpreadConstraints");
        assert_eq!(at("spec.topologySpreadConstraints[0].maxSkew"), spread);
        assert_eq!(
            at("spec.topologySpreadConstraints[1].labelSelector"),
            spread
        );
    }
}
