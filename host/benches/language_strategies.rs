//! One strategy, `spread-users`, written in Rust, Python and JavaScript, called through the
//! host at 0, 10 and 1,000 candidates, against the Rust version compiled natively.
//!
//! The Python and JavaScript components are built from `examples/` with componentize-py
//! and componentize-js (installed by `cargo xtask setup`). 0 candidates is the fixed cost of
//! a call: instantiating the component (for an interpreter, its whole pre-initialised heap)
//! and calling in.
//!
//! `cargo bench -p zonebroker --bench language_strategies`; results in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spread_users::SpreadUsers;
use zonebroker::domain::ranking::{CandidateColumns, PlacementRequest};
use zonebroker::plugins::{PluginRuntime, RuntimeConfig};
use zonebroker_plugin_sdk::strategy::Strategy;
use zonebroker_test_support::example_strategy;
use zonebroker_test_support::languages::{Language, strategy_component};

mod common;
use common::{rows, sdk_candidates};

const SIZES: [usize; 3] = [0, 10, 1_000];

fn languages(c: &mut Criterion) {
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let plugins = [
        ("rust", runtime.load(&example_strategy()).unwrap()),
        (
            "python",
            runtime
                .load(&strategy_component(
                    Language::Python,
                    "examples/python-spread-users",
                ))
                .unwrap(),
        ),
        (
            "javascript",
            runtime
                .load(&strategy_component(
                    Language::JavaScript,
                    "examples/javascript-spread-users",
                ))
                .unwrap(),
        ),
    ];
    let request = PlacementRequest::default();
    let sdk_request = zonebroker_plugin_sdk::strategy::PlacementRequest::default();

    let mut group = c.benchmark_group("spread-users rank");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    for n in SIZES {
        let rows = rows(n);
        let native_input = sdk_candidates(&rows);
        group.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| SpreadUsers::rank(black_box(&sdk_request), black_box(&native_input)).unwrap())
        });
        for (language, plugin) in &plugins {
            let mut columns: CandidateColumns = rows.iter().copied().collect();
            group.bench_with_input(BenchmarkId::new(*language, n), &n, |b, _| {
                b.iter(|| {
                    runtime
                        .rank(plugin, black_box(&request), black_box(&mut columns))
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, languages);
criterion_main!(benches);
