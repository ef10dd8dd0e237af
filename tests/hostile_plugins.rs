//! Misbehaving plugins, built from `tests/fixtures/hostile`: each ends in a typed error
//! within its budget, and the host keeps serving other calls meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zonebroker::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest, RankingError};
use zonebroker::plugins::{
    BUILTIN_STRATEGIES, CallError, CallLimits, LoadError, PluginKind, PluginRuntime, Registry,
    RegistryError, RuntimeConfig,
};
use zonebroker_test_support::fixture;

const DEADLINE: Duration = Duration::from_millis(200);
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(400);

fn runtime_with(limits: CallLimits) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        strategy_limits: limits,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn runtime() -> PluginRuntime {
    runtime_with(CallLimits {
        deadline: DEADLINE,
        ..CallLimits::STRATEGY
    })
}

fn candidates(n: usize) -> CandidateColumns {
    (0..n)
        .map(|i| CandidateRow {
            cores_total: 4.0,
            cores_reserved: (i % 4) as f64,
            sessions: 1,
            max_sessions: 8,
            ..Default::default()
        })
        .collect()
}

/// Load fixture `name` and call it once; answer the error and how long the call took.
fn call_fixture(runtime: &PluginRuntime, name: &str) -> (CallError, Duration) {
    let plugin = runtime
        .load(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut columns = candidates(3);
    let start = Instant::now();
    let result = runtime.rank(&plugin, &PlacementRequest::default(), &mut columns);
    let elapsed = start.elapsed();
    (result.expect_err(name), elapsed)
}

#[test]
fn an_infinite_loop_stops_at_the_wall_clock_deadline() {
    // Fuel enough for minutes: only the deadline can stop it.
    let runtime = runtime_with(CallLimits {
        deadline: DEADLINE,
        fuel: u64::MAX / 2,
        ..CallLimits::STRATEGY
    });
    let (error, elapsed) = call_fixture(&runtime, "infinite_loop");
    assert!(
        matches!(error, CallError::DeadlineExceeded { .. }),
        "{error:?}"
    );
    assert!(
        elapsed >= DEADLINE - Duration::from_millis(5),
        "{elapsed:?}"
    );
    assert!(elapsed < DEADLINE + SLACK, "{elapsed:?}");
}

#[test]
fn an_infinite_loop_stops_when_its_cpu_budget_is_spent() {
    // A deadline far away: only fuel can stop it.
    let runtime = runtime_with(CallLimits {
        deadline: Duration::from_secs(60),
        fuel: 50_000_000,
        ..CallLimits::STRATEGY
    });
    let (error, elapsed) = call_fixture(&runtime, "infinite_loop");
    assert!(
        matches!(error, CallError::CpuBudgetExhausted { fuel: 50_000_000 }),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let (error, elapsed) = call_fixture(&runtime(), "memory_bomb");
    match error {
        CallError::MemoryLimitExceeded { requested, cap } => {
            assert_eq!(cap, CallLimits::STRATEGY.memory_bytes);
            assert!(requested > cap);
        }
        other => panic!("expected the memory cap, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + SLACK, "{elapsed:?}");
}

#[test]
fn a_panic_is_a_trap_that_carries_the_panic_message() {
    let (error, _) = call_fixture(&runtime(), "panics");
    match error {
        CallError::Trap { trap, stderr } => {
            assert!(trap.contains("unreachable"), "{trap}");
            assert!(
                stderr.contains("deliberate panic with 3 candidates"),
                "{stderr}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// Deep recursion exhausts either the engine's native wasm stack or, first with the small
/// stack plugins are linked with, the guest's shadow stack in linear memory.
#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let (error, elapsed) = call_fixture(&runtime(), "stack_overflow");
    match &error {
        CallError::StackOverflow => {}
        CallError::Trap { trap, .. } => assert!(trap.contains("shadow-stack overflow"), "{trap}"),
        other => panic!("expected a stack overflow, got {other:?}"),
    }
    assert!(elapsed < DEADLINE + SLACK, "{elapsed:?}");
}

#[test]
fn out_of_range_and_repeated_indices_are_refused() {
    let runtime = runtime();
    let (error, _) = call_fixture(&runtime, "out_of_range");
    assert!(
        matches!(
            error,
            CallError::InvalidRanking(RankingError::OutOfRange {
                position: 1,
                index: 8,
                candidates: 3
            })
        ),
        "{error:?}"
    );
    let (error, _) = call_fixture(&runtime, "repeated_index");
    assert!(
        matches!(
            error,
            CallError::InvalidRanking(RankingError::Repeated {
                position: 2,
                index: 0
            })
        ),
        "{error:?}"
    );
}

#[test]
fn a_flood_of_output_is_capped_and_a_huge_answer_refused() {
    let runtime = runtime();
    let plugin = runtime.load(&fixture("huge_output")).unwrap();
    let mut columns = candidates(3);
    let (result, output) =
        runtime.rank_with_output(&plugin, &PlacementRequest::default(), &mut columns);
    assert!(
        matches!(
            result,
            Err(CallError::InvalidRanking(RankingError::TooLong {
                len: 8_000_000,
                candidates: 3
            }))
        ),
        "{result:?}"
    );
    let cap = CallLimits::STRATEGY.output_bytes;
    assert!(output.truncated);
    assert!(
        output.stdout.len() <= cap,
        "stdout kept {} bytes",
        output.stdout.len()
    );
    assert!(
        output.stderr.len() <= cap,
        "stderr kept {} bytes",
        output.stderr.len()
    );
    let logged: usize = output.log.iter().map(|l| l.message.len()).sum();
    assert!(logged <= cap && logged > 0, "log kept {logged} bytes");
}

/// Files and sockets are served the way language runtimes need them to load, with nothing
/// real behind them: the attempt fails at call time. HTTP stays refused at load.
#[test]
fn files_and_sockets_fail_at_call_time_and_http_is_refused_at_load() {
    let runtime = runtime();
    for (name, failure) in [
        // wasi-libc finds no preopened directory for the path.
        ("reads_files", "No such file or directory"),
        // `tcp-create-socket` answers access-denied.
        ("opens_sockets", "ermission denied"),
    ] {
        let (error, _) = call_fixture(&runtime, name);
        match error {
            CallError::Guest(message) => assert!(message.contains(failure), "{name}: {message}"),
            other => panic!("{name}: expected the guest's own error, got {other:?}"),
        }
    }
    match runtime.load(&fixture("calls_http")) {
        Err(LoadError::ForbiddenImport {
            kind: PluginKind::Strategy,
            import,
        }) => assert!(import.starts_with("wasi:http/"), "{import}"),
        other => panic!("expected a forbidden import, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_a_component_are_refused_with_the_reason() {
    let runtime = runtime();
    assert!(matches!(
        runtime.load(b"#!/bin/sh\necho hi\n"),
        Err(LoadError::NotWasm)
    ));
    assert!(matches!(runtime.load(b""), Err(LoadError::NotWasm)));
    // The smallest valid core module: magic and version 1.
    assert!(matches!(
        runtime.load(b"\0asm\x01\0\0\0"),
        Err(LoadError::NotAComponent)
    ));
    // A component header followed by garbage.
    assert!(matches!(
        runtime.load(b"\0asm\x0d\0\x01\0\xff\xff\xff\xff"),
        Err(LoadError::Compile(_))
    ));
}

#[test]
fn a_component_of_another_world_cannot_become_a_strategy() {
    let runtime = Arc::new(runtime());
    let registry = Registry::new(runtime.clone());
    let strategy = Arc::new(runtime.load(BUILTIN_STRATEGIES[0].1).unwrap());
    registry.activate("mine", strategy, false).unwrap();
    let generator = Arc::new(runtime.load(&fixture("echo_generator")).unwrap());
    match registry.activate("mine", generator.clone(), false) {
        Err(RegistryError::KindMismatch {
            existing: PluginKind::Strategy,
            offered: PluginKind::ScriptGenerator,
            ..
        }) => {}
        other => panic!("expected a kind mismatch, got {other:?}"),
    }
    let mut columns = candidates(2);
    let err = runtime
        .rank(&generator, &PlacementRequest::default(), &mut columns)
        .unwrap_err();
    assert!(matches!(err, CallError::WrongKind { .. }), "{err:?}");
}

/// While hostile calls burn their whole budget on other threads, well-behaved calls keep
/// succeeding at their normal pace.
#[test]
fn the_host_keeps_serving_while_hostile_plugins_run() {
    let hostile_deadline = Duration::from_secs(2);
    let runtime = Arc::new(runtime_with(CallLimits {
        deadline: hostile_deadline,
        fuel: u64::MAX / 2,
        ..CallLimits::STRATEGY
    }));
    let looping = Arc::new(runtime.load(&fixture("infinite_loop")).unwrap());
    let good = runtime.load(BUILTIN_STRATEGIES[0].1).unwrap();

    let start = Instant::now();
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let (runtime, looping) = (runtime.clone(), looping.clone());
            std::thread::spawn(move || {
                let mut columns = candidates(3);
                let result = runtime.rank(&looping, &PlacementRequest::default(), &mut columns);
                (result, Instant::now())
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(50));
    let mut served = 0;
    for _ in 0..200 {
        let mut columns = candidates(100);
        runtime
            .rank(&good, &PlacementRequest::default(), &mut columns)
            .expect("a well-behaved call must succeed");
        served += 1;
    }
    let good_done = Instant::now();

    for handle in hostile {
        let (result, ended) = handle.join().unwrap();
        assert!(
            matches!(result, Err(CallError::DeadlineExceeded { .. })),
            "{result:?}"
        );
        assert!(
            good_done < ended,
            "the {served} good calls finished only after a hostile call ended ({:?} vs {:?})",
            good_done - start,
            ended - start
        );
    }
}

/// World and imports are read from the bytes before anything is compiled: with a compile
/// budget too small for any compilation, a component with a forbidden import is still
/// refused for its import, while a valid one runs out of compile time.
#[test]
fn imports_are_checked_before_compiling_and_compilation_has_a_deadline() {
    let runtime = PluginRuntime::new(RuntimeConfig {
        max_compile_time: Duration::from_nanos(1),
        max_concurrent_compiles: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let cache = zonebroker::plugins::NoCache;
    let calls_http = fixture("calls_http");
    let started = Instant::now();
    match runtime.load_upload(&calls_http, &cache) {
        Err(LoadError::ForbiddenImport { import, .. }) => {
            assert!(import.starts_with("wasi:http/"), "{import}")
        }
        other => panic!("expected a forbidden import, got {other:?}"),
    }
    eprintln!("refused for its import in {:?}", started.elapsed());
    match runtime.load_upload(&fixture("plain_command"), &cache) {
        Err(LoadError::UnknownWorld { .. }) => {}
        other => panic!("expected an unknown world, got {other:?}"),
    }
    match runtime.load_upload(BUILTIN_STRATEGIES[0].1, &cache) {
        Err(LoadError::CompileTimeout { limit }) => assert_eq!(limit, Duration::from_nanos(1)),
        other => panic!("expected a compile timeout, got {other:?}"),
    }
    // The abandoned compilation keeps its slot until its thread really ends.
    assert_eq!(runtime.compiles_running(), 1);
    let until = Instant::now() + Duration::from_secs(60);
    while runtime.compiles_running() > 0 {
        assert!(Instant::now() < until, "the compile thread never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Without a deadline (an accepted version at start-up), the same bytes load.
    runtime
        .load_cached(BUILTIN_STRATEGIES[0].1, &cache)
        .unwrap();
}
