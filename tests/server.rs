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

// Hardening: data directory, TLS, public addresses, request limits, durations as typed.

/// Run `zonebroker serve ARGS` expecting it to refuse to start; answer its stderr.
fn refused_start(data_dir: &std::path::Path, args: &[&str]) -> String {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

#[test]
fn the_data_directory_and_everything_in_it_is_for_its_user_only() {
    let server = Server::start(BIN, ServerOptions::default());
    let data_dir = server.data_dir();
    server.stop();
    let mut seen = 0;
    let mut pending = vec![data_dir.path().to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {mode:o}: others could read keys",
            path.display()
        );
        seen += 1;
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen > 3, "the database's files were checked ({seen})");

    // A directory others can read is refused, with what to do.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = refused_start(open.path(), &[]);
    assert!(
        stderr.contains("open to other users (mode 0755)") && stderr.contains("chmod 700"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(open.path()).unwrap().count(),
        0,
        "nothing was written into it"
    );
}

/// The CLI against `url`, trusting `ca`.
fn cli_zone_list(url: &str, ca: &std::path::Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["zone", "list", "--server", url, "--ca-cert"])
        .arg(ca)
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

#[test]
fn listeners_serve_https_with_the_global_or_their_own_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (global, own) = (certs.path().join("global"), certs.path().join("own"));
    zonebroker_test_support::tls::make_certificates(&global, "127.0.0.1");
    zonebroker_test_support::tls::make_certificates(&own, "127.0.0.1");
    let own_listener = format!(
        "127.0.0.1:0=west,tls-cert={},tls-key={}",
        own.join("cert.pem").display(),
        own.join("key.pem").display()
    );
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into()],
            args: vec![
                "--tls-cert".into(),
                global.join("cert.pem").display().to_string(),
                "--tls-key".into(),
                global.join("key.pem").display().to_string(),
                "--listen".into(),
                own_listener,
            ],
            ..ServerOptions::default()
        },
    );
    let east = format!("https://{}", server.addr("east"));
    let west = format!("https://{}", server.addr("west"));
    let listed = cli_zone_list(&east, &global.join("ca.pem"));
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let zones: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        zones
            .as_array()
            .unwrap()
            .iter()
            .any(|z| z["name"] == "east")
    );
    assert!(
        cli_zone_list(&west, &own.join("ca.pem")).status.success(),
        "west serves its own certificate"
    );
    assert!(
        !cli_zone_list(&west, &global.join("ca.pem"))
            .status
            .success(),
        "west does not serve the global certificate"
    );
    // Plain HTTP gets no answer from a TLS listener.
    assert!(
        server
            .http()
            .get(server.url("east", "/healthz"))
            .send()
            .is_err()
    );
    assert!(
        !server
            .logs()
            .join("\n")
            .contains("plain HTTP on a non-loopback"),
        "no warning for TLS listeners"
    );
    // A key that is not a key is refused at start, naming the listener.
    let bad = zonebroker_test_support::private_tempdir();
    let stderr = refused_start(
        bad.path(),
        &[
            "--listen",
            &format!(
                "127.0.0.1:0=east,tls-cert={},tls-key={}",
                global.join("cert.pem").display(),
                global.join("ca.pem").display()
            ),
        ],
    );
    assert!(
        stderr.contains("TLS of listener 127.0.0.1:0") && stderr.contains("no PEM private key"),
        "{stderr}"
    );
}

#[test]
fn plain_http_on_a_non_loopback_address_is_warned_about() {
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec![],
            args: vec!["--listen".into(), "0.0.0.0:0=default".into()],
            ..ServerOptions::default()
        },
    );
    let logs = server
        .wait_for_log(Duration::from_secs(10), |line| {
            line.contains("plain HTTP on a non-loopback address")
        })
        .join("\n");
    assert!(
        logs.contains("plain HTTP on a non-loopback address") && logs.contains("WARN"),
        "{logs}"
    );
}

#[test]
fn a_listener_bound_to_all_addresses_needs_a_public_address_for_autoscale_scripts() {
    // An AutoScale config whose VMs call back to `$request_host$`.
    let server = Server::start(BIN, ServerOptions::default());
    let call = |method: &str, path: &str, body: Value| {
        let (status, answer) = server.call("default", method, path, Some(&body));
        assert!(status < 300, "{method} {path}: {status} {answer}");
    };
    call(
        "PATCH",
        "/api/v1/zones/default",
        serde_json::json!({"upstream_auth_address": "$request_host$"}),
    );
    call(
        "POST",
        "/api/v1/pools",
        serde_json::json!({"name": "desktops"}),
    );
    call(
        "POST",
        "/api/v1/vm-provider-configs",
        serde_json::json!({"name": "ec2", "provider": "aws-ec2", "allow_private_endpoints": true, "settings": {
            "region": "us-east-1", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret",
            "ami_id": "ami-12345678", "instance_type": "t3.medium", "endpoint": "http://127.0.0.1:9",
            "max_instances": 2}}),
    );
    call(
        "POST",
        "/api/v1/autoscale-configs",
        serde_json::json!({"name": "linux", "pool": "desktops", "zone": "default",
            "connection_type": "rdp", "credential_type": "static", "connection_username": "kasm",
            "minimum_available_sessions": 0, "max_sessions_per_server": 1,
            "vm_provider_config": "ec2", "os": "linux",
            "startup_script": "#!/bin/sh\ncurl https://{upstream_auth_address}/api/v1/servers/checkin -H 'Authorization: Bearer {checkin_jwt}'\n"}),
    );
    // Settings typed as numbers are kept as their text.
    let (_, provider) = server.call("default", "GET", "/api/v1/vm-provider-configs/ec2", None);
    assert_eq!(provider["settings"]["max_instances"], "2", "{provider}");
    let data_dir = server.data_dir();
    server.stop();
    let stderr = refused_start(data_dir.path(), &["--listen", "0.0.0.0:0=default"]);
    assert!(
        stderr.contains("AutoScale config `linux`") && stderr.contains("public=HOST[:PORT]"),
        "{stderr}"
    );
    // With a public address it starts.
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec![],
            data_dir: Some(data_dir),
            args: vec![
                "--listen".into(),
                "0.0.0.0:0=default,public=broker.example.com:443".into(),
            ],
            ..ServerOptions::default()
        },
    );
    assert!(
        server
            .logs()
            .join("\n")
            .contains(r#""public":"broker.example.com:443""#)
    );
}

/// Send raw bytes to `addr` and read what comes back within `wait` (None: the connection was
/// closed without an answer; Some(""): nothing yet).
fn raw_exchange(addr: &str, bytes: &[u8], wait: Duration) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) if answer.is_empty() => None,
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            Some(String::from_utf8_lossy(&answer).into_owned())
        }
        Err(_) => None,
    }
}

#[test]
fn slow_clients_and_large_bodies_are_cut_off() {
    let server = Server::start(
        BIN,
        ServerOptions {
            args: ["--header-read-timeout", "500ms", "--request-timeout", "1s"]
                .map(String::from)
                .to_vec(),
            ..ServerOptions::default()
        },
    );
    let addr = server.addr("default").to_string();
    // Headers that never end: the connection is closed, unanswered (or with a 408).
    let answer = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    );
    assert!(
        answer
            .as_deref()
            .is_none_or(|a| a.starts_with("HTTP/1.1 408")),
        "a client that does not finish its headers is dropped: {answer:?}"
    );
    // A body that never arrives: 408 with a JSON error.
    let request = format!(
        "POST /api/v1/zones HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    let answer =
        raw_exchange(&addr, request.as_bytes(), Duration::from_secs(5)).unwrap_or_default();
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
        "{answer}"
    );
    let (status, _) = server.call("default", "GET", "/api/v1/zones/zz", None);
    assert_eq!(status, 404, "no zone was created");

    // JSON bodies over 1 MiB are refused as too large.
    let big = serde_json::json!({"name": "big", "allow_origin_domain": "x".repeat(1_200_000)});
    let (status, error) = server.call("default", "POST", "/api/v1/zones", Some(&big));
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{error}"
    );

    // A check-in with a forged token is refused before its body is read.
    let response = server
        .http()
        .post(server.url("default", "/api/v1/servers/checkin"))
        .header("authorization", "Bearer forged.token.here")
        .header("content-type", "application/json")
        .body("this is not JSON")
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn a_listener_serves_at_most_max_connections_at_once() {
    use std::io::{Read as _, Write as _};
    let server = Server::start(
        BIN,
        ServerOptions {
            args: ["--max-connections", "2"].map(String::from).to_vec(),
            ..ServerOptions::default()
        },
    );
    let addr = server.addr("default").to_string();
    let first = std::net::TcpStream::connect(&addr).unwrap();
    let _second = std::net::TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buffer = [0u8; 64];
    assert!(
        third.read(&mut buffer).is_err(),
        "a third connection waits while two are open"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn durations_and_settings_read_as_operators_type_them() {
    let server = Server::start(
        BIN,
        ServerOptions {
            args: ["--autoscale-interval", "1s", "--agent-timeout", "2m"]
                .map(String::from)
                .to_vec(),
            ..ServerOptions::default()
        },
    );
    let ldap = serde_json::json!({"name": "corp", "url": "ldaps://dc1.example.test",
        "bind_dn": "joiner", "bind_password": "pw", "search_base": "DC=example,DC=test",
        "connect_timeout": "10s", "operation_timeout": "1m"});
    let (status, created) = server.call("default", "POST", "/api/v1/ldap-configs", Some(&ldap));
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            created["connect_timeout"].as_u64(),
            created["operation_timeout"].as_u64()
        ),
        (Some(10), Some(60)),
        "answered as seconds"
    );
    let (status, error) = server.call(
        "default",
        "PATCH",
        "/api/v1/ldap-configs/corp",
        Some(&serde_json::json!({"connect_timeout": "1500ms"})),
    );
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("connect_timeout")),
        "{error}"
    );
    let stderr = refused_start(
        zonebroker_test_support::private_tempdir().path(),
        &["--autoscale-interval", "2h"],
    );
    assert!(
        stderr.contains("out of range: from 50ms to 60m"),
        "{stderr}"
    );
}
