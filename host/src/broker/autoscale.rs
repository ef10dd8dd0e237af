//! Pools, VM provider configs, AutoScale configs and workspaces: what an operator sets up so
//! that pools keep themselves sized. Every save checks references, and plugin-backed fields
//! with the plugin itself (a provider's `validate`, a generator's render of the template with
//! sample values), so a mistake shows when the config is saved, not when a VM boots.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Broker, BrokerError, Inventory};
use crate::domain::autoscale::{
    AutoScaleConfig, Pool, Server, ServerStatus, StoredProviderConfig, VmProviderConfig, Workspace,
    WorkspaceType, sample_variables,
};
use crate::domain::ldap::LdapConfig;
use crate::domain::patch;
use crate::domain::provider::{ProviderError, ProviderInfo, ValidatedSettings};
use crate::domain::validation::FieldError;
use crate::plugins::{EndpointError, Endpoints, NamedCallError};

/// What the reconcile loop last found for one AutoScale config (kept in memory).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConfigStatus {
    /// The last provider or render failure, until a pass succeeds.
    pub last_error: Option<String>,
    /// Failures in a row (the back-off doubles with each).
    pub consecutive_failures: u32,
    /// Unix time (ms) before which no VM is created or destroyed for it.
    pub backoff_until_ms: Option<u64>,
    /// Free session slots over its live servers at the last pass.
    pub available_sessions: u32,
    /// Its servers that are not being destroyed.
    pub servers: u32,
    /// VMs its passes found and left alone or could not destroy: an operator should look.
    pub unmanaged_vms: Vec<UnmanagedVm>,
}

/// A VM a reconcile pass found and did not manage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnmanagedVm {
    /// The provider's id of the VM.
    pub instance_id: String,
    pub problem: VmProblem,
    /// What the pass saw, for a human.
    pub message: String,
}

/// Why a VM is listed in [`ConfigStatus::unmanaged_vms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmProblem {
    /// It carries the config's tag but not this installation's, and no server of the config
    /// names it: somebody else's (or forged), never touched.
    NotOurs,
    /// Ours and to be destroyed, but the provider refused (termination protection, ...):
    /// retried every pass.
    DestroyFailed,
}

/// An AutoScale config as the API shows it: secrets blanked, with its status.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AutoScaleConfigView {
    /// The config (`connection_password` always `null`: it is write-only).
    pub config: AutoScaleConfig,
    /// Whether a connection password is set.
    pub connection_password_set: bool,
    pub status: ConfigStatus,
}

impl Broker {
    // Pools.

    pub fn pools(&self) -> Vec<Pool> {
        self.read().pools.values().cloned().collect()
    }

    pub fn pool(&self, name: &str) -> Result<Pool, BrokerError> {
        self.read()
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("pool", name))
    }

    pub async fn create_pool(&self, pool: Pool) -> Result<Pool, BrokerError> {
        pool.validate()?;
        {
            let mut inventory = self.write();
            refuse_existing(inventory.pools.contains_key(&pool.name), "pool", &pool.name)?;
            self.store.put_pool(&pool)?;
            inventory.pools.insert(pool.name.clone(), pool.clone());
        }
        self.commit().await?;
        tracing::info!(pool = pool.name, "pool created");
        Ok(pool)
    }

    /// Delete a pool no config, workspace or server uses.
    pub async fn delete_pool(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.pools.contains_key(name) {
                return Err(not_found("pool", name));
            }
            let users = inventory
                .autoscale_configs
                .values()
                .filter(|c| c.pool == name)
                .map(|c| format!("AutoScale config `{}`", c.name))
                .chain(
                    inventory
                        .workspaces
                        .values()
                        .filter(|w| w.pool.as_deref() == Some(name))
                        .map(|w| format!("workspace `{}`", w.name)),
                )
                .chain(
                    inventory
                        .servers
                        .values()
                        .filter(|s| s.server.pool == name)
                        .map(|s| format!("server `{}`", s.server.hostname)),
                )
                .collect::<Vec<_>>();
            in_use("pool", name, &users)?;
            self.store.delete_pool(name)?;
            inventory.pools.remove(name);
        }
        self.commit().await?;
        tracing::info!(pool = name, "pool deleted");
        Ok(())
    }

    // VM provider configs.

    /// Every provider config, secret settings left out.
    pub fn provider_configs(&self) -> Vec<VmProviderConfig> {
        self.read()
            .provider_configs
            .values()
            .map(StoredProviderConfig::public)
            .collect()
    }

    pub fn provider_config(&self, name: &str) -> Result<VmProviderConfig, BrokerError> {
        self.read()
            .provider_configs
            .get(name)
            .map(StoredProviderConfig::public)
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
        {
            let mut inventory = self.write();
            refuse_existing(
                inventory.provider_configs.contains_key(&stored.config.name),
                "VM provider config",
                &stored.config.name,
            )?;
            self.store.put_provider_config(&stored)?;
            inventory
                .provider_configs
                .insert(stored.config.name.clone(), stored.clone());
        }
        self.commit().await?;
        tracing::info!(
            config = stored.config.name,
            provider = stored.config.provider,
            "VM provider config created"
        );
        Ok(stored.public())
    }

    /// Change a provider config by JSON merge patch: secret settings left out of the patch
    /// keep their values. Every AutoScale config that uses it sees the change.
    ///
    /// A compare-and-swap on the config's version: the patch applies to the record it was
    /// checked against, or is applied again to the newer one (no update is lost). With
    /// `if_match` (the versions an `If-Match` named) it applies only to one of those
    /// versions, else [`BrokerError::PreconditionFailed`].
    pub async fn update_provider_config(
        &self,
        name: &str,
        changes: &Value,
        if_match: Option<&[u64]>,
    ) -> Result<VmProviderConfig, BrokerError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self
                .stored_provider_config(name)
                .ok_or_else(|| not_found("VM provider config", name))?;
            check_precondition("VM provider config", name, current.config.version, if_match)?;
            let mut config: VmProviderConfig = patch::apply(&current.config, changes)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            config.version = current.config.version;
            let mut stored = self.check_provider_config(config).await?;
            let retargeted = stored.config.provider != current.config.provider
                || stored.validated.endpoints != current.validated.endpoints;
            if retargeted {
                // Secrets go to the new endpoint only if the operator gives them again.
                let given = changes.get("settings").and_then(Value::as_object);
                if let Some(secret) = current.secret_settings.iter().find(|s| {
                    current.config.settings.contains_key(*s)
                        && given.is_none_or(|g| !g.contains_key(*s))
                }) {
                    return Err(FieldError::new(
                        format!("settings.{secret}"),
                        "the provider or its endpoint changes: give the secret settings again",
                    )
                    .into());
                }
            }
            {
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
                self.store.put_provider_config(&stored)?;
                inventory
                    .provider_configs
                    .insert(name.to_string(), stored.clone());
            }
            self.commit().await?;
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
            return Ok(stored.public());
        }
        Err(too_contended("VM provider config", name))
    }

    /// Delete a provider config no AutoScale config uses.
    pub async fn delete_provider_config(&self, name: &str) -> Result<(), BrokerError> {
        {
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
            self.store.delete_provider_config(name)?;
            inventory.provider_configs.remove(name);
        }
        self.commit().await?;
        tracing::info!(config = name, "VM provider config deleted");
        Ok(())
    }

    /// Ask the config's plugin what it takes (`describe`) and whether these settings do
    /// (`validate`). Unknown settings are refused here; the plugin judges the values.
    async fn check_provider_config(
        &self,
        config: VmProviderConfig,
    ) -> Result<StoredProviderConfig, BrokerError> {
        config.validate()?;
        let plugin_error = |error: NamedCallError| FieldError::new("provider", error.to_string());
        let provider = self.registry.provider(&config.provider, Endpoints::none());
        let info: ProviderInfo = provider.describe().await.map_err(plugin_error)?;
        if let Some(unknown) = config
            .settings
            .keys()
            .find(|name| !info.settings.iter().any(|s| &s.name == *name))
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
        let secret_settings: BTreeSet<String> = info
            .settings
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.name.clone())
            .collect();
        Ok(StoredProviderConfig {
            config,
            secret_settings,
            validated,
        })
    }

    // AutoScale configs.

    pub fn autoscale_configs(&self) -> Vec<AutoScaleConfigView> {
        let inventory = self.read();
        inventory
            .autoscale_configs
            .values()
            .map(|config| inventory.autoscale_view(config))
            .collect()
    }

    pub fn autoscale_config(&self, name: &str) -> Result<AutoScaleConfigView, BrokerError> {
        let inventory = self.read();
        inventory
            .autoscale_configs
            .get(name)
            .map(|config| inventory.autoscale_view(config))
            .ok_or_else(|| not_found("AutoScale config", name))
    }

    pub async fn create_autoscale_config(
        &self,
        mut config: AutoScaleConfig,
    ) -> Result<AutoScaleConfigView, BrokerError> {
        config.version = 1;
        self.check_autoscale_config(&config).await?;
        let view = {
            let mut inventory = self.write();
            refuse_existing(
                inventory.autoscale_configs.contains_key(&config.name),
                "AutoScale config",
                &config.name,
            )?;
            inventory.check_autoscale_references(&config)?;
            self.store.put_autoscale_config(&config)?;
            inventory
                .autoscale_configs
                .insert(config.name.clone(), config.clone());
            inventory.autoscale_view(&config)
        };
        self.commit().await?;
        self.demand_changed([config.name.clone()]);
        tracing::info!(
            config = config.name,
            pool = config.pool,
            "AutoScale config created"
        );
        Ok(view)
    }

    /// Change an AutoScale config by JSON merge patch (a password left out keeps its value).
    /// A compare-and-swap on its version, like [`Broker::update_provider_config`]: the checks
    /// (its VM provider config cannot change while it has servers) read the record the
    /// write replaces.
    pub async fn update_autoscale_config(
        &self,
        name: &str,
        changes: &Value,
        if_match: Option<&[u64]>,
    ) -> Result<AutoScaleConfigView, BrokerError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self
                .autoscale_config_stored(name)
                .ok_or_else(|| not_found("AutoScale config", name))?;
            check_precondition("AutoScale config", name, current.version, if_match)?;
            let mut config: AutoScaleConfig = patch::apply(&current, changes)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            config.version = current.version;
            self.check_autoscale_config(&config).await?;
            let view = {
                let mut inventory = self.write();
                let latest = inventory
                    .autoscale_configs
                    .get(name)
                    .ok_or_else(|| not_found("AutoScale config", name))?
                    .version;
                if latest != current.version {
                    // Changed while the template rendered: judge the patch against the latest.
                    check_precondition("AutoScale config", name, latest, if_match)?;
                    continue;
                }
                inventory.check_autoscale_references(&config)?;
                let has_servers = inventory.server_ids_of(name).next().is_some();
                if has_servers && config.vm_provider_config != current.vm_provider_config {
                    return Err(BrokerError::Conflict {
                        code: "in_use",
                        message: format!(
                            "AutoScale config `{name}` has servers: its VM provider config cannot change until they are gone"
                        ),
                    });
                }
                config.version = latest + 1;
                self.store.put_autoscale_config(&config)?;
                inventory
                    .autoscale_configs
                    .insert(name.to_string(), config.clone());
                inventory.autoscale_view(&config)
            };
            self.commit().await?;
            self.demand_changed([name.to_string()]);
            tracing::info!(
                config = name,
                version = config.version,
                "AutoScale config updated"
            );
            return Ok(view);
        }
        Err(too_contended("AutoScale config", name))
    }

    /// Delete an AutoScale config with no VM and no directory object left. Its server
    /// records that never got either (every create failed, say) go with it; a server with a
    /// VM or an object must be drained first, and the 409 names each.
    pub async fn delete_autoscale_config(&self, name: &str) -> Result<(), BrokerError> {
        let dropped = {
            let mut inventory = self.write();
            if !inventory.autoscale_configs.contains_key(name) {
                return Err(not_found("AutoScale config", name));
            }
            let servers: Vec<Server> = inventory
                .server_ids_of(name)
                .map(|id| inventory.servers[id].server.clone())
                .collect();
            let holding: Vec<String> = servers
                .iter()
                .filter(|s| s.may_hold_resources())
                .map(|s| {
                    let what = match (&s.instance_id, &s.ad_computer_dn) {
                        (Some(instance), _) => format!("VM {instance}"),
                        (None, Some(_)) => "a directory object".to_string(),
                        (None, None) => {
                            "perhaps a VM: its create call timed out; the next full pass adopts it or finds none".to_string()
                        }
                    };
                    format!("`{}` ({}, {what})", s.id, s.status.as_str())
                })
                .collect();
            if !holding.is_empty() {
                return Err(BrokerError::Conflict {
                    code: "in_use",
                    message: format!(
                        "AutoScale config `{name}` still has servers with a VM or directory object: {}. \
                         Set its `minimum_available_sessions` to 0 (or `enabled` to false) and wait for them to drain, \
                         or remove each with DELETE /api/v1/servers/{{id}} (`?force=true` ends its sessions)",
                        holding.join(", ")
                    ),
                });
            }
            // Records first: a crash in between leaves the config, and a retry finishes.
            for server in &servers {
                self.store.delete_server(server.id)?;
                inventory.remove_server(server.id);
            }
            self.store.delete_autoscale_config(name)?;
            inventory.autoscale_configs.remove(name);
            inventory.config_status.remove(name);
            servers.len()
        };
        self.commit().await?;
        tracing::info!(
            config = name,
            dropped_servers = dropped,
            "AutoScale config deleted"
        );
        Ok(())
    }

    /// The fields and plugin-backed checks (the template renders with sample values).
    async fn check_autoscale_config(&self, config: &AutoScaleConfig) -> Result<(), BrokerError> {
        config.validate()?;
        let rendered = self
            .registry
            .render(
                &config.script_generator,
                config.os,
                config.startup_script.clone(),
                sample_variables(config.os),
            )
            .await;
        match rendered {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(template)) => {
                Err(FieldError::new("startup_script", template.to_string()).into())
            }
            Err(error) => Err(FieldError::new("script_generator", error.to_string()).into()),
        }
    }

    /// Every AutoScale config's name (the reconcile loop).
    pub(crate) fn autoscale_config_names(&self) -> Vec<String> {
        self.read().autoscale_configs.keys().cloned().collect()
    }

    /// The stored config, secrets included (the reconcile loop).
    pub(crate) fn autoscale_config_stored(&self, name: &str) -> Option<AutoScaleConfig> {
        self.read().autoscale_configs.get(name).cloned()
    }

    /// Set an AutoScale config's status (the reconcile loop).
    pub(crate) fn set_config_status(&self, name: &str, status: ConfigStatus) {
        let mut inventory = self.write();
        if inventory.autoscale_configs.contains_key(name) {
            inventory.config_status.insert(name.to_string(), status);
        }
    }

    pub(crate) fn config_status(&self, name: &str) -> ConfigStatus {
        self.read()
            .config_status
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    // LDAP configs.

    /// Every LDAP config, bind passwords left out.
    pub fn ldap_configs(&self) -> Vec<LdapConfig> {
        self.read().ldap_configs.values().map(public_ldap).collect()
    }

    pub fn ldap_config(&self, name: &str) -> Result<LdapConfig, BrokerError> {
        self.read()
            .ldap_configs
            .get(name)
            .map(public_ldap)
            .ok_or_else(|| not_found("LDAP config", name))
    }

    /// The stored config, password included (the reconcile loop).
    pub(crate) fn ldap_config_stored(&self, name: &str) -> Option<LdapConfig> {
        self.read().ldap_configs.get(name).cloned()
    }

    pub async fn create_ldap_config(&self, config: LdapConfig) -> Result<LdapConfig, BrokerError> {
        config.validate()?;
        {
            let mut inventory = self.write();
            refuse_existing(
                inventory.ldap_configs.contains_key(&config.name),
                "LDAP config",
                &config.name,
            )?;
            self.store.put_ldap_config(&config)?;
            inventory
                .ldap_configs
                .insert(config.name.clone(), config.clone());
        }
        self.commit().await?;
        if config.insecure_skip_tls_verify {
            tracing::warn!(
                ldap_config = config.name,
                "LDAP config created WITHOUT TLS certificate verification"
            );
        }
        tracing::info!(
            ldap_config = config.name,
            url = config.url,
            "LDAP config created"
        );
        Ok(public_ldap(&config))
    }

    /// Change an LDAP config by JSON merge patch (a password left out keeps its value).
    pub async fn update_ldap_config(
        &self,
        name: &str,
        changes: &Value,
    ) -> Result<LdapConfig, BrokerError> {
        let config = {
            let mut inventory = self.write();
            let current = inventory
                .ldap_configs
                .get(name)
                .ok_or_else(|| not_found("LDAP config", name))?;
            let config: LdapConfig = patch::apply(current, changes)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            let retargeted = config.url != current.url
                || (config.insecure_skip_tls_verify && !current.insecure_skip_tls_verify)
                || config.ca_certificate != current.ca_certificate;
            if retargeted && changes.get("bind_password").is_none() {
                return Err(FieldError::new(
                    "bind_password",
                    "the server or its TLS settings change: give the bind password again",
                )
                .into());
            }
            config.validate()?;
            self.store.put_ldap_config(&config)?;
            inventory
                .ldap_configs
                .insert(name.to_string(), config.clone());
            config
        };
        self.commit().await?;
        if config.insecure_skip_tls_verify {
            tracing::warn!(
                ldap_config = name,
                "LDAP config WITHOUT TLS certificate verification"
            );
        }
        tracing::info!(ldap_config = name, "LDAP config updated");
        Ok(public_ldap(&config))
    }

    /// Delete an LDAP config no AutoScale config uses.
    pub async fn delete_ldap_config(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.ldap_configs.contains_key(name) {
                return Err(not_found("LDAP config", name));
            }
            let users = inventory
                .autoscale_configs
                .values()
                .filter(|c| c.ldap_config.as_deref() == Some(name))
                .map(|c| format!("AutoScale config `{}`", c.name))
                .chain(
                    inventory
                        .servers
                        .values()
                        .filter(|e| e.server.ad_ldap_config.as_deref() == Some(name))
                        .map(|e| format!("the computer object of server `{}`", e.server.hostname)),
                )
                .collect::<Vec<_>>();
            in_use("LDAP config", name, &users)?;
            self.store.delete_ldap_config(name)?;
            inventory.ldap_configs.remove(name);
        }
        self.commit().await?;
        Ok(())
    }

    // Workspaces.

    pub fn workspaces(&self) -> Vec<Workspace> {
        self.read().workspaces.values().cloned().collect()
    }

    pub fn workspace(&self, name: &str) -> Result<Workspace, BrokerError> {
        self.read()
            .workspaces
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("workspace", name))
    }

    pub async fn create_workspace(&self, workspace: Workspace) -> Result<Workspace, BrokerError> {
        workspace.validate()?;
        {
            let mut inventory = self.write();
            refuse_existing(
                inventory.workspaces.contains_key(&workspace.name),
                "workspace",
                &workspace.name,
            )?;
            inventory.check_workspace_references(&workspace)?;
            self.store.put_workspace(&workspace)?;
            inventory
                .workspaces
                .insert(workspace.name.clone(), workspace.clone());
        }
        self.commit().await?;
        tracing::info!(workspace = workspace.name, "workspace created");
        Ok(workspace)
    }

    /// Change a workspace by JSON merge patch.
    pub async fn update_workspace(
        &self,
        name: &str,
        changes: &Value,
    ) -> Result<Workspace, BrokerError> {
        let workspace = {
            let mut inventory = self.write();
            let current = inventory
                .workspaces
                .get(name)
                .ok_or_else(|| not_found("workspace", name))?;
            let workspace: Workspace = patch::apply(current, changes)?;
            if workspace.name != name {
                return Err(FieldError::new("name", "a workspace cannot be renamed").into());
            }
            workspace.validate()?;
            inventory.check_workspace_references(&workspace)?;
            self.store.put_workspace(&workspace)?;
            inventory
                .workspaces
                .insert(name.to_string(), workspace.clone());
            workspace
        };
        self.commit().await?;
        Ok(workspace)
    }

    /// Delete a workspace no session runs.
    pub async fn delete_workspace(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.workspaces.contains_key(name) {
                return Err(not_found("workspace", name));
            }
            let running = inventory
                .sessions
                .values()
                .filter(|s| s.workspace.as_deref() == Some(name))
                .count();
            if running > 0 {
                return Err(BrokerError::Conflict {
                    code: "workspace_in_use",
                    message: format!("{running} session(s) run workspace `{name}`"),
                });
            }
            self.store.delete_workspace(name)?;
            inventory.workspaces.remove(name);
        }
        self.commit().await?;
        Ok(())
    }
}

/// An LDAP config without its bind password.
fn public_ldap(config: &LdapConfig) -> LdapConfig {
    LdapConfig {
        bind_password: None,
        ..config.clone()
    }
}

impl Inventory {
    fn autoscale_view(&self, config: &AutoScaleConfig) -> AutoScaleConfigView {
        let mut status = self
            .config_status
            .get(&config.name)
            .cloned()
            .unwrap_or_default();
        status.servers = self
            .server_ids_of(&config.name)
            .filter(|id| self.servers[*id].server.status != ServerStatus::Destroying)
            .count() as u32;
        AutoScaleConfigView {
            connection_password_set: config.connection_password.is_some(),
            config: AutoScaleConfig {
                connection_password: None,
                ..config.clone()
            },
            status,
        }
    }

    fn check_autoscale_references(&self, config: &AutoScaleConfig) -> Result<(), FieldError> {
        if !self.pools.contains_key(&config.pool) {
            return Err(FieldError::new(
                "pool",
                format!("no pool `{}`", config.pool),
            ));
        }
        if !self.zones.contains_key(&config.zone) {
            return Err(FieldError::new(
                "zone",
                format!("no zone `{}`", config.zone),
            ));
        }
        if !self
            .provider_configs
            .contains_key(&config.vm_provider_config)
        {
            return Err(FieldError::new(
                "vm_provider_config",
                format!("no VM provider config `{}`", config.vm_provider_config),
            ));
        }
        if let Some(ldap) = &config.ldap_config
            && !self.ldap_configs.contains_key(ldap)
        {
            return Err(FieldError::new(
                "ldap_config",
                format!("no LDAP config `{ldap}`"),
            ));
        }
        Ok(())
    }

    fn check_workspace_references(&self, workspace: &Workspace) -> Result<(), FieldError> {
        match workspace.workspace_type {
            WorkspaceType::Container => {
                let image = workspace.image.as_deref().unwrap_or_default();
                if !self.images.contains_key(image) {
                    return Err(FieldError::new("image", format!("no image `{image}`")));
                }
            }
            WorkspaceType::Pool => {
                let pool = workspace.pool.as_deref().unwrap_or_default();
                if !self.pools.contains_key(pool) {
                    return Err(FieldError::new("pool", format!("no pool `{pool}`")));
                }
            }
        }
        Ok(())
    }
}

/// How many times an update is applied again to a record that changed under it before it
/// gives up (409 `concurrent_update`).
const MAX_UPDATE_ATTEMPTS: usize = 32;

/// Refuse a write whose `If-Match` does not name the record's `current` version.
fn check_precondition(
    kind: &'static str,
    name: &str,
    current: u64,
    if_match: Option<&[u64]>,
) -> Result<(), BrokerError> {
    match if_match {
        Some(versions) if !versions.contains(&current) => Err(BrokerError::PreconditionFailed {
            kind,
            key: name.to_string(),
            current,
        }),
        _ => Ok(()),
    }
}

fn too_contended(kind: &'static str, name: &str) -> BrokerError {
    BrokerError::Conflict {
        code: "concurrent_update",
        message: format!("{kind} `{name}` kept changing under this update: try again"),
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
        .iter()
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

fn not_found(kind: &'static str, name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind,
        key: name.to_string(),
    }
}

fn refuse_existing(exists: bool, kind: &'static str, name: &str) -> Result<(), BrokerError> {
    if exists {
        return Err(BrokerError::AlreadyExists {
            kind,
            key: name.to_string(),
        });
    }
    Ok(())
}

/// Refuse to delete `kind` `name` while `users` depend on it.
fn in_use(kind: &'static str, name: &str, users: &[String]) -> Result<(), BrokerError> {
    if users.is_empty() {
        return Ok(());
    }
    Err(BrokerError::Conflict {
        code: "in_use",
        message: format!("{kind} `{name}` is used by {}", users.join(", ")),
    })
}
