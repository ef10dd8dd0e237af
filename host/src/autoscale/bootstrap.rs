//! A booting VM's first call: `POST /servers/bootstrap` with its `checkin_jwt` answers, once,
//! the server's variables, secrets included, so that its startup script (which any user of
//! the VM can read from the instance metadata) carries nothing but that single-use token.
//!
//! The AD join credential is minted here, not stored: the computer object was created
//! before the VM with a password nobody kept, and the bootstrap sets a fresh one and hands
//! it over in the same step. A bootstrap that cannot reach the directory changes nothing
//! and may be retried with the same token.

use std::sync::Arc;

use super::addresses::BrokerAddresses;
use super::directory::{Directory, LdapDirectory, random_password};
use crate::broker::{Broker, BrokerError};
use crate::domain::autoscale::script_variables::directory_domain;
use crate::domain::autoscale::{AdJoin, server_variables};

/// Answers bootstraps.
pub struct Bootstrapper<D: Directory = LdapDirectory> {
    broker: Arc<Broker>,
    directory: Arc<D>,
    addresses: BrokerAddresses,
}

impl<D: Directory> Bootstrapper<D> {
    pub fn new(broker: Arc<Broker>, directory: Arc<D>, addresses: BrokerAddresses) -> Self {
        Bootstrapper {
            broker,
            directory,
            addresses,
        }
    }

    /// The variables of the server `token` names, if it has not fetched them yet: its
    /// record says so durably before they are answered, so a second bootstrap (or a replay
    /// of the token) is refused.
    pub async fn bootstrap(&self, token: &str) -> Result<Vec<(String, String)>, BrokerError> {
        let claim = self.broker.claim_bootstrap(token)?;
        let ad_join = match &claim.server.ad_computer_dn {
            Some(dn) => {
                let name = claim
                    .server
                    .ad_ldap_config
                    .as_deref()
                    .or(claim.config.ldap_config.as_deref())
                    .unwrap_or_default();
                let ldap = self.broker.ldap_config_stored(name).ok_or_else(|| {
                    BrokerError::Unavailable {
                        code: "directory_unavailable",
                        message: format!("no LDAP config `{name}` to set the join credential"),
                    }
                })?;
                let password = random_password();
                self.directory
                    .set_password(&ldap, dn, &password)
                    .await
                    .map_err(|error| {
                        tracing::warn!(server = %claim.server.id, dn, "cannot set the join credential: {error}");
                        BrokerError::Unavailable {
                            code: "directory_unavailable",
                            message: format!(
                                "the join credential cannot be set now ({error}); retry with the same token"
                            ),
                        }
                    })?;
                Some(AdJoin {
                    password: password.into(),
                    domain: directory_domain(&claim.config).unwrap_or_default(),
                })
            }
            None => None,
        };
        let config = claim.config.clone();
        let server = self.broker.complete_bootstrap(claim).await?;
        let upstream = self
            .addresses
            .upstream_auth_address(&self.broker, &config.zone);
        Ok(server_variables(
            &config,
            &server,
            &upstream,
            ad_join.as_ref(),
        ))
    }
}
