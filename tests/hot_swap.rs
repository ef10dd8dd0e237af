//! The registry's atomic swap: 8 threads call a plugin in a loop while its active version is
//! swapped back and forth, and no call fails; a call in flight finishes on its version.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use zonebroker::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};
use zonebroker::plugins::{BUILTIN_STRATEGIES, CallLimits, PluginRuntime, Registry, RuntimeConfig};
use zonebroker_test_support::fixture;

fn builtin(name: &str) -> &'static [u8] {
    BUILTIN_STRATEGIES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

/// Two candidates: least-load answers [0, 1], most-load [1, 0].
fn two_candidates() -> CandidateColumns {
    [0.5, 3.5]
        .into_iter()
        .map(|reserved| CandidateRow {
            cores_total: 4.0,
            cores_reserved: reserved,
            max_sessions: 4,
            ..Default::default()
        })
        .collect()
}

#[test]
fn swapping_under_eight_busy_threads_fails_no_call() {
    let runtime = Arc::new(PluginRuntime::new(RuntimeConfig::default()).unwrap());
    let registry = Arc::new(Registry::new(runtime.clone()));
    let ascending = Arc::new(runtime.load(builtin("least-load")).unwrap());
    let descending = Arc::new(runtime.load(builtin("most-load")).unwrap());
    registry
        .activate("swappy", ascending.clone(), false)
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (saw_ascending, saw_descending, failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = Arc::new(Barrier::new(9));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (registry, stop, start) = (registry.clone(), stop.clone(), start.clone());
            let (up, down, failures) = (
                saw_ascending.clone(),
                saw_descending.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut calls = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut columns = two_candidates();
                    match registry.rank("swappy", &PlacementRequest::default(), &mut columns) {
                        Ok(ranking) if ranking.indices() == [0, 1] => {
                            up.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(ranking) if ranking.indices() == [1, 0] => {
                            down.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    start.wait();
    for swap in 0..400 {
        let next = if swap % 2 == 0 {
            &descending
        } else {
            &ascending
        };
        registry.activate("swappy", next.clone(), false).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    stop.store(true, Ordering::Relaxed);
    let calls: usize = callers.into_iter().map(|h| h.join().unwrap()).sum();

    assert_eq!(failures.load(Ordering::Relaxed), 0, "of {calls} calls");
    assert!(saw_ascending.load(Ordering::Relaxed) > 0);
    assert!(saw_descending.load(Ordering::Relaxed) > 0);
    assert!(calls > 400, "only {calls} calls ran during the swaps");
}

#[test]
fn a_call_in_flight_finishes_on_the_version_it_started_with() {
    let runtime = Arc::new(
        PluginRuntime::new(RuntimeConfig {
            strategy_limits: CallLimits {
                deadline: Duration::from_secs(10),
                fuel: u64::MAX / 2,
                ..CallLimits::STRATEGY
            },
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let registry = Arc::new(Registry::new(runtime.clone()));
    let slow_ascending = Arc::new(runtime.load(&fixture("slow_ascending")).unwrap());
    let descending = Arc::new(runtime.load(builtin("most-load")).unwrap());
    registry.activate("swappy", slow_ascending, false).unwrap();

    let in_flight = std::thread::spawn({
        let registry = registry.clone();
        move || {
            let mut columns = two_candidates();
            registry.rank("swappy", &PlacementRequest::default(), &mut columns)
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    let previous = registry.activate("swappy", descending, false).unwrap();
    assert!(previous.is_some());

    let mut columns = two_candidates();
    let after = registry
        .rank("swappy", &PlacementRequest::default(), &mut columns)
        .unwrap();
    assert_eq!(
        after.indices(),
        [1, 0],
        "a call after the swap uses the new version"
    );
    let before = in_flight.join().unwrap().unwrap();
    assert_eq!(
        before.indices(),
        [0, 1],
        "the call in flight keeps its version"
    );
}
