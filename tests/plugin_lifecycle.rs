//! Bringing your own strategy, end to end over HTTP: upload the example from `examples/`, put
//! it to work in a zone, hot-swap it under load, roll back, restart, and every refusal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use zonebroker::plugins::BUILTIN_STRATEGIES;
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, example_strategy, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const GIB: u64 = 1 << 30;

/// Every built-in plugin's name, sorted.
fn builtin_names() -> Vec<&'static str> {
    use zonebroker::plugins::{BUILTIN_GENERATORS, BUILTIN_PROVIDERS};
    let mut names: Vec<&str> = BUILTIN_STRATEGIES
        .iter()
        .chain(BUILTIN_GENERATORS)
        .chain(BUILTIN_PROVIDERS)
        .map(|(name, _)| *name)
        .collect();
    names.sort();
    names
}

fn builtin(name: &str) -> Vec<u8> {
    BUILTIN_STRATEGIES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
        .to_vec()
}

/// POST the component as a version of `name`.
fn upload(server: &Server, name: &str, bytes: Vec<u8>, activate: bool) -> (u16, Value) {
    upload_as(server, name, bytes, activate, "application/wasm")
}

fn upload_as(
    server: &Server,
    name: &str,
    bytes: Vec<u8>,
    activate: bool,
    content_type: &str,
) -> (u16, Value) {
    post_version(
        server,
        name,
        bytes,
        &format!("activate={activate}"),
        content_type,
    )
}

/// `POST /plugins/{name}/versions?{query}`.
fn post_version(
    server: &Server,
    name: &str,
    bytes: Vec<u8>,
    query: &str,
    content_type: &str,
) -> (u16, Value) {
    let response = server
        .http()
        .post(server.url("east", &format!("/api/v1/plugins/{name}/versions?{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn agent(server: &Server, zone: &str, hostname: &str, cores: f64) -> String {
    let body = json!({ "hostname": hostname, "address": "10.0.0.1", "port": 4902, "cores": cores,
                       "memory": 512 * GIB, "max_sessions": 100 });
    server.check_in(zone, body)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn image(server: &Server, name: &str, zone: &str) {
    let body = json!({ "name": name, "cores": 1, "memory": GIB, "zone": zone });
    assert_eq!(
        server.call("east", "POST", "/api/v1/images", Some(&body)).0,
        201
    );
}

fn session(server: &Server, zone: &str, image: &str, user: &str) -> Value {
    let (status, session) = server.call(
        zone,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": image, "user": user })),
    );
    assert_eq!(status, 201, "{session}");
    session
}

fn end(server: &Server, session: &Value) {
    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
    assert_eq!(server.call("east", "DELETE", &path, None).0, 204);
}

fn set_strategy(server: &Server, zone: &str, strategy: &str) {
    let patch = json!({ "load_balance_strategy": strategy });
    let (status, answer) = server.call(
        "east",
        "PATCH",
        &format!("/api/v1/zones/{zone}"),
        Some(&patch),
    );
    assert_eq!(status, 200, "{answer}");
}

fn activate(server: &Server, name: &str, version: &str) -> Value {
    let (status, plugin) = server.call(
        "east",
        "POST",
        &format!("/api/v1/plugins/{name}/activate"),
        Some(&json!({ "version": version })),
    );
    assert_eq!(status, 200, "{plugin}");
    plugin
}

fn east_west(data_dir: Option<Arc<tempfile::TempDir>>) -> Server {
    Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into(), "west".into()],
            data_dir,
            ..ServerOptions::default()
        },
    )
}

/// West: `w-busy` runs three of bob's sessions, `w-idle` none. For ada's next session,
/// `spread-users` (she has none anywhere; then the least loaded) picks `w-idle`;
/// `most-kasms` picks `w-busy`; `least-load` would pick `w-idle` again.
fn west_scenario(server: &Server) {
    let busy = agent(server, "west", "w-busy", 8.0);
    let idle = agent(server, "west", "w-idle", 64.0);
    image(server, "west-desktop", "west");
    let disable = |id: &str, enabled: bool| {
        let (status, _) = server.call(
            "east",
            "PATCH",
            &format!("/api/v1/agents/{id}"),
            Some(&json!({ "enabled": enabled })),
        );
        assert_eq!(status, 200);
    };
    disable(&idle, false);
    for _ in 0..3 {
        assert_eq!(
            session(server, "west", "west-desktop", "bob")["agent_hostname"],
            "w-busy"
        );
    }
    disable(&idle, true);
    let _ = busy;
}

/// Ada's next west session lands here (the session is ended again).
fn adas_next_west_agent(server: &Server) -> String {
    let placed = session(server, "west", "west-desktop", "ada");
    end(server, &placed);
    placed["agent_hostname"].as_str().unwrap().to_string()
}

#[test]
fn an_uploaded_strategy_places_sessions_and_swaps_and_rolls_back_under_load() {
    let server = Arc::new(east_west(None));
    west_scenario(&server);

    // Upload the example and put it to work in west: ada's sessions spread over agents.
    let (status, v1) = upload(&server, "spread", example_strategy(), true);
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["kind"].as_str(), v1["active"].as_bool()),
        (Some("strategy"), Some(true))
    );
    let v1 = v1["version"].as_str().unwrap().to_string();
    set_strategy(&server, "west", "spread");
    let first = session(&server, "west", "west-desktop", "ada");
    assert_eq!(first["agent_hostname"], "w-idle");
    let second = session(&server, "west", "west-desktop", "ada");
    assert_eq!(
        second["agent_hostname"], "w-busy",
        "spread over agents, unlike least-load"
    );
    end(&server, &first);
    end(&server, &second);

    // East churns sessions with the same plugin while its versions are swapped.
    set_strategy(&server, "east", "spread");
    for i in 0..4 {
        agent(&server, "east", &format!("e{i}"), 64.0);
    }
    image(&server, "east-desktop", "east");
    let stop = Arc::new(AtomicBool::new(false));
    let (placed, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (server, stop, placed, failed) =
                (server.clone(), stop.clone(), placed.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({ "image": "east-desktop", "user": format!("user{i}") });
                    let (status, session) =
                        server.call("east", "POST", "/api/v1/sessions", Some(&body));
                    if status != 201 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    placed.fetch_add(1, Ordering::Relaxed);
                    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
                    if server.call("east", "DELETE", &path, None).0 != 204 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Upload version 2 (most-kasms' rule) and activate it: the next placement follows it.
    let (status, v2) = upload(&server, "spread", builtin("most-kasms"), false);
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["active"], false);
    let v2 = v2["version"].as_str().unwrap().to_string();
    assert_eq!(adas_next_west_agent(&server), "w-idle", "not active yet");
    activate(&server, "spread", &v2);
    assert_eq!(
        adas_next_west_agent(&server),
        "w-busy",
        "the new rule, right after activation"
    );

    // Roll back, still under load.
    let plugin = activate(&server, "spread", &v1);
    assert_eq!(
        adas_next_west_agent(&server),
        "w-idle",
        "the old rule again"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} placements",
        placed.load(Ordering::Relaxed)
    );
    assert!(placed.load(Ordering::Relaxed) > 50);

    // The history says who did what, when, from and to.
    assert_eq!(plugin["active_version"], v1.as_str());
    let history: Vec<(Value, Value)> = plugin["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["from"].clone(), a["to"].clone()))
        .collect();
    assert_eq!(
        history,
        [
            (Value::Null, json!(v1)),
            (json!(v1), json!(v2)),
            (json!(v2), json!(v1)),
        ]
    );
    assert!(
        plugin["history"][2]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin@127.0.0.1")
    );
    assert!(plugin["history"][2]["at"].as_str().unwrap().ends_with('Z'));
    let mut zones: Vec<&str> = plugin["used_by"]["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z.as_str().unwrap())
        .collect();
    zones.sort();
    assert_eq!(zones, ["east", "west"]);
    assert_eq!(plugin["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn the_active_version_survives_a_restart_without_recompiling() {
    let server = east_west(None);
    let (_, v1) = upload(&server, "spread", example_strategy(), true);
    let (_, v2) = upload(&server, "spread", builtin("most-kasms"), true);
    activate(&server, "spread", v1["version"].as_str().unwrap());
    set_strategy(&server, "west", "spread");
    let before = server.call("east", "GET", "/api/v1/plugins/spread", None).1;

    let data_dir = server.data_dir();
    drop(server);
    let restarted = east_west(Some(data_dir));
    let after = restarted
        .call("east", "GET", "/api/v1/plugins/spread", None)
        .1;
    assert_eq!(after, before);
    assert_eq!(after["active_version"], v1["version"]);
    assert_ne!(after["active_version"], v2["version"]);
    let loaded: Vec<String> = restarted
        .logs()
        .into_iter()
        .filter(|line| line.contains("\"plugin loaded\""))
        .collect();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert!(
        loaded[0].contains("\"compiled\":false"),
        "taken from the artifact cache: {}",
        loaded[0]
    );
    // And it works.
    agent(&restarted, "west", "w1", 8.0);
    image(&restarted, "west-desktop", "west");
    session(&restarted, "west", "west-desktop", "ada");
}

/// Memory, fuel and deadline set per version at upload and at activation, within the
/// server's maxima; the smoke call runs under them, and they survive a restart.
#[test]
fn a_version_can_be_given_limits_of_its_own() {
    let server = east_west(None);
    let wasm = "application/wasm";
    // The smoke call runs under the version's own budget.
    let (status, answer) = post_version(
        &server,
        "spin",
        fixture("infinite_loop"),
        "fuel=1234567&deadline_ms=5000",
        wasm,
    );
    assert_eq!(status, 422, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("1234567 fuel units"), "{message}");

    // Over a maximum, or zero: refused, naming the field, and nothing is stored.
    for (query, field) in [
        ("memory_bytes=2147483648", "memory_bytes"),
        ("fuel=0", "fuel"),
        ("deadline_ms=600000", "deadline_ms"),
    ] {
        let (status, answer) = post_version(&server, "spread", example_strategy(), query, wasm);
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, _) = server.call("east", "GET", "/api/v1/plugins/spread", None);
    assert_eq!(status, 404);

    let (status, answer) = post_version(
        &server,
        "spread",
        example_strategy(),
        "activate=true&memory_bytes=134217728&deadline_ms=250",
        wasm,
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["limits"],
        json!({ "memory_bytes": 134217728, "deadline_ms": 250 })
    );
    let version = answer["version"].as_str().unwrap().to_string();
    // Activation sets more, over what the version has.
    let (status, plugin) = server.call(
        "east",
        "POST",
        "/api/v1/plugins/spread/activate",
        Some(&json!({ "version": version, "limits": { "fuel": 5000000, "deadline_ms": 300 } })),
    );
    assert_eq!(status, 200, "{plugin}");
    let expected = json!({ "memory_bytes": 134217728, "fuel": 5000000, "deadline_ms": 300 });
    assert_eq!(plugin["versions"][0]["limits"], expected);
    // Limits a call cannot finish under are refused by the smoke call, as at upload; over a
    // maximum, the field is named where the body has it; nothing changes.
    let activate = |limits: Value| {
        server.call(
            "east",
            "POST",
            "/api/v1/plugins/spread/activate",
            Some(&json!({ "version": version, "limits": limits })),
        )
    };
    let (status, answer) = activate(json!({ "fuel": 5 }));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("smoke_test_failed")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("5 fuel units")),
        "{answer}"
    );
    let (status, answer) = activate(json!({ "deadline_ms": 600000 }));
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("limits.deadline_ms")),
        "{answer}"
    );
    let (status, answer) = activate(json!({ "fuel": 5, "cpu": 1 }));
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = post_version(&server, "spread", example_strategy(), "fuel=lots", wasm);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_query")),
        "{answer}"
    );
    let (_, plugin) = server.call("east", "GET", "/api/v1/plugins/spread", None);
    assert_eq!(plugin["versions"][0]["limits"], expected);

    let data_dir = server.data_dir();
    server.stop();
    let restarted = east_west(Some(data_dir));
    let (_, plugin) = restarted.call("east", "GET", "/api/v1/plugins/spread", None);
    assert_eq!(plugin["versions"][0]["limits"], expected);
    assert_eq!(plugin["active_version"], version.as_str());
}

#[test]
fn uploads_are_validated_and_idempotent() {
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into()],
            args: vec!["--max-plugin-size".into(), "256KiB".into()],
            ..ServerOptions::default()
        },
    );
    let refused = |name: &str, bytes: Vec<u8>| {
        let (status, answer) = upload(&server, name, bytes, true);
        (
            status,
            answer["error"]["code"].as_str().unwrap_or("").to_string(),
            answer,
        )
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("big", vec![0u8; 300 << 10], 413, "too_large"),
        ("text", b"#!/bin/sh\necho hi\n".to_vec(), 422, "not_wasm"),
        ("core", b"\0asm\x01\0\0\0".to_vec(), 422, "not_a_component"),
        ("command", fixture("plain_command"), 422, "unknown_world"),
        // Loads (no directory is served), and its smoke call finds no file.
        ("snoop", fixture("reads_files"), 422, "smoke_test_failed"),
        ("phone", fixture("calls_http"), 422, "forbidden_import"),
        ("panics", fixture("panics"), 422, "smoke_test_failed"),
        ("spins", fixture("infinite_loop"), 422, "smoke_test_failed"),
        ("bad", fixture("out_of_range"), 422, "smoke_test_failed"),
        ("least-load", example_strategy(), 409, "builtin_plugin"),
        ("Bad_Name", example_strategy(), 422, "invalid_field"),
    ];
    for (name, bytes, status, code) in cases {
        let (got, got_code, answer) = refused(name, bytes);
        assert_eq!((got, got_code.as_str()), (status, code), "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{name}");
        if name == "snoop" {
            assert!(message.contains("No such file"), "{message}");
        }
    }
    let (status, answer) = upload_as(
        &server,
        "spread",
        example_strategy(),
        true,
        "application/octet-stream",
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    // Nothing of the refusals was kept.
    let (_, plugins) = server.call("east", "GET", "/api/v1/plugins", None);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, builtin_names());

    // The same bytes twice: one version.
    let (status, first) = upload(&server, "spread", example_strategy(), false);
    assert_eq!((status, first["created"].as_bool()), (201, Some(true)));
    let (status, again) = upload(&server, "spread", example_strategy(), false);
    assert_eq!((status, again["created"].as_bool()), (200, Some(false)));
    assert_eq!(again["version"], first["version"]);
    let (_, plugin) = server.call("east", "GET", "/api/v1/plugins/spread", None);
    assert_eq!(plugin["versions"].as_array().unwrap().len(), 1);
    assert_eq!(plugin["active_version"], Value::Null);

    // A plugin without an active version cannot serve a zone yet.
    let patch = json!({ "load_balance_strategy": "spread" });
    assert_eq!(
        server
            .call("east", "PATCH", "/api/v1/zones/east", Some(&patch))
            .0,
        422
    );

    // Another world under the same name is refused.
    let (status, answer) = upload(&server, "spread", fixture("echo_generator"), false);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("wrong_kind")),
        "{answer}"
    );
}

#[test]
fn plugins_in_use_and_active_versions_cannot_be_deleted() {
    let server = east_west(None);
    let (_, v1) = upload(&server, "spread", example_strategy(), true);
    let (_, v2) = upload(&server, "spread", builtin("most-kasms"), false);
    let (v1, v2) = (
        v1["version"].as_str().unwrap(),
        v2["version"].as_str().unwrap(),
    );
    set_strategy(&server, "east", "spread");

    let delete = |path: &str| {
        let (status, answer) = server.call("east", "DELETE", path, None);
        (
            status,
            answer["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(
        delete("/api/v1/plugins/spread"),
        (409, "plugin_in_use".to_string())
    );
    assert_eq!(
        delete(&format!("/api/v1/plugins/spread/versions/{v1}")),
        (409, "version_active".to_string())
    );
    assert_eq!(
        delete("/api/v1/plugins/least-load"),
        (409, "builtin_plugin".to_string())
    );
    assert_eq!(
        delete(&format!("/api/v1/plugins/spread/versions/{v2}")).0,
        204
    );
    assert_eq!(
        delete(&format!("/api/v1/plugins/spread/versions/{v2}")).0,
        404
    );

    set_strategy(&server, "east", "least-load");
    assert_eq!(delete("/api/v1/plugins/spread").0, 204);
    assert_eq!(
        server.call("east", "GET", "/api/v1/plugins/spread", None).0,
        404
    );
    assert_eq!(
        server
            .call(
                "east",
                "PATCH",
                "/api/v1/zones/east",
                Some(&json!({ "load_balance_strategy": "spread" }))
            )
            .0,
        422
    );
}

#[test]
fn the_cli_scaffolds_checks_uploads_and_rolls_back() {
    let server = east_west(None);
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(BIN)
            .args(args)
            .args(["--server", &server.url("east", "")])
            .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).to_string();
        let err = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{args:?}: {out}\n{err}");
        out
    };

    let out = cli(&["plugin", "new", "fresh-strategy"]);
    assert!(
        out.contains("cargo build --release --target wasm32-wasip2"),
        "{out}"
    );
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        ".cargo/config.toml",
        "README.md",
    ] {
        assert!(
            dir.path().join("fresh-strategy").join(file).exists(),
            "{file}"
        );
    }

    let example = dir.path().join("spread.wasm");
    std::fs::write(&example, example_strategy()).unwrap();
    let out = cli(&["plugin", "check", example.to_str().unwrap()]);
    assert!(
        out.contains("kind:      strategy") && out.contains("ok: the server would accept"),
        "{out}"
    );
    assert!(out.contains("ranked 8 sample candidates"), "{out}");

    // A refused import: the check fails, names the import and prints what the kind may use.
    let phone = dir.path().join("phone.wasm");
    std::fs::write(&phone, fixture("calls_http")).unwrap();
    let refused = std::process::Command::new(BIN)
        .args(["plugin", "check", phone.to_str().unwrap()])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
    );
    assert!(!refused.status.success(), "{out}");
    assert!(err.contains("wasi:http/"), "{err}");
    assert!(
        out.contains("a strategy plugin may import")
            && out.contains("wasi:filesystem/preopens")
            && out.contains("refused-at-call")
            && !out.contains("wasi:http/"),
        "{out}"
    );

    let v1: Value = serde_json::from_str(&cli(&[
        "plugin",
        "upload",
        "spread",
        example.to_str().unwrap(),
        "--activate",
    ]))
    .unwrap();
    let other = dir.path().join("other.wasm");
    std::fs::write(&other, builtin("most-kasms")).unwrap();
    let v2: Value = serde_json::from_str(&cli(&[
        "plugin",
        "upload",
        "spread",
        other.to_str().unwrap(),
        "--activate",
    ]))
    .unwrap();
    assert_eq!(v2["active"], true);
    let rolled: Value = serde_json::from_str(&cli(&["plugin", "rollback", "spread"])).unwrap();
    assert_eq!(rolled["active_version"], v1["version"]);
    let listed: Value = serde_json::from_str(&cli(&["plugin", "list"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), builtin_names().len() + 1);
}

#[test]
fn a_provider_call_that_computes_for_long_never_holds_up_the_listeners() {
    // One async worker: whatever holds it holds every listener.
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into()],
            args: vec!["--worker-threads".into(), "1".into()],
            ..ServerOptions::default()
        },
    );
    let (status, answer) = upload(&server, "rogue", fixture("rogue_provider"), true);
    assert_eq!(status, 201, "{answer}");
    // Saving a provider config calls its `validate`, which computes for a second or so.
    let answered = Arc::new(AtomicBool::new(false));
    let save = std::thread::spawn({
        let url = server.url("east", "/api/v1/vm-provider-configs");
        let http = server.http().clone();
        let answered = answered.clone();
        move || {
            let response = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"name": "spinner", "provider": "rogue",
                    "settings": {"endpoint": "http://127.0.0.1:9", "spin": "600000000"},
                    "allow_private_endpoints": true}))
                .send()
                .unwrap();
            answered.store(true, Ordering::SeqCst);
            response.status().as_u16()
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !answered.load(Ordering::SeqCst),
        "the call takes longer than this"
    );
    let health = server.admin_get("east", "/healthz");
    assert_eq!(health.status(), 200);
    assert!(
        !answered.load(Ordering::SeqCst),
        "/healthz waited for the provider call to end"
    );
    assert_eq!(save.join().unwrap(), 201, "and the call itself completed");
    server.stop();
}

/// Provider configs use provider plugins and AutoScale configs script generators: while one
/// does, the plugin cannot be deleted, and the refusal names its users.
#[test]
fn plugins_used_by_provider_or_autoscale_configs_cannot_be_deleted() {
    let server = east_west(None);
    let (status, answer) = upload(&server, "rogue", fixture("rogue_provider"), true);
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = upload(&server, "echo", fixture("echo_generator"), true);
    assert_eq!(status, 201, "{answer}");
    let create = |path: &str, body: Value| {
        let (status, answer) = server.call("east", "POST", path, Some(&body));
        assert_eq!(status, 201, "{path}: {answer}");
    };
    create("/api/v1/pools", json!({ "name": "desktops" }));
    create(
        "/api/v1/vm-provider-configs",
        json!({ "name": "cloud", "provider": "rogue",
                "settings": { "endpoint": "http://127.0.0.1:9" },
                "allow_private_endpoints": true }),
    );
    create(
        "/api/v1/autoscale-configs",
        json!({ "name": "linux-desktops", "enabled": false, "pool": "desktops",
                "zone": "east", "connection_type": "ssh", "credential_type": "static",
                "connection_username": "kasm", "minimum_available_sessions": 1,
                "max_sessions_per_server": 1, "vm_provider_config": "cloud", "os": "linux",
                "startup_script": "#!/bin/sh\necho hello\n", "script_generator": "echo" }),
    );

    let delete = |path: &str| server.call("east", "DELETE", path, None);
    for (plugin, user, field) in [
        ("rogue", "cloud", "provider_configs"),
        ("echo", "linux-desktops", "autoscale_configs"),
    ] {
        let (status, answer) = delete(&format!("/api/v1/plugins/{plugin}"));
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (409, Some("plugin_in_use")),
            "{plugin}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(user), "{plugin}: {message}");
        let (_, view) = server.call("east", "GET", &format!("/api/v1/plugins/{plugin}"), None);
        assert_eq!(view["used_by"][field], json!([user]), "{view}");
        assert_eq!(view["used_by"]["zones"], json!([]), "{view}");
    }

    assert_eq!(delete("/api/v1/autoscale-configs/linux-desktops").0, 204);
    assert_eq!(delete("/api/v1/plugins/echo").0, 204);
    assert_eq!(delete("/api/v1/vm-provider-configs/cloud").0, 204);
    assert_eq!(delete("/api/v1/plugins/rogue").0, 204);
}

/// With `--max-compile-time` below any compilation, a valid upload is refused with 422 and
/// nothing is stored; a component with a forbidden import is still refused for its import
/// (checked before compiling), and the server keeps serving.
#[test]
fn an_upload_that_compiles_for_too_long_is_refused_and_nothing_is_kept() {
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into()],
            args: vec!["--max-compile-time".into(), "0.001".into()],
            ..ServerOptions::default()
        },
    );
    let started = std::time::Instant::now();
    let (status, answer) = upload(&server, "phone", fixture("calls_http"), true);
    let refused_in = started.elapsed();
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("forbidden_import")),
        "{answer}"
    );
    eprintln!("forbidden import refused over HTTP in {refused_in:?}");
    let (status, answer) = upload(&server, "spread", example_strategy(), true);
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("compile_timeout")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max-compile-time")),
        "{answer}"
    );
    let (_, plugins) = server.call("east", "GET", "/api/v1/plugins", None);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, builtin_names());
    assert_eq!(server.admin_get("east", "/healthz").status(), 200);
    // Restarted with the default budget, the store holds nothing of the refused upload and
    // the same bytes upload as a new version.
    let data_dir = server.data_dir();
    drop(server);
    let restarted = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into()],
            data_dir: Some(data_dir),
            ..ServerOptions::default()
        },
    );
    let (status, answer) = upload(&restarted, "spread", example_strategy(), true);
    assert_eq!(
        (status, answer["created"].as_bool()),
        (201, Some(true)),
        "{answer}"
    );
}

/// Endpoints are checked by address after resolution: loopback needs
/// `allow_private_endpoints`, link-local (cloud metadata) is refused even with it; the
/// refusal names the setting.
#[test]
fn provider_endpoints_on_private_or_metadata_addresses_are_refused() {
    let server = east_west(None);
    let (status, answer) = upload(&server, "rogue", fixture("rogue_provider"), true);
    assert_eq!(status, 201, "{answer}");
    let save = |name: &str, endpoint: &str, allow_private: Option<bool>| {
        let mut body = json!({ "name": name, "provider": "rogue",
                               "settings": { "endpoint": endpoint } });
        if let Some(allow) = allow_private {
            body["allow_private_endpoints"] = json!(allow);
        }
        server.call("east", "POST", "/api/v1/vm-provider-configs", Some(&body))
    };
    for (endpoint, allow_private) in [
        ("http://127.0.0.1:9", None),
        ("http://localhost:9", Some(false)),
        ("http://10.1.2.3", None),
        ("http://[::ffff:127.0.0.1]:9", None),
        ("http://169.254.169.254", Some(true)),
        ("http://169.254.169.254", None),
        ("http://[fe80::1]", Some(true)),
        ("http://[::ffff:169.254.169.254]", Some(true)),
    ] {
        let (status, answer) = save("cloud", endpoint, allow_private);
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some("settings.endpoint")),
            "{endpoint} {allow_private:?}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        if endpoint.contains("169.254") || endpoint.contains("fe80") {
            assert!(message.contains("link-local"), "{message}");
        } else {
            assert!(message.contains("allow_private_endpoints"), "{message}");
        }
    }
    assert_eq!(
        server
            .call("east", "GET", "/api/v1/vm-provider-configs/cloud", None)
            .0,
        404
    );
    let (status, answer) = save("cloud", "http://127.0.0.1:9", Some(true));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["allow_private_endpoints"], json!(true), "{answer}");
    // Turning the flag off is checked like any other change.
    let (status, answer) = server.call(
        "east",
        "PATCH",
        "/api/v1/vm-provider-configs/cloud",
        Some(&json!({ "allow_private_endpoints": false })),
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("settings.endpoint")),
        "{answer}"
    );
}
