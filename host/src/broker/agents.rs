//! Agent operations: check-in (creates or updates by host name), operator patches.

use uuid::Uuid;

use super::{Broker, BrokerError, now_ms};
use crate::domain::agent::{Agent, AgentCheckin, AgentPatch};
use crate::domain::capacity::Usage;

/// An agent and what its sessions reserve.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub agent: Agent,
    pub usage: Usage,
}

impl Broker {
    /// Record a check-in through a listener of `zone`: create the agent (by host name) or
    /// update it, move it to `zone`, refresh its heartbeat.
    pub async fn check_in(
        &self,
        zone: &str,
        checkin: AgentCheckin,
    ) -> Result<AgentState, BrokerError> {
        checkin.validate()?;
        let now = now_ms();
        let state = {
            let mut inventory = self.write();
            let existing = inventory.agent_by_hostname.get(&checkin.hostname).copied();
            let state = match existing.and_then(|id| inventory.agents.get(&id)) {
                Some(state) => {
                    let mut agent = state.agent.clone();
                    if agent.zone != zone {
                        tracing::info!(agent = %agent.id, from = agent.zone, to = zone, "agent moved zones");
                    }
                    agent.check_in(checkin, zone, now);
                    AgentState {
                        agent,
                        usage: state.usage,
                    }
                }
                None => {
                    let agent = Agent::register(Uuid::new_v4(), checkin, zone, now);
                    tracing::info!(agent = %agent.id, hostname = agent.hostname, zone, "agent registered");
                    AgentState {
                        agent,
                        usage: Usage::default(),
                    }
                }
            };
            self.store.put_agent(&state.agent)?;
            inventory
                .agent_by_hostname
                .insert(state.agent.hostname.clone(), state.agent.id);
            inventory.agents.insert(state.agent.id, state.clone());
            state
        };
        self.commit().await?;
        Ok(state)
    }

    pub fn agents(&self) -> Vec<AgentState> {
        self.read().agents.values().cloned().collect()
    }

    pub fn agent(&self, id: Uuid) -> Result<AgentState, BrokerError> {
        self.read()
            .agents
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    pub async fn patch_agent(
        &self,
        id: Uuid,
        patch: AgentPatch,
    ) -> Result<AgentState, BrokerError> {
        let state = {
            let mut inventory = self.write();
            let state = inventory.agents.get_mut(&id).ok_or_else(|| not_found(id))?;
            let mut agent = state.agent.clone();
            agent.patch(patch)?;
            self.store.put_agent(&agent)?;
            state.agent = agent;
            state.clone()
        };
        self.commit().await?;
        Ok(state)
    }

    /// Forget an agent that runs no sessions.
    pub async fn delete_agent(&self, id: Uuid) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            let state = inventory.agents.get(&id).ok_or_else(|| not_found(id))?;
            if state.usage.sessions > 0 {
                return Err(BrokerError::Conflict {
                    code: "agent_in_use",
                    message: format!("agent `{id}` runs {} session(s)", state.usage.sessions),
                });
            }
            let hostname = state.agent.hostname.clone();
            self.store.delete_agent(id)?;
            inventory.agents.remove(&id);
            inventory.agent_by_hostname.remove(&hostname);
        }
        self.commit().await?;
        Ok(())
    }

    /// How long an agent may stay silent and remain a candidate, in milliseconds.
    pub fn agent_timeout(&self) -> u64 {
        self.agent_timeout_ms()
    }
}

fn not_found(id: Uuid) -> BrokerError {
    BrokerError::NotFound {
        kind: "agent",
        key: id.to_string(),
    }
}
