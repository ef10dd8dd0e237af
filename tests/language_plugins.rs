//! Strategies in Python and JavaScript, built from source with their own toolchains
//! (componentize-py, componentize-js) as a plugin author builds them: their native tests
//! pass, they rank as the Rust example does, they serve sessions through the real server,
//! and a Python strategy that misbehaves is contained like a Rust one.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zonebroker::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};
use zonebroker::plugins::{CallError, CallLimits, PluginRuntime, RuntimeConfig};
use zonebroker_test_support::api::{image, upload_plugin};
use zonebroker_test_support::languages::{
    Language, componentize_js, run_javascript_tests, run_python_tests, strategy_component,
};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, example_strategy, python_tool};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const PYTHON_EXAMPLE: &str = "examples/python-spread-users";
const JAVASCRIPT_EXAMPLE: &str = "examples/javascript-spread-users";
const HOSTILE_PYTHON: &str = "tests/fixtures/hostile-python";

fn python_example() -> Vec<u8> {
    strategy_component(Language::Python, PYTHON_EXAMPLE)
}

fn javascript_example() -> Vec<u8> {
    strategy_component(Language::JavaScript, JAVASCRIPT_EXAMPLE)
}

#[test]
fn the_examples_pass_their_own_native_tests() {
    run_python_tests(PYTHON_EXAMPLE);
    run_javascript_tests(JAVASCRIPT_EXAMPLE);
}

/// `PATH` with the plugin toolchains `cargo xtask setup` installed in front.
fn path_with_toolchains() -> std::ffi::OsString {
    let tools = [
        python_tool("componentize-py")
            .parent()
            .unwrap()
            .to_path_buf(),
        componentize_js().parent().unwrap().to_path_buf(),
    ];
    let current = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(tools.into_iter().chain(std::env::split_paths(&current))).unwrap()
}

/// Run `program args` in `dir` with the toolchains on the PATH; panics with its output if
/// it fails, else answers its stdout.
fn run_in(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_toolchains())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{program} {args:?} in {}:\n{stdout}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `zonebroker plugin new NAME --lang python|javascript` scaffolds a project whose own
/// commands (from its README) pass its tests, build a component and pass the server's check.
#[test]
fn scaffolded_python_and_javascript_projects_test_build_and_pass_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let python = run_in(
        dir.path(),
        BIN,
        &["plugin", "new", "py-rule", "--lang", "python"],
    );
    assert!(python.contains("bindings generated"), "{python}");
    let project = dir.path().join("py-rule");
    assert!(project.join("wit/zonebroker.wit").exists() && project.join("wit_world").exists());
    run_in(
        &project,
        &python_tool("python").to_string_lossy(),
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"],
    );
    run_in(
        &project,
        "componentize-py",
        &[
            "-d",
            "wit",
            "-w",
            "strategy",
            "componentize",
            "app",
            "-o",
            "py_rule.wasm",
        ],
    );
    let check = run_in(&project, BIN, &["plugin", "check", "py_rule.wasm"]);
    assert!(check.contains("ok: the server would accept"), "{check}");

    let javascript = run_in(
        dir.path(),
        BIN,
        &["plugin", "new", "js-rule", "--lang", "javascript"],
    );
    assert!(javascript.contains("npm run build"), "{javascript}");
    let project = dir.path().join("js-rule");
    run_in(&project, "npm", &["test", "--silent"]);
    run_in(&project, "npm", &["run", "build", "--silent"]);
    let check = run_in(&project, BIN, &["plugin", "check", "js_rule.wasm"]);
    assert!(check.contains("ok: the server would accept"), "{check}");
}

/// Pseudo-random candidates (a fixed linear congruential sequence): loads, users' sessions
/// and unknown totals mixed, with ties.
fn mixed_candidates(n: usize, seed: u64) -> CandidateColumns {
    let mut state = seed;
    let mut next = move |modulus: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % modulus
    };
    (0..n)
        .map(|_| {
            let cores_total = [0.0, 4.0, 8.0, 16.0][next(4) as usize];
            CandidateRow {
                cores_total,
                cores_reserved: next(9) as f64,
                sessions: next(10) as u32,
                max_sessions: 10,
                user_sessions: next(3) as u32,
                ..Default::default()
            }
        })
        .collect()
}

/// The same rule in three languages gives the same rankings, on many inputs.
#[test]
fn python_javascript_and_rust_rank_alike() {
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let plugins = [
        ("rust", runtime.load(&example_strategy()).unwrap()),
        ("python", runtime.load(&python_example()).unwrap()),
        ("javascript", runtime.load(&javascript_example()).unwrap()),
    ];
    for (n, seed) in [(0, 1), (1, 2), (7, 3), (50, 4), (300, 5)] {
        let mut rankings = Vec::new();
        for (language, plugin) in &plugins {
            let mut columns = mixed_candidates(n, seed);
            let ranking = runtime
                .rank(plugin, &PlacementRequest::default(), &mut columns)
                .unwrap_or_else(|e| panic!("{language} at {n} candidates: {e}"));
            rankings.push((language, ranking.indices().to_vec()));
        }
        for (language, ranking) in &rankings[1..] {
            assert_eq!(
                ranking, &rankings[0].1,
                "{language} against rust at {n} candidates"
            );
        }
    }
}

/// Check in a 64-core agent and a 8-core one; answers their ids.
fn two_agents(server: &Server) -> Vec<String> {
    [("big", 64.0), ("small", 8.0)]
        .iter()
        .map(|(hostname, cores)| {
            let body = json!({
                "hostname": hostname, "address": "10.0.0.1", "port": 4902,
                "cores": cores, "memory": 1u64 << 40, "max_sessions": 10,
            });
            server.check_in("default", body)["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Place a fixed sequence of sessions with `strategy` as the zone's strategy; answer the
/// agents they went to, then end them all.
fn placements_with(server: &Server, strategy: &str) -> Vec<String> {
    let (status, answer) = server.call(
        "default",
        "PATCH",
        "/api/v1/zones/default",
        Some(&json!({ "load_balance_strategy": strategy })),
    );
    assert_eq!(status, 200, "{answer}");
    let users = ["bob", "bob", "bob", "bob", "ada", "bob", "ada", "ada"];
    let sessions: Vec<Value> = users
        .iter()
        .map(|user| {
            let (status, session) = server.call(
                "default",
                "POST",
                "/api/v1/sessions",
                Some(&json!({ "image": "desktop", "user": user })),
            );
            assert_eq!(status, 201, "{strategy}: {session}");
            session
        })
        .collect();
    for session in &sessions {
        let id = session["id"].as_str().unwrap();
        let (status, answer) =
            server.call("default", "DELETE", &format!("/api/v1/sessions/{id}"), None);
        assert_eq!(status, 204, "{answer}");
    }
    sessions
        .iter()
        .map(|s| s["agent_hostname"].as_str().unwrap().to_string())
        .collect()
}

/// Python and JavaScript strategies uploaded to the real server place sessions exactly as
/// the Rust example does, and not as the built-in `least-load` would.
#[test]
fn python_and_javascript_strategies_serve_sessions_through_the_server() {
    let server = Server::start(BIN, ServerOptions::default());
    two_agents(&server);
    image(&server, ADMIN_TOKEN, "desktop");
    for (name, bytes) in [
        ("spread-rust", example_strategy()),
        ("spread-python", python_example()),
        ("spread-javascript", javascript_example()),
    ] {
        let started = Instant::now();
        upload_plugin(&server, "default", name, &bytes, true);
        eprintln!(
            "{name}: {} bytes uploaded and accepted in {:?}",
            bytes.len(),
            started.elapsed()
        );
    }
    // Bob's first four sessions: spread-users puts two on each agent (his own sessions count
    // first); least-load puts three on the big agent (the small one fills faster).
    let reference = placements_with(&server, "spread-rust");
    let on_big = |placements: &[String]| placements[..4].iter().filter(|a| *a == "big").count();
    assert_eq!(on_big(&reference), 2, "{reference:?}");
    let least_load = placements_with(&server, "least-load");
    assert_eq!(on_big(&least_load), 3, "{least_load:?}");
    assert_eq!(placements_with(&server, "spread-python"), reference);
    assert_eq!(placements_with(&server, "spread-javascript"), reference);
}

/// The hostile Python fixture picks its misbehaviour by the request's `gpus`.
fn hostile_call(
    runtime: &PluginRuntime,
    plugin: &zonebroker::plugins::LoadedPlugin,
    behaviour: u32,
) -> (Result<Vec<u32>, CallError>, Duration) {
    let request = PlacementRequest {
        gpus: behaviour,
        ..PlacementRequest::default()
    };
    let mut columns = mixed_candidates(3, 9);
    let started = Instant::now();
    let result = runtime
        .rank(plugin, &request, &mut columns)
        .map(|r| r.indices().to_vec());
    (result, started.elapsed())
}

#[test]
fn a_python_strategy_that_misbehaves_is_contained() {
    let deadline = Duration::from_millis(300);
    let runtime = PluginRuntime::new(RuntimeConfig {
        strategy_limits: CallLimits {
            deadline,
            ..CallLimits::STRATEGY
        },
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = runtime
        .load(&strategy_component(Language::Python, HOSTILE_PYTHON))
        .unwrap();
    let behaves = |after: &str| {
        let (result, _) = hostile_call(&runtime, &plugin, 0);
        assert_eq!(result.unwrap(), [0, 1, 2], "a good call after {after}");
    };
    behaves("nothing");

    // Opening a host file: no directory is preopened, so Python finds no file.
    let (result, _) = hostile_call(&runtime, &plugin, 1);
    match result {
        Err(CallError::Trap { stderr, .. }) => {
            assert!(stderr.contains("FileNotFoundError"), "{stderr}")
        }
        other => panic!("opening a file: {other:?}"),
    }
    behaves("opening a file");

    // Waiting for the clock to move, and looping forever: the CPU budget or the deadline
    // ends both.
    for (behaviour, what) in [(2, "waiting for the clock"), (3, "looping forever")] {
        let (result, elapsed) = hostile_call(&runtime, &plugin, behaviour);
        assert!(
            matches!(
                result,
                Err(CallError::DeadlineExceeded { .. } | CallError::CpuBudgetExhausted { .. })
            ),
            "{what}: {result:?}"
        );
        eprintln!("{what}: stopped after {elapsed:?}: {result:?}");
        behaves(what);
    }

    // Sleeping an hour returns at once on the stopped clock, and the world is empty.
    let (result, elapsed) = hostile_call(&runtime, &plugin, 4);
    match result {
        Err(CallError::Guest(report)) => assert_eq!(
            report, "monotonic=0.0 time=0.0 environ={} cwd=/",
            "what the sandbox shows"
        ),
        other => panic!("sleeping: {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "slept for real: {elapsed:?}"
    );

    // Connecting out: the socket is refused.
    let (result, _) = hostile_call(&runtime, &plugin, 5);
    match result {
        Err(CallError::Trap { stderr, .. }) => {
            assert!(stderr.contains("PermissionError"), "{stderr}")
        }
        other => panic!("connecting out: {other:?}"),
    }
    behaves("connecting out");
}
