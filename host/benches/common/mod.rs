//! Inputs the strategy benchmarks share.

use zonebroker::domain::ranking::CandidateRow;
use zonebroker_plugin_sdk::strategy::{Candidate, Candidates};

/// `n` candidates with pseudo-random (xorshift, fixed seed) reservations, sessions and the
/// user's sessions.
pub fn rows(n: usize) -> Vec<CandidateRow> {
    let mut x = 0x2545f4914f6cdd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CandidateRow {
                cores_total: 16.0,
                cores_reserved: (x % 160) as f64 / 10.0,
                memory_total: 64 << 30,
                memory_reserved: (x >> 8) % (64 << 30),
                sessions: (x % 20) as u32,
                max_sessions: 20,
                user_sessions: (x % 3) as u32,
                cpu_load: 0.5,
                memory_load: 0.5,
                ..Default::default()
            }
        })
        .collect()
}

/// The same candidates as the SDK's columns, for the native runs.
pub fn sdk_candidates(rows: &[CandidateRow]) -> Candidates {
    Candidates::from_rows(rows.iter().map(|r| Candidate {
        cores_total: r.cores_total,
        cores_reserved: r.cores_reserved,
        memory_total: r.memory_total,
        memory_reserved: r.memory_reserved,
        gpus_total: r.gpus_total,
        gpus_reserved: r.gpus_reserved,
        sessions: r.sessions,
        max_sessions: r.max_sessions,
        user_sessions: r.user_sessions,
        cpu_load: r.cpu_load,
        memory_load: r.memory_load,
    }))
}
