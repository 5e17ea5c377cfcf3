//! Build and apply what a cluster owns besides its member pods: the admin token Secret, the
//! client Service and the PodDisruptionBudget.

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PostParams};
use serde_json::json;
use tracing::{debug, warn};

use super::{apply_params, Error, Pass};
use crate::member_client::AdminAuth;
use crate::resources::{self, TOKEN_KEY};

impl Pass<'_> {
    /// The admin token Secret (created once), the client Service and the
    /// PodDisruptionBudget; returns what admin calls to this cluster's members carry.
    pub(super) async fn apply_owned(&self) -> Result<AdminAuth, Error> {
        let token = self.ensure_secret().await?;
        self.api::<Service>()
            .patch(
                &self.name,
                &apply_params(),
                &Patch::Apply(&resources::client_service(self.rc)),
            )
            .await?;
        if let Err(e) = self.apply_disruption_budget().await {
            // The members run without it; say what is missing rather than stop managing them.
            warn!(cluster = %self.name, error = %e, "applying the PodDisruptionBudget failed");
            self.ctx.metrics.error("kube");
            let note = format!(
                "could not apply PodDisruptionBudget {}: {e}; a drain may take more than one \
                 member at a time (the operator needs get/create/patch on \
                 policy/poddisruptionbudgets)",
                resources::pdb_name(&self.name)
            );
            self.event(true, "DisruptionBudgetFailed", note).await;
        }
        Ok(AdminAuth {
            token,
            cluster: resources::cluster_id(self.rc),
        })
    }

    /// Applies the PodDisruptionBudget as `policy/v1`, or as `policy/v1beta1` where the
    /// server does not serve v1 (Kubernetes before 1.21 answers 404 for the v1 resource).
    async fn apply_disruption_budget(&self) -> Result<(), kube::Error> {
        let pdb = serde_json::to_value(resources::disruption_budget(self.rc))
            .map_err(kube::Error::SerdeError)?;
        let name = resources::pdb_name(&self.name);
        match self.apply_pdb_as("v1", &name, &pdb).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                debug!(cluster = %self.name, "policy/v1 not served: PodDisruptionBudget as policy/v1beta1");
                self.apply_pdb_as("v1beta1", &name, &pdb).await
            }
            other => other,
        }
    }

    async fn apply_pdb_as(
        &self,
        version: &str,
        name: &str,
        pdb: &serde_json::Value,
    ) -> Result<(), kube::Error> {
        let gvk = kube::api::GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
        let mut body = pdb.clone();
        body["apiVersion"] = json!(resource.api_version);
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.ns, &resource);
        api.patch(name, &apply_params(), &Patch::Apply(&body))
            .await
            .map(drop)
    }

    /// The admin token from the cluster's Secret, which is created with a new random token
    /// if missing (another writer's Secret wins a create race).
    async fn ensure_secret(&self) -> Result<String, Error> {
        let api = self.api::<Secret>();
        let name = resources::secret_name(&self.name);
        let read = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get(TOKEN_KEY))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        if let Some(s) = api.get_opt(&name).await? {
            return read(&s).ok_or(Error::BadSecret(name));
        }
        let token = new_token();
        let secret = resources::admin_secret(self.rc, &token);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(token),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let s = api.get(&name).await?;
                read(&s).ok_or(Error::BadSecret(name))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A new admin token: 32 random bytes as 64 hex digits.
fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}
