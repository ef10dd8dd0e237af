//! The real `zonebroker` binary on loopback: listeners per zone, health, admin auth, the
//! built-in plugins, the generated admin token, graceful shutdown.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;
use sha2_check::sha256_hex;
use zonebroker::plugins::{BUILTIN_GENERATORS, BUILTIN_PROVIDERS, BUILTIN_STRATEGIES};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");

/// sha256 through the host's own dependency, to compare versions.
mod sha2_check {
    pub fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

fn two_zones() -> ServerOptions {
    ServerOptions {
        zones: vec!["east".into(), "west".into()],
        ..ServerOptions::default()
    }
}

#[test]
fn every_listener_serves_health_for_its_own_zone() {
    let server = Server::start(BIN, two_zones());
    for zone in ["east", "west"] {
        let response = server
            .http()
            .get(server.url(zone, "/healthz"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["zone"], zone);
    }
}

#[test]
fn the_admin_api_needs_the_admin_token() {
    let server = Server::start(BIN, ServerOptions::default());
    let url = server.url("default", "/api/v1/plugins");
    let cases = [
        (None, "missing"),
        (Some("Bearer wrong-token".to_string()), "wrong"),
        (Some(format!("Basic {ADMIN_TOKEN}")), "not bearer"),
        (Some(format!("Bearer {ADMIN_TOKEN}x")), "longer"),
    ];
    for (header, case) in cases {
        let mut request = server.http().get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{case}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{case}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 5,
            "{case}"
        );
    }
    assert_eq!(server.admin_get("default", "/api/v1/plugins").status(), 200);
}

#[test]
fn the_builtin_strategies_are_registered_with_their_versions() {
    let server = Server::start(BIN, ServerOptions::default());
    let plugins: Vec<Value> = server
        .admin_get("default", "/api/v1/plugins")
        .json()
        .unwrap();
    let builtins: Vec<(&str, &[u8], &str)> = BUILTIN_STRATEGIES
        .iter()
        .map(|(name, bytes)| (*name, *bytes, "strategy"))
        .chain(
            BUILTIN_GENERATORS
                .iter()
                .map(|(name, bytes)| (*name, *bytes, "script-generator")),
        )
        .chain(
            BUILTIN_PROVIDERS
                .iter()
                .map(|(name, bytes)| (*name, *bytes, "vm-provider")),
        )
        .collect();
    assert_eq!(plugins.len(), builtins.len());
    for plugin in &plugins {
        let (_, bytes, kind) = builtins
            .iter()
            .find(|(name, _, _)| *name == plugin["name"])
            .unwrap_or_else(|| panic!("unexpected plugin {plugin}"));
        assert_eq!(plugin["kind"], *kind);
        assert_eq!(plugin["builtin"], true);
        assert_eq!(plugin["active_version"], sha256_hex(bytes));
    }
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let server = Server::start(BIN, ServerOptions::default());
    let response = server.admin_get("default", "/api/v1/nothing-here");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let response = server
        .http()
        .delete(server.url("default", "/healthz"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[test]
fn without_a_token_in_the_environment_one_is_generated_and_kept() {
    let server = Server::start(
        BIN,
        ServerOptions {
            admin_token: None,
            ..ServerOptions::default()
        },
    );
    let path = server.data_dir().path().join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !server.logs().iter().any(|line| line.contains(&token)),
        "the token must not be logged"
    );
    let authorized = |server: &Server| {
        server
            .http()
            .get(server.url("default", "/api/v1/plugins"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(authorized(&server), 200);

    let data_dir = server.data_dir();
    drop(server);
    let restarted = Server::start(
        BIN,
        ServerOptions {
            admin_token: None,
            data_dir: Some(data_dir),
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        authorized(&restarted),
        200,
        "a restart keeps the generated token"
    );
}

#[test]
fn sigterm_and_sigint_stop_the_server_gracefully() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(BIN, ServerOptions::default());
        assert_eq!(
            server
                .http()
                .get(server.url("default", "/healthz"))
                .send()
                .unwrap()
                .status(),
            200
        );
        server.signal(signal);
        let status = server
            .wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("SIG{signal} did not stop the server"));
        assert!(status.success(), "SIG{signal}: {status}");
        let logs = server.logs().join("\n");
        assert!(logs.contains("\"stopped\""), "SIG{signal}: {logs}");
    }
}
