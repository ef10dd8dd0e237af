//! The clouds the reconcile loop drives, behind a small trait: in the server, VM-provider
//! plugins; in the reconcile benchmark, an in-memory fake.

use std::future::Future;
use std::sync::Arc;

use crate::domain::autoscale::StoredProviderConfig;
use crate::domain::provider::{ProviderError, Vm, VmSpec};
use crate::plugins::{Endpoints, NamedCallError, ProviderAnswer, ProviderCall, Registry};

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
    async fn call(
        &self,
        provider: &StoredProviderConfig,
        call: ProviderCall,
    ) -> Result<ProviderAnswer, ProviderError> {
        self.0
            .provider_call(
                &provider.config.provider,
                &Endpoints {
                    origins: provider.validated.endpoints.clone(),
                    allow_private: provider.config.allow_private_endpoints,
                },
                call,
            )
            .await
            .map_err(|error| match error {
                NamedCallError::NotFound { .. } => ProviderError::Other(error.to_string()),
                // A trap or a deadline: the plugin may do better next time.
                NamedCallError::Call { .. } => ProviderError::Transient(error.to_string()),
            })
    }
}

impl Cloud for PluginCloud {
    async fn create(
        &self,
        provider: &StoredProviderConfig,
        spec: VmSpec,
    ) -> Result<Vm, ProviderError> {
        let settings = provider.config.pairs();
        match self
            .call(provider, ProviderCall::Create { settings, spec })
            .await?
        {
            ProviderAnswer::Vm(vm) => vm,
            other => unreachable!("create-vm answered {other:?}"),
        }
    }

    async fn get(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> Result<Vm, ProviderError> {
        let call = ProviderCall::Get {
            settings: provider.config.pairs(),
            instance_id: instance_id.to_string(),
        };
        match self.call(provider, call).await? {
            ProviderAnswer::Vm(vm) => vm,
            other => unreachable!("get-vm answered {other:?}"),
        }
    }

    async fn destroy(
        &self,
        provider: &StoredProviderConfig,
        instance_id: &str,
    ) -> Result<(), ProviderError> {
        let call = ProviderCall::Destroy {
            settings: provider.config.pairs(),
            instance_id: instance_id.to_string(),
        };
        match self.call(provider, call).await? {
            ProviderAnswer::Destroyed(result) => result,
            other => unreachable!("destroy-vm answered {other:?}"),
        }
    }

    async fn list(
        &self,
        provider: &StoredProviderConfig,
        tag: (String, String),
    ) -> Result<Vec<Vm>, ProviderError> {
        let call = ProviderCall::List {
            settings: provider.config.pairs(),
            tag,
        };
        match self.call(provider, call).await? {
            ProviderAnswer::Vms(result) => result,
            other => unreachable!("list-vms answered {other:?}"),
        }
    }
}
