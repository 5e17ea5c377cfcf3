//! The results of experiments, fetched without special access to the volume: `caplab
//! experiment fetch` starts a short-lived pod of the `caplab` image that mounts the cluster's
//! results PVC read-only and runs `caplab experiment serve`, reads the run's files through
//! the API server's pod proxy (no DNS, port-forward or tar needed: the image is FROM
//! scratch), writes them locally and deletes the pod.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::k8s::{self, KubeArgs};

/// The files of a run, as `caplab experiment` writes them.
pub const FILES: [&str; 4] = ["verdict.json", "history.json", "events.json", "report.html"];
/// The port `serve` listens on in the fetch pod.
const SERVE_PORT: u16 = 8080;
/// How long the fetch pod may take to start and answer.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Starts the body of `serve`'s 404 for a run missing from the PVC, so `fetch` can tell it
/// from the pod proxy's own errors while the pod starts.
const NO_RUN: &str = "caplab-results: ";

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The RegisterCluster whose experiment results to fetch.
    #[arg(long, short = 'c', env = "CAPLAB_CLUSTER")]
    pub cluster: String,
    /// The run (default: status.experiment.runId, the current or last run).
    #[arg(long)]
    pub run: Option<String>,
    /// Directory to write the files into (created if missing).
    #[arg(long, short = 'o', default_value = ".")]
    pub output: PathBuf,
    /// The `caplab` image the fetch pod runs (the operator's experiments use the same).
    #[arg(long, default_value = concat!("caplab/cli:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory to serve (read only): GET /<run>/<file>.
    #[arg(long, default_value = "/results")]
    pub dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

/// Serves the files under `dir` over HTTP until stopped (the fetch pod's process).
pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let app = Router::new()
        .route("/{*path}", axum::routing::get(file))
        .with_state(args.dir.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("serving {} on {}", args.dir.display(), args.listen);
    axum::serve(listener, app).await.context("serving")?;
    Ok(ExitCode::SUCCESS)
}

/// One file under the served directory; paths leaving it are refused.
async fn file(State(dir): State<PathBuf>, UrlPath(path): UrlPath<String>) -> (StatusCode, Vec<u8>) {
    let Some(rel) = inside(&path) else {
        return (
            StatusCode::BAD_REQUEST,
            b"path must stay inside the results".to_vec(),
        );
    };
    match tokio::fs::read(dir.join(&rel)).await {
        Ok(bytes) => (StatusCode::OK, bytes),
        Err(e) => match rel.components().next() {
            Some(run) if !dir.join(run).is_dir() => {
                let run = run.as_os_str().to_string_lossy();
                let msg = format!("{NO_RUN}{}", missing_run(&run, &runs_in(&dir)));
                (StatusCode::NOT_FOUND, msg.into_bytes())
            }
            _ => (StatusCode::NOT_FOUND, e.to_string().into_bytes()),
        },
    }
}

/// The runs (directories) under `dir`, sorted; empty if it cannot be read.
fn runs_in(dir: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    runs
}

/// The one-line answer for a run with no files on the PVC.
fn missing_run(run: &str, runs: &[String]) -> String {
    let there = if runs.is_empty() {
        "none".to_string()
    } else {
        runs.join(", ")
    };
    format!("run {run} has no files on the PVC (runs there: {there})")
}

/// `path` as a relative path of plain components, or `None` (`..`, absolute paths).
fn inside(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

/// Fetches a run's files through a short-lived serving pod, which is deleted in any case.
pub async fn fetch(kube: &KubeArgs, args: FetchArgs) -> Result<ExitCode> {
    let (client, ns) = k8s::connect(kube).await?;
    let run = match &args.run {
        Some(r) => r.clone(),
        None => current_run(&client, &ns, &args.cluster).await?,
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Unique per fetch: a pod left behind by an interrupted fetch (it ends by its
    // activeDeadlineSeconds) does not block the next one.
    let name = format!(
        "{}-results-fetch-{:08x}",
        args.cluster.chars().take(40).collect::<String>(),
        rand::random::<u32>()
    );
    let pod: Pod =
        serde_json::from_value(fetch_pod(&name, &args)).context("building the fetch pod")?;
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) if s.code == 409 => bail!(
            "pod {ns}/{name} already exists (another fetch is running?): \
             try again, or delete it with `kubectl delete pod -n {ns} {name}`"
        ),
        other => other
            .with_context(|| format!("creating pod {ns}/{name} (it mounts the results PVC)"))?,
    };
    let copied = copy_files(&client, &ns, &name, &run, &args.output).await;
    if let Err(e) = pods.delete(&name, &DeleteParams::default()).await {
        eprintln!("note: could not delete pod {ns}/{name}: {e}");
    }
    let n = copied?;
    eprintln!("wrote {n} files of run {run} to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `status.experiment.runId` of the cluster.
async fn current_run(client: &kube::Client, ns: &str, cluster: &str) -> Result<String> {
    let rc = k8s::get_cluster(client, ns, cluster).await?;
    rc["status"]["experiment"]["runId"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            crate::exit::bad_input(anyhow!(
                "{ns}/{cluster} has run no experiment (no status.experiment.runId): give --run"
            ))
        })
}

/// The serving pod: the `caplab` image as a non-root user, read-only, the PVC read-only.
fn fetch_pod(name: &str, args: &FetchArgs) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"caplab.dev/experiment": args.cluster,
            "app.kubernetes.io/name": "caplab-results"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "activeDeadlineSeconds": 600,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "serve",
                "image": args.image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["experiment", "serve", "--dir", "/results",
                    "--listen", format!("0.0.0.0:{SERVE_PORT}")],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "results", "mountPath": "/results", "readOnly": true}],
            }],
            "volumes": [{"name": "results", "persistentVolumeClaim":
                {"claimName": format!("{}-results", args.cluster), "readOnly": true}}],
        },
    })
}

/// Copies the run's files through the pod proxy, retrying until the pod answers.
async fn copy_files(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    run: &str,
    out: &Path,
) -> Result<usize> {
    let started = Instant::now();
    let mut written = 0;
    for name in FILES {
        let path = k8s::join_path(
            "/api/v1",
            &[
                "namespaces",
                ns,
                "pods",
                &format!("{pod}:{SERVE_PORT}"),
                "proxy",
                run,
                name,
            ],
            &[],
        );
        let text = loop {
            let request = http::Request::get(&path)
                .body(Vec::new())
                .with_context(|| format!("building GET {path}"))?;
            match client.request_text(request).await {
                Ok(text) => break text,
                Err(kube::Error::Api(s)) if s.code == 404 && s.message.starts_with(NO_RUN) => {
                    return Err(crate::exit::bad_input(anyhow!(
                        "{}",
                        &s.message[NO_RUN.len()..]
                    )));
                }
                Err(kube::Error::Api(s)) if s.code == 404 && written > 0 => {
                    bail!("run {run} has no {name} (is the run finished?)")
                }
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    bail!("pod {ns}/{pod} did not serve {run}/{name} within {START_TIMEOUT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let file = out.join(name);
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_results_are_served() {
        assert_eq!(
            inside("r1/verdict.json"),
            Some(PathBuf::from("r1/verdict.json"))
        );
        assert_eq!(inside("../etc/passwd"), None);
        assert_eq!(inside("/etc/passwd"), None);
        assert_eq!(inside("r1/../../x"), None);
    }

    #[tokio::test]
    async fn a_missing_run_is_answered_at_once_with_the_runs_there() {
        let dir = std::env::temp_dir().join(format!("caplab-results-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("r2")).unwrap();
        std::fs::create_dir_all(dir.join("r1")).unwrap();
        let (code, body) = file(State(dir.clone()), UrlPath("nosuch/verdict.json".into())).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!("{NO_RUN}run nosuch has no files on the PVC (runs there: r1, r2)")
        );
        let (code, body) = file(State(dir.clone()), UrlPath("r1/verdict.json".into())).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(!String::from_utf8(body).unwrap().starts_with(NO_RUN));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            missing_run("x", &[]),
            "run x has no files on the PVC (runs there: none)"
        );
    }
}
