//! LDAP configs (a directory the broker binds to) and the pure rules of Active Directory
//! computer records: their DN, account name, password encoding and the domain's DNS name.

use serde::{Deserialize, Serialize};

use super::validation::{self, FieldError};

/// A directory connection. Used by AutoScale configs to create computer records; `enabled`
/// is about user authentication only, so a config used only for joining stays disabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct LdapConfig {
    pub name: String,
    /// Whether users may authenticate against it (joining works either way).
    #[serde(default)]
    pub enabled: bool,
    /// `ldaps://host[:port]`, or `ldap://host[:port]`, always upgraded with StartTLS: the
    /// broker never sends a password over an unencrypted connection.
    pub url: String,
    /// The DN (or `user@REALM`) the broker binds as.
    pub bind_dn: String,
    /// Write-only.
    #[serde(default)]
    pub bind_password: Option<super::secret::Secret>,
    /// Where user searches start, e.g. `DC=example,DC=com`.
    pub search_base: String,
    /// PEM certificates of the CA that signed the server's certificate. Default: the system's
    /// trust store.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// Skip verifying the server's certificate. For tests only: it is logged as a warning on
    /// every connection.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Seconds to connect (TCP and TLS), from 1 to 300 (`"10s"` also reads).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "super::duration::whole_seconds"
    )]
    pub connect_timeout: u64,
    /// Seconds for each operation, from 1 to 300 (`"30s"` also reads).
    #[serde(
        default = "default_operation_timeout",
        deserialize_with = "super::duration::whole_seconds"
    )]
    pub operation_timeout: u64,
}

pub fn default_connect_timeout() -> u64 {
    10
}
pub fn default_operation_timeout() -> u64 {
    30
}

impl LdapConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        let rest = self
            .url
            .strip_prefix("ldaps://")
            .or_else(|| self.url.strip_prefix("ldap://"))
            .ok_or_else(|| {
                FieldError::new(
                    "url",
                    "`ldaps://host[:port]` or `ldap://host[:port]` (StartTLS)",
                )
            })?;
        let authority = rest.trim_end_matches('/');
        let not_url = || {
            FieldError::new(
                "url",
                format!("`{}` is not `ldaps://host[:port]`", self.url),
            )
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(not_url)?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if port.is_some_and(|p| !p.parse::<u16>().is_ok_and(|p| p > 0)) {
            return Err(not_url());
        }
        validation::host("url", host)?;
        validation::text("bind_dn", &self.bind_dn, 1024)?;
        validation::text("search_base", &self.search_base, 1024)?;
        if self
            .bind_password
            .as_ref()
            .is_none_or(|p| p.expose().is_empty())
        {
            return Err(FieldError::new(
                "bind_password",
                "a bind password is needed",
            ));
        }
        if let Some(pem) = &self.ca_certificate
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(FieldError::new(
                "ca_certificate",
                "PEM certificates (-----BEGIN CERTIFICATE-----)",
            ));
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if !(1..=300).contains(&value) {
                return Err(FieldError::new(field, "from 1 to 300 seconds"));
            }
        }
        Ok(())
    }

    /// Whether the connection starts plain and is upgraded with StartTLS.
    pub fn starttls(&self) -> bool {
        self.url.starts_with("ldap://")
    }
}

/// The DN of the computer object of `hostname` in `ou_dn`.
pub fn computer_dn(hostname: &str, ou_dn: &str) -> String {
    format!("CN={},{ou_dn}", escape_dn_value(hostname))
}

/// A computer's `sAMAccountName`: its NetBIOS name in capitals, then `$`.
pub fn sam_account_name(hostname: &str) -> String {
    format!("{}$", hostname.to_ascii_uppercase())
}

/// The DNS domain of a DN: its `DC=` components joined with dots.
pub fn dns_domain(dn: &str) -> Option<String> {
    let labels: Vec<&str> = dn
        .split(',')
        .filter_map(|part| {
            let (key, value) = part.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case("dc").then(|| value.trim())
        })
        .collect();
    (!labels.is_empty()).then(|| labels.join(".").to_ascii_lowercase())
}

/// `unicodePwd`: the password in double quotes, UTF-16LE (what Active Directory takes).
pub fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Escape a value for use in a DN (RFC 4514).
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == value.chars().count() - 1 && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `userAccountControl` of a workstation trust account (a domain member computer).
pub const WORKSTATION_TRUST_ACCOUNT: u32 = 0x1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> LdapConfig {
        LdapConfig {
            name: "corp".into(),
            enabled: false,
            url: url.into(),
            bind_dn: "CN=joiner,CN=Users,DC=example,DC=test".into(),
            bind_password: Some("secret".into()),
            search_base: "DC=example,DC=test".into(),
            ca_certificate: None,
            insecure_skip_tls_verify: false,
            connect_timeout: 10,
            operation_timeout: 30,
        }
    }

    #[test]
    fn urls_are_ldaps_or_ldap_with_starttls() {
        for good in [
            "ldaps://dc1.example.test",
            "ldaps://127.0.0.2:636",
            "ldap://dc1:389/",
        ] {
            assert_eq!(config(good).validate(), Ok(()), "{good}");
        }
        assert!(config("ldap://dc1").starttls() && !config("ldaps://dc1").starttls());
        for bad in [
            "http://dc1",
            "ldaps://",
            "ldaps://dc1:notaport",
            "ldaps://a b",
            "dc1",
        ] {
            assert_eq!(config(bad).validate().unwrap_err().field, "url", "{bad}");
        }
        let no_password = LdapConfig {
            bind_password: None,
            ..config("ldaps://dc1")
        };
        assert_eq!(no_password.validate().unwrap_err().field, "bind_password");
        let not_pem = LdapConfig {
            ca_certificate: Some("hello".into()),
            ..config("ldaps://dc1")
        };
        assert_eq!(not_pem.validate().unwrap_err().field, "ca_certificate");
    }

    #[test]
    fn computer_records_follow_active_directory() {
        assert_eq!(
            computer_dn("zb-0123abcd", "OU=Computers,DC=example,DC=test"),
            "CN=zb-0123abcd,OU=Computers,DC=example,DC=test"
        );
        assert_eq!(sam_account_name("zb-0123abcd"), "ZB-0123ABCD$");
        assert_eq!(
            dns_domain("OU=VDI,OU=Computers,DC=Example, DC=test").as_deref(),
            Some("example.test")
        );
        assert_eq!(dns_domain("CN=Computers"), None);
        // "ab" in quotes, UTF-16LE.
        assert_eq!(unicode_pwd("ab"), [0x22, 0, b'a', 0, b'b', 0, 0x22, 0]);
        assert_eq!(escape_dn_value("a,b=c "), "a\\,b\\=c\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
    }
}
