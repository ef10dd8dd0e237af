//! AutoScale configs: keep a pool sized through a VM provider config. A save checks its
//! references and renders its template with sample values, so a mistake shows when the
//! config is saved, not when a VM boots; the reconcile loop's findings are kept per config
//! ([`ConfigStatus`]), in the store too, so every process sharing it shows them.

use super::records::{
    MAX_UPDATE_ATTEMPTS, VersionedKind, changed_meanwhile, check_precondition, not_found,
    refuse_existing, too_contended,
};
use super::servers::ServerWrite;
use super::{Broker, BrokerError, Change, Inventory};
use crate::domain::autoscale::{
    AutoScaleConfig, ConfigStatus, Server, ServerStatus, sample_variables,
};
use crate::domain::validation::FieldError;
use crate::store::{Fence, StoreError, Swapped};

/// Where the view keeps AutoScale configs, and their version.
const AUTOSCALE_CONFIGS: VersionedKind<AutoScaleConfig> = VersionedKind {
    records: |inventory| &mut inventory.autoscale_configs,
    version: |config| config.version,
};

/// An AutoScale config with its status (the API shows it as `api::records::AutoScaleConfigView`).
#[derive(Clone, Debug)]
pub struct AutoScaleConfigView {
    /// The config (`connection_password` always `null`: it is write-only).
    pub config: AutoScaleConfig,
    /// Whether a connection password is set.
    pub connection_password_set: bool,
    pub status: ConfigStatus,
}

impl Broker {
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
        let _turn = self.versioned_writes.lock().await;
        let view = {
            let mut inventory = self.write();
            refuse_existing(
                inventory.autoscale_configs.contains_key(&config.name),
                "AutoScale config",
                &config.name,
            )?;
            inventory.check_autoscale_references(&config)?;
            inventory
                .autoscale_configs
                .insert(config.name.clone(), config.clone());
            inventory.autoscale_view(&config)
        };
        let swap = self
            .store
            .swap_autoscale_config(&config.name, None, Some(&config));
        if let Swapped::Stale(_) = self
            .settle(&AUTOSCALE_CONFIGS, &config.name, Some(&config), None, swap)
            .await?
        {
            refuse_existing(true, "AutoScale config", &config.name)?;
        }
        self.demand_changed([config.name.clone()]);
        tracing::info!(
            config = config.name,
            pool = config.pool,
            "AutoScale config created"
        );
        Ok(view)
    }

    /// Change an AutoScale config (a password left out keeps its value).
    /// A compare-and-swap on its version, like [`Broker::update_provider_config`]: the checks
    /// (its VM provider config cannot change while it has servers) read the record the
    /// write replaces.
    pub async fn update_autoscale_config(
        &self,
        name: &str,
        change: &impl Change<AutoScaleConfig>,
        if_match: Option<&[u64]>,
    ) -> Result<AutoScaleConfigView, BrokerError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self
                .autoscale_config_stored(name)
                .ok_or_else(|| not_found("AutoScale config", name))?;
            check_precondition("AutoScale config", name, current.version, if_match)?;
            let mut config = change.apply(&current)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            config.version = current.version;
            self.check_autoscale_config(&config).await?;
            let _turn = self.versioned_writes.lock().await;
            let (previous, view) = {
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
                let previous = inventory
                    .autoscale_configs
                    .insert(name.to_string(), config.clone());
                (previous, inventory.autoscale_view(&config))
            };
            let swap = self
                .store
                .swap_autoscale_config(name, Some(current.version), Some(&config));
            match self
                .settle(&AUTOSCALE_CONFIGS, name, Some(&config), previous, swap)
                .await?
            {
                Swapped::Done => {}
                Swapped::Busy => unreachable!("a config's write closes no host"),
                // Another process changed it first: apply the change to that version (the
                // loop sees the version the view learned).
                Swapped::Stale(Some(_)) => {
                    self.demand_changed([name.to_string()]);
                    continue;
                }
                Swapped::Stale(None) => return Err(not_found("AutoScale config", name)),
            }
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
        let _turn = self.versioned_writes.lock().await;
        let servers: Vec<Server> = {
            let inventory = self.read();
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
            servers
        };
        // Records first: a crash in between leaves the config, and a retry finishes.
        for server in &servers {
            self.write_server_in_turn(server.id, None, false, |_, current| match current {
                Some(now) if now.may_hold_resources() => Err(BrokerError::Conflict {
                    code: "concurrent_update",
                    message: format!(
                        "server `{}` of AutoScale config `{name}` got a VM or directory object while the config was being deleted: look at it again",
                        now.id
                    ),
                }),
                Some(_) => Ok(ServerWrite::Delete),
                None => Ok(ServerWrite::Keep),
            })
            .await?;
        }
        let previous = {
            let mut inventory = self.write();
            if inventory.config_status.remove(name).is_some() {
                self.store.delete_config_status(name)?;
            }
            inventory.autoscale_configs.remove(name)
        };
        let dropped = servers.len();
        let expected = previous.as_ref().map(|config| config.version);
        let swap = async {
            // The server records are durable before the config goes.
            self.store.commit().await?;
            self.store.swap_autoscale_config(name, expected, None).await
        };
        if let Swapped::Stale(Some(now)) = self
            .settle(&AUTOSCALE_CONFIGS, name, None, previous, swap)
            .await?
        {
            return Err(changed_meanwhile("AutoScale config", name, now.version));
        }
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

    /// Record what this process's pass of an AutoScale config found: in the view and, when
    /// it changed, in the store, where the other processes sharing it read it.
    pub(crate) async fn record_config_status(&self, fence: &Fence, status: ConfigStatus) {
        let name = fence.config.as_str();
        {
            let mut inventory = self.write();
            if !inventory.autoscale_configs.contains_key(name) {
                return;
            }
            let previous = inventory
                .config_status
                .insert(name.to_string(), status.clone());
            if previous.as_ref() == Some(&status) {
                return;
            }
        }
        match self.store.put_config_status(name, &status, fence).await {
            Ok(()) => {}
            // Another process took the config over while this pass ran: its status is the
            // one to show.
            Err(StoreError::Fenced(_)) => self.config_reconciled_elsewhere(name),
            Err(error) => tracing::warn!(config = name, %error, "cannot store the config's status"),
        }
    }

    /// Another process reconciles the config: its status (from the store) says so.
    pub(crate) fn config_reconciled_elsewhere(&self, name: &str) {
        let mut inventory = self.write();
        if inventory.autoscale_configs.contains_key(name) {
            inventory
                .config_status
                .entry(name.to_string())
                .or_default()
                .reconciled_elsewhere = true;
        }
    }

    pub(crate) fn config_status(&self, name: &str) -> ConfigStatus {
        self.read()
            .config_status
            .get(name)
            .cloned()
            .unwrap_or_default()
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
            config: config.clone(),
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
}
