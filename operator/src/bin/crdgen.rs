//! Prints the RegisterCluster CRD as YAML.
use kube::CustomResourceExt;

fn main() -> Result<(), serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&caplab_operator::crd::RegisterCluster::crd())?;
    print!("{yaml}");
    Ok(())
}
