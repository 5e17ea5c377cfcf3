//! A [`Transport`] that reaches a member through the Kubernetes API server's pod proxy
//! (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>`), so a laptop reaches a kind
//! cluster's members with no DNS and no port-forward.
//!
//! The API server answers for itself (a `metav1.Status` body) when it did not forward the
//! request or lost the member halfway; such an answer is not the member's, so it becomes a
//! [`TransportError`]: never delivered when the API server refused it (any 4xx) or could not
//! connect to the pod, maybe delivered otherwise. Answers in any other shape are the
//! member's, and [`caplab_api::client::classify`] reads them.

use caplab_api::identity::INCARNATION_HEADER;
use caplab_api::paths::Port;
use caplab_api::transport::{BoxFuture, Transport, TransportError, WireAnswer, WireRequest};
use kube::client::Body;
use serde_json::Value;

use crate::k8s::{join_path, ClusterRef};

/// One pod's listeners through the API server.
#[derive(Clone)]
pub struct PodProxy {
    client: kube::Client,
    namespace: String,
    pod: String,
}

impl PodProxy {
    /// Pod `pod` of `cluster`'s namespace, over the cluster's client for member calls, which
    /// kube never retries (see [`ClusterRef::members_client`]): the only way to build one, so
    /// that no member call can go through the retrying client by mistake.
    pub fn new(cluster: &ClusterRef, pod: &str) -> PodProxy {
        PodProxy {
            client: cluster.members_client(),
            namespace: cluster.namespace.clone(),
            pod: pod.to_string(),
        }
    }

    /// `/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy`: the API server forwards what
    /// follows to the pod's port.
    pub fn prefix(&self, port: Port) -> String {
        let pod_port = format!("{}:{}", self.pod, port.number());
        join_path(
            "/api/v1",
            &["namespaces", &self.namespace, "pods", &pod_port, "proxy"],
            &[],
        )
    }

    async fn exchange(&self, request: WireRequest) -> Result<WireAnswer, TransportError> {
        let path = format!("{}{}", self.prefix(request.port), request.path);
        let what = format!("{} {path}", request.method);
        let cut = |message: String| TransportError {
            message,
            maybe_delivered: true,
        };
        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(&path);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let body = match request.body {
            Some(bytes) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let http_request = builder.body(body).map_err(|e| TransportError {
            message: format!("building {what}: {e}"),
            maybe_delivered: false,
        })?;
        let exchange = async {
            let response = self.client.send(http_request).await?;
            let status = response.status().as_u16();
            let incarnation = response
                .headers()
                .get(INCARNATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = response.into_body().collect_bytes().await?;
            Ok::<_, kube::Error>((status, incarnation, bytes.to_vec()))
        };
        let (status, incarnation, body) =
            match tokio::time::timeout(request.timeout, exchange).await {
                Err(_) => {
                    return Err(cut(format!(
                        "{what}: no answer within {:?}",
                        request.timeout
                    )))
                }
                Ok(Err(e)) => return Err(cut(format!("{what}: {e}"))),
                Ok(Ok(answer)) => answer,
            };
        match api_server_refusal(status, &body) {
            Some(error) => Err(error),
            None => Ok(WireAnswer {
                status,
                incarnation,
                body,
            }),
        }
    }
}

impl Transport for PodProxy {
    fn send(&self, request: WireRequest) -> BoxFuture<'_, Result<WireAnswer, TransportError>> {
        Box::pin(self.exchange(request))
    }

    fn target(&self, port: Port, path: &str) -> String {
        format!("{}{path}", self.prefix(port))
    }
}

/// The API server's own answer (`kind: Status`), as the transport error it means; `None`
/// for the member's answers.
pub fn api_server_refusal(status: u16, body: &[u8]) -> Option<TransportError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let from_api_server = value.get("kind").and_then(Value::as_str) == Some("Status")
        && value.get("apiVersion").is_some();
    if !from_api_server || status == 200 {
        return None;
    }
    let message = value.get("message").and_then(Value::as_str).unwrap_or("");
    let never_forwarded = (400..500).contains(&status)
        || message.contains("connection refused")
        || message.contains("no route to host");
    Some(TransportError {
        message: format!("API server HTTP {status}: {message}"),
        maybe_delivered: !never_forwarded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "message": message, "code": code}))
        .expect("json")
    }

    #[test]
    fn the_api_server_s_own_answers_are_transport_errors() {
        for (code, message) in [
            (403, "pods \"x-0\" is forbidden"),
            (404, "pods \"x-0\" not found"),
            (
                503,
                "error trying to reach service: dial tcp 10.0.0.1:8080: connect: connection refused",
            ),
        ] {
            let e = api_server_refusal(code, &status(code, message)).expect("the API server's");
            assert!(!e.maybe_delivered, "{code} {message}");
            assert!(e.message.starts_with("API server HTTP"), "{}", e.message);
        }
        // Lost halfway: the request may have reached the member.
        let lost = api_server_refusal(503, &status(503, "error trying to reach service: EOF"));
        assert!(lost.is_some_and(|e| e.maybe_delivered));
        // The member's own answers pass through.
        assert!(
            api_server_refusal(503, br#"{"error":"no leader","outcome":"not-applied"}"#).is_none()
        );
        assert!(api_server_refusal(502, b"bad gateway").is_none());
    }

    #[tokio::test]
    async fn requests_address_the_pod_proxy() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let cluster = ClusterRef::from_config(config, "lab".into(), "raft5").expect("clients");
        let proxy = PodProxy::new(&cluster, "raft5-2");
        assert_eq!(
            proxy.target(Port::Client, &caplab_api::paths::kv_cas("k 1")),
            "/api/v1/namespaces/lab/pods/raft5-2:8080/proxy/v1/kv/k%201/cas"
        );
        assert_eq!(
            proxy.prefix(Port::Peer),
            "/api/v1/namespaces/lab/pods/raft5-2:7000/proxy"
        );
    }
}
