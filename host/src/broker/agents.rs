//! Agent operations: check-in (creates or updates by host name), operator patches.

use uuid::Uuid;

use super::{Broker, BrokerError, now_ms};
use crate::domain::agent::{Agent, AgentCheckin, AgentPatch, CredentialCheck, credential_hash};
use crate::domain::capacity::Usage;
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
    ///
    /// Cost: a host-name lookup and an id lookup (O(log agents)), a refresh of the agent's
    /// placement slot (a binary search in its zone's array; a shift of that array when the
    /// agent joins the zone), one record write, and a wait for a flush shared with
    /// concurrent writes. The write lock is held for the in-memory work and the sled write
    /// only, never for the flush.
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
            let existing = inventory.agents.id_of_hostname(&checkin.hostname);
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
            inventory.agents.insert(state.clone());
            CheckedIn { state, credential }
        };
        self.commit().await?;
        Ok(checked_in)
    }

    /// Forget an agent's credential: its next check-in takes a new one (and the old one is
    /// refused from then on).
    pub async fn reset_agent_credential(&self, id: Uuid) -> Result<AgentState, BrokerError> {
        let state = self.change_agent(id, |agent| {
            agent.credential_sha256 = None;
            Ok(())
        })?;
        self.commit().await?;
        tracing::info!(agent = %id, "agent credential reset: its next check-in takes a new one");
        Ok(state)
    }

    /// A page of the agents in the order of their ids (every agent without `limit`), and
    /// the id to continue after if more remain. O(log agents + limit) per page.
    pub fn agents(
        &self,
        after: Option<Uuid>,
        limit: Option<usize>,
    ) -> (Vec<AgentState>, Option<Uuid>) {
        let inventory = self.read();
        let (page, more) = inventory
            .agents
            .page(after.as_ref(), limit.unwrap_or(usize::MAX));
        let next = more.then(|| page.last().map(|a| a.agent.id)).flatten();
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
        let state = self.change_agent(id, |agent| Ok(agent.patch(patch)?))?;
        self.commit().await?;
        Ok(state)
    }

    /// Change agent `id`'s record with `change` (which must not move it to another zone or
    /// host name), write it to the store and the inventory, and show it. Not yet durable.
    fn change_agent(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Agent) -> Result<(), BrokerError>,
    ) -> Result<AgentState, BrokerError> {
        let mut inventory = self.write();
        let state = inventory.agents.get(&id).ok_or_else(|| not_found(id))?;
        let mut agent = state.agent.clone();
        change(&mut agent)?;
        self.store.put_agent(&agent)?;
        let changed = inventory.agents.update(&id, |state| {
            state.agent = agent;
            state.clone()
        });
        Ok(changed.expect("found above, under the same lock"))
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
            self.store.delete_agent(id)?;
            inventory.agents.remove(&id);
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
