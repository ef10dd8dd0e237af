//! Active Directory computer records for auto-scaled servers, behind a small trait; the
//! implementation speaks LDAP (ldap3) over TLS only: `ldaps://`, or `ldap://` upgraded with
//! StartTLS. Passwords never cross an unencrypted connection and are never logged.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod};

use crate::domain::ldap::{
    LdapConfig, WORKSTATION_TRUST_ACCOUNT, computer_dn, sam_account_name, unicode_pwd,
};

/// Why a directory operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot reach the directory at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the directory refused the bind as `{bind_dn}`: {message}")]
    Bind { bind_dn: String, message: String },
    #[error("`{dn}` does not exist: {message}")]
    NoSuchObject { dn: String, message: String },
    #[error("`{dn}` exists already")]
    AlreadyExists { dn: String },
    #[error("the directory refused `{operation}` on `{dn}`: {message}")]
    Refused {
        operation: &'static str,
        dn: String,
        message: String,
    },
}

/// Creates and deletes computer objects.
pub trait Directory: Send + Sync + 'static {
    /// Create `CN={hostname},{ou_dn}` (a workstation trust account) with `password` and
    /// `description`; never overwrites an existing object. Answers its DN.
    fn create_computer(
        &self,
        ldap: &LdapConfig,
        ou_dn: &str,
        hostname: &str,
        password: &str,
        description: &str,
    ) -> impl Future<Output = Result<String, DirectoryError>> + Send;

    /// The `description` of object `dn` (`None` if it has none).
    fn description(
        &self,
        ldap: &LdapConfig,
        dn: &str,
    ) -> impl Future<Output = Result<Option<String>, DirectoryError>> + Send;

    /// Give an existing computer object a new password (after a restart lost the first).
    fn set_password(
        &self,
        ldap: &LdapConfig,
        dn: &str,
        password: &str,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Delete a computer object; with `recursive`, its children too (tree delete). An object
    /// already gone is not an error.
    fn delete_computer(
        &self,
        ldap: &LdapConfig,
        dn: &str,
        recursive: bool,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;
}

/// The LDAP directory.
pub struct LdapDirectory;

/// The tree-delete control (`LDAP_SERVER_TREE_DELETE_OID`).
const TREE_DELETE: &str = "1.2.840.113556.1.4.805";
const NO_SUCH_OBJECT: u32 = 32;
const ENTRY_ALREADY_EXISTS: u32 = 68;

/// A bound connection.
async fn connect(ldap: &LdapConfig) -> Result<ldap3::Ldap, DirectoryError> {
    let unreachable = |e: LdapError| DirectoryError::Unreachable {
        url: ldap.url.clone(),
        message: e.to_string(),
    };
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(ldap.connect_timeout))
        .set_starttls(ldap.starttls());
    if ldap.insecure_skip_tls_verify {
        tracing::warn!(
            ldap_config = ldap.name,
            url = ldap.url,
            "TLS certificate verification is OFF for this LDAP config (insecure_skip_tls_verify)"
        );
        settings = settings.set_no_tls_verify(true);
    } else if let Some(pem) = &ldap.ca_certificate {
        settings = settings.set_config(tls_config(pem).map_err(|message| {
            DirectoryError::Unreachable {
                url: ldap.url.clone(),
                message,
            }
        })?);
    }
    let (conn, mut handle) = LdapConnAsync::with_settings(settings, &ldap.url)
        .await
        .map_err(unreachable)?;
    ldap3::drive!(conn);
    handle.with_timeout(Duration::from_secs(ldap.operation_timeout));
    let password = ldap
        .bind_password
        .as_ref()
        .map_or("", |password| password.expose().as_str());
    let bound = handle
        .simple_bind(&ldap.bind_dn, password)
        .await
        .and_then(|result| result.success());
    match bound {
        Ok(_) => Ok(handle),
        Err(LdapError::LdapResult { result }) => Err(DirectoryError::Bind {
            bind_dn: ldap.bind_dn.clone(),
            message: format!("rc {}: {}", result.rc, result.text),
        }),
        Err(other) => Err(unreachable(other)),
    }
}

/// A rustls client configuration trusting exactly the certificates in `pem`.
fn tls_config(pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = crate::tls_client::roots_from_pem(pem.as_bytes(), "the CA certificate")?;
    Ok(Arc::new(crate::tls_client::client_config(roots)?))
}

fn refused(operation: &'static str, dn: &str) -> impl FnOnce(LdapError) -> DirectoryError {
    move |error| match error {
        LdapError::LdapResult { result } if result.rc == NO_SUCH_OBJECT => {
            DirectoryError::NoSuchObject {
                dn: dn.to_string(),
                message: result.text,
            }
        }
        LdapError::LdapResult { result } if result.rc == ENTRY_ALREADY_EXISTS => {
            DirectoryError::AlreadyExists { dn: dn.to_string() }
        }
        LdapError::LdapResult { result } => DirectoryError::Refused {
            operation,
            dn: dn.to_string(),
            message: format!("rc {}: {}", result.rc, result.text),
        },
        other => DirectoryError::Refused {
            operation,
            dn: dn.to_string(),
            message: other.to_string(),
        },
    }
}

fn values(value: impl Into<Vec<u8>>) -> HashSet<Vec<u8>> {
    HashSet::from([value.into()])
}

impl Directory for LdapDirectory {
    async fn create_computer(
        &self,
        ldap: &LdapConfig,
        ou_dn: &str,
        hostname: &str,
        password: &str,
        description: &str,
    ) -> Result<String, DirectoryError> {
        let mut handle = connect(ldap).await?;
        // ldap3's timeout covers the next operation only: set it for each.
        handle.with_timeout(Duration::from_secs(ldap.operation_timeout));
        let dn = computer_dn(hostname, ou_dn);
        let domain = crate::domain::ldap::dns_domain(ou_dn).unwrap_or_default();
        let attributes: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), values("computer")),
            (b"cn".to_vec(), values(hostname)),
            (
                b"sAMAccountName".to_vec(),
                values(sam_account_name(hostname)),
            ),
            (
                b"userAccountControl".to_vec(),
                values(WORKSTATION_TRUST_ACCOUNT.to_string()),
            ),
            (
                b"dNSHostName".to_vec(),
                values(format!("{hostname}.{domain}")),
            ),
            (b"unicodePwd".to_vec(), values(unicode_pwd(password))),
            (b"description".to_vec(), values(description)),
        ];
        let result = handle
            .add(&dn, attributes)
            .await
            .and_then(|r| r.success())
            .map_err(|error| match refused("add", &dn)(error) {
                // The parent is what is missing.
                DirectoryError::NoSuchObject { message, .. } => DirectoryError::NoSuchObject {
                    dn: ou_dn.to_string(),
                    message,
                },
                other => other,
            });
        let _ = handle.unbind().await;
        result.map(|_| dn)
    }

    async fn description(
        &self,
        ldap: &LdapConfig,
        dn: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let mut handle = connect(ldap).await?;
        // ldap3's timeout covers the next operation only: set it for each.
        handle.with_timeout(Duration::from_secs(ldap.operation_timeout));
        let result = handle
            .search(
                dn,
                ldap3::Scope::Base,
                "(objectClass=*)",
                vec!["description"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(refused("search", dn));
        let _ = handle.unbind().await;
        let (entries, _) = result?;
        Ok(entries
            .into_iter()
            .next()
            .map(ldap3::SearchEntry::construct)
            .and_then(|entry| {
                entry
                    .attrs
                    .get("description")
                    .and_then(|v| v.first().cloned())
            }))
    }

    async fn set_password(
        &self,
        ldap: &LdapConfig,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
        let mut handle = connect(ldap).await?;
        // ldap3's timeout covers the next operation only: set it for each.
        handle.with_timeout(Duration::from_secs(ldap.operation_timeout));
        let change = vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            values(unicode_pwd(password)),
        )];
        let result = handle
            .modify(dn, change)
            .await
            .and_then(|r| r.success())
            .map(drop)
            .map_err(refused("modify", dn));
        let _ = handle.unbind().await;
        result
    }

    async fn delete_computer(
        &self,
        ldap: &LdapConfig,
        dn: &str,
        recursive: bool,
    ) -> Result<(), DirectoryError> {
        let mut handle = connect(ldap).await?;
        // ldap3's timeout covers the next operation only: set it for each.
        handle.with_timeout(Duration::from_secs(ldap.operation_timeout));
        if recursive {
            handle.with_controls(ldap3::controls::RawControl {
                ctype: TREE_DELETE.to_string(),
                crit: true,
                val: None,
            });
        }
        let result = match handle.delete(dn).await.and_then(|r| r.success()) {
            Ok(_) => Ok(()),
            Err(error) => match refused("delete", dn)(error) {
                DirectoryError::NoSuchObject { .. } => Ok(()),
                other => Err(other),
            },
        };
        let _ = handle.unbind().await;
        result
    }
}

/// A fresh random password for a computer account: 32 characters of `[A-Za-z0-9]`
/// (about 190 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    // Rejection sampling keeps the characters uniform.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::with_capacity(32);
    loop {
        for &b in &bytes {
            if (b as usize) < limit {
                password.push(ALPHABET[b as usize % ALPHABET.len()] as char);
                if password.len() == 32 {
                    return password;
                }
            }
        }
        getrandom::fill(&mut bytes).expect("the OS random source works");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_random_and_plain() {
        let a = super::random_password();
        let b = super::random_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
