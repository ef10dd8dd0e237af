//! Session placement: which agent (or, for pool workspaces, which pool server) takes a
//! session. Pure: the strategy and the reservation
//! are behind the small traits [`Ranker`] and [`Reserver`], so every rule is unit-tested
//! without wasm or sled.
//!
//! The rules (Kasm's *Deployment Zones*):
//! 1. Candidates are enabled agents with a fresh heartbeat and room for the image (cores,
//!    memory, GPUs, a session slot; overrides replace reported totals). An image restricted to
//!    a zone only ever considers that zone's agents.
//! 2. The user's zone's candidates are ranked by the zone's strategy and tried in order; the
//!    first that can be reserved atomically wins.
//! 3. Only when none of them can, and the zone has `search_alternate_zones`, the other zones'
//!    candidates are ranked by the same strategy and tried.
//! 4. A strategy failure (trap, timeout, invalid answer) never fails the request: the native
//!    `least-load` ranks instead, and the fault is reported.
//!
//! Sessions of pool workspaces go through the same rules 2 to 4; their candidates (rule 1,
//! [`server_candidates`]) are the running, unspent servers of the workspace's pool that have
//! an address and a free slot, one slot counted as [`SERVER_SESSION`].
//!
//! **Architecture Invariant:** a strategy's answer is validated before use and only ever
//! orders candidates that already have room; it cannot place a session where it does not
//! fit, because the reservation re-checks capacity atomically.

use uuid::Uuid;

use crate::domain::agent::{Agent, heartbeat_is_fresh};
use crate::domain::autoscale::Server;
use crate::domain::capacity::{Capacity, Demand, Usage, cores};
use crate::domain::image::Image;
use crate::domain::ranking::{
    CandidateColumns, CandidateRow, PlacementRequest, Ranking, least_load,
};
use crate::domain::zone::Zone;

/// An agent (or pool server) that has room for the session, as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The agent's id, or the pool server's.
    pub agent: Uuid,
    pub capacity: Capacity,
    pub usage: Usage,
    pub cpu_load: f32,
    pub memory_load: f32,
    /// Sessions of the requesting user on this agent.
    pub user_sessions: u32,
}

/// Gathers rule 1's candidates for rules 2 and 3, one search at a time: the other zones'
/// are asked for only when the user's zone could not take the session and its zone allows
/// searching elsewhere, so a placement that stays in its zone never looks at another.
/// Each answer is sorted by host id.
pub trait CandidateSource {
    fn same_zone(&mut self) -> Vec<Candidate>;
    fn other_zones(&mut self) -> Vec<Candidate>;
}

/// The candidates of one request gathered up front, split by zone and sorted by agent id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    pub same_zone: Vec<Candidate>,
    pub other_zones: Vec<Candidate>,
}

impl CandidateSource for Candidates {
    fn same_zone(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.same_zone)
    }
    fn other_zones(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.other_zones)
    }
}

/// The zones rule 1 may take a session of an image from, beyond the user's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elsewhere<'a> {
    /// The image is restricted to the user's zone.
    Nowhere,
    /// The image is restricted to this other zone.
    Only(&'a str),
    /// Any zone.
    AnyZone,
}

/// Where a session of `image` requested in `user_zone` may run: whether in the user's zone,
/// and where else (so the broker reads only those zones' agents).
pub fn image_zones<'a>(image: &'a Image, user_zone: &str) -> (bool, Elsewhere<'a>) {
    match image.zone.as_deref() {
        None => (true, Elsewhere::AnyZone),
        Some(zone) if zone == user_zone => (true, Elsewhere::Nowhere),
        Some(zone) => (false, Elsewhere::Only(zone)),
    }
}

/// What rule 1 needs of one agent, derived from its record and usage whenever either
/// changes. Small and `Copy`, so that a zone's agents scan as one contiguous array: the
/// per-request work is this scan, not a walk over the agents' records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentSlot {
    pub id: Uuid,
    pub enabled: bool,
    pub last_heartbeat_ms: u64,
    /// Reported totals, replaced by the operator's overrides.
    pub capacity: Capacity,
    pub usage: Usage,
    pub cpu_load: f32,
    pub memory_load: f32,
}

impl AgentSlot {
    pub fn new(agent: &Agent, usage: Usage) -> AgentSlot {
        AgentSlot {
            id: agent.id,
            enabled: agent.enabled,
            last_heartbeat_ms: agent.last_heartbeat_ms,
            capacity: agent.capacity(),
            usage,
            cpu_load: agent.cpu_load,
            memory_load: agent.memory_load,
        }
    }
}

/// Rule 1 over `agents` (the agents of the zones being searched, see [`image_zones`]): the
/// enabled ones with a fresh heartbeat and room for `demand`, sorted by id, each with no
/// sessions of the user counted yet. O(agents given): one pass over compact slots, one
/// allocation, and no sort when they come in id order (as each zone's do).
pub fn candidates<'a>(
    agents: impl IntoIterator<Item = &'a AgentSlot>,
    demand: &Demand,
    now_ms: u64,
    agent_timeout_ms: u64,
) -> Vec<Candidate> {
    let agents = agents.into_iter();
    let mut found = Vec::with_capacity(agents.size_hint().1.unwrap_or(0));
    found.extend(agents.filter_map(|slot| {
        let fresh = heartbeat_is_fresh(slot.last_heartbeat_ms, now_ms, agent_timeout_ms);
        (slot.enabled && fresh && slot.usage.has_room(&slot.capacity, demand)).then(|| Candidate {
            agent: slot.id,
            capacity: slot.capacity,
            usage: slot.usage,
            cpu_load: slot.cpu_load,
            memory_load: slot.memory_load,
            user_sessions: 0,
        })
    }));
    sorted_by_id(found)
}

/// What one session takes of a pool server: a slot. (Counted as a core and a GiB as well,
/// so that load-based strategies rank servers by the share of their slots in use.)
pub const SERVER_SESSION: Demand = Demand {
    millicores: 1000,
    memory: 1 << 30,
    gpus: 0,
};

/// What a pool server of `max_sessions` slots offers, in [`SERVER_SESSION`]s.
pub fn server_capacity(max_sessions: u32) -> Capacity {
    Capacity {
        millicores: u64::from(max_sessions) * SERVER_SESSION.millicores,
        memory: u64::from(max_sessions) * SERVER_SESSION.memory,
        gpus: 0,
        max_sessions,
    }
}

/// One pool server as known when a request arrives.
pub struct ServerSnapshot<'a> {
    pub server: &'a Server,
    pub usage: Usage,
    /// Sessions of the requesting user on this server.
    pub user_sessions: u32,
}

/// Rule 1 for a session of a pool workspace, over `servers` (those of the zones being
/// searched): the servers of `pool` that take sessions (running, not spent), have an
/// address and a free slot, sorted by id. Servers report no load: strategies see their
/// slots. O(servers given).
pub fn server_candidates<'a>(
    servers: impl IntoIterator<Item = ServerSnapshot<'a>>,
    pool: &str,
) -> Vec<Candidate> {
    let found = servers.into_iter().filter_map(
        |ServerSnapshot {
             server,
             usage,
             user_sessions,
         }| {
            let capacity = server_capacity(server.max_sessions);
            if server.pool != pool
                || !server.takes_sessions()
                || server.address.is_none()
                || !usage.has_room(&capacity, &SERVER_SESSION)
            {
                return None;
            }
            Some(Candidate {
                agent: server.id,
                capacity,
                usage,
                cpu_load: 0.0,
                memory_load: 0.0,
                user_sessions,
            })
        },
    );
    sorted_by_id(found.collect())
}

/// `group` in id order. Hosts usually arrive in id order already (the broker keeps each
/// zone's in a B-tree); checking is linear, sorting is not.
fn sorted_by_id(mut group: Vec<Candidate>) -> Vec<Candidate> {
    if !group.is_sorted_by_key(|c| c.agent) {
        group.sort_unstable_by_key(|c| c.agent);
    }
    group
}

/// Why a strategy produced no usable ranking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyFault {
    /// A stable code (`trap`, `deadline_exceeded`, `invalid_ranking`, `not_found`, ...).
    pub code: &'static str,
    pub message: String,
}

/// Ranks candidates with a named strategy.
pub trait Ranker {
    fn rank(
        &mut self,
        strategy: &str,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, StrategyFault>;

    /// Hand `case` to the zone's shadow strategy, to be ranked off the request's path: a
    /// shadow must never delay or change a placement. Dropping it is allowed.
    fn shadow(&mut self, case: ShadowCase) {
        let _ = case;
    }
}

/// One placement's input and the zone strategy's answer, for its shadow strategy to rank
/// the same input and compare first choices.
#[derive(Clone, Debug)]
pub struct ShadowCase {
    pub zone: String,
    /// The zone's strategy, whose ranking is `ranking`.
    pub strategy: String,
    /// The strategy to compare with it.
    pub shadow: String,
    pub request: PlacementRequest,
    pub candidates: CandidateColumns,
    pub ranking: Ranking,
    /// The candidates' ids, in column order (for reporting disagreements).
    pub agents: Vec<Uuid>,
}

impl ShadowCase {
    /// Whether `shadow_ranking` puts the same candidate first as the zone's strategy did
    /// (two empty rankings agree).
    pub fn agrees_with(&self, shadow_ranking: &Ranking) -> bool {
        self.ranking.indices().first() == shadow_ranking.indices().first()
    }

    /// The first `n` candidates of `ranking`, as ids.
    pub fn first_agents(&self, ranking: &Ranking, n: usize) -> Vec<Uuid> {
        ranking
            .indices()
            .iter()
            .take(n)
            .map(|&i| self.agents[i as usize])
            .collect()
    }
}

/// Reserves capacity for one session, atomically, on the first of the ranked candidates
/// that still has room (the others may have lost theirs to concurrent requests since the
/// snapshot): answers its position in `ranked`, or `None` when none had room. Asynchronous,
/// since a shared store answers over the network.
pub trait Reserver {
    type Error;
    fn reserve_first(
        &mut self,
        ranked: &[&Candidate],
        demand: &Demand,
    ) -> impl Future<Output = Result<Option<usize>, Self::Error>>;
}

/// Where the chosen agent is, relative to the user's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    SameZone,
    AlternateZone,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SameZone => "same_zone",
            Scope::AlternateZone => "alternate_zone",
        }
    }
}

/// What placement did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The agent reserved for the session, if any had room.
    pub placed: Option<(Uuid, Scope)>,
    /// Strategy failures met on the way (each followed by the native fallback).
    pub faults: Vec<StrategyFault>,
}

/// Rules 2 to 4: rank and reserve. Costs one strategy call over the user's zone's
/// candidates, one reservation over the ranking, and, only when none of them could be
/// reserved and the zone allows it, the same again over the other zones'.
pub async fn place<R: Ranker, V: Reserver>(
    zone: &Zone,
    demand: &Demand,
    user_key: u64,
    candidates: &mut impl CandidateSource,
    ranker: &mut R,
    reserver: &mut V,
) -> Result<Report, V::Error> {
    let mut report = Report {
        placed: None,
        faults: Vec::new(),
    };
    for scope in [Scope::SameZone, Scope::AlternateZone] {
        let group = match scope {
            Scope::SameZone => candidates.same_zone(),
            Scope::AlternateZone if zone.search_alternate_zones => candidates.other_zones(),
            Scope::AlternateZone => break,
        };
        if group.is_empty() {
            continue;
        }
        let request = PlacementRequest {
            cores: cores(demand.millicores),
            memory: demand.memory,
            gpus: demand.gpus,
            user_key,
            same_zone: scope == Scope::SameZone,
        };
        let mut columns = columns(&group);
        let ranking = match ranker.rank(&zone.load_balance_strategy, &request, &mut columns) {
            Ok(ranking) => {
                if let Some(shadow) = &zone.shadow_strategy {
                    ranker.shadow(ShadowCase {
                        zone: zone.name.clone(),
                        strategy: zone.load_balance_strategy.clone(),
                        shadow: shadow.clone(),
                        request,
                        candidates: columns.clone(),
                        ranking: ranking.clone(),
                        agents: group.iter().map(|c| c.agent).collect(),
                    });
                }
                ranking
            }
            Err(fault) => {
                report.faults.push(fault);
                least_load(&columns)
            }
        };
        let ranked: Vec<&Candidate> = ranking
            .indices()
            .iter()
            .map(|&index| &group[index as usize])
            .collect();
        if let Some(position) = reserver.reserve_first(&ranked, demand).await? {
            report.placed = Some((ranked[position].agent, scope));
            return Ok(report);
        }
    }
    Ok(report)
}

/// The strategy's view of a group of candidates.
fn columns(group: &[Candidate]) -> CandidateColumns {
    group
        .iter()
        .map(|c| CandidateRow {
            cores_total: cores(c.capacity.millicores),
            cores_reserved: cores(c.usage.millicores),
            memory_total: c.capacity.memory,
            memory_reserved: c.usage.memory,
            gpus_total: c.capacity.gpus,
            gpus_reserved: c.usage.gpus,
            sessions: c.usage.sessions,
            max_sessions: c.capacity.max_sessions,
            user_sessions: c.user_sessions,
            cpu_load: c.cpu_load,
            memory_load: c.memory_load,
        })
        .collect()
}

#[cfg(test)]
mod tests;
