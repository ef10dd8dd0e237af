//! Session operations: placement (rank, reserve, record, commit) and release.

use std::time::Instant;

use uuid::Uuid;

use super::{Broker, BrokerError, now_ms};
use crate::domain::capacity::{Capacity, Demand};
use crate::domain::ranking::{CandidateColumns, PlacementRequest, Ranking};
use crate::domain::session::{Session, SessionRequest};
use crate::domain::zone::RequestOrigin;
use crate::placement::{self, AgentSnapshot, Candidate, Ranker, Reserver, StrategyFault};
use crate::plugins::{Registry, StrategyCallError};
use crate::store::{Store, StoreError};

impl Broker {
    /// Place a session of `request.image` for `request.user`, who came in through a
    /// listener of `user_zone` at `origin`. Answers once the session is on disk.
    pub async fn request_session(
        &self,
        user_zone: &str,
        origin: &RequestOrigin,
        request: SessionRequest,
    ) -> Result<Session, BrokerError> {
        request.validate()?;
        let started = Instant::now();
        let (zone, image, candidates) = {
            let inventory = self.read();
            let image = inventory
                .images
                .get(&request.image)
                .filter(|image| image.enabled)
                .cloned()
                .ok_or_else(|| BrokerError::NotFound {
                    kind: "enabled image",
                    key: request.image.clone(),
                })?;
            let zone =
                inventory
                    .zones
                    .get(user_zone)
                    .cloned()
                    .ok_or_else(|| BrokerError::NotFound {
                        kind: "zone",
                        key: user_zone.to_string(),
                    })?;
            let user_sessions = inventory.user_sessions.get(&request.user);
            let agents = inventory.agents.values().map(|state| AgentSnapshot {
                agent: &state.agent,
                usage: state.usage,
                user_sessions: user_sessions
                    .and_then(|per_agent| per_agent.get(&state.agent.id))
                    .copied()
                    .unwrap_or(0),
            });
            let candidates =
                placement::candidates(agents, user_zone, &image, now_ms(), self.agent_timeout_ms());
            (zone, image, candidates)
        };

        let demand = image.demand();
        let user_key = self.store.user_key(&request.user);
        let mut ranker = RegistryRanker(&self.registry);
        let mut reserver = StoreReserver {
            store: &self.store,
            reserved: None,
        };
        let report = run_blocking(|| {
            placement::place(
                &zone,
                &demand,
                user_key,
                candidates,
                &mut ranker,
                &mut reserver,
            )
        })?;
        for fault in &report.faults {
            self.metrics
                .fell_back(user_zone, &zone.load_balance_strategy, fault.code);
            tracing::warn!(
                zone = user_zone,
                strategy = zone.load_balance_strategy,
                code = fault.code,
                "strategy failed, ranked by the built-in least-load: {}",
                fault.message
            );
        }
        let Some((agent_id, scope)) = report.placed else {
            self.metrics.no_capacity(user_zone);
            return Err(BrokerError::NoCapacity { image: image.name });
        };
        let usage = reserver.reserved.expect("a placement reserved");

        let session = {
            let mut inventory = self.write();
            let session_id = Uuid::new_v4();
            let agent = match inventory.agents.get(&agent_id) {
                Some(state) => state.agent.clone(),
                None => {
                    // Deleted while we placed: give the reservation back.
                    drop(inventory);
                    self.store.release(agent_id, &demand)?;
                    return Err(BrokerError::NoCapacity { image: image.name });
                }
            };
            // The proxy of the agent's zone fronts its sessions.
            let agent_zone = inventory.zones.get(&agent.zone).unwrap_or(&zone);
            let session = Session {
                id: session_id,
                user: request.user,
                image: image.name.clone(),
                zone: agent.zone.clone(),
                agent: agent.id,
                agent_hostname: agent.hostname.clone(),
                connection: agent_zone.connection(
                    origin,
                    &session_id.to_string(),
                    &agent.address,
                    agent.port,
                ),
                demand,
                created_at_ms: now_ms(),
            };
            if let Err(error) = self.store.put_session(&session) {
                drop(inventory);
                self.store.release(agent_id, &demand)?;
                return Err(error.into());
            }
            inventory.set_usage(agent_id, usage);
            inventory.add_session(session.clone());
            session
        };
        self.metrics
            .placed(user_zone, &zone.load_balance_strategy, scope.as_str());
        self.metrics
            .placement_took(user_zone, started.elapsed().as_secs_f64());
        self.commit().await?;
        tracing::info!(
            session = %session.id,
            agent = %session.agent,
            zone = session.zone,
            scope = scope.as_str(),
            "session placed"
        );
        Ok(session)
    }

    pub fn sessions(&self) -> Vec<Session> {
        let mut sessions: Vec<Session> = self.read().sessions.values().cloned().collect();
        sessions.sort_by_key(|s| (s.created_at_ms, s.id));
        sessions
    }

    pub fn session(&self, id: Uuid) -> Result<Session, BrokerError> {
        self.read()
            .sessions
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// End a session and free what it reserved.
    pub async fn delete_session(&self, id: Uuid) -> Result<Session, BrokerError> {
        let session = {
            let mut inventory = self.write();
            if !inventory.sessions.contains_key(&id) {
                return Err(not_found(id));
            }
            self.store.remove_session(id)?;
            let session = inventory.remove_session(id).expect("checked above");
            let usage = self.store.release(session.agent, &session.demand)?;
            inventory.set_usage(session.agent, usage);
            session
        };
        self.commit().await?;
        tracing::info!(session = %id, agent = %session.agent, "session ended");
        Ok(session)
    }
}

fn not_found(id: Uuid) -> BrokerError {
    BrokerError::NotFound {
        kind: "session",
        key: id.to_string(),
    }
}

/// Run CPU-bound, synchronous work (a strategy call) from async code without starving the
/// runtime: on a multi-threaded runtime the worker hands its other tasks off first.
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Strategies from the plugin registry.
struct RegistryRanker<'a>(&'a Registry);

impl Ranker for RegistryRanker<'_> {
    fn rank(
        &mut self,
        strategy: &str,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, StrategyFault> {
        self.0
            .rank(strategy, request, candidates)
            .map_err(|error| StrategyFault {
                code: match &error {
                    StrategyCallError::NotFound(_) => "not_found",
                    StrategyCallError::Call(call) => call.code(),
                },
                message: error.to_string(),
            })
    }
}

/// Reservations by compare-and-swap in the store; remembers the usage it left.
struct StoreReserver<'a> {
    store: &'a Store,
    reserved: Option<crate::domain::capacity::Usage>,
}

impl Reserver for StoreReserver<'_> {
    type Error = StoreError;
    fn try_reserve(&mut self, candidate: &Candidate, demand: &Demand) -> Result<bool, StoreError> {
        let capacity: &Capacity = &candidate.capacity;
        match self.store.try_reserve(candidate.agent, capacity, demand)? {
            Some(usage) => {
                self.reserved = Some(usage);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
