//! A VM provider by name: [`Registry::provider`] answers a handle whose calls take and
//! answer the domain's provider types. Each call runs on the provider's active version at
//! the time it starts, in a `plugin_call` span, and logs how it went.

use std::sync::Arc;
use std::time::Instant;

use tracing::{Instrument, Span, info_span};
use zonebroker_core::domain::provider::{
    ProviderError, ProviderInfo, ValidatedSettings, Vm, VmSpec,
};

use super::error::CallError;
use super::http::Endpoints;
use super::kind::PluginKind;
use super::load::LoadedPlugin;
use super::provider::LoadedProvider;
use super::registry::{NamedCallError, Registry};

/// VM provider `name`, its calls allowed to reach `endpoints` only.
pub struct ProviderHandle<'a> {
    registry: &'a Registry,
    name: &'a str,
    endpoints: Endpoints,
}

impl Registry {
    /// VM provider `name`, whose calls reach only `endpoints`. Whether it is installed is
    /// known at each call ([`NamedCallError::NotFound`]).
    pub fn provider<'a>(&'a self, name: &'a str, endpoints: Endpoints) -> ProviderHandle<'a> {
        ProviderHandle {
            registry: self,
            name,
            endpoints,
        }
    }
}

impl ProviderHandle<'_> {
    /// What the provider is and which settings it takes.
    pub async fn describe(&self) -> Result<ProviderInfo, NamedCallError> {
        let call = self.start("describe")?;
        let result = async { call.provider()?.describe().await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// Whether `settings` are valid, and which endpoints and how many instances they allow.
    pub async fn validate(
        &self,
        settings: &[(String, String)],
    ) -> Result<Result<ValidatedSettings, ProviderError>, NamedCallError> {
        let call = self.start("validate")?;
        let result = async { call.provider()?.validate(settings).await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// Create a VM for `spec`.
    pub async fn create(
        &self,
        settings: &[(String, String)],
        spec: &VmSpec,
    ) -> Result<Result<Vm, ProviderError>, NamedCallError> {
        let call = self.start("create-vm")?;
        let result = async { call.provider()?.create(settings, spec).await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// The VM with provider id `instance_id` (`ProviderError::NotFound` if none).
    pub async fn get(
        &self,
        settings: &[(String, String)],
        instance_id: &str,
    ) -> Result<Result<Vm, ProviderError>, NamedCallError> {
        let call = self.start("get-vm")?;
        let result = async { call.provider()?.get(settings, instance_id).await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// The VMs that carry tag `tag` (name, value).
    pub async fn list(
        &self,
        settings: &[(String, String)],
        tag: &(String, String),
    ) -> Result<Result<Vec<Vm>, ProviderError>, NamedCallError> {
        let call = self.start("list-vms")?;
        let result = async { call.provider()?.list(settings, tag).await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// Destroy the VM with provider id `instance_id` (destroying a gone one is no error).
    pub async fn destroy(
        &self,
        settings: &[(String, String)],
        instance_id: &str,
    ) -> Result<Result<(), ProviderError>, NamedCallError> {
        let call = self.start("destroy-vm")?;
        let result = async { call.provider()?.destroy(settings, instance_id).await }
            .instrument(call.span.clone())
            .await;
        call.finish(result)
    }

    /// Take the active version for one call of WIT function `function`.
    fn start(&self, function: &'static str) -> Result<NamedProviderCall<'_>, NamedCallError> {
        let plugin = self.registry.active_of(self.name, PluginKind::VmProvider)?;
        let span = info_span!(
            "plugin_call",
            plugin = self.name,
            version = &plugin.sha256()[..12],
            function,
        );
        Ok(NamedProviderCall {
            handle: self,
            plugin,
            span,
            start: Instant::now(),
        })
    }
}

/// One call through a [`ProviderHandle`]: the version it runs on, its span, its start.
struct NamedProviderCall<'h> {
    handle: &'h ProviderHandle<'h>,
    plugin: Arc<LoadedPlugin>,
    span: Span,
    start: Instant,
}

impl NamedProviderCall<'_> {
    fn provider(&self) -> Result<LoadedProvider<'_>, CallError> {
        self.handle
            .registry
            .runtime()
            .provider(&self.plugin, &self.handle.endpoints)
    }

    /// Log how the call went, and name the plugin in its error.
    fn finish<T>(self, result: Result<T, CallError>) -> Result<T, NamedCallError> {
        let _entered = self.span.enter();
        let elapsed_ms = self.start.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => tracing::debug!(elapsed_ms, "provider call done"),
            Err(error) => tracing::warn!(
                elapsed_ms,
                code = error.code(),
                "provider call failed: {error}"
            ),
        }
        result.map_err(|error| NamedCallError::Call {
            name: self.handle.name.to_string(),
            error,
        })
    }
}
