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

use crate::domain::agent::Agent;
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

/// The candidates of one request, split by zone and sorted by agent id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    pub same_zone: Vec<Candidate>,
    pub other_zones: Vec<Candidate>,
}

/// One agent as known when a request arrives.
pub struct AgentSnapshot<'a> {
    pub agent: &'a Agent,
    pub usage: Usage,
    pub user_sessions: u32,
}

/// Rule 1: the agents that could take a session of `image` for a user in `user_zone`.
pub fn candidates<'a>(
    agents: impl IntoIterator<Item = AgentSnapshot<'a>>,
    user_zone: &str,
    image: &Image,
    now_ms: u64,
    agent_timeout_ms: u64,
) -> Candidates {
    let demand = image.demand();
    let found = agents.into_iter().filter_map(
        |AgentSnapshot {
             agent,
             usage,
             user_sessions,
         }| {
            if !agent.enabled || !agent.is_fresh(now_ms, agent_timeout_ms) {
                return None;
            }
            if image.zone.as_deref().is_some_and(|zone| zone != agent.zone) {
                return None;
            }
            let capacity = agent.capacity();
            if !usage.has_room(&capacity, &demand) {
                return None;
            }
            let candidate = Candidate {
                agent: agent.id,
                capacity,
                usage,
                cpu_load: agent.cpu_load,
                memory_load: agent.memory_load,
                user_sessions,
            };
            Some((agent.zone.as_str(), candidate))
        },
    );
    by_zone(found, user_zone)
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

/// Rule 1 for a session of a pool workspace: the servers of `pool` that take sessions
/// (running, not spent), have an address and a free slot, for a user in `user_zone`.
/// Servers report no load: strategies see their slots.
pub fn server_candidates<'a>(
    servers: impl IntoIterator<Item = ServerSnapshot<'a>>,
    pool: &str,
    user_zone: &str,
) -> Candidates {
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
            let candidate = Candidate {
                agent: server.id,
                capacity,
                usage,
                cpu_load: 0.0,
                memory_load: 0.0,
                user_sessions,
            };
            Some((server.zone.as_str(), candidate))
        },
    );
    by_zone(found, user_zone)
}

/// Candidates split into `user_zone`'s and the other zones', each group sorted by id.
fn by_zone<'a>(found: impl Iterator<Item = (&'a str, Candidate)>, user_zone: &str) -> Candidates {
    let mut candidates = Candidates::default();
    for (zone, candidate) in found {
        if zone == user_zone {
            candidates.same_zone.push(candidate);
        } else {
            candidates.other_zones.push(candidate);
        }
    }
    // Hosts usually arrive in id order already (the broker keeps them in BTreeMaps);
    // checking is linear, sorting is not.
    for group in [&mut candidates.same_zone, &mut candidates.other_zones] {
        if !group.is_sorted_by_key(|c| c.agent) {
            group.sort_by_key(|c| c.agent);
        }
    }
    candidates
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
}

/// Reserves capacity for one session on one agent, atomically: answers `false` when the
/// agent turned out to have no room (another request took it first).
pub trait Reserver {
    type Error;
    fn try_reserve(&mut self, candidate: &Candidate, demand: &Demand) -> Result<bool, Self::Error>;
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

/// Rules 2 to 4: rank and reserve.
pub fn place<R: Ranker, V: Reserver>(
    zone: &Zone,
    demand: &Demand,
    user_key: u64,
    candidates: Candidates,
    ranker: &mut R,
    reserver: &mut V,
) -> Result<Report, V::Error> {
    let mut report = Report {
        placed: None,
        faults: Vec::new(),
    };
    let mut groups = vec![(Scope::SameZone, candidates.same_zone)];
    if zone.search_alternate_zones {
        groups.push((Scope::AlternateZone, candidates.other_zones));
    }
    for (scope, group) in groups {
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
            Ok(ranking) => ranking,
            Err(fault) => {
                report.faults.push(fault);
                least_load(&columns)
            }
        };
        for &index in ranking.indices() {
            let candidate = &group[index as usize];
            if reserver.try_reserve(candidate, demand)? {
                report.placed = Some((candidate.agent, scope));
                return Ok(report);
            }
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
