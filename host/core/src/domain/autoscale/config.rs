//! AutoScale configs (keep a pool's servers sized through a VM provider) and the VM
//! provider configs they name.

use serde::{Deserialize, Serialize};

use crate::domain::duration;
use crate::domain::script::Os;
use crate::domain::validation::{self, FieldError};

/// A VM provider config: which provider plugin, with which settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct VmProviderConfig {
    pub name: String,
    /// An installed `vm-provider` plugin, e.g. `aws-ec2`.
    pub provider: String,
    /// The provider's settings, by name (see its `describe`). Secret settings are write-only.
    /// Numbers and booleans are taken as their text (`20` is `"20"`).
    #[serde(default)]
    pub settings: super::ProviderSettings,
    /// Bumped by every write; read-only (a value in a request body is ignored). A `GET` of
    /// the config answers it as its `ETag`: send that in `If-Match` to change only the
    /// version you read.
    #[serde(default)]
    pub version: u64,
    /// Whether the endpoints the settings name may resolve to loopback or private addresses
    /// (on-premises hypervisors, emulators). Link-local addresses (169.254.0.0/16,
    /// fe80::/10: cloud metadata) are refused whatever this says.
    #[serde(default)]
    pub allow_private_endpoints: bool,
}

/// A provider setting as it may be written: text, a number or a boolean (kept as text).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    Number(serde_json::Number),
    Flag(bool),
}

impl SettingValue {
    pub(super) fn into_text(self) -> String {
        match self {
            SettingValue::Text(text) => text,
            SettingValue::Number(number) => number.to_string(),
            SettingValue::Flag(flag) => flag.to_string(),
        }
    }
}

impl VmProviderConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        validation::name("provider", &self.provider)
    }

    /// The settings as the plugin takes them, secret ones included.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.settings.pairs()
    }
}

/// A provider config as stored: with what its plugin said about it when it was saved (its
/// secret settings are marked so in `config.settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProviderConfigRecord", into = "ProviderConfigRecord")]
pub struct StoredProviderConfig {
    pub config: VmProviderConfig,
    /// The plugin's `validate` answer: the endpoints it may reach, its instance cap.
    pub validated: crate::domain::provider::ValidatedSettings,
}

/// How a [`StoredProviderConfig`] is written: the settings the plugin's `describe` marks
/// secret by name, beside the settings' values.
#[derive(Serialize, Deserialize)]
struct ProviderConfigRecord {
    config: VmProviderConfig,
    secret_settings: std::collections::BTreeSet<String>,
    validated: crate::domain::provider::ValidatedSettings,
}

impl From<ProviderConfigRecord> for StoredProviderConfig {
    fn from(record: ProviderConfigRecord) -> Self {
        let mut config = record.config;
        config.settings.mark_secret(&record.secret_settings);
        StoredProviderConfig {
            config,
            validated: record.validated,
        }
    }
}

impl From<StoredProviderConfig> for ProviderConfigRecord {
    fn from(stored: StoredProviderConfig) -> Self {
        ProviderConfigRecord {
            secret_settings: stored.config.settings.secret_names(),
            config: stored.config,
            validated: stored.validated,
        }
    }
}

/// How users connect to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    Rdp,
    Vnc,
    Ssh,
    Kasmvnc,
}

impl ConnectionType {
    /// The protocol's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            ConnectionType::Rdp => 3389,
            ConnectionType::Vnc => 5900,
            ConnectionType::Ssh => 22,
            ConnectionType::Kasmvnc => 6901,
        }
    }
}

/// Where session credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CredentialType {
    /// `connection_username` / `connection_password`, the same for every session.
    Static,
    /// The user's own (single sign-on).
    Sso,
}

/// An AutoScale config: keep a pool's servers sized through a VM provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct AutoScaleConfig {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The pool its servers join.
    pub pool: String,
    /// The deployment zone of its servers.
    pub zone: String,
    pub connection_type: ConnectionType,
    /// Default: the connection type's port (RDP 3389).
    #[serde(default)]
    pub connection_port: Option<u16>,
    pub credential_type: CredentialType,
    #[serde(default)]
    pub connection_username: Option<String>,
    /// Write-only.
    #[serde(default)]
    pub connection_password: Option<crate::domain::secret::Secret>,
    /// Extra connection settings (RemoteApp and the like), passed through.
    #[serde(default)]
    pub connection_info: Option<String>,
    /// Whether a server takes another session after one ends (else it is destroyed).
    #[serde(default)]
    pub reusable: bool,
    /// Free session slots to keep available across the config's servers.
    pub minimum_available_sessions: u32,
    pub max_sessions_per_server: u32,
    /// The VM provider config that creates its VMs.
    pub vm_provider_config: String,
    pub os: Os,
    /// The startup-script template (see the script generator's documentation).
    pub startup_script: String,
    /// The script-generator plugin. Default `default-generator`.
    #[serde(default = "default_generator")]
    pub script_generator: String,
    /// Host names are `{prefix}-{random}`, at most 15 characters in all.
    #[serde(default = "default_prefix")]
    pub server_name_prefix: String,
    /// Seconds a VM may take to check in before it is destroyed and replaced, from 1 to
    /// 86400 (`"10m"` also reads).
    #[serde(
        default = "default_provision_timeout",
        deserialize_with = "duration::whole_seconds"
    )]
    pub provision_timeout: u64,
    /// Seconds a surplus server must stay idle before it is destroyed, at most 86400
    /// (`"5m"` also reads).
    #[serde(
        default = "default_downscale_backoff",
        deserialize_with = "duration::whole_seconds"
    )]
    pub downscale_backoff: u64,
    #[serde(default)]
    pub create_ad_computer_record: bool,
    #[serde(default)]
    pub ldap_config: Option<String>,
    #[serde(default)]
    pub ad_computer_ou_dn: Option<String>,
    #[serde(default)]
    pub recursive_ad_cleanup: bool,
    /// Bumped by every write; read-only (a value in a request body is ignored). A `GET` of
    /// the config answers it as its `ETag`: send that in `If-Match` to change only the
    /// version you read.
    #[serde(default)]
    pub version: u64,
}

pub fn yes() -> bool {
    true
}

pub fn default_generator() -> String {
    "default-generator".into()
}
pub fn default_prefix() -> String {
    "zb".into()
}
pub fn default_provision_timeout() -> u64 {
    600
}
pub fn default_downscale_backoff() -> u64 {
    300
}

impl AutoScaleConfig {
    /// Check the fields on their own (references to pools, zones, plugins and the template
    /// are checked by the broker).
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, value) in [
            ("name", &self.name),
            ("pool", &self.pool),
            ("zone", &self.zone),
            ("vm_provider_config", &self.vm_provider_config),
            ("script_generator", &self.script_generator),
        ] {
            validation::name(field, value)?;
        }
        let prefix = &self.server_name_prefix;
        if prefix.is_empty()
            || prefix.len() > 8
            || !prefix.starts_with(|c: char| c.is_ascii_lowercase())
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(FieldError::new(
                "server_name_prefix",
                "1 to 8 lowercase letters and digits, starting with a letter (host names must fit 15 characters)",
            ));
        }
        if self.max_sessions_per_server == 0 || self.max_sessions_per_server > 1000 {
            return Err(FieldError::new("max_sessions_per_server", "from 1 to 1000"));
        }
        if self.minimum_available_sessions > 100_000 {
            return Err(FieldError::new(
                "minimum_available_sessions",
                "at most 100000",
            ));
        }
        if self.connection_port == Some(0) {
            return Err(FieldError::new("connection_port", "from 1 to 65535"));
        }
        if !(1..=86_400).contains(&self.provision_timeout) {
            return Err(FieldError::new(
                "provision_timeout",
                "from 1 to 86400 seconds",
            ));
        }
        if self.downscale_backoff > 86_400 {
            return Err(FieldError::new(
                "downscale_backoff",
                "at most 86400 seconds",
            ));
        }
        if let Some(username) = &self.connection_username
            && !username.is_empty()
        {
            validation::username("connection_username", username)?;
        }
        if self.credential_type == CredentialType::Static
            && self.connection_username.as_deref().unwrap_or("").is_empty()
        {
            return Err(FieldError::new(
                "connection_username",
                "static credentials need a username",
            ));
        }
        if self.create_ad_computer_record {
            if self.ldap_config.is_none() {
                return Err(FieldError::new(
                    "ldap_config",
                    "needed to create AD computer records",
                ));
            }
            let ou = self.ad_computer_ou_dn.as_deref().unwrap_or("");
            if crate::domain::ldap::dns_domain(ou).is_none() {
                return Err(FieldError::new(
                    "ad_computer_ou_dn",
                    "the DN of the OU computer records go to, e.g. `OU=VDI,DC=example,DC=com`",
                ));
            }
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.connection_port
            .unwrap_or(self.connection_type.default_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::autoscale::fixtures::config;

    #[test]
    fn provider_settings_take_numbers_and_booleans_as_their_text() {
        let config: VmProviderConfig = serde_json::from_str(
            r#"{"name": "ec2", "provider": "aws-ec2",
                "settings": {"region": "us-east-1", "max_instances": 20, "ratio": 1.5, "spot": true}}"#,
        )
        .unwrap();
        assert_eq!(config.settings.get("max_instances"), Some("20"));
        assert_eq!(config.settings.get("ratio"), Some("1.5"));
        assert_eq!(config.settings.get("spot"), Some("true"));
        assert_eq!(config.settings.get("region"), Some("us-east-1"));
        for bad in [r#"{"a": null}"#, r#"{"a": [1]}"#, r#"{"a": {"b": 1}}"#] {
            let json = format!(r#"{{"name": "ec2", "provider": "aws-ec2", "settings": {bad}}}"#);
            assert!(
                serde_json::from_str::<VmProviderConfig>(&json).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_validate_their_own_fields() {
        assert_eq!(config(1, 1).validate(), Ok(()));
        let bad = AutoScaleConfig {
            server_name_prefix: "much-too-long".into(),
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "server_name_prefix");
        let bad = AutoScaleConfig {
            max_sessions_per_server: 0,
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "max_sessions_per_server");
        let bad = AutoScaleConfig {
            connection_username: None,
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "connection_username");
        let bad = AutoScaleConfig {
            connection_username: Some("bob\r\nfull address:s:evil".into()),
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "connection_username");
        let bad = AutoScaleConfig {
            credential_type: CredentialType::Sso,
            connection_username: Some("bob\nx".into()),
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "connection_username");
        let bad = AutoScaleConfig {
            create_ad_computer_record: true,
            ..config(1, 1)
        };
        assert_eq!(bad.validate().unwrap_err().field, "ldap_config");
        assert_eq!(config(1, 1).port(), 3389);
    }
}
