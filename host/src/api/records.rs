//! The API's bodies for the named records (images, pools, workspaces, LDAP configs, VM
//! provider configs, AutoScale configs): what a request sends and an answer shows, strict
//! (a field a body does not take is refused) and with their OpenAPI schemas.
//!
//! They are apart from the records the broker keeps and the store writes (`crate::domain`),
//! which tolerate fields they do not know and carry a layout version. Today both have the
//! same fields, and each converts into the other field by field: either can change without
//! the other, and the compiler names every conversion a new field must go through. The
//! defaults of omitted fields are the domain's (one home).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::resource::Versioned;
use crate::broker::ConfigStatus;
use crate::domain::autoscale::{
    ConnectionType, CredentialType, PoolType, ProviderSettings, RdpClient, SettingValue,
    WorkspaceType,
};
use crate::domain::script::Os;
use crate::domain::secret::Secret;

/// `From` both ways between an API body and the domain record it shows, field by field.
/// Both are struct literals over the same list, so a field that either type has and the list
/// lacks (or the other type lacks) is a compile error: a new field cannot be dropped silently.
macro_rules! same_fields {
    ($api:ident <=> $domain:path { $($field:ident),+ $(,)? }) => {
        impl From<$api> for $domain {
            fn from(record: $api) -> Self {
                $domain { $($field: record.$field),+ }
            }
        }
        impl From<$domain> for $api {
            fn from(record: $domain) -> Self {
                Self { $($field: record.$field),+ }
            }
        }
    };
}

/// A session image.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[schema(exclusive_minimum = 0.0, maximum = 100000.0)]
    /// Cores a session reserves (fractions allowed).
    pub cores: f64,
    #[schema(minimum = 1)]
    /// Memory a session reserves, bytes.
    pub memory: u64,
    /// GPUs a session reserves.
    #[serde(default)]
    pub gpus: u32,
    /// Disabled images cannot be requested.
    #[serde(default = "crate::domain::image::enabled")]
    pub enabled: bool,
    /// When set, sessions of this image run only on agents of this zone.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub zone: Option<String>,
}

same_fields!(Image <=> crate::domain::image::Image {
    name,
    cores,
    memory,
    gpus,
    enabled,
    zone,
});

/// A pool of servers that pool workspaces place sessions on.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(rename = "type", default)]
    pub pool_type: PoolType,
}

same_fields!(Pool <=> crate::domain::autoscale::Pool {
    name,
    pool_type,
});

/// A workspace users request sessions of.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "crate::domain::autoscale::workspace::yes")]
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

same_fields!(Workspace <=> crate::domain::autoscale::Workspace {
    name,
    friendly_name,
    description,
    enabled,
    workspace_type,
    image,
    pool,
    rdp_client,
});

/// A directory connection. Used by AutoScale configs to create computer records; `enabled`
/// is about user authentication only, so a config used only for joining stays disabled.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Whether users may authenticate against it (joining works either way).
    #[serde(default)]
    pub enabled: bool,
    /// `ldaps://host[:port]`, or `ldap://host[:port]`, always upgraded with StartTLS: the
    /// broker never sends a password over an unencrypted connection.
    #[schema(pattern = r"^ldaps?://[A-Za-z0-9._\[\]:-]+/?$")]
    pub url: String,
    /// The DN (or `user@REALM`) the broker binds as.
    #[schema(min_length = 1, max_length = 1024)]
    pub bind_dn: String,
    /// Write-only.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bind_password: Option<Secret>,
    /// Where user searches start, e.g. `DC=example,DC=com`.
    #[schema(min_length = 1, max_length = 1024)]
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
        default = "crate::domain::ldap::default_connect_timeout",
        deserialize_with = "crate::domain::duration::whole_seconds"
    )]
    #[schema(schema_with = crate::domain::duration::seconds_schema)]
    pub connect_timeout: u64,
    /// Seconds for each operation, from 1 to 300 (`"30s"` also reads).
    #[serde(
        default = "crate::domain::ldap::default_operation_timeout",
        deserialize_with = "crate::domain::duration::whole_seconds"
    )]
    #[schema(schema_with = crate::domain::duration::seconds_schema)]
    pub operation_timeout: u64,
}

same_fields!(LdapConfig <=> crate::domain::ldap::LdapConfig {
    name,
    enabled,
    url,
    bind_dn,
    bind_password,
    search_base,
    ca_certificate,
    insecure_skip_tls_verify,
    connect_timeout,
    operation_timeout,
});

/// A VM provider config: which provider plugin, with which settings.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmProviderConfig {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// An installed `vm-provider` plugin, e.g. `aws-ec2`.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub provider: String,
    /// The provider's settings, by name (see its `describe`). Secret settings are write-only.
    /// Numbers and booleans are taken as their text (`20` is `"20"`).
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, SettingValue>)]
    pub settings: ProviderSettings,
    /// Bumped by every write; read-only (a value in a request body is ignored). A `GET` of
    /// the config answers it as its `ETag`: send that in `If-Match` to change only the
    /// version you read.
    #[serde(default)]
    #[schema(read_only)]
    pub version: u64,
    /// Whether the endpoints the settings name may resolve to loopback or private addresses
    /// (on-premises hypervisors, emulators). Link-local addresses (169.254.0.0/16,
    /// fe80::/10: cloud metadata) are refused whatever this says.
    #[serde(default)]
    pub allow_private_endpoints: bool,
}

same_fields!(VmProviderConfig <=> crate::domain::autoscale::VmProviderConfig {
    name,
    provider,
    settings,
    version,
    allow_private_endpoints,
});

/// An AutoScale config: keep a pool's servers sized through a VM provider.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoScaleConfig {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default = "crate::domain::autoscale::config::yes")]
    pub enabled: bool,
    /// The pool its servers join.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub pool: String,
    /// The deployment zone of its servers.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub zone: String,
    pub connection_type: ConnectionType,
    /// Default: the connection type's port (RDP 3389).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub connection_port: Option<u16>,
    pub credential_type: CredentialType,
    #[serde(default)]
    pub connection_username: Option<String>,
    /// Write-only.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub connection_password: Option<Secret>,
    /// Extra connection settings (RemoteApp and the like), passed through.
    #[serde(default)]
    pub connection_info: Option<String>,
    /// Whether a server takes another session after one ends (else it is destroyed).
    #[serde(default)]
    pub reusable: bool,
    /// Free session slots to keep available across the config's servers.
    #[schema(maximum = 100000)]
    pub minimum_available_sessions: u32,
    #[schema(minimum = 1, maximum = 1000)]
    pub max_sessions_per_server: u32,
    /// The VM provider config that creates its VMs.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub vm_provider_config: String,
    pub os: Os,
    /// The startup-script template (see the script generator's documentation).
    pub startup_script: String,
    /// The script-generator plugin. Default `default-generator`.
    #[serde(default = "crate::domain::autoscale::config::default_generator")]
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub script_generator: String,
    /// Host names are `{prefix}-{random}`, at most 15 characters in all.
    #[serde(default = "crate::domain::autoscale::config::default_prefix")]
    #[schema(pattern = r"^[a-z][a-z0-9]{0,7}$")]
    pub server_name_prefix: String,
    /// Seconds a VM may take to check in before it is destroyed and replaced, from 1 to
    /// 86400 (`"10m"` also reads).
    #[serde(
        default = "crate::domain::autoscale::config::default_provision_timeout",
        deserialize_with = "crate::domain::duration::whole_seconds"
    )]
    #[schema(schema_with = crate::domain::duration::seconds_schema)]
    pub provision_timeout: u64,
    /// Seconds a surplus server must stay idle before it is destroyed, at most 86400
    /// (`"5m"` also reads).
    #[serde(
        default = "crate::domain::autoscale::config::default_downscale_backoff",
        deserialize_with = "crate::domain::duration::whole_seconds"
    )]
    #[schema(schema_with = crate::domain::duration::seconds_schema)]
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
    #[schema(read_only)]
    pub version: u64,
}

same_fields!(AutoScaleConfig <=> crate::domain::autoscale::AutoScaleConfig {
    name,
    enabled,
    pool,
    zone,
    connection_type,
    connection_port,
    credential_type,
    connection_username,
    connection_password,
    connection_info,
    reusable,
    minimum_available_sessions,
    max_sessions_per_server,
    vm_provider_config,
    os,
    startup_script,
    script_generator,
    server_name_prefix,
    provision_timeout,
    downscale_backoff,
    create_ad_computer_record,
    ldap_config,
    ad_computer_ou_dn,
    recursive_ad_cleanup,
    version,
});

/// An AutoScale config as the API shows it: secrets blanked, with its status.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AutoScaleConfigView {
    /// The config (`connection_password` always `null`: it is write-only).
    pub config: AutoScaleConfig,
    /// Whether a connection password is set.
    pub connection_password_set: bool,
    pub status: ConfigStatus,
}

impl From<crate::broker::AutoScaleConfigView> for AutoScaleConfigView {
    fn from(view: crate::broker::AutoScaleConfigView) -> Self {
        AutoScaleConfigView {
            config: view.config.into(),
            connection_password_set: view.connection_password_set,
            status: view.status,
        }
    }
}

impl Versioned for AutoScaleConfigView {
    fn version(&self) -> u64 {
        self.config.version
    }
}

impl Versioned for VmProviderConfig {
    fn version(&self) -> u64 {
        self.version
    }
}
