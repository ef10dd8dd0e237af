//! Agent operations: check-in (creates or updates by host name), operator patches.

use uuid::Uuid;

use super::{Broker, BrokerError, now_ms};
use crate::domain::agent::{Agent, AgentCheckin, AgentPatch, CredentialCheck, credential_hash};
use crate::domain::capacity::Usage;
use crate::domain::page::page;
use crate::domain::secret::Secret;

/// What a check-in answers: the agent, and its new credential if this check-in issued one.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedIn {
    pub state: AgentState,
    /// 32 random bytes in hex, shown once; the record keeps only its SHA-256.
    pub credential: Option<Secret>,
}

/// A new agent credential: 32 random bytes, hex.
fn new_credential() -> Result<String, BrokerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| BrokerError::Unavailable {
        code: "no_randomness",
        message: format!("cannot generate an agent credential: {e}"),
    })?;
    Ok(hex::encode(bytes))
}

/// An agent and what its sessions reserve.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub agent: Agent,
    pub usage: Usage,
}

impl Broker {
    /// Record a check-in through a listener of `zone`: create the agent (by host name) or
    /// update it, move it to `zone`, refresh its heartbeat.
    ///
    /// An agent whose record holds a credential must present it (`credential`); one without
    /// (new, stored before credentials existed, or reset by an operator) takes a new one,
    /// answered once in [`CheckedIn::credential`] and stored only as its SHA-256.
    pub async fn check_in(
        &self,
        zone: &str,
        checkin: AgentCheckin,
        credential: Option<&str>,
    ) -> Result<CheckedIn, BrokerError> {
        checkin.validate()?;
        let now = now_ms();
        let checked_in = {
            let mut inventory = self.write();
            let existing = inventory.agent_by_hostname.get(&checkin.hostname).copied();
            let (mut agent, usage) = match existing.and_then(|id| inventory.agents.get(&id)) {
                Some(state) => {
                    let mut agent = state.agent.clone();
                    match agent.check_credential(credential) {
                        CredentialCheck::Valid | CredentialCheck::Issue => {}
                        refused @ (CredentialCheck::Missing | CredentialCheck::Wrong) => {
                            let missing = refused == CredentialCheck::Missing;
                            tracing::warn!(
                                agent = %agent.id,
                                hostname = agent.hostname,
                                offered_address = checkin.address,
                                credential = if missing { "missing" } else { "wrong" },
                                "agent check-in refused"
                            );
                            return Err(BrokerError::AgentCredential { missing });
                        }
                    }
                    if agent.zone != zone {
                        tracing::info!(agent = %agent.id, from = agent.zone, to = zone, "agent moved zones");
                    }
                    agent.check_in(checkin, zone, now);
                    (agent, state.usage)
                }
                None => {
                    let pending = self.config.require_agent_approval;
                    let agent = Agent::register(Uuid::new_v4(), checkin, zone, now, pending);
                    tracing::info!(agent = %agent.id, hostname = agent.hostname, zone, pending_approval = pending, "agent registered");
                    (agent, Usage::default())
                }
            };
            let credential = match agent.credential_sha256 {
                Some(_) => None,
                None => {
                    let credential = new_credential()?;
                    agent.credential_sha256 = Some(credential_hash(&credential));
                    tracing::info!(agent = %agent.id, "agent credential issued");
                    Some(Secret::new(credential))
                }
            };
            let state = AgentState { agent, usage };
            self.store.put_agent(&state.agent)?;
            inventory
                .agent_by_hostname
                .insert(state.agent.hostname.clone(), state.agent.id);
            inventory.agents.insert(state.agent.id, state.clone());
            CheckedIn { state, credential }
        };
        self.commit().await?;
        Ok(checked_in)
    }

    /// Forget an agent's credential: its next check-in takes a new one (and the old one is
    /// refused from then on).
    pub async fn reset_agent_credential(&self, id: Uuid) -> Result<AgentState, BrokerError> {
        let state = {
            let mut inventory = self.write();
            let state = inventory.agents.get_mut(&id).ok_or_else(|| not_found(id))?;
            let mut agent = state.agent.clone();
            agent.credential_sha256 = None;
            self.store.put_agent(&agent)?;
            state.agent = agent;
            state.clone()
        };
        self.commit().await?;
        tracing::info!(agent = %id, "agent credential reset: its next check-in takes a new one");
        Ok(state)
    }

    /// A page of the agents in the order of their ids (every agent without `limit`), and
    /// the id to continue after if more remain. O(agents) per page.
    pub fn agents(
        &self,
        after: Option<Uuid>,
        limit: Option<usize>,
    ) -> (Vec<AgentState>, Option<Uuid>) {
        let inventory = self.read();
        let limit = limit.unwrap_or(usize::MAX);
        let (page, next) = page(
            inventory.agents.values(),
            |a| a.agent.id,
            after.as_ref(),
            limit,
        );
        (page.into_iter().cloned().collect(), next)
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
