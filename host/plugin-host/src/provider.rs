//! Calling a VM provider: one typed method per provider function. A call runs on the async
//! workers and hands its worker back every few milliseconds of guest code (and whenever it
//! waits on the network), reaches only the endpoints it is given, and ends at the provider
//! deadline, network included.

use std::future::Future;
use std::pin::Pin;

use wasmtime::Store;
use zonebroker_core::domain::provider::{
    ProviderError, ProviderInfo, ValidatedSettings, Vm, VmSpec,
};

use super::call::classify;
use super::engine::deadline_ticks;
use super::error::CallError;
use super::http::Endpoints;
use super::kind::PluginKind;
use super::load::{Instantiator, LoadedPlugin};
use super::runtime::PluginRuntime;
use super::sandbox::{CallLimits, CallState};
use super::wit::provider::VmProviderPre;
use super::wit::provider::exports::zonebroker::plugin::provider::Guest as ProviderExports;
use super::wit::provider_convert as convert;

/// Fuel a provider call may burn before it yields to the async runtime: a few milliseconds
/// of guest code.
const PROVIDER_YIELD_FUEL: u64 = 2_000_000;

/// A loaded VM-provider plugin, ready to be called under the runtime's provider limits, its
/// network calls allowed to `endpoints` only (origins, as validated settings name them).
pub struct LoadedProvider<'a> {
    runtime: &'a PluginRuntime,
    instantiator: &'a VmProviderPre<CallState>,
    endpoints: &'a Endpoints,
    limits: CallLimits,
}

impl PluginRuntime {
    /// `plugin` as a VM provider whose calls reach only `endpoints`.
    pub fn provider<'a>(
        &'a self,
        plugin: &'a LoadedPlugin,
        endpoints: &'a Endpoints,
    ) -> Result<LoadedProvider<'a>, CallError> {
        let Instantiator::VmProvider(instantiator) = &plugin.instance else {
            return Err(CallError::WrongKind {
                expected: PluginKind::VmProvider,
                actual: plugin.kind,
            });
        };
        Ok(LoadedProvider {
            runtime: self,
            instantiator,
            endpoints,
            limits: self.limits_of(plugin),
        })
    }
}

/// One guest function called on a fresh instance, borrowing its exports and its store.
type GuestCall<'s, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 's>>;

impl LoadedProvider<'_> {
    /// What the provider is and which settings it takes (no network).
    pub async fn describe(&self) -> Result<ProviderInfo, CallError> {
        let info = self
            .call(|provider, store| Box::pin(provider.call_describe(store)))
            .await?;
        Ok(convert::info(info))
    }

    /// Whether `settings` are valid, and which endpoints and how many instances they allow.
    pub async fn validate(
        &self,
        settings: &[(String, String)],
    ) -> Result<Result<ValidatedSettings, ProviderError>, CallError> {
        let settings = convert::pairs(settings);
        let validated = self
            .call(move |provider, store| {
                Box::pin(async move { provider.call_validate(store, &settings).await })
            })
            .await?;
        Ok(validated.map(convert::validated).map_err(convert::error))
    }

    /// Create a VM for `spec`.
    pub async fn create(
        &self,
        settings: &[(String, String)],
        spec: &VmSpec,
    ) -> Result<Result<Vm, ProviderError>, CallError> {
        let (settings, spec) = (convert::pairs(settings), convert::spec(spec));
        let created = self
            .call(move |provider, store| {
                Box::pin(async move { provider.call_create_vm(store, &settings, &spec).await })
            })
            .await?;
        Ok(created.map(convert::vm).map_err(convert::error))
    }

    /// The VM with provider id `instance_id` (`ProviderError::NotFound` if none).
    pub async fn get(
        &self,
        settings: &[(String, String)],
        instance_id: &str,
    ) -> Result<Result<Vm, ProviderError>, CallError> {
        let (settings, instance_id) = (convert::pairs(settings), instance_id.to_string());
        let got = self
            .call(move |provider, store| {
                Box::pin(async move { provider.call_get_vm(store, &settings, &instance_id).await })
            })
            .await?;
        Ok(got.map(convert::vm).map_err(convert::error))
    }

    /// The VMs that carry tag `tag` (name, value).
    pub async fn list(
        &self,
        settings: &[(String, String)],
        tag: &(String, String),
    ) -> Result<Result<Vec<Vm>, ProviderError>, CallError> {
        let settings = convert::pairs(settings);
        let tag = convert::pairs(std::slice::from_ref(tag)).remove(0);
        let listed = self
            .call(move |provider, store| {
                Box::pin(async move { provider.call_list_vms(store, &settings, &tag).await })
            })
            .await?;
        Ok(listed
            .map(|vms| vms.into_iter().map(convert::vm).collect())
            .map_err(convert::error))
    }

    /// Destroy the VM with provider id `instance_id` (destroying a gone one is no error).
    pub async fn destroy(
        &self,
        settings: &[(String, String)],
        instance_id: &str,
    ) -> Result<Result<(), ProviderError>, CallError> {
        let (settings, instance_id) = (convert::pairs(settings), instance_id.to_string());
        let destroyed = self
            .call(move |provider, store| {
                Box::pin(async move {
                    provider
                        .call_destroy_vm(store, &settings, &instance_id)
                        .await
                })
            })
            .await?;
        Ok(destroyed.map_err(convert::error))
    }

    /// Instantiate in a fresh store under the provider limits and call `function`; the
    /// whole call, instantiation and network included, ends at the provider deadline.
    async fn call<T>(
        &self,
        function: impl for<'s> FnOnce(&'s ProviderExports, &'s mut Store<CallState>) -> GuestCall<'s, T>,
    ) -> Result<T, CallError> {
        let limits = &self.limits;
        let mut store = Store::new(
            &self.runtime.engine,
            CallState::provider(limits, self.endpoints),
        );
        store.limiter(|state| state.limiter());
        store
            .set_fuel(limits.fuel)
            .expect("the engine is configured with fuel");
        // However long it computes, a call hands its worker back every few milliseconds, so
        // listeners and other calls keep going.
        store
            .fuel_async_yield_interval(Some(PROVIDER_YIELD_FUEL))
            .expect("the engine is configured with fuel");
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let run = async {
            let instance = self.instantiator.instantiate_async(&mut store).await?;
            function(instance.zonebroker_plugin_provider(), &mut store).await
        };
        let result = tokio::time::timeout(limits.deadline, run).await;
        let output = store.data_mut().take_output();
        output.emit();
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(classify(error, limits, &output)),
            Err(_) => Err(CallError::DeadlineExceeded {
                deadline: limits.deadline,
            }),
        }
    }
}
