//! LDAP configs: the directories AutoScale configs create computer objects in.

use super::records::{in_use, not_found, refuse_existing};
use super::{Broker, BrokerError, Change};
use crate::domain::ldap::LdapConfig;
use crate::domain::validation::FieldError;

impl Broker {
    // LDAP configs.

    /// Every LDAP config (a bind password is a [`Secret`](crate::domain::secret::Secret): shown as absent).
    pub fn ldap_configs(&self) -> Vec<LdapConfig> {
        self.read().ldap_configs.values().cloned().collect()
    }

    pub fn ldap_config(&self, name: &str) -> Result<LdapConfig, BrokerError> {
        self.read()
            .ldap_configs
            .get(name)
            .cloned()
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
        Ok(config)
    }

    /// Change an LDAP config (a password left out keeps its value).
    pub async fn update_ldap_config(
        &self,
        name: &str,
        change: &impl Change<LdapConfig>,
    ) -> Result<LdapConfig, BrokerError> {
        let config = {
            let mut inventory = self.write();
            let current = inventory
                .ldap_configs
                .get(name)
                .ok_or_else(|| not_found("LDAP config", name))?;
            let config = change.apply(current)?;
            if config.name != name {
                return Err(FieldError::new("name", "a config cannot be renamed").into());
            }
            let retargeted = config.url != current.url
                || (config.insecure_skip_tls_verify && !current.insecure_skip_tls_verify)
                || config.ca_certificate != current.ca_certificate;
            if retargeted && !change.names(&["bind_password"]) {
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
        Ok(config)
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
}
