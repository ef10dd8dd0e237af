//! The clouds the reconcile loop drives, behind a small trait: in the server, VM-provider
//! plugins; in the reconcile benchmark, an in-memory fake.

use std::future::Future;
use std::sync::Arc;

use crate::domain::autoscale::StoredProviderConfig;
use crate::domain::provider::{ProviderError, Vm, VmSpec};
use crate::plugins::{Endpoints, NamedCallError, ProviderHandle, Registry};

/// Creates, destroys and lists VMs for a provider config.
pub trait Cloud: Send + Sync + 'static {
    fn create(
        &self,
        provider: &StoredProviderConfig,
        spec: VmSpec,
    ) -> impl Future<Output = Result<Vm, ProviderError>> + Send;

    fn destroy(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The VM with provider id `instance_id` (`ProviderError::NotFound` if none).
    fn get(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vm, ProviderError>> + Send;

    /// The VMs that carry tag `tag`.
    fn list(
        &self,
        provider: &StoredProviderConfig,
        tag: (String, String),
    ) -> impl Future<Output = Result<Vec<Vm>, ProviderError>> + Send;
}

/// VM-provider plugins from the registry; each call reaches only the endpoints the
/// provider's settings were validated for.
pub struct PluginCloud(pub Arc<Registry>);

impl PluginCloud {
    fn provider<'a>(&'a self, provider: &'a StoredProviderConfig) -> ProviderHandle<'a> {
        let endpoints = Endpoints {
            origins: provider.validated.endpoints.clone(),
            allow_private: provider.config.allow_private_endpoints,
        };
        self.0.provider(&provider.config.provider, endpoints)
    }
}

/// A call that did not reach the provider's answer, as the reconcile loop sees it.
fn call_failed(error: NamedCallError) -> ProviderError {
    match error {
        NamedCallError::NotFound { .. } => ProviderError::Other(error.to_string()),
        // A trap or a deadline: the plugin may do better next time.
        NamedCallError::Call { .. } => ProviderError::Transient(error.to_string()),
    }
}

impl Cloud for PluginCloud {
    async fn create(
        &self,
        provider: &StoredProviderConfig,
        spec: VmSpec,
    ) -> Result<Vm, ProviderError> {
        let settings = provider.config.pairs();
        let handle = self.provider(provider);
        handle.create(&settings, &spec).await.map_err(call_failed)?
    }

    async fn get(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> Result<Vm, ProviderError> {
        let settings = provider.config.pairs();
        let handle = self.provider(provider);
        handle
            .get(&settings, instance_id)
            .await
            .map_err(call_failed)?
    }

    async fn destroy(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> Result<(), ProviderError> {
        let settings = provider.config.pairs();
        let handle = self.provider(provider);
        handle
            .destroy(&settings, instance_id)
            .await
            .map_err(call_failed)?
    }

    async fn list(
        &self,
        provider: &StoredProviderConfig,
        tag: (String, String),
    ) -> Result<Vec<Vm>, ProviderError> {
        let settings = provider.config.pairs();
        let handle = self.provider(provider);
        handle.list(&settings, &tag).await.map_err(call_failed)?
    }
}
