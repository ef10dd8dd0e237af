//! `least-load`: prefer the candidate with the least consumed resources, the larger of its
//! reserved cores and memory fractions. Ties go to the lower candidate id.

use zonebroker_plugin_sdk::strategy::{Candidates, PlacementRequest, Strategy, rank_ascending};

pub struct LeastLoad;

impl Strategy for LeastLoad {
    fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {
        Ok(rank_ascending(candidates.len(), |i| candidates.load(i)))
    }
}

zonebroker_plugin_sdk::export_strategy!(LeastLoad);

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::strategy::Candidate;

    const GIB: u64 = 1 << 30;

    fn rank(rows: &[Candidate]) -> Vec<u32> {
        LeastLoad::rank(
            &PlacementRequest::default(),
            &Candidates::from_rows(rows.iter().copied()),
        )
        .unwrap()
    }

    #[test]
    fn emptiest_first_by_the_larger_fraction() {
        let ranking = rank(&[
            // cores 50 %, memory 10 %: load 0.5
            Candidate::new()
                .cores(4.0, 2.0)
                .memory(10 * GIB, GIB)
                .sessions(2, 10),
            // cores 10 %, memory 80 %: load 0.8
            Candidate::new()
                .cores(10.0, 1.0)
                .memory(10 * GIB, 8 * GIB)
                .sessions(1, 10),
            // cores 25 %, memory 25 %: load 0.25
            Candidate::new()
                .cores(4.0, 1.0)
                .memory(8 * GIB, 2 * GIB)
                .sessions(5, 10),
        ]);
        assert_eq!(ranking, [2, 0, 1]);
    }

    #[test]
    fn sessions_do_not_count_only_resources() {
        let ranking = rank(&[
            Candidate::new()
                .cores(4.0, 3.0)
                .memory(GIB, 0)
                .sessions(1, 10),
            Candidate::new()
                .cores(4.0, 1.0)
                .memory(GIB, 0)
                .sessions(9, 10),
        ]);
        assert_eq!(ranking, [1, 0]);
    }

    #[test]
    fn equal_loads_keep_id_order() {
        let same = Candidate::new()
            .cores(8.0, 4.0)
            .memory(8 * GIB, 2 * GIB)
            .sessions(1, 4);
        assert_eq!(rank(&[same, same, same, same]), [0, 1, 2, 3]);
    }

    #[test]
    fn empty_list_gives_empty_ranking() {
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn zero_totals_count_as_empty_unless_something_is_reserved() {
        let ranking = rank(&[
            Candidate::new().cores(0.0, 1.0).sessions(0, 4), // reserved against nothing: full
            Candidate::new()
                .cores(4.0, 2.0)
                .memory(GIB, 0)
                .sessions(0, 4), // half
            Candidate::new().sessions(0, 4),                 // no totals, nothing reserved: empty
        ]);
        assert_eq!(ranking, [2, 1, 0]);
    }
}
