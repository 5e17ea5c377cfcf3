//! Access to a `RegisterCluster` through the Kubernetes API: connecting, reading the
//! resource, and a JSON merge patch of `spec.faults`. Its members are reached through the API
//! server's pod proxy (pod_proxy.rs, which uses this module).

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Url;
use serde_json::{json, Value};

use crate::regc::RegisterCluster;

/// API group, version and plural of the resource (see operator/src/crd.rs).
pub const GROUP: &str = "caplab.dev";
pub const VERSION: &str = "v1alpha1";
pub const PLURAL: &str = "registerclusters";

/// Which Kubernetes cluster and namespace to talk to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Namespace of the RegisterCluster (default: the kubeconfig context's namespace).
    #[arg(long, short = 'n', env = "CAPLAB_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// A kube client and the namespace it works in.
pub async fn connect(args: &KubeArgs) -> Result<(kube::Client, String)> {
    let (config, namespace) = load_config(args).await?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

/// The kubeconfig (or in-cluster configuration) `args` select, and its namespace.
async fn load_config(args: &KubeArgs) -> Result<(kube::Config, String)> {
    let config = match &args.context {
        Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("loading kubeconfig context {context:?}"))?,
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster)",
        )?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((config, namespace))
}

/// Percent-encodes `segments` onto `prefix` (an absolute path) and appends `query`.
pub fn join_path(prefix: &str, segments: &[&str], query: &[(&str, &str)]) -> String {
    // A throwaway base just to borrow the URL crate's path and query encoding.
    let Ok(mut url) = Url::parse("http://k8s.invalid/") else {
        return prefix.to_string();
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear();
        path.extend(prefix.split('/').filter(|s| !s.is_empty()));
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// `/apis/caplab.dev/v1alpha1/namespaces/{ns}/registerclusters/{name}`.
pub fn cluster_path(namespace: &str, name: &str) -> String {
    join_path(
        &format!("/apis/{GROUP}/{VERSION}"),
        &["namespaces", namespace, PLURAL, name],
        &[],
    )
}

/// Pod name of a member: `<cluster>-<ordinal>`.
pub fn pod_name(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal}")
}

/// GETs a path of the API server as JSON.
pub async fn get_json(client: &kube::Client, path: &str) -> Result<Value> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .with_context(|| format!("building GET {path}"))?;
    client
        .request::<Value>(request)
        .await
        .map_err(|e| api_error(e, path))
}

fn api_error(e: kube::Error, path: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(status) if status.code == 404 => {
            anyhow!("{path}: not found ({})", status.message)
        }
        kube::Error::Api(status) => anyhow!("{path}: HTTP {}: {}", status.code, status.message),
        other => anyhow!("{path}: {other}"),
    }
}

/// The RegisterCluster as JSON.
pub async fn get_cluster(client: &kube::Client, namespace: &str, name: &str) -> Result<Value> {
    get_json(client, &cluster_path(namespace, name))
        .await
        .with_context(|| format!("reading RegisterCluster {namespace}/{name}"))
}

/// One RegisterCluster: a client of the API server that holds it, its namespace and name.
#[derive(Clone)]
pub struct ClusterRef {
    /// For the API server's own resources: kube's default retries of 429, 503 and 504
    /// answers are welcome there.
    pub client: kube::Client,
    /// For member calls through the pod proxy: the same configuration without those
    /// retries (see [`ClusterRef::member`]).
    members: kube::Client,
    pub namespace: String,
    pub name: String,
}

impl ClusterRef {
    /// The RegisterCluster `name` in the namespace `args` selects (see [`connect`]).
    pub async fn connect(args: &KubeArgs, name: &str) -> Result<ClusterRef> {
        let (config, namespace) = load_config(args).await?;
        ClusterRef::from_config(config, namespace, name)
    }

    /// Both clients from `config` (see [`ClusterRef::members_client`]).
    pub(crate) fn from_config(
        config: kube::Config,
        namespace: String,
        name: &str,
    ) -> Result<ClusterRef> {
        let mut once = config.clone();
        once.default_retry = false;
        let build = |c| kube::Client::try_from(c).context("building the Kubernetes client");
        Ok(ClusterRef {
            client: build(config)?,
            members: build(once)?,
            namespace,
            name: name.to_string(),
        })
    }

    /// The client for member calls through the pod proxy: never retried by kube, because a
    /// member's `504` means the operation may have taken effect, and a blind retry could
    /// apply a write twice or record a compare-and-set as failed on the value it wrote itself
    /// (kube-client 5 retries 429/503/504 answers by default, which made an experiment's
    /// history non-linearizable). `crate::client::Member::proxied` takes it from here.
    pub fn members_client(&self) -> kube::Client {
        self.members.clone()
    }

    /// The resource as JSON.
    pub async fn get(&self) -> Result<Value> {
        get_cluster(&self.client, &self.namespace, &self.name).await
    }

    /// The resource in the CLI's reader view; an error if it is not in that shape.
    pub async fn read(&self) -> Result<RegisterCluster> {
        let value = self.get().await?;
        RegisterCluster::from_value(value).with_context(|| {
            format!(
                "{}/{} does not look like a RegisterCluster",
                self.namespace, self.name
            )
        })
    }

    /// Pod name of member `ordinal`.
    pub fn pod(&self, ordinal: u32) -> String {
        pod_name(&self.name, ordinal)
    }
}

/// The merge patch that makes `spec.faults` exactly `faults`, guarded by `resource_version`
/// (the API server refuses it with 409 if the resource changed in between).
pub fn faults_patch(resource_version: Option<&str>, faults: &[Value]) -> Value {
    let mut patch = json!({ "spec": { "faults": faults } });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

/// `current` without the faults named in `ours`, then `active` appended: the faults of other
/// people stay as they are.
pub fn merged_faults(current: &Value, ours: &[String], active: &[Value]) -> Vec<Value> {
    let mut faults: Vec<Value> = current["spec"]["faults"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| {
                    !f["name"]
                        .as_str()
                        .is_some_and(|n| ours.iter().any(|o| o == n))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    faults.extend(active.iter().cloned());
    faults
}

/// Sets our faults in `spec.faults` to `active`, leaving other faults alone (no request if
/// nothing changes); retries when someone else edits the resource at the same time. Returns
/// the resource's `metadata.generation` with the change (if the API server gives one).
pub async fn set_faults(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    ours: &[String],
    active: &[Value],
) -> Result<Option<i64>> {
    let path = cluster_path(namespace, name);
    let mut last = None;
    for _ in 0..5 {
        let current = get_cluster(client, namespace, name).await?;
        let faults = merged_faults(&current, ours, active);
        let unchanged = match current["spec"]["faults"].as_array() {
            Some(now) => *now == faults,
            None => faults.is_empty(),
        };
        if unchanged {
            return Ok(current["metadata"]["generation"].as_i64());
        }
        let patch = faults_patch(current["metadata"]["resourceVersion"].as_str(), &faults);
        let body = serde_json::to_vec(&patch).context("serialising the patch")?;
        let request = http::Request::patch(&path)
            .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
            .body(body)
            .with_context(|| format!("building PATCH {path}"))?;
        match client.request::<Value>(request).await {
            Ok(patched) => return Ok(patched["metadata"]["generation"].as_i64()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                last = Some(status.message.clone());
            }
            Err(e) => {
                return Err(api_error(e, &path))
                    .with_context(|| format!("patching spec.faults of {namespace}/{name}"))
            }
        }
    }
    bail!(
        "patching spec.faults of {namespace}/{name}: conflicts kept happening ({})",
        last.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            cluster_path("default", "raft5"),
            "/apis/caplab.dev/v1alpha1/namespaces/default/registerclusters/raft5"
        );
        assert_eq!(pod_name("raft5", 3), "raft5-3");
        let prefix = "/api/v1/namespaces/lab/pods/raft5-0:8080/proxy";
        assert_eq!(
            join_path(prefix, &["v1", "kv", "x"], &[("consistency", "local")]),
            "/api/v1/namespaces/lab/pods/raft5-0:8080/proxy/v1/kv/x?consistency=local"
        );
        assert_eq!(
            join_path(prefix, &["v1", "kv", "a/b c", "cas"], &[]),
            "/api/v1/namespaces/lab/pods/raft5-0:8080/proxy/v1/kv/a%2Fb%20c/cas"
        );
        // Names cannot smuggle extra path segments.
        assert_eq!(
            cluster_path("ns/x", "a?b"),
            "/apis/caplab.dev/v1alpha1/namespaces/ns%2Fx/registerclusters/a%3Fb"
        );
    }

    #[test]
    fn fault_patches_keep_other_faults() {
        let current = json!({
            "metadata": {"resourceVersion": "42"},
            "spec": {"faults": [
                {"name": "theirs", "kind": "pause", "targets": [1]},
                {"name": "ours-0", "kind": "crash", "targets": ["leader"]}
            ]}
        });
        let ours = vec!["ours-0".to_string(), "ours-1".to_string()];
        let new =
            json!({"name": "ours-1", "kind": "partition", "groups": [["leader"], ["followers"]]});
        let merged = merged_faults(&current, &ours, std::slice::from_ref(&new));
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0]["name"], "theirs");
        assert_eq!(merged[1]["name"], "ours-1");
        let patch = faults_patch(Some("42"), &merged);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["spec"]["faults"].as_array().map(Vec::len), Some(2));
        // Clearing ours leaves only theirs; an absent list is an empty one.
        assert_eq!(merged_faults(&current, &ours, &[]).len(), 1);
        assert!(merged_faults(&json!({"spec": {}}), &ours, &[]).is_empty());
        assert_eq!(faults_patch(None, &[]), json!({"spec": {"faults": []}}));
    }
}
