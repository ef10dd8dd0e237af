//! One `rank` call through the host (fresh store, instantiation, lowering, the guest's
//! ranking, lifting, validation) against the same algorithm compiled natively, at 10 to
//! 10,000 candidates.
//!
//! `cargo bench -p zonebroker --bench strategy_call`; results in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use zonebroker::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};
use zonebroker::plugins::{BUILTIN_STRATEGIES, PluginRuntime, RuntimeConfig};
use zonebroker_plugin_sdk::strategy::{Candidate, Candidates, Strategy};
use zonebroker_strategy_least_load::LeastLoad;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn rows(n: usize) -> Vec<CandidateRow> {
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
                cpu_load: 0.5,
                memory_load: 0.5,
                ..Default::default()
            }
        })
        .collect()
}

fn sdk_candidates(rows: &[CandidateRow]) -> Candidates {
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
