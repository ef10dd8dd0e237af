//! Load-balancing strategies: order the candidates for a session, best first.
//!
//! Implement [`Strategy`] on a unit struct and export it with
//! [`export_strategy!`](crate::export_strategy). The host calls [`Strategy::rank`] on every
//! placement with a fresh instance, so a strategy keeps no state between calls; it sees no
//! clock and no randomness, so the same inputs always give the same ranking.
//!
//! Candidates come as columns ([`Candidates`]); the helpers here ([`Candidates::load`],
//! [`Candidates::free_slots`], [`rank_ascending`], [`rank_descending`]) cover what most
//! strategies need, and [`Candidate`] rows build inputs for native unit tests.

pub use crate::__bindings::strategy::zonebroker::plugin::placement_types::{
    Candidates, PlacementRequest,
};

/// A load-balancing strategy.
pub trait Strategy {
    /// Order `candidates` for `request`, best first, as indices into `candidates`.
    ///
    /// Leave a candidate out to refuse it for this request. Every candidate already has room
    /// for the request; candidates are sorted by id, so ties broken by index are
    /// reproducible. An `Err` (or an answer with an index out of range or repeated) makes the
    /// host log the failure and fall back to its built-in `least-load`.
    fn rank(request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String>;
}

/// `reserved / total` as a fraction: 0 when nothing is reserved, 1 (full) when something is
/// reserved against a total of zero. Above 1 when an override lowered the total below what is
/// already reserved.
pub fn fraction(reserved: f64, total: f64) -> f64 {
    if total > 0.0 {
        reserved / total
    } else if reserved > 0.0 {
        1.0
    } else {
        0.0
    }
}

impl Candidates {
    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether every column has one entry per candidate (the host guarantees it; the export
    /// glue checks it before calling a strategy).
    pub fn is_well_formed(&self) -> bool {
        let n = self.len();
        [
            self.cores_total.len(),
            self.cores_reserved.len(),
            self.memory_total.len(),
            self.memory_reserved.len(),
            self.gpus_total.len(),
            self.gpus_reserved.len(),
            self.max_sessions.len(),
            self.user_sessions.len(),
            self.cpu_load.len(),
            self.memory_load.len(),
        ]
        .iter()
        .all(|&len| len == n)
    }

    /// Fraction of candidate `i`'s cores already reserved.
    pub fn cores_fraction(&self, i: usize) -> f64 {
        fraction(self.cores_reserved[i], self.cores_total[i])
    }

    /// Fraction of candidate `i`'s memory already reserved.
    pub fn memory_fraction(&self, i: usize) -> f64 {
        fraction(self.memory_reserved[i] as f64, self.memory_total[i] as f64)
    }

    /// Consumed resources of candidate `i`: the larger of its reserved cores and memory
    /// fractions (the measure of Kasm's least-load and most-load).
    pub fn load(&self, i: usize) -> f64 {
        self.cores_fraction(i).max(self.memory_fraction(i))
    }

    /// Session slots candidate `i` has left.
    pub fn free_slots(&self, i: usize) -> u32 {
        self.max_sessions[i].saturating_sub(self.sessions[i])
    }

    /// Candidate `i` as a row.
    pub fn row(&self, i: usize) -> Candidate {
        Candidate {
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

    /// Columns from rows, in order: row `i` becomes candidate `i`.
    pub fn from_rows<I>(rows: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Candidate>,
    {
        let mut columns = Candidates {
            cores_total: Vec::new(),
            cores_reserved: Vec::new(),
            memory_total: Vec::new(),
            memory_reserved: Vec::new(),
            gpus_total: Vec::new(),
            gpus_reserved: Vec::new(),
            sessions: Vec::new(),
            max_sessions: Vec::new(),
            user_sessions: Vec::new(),
            cpu_load: Vec::new(),
            memory_load: Vec::new(),
        };
        for row in rows {
            let row: Candidate = row.into();
            columns.cores_total.push(row.cores_total);
            columns.cores_reserved.push(row.cores_reserved);
            columns.memory_total.push(row.memory_total);
            columns.memory_reserved.push(row.memory_reserved);
            columns.gpus_total.push(row.gpus_total);
            columns.gpus_reserved.push(row.gpus_reserved);
            columns.sessions.push(row.sessions);
            columns.max_sessions.push(row.max_sessions);
            columns.user_sessions.push(row.user_sessions);
            columns.cpu_load.push(row.cpu_load);
            columns.memory_load.push(row.memory_load);
        }
        columns
    }
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

/// One candidate as a row: the convenient form for building test inputs.
///
/// ```
/// use zonebroker_plugin_sdk::strategy::{Candidate, Candidates};
/// const GIB: u64 = 1 << 30;
/// let candidates = Candidates::from_rows([
///     Candidate::new().cores(8.0, 2.0).memory(16 * GIB, 4 * GIB).sessions(1, 10),
///     Candidate::new().cores(8.0, 6.0).memory(16 * GIB, 2 * GIB).sessions(3, 10),
/// ]);
/// assert_eq!(candidates.load(0), 0.25);
/// assert_eq!(candidates.load(1), 0.75);
/// assert_eq!(candidates.free_slots(1), 7);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Candidate {
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

impl Candidate {
    /// A candidate with nothing: no cores, no memory, no slots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total and reserved cores.
    pub fn cores(mut self, total: f64, reserved: f64) -> Self {
        self.cores_total = total;
        self.cores_reserved = reserved;
        self
    }

    /// Total and reserved memory, in bytes.
    pub fn memory(mut self, total: u64, reserved: u64) -> Self {
        self.memory_total = total;
        self.memory_reserved = reserved;
        self
    }

    /// Total and reserved GPUs.
    pub fn gpus(mut self, total: u32, reserved: u32) -> Self {
        self.gpus_total = total;
        self.gpus_reserved = reserved;
        self
    }

    /// Running sessions and the most allowed.
    pub fn sessions(mut self, running: u32, max: u32) -> Self {
        self.sessions = running;
        self.max_sessions = max;
        self
    }

    /// Sessions of the requesting user on this candidate.
    pub fn user_sessions(mut self, n: u32) -> Self {
        self.user_sessions = n;
        self
    }

    /// Reported CPU and memory load, fractions from 0 to 1.
    pub fn reported_load(mut self, cpu: f32, memory: f32) -> Self {
        self.cpu_load = cpu;
        self.memory_load = memory;
        self
    }
}

/// Indices `0..n` ordered by `key`, smallest first; equal keys keep index order (lower id
/// first). NaN keys sort after every number.
pub fn rank_ascending<K: SortKey>(n: usize, mut key: impl FnMut(usize) -> K) -> Vec<u32> {
    rank_by_bits(n, |i| key(i).sort_bits())
}

/// Indices `0..n` ordered by `key`, largest first; equal keys keep index order (lower id
/// first). NaN keys sort after every number.
pub fn rank_descending<K: SortKey>(n: usize, mut key: impl FnMut(usize) -> K) -> Vec<u32> {
    rank_by_bits(n, |i| {
        let bits = key(i).sort_bits();
        // Inverting the bits reverses the order; a NaN still goes last.
        if bits == K::NAN_BITS { bits } else { !bits }
    })
}

fn rank_by_bits(n: usize, mut bits: impl FnMut(usize) -> u64) -> Vec<u32> {
    let keyed: Vec<(u64, u32)> = (0..n).map(|i| (bits(i), i as u32)).collect();
    sort_keyed(keyed).into_iter().map(|(_, i)| i).collect()
}

/// Below this many candidates a comparison sort is cheaper than bucketing first.
const RADIX_FROM: usize = 64;

/// A bucket up to this size is finished by insertion sort.
const INSERTION_UP_TO: usize = 16;

/// `(key, index)` pairs, given in index order, sorted by key and then by index.
///
/// One pass of a most-significant-digit radix sort, then each bucket sorted on its own:
/// the keys go into 256 buckets by the highest 8 bits in which they differ (found by one
/// pass over them), keeping index order within a bucket; a bucket of a few keys is then
/// finished by insertion sort. For spread-out keys (loads, say) that is a handful of
/// straight-line passes, which wasm runs close to native speed, instead of a comparison
/// sort's `n log n` branches, which cost it 2 to 2.5x native. Keys that crowd into one
/// bucket fall back to the comparison sort there.
fn sort_keyed(mut keyed: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    let n = keyed.len();
    if n < RADIX_FROM {
        // The index is part of the tuple, so an unstable sort gives the same unique order.
        keyed.sort_unstable();
        return keyed;
    }
    let first = keyed[0].0;
    let differing = keyed.iter().fold(0, |bits, &(key, _)| bits | (key ^ first));
    if differing == 0 {
        return keyed; // one key: index order
    }
    let shift = (64 - differing.leading_zeros()).saturating_sub(8);
    let digit = |key: u64| ((key >> shift) & 0xff) as usize;
    let mut starts = [0usize; 257];
    for &(key, _) in &keyed {
        starts[digit(key) + 1] += 1;
    }
    for d in 0..256 {
        starts[d + 1] += starts[d];
    }
    let mut next = starts;
    let mut bucketed = vec![(0u64, 0u32); n];
    for &(key, index) in &keyed {
        let d = digit(key);
        bucketed[next[d]] = (key, index);
        next[d] += 1;
    }
    for d in 0..256 {
        let bucket = &mut bucketed[starts[d]..starts[d + 1]];
        if bucket.len() <= INSERTION_UP_TO {
            insertion_sort(bucket);
        } else {
            bucket.sort_unstable();
        }
    }
    bucketed
}

fn insertion_sort(items: &mut [(u64, u32)]) {
    for i in 1..items.len() {
        let item = items[i];
        let mut j = i;
        while j > 0 && items[j - 1] > item {
            items[j] = items[j - 1];
            j -= 1;
        }
        items[j] = item;
    }
}

/// A value that orders candidates, mapped to `u64` bits whose unsigned order is the value's
/// order.
pub trait SortKey: Copy {
    /// The bits every NaN maps to; no other value maps to them.
    const NAN_BITS: u64;
    fn sort_bits(self) -> u64;
}

impl SortKey for f64 {
    const NAN_BITS: u64 = u64::MAX;
    fn sort_bits(self) -> u64 {
        if self.is_nan() {
            return Self::NAN_BITS;
        }
        // IEEE 754 total order: flip every bit of negatives, only the sign bit of positives.
        let b = (self + 0.0).to_bits(); // + 0.0 turns -0.0 into 0.0
        if b >> 63 == 1 { !b } else { b | (1 << 63) }
    }
}

impl SortKey for f32 {
    const NAN_BITS: u64 = u64::MAX;
    fn sort_bits(self) -> u64 {
        (self as f64).sort_bits()
    }
}

macro_rules! unsigned_sort_key {
    ($($t:ty),*) => {$(
        impl SortKey for $t {
            // Never produced: these integers are at most 32 bits wide.
            const NAN_BITS: u64 = u64::MAX;
            fn sort_bits(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
unsigned_sort_key!(u8, u16, u32);

/// Glue between the generated export and a [`Strategy`]; used by
/// [`export_strategy!`](crate::export_strategy).
#[doc(hidden)]
pub fn __rank<S: Strategy>(
    request: PlacementRequest,
    candidates: Candidates,
) -> Result<Vec<u32>, String> {
    if !candidates.is_well_formed() {
        return Err("candidate columns differ in length".to_string());
    }
    S::rank(&request, &candidates)
}

/// Export a [`Strategy`] as this component's `strategy` world.
///
/// ```ignore
/// struct Emptiest;
/// impl zonebroker_plugin_sdk::strategy::Strategy for Emptiest { /* ... */ }
/// zonebroker_plugin_sdk::export_strategy!(Emptiest);
/// ```
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        #[doc(hidden)]
        pub struct __ZonebrokerStrategyExport;

        impl $crate::__bindings::strategy::exports::zonebroker::plugin::balancer::Guest
            for __ZonebrokerStrategyExport
        {
            fn rank(
                request: $crate::strategy::PlacementRequest,
                candidates: $crate::strategy::Candidates,
            ) -> ::core::result::Result<::std::vec::Vec<u32>, ::std::string::String>
            {
                $crate::strategy::__rank::<$strategy>(request, candidates)
            }
        }

        // Native builds (unit tests) export nothing: only a component has these exports.
        #[cfg(target_arch = "wasm32")]
        $crate::__bindings::strategy::__export_strategy_world!(
            __ZonebrokerStrategyExport with_types_in $crate::__bindings::strategy
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The radix sort gives exactly the order of a comparison sort on `(key, index)`, for
    /// sizes on both sides of its threshold and keys that share all, some or no bytes.
    #[test]
    fn the_radix_sort_orders_as_a_comparison_sort_does() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let shapes: [fn(u64) -> u64; 5] = [
            |_| 42,
            |r| r % 4,
            |r| r,
            |r| (r % 1000) << 40,
            |r| (r as f64 / u64::MAX as f64).sort_bits(),
        ];
        for n in [0, 1, 2, RADIX_FROM - 1, RADIX_FROM, 257, 1_000, 5_000] {
            for shape in shapes {
                let keyed: Vec<(u64, u32)> = (0..n).map(|i| (shape(random()), i as u32)).collect();
                let mut expected = keyed.clone();
                expected.sort_unstable();
                assert_eq!(sort_keyed(keyed), expected, "{n} keys");
            }
        }
    }

    #[test]
    fn float_keys_sort_in_numeric_order_with_nan_last() {
        let keys = [
            0.5,
            -1.0,
            f64::NAN,
            0.0,
            -0.0,
            f64::INFINITY,
            2.0,
            f64::NEG_INFINITY,
        ];
        let ranking = rank_ascending(keys.len(), |i| keys[i]);
        // -0.0 and 0.0 tie, so they keep index order (3 before 4).
        assert_eq!(ranking, [7, 1, 3, 4, 0, 6, 5, 2]);
        let ranking = rank_descending(keys.len(), |i| keys[i]);
        assert_eq!(ranking, [5, 6, 0, 3, 4, 1, 7, 2]);
    }

    #[test]
    fn ties_keep_index_order_in_both_directions() {
        let keys = [1u32, 0, 1, 0, 1];
        assert_eq!(rank_ascending(5, |i| keys[i]), [1, 3, 0, 2, 4]);
        assert_eq!(rank_descending(5, |i| keys[i]), [0, 2, 4, 1, 3]);
        assert_eq!(rank_descending(3, |_| u32::MAX), [0, 1, 2]);
        assert_eq!(rank_ascending(3, |i| [0u32, u32::MAX, 7][i]), [0, 2, 1]);
    }

    #[test]
    fn fractions_of_zero_totals_are_empty_or_full() {
        assert_eq!(fraction(0.0, 0.0), 0.0);
        assert_eq!(fraction(1.0, 0.0), 1.0);
        assert_eq!(fraction(1.0, 4.0), 0.25);
        assert_eq!(fraction(6.0, 4.0), 1.5);
    }

    #[test]
    fn load_is_the_larger_fraction_and_free_slots_saturate() {
        let candidates = Candidates::from_rows([
            Candidate::new()
                .cores(4.0, 1.0)
                .memory(100, 50)
                .sessions(2, 4),
            Candidate::new()
                .cores(4.0, 3.0)
                .memory(100, 10)
                .sessions(5, 4),
        ]);
        assert_eq!(candidates.load(0), 0.5);
        assert_eq!(candidates.load(1), 0.75);
        assert_eq!(candidates.free_slots(0), 2);
        assert_eq!(candidates.free_slots(1), 0);
        assert_eq!(candidates.row(1).sessions, 5);
    }

    #[test]
    fn malformed_columns_are_refused_before_the_strategy_runs() {
        struct Never;
        impl Strategy for Never {
            fn rank(_: &PlacementRequest, _: &Candidates) -> Result<Vec<u32>, String> {
                unreachable!("must not be called")
            }
        }
        let mut candidates = Candidates::from_rows([Candidate::new(), Candidate::new()]);
        candidates.cpu_load.pop();
        assert!(!candidates.is_well_formed());
        assert!(__rank::<Never>(PlacementRequest::default(), candidates).is_err());
    }
}
