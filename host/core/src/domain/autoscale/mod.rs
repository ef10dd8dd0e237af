//! Server pools and AutoScale (Kasm's *Auto Scaled* servers): pools, VM provider configs,
//! AutoScale configs, servers, workspaces, and the reconcile arithmetic.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::duration;
use super::script::Os;
use super::validation::{self, FieldError};

/// A pool of servers that pool workspaces place sessions on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(rename = "type", default)]
    pub pool_type: PoolType,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PoolType {
    /// RDP/VNC/SSH servers.
    #[default]
    Server,
    /// Reserved for pools of container agents.
    DockerAgent,
}

impl Pool {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        if self.pool_type != PoolType::Server {
            return Err(FieldError::new(
                "type",
                "only `server` pools are supported so far",
            ));
        }
        Ok(())
    }
}

/// A VM provider config: which provider plugin, with which settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmProviderConfig {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    /// An installed `vm-provider` plugin, e.g. `aws-ec2`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub provider: String,
    /// The provider's settings, by name (see its `describe`). Secret settings are write-only.
    /// Numbers and booleans are taken as their text (`20` is `"20"`).
    #[serde(default, deserialize_with = "setting_values")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, SettingValue>))]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Bumped by every write; read-only (a value in a request body is ignored). A `GET` of
    /// the config answers it as its `ETag`: send that in `If-Match` to change only the
    /// version you read.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(read_only))]
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
    fn into_text(self) -> String {
        match self {
            SettingValue::Text(text) => text,
            SettingValue::Number(number) => number.to_string(),
            SettingValue::Flag(flag) => flag.to_string(),
        }
    }
}

fn setting_values<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let values = std::collections::BTreeMap::<String, SettingValue>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .map(|(name, value)| (name, value.into_text()))
        .collect())
}

impl VmProviderConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        validation::name("provider", &self.provider)
    }

    /// The settings as the plugin takes them.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A provider config as stored: with what its plugin said about it when it was saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProviderConfig {
    pub config: VmProviderConfig,
    /// The settings the plugin's `describe` marks secret (write-only).
    pub secret_settings: std::collections::BTreeSet<String>,
    /// The plugin's `validate` answer: the endpoints it may reach, its instance cap.
    pub validated: super::provider::ValidatedSettings,
}

impl StoredProviderConfig {
    /// The config with its secret settings left out.
    pub fn public(&self) -> VmProviderConfig {
        let mut config = self.config.clone();
        config
            .settings
            .retain(|name, _| !self.secret_settings.contains(name));
        config
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutoScaleConfig {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The pool its servers join.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub pool: String,
    /// The deployment zone of its servers.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub zone: String,
    pub connection_type: ConnectionType,
    /// Default: the connection type's port (RDP 3389).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub connection_port: Option<u16>,
    pub credential_type: CredentialType,
    #[serde(default)]
    pub connection_username: Option<String>,
    /// Write-only.
    #[serde(default)]
    pub connection_password: Option<String>,
    /// Extra connection settings (RemoteApp and the like), passed through.
    #[serde(default)]
    pub connection_info: Option<String>,
    /// Whether a server takes another session after one ends (else it is destroyed).
    #[serde(default)]
    pub reusable: bool,
    /// Free session slots to keep available across the config's servers.
    #[cfg_attr(feature = "openapi", schema(maximum = 100000))]
    pub minimum_available_sessions: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_sessions_per_server: u32,
    /// The VM provider config that creates its VMs.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub vm_provider_config: String,
    pub os: Os,
    /// The startup-script template (see the script generator's documentation).
    pub startup_script: String,
    /// The script-generator plugin. Default `default-generator`.
    #[serde(default = "default_generator")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub script_generator: String,
    /// Host names are `{prefix}-{random}`, at most 15 characters in all.
    #[serde(default = "default_prefix")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z][a-z0-9]{0,7}$"))]
    pub server_name_prefix: String,
    /// Seconds a VM may take to check in before it is destroyed and replaced, from 1 to
    /// 86400 (`"10m"` also reads).
    #[serde(
        default = "default_provision_timeout",
        deserialize_with = "duration::whole_seconds"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = duration::seconds_schema))]
    pub provision_timeout: u64,
    /// Seconds a surplus server must stay idle before it is destroyed, at most 86400
    /// (`"5m"` also reads).
    #[serde(
        default = "default_downscale_backoff",
        deserialize_with = "duration::whole_seconds"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = duration::seconds_schema))]
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
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub version: u64,
}

fn yes() -> bool {
    true
}
fn default_generator() -> String {
    "default-generator".into()
}
fn default_prefix() -> String {
    "zb".into()
}
fn default_provision_timeout() -> u64 {
    600
}
fn default_downscale_backoff() -> u64 {
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
            if super::ldap::dns_domain(ou).is_none() {
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

    /// The names of the variables a startup script of this OS may use (per the seed:
    /// `server_id` and `server_hostname` only for Windows).
    pub fn script_variables(os: Os) -> &'static [&'static str] {
        match os {
            Os::Windows => &[
                "ad_join_credential",
                "checkin_jwt",
                "connection_username",
                "connection_password",
                "domain",
                "server_id",
                "server_hostname",
                "upstream_auth_address",
            ],
            Os::Linux => &[
                "ad_join_credential",
                "checkin_jwt",
                "connection_username",
                "connection_password",
                "domain",
                "upstream_auth_address",
            ],
        }
    }
}

/// The variables whose values never go into a startup script: a VM reads user data that
/// any user of it may read too, so it fetches these at boot (`POST /servers/bootstrap`).
pub const SECRET_VARIABLES: &[&str] = &["ad_join_credential", "connection_password"];

/// The extra pair the host passes to a script generator, naming (comma-separated) the
/// variables it offers without their values: the generator renders each use of one as code
/// that fetches the value at boot, and starts every script with that fetch (the bootstrap
/// step a check-in requires). Its name is not a template variable.
pub const BOOT_SECRETS_PAIR: &str = "zonebroker:boot-secrets";

/// What a script generator is given for `os`: every variable of the OS, the secret ones
/// with empty values and named in [`BOOT_SECRETS_PAIR`], so that no secret can reach a
/// script whatever the template or the generator does.
fn render_pairs(os: Os, value: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let names = AutoScaleConfig::script_variables(os);
    let mut pairs: Vec<(String, String)> = names
        .iter()
        .map(|name| {
            let value = if SECRET_VARIABLES.contains(name) {
                String::new()
            } else {
                value(name)
            };
            (name.to_string(), value)
        })
        .collect();
    let deferred: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| SECRET_VARIABLES.contains(name))
        .collect();
    pairs.push((BOOT_SECRETS_PAIR.to_string(), deferred.join(",")));
    pairs
}

/// The values a template is rendered with when a config is saved, for every variable of
/// `os`. Values an operator supplies (the user name) get characters every shell interprets,
/// so a template that uses them unquoted is refused at save time rather than at boot;
/// values the broker makes (token, ids, addresses) have their real shape, which no shell
/// interprets. Secrets are offered as at a real render: fetched at boot.
pub fn sample_variables(os: Os) -> Vec<(String, String)> {
    render_pairs(os, |name| match name {
        "checkin_jwt" => "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzYW1wbGUifQ.c2lnbmF0dXJl".into(),
        "domain" => "corp.example.com".into(),
        "server_id" => "00000000-0000-4000-8000-000000000000".into(),
        "server_hostname" => "zb-00000000".into(),
        "upstream_auth_address" => "broker.example.com:443".into(),
        other => format!("sample {other} 'with' \"quotes\" $(x) `y` ;&|<>"),
    })
}

/// A server's host name: `{prefix}-{the first hex digits of its id}`, at most 15 characters
/// (the NetBIOS limit Windows and Active Directory impose).
pub fn hostname(prefix: &str, id: Uuid) -> String {
    let digits = 15usize.saturating_sub(prefix.len() + 1).min(8);
    format!("{prefix}-{}", &id.simple().to_string()[..digits])
}

/// How a server joins Active Directory: its pre-created computer account's single-use
/// password (set when the VM fetches it) and the directory's DNS domain.
pub struct AdJoin {
    pub password: String,
    pub domain: String,
}

/// What a script generator renders `server`'s startup script with: the non-secret
/// variables of its OS with their values (the check-in token among them), the secret ones
/// deferred to boot (see [`render_pairs`]).
pub fn script_values(
    config: &AutoScaleConfig,
    server: &Server,
    checkin_jwt: &str,
    upstream_auth_address: &str,
) -> Vec<(String, String)> {
    let values = server_variables(config, server, upstream_auth_address, None);
    render_pairs(config.os, |name| match name {
        "checkin_jwt" => checkin_jwt.to_string(),
        other => lookup(&values, other),
    })
}

/// What `POST /servers/bootstrap` answers a booting VM: every variable of its OS (secrets
/// included, the check-in token left out: the VM has it). `ad_join_credential` and `domain`
/// are empty unless the config creates AD computer records.
pub fn server_variables(
    config: &AutoScaleConfig,
    server: &Server,
    upstream_auth_address: &str,
    ad_join: Option<&AdJoin>,
) -> Vec<(String, String)> {
    let (username, password) = match config.credential_type {
        CredentialType::Static => (
            config.connection_username.clone().unwrap_or_default(),
            config.connection_password.clone().unwrap_or_default(),
        ),
        CredentialType::Sso => (String::new(), String::new()),
    };
    let domain = ad_join.map(|j| j.domain.clone()).unwrap_or_else(|| {
        if config.create_ad_computer_record {
            config
                .ad_computer_ou_dn
                .as_deref()
                .and_then(super::ldap::dns_domain)
                .unwrap_or_default()
        } else {
            String::new()
        }
    });
    let value = |name: &str| match name {
        "connection_username" => username.clone(),
        "connection_password" => password.clone(),
        "server_id" => server.id.to_string(),
        "server_hostname" => server.hostname.clone(),
        "upstream_auth_address" => upstream_auth_address.to_string(),
        "ad_join_credential" => ad_join.map(|j| j.password.clone()).unwrap_or_default(),
        "domain" => domain.clone(),
        _ => String::new(),
    };
    AutoScaleConfig::script_variables(config.os)
        .iter()
        .filter(|name| **name != "checkin_jwt")
        .map(|name| (name.to_string(), value(name)))
        .collect()
}

fn lookup(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A server's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    /// Created (or being created); waits for its check-in.
    Provisioning,
    /// Checked in: takes sessions.
    Running,
    /// Takes no new sessions; destroyed when its sessions end.
    Draining,
    /// Being destroyed.
    Destroying,
    /// Could not be created.
    Failed,
    /// Its VM is gone (terminated behind the broker's back, reclaimed): takes no sessions,
    /// its sessions are ended, and it is cleaned up and replaced.
    Lost,
}

impl ServerStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Provisioning => "provisioning",
            ServerStatus::Running => "running",
            ServerStatus::Draining => "draining",
            ServerStatus::Destroying => "destroying",
            ServerStatus::Failed => "failed",
            ServerStatus::Lost => "lost",
        }
    }
}

/// A server: a VM an AutoScale config created, or a static one an operator added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: Uuid,
    pub pool: String,
    pub zone: String,
    /// The AutoScale config that owns it; `None` for a static server.
    pub config: Option<String>,
    pub hostname: String,
    pub address: Option<String>,
    pub port: u16,
    pub connection_type: ConnectionType,
    pub max_sessions: u32,
    pub status: ServerStatus,
    /// The provider's id of the VM, once created.
    pub instance_id: Option<String>,
    /// Sent with the create call (EC2 `ClientToken`): the same server never creates twice.
    pub idempotency_key: String,
    /// The check-in token's id; cleared once used (a token works once).
    pub checkin_token_id: Option<String>,
    /// Not reusable and a session has ended on it: takes no new sessions, destroyed once
    /// idle.
    pub spent: bool,
    pub created_at_ms: u64,
    pub status_changed_at_ms: u64,
    /// Since when it has had no session (running servers).
    pub idle_since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Its Active Directory computer object, once created (configs with
    /// `create_ad_computer_record`); deleted after the VM.
    #[serde(default)]
    pub ad_computer_dn: Option<String>,
    /// The LDAP config its computer object was made through (deleted through it too).
    #[serde(default)]
    pub ad_ldap_config: Option<String>,
    /// Its VM carries this installation's tag. False only for records from before
    /// installation tags existed (their VMs are found by their config's tag instead).
    #[serde(default)]
    pub installation_tagged: bool,
    /// Its VM must fetch its variables (`POST /servers/bootstrap`) before it may check in.
    /// False only for records from before the bootstrap existed (their scripts hold their
    /// variables).
    #[serde(default)]
    pub bootstrap_required: bool,
    /// When its VM fetched its variables (once).
    #[serde(default)]
    pub bootstrapped_at_ms: Option<u64>,
    /// When its VM was created (or adopted).
    #[serde(default)]
    pub vm_created_at_ms: Option<u64>,
    /// When a create call for it ended without saying whether a VM was made (a timeout, an
    /// unknown error): until a listing shows none carries its id, it may hold a VM.
    #[serde(default)]
    pub uncertain_create_at_ms: Option<u64>,
}

impl Server {
    /// Whether a VM or a directory object may exist for it (it must be destroyed, not
    /// just forgotten).
    pub fn may_hold_resources(&self) -> bool {
        self.instance_id.is_some()
            || self.ad_computer_dn.is_some()
            || self.uncertain_create_at_ms.is_some()
    }
}

impl Server {
    /// Whether placement may put a session on it.
    pub fn takes_sessions(&self) -> bool {
        self.status == ServerStatus::Running && !self.spent
    }

    /// What the planner needs of it, with `sessions` running.
    pub fn planner_state(&self, sessions: u32) -> ServerState {
        ServerState {
            id: self.id,
            status: self.status,
            sessions,
            max_sessions: self.max_sessions,
            spent: self.spent,
            created_at_ms: self.created_at_ms,
            idle_since_ms: self.idle_since_ms,
        }
    }
}

/// The body of `POST /servers`: a static server.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StaticServer {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub pool: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub zone: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9._-]+$", max_length = 253)
    )]
    pub hostname: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9._-]+$", max_length = 253)
    )]
    pub address: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: Option<u16>,
    pub connection_type: ConnectionType,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_sessions: u32,
}

impl StaticServer {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("pool", &self.pool)?;
        validation::name("zone", &self.zone)?;
        validation::host("hostname", &self.hostname)?;
        validation::host("address", &self.address)?;
        if self.port == Some(0) {
            return Err(FieldError::new("port", "from 1 to 65535"));
        }
        if !(1..=1000).contains(&self.max_sessions) {
            return Err(FieldError::new("max_sessions", "from 1 to 1000"));
        }
        Ok(())
    }
}

/// What a workspace launches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceType {
    Container,
    Pool,
}

/// How users of a pool workspace connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RdpClient {
    /// In the browser, through the zone's proxy.
    #[default]
    WebNative,
    /// The user's own RDP client, through the RDP gateway (an `.rdp` file).
    LocalClient,
}

/// A workspace users request sessions of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(rename = "type")]
    pub workspace_type: WorkspaceType,
    /// For `container` workspaces: the image.
    #[serde(default)]
    pub image: Option<String>,
    /// For `pool` workspaces: the pool.
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub rdp_client: RdpClient,
}

impl Workspace {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        for (field, value) in [
            ("friendly_name", &self.friendly_name),
            ("description", &self.description),
        ] {
            if let Some(value) = value {
                validation::text(field, value, 1000)?;
            }
        }
        match self.workspace_type {
            WorkspaceType::Container => match &self.image {
                Some(image) => validation::name("image", image),
                None => Err(FieldError::new(
                    "image",
                    "a container workspace names an image",
                )),
            },
            WorkspaceType::Pool => match &self.pool {
                Some(pool) => validation::name("pool", pool),
                None => Err(FieldError::new("pool", "a pool workspace names a pool")),
            },
        }
    }
}

/// One server as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub id: Uuid,
    pub status: ServerStatus,
    pub sessions: u32,
    pub max_sessions: u32,
    pub spent: bool,
    pub created_at_ms: u64,
    pub idle_since_ms: Option<u64>,
}

/// What the reconcile loop should do for one config now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// VMs to create.
    pub create: u32,
    /// Servers to destroy, and why.
    pub destroy: Vec<(Uuid, DestroyReason)>,
    /// Free session slots counted (provisioning servers included).
    pub available: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyReason {
    /// Did not check in within `provision_timeout`.
    ProvisionTimeout,
    /// Not reusable, and its session ended.
    Spent,
    /// Idle beyond `downscale_backoff` while the minimum holds without it.
    Surplus,
    /// Drained on an operator's request, and now without sessions.
    Drained,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::ProvisionTimeout => "provision_timeout",
            DestroyReason::Spent => "spent",
            DestroyReason::Surplus => "surplus",
            DestroyReason::Drained => "drained",
        }
    }
}

/// The reconcile arithmetic for one config (pure).
///
/// Available sessions are the free slots of the config's live servers, provisioning ones
/// included. Below `minimum_available_sessions`, create `ceil(deficit / per server)` VMs,
/// capped so that the servers whose VMs may exist (being destroyed included: a destroy
/// can keep failing) never exceed `max_instances`. Destroy VMs that have not checked in by
/// `provision_timeout`, spent non-reusable servers and drained ones once idle, and idle
/// surplus servers after `downscale_backoff` while the minimum still holds without them.
pub fn plan(
    config: &AutoScaleConfig,
    servers: &[ServerState],
    now_ms: u64,
    max_instances: Option<u32>,
) -> Plan {
    let mut destroy = Vec::new();
    let timeout_ms = config.provision_timeout * 1000;
    let mut live: Vec<&ServerState> = Vec::new();
    for server in servers {
        match server.status {
            ServerStatus::Provisioning
                if now_ms.saturating_sub(server.created_at_ms) > timeout_ms =>
            {
                destroy.push((server.id, DestroyReason::ProvisionTimeout));
            }
            ServerStatus::Provisioning => live.push(server),
            ServerStatus::Running if server.spent && server.sessions == 0 => {
                destroy.push((server.id, DestroyReason::Spent));
            }
            ServerStatus::Running if !server.spent => live.push(server),
            ServerStatus::Draining if server.sessions == 0 => {
                destroy.push((server.id, DestroyReason::Drained));
            }
            _ => {}
        }
    }
    let free = |s: &ServerState| s.max_sessions.saturating_sub(s.sessions);
    let mut available: u32 = live.iter().map(|s| free(s)).sum();
    let minimum = config.minimum_available_sessions;
    let per_server = config.max_sessions_per_server.max(1);
    // Every server whose VM may still exist holds one of the provider's instances.
    let holding_vms = servers
        .iter()
        .filter(|s| !matches!(s.status, ServerStatus::Failed | ServerStatus::Lost))
        .count() as u32;

    let mut create = 0;
    if available < minimum {
        create = (minimum - available).div_ceil(per_server);
        if let Some(max) = max_instances {
            create = create.min(max.saturating_sub(holding_vms));
        }
    } else {
        // Scale down: the idle servers that have waited out the back-off, longest idle
        // first, as long as the minimum holds without each.
        let backoff_ms = config.downscale_backoff * 1000;
        let mut idle: Vec<&&ServerState> = live
            .iter()
            .filter(|s| s.status == ServerStatus::Running && s.sessions == 0)
            .filter(|s| {
                s.idle_since_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) >= backoff_ms)
            })
            .collect();
        idle.sort_by_key(|s| (s.idle_since_ms, s.id));
        for server in idle {
            if available - free(server) >= minimum {
                available -= free(server);
                destroy.push((server.id, DestroyReason::Surplus));
            }
        }
    }
    Plan {
        create,
        destroy,
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_settings_take_numbers_and_booleans_as_their_text() {
        let config: VmProviderConfig = serde_json::from_str(
            r#"{"name": "ec2", "provider": "aws-ec2",
                "settings": {"region": "us-east-1", "max_instances": 20, "ratio": 1.5, "spot": true}}"#,
        )
        .unwrap();
        assert_eq!(config.settings["max_instances"], "20");
        assert_eq!(config.settings["ratio"], "1.5");
        assert_eq!(config.settings["spot"], "true");
        assert_eq!(config.settings["region"], "us-east-1");
        for bad in [r#"{"a": null}"#, r#"{"a": [1]}"#, r#"{"a": {"b": 1}}"#] {
            let json = format!(r#"{{"name": "ec2", "provider": "aws-ec2", "settings": {bad}}}"#);
            assert!(
                serde_json::from_str::<VmProviderConfig>(&json).is_err(),
                "{bad}"
            );
        }
    }

    fn config(minimum: u32, per_server: u32) -> AutoScaleConfig {
        AutoScaleConfig {
            name: "pool-a".into(),
            enabled: true,
            pool: "pool".into(),
            zone: "default".into(),
            connection_type: ConnectionType::Rdp,
            connection_port: None,
            credential_type: CredentialType::Static,
            connection_username: Some("kasm".into()),
            connection_password: Some("secret".into()),
            connection_info: None,
            reusable: false,
            minimum_available_sessions: minimum,
            max_sessions_per_server: per_server,
            vm_provider_config: "aws".into(),
            os: Os::Linux,
            startup_script: "#!/bin/sh".into(),
            script_generator: default_generator(),
            server_name_prefix: default_prefix(),
            provision_timeout: 600,
            downscale_backoff: 300,
            create_ad_computer_record: false,
            ldap_config: None,
            ad_computer_ou_dn: None,
            recursive_ad_cleanup: false,
            version: 0,
        }
    }

    fn server(n: u128, status: ServerStatus, sessions: u32) -> ServerState {
        ServerState {
            id: Uuid::from_u128(n),
            status,
            sessions,
            max_sessions: 4,
            spent: false,
            created_at_ms: 1_000_000,
            idle_since_ms: None,
        }
    }

    const NOW: u64 = 1_100_000;

    #[test]
    fn an_empty_pool_gets_enough_vms_for_the_minimum() {
        let plan = plan(&config(10, 4), &[], NOW, None);
        assert_eq!((plan.create, plan.available), (3, 0), "ceil(10 / 4)");
        let plan = super::plan(&config(8, 4), &[], NOW, None);
        assert_eq!(plan.create, 2);
        let plan = super::plan(&config(0, 4), &[], NOW, None);
        assert_eq!(plan.create, 0);
    }

    #[test]
    fn provisioning_servers_count_as_available() {
        let servers = [
            server(1, ServerStatus::Provisioning, 0),
            server(2, ServerStatus::Running, 3),
        ];
        let plan = plan(&config(10, 4), &servers, NOW, None);
        assert_eq!(plan.available, 5);
        assert_eq!(plan.create, 2, "deficit 5: two more servers of 4");
    }

    #[test]
    fn max_instances_caps_creation() {
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Running, 4),
        ];
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(3)).create, 1);
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(2)).create, 0);
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(1)).create, 0);
    }

    #[test]
    fn max_instances_counts_servers_being_destroyed() {
        // A destroy that keeps failing: its VM still runs, so it takes a place under the cap.
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Destroying, 0),
        ];
        assert_eq!(plan(&config(4, 4), &servers, NOW, Some(2)).create, 0);
        assert_eq!(plan(&config(4, 4), &servers, NOW, Some(3)).create, 1);
        // So does a server this very plan destroys, until it is gone.
        let mut late = server(3, ServerStatus::Provisioning, 0);
        late.created_at_ms = NOW - 600_001;
        let plan = plan(
            &config(8, 4),
            &[server(1, ServerStatus::Running, 4), late],
            NOW,
            Some(2),
        );
        assert_eq!(plan.destroy.len(), 1);
        assert_eq!(plan.create, 0, "the replacement waits for the destroy");
        // A lost server's VM is gone: it holds nothing.
        let lost = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Lost, 0),
        ];
        assert_eq!(super::plan(&config(4, 4), &lost, NOW, Some(2)).create, 1);
    }

    #[test]
    fn drained_servers_go_once_their_sessions_end_and_do_not_count() {
        let servers = [
            server(1, ServerStatus::Draining, 0),
            server(2, ServerStatus::Draining, 2),
            server(3, ServerStatus::Running, 0),
        ];
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(1), DestroyReason::Drained)]);
        assert_eq!((plan.available, plan.create), (4, 0));
    }

    #[test]
    fn a_vm_that_never_checks_in_is_destroyed_and_replaced() {
        let mut late = server(1, ServerStatus::Provisioning, 0);
        late.created_at_ms = NOW - 600_001;
        let plan = plan(&config(4, 4), &[late], NOW, None);
        assert_eq!(
            plan.destroy,
            [(Uuid::from_u128(1), DestroyReason::ProvisionTimeout)]
        );
        assert_eq!(plan.create, 1, "its replacement, in the same pass");
    }

    #[test]
    fn spent_servers_go_once_idle_and_do_not_count() {
        let mut spent = server(1, ServerStatus::Running, 0);
        spent.spent = true;
        let mut busy_spent = server(2, ServerStatus::Running, 1);
        busy_spent.spent = true;
        let plan = plan(&config(4, 4), &[spent, busy_spent], NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(1), DestroyReason::Spent)]);
        assert_eq!((plan.available, plan.create), (0, 1));
    }

    #[test]
    fn idle_surplus_goes_after_the_backoff_while_the_minimum_holds() {
        let idle = |n, since| ServerState {
            idle_since_ms: Some(since),
            ..server(n, ServerStatus::Running, 0)
        };
        let servers = [
            idle(1, NOW - 400_000),
            idle(2, NOW - 500_000),
            idle(3, NOW - 100_000),
        ];
        // 12 free, minimum 4: two may go, but server 3 has not waited out the back-off.
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert_eq!(
            plan.destroy,
            [
                (Uuid::from_u128(2), DestroyReason::Surplus),
                (Uuid::from_u128(1), DestroyReason::Surplus)
            ]
        );
        assert_eq!(plan.create, 0);
        // With a minimum of 9, only one may go.
        let plan = super::plan(&config(9, 4), &servers, NOW, None);
        assert_eq!(plan.destroy.len(), 0, "12 - 4 = 8 < 9");
        let plan = super::plan(&config(8, 4), &servers, NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(2), DestroyReason::Surplus)]);
    }

    #[test]
    fn busy_draining_and_destroying_servers_are_left_alone() {
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Draining, 1),
            server(3, ServerStatus::Destroying, 0),
        ];
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert!(plan.destroy.is_empty());
        assert_eq!((plan.available, plan.create), (0, 1));
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
        assert_eq!(AutoScaleConfig::script_variables(Os::Linux).len(), 6);
        assert!(AutoScaleConfig::script_variables(Os::Windows).contains(&"server_hostname"));
    }

    fn a_server() -> Server {
        Server {
            id: Uuid::from_u128(7),
            pool: "pool".into(),
            zone: "default".into(),
            config: Some("pool-a".into()),
            hostname: "zb-00000000".into(),
            address: None,
            port: 3389,
            connection_type: ConnectionType::Rdp,
            max_sessions: 4,
            status: ServerStatus::Provisioning,
            instance_id: None,
            idempotency_key: "k".into(),
            checkin_token_id: Some("j".into()),
            spent: false,
            created_at_ms: 0,
            status_changed_at_ms: 0,
            idle_since_ms: None,
            last_error: None,
            ad_computer_dn: None,
            ad_ldap_config: None,
            installation_tagged: true,
            bootstrap_required: true,
            bootstrapped_at_ms: None,
            vm_created_at_ms: None,
            uncertain_create_at_ms: None,
        }
    }

    fn get(values: &[(String, String)], name: &str) -> Option<String> {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn scripts_get_no_secret_only_its_name_deferred_to_boot() {
        let config = config(4, 4);
        let server = a_server();
        let linux = script_values(&config, &server, "tok", "broker:443");
        assert_eq!(get(&linux, "checkin_jwt").as_deref(), Some("tok"));
        assert_eq!(get(&linux, "connection_username").as_deref(), Some("kasm"));
        assert_eq!(
            get(&linux, "connection_password").as_deref(),
            Some(""),
            "offered, without its value"
        );
        assert_eq!(
            get(&linux, BOOT_SECRETS_PAIR).as_deref(),
            Some("ad_join_credential,connection_password")
        );
        assert!(
            !linux.iter().any(|(_, v)| v.contains("secret")),
            "{linux:?}"
        );
        assert_eq!(
            get(&linux, "upstream_auth_address").as_deref(),
            Some("broker:443")
        );
        assert_eq!(get(&linux, "server_id"), None, "Windows only, per the seed");
        let samples = sample_variables(Os::Windows);
        assert_eq!(get(&samples, "connection_password").as_deref(), Some(""));
        assert!(
            get(&samples, "connection_username")
                .unwrap()
                .contains("$(x)")
        );
    }

    #[test]
    fn the_bootstrap_answers_every_variable_of_the_os() {
        let config = config(4, 4);
        let server = a_server();
        let linux = server_variables(&config, &server, "broker:443", None);
        assert_eq!(
            get(&linux, "connection_password").as_deref(),
            Some("secret")
        );
        assert_eq!(get(&linux, "checkin_jwt"), None, "the VM has it");
        assert_eq!(get(&linux, "server_id"), None, "Windows only, per the seed");
        let windows = AutoScaleConfig {
            os: Os::Windows,
            credential_type: CredentialType::Sso,
            ..config
        };
        let join = AdJoin {
            password: "pw".into(),
            domain: "example.test".into(),
        };
        let values = server_variables(&windows, &server, "broker:443", Some(&join));
        assert_eq!(get(&values, "ad_join_credential").as_deref(), Some("pw"));
        assert_eq!(get(&values, "domain").as_deref(), Some("example.test"));
        assert_eq!(
            get(&values, "server_id").as_deref(),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(
            get(&values, "server_hostname").as_deref(),
            Some("zb-00000000")
        );
        assert_eq!(
            get(&values, "connection_password").as_deref(),
            Some(""),
            "SSO"
        );
    }

    #[test]
    fn host_names_fit_netbios() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(hostname("zb", id), "zb-01234567");
        assert_eq!(hostname("winpool1", id), "winpool1-012345");
        assert_eq!(hostname("winpool1", id).len(), 15);
    }
}
