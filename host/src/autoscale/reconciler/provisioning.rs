//! Provisioning: a server's VM created (its directory object first, if the config asks,
//! then its startup script rendered with a check-in token) and destroyed (its VM, then its
//! directory object, then its record).

use super::{
    Failure, Reconciler, TAG_CONFIG, TAG_INSTALLATION, TAG_SERVER, failed, ignore_not_found,
    store_failure,
};
use crate::autoscale::cloud::Cloud;
use crate::autoscale::directory::Directory;
use crate::broker::{ServerEntry, now_ms};
use crate::checkin;
use crate::domain::autoscale::{AutoScaleConfig, Server, StoredProviderConfig, script_values};
use crate::domain::provider::{ProviderError, VmSpec};
use crate::domain::text::cap;
use crate::store::Fence;

impl<C: Cloud, D: Directory> Reconciler<C, D> {
    /// it `destroying` (or `lost`, with what is left), for the next pass.
    pub(super) async fn destroy(
        &self,
        fence: &Fence,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        entry: &ServerEntry,
        reason: &str,
    ) -> Result<(), Failure> {
        let server = &entry.server;
        if let Some(instance_id) = &server.instance_id {
            let destroyed = self
                .cloud
                .destroy(provider, instance_id)
                .await
                .or_else(ignore_not_found);
            self.forget_listing(provider);
            if let Err(error) = destroyed {
                self.record_error(fence, server, &error.to_string()).await?;
                return Err(failed("destroy-vm")(error));
            }
        }
        let dn = match &server.ad_computer_dn {
            Some(dn) => Some(dn.clone()),
            None if config.create_ad_computer_record => {
                self.unrecorded_object(config, server).await
            }
            None => None,
        };
        if let Some(dn) = &dn {
            self.broker
                .update_server(fence, server.id, |s| s.instance_id = None)
                .await
                .map_err(store_failure)?;
            let ldap = self.ldap_config_of(config, server)?;
            let deleted = self
                .directory
                .delete_computer(&ldap, dn, config.recursive_ad_cleanup)
                .await;
            if let Err(error) = deleted {
                self.record_error(fence, server, &error.to_string()).await?;
                return Err(failed("ad-delete")(error));
            }
            tracing::info!(server = %server.id, dn, "AD computer object deleted");
        }
        self.broker
            .forget_server(fence, server.id)
            .await
            .map_err(store_failure)?;
        if let Some(config) = &server.config {
            self.broker.metrics().vm_destroyed(config, reason);
        }
        tracing::info!(server = %server.id, hostname = server.hostname, instance = server.instance_id, reason, "server destroyed");
        Ok(())
    }

    async fn record_error(
        &self,
        fence: &Fence,
        server: &Server,
        message: &str,
    ) -> Result<(), Failure> {
        let message = cap(message.to_string());
        self.broker
            .update_server(fence, server.id, |s| s.last_error = Some(message.clone()))
            .await
            .map_err(store_failure)?;
        Ok(())
    }

    /// Render `server`'s startup script and ask the provider for its VM.
    pub(super) async fn provision(
        &self,
        fence: &Fence,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        server: &Server,
        now: u64,
    ) -> Result<(), Failure> {
        let jti = server.checkin_token_id.clone().unwrap_or_default();
        let deadline_ms = server.created_at_ms + config.provision_timeout * 1000;
        let token = checkin::issue(
            self.broker.store().checkin_key(),
            &server.id.to_string(),
            &jti,
            now / 1000,
            deadline_ms.saturating_sub(now).div_ceil(1000).max(1),
        );
        let server = if config.create_ad_computer_record {
            self.prepare_ad_account(fence, config, server).await?
        } else {
            server.clone()
        };
        let server = &server;
        let upstream = self
            .settings
            .addresses
            .upstream_auth_address(&self.broker, &config.zone);
        let variables = script_values(config, server, &token, &upstream);
        let rendered = self
            .broker
            .registry()
            .render(
                &config.script_generator,
                config.os,
                config.startup_script.clone(),
                variables,
            )
            .await;
        let script = match rendered {
            Ok(Ok(script)) => script,
            Ok(Err(template)) => return Err(failed("render")(template)),
            Err(error) => return Err(failed("render")(error)),
        };
        let spec = VmSpec {
            server_id: server.id.to_string(),
            hostname: server.hostname.clone(),
            idempotency_key: server.idempotency_key.clone(),
            os: config.os,
            startup_script: script,
            tags: vec![
                (
                    TAG_INSTALLATION.to_string(),
                    self.broker.store().installation_id().to_string(),
                ),
                (TAG_SERVER.to_string(), server.id.to_string()),
                (TAG_CONFIG.to_string(), config.name.clone()),
                ("zonebroker:pool".to_string(), config.pool.clone()),
            ],
        };
        // (A listing that misses the new VM is harmless: its server has the instance id,
        // and a young VM is never taken for lost.)
        match self.cloud.create(provider, spec).await {
            Ok(vm) => {
                let recorded = self
                    .broker
                    .update_server(fence, server.id, |s| {
                        s.instance_id = Some(vm.instance_id.clone());
                        s.vm_created_at_ms = Some(now_ms());
                        s.uncertain_create_at_ms = None;
                        s.last_error = None;
                    })
                    .await
                    .map_err(store_failure)?;
                if recorded.is_none() {
                    // The server was dropped while its VM was made (its config deleted):
                    // nothing would ever use or destroy the VM.
                    tracing::warn!(server = %server.id, instance = vm.instance_id, "the server was deleted while its VM was created: destroying the VM");
                    self.cloud
                        .destroy(provider, &vm.instance_id)
                        .await
                        .or_else(ignore_not_found)
                        .map_err(failed("destroy-vm"))?;
                    return Ok(());
                }
                self.broker.metrics().vm_created(&config.name);
                tracing::info!(server = %server.id, hostname = server.hostname, instance = vm.instance_id, "VM created");
                Ok(())
            }
            Err(error) => {
                // Surely no VM: no directory object either. (After a timeout or an unknown
                // failure the VM may exist: the next listing adopts it, and it needs its
                // object; until then the server may hold a VM.)
                let surely_no_vm = matches!(
                    error,
                    ProviderError::InvalidConfig { .. }
                        | ProviderError::Auth(_)
                        | ProviderError::Quota(_)
                        | ProviderError::NotFound(_)
                );
                let message = cap(error.to_string());
                self.broker
                    .update_server(fence, server.id, |s| {
                        s.last_error = Some(message.clone());
                        if !surely_no_vm {
                            s.uncertain_create_at_ms = Some(now_ms());
                        }
                    })
                    .await
                    .map_err(store_failure)?;
                if let Some(dn) = server.ad_computer_dn.as_ref().filter(|_| surely_no_vm) {
                    let ldap = self.ldap_config_of(config, server)?;
                    match self.directory.delete_computer(&ldap, dn, false).await {
                        Ok(()) => {
                            self.broker
                                .update_server(fence, server.id, |s| {
                                    s.ad_computer_dn = None;
                                    s.ad_ldap_config = None;
                                })
                                .await
                                .map_err(store_failure)?;
                        }
                        Err(ad) => {
                            tracing::warn!(server = %server.id, dn, "the AD object of a VM that failed to create stays until the server is destroyed: {ad}")
                        }
                    }
                }
                Err(failed("create-vm")(error))
            }
        }
    }
}
