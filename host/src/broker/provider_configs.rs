//! VM provider configs: which provider plugin, with which settings. Every save is checked
//! by the plugin itself (`describe`, `validate`) and its endpoints by address.

use std::collections::BTreeSet;

use super::records::{
    MAX_UPDATE_ATTEMPTS, VersionedKind, changed_meanwhile, check_precondition, in_use, not_found,
    refuse_existing, too_contended,
};
use super::{Broker, BrokerError, Change};
use crate::domain::autoscale::{StoredProviderConfig, VmProviderConfig};
use crate::domain::provider::{ProviderError, ProviderInfo, ValidatedSettings};
use crate::domain::validation::FieldError;
use crate::plugins::{EndpointError, Endpoints, NamedCallError};
use crate::store::Swapped;

/// Where the view keeps provider configs, and their version.
const PROVIDER_CONFIGS: VersionedKind<StoredProviderConfig> = VersionedKind {
    records: |inventory| &mut inventory.provider_configs,
    version: |stored| stored.config.version,
};

impl Broker {
    // VM provider configs.

    /// Every provider config (its secret settings are shown nowhere: [`ProviderSettings`]).
    ///
    /// [`ProviderSettings`]: crate::domain::autoscale::ProviderSettings
    pub fn provider_configs(&self) -> Vec<VmProviderConfig> {
        self.read()
            .provider_configs
            .values()
            .map(|stored| stored.config.clone())
            .collect()
    }

    pub fn provider_config(&self, name: &str) -> Result<VmProviderConfig, BrokerError> {
        self.read()
            .provider_configs
            .get(name)
            .map(|stored| stored.config.clone())
            .ok_or_else(|| not_found("VM provider config", name))
    }

    /// The stored config, secrets included (for provider calls).
    pub(crate) fn stored_provider_config(&self, name: &str) -> Option<StoredProviderConfig> {
        self.read().provider_configs.get(name).cloned()
    }

    pub async fn create_provider_config(
        &self,
        mut config: VmProviderConfig,
    ) -> Result<VmProviderConfig, BrokerError> {
        config.version = 1;
        if self.read().provider_configs.contains_key(&config.name) {
            return Err(BrokerError::AlreadyExists {
                kind: "VM provider config",
                key: config.name,
            });
        }
        let stored = self.check_provider_config(config).await?;
        let name = &stored.config.name;
        let _turn = self.versioned_writes.lock().await;
        {
            let mut inventory = self.write();
            refuse_existing(
                inventory.provider_configs.contains_key(name),
                "VM provider config",
                name,
            )?;
            inventory
                .provider_configs
                .insert(name.clone(), stored.clone());
        }
        let swap = self.store.swap_provider_config(name, None, Some(&stored));
        if let Swapped::Stale(_) = self
            .settle(&PROVIDER_CONFIGS, name, Some(&stored), None, swap)
            .await?
        {
            refuse_existing(true, "VM provider config", name)?;
        }
        tracing::info!(
            config = stored.config.name,
            provider = stored.config.provider,
            "VM provider config created"
        );
        Ok(stored.config)
    }

    /// Change a provider config: secret settings the change leaves out keep their values. Every AutoScale config that uses it sees the change.
    ///
    /// A compare-and-swap on the config's version: the patch applies to the record it was
    /// checked against, or is applied again to the newer one (no update is lost). With
    /// `if_match` (the versions an `If-Match` named) it applies only to one of those
    /// versions, else [`BrokerError::PreconditionFailed`].
    pub async fn update_provider_config(
        &self,
        name: &str,
        change: &impl Change<VmProviderConfig>,
        if_match: Option<&[u64]>,
    ) -> Result<VmProviderConfig, BrokerError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self
                .stored_provider_config(name)
                .ok_or_else(|| not_found("VM provider config", name))?;
            check_precondition("VM provider config", name, current.config.version, if_match)?;
            let mut config = change.apply(&current.config)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            config.version = current.config.version;
            let mut stored = self.check_provider_config(config).await?;
            let retargeted = stored.config.provider != current.config.provider
                || stored.validated.endpoints != current.validated.endpoints;
            if retargeted {
                // Secrets go to the new endpoint only if the operator gives them again.
                if let Some(secret) = current
                    .config
                    .settings
                    .secret_names()
                    .into_iter()
                    .find(|s| !change.names(&["settings", s]))
                {
                    return Err(FieldError::new(
                        format!("settings.{secret}"),
                        "the provider or its endpoint changes: give the secret settings again",
                    )
                    .into());
                }
            }
            let _turn = self.versioned_writes.lock().await;
            let previous = {
                let mut inventory = self.write();
                let latest = inventory
                    .provider_configs
                    .get(name)
                    .ok_or_else(|| not_found("VM provider config", name))?
                    .config
                    .version;
                if latest != current.config.version {
                    // Changed while the plugin checked it: judge the patch against the latest.
                    check_precondition("VM provider config", name, latest, if_match)?;
                    continue;
                }
                if retargeted {
                    // Its VMs would be asked of another cloud, found missing and leaked.
                    let busy: Vec<String> = inventory
                        .autoscale_configs
                        .values()
                        .filter(|c| c.vm_provider_config == name)
                        .filter(|c| inventory.server_ids_of(&c.name).next().is_some())
                        .map(|c| format!("AutoScale config `{}`", c.name))
                        .collect();
                    if !busy.is_empty() {
                        return Err(BrokerError::Conflict {
                            code: "in_use",
                            message: format!(
                                "the provider or its endpoint cannot change while {} has servers",
                                busy.join(", ")
                            ),
                        });
                    }
                }
                stored.config.version = latest + 1;
                inventory
                    .provider_configs
                    .insert(name.to_string(), stored.clone())
            };
            let swap =
                self.store
                    .swap_provider_config(name, Some(current.config.version), Some(&stored));
            match self
                .settle(&PROVIDER_CONFIGS, name, Some(&stored), previous, swap)
                .await?
            {
                Swapped::Done => {}
                Swapped::Busy => unreachable!("a config's write closes no host"),
                // Another process changed it first: apply the change to that version.
                Swapped::Stale(Some(_)) => continue,
                Swapped::Stale(None) => return Err(not_found("VM provider config", name)),
            }
            self.demand_changed(
                self.read()
                    .autoscale_configs
                    .values()
                    .filter(|c| c.vm_provider_config == name)
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            );
            tracing::info!(
                config = name,
                version = stored.config.version,
                "VM provider config updated"
            );
            return Ok(stored.config);
        }
        Err(too_contended("VM provider config", name))
    }

    /// Delete a provider config no AutoScale config uses.
    pub async fn delete_provider_config(&self, name: &str) -> Result<(), BrokerError> {
        let _turn = self.versioned_writes.lock().await;
        let previous = {
            let mut inventory = self.write();
            if !inventory.provider_configs.contains_key(name) {
                return Err(not_found("VM provider config", name));
            }
            let users = inventory
                .autoscale_configs
                .values()
                .filter(|c| c.vm_provider_config == name)
                .map(|c| format!("AutoScale config `{}`", c.name))
                .collect::<Vec<_>>();
            in_use("VM provider config", name, &users)?;
            inventory.provider_configs.remove(name)
        };
        let expected = previous.as_ref().map(|stored| stored.config.version);
        let swap = self.store.swap_provider_config(name, expected, None);
        if let Swapped::Stale(Some(now)) = self
            .settle(&PROVIDER_CONFIGS, name, None, previous, swap)
            .await?
        {
            return Err(changed_meanwhile(
                "VM provider config",
                name,
                now.config.version,
            ));
        }
        tracing::info!(config = name, "VM provider config deleted");
        Ok(())
    }

    /// Ask the config's plugin what it takes (`describe`) and whether these settings do
    /// (`validate`). Unknown settings are refused here; the plugin judges the values.
    async fn check_provider_config(
        &self,
        mut config: VmProviderConfig,
    ) -> Result<StoredProviderConfig, BrokerError> {
        config.validate()?;
        let plugin_error = |error: NamedCallError| FieldError::new("provider", error.to_string());
        let provider = self.registry.provider(&config.provider, Endpoints::none());
        let info: ProviderInfo = provider.describe().await.map_err(plugin_error)?;
        if let Some(unknown) = config
            .settings
            .names()
            .find(|name| !info.settings.iter().any(|s| s.name == *name))
        {
            let known: Vec<&str> = info.settings.iter().map(|s| s.name.as_str()).collect();
            return Err(FieldError::new(
                format!("settings.{unknown}"),
                format!(
                    "`{}` takes no setting `{unknown}` (it takes: {})",
                    config.provider,
                    known.join(", ")
                ),
            )
            .into());
        }
        let validated: ValidatedSettings = match provider
            .validate(&config.pairs())
            .await
            .map_err(plugin_error)?
        {
            Ok(validated) => validated,
            Err(ProviderError::InvalidConfig { setting, message }) => {
                return Err(FieldError::new(format!("settings.{setting}"), message).into());
            }
            Err(error) => {
                return Err(FieldError::new("settings", error.to_string()).into());
            }
        };
        for endpoint in &validated.endpoints {
            check_endpoint_addresses(&config, endpoint).await?;
        }
        let secret: BTreeSet<String> = info
            .settings
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.name.clone())
            .collect();
        config.settings.mark_secret(&secret);
        Ok(StoredProviderConfig { config, validated })
    }
}

/// Refuse an endpoint whose host resolves to an address the config may not reach (checked
/// again on every request: DNS can change). A host that does not resolve now is left to the
/// calls, which fail until it does.
async fn check_endpoint_addresses(
    config: &VmProviderConfig,
    endpoint: &str,
) -> Result<(), FieldError> {
    match crate::plugins::check_endpoint(endpoint, config.allow_private_endpoints).await {
        Ok(()) => Ok(()),
        Err(EndpointError::Unresolvable { host, message }) => {
            tracing::warn!(
                config = config.name,
                host,
                "a provider endpoint does not resolve (yet): {message}"
            );
            Ok(())
        }
        Err(error) => Err(FieldError::new(
            setting_naming(config, endpoint),
            format!("endpoint `{endpoint}`: {error}"),
        )),
    }
}

/// `settings.NAME` of the setting an endpoint comes from (one whose value is or contains
/// its host), or `settings` when the plugin derived it from several.
fn setting_naming(config: &VmProviderConfig, endpoint: &str) -> String {
    let host = endpoint
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_ascii_lowercase));
    config
        .settings
        .pairs()
        .into_iter()
        .find(|(_, value)| {
            let value = value.to_ascii_lowercase();
            value == endpoint.to_ascii_lowercase()
                || host.as_deref().is_some_and(|host| value.contains(host))
        })
        .map_or_else(
            || "settings".to_string(),
            |(name, _)| format!("settings.{name}"),
        )
}
