//! `most-load`: prefer the candidate with the most consumed resources (the larger of its
//! reserved cores and memory fractions), packing sessions onto busy agents so that idle ones
//! can be scaled down. Ties go to the lower candidate id.

use zonebroker_plugin_sdk::strategy::{Candidates, PlacementRequest, Strategy, rank_descending};

pub struct MostLoad;

impl Strategy for MostLoad {
    fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {
        Ok(rank_descending(candidates.len(), |i| candidates.load(i)))
    }
}

zonebroker_plugin_sdk::export_strategy!(MostLoad);

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::strategy::Candidate;

    const GIB: u64 = 1 << 30;

    fn rank(rows: &[Candidate]) -> Vec<u32> {
        MostLoad::rank(
            &PlacementRequest::default(),
            &Candidates::from_rows(rows.iter().copied()),
        )
        .unwrap()
    }

    #[test]
    fn fullest_first_by_the_larger_fraction() {
        let ranking = rank(&[
            Candidate::new()
                .cores(4.0, 2.0)
                .memory(10 * GIB, GIB)
                .sessions(2, 10), // 0.5
            Candidate::new()
                .cores(10.0, 1.0)
                .memory(10 * GIB, 8 * GIB)
                .sessions(1, 10), // 0.8
            Candidate::new()
                .cores(4.0, 1.0)
                .memory(8 * GIB, 2 * GIB)
                .sessions(5, 10), // 0.25
        ]);
        assert_eq!(ranking, [1, 0, 2]);
    }

    #[test]
    fn equal_loads_keep_id_order() {
        let same = Candidate::new()
            .cores(8.0, 4.0)
            .memory(8 * GIB, 2 * GIB)
            .sessions(1, 4);
        let other = Candidate::new()
            .cores(8.0, 1.0)
            .memory(8 * GIB, 0)
            .sessions(1, 4);
        assert_eq!(rank(&[other, same, other, same]), [1, 3, 0, 2]);
    }

    #[test]
    fn empty_list_gives_empty_ranking() {
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn zero_totals_rank_by_what_is_reserved() {
        let ranking = rank(&[
            Candidate::new().sessions(0, 4),                 // empty
            Candidate::new().cores(0.0, 1.0).sessions(0, 4), // full
            Candidate::new()
                .cores(4.0, 2.0)
                .memory(GIB, 0)
                .sessions(0, 4), // half
        ]);
        assert_eq!(ranking, [1, 2, 0]);
    }
}
