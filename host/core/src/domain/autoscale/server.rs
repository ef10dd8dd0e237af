//! Servers: VMs an AutoScale config created and static ones an operator added, their
//! lifecycle and host names.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::config::ConnectionType;
use super::plan::ServerState;
use crate::domain::validation::{self, FieldError};

/// A server's host name: `{prefix}-{the first hex digits of its id}`, at most 15 characters
/// (the NetBIOS limit Windows and Active Directory impose).
pub fn hostname(prefix: &str, id: Uuid) -> String {
    let digits = 15usize.saturating_sub(prefix.len() + 1).min(8);
    format!("{prefix}-{}", &id.simple().to_string()[..digits])
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
    /// Grows by one with every change of the record, whoever makes it (a write at a
    /// version, or a placement or session end changing `idle_since_ms` or `spent`): a
    /// write names the version it replaces, so no process writes an older copy over a
    /// newer one. 0 for records from before versions.
    #[serde(default)]
    pub version: u64,
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
    /// A session was placed on it: it is no longer idle (a new version if it was). (The
    /// PostgreSQL store does the same in SQL.)
    pub fn session_placed(&mut self) {
        if self.idle_since_ms.take().is_some() {
            self.version += 1;
        }
    }

    /// A session ended on it, leaving `sessions_left`: a server that is not `reusable` is
    /// spent, and one left without sessions is idle from `now_ms` (a new version if either
    /// changed). (The PostgreSQL store does the same in SQL.)
    pub fn session_ended(&mut self, reusable: bool, sessions_left: u32, now_ms: u64) {
        let before = (self.spent, self.idle_since_ms);
        self.spent |= !reusable;
        if sessions_left == 0 {
            self.idle_since_ms = Some(now_ms);
        }
        if (self.spent, self.idle_since_ms) != before {
            self.version += 1;
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_netbios() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(hostname("zb", id), "zb-01234567");
        assert_eq!(hostname("winpool1", id), "winpool1-012345");
        assert_eq!(hostname("winpool1", id).len(), 15);
    }
}
