//! What a load-balancing strategy sees and answers, and the rules its answer must obey.
//!
//! These mirror the `zonebroker:plugin/placement-types` WIT records field for field (see
//! `wit/zonebroker.wit` for units); the plugin runtime moves the columns into the component
//! without copying them.

use std::fmt;

/// The session being placed, as a strategy sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlacementRequest {
    /// CPU cores the session reserves.
    pub cores: f64,
    /// Memory the session reserves, in bytes.
    pub memory: u64,
    /// GPUs the session reserves.
    pub gpus: u32,
    /// A stable, opaque key of the requesting user.
    pub user_key: u64,
    /// Whether the candidates are in the user's own zone.
    pub same_zone: bool,
}

impl Default for PlacementRequest {
    fn default() -> Self {
        PlacementRequest {
            cores: 0.0,
            memory: 0,
            gpus: 0,
            user_key: 0,
            same_zone: true,
        }
    }
}

/// One candidate as a row (the convenient form for building inputs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CandidateRow {
    pub cores_total: f64,
    pub cores_reserved: f64,
    pub memory_total: u64,
    pub memory_reserved: u64,
    pub gpus_total: u32,
    pub gpus_reserved: u32,
    pub sessions: u32,
    pub max_sessions: u32,
    pub user_sessions: u32,
    pub cpu_load: f32,
    pub memory_load: f32,
}

/// [`CandidateColumns`] lent out by value ([`CandidateColumns::lend`]).
#[derive(Debug, Default)]
pub struct Columns {
    pub cores_total: Vec<f64>,
    pub cores_reserved: Vec<f64>,
    pub memory_total: Vec<u64>,
    pub memory_reserved: Vec<u64>,
    pub gpus_total: Vec<u32>,
    pub gpus_reserved: Vec<u32>,
    pub sessions: Vec<u32>,
    pub max_sessions: Vec<u32>,
    pub user_sessions: Vec<u32>,
    pub cpu_load: Vec<f32>,
    pub memory_load: Vec<f32>,
}

/// Candidates as columns: entry `i` of every list describes candidate `i`.
///
/// The columns are private so that they always have equal lengths; build with
/// [`CandidateColumns::push`] or `FromIterator<CandidateRow>`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CandidateColumns {
    pub(crate) cores_total: Vec<f64>,
    pub(crate) cores_reserved: Vec<f64>,
    pub(crate) memory_total: Vec<u64>,
    pub(crate) memory_reserved: Vec<u64>,
    pub(crate) gpus_total: Vec<u32>,
    pub(crate) gpus_reserved: Vec<u32>,
    pub(crate) sessions: Vec<u32>,
    pub(crate) max_sessions: Vec<u32>,
    pub(crate) user_sessions: Vec<u32>,
    pub(crate) cpu_load: Vec<f32>,
    pub(crate) memory_load: Vec<f32>,
}

impl CandidateColumns {
    /// Room for `n` candidates without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        CandidateColumns {
            cores_total: Vec::with_capacity(n),
            cores_reserved: Vec::with_capacity(n),
            memory_total: Vec::with_capacity(n),
            memory_reserved: Vec::with_capacity(n),
            gpus_total: Vec::with_capacity(n),
            gpus_reserved: Vec::with_capacity(n),
            sessions: Vec::with_capacity(n),
            max_sessions: Vec::with_capacity(n),
            user_sessions: Vec::with_capacity(n),
            cpu_load: Vec::with_capacity(n),
            memory_load: Vec::with_capacity(n),
        }
    }

    /// Append one candidate; it gets the next index.
    pub fn push(&mut self, row: CandidateRow) {
        self.cores_total.push(row.cores_total);
        self.cores_reserved.push(row.cores_reserved);
        self.memory_total.push(row.memory_total);
        self.memory_reserved.push(row.memory_reserved);
        self.gpus_total.push(row.gpus_total);
        self.gpus_reserved.push(row.gpus_reserved);
        self.sessions.push(row.sessions);
        self.max_sessions.push(row.max_sessions);
        self.user_sessions.push(row.user_sessions);
        self.cpu_load.push(row.cpu_load);
        self.memory_load.push(row.memory_load);
    }

    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Lend the columns by value to `f` (which moves them into a plugin call's argument
    /// without copying) and take them back from what it returns.
    ///
    /// # Panics
    /// If `f` gives back columns of unequal lengths.
    pub fn lend<R>(&mut self, f: impl FnOnce(Columns) -> (Columns, R)) -> R {
        use std::mem::take;
        let lent = Columns {
            cores_total: take(&mut self.cores_total),
            cores_reserved: take(&mut self.cores_reserved),
            memory_total: take(&mut self.memory_total),
            memory_reserved: take(&mut self.memory_reserved),
            gpus_total: take(&mut self.gpus_total),
            gpus_reserved: take(&mut self.gpus_reserved),
            sessions: take(&mut self.sessions),
            max_sessions: take(&mut self.max_sessions),
            user_sessions: take(&mut self.user_sessions),
            cpu_load: take(&mut self.cpu_load),
            memory_load: take(&mut self.memory_load),
        };
        let (columns, result) = f(lent);
        let n = columns.sessions.len();
        assert!(
            [
                columns.cores_total.len(),
                columns.cores_reserved.len(),
                columns.memory_total.len(),
                columns.memory_reserved.len(),
                columns.gpus_total.len(),
                columns.gpus_reserved.len(),
                columns.max_sessions.len(),
                columns.user_sessions.len(),
                columns.cpu_load.len(),
                columns.memory_load.len(),
            ]
            .iter()
            .all(|&len| len == n),
            "candidate columns given back with unequal lengths"
        );
        self.cores_total = columns.cores_total;
        self.cores_reserved = columns.cores_reserved;
        self.memory_total = columns.memory_total;
        self.memory_reserved = columns.memory_reserved;
        self.gpus_total = columns.gpus_total;
        self.gpus_reserved = columns.gpus_reserved;
        self.sessions = columns.sessions;
        self.max_sessions = columns.max_sessions;
        self.user_sessions = columns.user_sessions;
        self.cpu_load = columns.cpu_load;
        self.memory_load = columns.memory_load;
        result
    }

    /// Candidate `i` as a row.
    pub fn row(&self, i: usize) -> CandidateRow {
        CandidateRow {
            cores_total: self.cores_total[i],
            cores_reserved: self.cores_reserved[i],
            memory_total: self.memory_total[i],
            memory_reserved: self.memory_reserved[i],
            gpus_total: self.gpus_total[i],
            gpus_reserved: self.gpus_reserved[i],
            sessions: self.sessions[i],
            max_sessions: self.max_sessions[i],
            user_sessions: self.user_sessions[i],
            cpu_load: self.cpu_load[i],
            memory_load: self.memory_load[i],
        }
    }
}

impl FromIterator<CandidateRow> for CandidateColumns {
    fn from_iter<I: IntoIterator<Item = CandidateRow>>(rows: I) -> Self {
        let rows = rows.into_iter();
        let mut columns = CandidateColumns::with_capacity(rows.size_hint().0);
        rows.for_each(|row| columns.push(row));
        columns
    }
}

/// A strategy's answer that obeys the rules: indices into the candidates, best first, each
/// at most once. Candidates left out are not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranking(Vec<u32>);

impl Ranking {
    /// Check a strategy's raw answer against `candidates` candidates.
    pub fn validate(indices: Vec<u32>, candidates: usize) -> Result<Ranking, RankingError> {
        if indices.len() > candidates {
            return Err(RankingError::TooLong {
                len: indices.len(),
                candidates,
            });
        }
        let mut seen = vec![false; candidates];
        for (position, &index) in indices.iter().enumerate() {
            let slot = seen
                .get_mut(index as usize)
                .ok_or(RankingError::OutOfRange {
                    position,
                    index,
                    candidates,
                })?;
            if std::mem::replace(slot, true) {
                return Err(RankingError::Repeated { position, index });
            }
        }
        Ok(Ranking(indices))
    }

    /// The indices, best first.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    /// The indices, best first.
    pub fn into_indices(self) -> Vec<u32> {
        self.0
    }
}

/// Why a strategy's answer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RankingError {
    #[error("ranking has {len} entries for {candidates} candidates")]
    TooLong { len: usize, candidates: usize },
    #[error("entry {position} is index {index}, out of range for {candidates} candidates")]
    OutOfRange {
        position: usize,
        index: u32,
        candidates: usize,
    },
    #[error("entry {position} repeats index {index}")]
    Repeated { position: usize, index: u32 },
}

/// The built-in `least-load` ordering, natively: the placement fallback when a strategy
/// plugin fails. Consumed resources are the larger of the reserved cores and memory
/// fractions (reserved against a zero total counts as full); ties keep index order.
/// Identical to the `least-load` component (a test compares them).
pub fn least_load(columns: &CandidateColumns) -> Ranking {
    fn fraction(reserved: f64, total: f64) -> f64 {
        if total > 0.0 {
            reserved / total
        } else if reserved > 0.0 {
            1.0
        } else {
            0.0
        }
    }
    let load = |i: usize| {
        fraction(columns.cores_reserved[i], columns.cores_total[i]).max(fraction(
            columns.memory_reserved[i] as f64,
            columns.memory_total[i] as f64,
        ))
    };
    let mut keyed: Vec<(f64, u32)> = (0..columns.len()).map(|i| (load(i), i as u32)).collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Ranking(keyed.into_iter().map(|(_, i)| i).collect())
}

impl fmt::Display for Ranking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permutation_or_a_prefix_of_one_is_valid() {
        assert_eq!(
            Ranking::validate(vec![2, 0, 1], 3).unwrap().indices(),
            [2, 0, 1]
        );
        assert_eq!(Ranking::validate(vec![1], 3).unwrap().indices(), [1]);
        assert!(Ranking::validate(vec![], 0).unwrap().indices().is_empty());
        assert!(Ranking::validate(vec![], 5).unwrap().indices().is_empty());
    }

    #[test]
    fn out_of_range_is_refused_with_its_position() {
        assert_eq!(
            Ranking::validate(vec![0, 3], 3),
            Err(RankingError::OutOfRange {
                position: 1,
                index: 3,
                candidates: 3
            })
        );
        assert!(matches!(
            Ranking::validate(vec![0], 0),
            Err(RankingError::TooLong { .. })
        ));
        assert!(matches!(
            Ranking::validate(vec![u32::MAX], 1),
            Err(RankingError::OutOfRange { .. })
        ));
    }

    #[test]
    fn repeats_are_refused() {
        assert_eq!(
            Ranking::validate(vec![1, 0, 1], 3),
            Err(RankingError::Repeated {
                position: 2,
                index: 1
            })
        );
    }

    #[test]
    fn more_entries_than_candidates_are_refused_before_anything_else() {
        assert_eq!(
            Ranking::validate(vec![0; 10], 3),
            Err(RankingError::TooLong {
                len: 10,
                candidates: 3
            })
        );
    }

    #[test]
    fn least_load_orders_by_the_larger_fraction_then_index() {
        let row = |cores: (f64, f64), memory: (u64, u64)| CandidateRow {
            cores_total: cores.0,
            cores_reserved: cores.1,
            memory_total: memory.0,
            memory_reserved: memory.1,
            ..Default::default()
        };
        let columns: CandidateColumns = [
            row((4.0, 2.0), (10, 1)),  // 0.5
            row((10.0, 1.0), (10, 8)), // 0.8
            row((0.0, 0.0), (0, 0)),   // 0 (nothing known, nothing reserved)
            row((4.0, 2.0), (10, 5)),  // 0.5, ties with 0
            row((0.0, 1.0), (0, 0)),   // full
        ]
        .into_iter()
        .collect();
        assert_eq!(least_load(&columns).indices(), [2, 0, 3, 1, 4]);
        assert!(
            least_load(&CandidateColumns::default())
                .indices()
                .is_empty()
        );
    }

    #[test]
    fn columns_keep_rows_in_order() {
        let rows = [
            CandidateRow {
                sessions: 1,
                max_sessions: 4,
                ..Default::default()
            },
            CandidateRow {
                cores_total: 8.0,
                memory_load: 0.5,
                ..Default::default()
            },
        ];
        let columns: CandidateColumns = rows.iter().copied().collect();
        assert_eq!(columns.len(), 2);
        assert_eq!(columns.row(0), rows[0]);
        assert_eq!(columns.row(1), rows[1]);
    }
}
