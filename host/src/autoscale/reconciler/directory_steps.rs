//! The directory steps of provisioning: a server's AD computer object created before its
//! VM (or adopted, when a crash left it unrecorded) and found again for cleanup.

use uuid::Uuid;

use super::{Failure, Reconciler, failed, store_failure};
use crate::autoscale::cloud::Cloud;
use crate::autoscale::directory::{Directory, DirectoryError, random_password};
use crate::domain::autoscale::{AutoScaleConfig, Server, hostname};
use crate::domain::ldap::{LdapConfig, computer_dn};
use crate::store::Fence;

impl<C: Cloud, D: Directory> Reconciler<C, D> {
    /// The LDAP config `server`'s object was made through (else the config's), password
    /// included.
    pub(super) fn ldap_config_of(
        &self,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Result<LdapConfig, Failure> {
        let name = server
            .ad_ldap_config
            .as_deref()
            .or(config.ldap_config.as_deref())
            .unwrap_or_default();
        self.broker.ldap_config_stored(name).ok_or_else(|| Failure {
            call: "ad",
            message: format!("no LDAP config `{name}`"),
        })
    }

    /// The object a crash may have left between creating it and recording it on `server`:
    /// the computer of its host name in the config's OU, if its description names the
    /// server. Best effort: a directory that cannot be asked is logged, not waited for.
    pub(super) async fn unrecorded_object(
        &self,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Option<String> {
        let ldap = self.ldap_config_of(config, server).ok()?;
        let dn = computer_dn(&server.hostname, config.ad_computer_ou_dn.as_deref()?);
        match self.directory.description(&ldap, &dn).await {
            Ok(Some(description)) if description == object_owner(server) => Some(dn),
            Ok(_) | Err(DirectoryError::NoSuchObject { .. }) => None,
            Err(error) => {
                tracing::warn!(server = %server.id, dn, "cannot check for a computer object left by a crash: {error}");
                None
            }
        }
    }

    /// Before its VM: the server's AD computer object. Created (under another host name if
    /// the name is taken by an object that is not ours) with a password nobody keeps: the
    /// VM's bootstrap sets the one it joins with. An object of ours that a crash left
    /// unrecorded is adopted. Answers the server as updated.
    pub(super) async fn prepare_ad_account(
        &self,
        fence: &Fence,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Result<Server, Failure> {
        if server.ad_computer_dn.is_some() {
            return Ok(server.clone());
        }
        let ldap = self.ldap_config_of(config, server)?;
        let ou = config.ad_computer_ou_dn.clone().unwrap_or_default();
        let owner = object_owner(server);
        let mut server = server.clone();
        let mut attempt = 0;
        let dn = loop {
            attempt += 1;
            let created = self
                .directory
                .create_computer(&ldap, &ou, &server.hostname, &random_password(), &owner)
                .await;
            match created {
                Ok(dn) => break dn,
                Err(DirectoryError::AlreadyExists { dn }) => {
                    // The name may be taken elsewhere in the domain (`sAMAccountName`),
                    // with no object at this DN: that is somebody else's too.
                    let description = match self.directory.description(&ldap, &dn).await {
                        Ok(description) => description,
                        Err(DirectoryError::NoSuchObject { .. }) => None,
                        Err(error) => return Err(failed("ad-create")(error)),
                    };
                    if description.as_deref() == Some(owner.as_str()) {
                        // Made by an earlier pass that crashed before recording it.
                        break dn;
                    }
                    if attempt >= 4 {
                        return Err(failed("ad-create")(DirectoryError::AlreadyExists { dn }));
                    }
                    let renamed = hostname(&config.server_name_prefix, Uuid::new_v4());
                    tracing::warn!(server = %server.id, taken = dn, renamed, "the host name is taken in the directory; renaming the server");
                    server = self
                        .broker
                        .update_server(fence, server.id, |s| s.hostname = renamed.clone())
                        .await
                        .map_err(store_failure)?
                        .unwrap_or(server);
                }
                Err(error) => return Err(failed("ad-create")(error)),
            }
        };
        tracing::info!(server = %server.id, dn, "AD computer object created");
        let (recorded, through) = (Some(dn.clone()), Some(ldap.name.clone()));
        match self
            .broker
            .update_server(fence, server.id, |s| {
                s.ad_computer_dn = recorded.clone();
                s.ad_ldap_config = through.clone();
            })
            .await
            .map_err(store_failure)?
        {
            Some(server) => Ok(server),
            None => {
                // The server was dropped meanwhile (its config deleted): so is its object.
                if let Err(error) = self.directory.delete_computer(&ldap, &dn, false).await {
                    tracing::warn!(
                        dn,
                        "cannot delete the object of a server deleted meanwhile: {error}"
                    );
                }
                Err(Failure {
                    call: "ad-create",
                    message: format!("server {} was deleted meanwhile", server.id),
                })
            }
        }
    }
}

/// The `description` of `server`'s computer object: how an object is known to be ours.
fn object_owner(server: &Server) -> String {
    format!("zonebroker server {}", server.id)
}
