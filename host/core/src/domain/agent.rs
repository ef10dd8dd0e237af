//! Agents: the container hosts sessions run on. They check in through a listener, which
//! assigns them that listener's zone.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::capacity::{Capacity, millicores};
use super::validation::{self, FieldError};

/// An agent as stored: what it reported, what the operator set, when it was last heard of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    pub zone: String,
    /// Reported cores.
    pub cores: f64,
    /// Reported memory, bytes.
    pub memory: u64,
    pub gpus: u32,
    pub max_sessions: u32,
    /// Reported CPU load, 0 to 1.
    pub cpu_load: f32,
    /// Reported memory load, 0 to 1.
    pub memory_load: f32,
    pub enabled: bool,
    /// Operator's override of `cores`.
    pub cores_override: Option<f64>,
    /// Operator's override of `memory`, bytes.
    pub memory_override: Option<u64>,
    /// Unix time of the last check-in, milliseconds.
    pub last_heartbeat_ms: u64,
    /// Unix time of the first check-in, milliseconds.
    pub created_at_ms: u64,
    /// SHA-256 (hex) of the agent's credential: later check-ins must present the credential.
    /// `None` for an agent stored before credentials existed or after an operator reset it:
    /// its next check-in takes a new one.
    #[serde(default)]
    pub credential_sha256: Option<String>,
    /// Registered while the server required approval, not yet enabled by an operator.
    #[serde(default)]
    pub pending_approval: bool,
}

/// Whether an agent can take sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Enabled and checked in within the timeout.
    Online,
    /// Enabled, but silent for longer than the timeout.
    Offline,
    /// Disabled by an operator.
    Disabled,
    /// New, waiting for an operator to enable it (`--require-agent-approval`).
    Pending,
}

impl Agent {
    /// A new agent from its first check-in, enabled unless it awaits an operator's approval.
    pub fn register(
        id: Uuid,
        checkin: AgentCheckin,
        zone: &str,
        now_ms: u64,
        needs_approval: bool,
    ) -> Agent {
        let mut agent = Agent {
            id,
            hostname: String::new(),
            address: String::new(),
            port: 0,
            zone: String::new(),
            cores: 0.0,
            memory: 0,
            gpus: 0,
            max_sessions: 0,
            cpu_load: 0.0,
            memory_load: 0.0,
            enabled: !needs_approval,
            cores_override: None,
            memory_override: None,
            last_heartbeat_ms: 0,
            created_at_ms: now_ms,
            credential_sha256: None,
            pending_approval: needs_approval,
        };
        agent.check_in(checkin, zone, now_ms);
        agent
    }

    /// Record a check-in: new reported values, the listener's zone, a fresh heartbeat.
    pub fn check_in(&mut self, checkin: AgentCheckin, zone: &str, now_ms: u64) {
        self.hostname = checkin.hostname;
        self.address = checkin.address;
        self.port = checkin.port;
        self.cores = checkin.cores;
        self.memory = checkin.memory;
        self.max_sessions = checkin.max_sessions;
        self.gpus = checkin.gpus.unwrap_or(0);
        // Read as f64 so that the range check is exact; kept as f32, as strategies see it.
        self.cpu_load = checkin.cpu_load.unwrap_or(0.0) as f32;
        self.memory_load = checkin.memory_load.unwrap_or(0.0) as f32;
        self.zone = zone.to_string();
        self.last_heartbeat_ms = now_ms;
    }

    /// What the agent offers: reported totals, replaced by the operator's overrides.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            millicores: millicores(self.cores_override.unwrap_or(self.cores)),
            memory: self.memory_override.unwrap_or(self.memory),
            gpus: self.gpus,
            max_sessions: self.max_sessions,
        }
    }

    /// Whether the agent checked in within `timeout_ms` of `now_ms`.
    pub fn is_fresh(&self, now_ms: u64, timeout_ms: u64) -> bool {
        heartbeat_is_fresh(self.last_heartbeat_ms, now_ms, timeout_ms)
    }

    pub fn status(&self, now_ms: u64, timeout_ms: u64) -> AgentStatus {
        if self.pending_approval && !self.enabled {
            AgentStatus::Pending
        } else if !self.enabled {
            AgentStatus::Disabled
        } else if self.is_fresh(now_ms, timeout_ms) {
            AgentStatus::Online
        } else {
            AgentStatus::Offline
        }
    }

    /// Apply an operator's patch.
    pub fn patch(&mut self, patch: AgentPatch) -> Result<(), FieldError> {
        if let Some(Some(cores)) = patch.cores_override {
            validation::cores("cores_override", cores)?;
        }
        if let Some(Some(memory)) = patch.memory_override {
            validation::int64("memory_override", memory)?;
        }
        if let Some(enabled) = patch.enabled {
            self.enabled = enabled;
            // Enabling is the approval; a later disable is an ordinary one.
            self.pending_approval = false;
        }
        if let Some(cores) = patch.cores_override {
            self.cores_override = cores;
        }
        if let Some(memory) = patch.memory_override {
            self.memory_override = memory;
        }
        Ok(())
    }
}

/// What a check-in presents against what the agent's record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialCheck {
    /// The record holds no credential (a new agent, one stored before credentials existed,
    /// or one an operator reset): the check-in takes a new one.
    Issue,
    /// The presented credential is the agent's.
    Valid,
    /// The record holds a credential and none was presented.
    Missing,
    /// The presented credential is not the agent's.
    Wrong,
}

/// Whether a heartbeat at `last_heartbeat_ms` is within `timeout_ms` of `now_ms`.
pub fn heartbeat_is_fresh(last_heartbeat_ms: u64, now_ms: u64, timeout_ms: u64) -> bool {
    now_ms.saturating_sub(last_heartbeat_ms) <= timeout_ms
}

/// The SHA-256 (hex) a credential is stored as.
pub fn credential_hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

impl Agent {
    /// Judge the credential a check-in presented (compared in constant time).
    pub fn check_credential(&self, presented: Option<&str>) -> CredentialCheck {
        let Some(stored) = &self.credential_sha256 else {
            return CredentialCheck::Issue;
        };
        let Some(presented) = presented else {
            return CredentialCheck::Missing;
        };
        let offered = credential_hash(presented);
        let (a, b) = (stored.as_bytes(), offered.as_bytes());
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same {
            CredentialCheck::Valid
        } else {
            CredentialCheck::Wrong
        }
    }
}

/// The body of `POST /agents/checkin`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentCheckin {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9._-]+$", max_length = 253)
    )]
    /// The agent's host name: its identity across check-ins.
    pub hostname: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9._-]+$", max_length = 253)
    )]
    /// Where users (without the proxy) and the proxy reach the agent.
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 100000.0))]
    /// CPU cores.
    pub cores: f64,
    /// Memory, bytes.
    pub memory: u64,
    /// The most sessions the agent runs at once.
    pub max_sessions: u32,
    pub gpus: Option<u32>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    /// Current CPU load, 0 to 1.
    pub cpu_load: Option<f64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    /// Current memory load, 0 to 1.
    pub memory_load: Option<f64>,
}

impl AgentCheckin {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::host("hostname", &self.hostname)?;
        validation::host("address", &self.address)?;
        if self.port == 0 {
            return Err(FieldError::new("port", "a port from 1 to 65535"));
        }
        validation::cores("cores", self.cores)?;
        validation::int64("memory", self.memory)?;
        validation::int32("max_sessions", self.max_sessions)?;
        validation::int32("gpus", self.gpus.unwrap_or(0))?;
        if let Some(load) = self.cpu_load {
            validation::fraction("cpu_load", load)?;
        }
        if let Some(load) = self.memory_load {
            validation::fraction("memory_load", load)?;
        }
        Ok(())
    }
}

/// The body of `PATCH /agents/{id}`. `null` clears an override.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub enabled: Option<bool>,
    /// Cores to use instead of the reported ones; `null` to clear.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0.0, maximum = 100000.0))]
    pub cores_override: Option<Option<f64>>,
    /// Memory (bytes) to use instead of the reported amount; `null` to clear.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub memory_override: Option<Option<u64>>,
}

use super::validation::present;

#[cfg(test)]
mod tests {
    use super::*;

    fn checkin() -> AgentCheckin {
        AgentCheckin {
            hostname: "agent-1".into(),
            address: "10.0.0.1".into(),
            port: 443,
            cores: 8.0,
            memory: 16 << 30,
            max_sessions: 10,
            gpus: None,
            cpu_load: Some(0.25),
            memory_load: None,
        }
    }

    #[test]
    fn overrides_replace_reported_totals_and_null_clears_them() {
        let mut agent = Agent::register(Uuid::nil(), checkin(), "east", 1000, false);
        assert_eq!(agent.capacity().millicores, 8000);
        let patch: AgentPatch =
            serde_json::from_str(r#"{"cores_override": 2.5, "memory_override": 1024}"#).unwrap();
        agent.patch(patch).unwrap();
        assert_eq!(agent.capacity().millicores, 2500);
        assert_eq!(agent.capacity().memory, 1024);
        let patch: AgentPatch = serde_json::from_str(r#"{"cores_override": null}"#).unwrap();
        agent.patch(patch).unwrap();
        assert_eq!(agent.capacity().millicores, 8000);
        assert_eq!(agent.capacity().memory, 1024, "an absent field stays");
        let bad: AgentPatch = serde_json::from_str(r#"{"cores_override": -1}"#).unwrap();
        assert_eq!(agent.patch(bad).unwrap_err().field, "cores_override");
    }

    #[test]
    fn status_follows_enabled_and_heartbeat() {
        let mut agent = Agent::register(Uuid::nil(), checkin(), "east", 1000, false);
        assert_eq!(agent.status(61_000, 60_000), AgentStatus::Online);
        assert_eq!(agent.status(61_001, 60_000), AgentStatus::Offline);
        agent.enabled = false;
        assert_eq!(agent.status(1000, 60_000), AgentStatus::Disabled);
    }

    #[test]
    fn an_agent_awaiting_approval_is_pending_until_enabled() {
        let mut agent = Agent::register(Uuid::nil(), checkin(), "east", 1000, true);
        assert!(!agent.enabled);
        assert_eq!(agent.status(1000, 60_000), AgentStatus::Pending);
        agent
            .patch(AgentPatch {
                enabled: Some(true),
                ..AgentPatch::default()
            })
            .unwrap();
        assert_eq!(agent.status(1000, 60_000), AgentStatus::Online);
        agent
            .patch(AgentPatch {
                enabled: Some(false),
                ..AgentPatch::default()
            })
            .unwrap();
        assert_eq!(agent.status(1000, 60_000), AgentStatus::Disabled);
    }

    #[test]
    fn a_credential_is_checked_against_its_hash() {
        let mut agent = Agent::register(Uuid::nil(), checkin(), "east", 1000, false);
        assert_eq!(agent.check_credential(None), CredentialCheck::Issue);
        assert_eq!(
            agent.check_credential(Some("anything")),
            CredentialCheck::Issue
        );
        agent.credential_sha256 = Some(credential_hash("s3cret"));
        assert_ne!(agent.credential_sha256.as_deref(), Some("s3cret"));
        assert_eq!(
            agent.check_credential(Some("s3cret")),
            CredentialCheck::Valid
        );
        assert_eq!(
            agent.check_credential(Some("s3cres")),
            CredentialCheck::Wrong
        );
        assert_eq!(agent.check_credential(Some("")), CredentialCheck::Wrong);
        assert_eq!(agent.check_credential(None), CredentialCheck::Missing);
    }

    #[test]
    fn check_ins_validate_and_move_zones() {
        assert_eq!(checkin().validate(), Ok(()));
        let bad = AgentCheckin {
            cpu_load: Some(2.0),
            ..checkin()
        };
        assert_eq!(bad.validate().unwrap_err().field, "cpu_load");
        let bad = AgentCheckin {
            port: 0,
            ..checkin()
        };
        assert_eq!(bad.validate().unwrap_err().field, "port");
        let mut agent = Agent::register(Uuid::nil(), checkin(), "east", 1000, false);
        agent.check_in(checkin(), "west", 2000);
        assert_eq!(
            (agent.zone.as_str(), agent.last_heartbeat_ms),
            ("west", 2000)
        );
    }
}
