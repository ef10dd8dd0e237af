//! `spread-users`: place a user's next session on the agent running the fewest of that user's
//! sessions, so that one agent failing takes down as few of a user's sessions as possible.
//! Among equals, prefer the least loaded agent; among those, the lower id.
//!
//! Build the component (from this directory):
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! # -> target/wasm32-wasip2/release/spread_users.wasm (in this repository: the
//! #    workspace's target/ at the root)
//! ```

use zonebroker_plugin_sdk::strategy::{Candidates, PlacementRequest, Strategy, rank_ascending};

pub struct SpreadUsers;

impl Strategy for SpreadUsers {
    fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {
        // One key orders by (the user's sessions, load): a load is below 2 unless an
        // override shrank an agent below what it already runs, so cap it just under 2.
        Ok(rank_ascending(candidates.len(), |i| {
            let load = candidates.load(i).min(1.999);
            f64::from(candidates.user_sessions[i]) * 2.0 + load
        }))
    }
}

zonebroker_plugin_sdk::export_strategy!(SpreadUsers);

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::strategy::Candidate;

    fn rank(rows: &[Candidate]) -> Vec<u32> {
        let candidates = Candidates::from_rows(rows.iter().copied());
        SpreadUsers::rank(&PlacementRequest::default(), &candidates).unwrap()
    }

    #[test]
    fn the_users_own_sessions_count_before_load() {
        let ranking = rank(&[
            Candidate::new()
                .cores(8.0, 0.0)
                .sessions(2, 10)
                .user_sessions(2),
            Candidate::new()
                .cores(8.0, 7.0)
                .sessions(9, 10)
                .user_sessions(0),
            Candidate::new()
                .cores(8.0, 1.0)
                .sessions(3, 10)
                .user_sessions(1),
        ]);
        assert_eq!(ranking, [1, 2, 0]);
    }

    #[test]
    fn among_equals_the_emptiest_then_the_lower_id_wins() {
        let ranking = rank(&[
            Candidate::new().cores(8.0, 4.0).sessions(2, 10),
            Candidate::new().cores(8.0, 2.0).sessions(1, 10),
            Candidate::new().cores(8.0, 2.0).sessions(5, 10),
        ]);
        assert_eq!(ranking, [1, 2, 0]);
    }

    #[test]
    fn an_overcommitted_agent_still_ranks_by_user_sessions_first() {
        let ranking = rank(&[
            Candidate::new().cores(2.0, 8.0).user_sessions(0), // load 4, capped
            Candidate::new().cores(8.0, 0.0).user_sessions(1),
        ]);
        assert_eq!(ranking, [0, 1]);
    }

    #[test]
    fn no_candidates_no_ranking() {
        assert!(rank(&[]).is_empty());
    }
}
