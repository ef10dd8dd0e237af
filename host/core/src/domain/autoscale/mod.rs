//! Server pools and AutoScale (Kasm's *Auto Scaled* servers): pools, VM provider configs,
//! AutoScale configs, servers, workspaces, the startup-script variables and the reconcile
//! arithmetic, one module each. Every public item is re-exported here, under the path it
//! had before the split (`domain::autoscale::Server`).

pub mod config;
pub mod plan;
pub mod pool;
pub mod provider_settings;
pub mod script_variables;
pub mod server;
pub mod status;
pub mod workspace;

#[cfg(test)]
pub(crate) mod fixtures;

pub use config::{
    AutoScaleConfig, ConnectionType, CredentialType, SettingValue, StoredProviderConfig,
    VmProviderConfig,
};
pub use plan::{DestroyReason, Plan, ServerState, plan};
pub use pool::{Pool, PoolType};
pub use provider_settings::ProviderSettings;
pub use script_variables::{
    AdJoin, BOOT_SECRETS_PAIR, SECRET_VARIABLES, sample_variables, script_values, server_variables,
};
pub use server::{Server, ServerStatus, StaticServer, hostname};
pub use status::{ConfigStatus, UnmanagedVm, VmProblem};
pub use workspace::{RdpClient, Workspace, WorkspaceType};
