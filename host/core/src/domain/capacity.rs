//! Capacity arithmetic: what an agent has, what sessions use, whether one more fits.
//!
//! Cores are exchanged as floats (0.5 = half a core) but summed as integer millicores, so
//! that reserving and freeing the same sessions in any order returns to exactly zero.

use serde::{Deserialize, Serialize};

/// Cores as integer thousandths.
pub fn millicores(cores: f64) -> u64 {
    (cores * 1000.0).round().max(0.0) as u64
}

/// Millicores back to cores.
pub fn cores(millicores: u64) -> f64 {
    millicores as f64 / 1000.0
}

/// What one session reserves on an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    pub millicores: u64,
    /// Bytes.
    pub memory: u64,
    pub gpus: u32,
}

/// What an agent offers: its totals (overrides applied) and its session slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub millicores: u64,
    /// Bytes.
    pub memory: u64,
    pub gpus: u32,
    pub max_sessions: u32,
}

/// What the sessions on an agent reserve together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub sessions: u32,
    pub millicores: u64,
    /// Bytes.
    pub memory: u64,
    pub gpus: u32,
    /// Closed to new sessions (a pool server that is spent, draining, being destroyed or
    /// lost): no capacity check passes, while the sessions it still runs keep counting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl Usage {
    /// The same usage, closed to new sessions.
    pub fn closed(self) -> Usage {
        Usage {
            closed: true,
            ..self
        }
    }

    /// Whether `demand` fits beside what is reserved: cores, memory, GPUs and a session slot
    /// (never on a closed host).
    pub fn has_room(&self, capacity: &Capacity, demand: &Demand) -> bool {
        !self.closed
            && self.sessions < capacity.max_sessions
            && self.millicores.saturating_add(demand.millicores) <= capacity.millicores
            && self.memory.saturating_add(demand.memory) <= capacity.memory
            && self.gpus.saturating_add(demand.gpus) <= capacity.gpus
    }

    /// Usage with one more session of `demand`.
    pub fn plus(self, demand: &Demand) -> Usage {
        Usage {
            sessions: self.sessions + 1,
            millicores: self.millicores + demand.millicores,
            memory: self.memory + demand.memory,
            gpus: self.gpus + demand.gpus,
            closed: self.closed,
        }
    }

    /// Usage with one session of `demand` fewer (never below zero).
    pub fn minus(self, demand: &Demand) -> Usage {
        Usage {
            sessions: self.sessions.saturating_sub(1),
            millicores: self.millicores.saturating_sub(demand.millicores),
            memory: self.memory.saturating_sub(demand.memory),
            gpus: self.gpus.saturating_sub(demand.gpus),
            closed: self.closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Capacity = Capacity {
        millicores: 4000,
        memory: 8 << 30,
        gpus: 1,
        max_sessions: 3,
    };

    #[test]
    fn room_needs_every_resource_and_a_slot() {
        let half = Demand {
            millicores: 500,
            memory: 1 << 30,
            gpus: 0,
        };
        let mut usage = Usage::default();
        for _ in 0..3 {
            assert!(usage.has_room(&CAP, &half));
            usage = usage.plus(&half);
        }
        assert!(!usage.has_room(&CAP, &half), "slots are full");
        let fat = Demand {
            millicores: 4001,
            memory: 0,
            gpus: 0,
        };
        assert!(!Usage::default().has_room(&CAP, &fat));
        let memory = Demand {
            millicores: 0,
            memory: (8 << 30) + 1,
            gpus: 0,
        };
        assert!(!Usage::default().has_room(&CAP, &memory));
        let gpus = Demand {
            millicores: 0,
            memory: 0,
            gpus: 2,
        };
        assert!(!Usage::default().has_room(&CAP, &gpus));
        let exact = Demand {
            millicores: 4000,
            memory: 8 << 30,
            gpus: 1,
        };
        assert!(Usage::default().has_room(&CAP, &exact));
    }

    #[test]
    fn reserving_and_freeing_returns_to_zero_exactly() {
        let tenth = Demand {
            millicores: millicores(0.1),
            memory: 3,
            gpus: 0,
        };
        let mut usage = Usage::default();
        for _ in 0..10 {
            usage = usage.plus(&tenth);
        }
        assert_eq!(cores(usage.millicores), 1.0);
        for _ in 0..10 {
            usage = usage.minus(&tenth);
        }
        assert_eq!(usage, Usage::default());
        assert_eq!(usage.minus(&tenth), Usage::default());
    }

    #[test]
    fn a_closed_host_has_no_room_but_keeps_counting_its_sessions() {
        let slot = Demand {
            millicores: 1000,
            memory: 1 << 30,
            gpus: 0,
        };
        let usage = Usage::default().plus(&slot).closed();
        assert!(!usage.has_room(&CAP, &slot));
        assert_eq!(usage.sessions, 1);
        let ended = usage.minus(&slot);
        assert_eq!((ended.sessions, ended.closed), (0, true), "stays closed");
        assert!(!ended.has_room(&CAP, &slot));
        // Stored records of open hosts read and write as before.
        assert_eq!(
            serde_json::to_string(&Usage::default()).unwrap(),
            r#"{"sessions":0,"millicores":0,"memory":0,"gpus":0}"#
        );
        let read: Usage =
            serde_json::from_str(r#"{"sessions":0,"millicores":0,"memory":0,"gpus":0}"#).unwrap();
        assert!(!read.closed);
    }
}
