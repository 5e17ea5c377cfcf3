//! Prints the RegisterCluster CRD as YAML.
//!
//! `crdgen --no-cel` leaves out the `x-kubernetes-validations` (CEL) rules, for
//! API servers before 1.25 that reject unknown schema fields under server-side apply.
use kube::CustomResourceExt;

fn strip_cel(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("x-kubernetes-validations");
            m.values_mut().for_each(strip_cel);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_cel),
        _ => {}
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crd = caplab_operator::crd::RegisterCluster::crd();
    let yaml = if std::env::args().any(|a| a == "--no-cel") {
        let mut v = serde_json::to_value(&crd)?;
        strip_cel(&mut v);
        serde_yaml::to_string(&v)?
    } else {
        serde_yaml::to_string(&crd)?
    };
    print!("{yaml}");
    Ok(())
}
