//! Session operations: placement (rank, reserve, record, commit) and release.

use std::time::Instant;

use uuid::Uuid;

use super::{Broker, BrokerError, Inventory, now_ms, run_blocking};
use crate::domain::autoscale::{CredentialType, RdpClient, Workspace, WorkspaceType};
use crate::domain::capacity::{Demand, Usage};
use crate::domain::image::Image;
use crate::domain::page::page;
use crate::domain::ranking::{CandidateColumns, PlacementRequest, Ranking};
use crate::domain::session::{HostKind, RdpFile};
use crate::domain::session::{Session, SessionHost, SessionOf, SessionPosition, SessionRequest};
use crate::domain::zone::RequestOrigin;
use crate::domain::zone::{Zone, host_port};
use crate::placement::{
    self, AgentSlot, Candidate, CandidateSource, Elsewhere, Ranker, Reserver, SERVER_SESSION,
    Scope, ServerSnapshot, ShadowCase, StrategyFault,
};
use crate::plugins::StrategyCallError;
use crate::store::Offer;

impl Broker {
    /// Place a session of `request.image` (or `request.workspace`) for `request.user`, who
    /// came in through a listener of `user_zone` at `origin`. Answers once the session is on
    /// disk.
    ///
    /// Cost: a scan of the user's zone's agent slots (O(agents in that zone), none of any
    /// other zone's), one strategy call over the candidates with room, one compare-and-swap
    /// per candidate tried, one session write, and a wait for a flush shared with every
    /// write that arrived meanwhile (group commit). The other zones' slots are read only
    /// when the user's zone could not take the session and may search elsewhere.
    pub async fn request_session(
        &self,
        user_zone: &str,
        origin: &RequestOrigin,
        request: SessionRequest,
    ) -> Result<Session, BrokerError> {
        request.validate()?;
        let (image_name, workspace) = match (&request.image, &request.workspace) {
            (Some(image), _) => (image.clone(), None),
            (None, Some(name)) => {
                let workspace = self
                    .read()
                    .workspaces
                    .get(name)
                    .filter(|w| w.enabled)
                    .cloned()
                    .ok_or_else(|| BrokerError::NotFound {
                        kind: "enabled workspace",
                        key: name.clone(),
                    })?;
                match workspace.workspace_type {
                    WorkspaceType::Pool => {
                        return self
                            .place_on_pool(user_zone, origin, &request.user, &workspace)
                            .await;
                    }
                    WorkspaceType::Container => {
                        (workspace.image.clone().unwrap_or_default(), Some(workspace))
                    }
                }
            }
            (None, None) => unreachable!("validated"),
        };
        let started = Instant::now();
        let now = now_ms();
        let (zone, image, same_zone) = {
            let inventory = self.read();
            let image = inventory
                .images
                .get(&image_name)
                .filter(|image| image.enabled)
                .cloned()
                .ok_or_else(|| BrokerError::NotFound {
                    kind: "enabled image",
                    key: image_name.clone(),
                })?;
            let zone = inventory.zone_or_not_found(user_zone)?;
            let (here, _) = placement::image_zones(&image, user_zone);
            let same_zone = if here {
                inventory.agent_candidates(
                    inventory.agents.slots_in(user_zone),
                    &image,
                    &request.user,
                    now,
                    self.agent_timeout_ms(),
                )
            } else {
                Vec::new()
            };
            (zone, image, same_zone)
        };
        // The other zones are read only if the user's cannot take the session.
        let other_zones = || {
            let inventory = self.read();
            let agents: Box<dyn Iterator<Item = &AgentSlot>> =
                match placement::image_zones(&image, user_zone).1 {
                    Elsewhere::Nowhere => return Vec::new(),
                    Elsewhere::Only(zone) => Box::new(inventory.agents.slots_in(zone).iter()),
                    Elsewhere::AnyZone => Box::new(inventory.agents.slots_outside(user_zone)),
                };
            inventory.agent_candidates(agents, &image, &request.user, now, self.agent_timeout_ms())
        };
        let mut candidates = LazyCandidates {
            same_zone: Some(same_zone),
            other_zones,
        };

        let demand = image.demand();
        let session_id = Uuid::new_v4();
        // The session as it would run on `candidate`: the proxy of the agent's zone fronts
        // its sessions.
        let offer = |inventory: &Inventory, candidate: &Candidate| {
            let agent = &inventory.agents.get(&candidate.agent)?.agent;
            let agent_zone = inventory.zones.get(&agent.zone).unwrap_or(&zone);
            Some(Session::placed(
                session_id,
                SessionOf {
                    user: request.user.clone(),
                    image: Some(image.name.clone()),
                    workspace: workspace.as_ref().map(|w| w.name.clone()),
                    demand,
                    rdp: None,
                },
                SessionHost {
                    kind: HostKind::Agent,
                    id: agent.id,
                    hostname: &agent.hostname,
                    zone: &agent.zone,
                    address: &agent.address,
                    port: agent.port,
                },
                agent_zone,
                origin,
                now,
            ))
        };
        let placed = self
            .rank_and_reserve(
                user_zone,
                &zone,
                &demand,
                &request.user,
                &mut candidates,
                offer,
            )
            .await?;
        let Some((session, scope, usage)) = placed else {
            return Err(BrokerError::NoCapacity {
                what: format!("a session of `{}`", image.name),
            });
        };
        let agent_id = session.agent;
        let applied = {
            let mut inventory = self.write();
            let present = inventory.agents.get(&agent_id).is_some();
            if present {
                inventory.set_usage(agent_id, self.usage_now(agent_id, usage));
                inventory.add_session(session.clone());
            }
            present
        };
        if !applied {
            // Deleted while we placed: give the reservation back.
            self.store.end_session(&session, false, now_ms()).await?;
            return Err(BrokerError::NoCapacity {
                what: format!("a session of `{}`", image.name),
            });
        }
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

    /// Place a session of pool workspace `workspace` on a running server of its pool with a
    /// free slot: same zone first, other zones as for agents, ranked by the zone's strategy,
    /// reserved atomically. A non-reusable server is spent by its first session.
    async fn place_on_pool(
        &self,
        user_zone: &str,
        origin: &RequestOrigin,
        user: &str,
        workspace: &Workspace,
    ) -> Result<Session, BrokerError> {
        let pool = workspace.pool.clone().unwrap_or_default();
        let demand = SERVER_SESSION;
        let (zone, same_zone) = {
            let inventory = self.read();
            let zone = inventory.zone_or_not_found(user_zone)?;
            let same_zone = inventory.server_candidates(&pool, Some(user_zone), None, user);
            (zone, same_zone)
        };
        let mut candidates = LazyCandidates {
            same_zone: Some(same_zone),
            other_zones: || {
                self.read()
                    .server_candidates(&pool, None, Some(user_zone), user)
            },
        };
        let session_id = Uuid::new_v4();
        let now = now_ms();
        // The session as it would run on `candidate`, unless the server stopped taking
        // sessions since the snapshot.
        let offer = |inventory: &Inventory, candidate: &Candidate| {
            let server = &inventory
                .servers
                .get(&candidate.agent)
                .filter(|e| e.server.takes_sessions())?
                .server;
            let config = server
                .config
                .as_ref()
                .and_then(|name| inventory.autoscale_configs.get(name));
            let server_zone = inventory.zones.get(&server.zone).unwrap_or(&zone);
            let address = server.address.clone().unwrap_or_default();
            let rdp = (workspace.rdp_client == RdpClient::LocalClient).then(|| RdpFile {
                full_address: host_port(&address, server.port),
                username: match config {
                    Some(c) if c.credential_type == CredentialType::Static => {
                        c.connection_username.clone()
                    }
                    _ => Some(user.to_string()),
                },
                gateway_hostname: server_zone.proxy_authority(origin),
            });
            Some(Session::placed(
                session_id,
                SessionOf {
                    user: user.to_string(),
                    image: None,
                    workspace: Some(workspace.name.clone()),
                    demand,
                    rdp,
                },
                SessionHost {
                    kind: HostKind::Server,
                    id: server.id,
                    hostname: &server.hostname,
                    zone: &server.zone,
                    address: &address,
                    port: server.port,
                },
                server_zone,
                origin,
                now,
            ))
        };
        let placed = self
            .rank_and_reserve(user_zone, &zone, &demand, user, &mut candidates, offer)
            .await?;
        let no_capacity = || BrokerError::NoCapacity {
            what: format!(
                "a session of workspace `{}` (pool `{pool}`)",
                workspace.name
            ),
        };
        let Some((session, scope, usage)) = placed else {
            // Demand the pool cannot meet: let the reconcile loop look now.
            self.demand_changed_in_pool(&pool);
            return Err(no_capacity());
        };
        let server_id = session.agent;
        let applied = {
            let mut inventory = self.write();
            // Gone, or closed (spent, draining, lost) since the reservation: it takes no
            // new session, whatever the snapshot said.
            match inventory
                .servers
                .get_mut(&server_id)
                .filter(|e| e.server.takes_sessions())
            {
                Some(entry) => {
                    entry.server.session_placed();
                    entry.usage = self.usage_now(server_id, usage);
                    inventory.add_session(session.clone());
                    true
                }
                None => false,
            }
        };
        if !applied {
            self.store.end_session(&session, false, now_ms()).await?;
            return Err(no_capacity());
        }
        self.metrics
            .placed(user_zone, &zone.load_balance_strategy, scope.as_str());
        self.commit().await?;
        self.demand_changed_on_server(session.agent);
        tracing::info!(
            session = %session.id,
            server = %session.agent,
            zone = session.zone,
            pool,
            scope = scope.as_str(),
            "session placed on a pool server"
        );
        Ok(session)
    }

    /// Rank `candidates` with the zone's strategy and reserve `demand` on the first that
    /// still has room, recording the session `offer` makes for it (in the store: the caller
    /// applies it to the view); strategy faults are logged and counted. Holds no lock while
    /// it waits for the store.
    async fn rank_and_reserve(
        &self,
        user_zone: &str,
        zone: &Zone,
        demand: &Demand,
        user: &str,
        candidates: &mut impl CandidateSource,
        offer: impl Fn(&Inventory, &Candidate) -> Option<Session>,
    ) -> Result<Option<(Session, Scope, Usage)>, BrokerError> {
        let user_key = self.store.user_key(user);
        let mut ranker = RegistryRanker(self);
        let mut reserver = StoreReserver {
            broker: self,
            offer,
            placed: None,
        };
        let report = placement::place(
            zone,
            demand,
            user_key,
            candidates,
            &mut ranker,
            &mut reserver,
        )
        .await?;
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
        match (report.placed, reserver.placed) {
            (Some((_, scope)), Some((session, usage))) => Ok(Some((session, scope, usage))),
            _ => {
                self.metrics.no_capacity(user_zone);
                Ok(None)
            }
        }
    }

    /// A page of the sessions, oldest first, after `after` (every session without `limit`),
    /// and the position to continue after if more remain: every process's, read from the
    /// store where several share it (the view has only this process's), else from the view.
    /// O(sessions) per page.
    pub async fn sessions(
        &self,
        after: Option<SessionPosition>,
        limit: Option<usize>,
    ) -> Result<(Vec<Session>, Option<SessionPosition>), BrokerError> {
        let limit = limit.unwrap_or(usize::MAX);
        if let Some(stored) = self
            .store
            .sessions_after(after.as_ref().map(SessionPosition::parts), limit)
            .await?
        {
            let (page, next) = page(stored.iter(), SessionPosition::of, after.as_ref(), limit);
            return Ok((page.into_iter().cloned().collect(), next));
        }
        let inventory = self.read();
        let (page, next) = page(
            inventory.sessions.values(),
            SessionPosition::of,
            after.as_ref(),
            limit,
        );
        Ok((page.into_iter().cloned().collect(), next))
    }

    /// The usage of `host` to show, read under the inventory lock after a reservation: the
    /// reservation's own answer (`reserved`) may already be older than what a concurrent
    /// placement or release on the same host left, and the view must not go back in time.
    /// Every write of the view's usage reads the store under the lock, so each is as new
    /// as the last. (On a read error the reservation's answer stands until the next write.)
    pub(super) fn usage_now(&self, host: Uuid, reserved: Usage) -> Usage {
        self.store.usage_of(host).unwrap_or(reserved)
    }

    /// The session `id`: from the view, or (placed through another process sharing the
    /// store) from the store.
    pub async fn session(&self, id: Uuid) -> Result<Session, BrokerError> {
        let known = self.read().sessions.get(&id).cloned();
        match known {
            Some(session) => Ok(session),
            None => self.store.session(id).await?.ok_or_else(|| not_found(id)),
        }
    }

    /// End a session and free what it reserved. A pool server left without sessions
    /// starts its idle time (or, if spent, waits for the reconcile loop to destroy it).
    pub async fn delete_session(&self, id: Uuid) -> Result<Session, BrokerError> {
        let session = self.session(id).await?;
        let reusable = {
            let inventory = self.read();
            session.host_kind == HostKind::Agent
                || inventory
                    .servers
                    .get(&session.agent)
                    .and_then(|e| e.server.config.as_ref())
                    .and_then(|name| inventory.autoscale_configs.get(name))
                    .is_none_or(|config| config.reusable)
        };
        // A single-use server closes in the same atomic step that frees the slot: a
        // placement ranked on an older snapshot cannot reserve it.
        let now = now_ms();
        let ended = self.store.end_session(&session, !reusable, now).await?;
        {
            let mut inventory = self.write();
            inventory.remove_session(id);
            let usage = self.usage_now(session.agent, ended.usage);
            match session.host_kind {
                HostKind::Agent => inventory.set_usage(session.agent, usage),
                HostKind::Server => {
                    if let Some(entry) = inventory.servers.get_mut(&session.agent) {
                        entry.usage = usage;
                        if ended.existed {
                            entry.server.session_ended(reusable, usage.sessions, now);
                        }
                    }
                }
            }
        }
        if !ended.existed {
            // Another request ended it first.
            return Err(not_found(id));
        }
        self.commit().await?;
        if session.host_kind == HostKind::Server {
            self.demand_changed_on_server(session.agent);
        }
        tracing::info!(session = %id, host = %session.agent, "session ended");
        Ok(session)
    }
}

fn not_found(id: Uuid) -> BrokerError {
    BrokerError::NotFound {
        kind: "session",
        key: id.to_string(),
    }
}

/// Strategies from the plugin registry, called off the async workers; shadow cases to the
/// broker's shadow thread.
struct RegistryRanker<'a>(&'a Broker);

impl Ranker for RegistryRanker<'_> {
    fn rank(
        &mut self,
        strategy: &str,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, StrategyFault> {
        run_blocking(|| self.0.registry.rank(strategy, request, candidates)).map_err(|error| {
            StrategyFault {
                code: match &error {
                    StrategyCallError::NotFound(_) => "not_found",
                    StrategyCallError::Call(call) => call.code(),
                },
                message: error.to_string(),
            }
        })
    }

    fn shadow(&mut self, case: ShadowCase) {
        self.0.shadows.offer(case);
    }
}

/// How many ranked candidates the first store round offers: the first usually has room
/// (the snapshot said so), and building a session per offer costs a little each. Each
/// later round offers four times as many as the one before.
const FIRST_ROUND: usize = 2;

/// Reservations in the store, offering the ranked candidates a few at a time with the
/// session each would run; remembers the session placed and the usage it left.
struct StoreReserver<'a, F> {
    broker: &'a Broker,
    offer: F,
    placed: Option<(Session, Usage)>,
}

impl<F: Fn(&Inventory, &Candidate) -> Option<Session>> Reserver for StoreReserver<'_, F> {
    type Error = BrokerError;
    async fn reserve_first(
        &mut self,
        ranked: &[&Candidate],
        demand: &Demand,
    ) -> Result<Option<usize>, BrokerError> {
        let (mut start, mut size) = (0, FIRST_ROUND);
        while start < ranked.len() {
            let chunk = &ranked[start..ranked.len().min(start + size)];
            let round_start = start;
            (start, size) = (start + chunk.len(), size * 4);
            let (positions, offers): (Vec<usize>, Vec<Offer>) = {
                let inventory = self.broker.read();
                chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, candidate)| {
                        let session = (self.offer)(&inventory, candidate)?;
                        let offer = Offer {
                            host: candidate.agent,
                            capacity: candidate.capacity,
                            session,
                        };
                        Some((round_start + i, offer))
                    })
                    .unzip()
            };
            if let Some(reserved) = self.broker.store.place(demand, &offers).await? {
                let session = offers
                    .into_iter()
                    .nth(reserved.offer)
                    .expect("the store answers one of the offers")
                    .session;
                self.placed = Some((session, reserved.usage));
                return Ok(Some(positions[reserved.offer]));
            }
        }
        Ok(None)
    }
}

/// Rule 1's candidates for [`placement::place`]: the user's zone's, gathered before, and
/// the other zones', read from the inventory only when asked.
struct LazyCandidates<O> {
    same_zone: Option<Vec<Candidate>>,
    other_zones: O,
}

impl<O: FnMut() -> Vec<Candidate>> CandidateSource for LazyCandidates<O> {
    fn same_zone(&mut self) -> Vec<Candidate> {
        self.same_zone.take().unwrap_or_default()
    }
    fn other_zones(&mut self) -> Vec<Candidate> {
        (self.other_zones)()
    }
}

impl Inventory {
    /// Rule 1 over `agents` (one zone's slots, or the zones searched) for a session of
    /// `image` for `user`: O(agents given), plus a binary search per host the user already
    /// has sessions on.
    fn agent_candidates<'a>(
        &self,
        agents: impl IntoIterator<Item = &'a AgentSlot>,
        image: &Image,
        user: &str,
        now: u64,
        agent_timeout_ms: u64,
    ) -> Vec<Candidate> {
        let mut found = placement::candidates(agents, &image.demand(), now, agent_timeout_ms);
        self.count_user_sessions(user, &mut found);
        found
    }

    /// Pool rule 1 over the servers of `pool` in zone `only` (or in every zone but
    /// `except`), from the pool's zone index: O(servers of the pool in those zones).
    fn server_candidates(
        &self,
        pool: &str,
        only: Option<&str>,
        except: Option<&str>,
        user: &str,
    ) -> Vec<Candidate> {
        let servers = self
            .pool_servers(pool, only, except)
            .filter_map(|id| self.servers.get(id))
            .map(|entry| ServerSnapshot {
                server: &entry.server,
                usage: entry.usage,
                user_sessions: 0,
            });
        let mut found = placement::server_candidates(servers, pool);
        self.count_user_sessions(user, &mut found);
        found
    }

    /// Set each candidate's count of `user`'s sessions on it: one binary search per host
    /// the user has sessions on (usually none or a few), not a lookup per candidate.
    fn count_user_sessions(&self, user: &str, candidates: &mut [Candidate]) {
        let Some(per_host) = self.user_sessions.get(user) else {
            return;
        };
        for (host, &count) in per_host {
            if let Ok(i) = candidates.binary_search_by_key(host, |c| c.agent) {
                candidates[i].user_sessions = count;
            }
        }
    }
}
