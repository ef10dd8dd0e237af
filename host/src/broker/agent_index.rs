//! The agents in memory, indexed the ways the broker reads them: by id (in id order, for
//! pages), by host name (check-ins) and by zone, where each zone keeps its agents' placement
//! [`AgentSlot`]s as one array sorted by id. Placement scans one zone's array and never
//! touches another zone's agents or any agent's record.
//!
//! **Invariant:** every agent has exactly one slot, in the array of the zone its record
//! names, equal to `AgentSlot::new(&state.agent, state.usage)`; the host-name map agrees
//! with the records. Only [`AgentIndex::insert`], [`AgentIndex::update`] and
//! [`AgentIndex::remove`] change an agent, and each keeps this true ([`AgentIndex::check`]
//! asserts it in tests).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use uuid::Uuid;

use super::AgentState;
use crate::placement::AgentSlot;

#[derive(Default)]
pub(super) struct AgentIndex {
    agents: BTreeMap<Uuid, AgentState>,
    by_hostname: HashMap<String, Uuid>,
    /// Each zone's slots, sorted by agent id; no empty arrays are kept.
    zones: HashMap<String, Vec<AgentSlot>>,
}

impl AgentIndex {
    /// O(log agents).
    pub(super) fn get(&self, id: &Uuid) -> Option<&AgentState> {
        self.agents.get(id)
    }

    pub(super) fn id_of_hostname(&self, hostname: &str) -> Option<Uuid> {
        self.by_hostname.get(hostname).copied()
    }

    /// Add or replace an agent, moving it between zones (or host names) if they changed.
    /// O(log agents) to replace in place; O(agents in the zone) to add one to a zone (the
    /// array shifts), which happens once per agent registration or zone move.
    pub(super) fn insert(&mut self, state: AgentState) {
        let id = state.agent.id;
        if let Some(old) = self.agents.get(&id)
            && (old.agent.zone != state.agent.zone || old.agent.hostname != state.agent.hostname)
        {
            self.remove(&id);
        }
        let slot = AgentSlot::new(&state.agent, state.usage);
        let zone = self.zones.entry(state.agent.zone.clone()).or_default();
        match zone.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => zone[i] = slot,
            Err(i) => zone.insert(i, slot),
        }
        self.by_hostname.insert(state.agent.hostname.clone(), id);
        self.agents.insert(id, state);
    }

    /// Change an agent's record or usage through `change` (which must leave its id, zone
    /// and host name as they are: [`AgentIndex::insert`] moves an agent), then refresh its
    /// slot. O(log agents).
    pub(super) fn update<R>(
        &mut self,
        id: &Uuid,
        change: impl FnOnce(&mut AgentState) -> R,
    ) -> Option<R> {
        let state = self.agents.get_mut(id)?;
        let (zone, hostname) = (state.agent.zone.clone(), state.agent.hostname.clone());
        let answer = change(state);
        debug_assert!(
            state.agent.id == *id && state.agent.zone == zone && state.agent.hostname == hostname,
            "AgentIndex::update must not move an agent"
        );
        let slot = AgentSlot::new(&state.agent, state.usage);
        if let Some(slots) = self.zones.get_mut(&zone)
            && let Ok(i) = slots.binary_search_by_key(id, |s| s.id)
        {
            slots[i] = slot;
        }
        Some(answer)
    }

    pub(super) fn remove(&mut self, id: &Uuid) -> Option<AgentState> {
        let state = self.agents.remove(id)?;
        let zone = &state.agent.zone;
        if let Some(slots) = self.zones.get_mut(zone) {
            if let Ok(i) = slots.binary_search_by_key(id, |s| s.id) {
                slots.remove(i);
            }
            if slots.is_empty() {
                self.zones.remove(zone);
            }
        }
        if self.by_hostname.get(&state.agent.hostname) == Some(id) {
            self.by_hostname.remove(&state.agent.hostname);
        }
        Some(state)
    }

    /// The placement slots of `zone`'s agents, sorted by id: O(1).
    pub(super) fn slots_in(&self, zone: &str) -> &[AgentSlot] {
        self.zones.get(zone).map_or(&[], Vec::as_slice)
    }

    /// The placement slots of every zone but `zone`, zone after zone (each sorted by id).
    pub(super) fn slots_outside<'a>(
        &'a self,
        zone: &'a str,
    ) -> impl Iterator<Item = &'a AgentSlot> + 'a {
        self.zones
            .iter()
            .filter(move |(name, _)| name.as_str() != zone)
            .flat_map(|(_, slots)| slots)
    }

    /// How many agents `zone` has: O(1).
    pub(super) fn count_in(&self, zone: &str) -> usize {
        self.slots_in(zone).len()
    }

    /// Up to `limit` agents after `after` in id order, and whether more remain:
    /// O(log agents + limit), whatever the page's position.
    pub(super) fn page(&self, after: Option<&Uuid>, limit: usize) -> (Vec<&AgentState>, bool) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut found: Vec<&AgentState> = self
            .agents
            .range((start, Bound::Unbounded))
            .map(|(_, state)| state)
            .take(limit.saturating_add(1))
            .collect();
        let more = found.len() > limit;
        found.truncate(limit);
        (found, more)
    }

    /// Panics unless the indexes agree with the records (tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let slots: usize = self.zones.values().map(Vec::len).sum();
        assert_eq!(slots, self.agents.len());
        assert_eq!(self.by_hostname.len(), self.agents.len());
        for (zone, slots) in &self.zones {
            assert!(!slots.is_empty(), "empty zone array `{zone}` kept");
            assert!(
                slots.is_sorted_by_key(|s| s.id),
                "zone `{zone}` out of order"
            );
            for slot in slots {
                let state = &self.agents[&slot.id];
                assert_eq!(&state.agent.zone, zone);
                assert_eq!(*slot, AgentSlot::new(&state.agent, state.usage));
                assert_eq!(self.by_hostname.get(&state.agent.hostname), Some(&slot.id));
            }
        }
    }
}
