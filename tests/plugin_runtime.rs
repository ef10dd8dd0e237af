//! The plugin runtime with real components built from `plugins/` and `tests/fixtures/`:
//! the built-in strategies rank through wasm exactly as their native build does, calls are
//! deterministic and sandboxed, and kinds are checked both ways.

use zonebroker::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};
use zonebroker::domain::script::Os;
use zonebroker::plugins::{
    BUILTIN_STRATEGIES, CallError, PluginKind, PluginRuntime, RuntimeConfig,
};
use zonebroker_plugin_sdk::strategy::{Candidate, Candidates, Strategy};
use zonebroker_test_support::{example_strategy, fixture};

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig::default()).unwrap()
}

fn builtin(name: &str) -> &'static [u8] {
    BUILTIN_STRATEGIES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no built-in {name}"))
        .1
}

/// The same strategy compiled natively, through the SDK.
fn native_rank(name: &str, rows: &[CandidateRow]) -> Vec<u32> {
    let candidates = Candidates::from_rows(rows.iter().map(|r| Candidate {
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
    }));
    let request = Default::default();
    match name {
        "least-load" => zonebroker_strategy_least_load::LeastLoad::rank(&request, &candidates),
        "most-load" => zonebroker_strategy_most_load::MostLoad::rank(&request, &candidates),
        "least-kasms" => zonebroker_strategy_least_kasms::LeastKasms::rank(&request, &candidates),
        "most-kasms" => zonebroker_strategy_most_kasms::MostKasms::rank(&request, &candidates),
        other => panic!("no native {other}"),
    }
    .unwrap()
}

/// A small deterministic generator (xorshift) for test inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Candidates drawn from small value sets, so that ties and zero totals are common.
fn random_rows(rng: &mut Rng, n: usize) -> Vec<CandidateRow> {
    (0..n)
        .map(|_| {
            let cores_total = [0.0, 2.0, 4.0, 8.0][rng.below(4) as usize];
            let memory_total = [0, 4 << 30, 8 << 30][rng.below(3) as usize];
            let max_sessions = rng.below(8) as u32;
            CandidateRow {
                cores_total,
                cores_reserved: [0.0, 0.5, 1.0, 2.0][rng.below(4) as usize],
                memory_total,
                memory_reserved: [0, 1 << 30, 2 << 30][rng.below(3) as usize],
                sessions: rng.below(max_sessions as u64 + 1) as u32,
                max_sessions,
                user_sessions: rng.below(2) as u32,
                cpu_load: rng.below(100) as f32 / 100.0,
                memory_load: rng.below(100) as f32 / 100.0,
                ..Default::default()
            }
        })
        .collect()
}

#[test]
fn builtins_rank_through_wasm_exactly_as_natively() {
    let runtime = runtime();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for (name, bytes) in BUILTIN_STRATEGIES {
        let plugin = runtime.load(bytes).unwrap();
        assert_eq!(plugin.kind(), PluginKind::Strategy);
        for case in 0..150 {
            let rows = random_rows(&mut rng, case % 40);
            let mut columns: CandidateColumns = rows.iter().copied().collect();
            let wasm = runtime
                .rank(&plugin, &PlacementRequest::default(), &mut columns)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                wasm.indices(),
                native_rank(name, &rows),
                "{name} on {rows:?}"
            );
        }
    }
}

fn row(cores: (f64, f64), memory_gib: (u64, u64), sessions: (u32, u32)) -> CandidateRow {
    CandidateRow {
        cores_total: cores.0,
        cores_reserved: cores.1,
        memory_total: memory_gib.0 << 30,
        memory_reserved: memory_gib.1 << 30,
        sessions: sessions.0,
        max_sessions: sessions.1,
        ..Default::default()
    }
}

#[test]
fn each_builtin_picks_the_agent_its_name_says() {
    // load: 0.5 (cores), 0.75 (memory), 0.25; sessions: 4, 1, 2.
    let rows = [
        row((4.0, 2.0), (8, 1), (4, 10)),
        row((8.0, 1.0), (8, 6), (1, 10)),
        row((4.0, 1.0), (8, 2), (2, 10)),
    ];
    let runtime = runtime();
    for (name, expected) in [
        ("least-load", [2, 0, 1]),
        ("most-load", [1, 0, 2]),
        ("least-kasms", [1, 2, 0]),
        ("most-kasms", [0, 2, 1]),
    ] {
        let plugin = runtime.load(builtin(name)).unwrap();
        let mut columns: CandidateColumns = rows.iter().copied().collect();
        let ranking = runtime
            .rank(&plugin, &PlacementRequest::default(), &mut columns)
            .unwrap();
        assert_eq!(ranking.indices(), expected, "{name}");
    }
}

#[test]
fn columns_are_returned_intact_and_large_lists_work() {
    let runtime = runtime();
    let plugin = runtime.load(builtin("least-load")).unwrap();
    let rows = random_rows(&mut Rng(7), 10_000);
    let mut columns: CandidateColumns = rows.iter().copied().collect();
    let before = columns.clone();
    let ranking = runtime
        .rank(&plugin, &PlacementRequest::default(), &mut columns)
        .unwrap();
    assert_eq!(
        columns, before,
        "the call must hand the columns back unchanged"
    );
    assert_eq!(ranking.indices().len(), 10_000);
    assert_eq!(ranking.indices(), native_rank("least-load", &rows));
}

/// The probe also sleeps for 30 s: timers are due at once on the stopped clock (a real
/// sleep would hold the host's thread beyond the reach of the call's deadline).
#[test]
fn a_strategy_sees_no_environment_a_stopped_clock_and_fixed_randomness() {
    let runtime = runtime();
    let plugin = runtime.load(&fixture("probes_sandbox")).unwrap();
    let probe = || {
        let mut columns = CandidateColumns::default();
        match runtime.rank(&plugin, &PlacementRequest::default(), &mut columns) {
            Err(CallError::Guest(report)) => report,
            other => panic!("expected the probe's report, got {other:?}"),
        }
    };
    let started = std::time::Instant::now();
    let first = probe();
    assert!(
        first.starts_with("env=[] args=[] clock=0 slept=0ns "),
        "{first}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the probe's sleep took real time: {:?}",
        started.elapsed()
    );
    assert_eq!(probe(), first, "the same call must see the same world");
}

#[test]
fn kinds_are_checked_in_both_directions() {
    let runtime = runtime();
    let generator = runtime.load(&fixture("echo_generator")).unwrap();
    assert_eq!(generator.kind(), PluginKind::ScriptGenerator);
    let mut columns = CandidateColumns::default();
    let err = runtime
        .rank(&generator, &PlacementRequest::default(), &mut columns)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::WrongKind {
                expected: PluginKind::Strategy,
                actual: PluginKind::ScriptGenerator
            }
        ),
        "{err:?}"
    );

    let rendered = runtime
        .render(
            &generator,
            Os::Linux,
            "echo {x}",
            &[("x".into(), "1".into())],
        )
        .unwrap()
        .unwrap();
    assert_eq!(rendered, "linux:1:echo {x}");

    let strategy = runtime.load(builtin("least-load")).unwrap();
    let err = runtime.render(&strategy, Os::Windows, "", &[]).unwrap_err();
    assert!(matches!(err, CallError::WrongKind { .. }), "{err:?}");
}

#[test]
fn the_example_strategy_builds_into_a_component_that_ranks() {
    let runtime = runtime();
    let plugin = runtime.load(&example_strategy()).unwrap();
    assert_eq!(plugin.kind(), PluginKind::Strategy);
    let rows = [
        CandidateRow {
            cores_total: 8.0,
            sessions: 2,
            max_sessions: 10,
            user_sessions: 2,
            ..Default::default()
        },
        CandidateRow {
            cores_total: 8.0,
            cores_reserved: 7.0,
            sessions: 9,
            max_sessions: 10,
            ..Default::default()
        },
        CandidateRow {
            cores_total: 8.0,
            cores_reserved: 1.0,
            sessions: 3,
            max_sessions: 10,
            user_sessions: 1,
            ..Default::default()
        },
    ];
    let mut columns: CandidateColumns = rows.iter().copied().collect();
    let ranking = runtime
        .rank(&plugin, &PlacementRequest::default(), &mut columns)
        .unwrap();
    assert_eq!(ranking.indices(), [1, 2, 0]);
}

#[test]
fn the_builtin_generator_renders_templates_and_points_at_mistakes() {
    use zonebroker::domain::script::TemplateErrorKind;
    use zonebroker::plugins::BUILTIN_GENERATORS;
    let runtime = runtime();
    let generator = runtime.load(BUILTIN_GENERATORS[0].1).unwrap();
    assert_eq!(generator.kind(), PluginKind::ScriptGenerator);
    let variables = [
        ("server_id".to_string(), "0f5c".to_string()),
        ("connection_password".to_string(), "it's".to_string()),
    ];
    let script = runtime
        .render(
            &generator,
            Os::Windows,
            "$id = '{server_id}'; $p = {connection_password|ps}",
            &variables,
        )
        .unwrap()
        .unwrap();
    assert_eq!(script, "$id = '0f5c'; $p = 'it''s'");
    let error = runtime
        .render(
            &generator,
            Os::Linux,
            "#!/bin/sh\necho {server_hostname}",
            &variables,
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (error.kind, error.line, error.column),
        (TemplateErrorKind::UnknownVariable, 2, 6)
    );
}

/// At call time the fence resolves the endpoint and checks the addresses again (DNS may have
/// changed since the config was saved): a loopback endpoint is reached only when the config
/// allows private endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reaches_a_private_address_only_when_its_config_allows_it() {
    use std::io::{Read, Write};
    use zonebroker::plugins::Endpoints;
    let runtime = runtime();
    let rogue = runtime.load(&fixture("rogue_provider")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let list = |endpoint: String, allow_private: bool| {
        let endpoints = Endpoints {
            origins: vec![endpoint.clone()],
            allow_private,
        };
        let settings = vec![("endpoint".to_string(), endpoint)];
        let tag = ("k".to_string(), "v".to_string());
        let runtime = &runtime;
        let rogue = &rogue;
        async move {
            runtime
                .provider(rogue, &endpoints)
                .unwrap()
                .list(&settings, &tag)
                .await
                .unwrap()
        }
    };
    for endpoint in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        match list(endpoint.clone(), false).await {
            Err(error) => {
                assert!(error.to_string().contains("HttpRequestDenied"), "{error}")
            }
            other => panic!("{endpoint}: expected a refusal, got {other:?}"),
        }
        assert!(
            listener.accept().is_err(),
            "{endpoint}: the fence must not connect"
        );
    }
    // Allowed: one request reaches the listener, which answers 200.
    let serve = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(error) => panic!("no connection: {error}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let answer = list(format!("http://localhost:{port}"), true).await;
    assert!(answer.is_ok(), "{answer:?}");
    let request = serve.join().unwrap();
    assert!(request.starts_with("GET /moto-api/ HTTP/1.1"), "{request}");
}

/// The registry hands out a typed handle per provider name: each call runs on the active
/// version and answers the domain's types; a name that is not an installed provider is
/// refused at the call, and a loaded plugin of another kind is not a provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_is_called_by_name_through_a_typed_handle() {
    use std::sync::Arc;
    use zonebroker::plugins::{BUILTIN_PROVIDERS, Endpoints, NamedCallError, Registry};
    let registry = Registry::new(Arc::new(runtime()));
    let (ec2, bytes) = BUILTIN_PROVIDERS[0];
    let load = |bytes| Arc::new(registry.runtime().load(bytes).unwrap());
    registry.activate(ec2, load(bytes), true).unwrap();
    registry
        .activate("least-load", load(builtin("least-load")), true)
        .unwrap();

    let provider = registry.provider(ec2, Endpoints::none());
    let info = provider.describe().await.unwrap();
    assert!(info.settings.iter().any(|s| s.name == "region"), "{info:?}");
    let settings: Vec<(String, String)> = [
        ("region", "eu-west-1"),
        ("access_key_id", "A"),
        ("secret_access_key", "S"),
        ("ami_id", "ami-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let validated = provider.validate(&settings).await.unwrap().unwrap();
    assert_eq!(validated.endpoints, ["https://ec2.eu-west-1.amazonaws.com"]);

    for name in ["least-load", "no-such-provider"] {
        let error = registry
            .provider(name, Endpoints::none())
            .describe()
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                NamedCallError::NotFound { kind: PluginKind::VmProvider, name: missing }
                    if missing == name
            ),
            "{error:?}"
        );
    }

    let strategy = registry.get("least-load").unwrap().active();
    let endpoints = Endpoints::none();
    let Err(error) = registry.runtime().provider(&strategy, &endpoints) else {
        panic!("a strategy is not a provider");
    };
    assert!(
        matches!(
            error,
            CallError::WrongKind {
                expected: PluginKind::VmProvider,
                actual: PluginKind::Strategy
            }
        ),
        "{error:?}"
    );
}
