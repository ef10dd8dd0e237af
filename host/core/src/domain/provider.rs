//! What the broker exchanges with VM-provider plugins (mirrors `zonebroker:plugin/provider-types`).

use serde::{Deserialize, Serialize};

use super::script::Os;

/// One setting a provider takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    /// Write-only: stored and passed to the plugin, never logged or returned.
    pub secret: bool,
    pub default_value: Option<String>,
}

/// What a provider is and which settings it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderInfo {
    pub name: String,
    pub description: String,
    pub settings: Vec<SettingSpec>,
}

impl ProviderInfo {
    /// Whether setting `name` is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.settings.iter().any(|s| s.name == name && s.secret)
    }
}

/// The outcome of validating settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedSettings {
    /// The only origins (`scheme://host[:port]`) the plugin may reach with these settings.
    pub endpoints: Vec<String>,
    /// The most VMs one config may keep, if limited.
    pub max_instances: Option<u32>,
}

/// A VM to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    pub server_id: String,
    pub hostname: String,
    pub idempotency_key: String,
    pub os: Os,
    pub startup_script: String,
    pub tags: Vec<(String, String)>,
}

/// A VM's lifecycle state as the provider reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Pending,
    Running,
    Stopping,
    Stopped,
    Terminating,
    Terminated,
    Unknown,
}

impl VmState {
    /// Whether the VM is gone or going.
    pub fn is_gone(self) -> bool {
        matches!(self, VmState::Terminating | VmState::Terminated)
    }
}

/// A VM as the provider sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub instance_id: String,
    pub state: VmState,
    pub private_address: Option<String>,
    pub public_address: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Vm {
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A provider failure, by what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("invalid setting `{setting}`: {message}")]
    InvalidConfig { setting: String, message: String },
    #[error("the cloud refused the credentials: {0}")]
    Auth(String),
    #[error("a quota or capacity limit was hit: {0}")]
    Quota(String),
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    /// Whether trying again later may help (with back-off).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Quota(_) | ProviderError::Transient(_) | ProviderError::Other(_)
        )
    }
}
