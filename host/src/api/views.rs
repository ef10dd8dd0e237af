//! What the API shows of stored records: computed fields added, timestamps in RFC 3339.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::broker::AgentState;
use crate::domain::agent::AgentStatus;
use crate::domain::capacity::cores;
use crate::domain::session::{HostKind, Session};
use crate::domain::zone::Connection;

use crate::domain::timestamp::rfc3339;

/// An agent: what it reported, what the operator set, what its sessions reserve.
#[derive(Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    /// The zone of the listener it last checked in through.
    pub zone: String,
    /// Reported cores.
    pub cores: f64,
    /// Reported memory, bytes.
    pub memory: u64,
    pub gpus: u32,
    pub max_sessions: u32,
    pub cpu_load: f32,
    pub memory_load: f32,
    pub enabled: bool,
    pub cores_override: Option<f64>,
    pub memory_override: Option<u64>,
    /// Sessions running on it.
    pub sessions: u32,
    pub cores_reserved: f64,
    /// Bytes.
    pub memory_reserved: u64,
    pub gpus_reserved: u32,
    pub last_heartbeat: String,
    pub status: AgentStatus,
    pub created_at: String,
}

/// The answer to a check-in: the agent, and its credential if this check-in issued one.
#[derive(Serialize, ToSchema)]
pub struct AgentCheckinAnswer {
    #[serde(flatten)]
    pub agent: AgentView,
    /// Issued by the first check-in of a host name (or the first after a reset), shown only
    /// here and only once: send it in the `Zonebroker-Agent-Credential` header of every later
    /// check-in. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl AgentView {
    pub fn new(state: AgentState, now_ms: u64, timeout_ms: u64) -> Self {
        let AgentState { agent, usage } = state;
        AgentView {
            status: agent.status(now_ms, timeout_ms),
            id: agent.id,
            hostname: agent.hostname,
            address: agent.address,
            port: agent.port,
            zone: agent.zone,
            cores: agent.cores,
            memory: agent.memory,
            gpus: agent.gpus,
            max_sessions: agent.max_sessions,
            cpu_load: agent.cpu_load,
            memory_load: agent.memory_load,
            enabled: agent.enabled,
            cores_override: agent.cores_override,
            memory_override: agent.memory_override,
            sessions: usage.sessions,
            cores_reserved: cores(usage.millicores),
            memory_reserved: usage.memory,
            gpus_reserved: usage.gpus,
            last_heartbeat: rfc3339(agent.last_heartbeat_ms),
            created_at: rfc3339(agent.created_at_ms),
        }
    }
}

/// A session and how to reach it.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub user: String,
    /// The image (container sessions).
    pub image: Option<String>,
    /// The workspace it was requested as.
    pub workspace: Option<String>,
    /// Whether it runs on an agent or a pool server.
    pub host_kind: HostKind,
    /// The zone of the agent or server it runs on.
    pub zone: String,
    /// The agent's (or server's) id.
    pub agent: Uuid,
    pub agent_hostname: String,
    pub connection: Connection,
    /// For `local-client` workspaces: where to fetch the `.rdp` file.
    pub rdp_file: Option<String>,
    /// Cores it reserves.
    pub cores: f64,
    /// Memory it reserves, bytes.
    pub memory: u64,
    pub gpus: u32,
    pub created_at: String,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        SessionView {
            id: s.id,
            user: s.user,
            image: s.image,
            workspace: s.workspace,
            host_kind: s.host_kind,
            rdp_file: s
                .rdp
                .as_ref()
                .map(|_| format!("/api/v1/sessions/{}/rdp", s.id)),
            zone: s.zone,
            agent: s.agent,
            agent_hostname: s.agent_hostname,
            connection: s.connection,
            cores: cores(s.demand.millicores),
            memory: s.demand.memory,
            gpus: s.demand.gpus,
            created_at: rfc3339(s.created_at_ms),
        }
    }
}
