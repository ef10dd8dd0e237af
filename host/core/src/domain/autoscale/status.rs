//! What the reconcile loop last found for an AutoScale config: kept in the store by the
//! process that reconciles the config, so every process sharing the store shows it.

use serde::{Deserialize, Serialize};

/// What the reconcile loop last found for one AutoScale config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigStatus {
    /// The last provider or render failure, until a pass succeeds.
    pub last_error: Option<String>,
    /// Failures in a row (the back-off doubles with each).
    pub consecutive_failures: u32,
    /// Unix time (ms) before which no VM is created or destroyed for it.
    pub backoff_until_ms: Option<u64>,
    /// Free session slots over its live servers at the last pass.
    pub available_sessions: u32,
    /// Its servers that are not being destroyed.
    pub servers: u32,
    /// VMs its passes found and left alone or could not destroy: an operator should look.
    pub unmanaged_vms: Vec<UnmanagedVm>,
    /// Another process sharing the database holds the config's lease and reconciles it:
    /// the other fields are that process's last pass.
    #[serde(default)]
    pub reconciled_elsewhere: bool,
}

/// A VM a reconcile pass found and did not manage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnmanagedVm {
    /// The provider's id of the VM.
    pub instance_id: String,
    pub problem: VmProblem,
    /// What the pass saw, for a human.
    pub message: String,
}

/// Why a VM is listed in [`ConfigStatus::unmanaged_vms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmProblem {
    /// It carries the config's tag but not this installation's, and no server of the config
    /// names it: somebody else's (or forged), never touched.
    NotOurs,
    /// Ours and to be destroyed, but the provider refused (termination protection, ...):
    /// retried every pass.
    DestroyFailed,
}
