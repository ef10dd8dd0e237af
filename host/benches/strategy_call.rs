//! One `rank` call through the host (fresh store, instantiation, lowering, the guest's
//! ranking, lifting, validation) against the same algorithm compiled natively, at 10 to
//! 10,000 candidates.
//!
//! `cargo bench -p zonebroker --bench strategy_call`; results in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use zonebroker::domain::ranking::{CandidateColumns, PlacementRequest};
use zonebroker::plugins::{BUILTIN_STRATEGIES, PluginRuntime, RuntimeConfig};
use zonebroker_plugin_sdk::strategy::Strategy;
use zonebroker_strategy_least_load::LeastLoad;

mod common;
use common::{rows, sdk_candidates};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn rank_call(c: &mut Criterion) {
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let least_load = BUILTIN_STRATEGIES
        .iter()
        .find(|(n, _)| *n == "least-load")
        .unwrap()
        .1;
    let plugin = runtime.load(least_load).unwrap();
    let request = PlacementRequest::default();
    let sdk_request = zonebroker_plugin_sdk::strategy::PlacementRequest::default();

    let mut group = c.benchmark_group("least-load rank");
    for n in SIZES {
        let rows = rows(n);
        let native_input = sdk_candidates(&rows);
        group.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| LeastLoad::rank(black_box(&sdk_request), black_box(&native_input)).unwrap())
        });
        let mut columns: CandidateColumns = rows.iter().copied().collect();
        group.bench_with_input(BenchmarkId::new("wasm", n), &n, |b, _| {
            b.iter(|| {
                runtime
                    .rank(&plugin, black_box(&request), black_box(&mut columns))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rank_call);
criterion_main!(benches);
