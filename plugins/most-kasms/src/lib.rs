//! `most-kasms`: prefer the candidate running the most sessions, filling agents one after
//! another. Ties go to the lower candidate id.

use zonebroker_plugin_sdk::strategy::{Candidates, PlacementRequest, Strategy, rank_descending};

pub struct MostKasms;

impl Strategy for MostKasms {
    fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {
        Ok(rank_descending(candidates.len(), |i| {
            candidates.sessions[i]
        }))
    }
}

zonebroker_plugin_sdk::export_strategy!(MostKasms);

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::strategy::Candidate;

    fn rank(rows: &[Candidate]) -> Vec<u32> {
        MostKasms::rank(
            &PlacementRequest::default(),
            &Candidates::from_rows(rows.iter().copied()),
        )
        .unwrap()
    }

    #[test]
    fn most_sessions_first_regardless_of_load() {
        let ranking = rank(&[
            Candidate::new().cores(4.0, 3.9).sessions(1, 10),
            Candidate::new().cores(4.0, 0.5).sessions(5, 10),
            Candidate::new().cores(4.0, 1.0).sessions(3, 10),
        ]);
        assert_eq!(ranking, [1, 2, 0]);
    }

    #[test]
    fn equal_counts_keep_id_order() {
        let two = Candidate::new().sessions(2, 4);
        let one = Candidate::new().sessions(1, 4);
        assert_eq!(rank(&[one, two, one, two]), [1, 3, 0, 2]);
    }

    #[test]
    fn empty_list_gives_empty_ranking() {
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn zero_sessions_everywhere_keeps_id_order() {
        let idle = Candidate::new().sessions(0, 4);
        assert_eq!(rank(&[idle, idle, idle]), [0, 1, 2]);
    }
}
