//! The PostgreSQL engine end to end: the real binary on this test binary's throw-away
//! PostgreSQL (Debian's server, `fsync` on). What only a shared database has: durability
//! across a database crash, the schema's version and lock, tokens kept in the database, and
//! `zonebroker migrate` from an embedded installation.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zonebroker_test_support::postgres::{Cluster, cluster};
use zonebroker_test_support::{
    ADMIN_TOKEN, Server, ServerOptions, Storage, example_strategy, private_tempdir,
};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const GIB: u64 = 1 << 30;

fn on(database: &str, options: ServerOptions) -> Server {
    on_cluster(cluster(), database, options)
}

fn on_cluster(cluster: &Cluster, database: &str, options: ServerOptions) -> Server {
    Server::start(
        BIN,
        ServerOptions {
            storage: Storage::Database(cluster.url(database)),
            ..options
        },
    )
}

fn agent(server: &Server, zone: &str, hostname: &str, max_sessions: u32) -> String {
    let body = json!({
        "hostname": hostname, "address": "10.0.0.1", "port": 4902,
        "cores": 64.0, "memory": 1024 * GIB, "max_sessions": max_sessions,
    });
    server.check_in(zone, body)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn image(server: &Server, token: &str, name: &str) {
    let body = json!({ "name": name, "cores": 1.0, "memory": GIB });
    let (status, answer) = server.call_as(
        "default",
        "POST",
        "/api/v1/images",
        Some(&body),
        Some(token),
        None,
    );
    assert_eq!(status, 201, "{answer}");
}

fn place(server: &Server, zone: &str, image: &str) -> String {
    let (status, session) = server.call(
        zone,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": image, "user": "ada" })),
    );
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

fn session_ids(server: &Server, zone: &str) -> Vec<String> {
    let (status, sessions) = server.call(zone, "GET", "/api/v1/sessions?limit=1000", None);
    assert_eq!(status, 200, "{sessions}");
    let mut ids: Vec<String> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn no_acknowledged_session_is_lost_to_a_kill_9_or_a_database_crash() {
    // A cluster of its own: it crashes.
    let cluster = Cluster::start();
    let database = cluster.create_database();
    let mut server = on_cluster(&cluster, &database, ServerOptions::default());
    agent(&server, "default", "a1", 1000);
    image(&server, ADMIN_TOKEN, "desktop");
    let mut acknowledged: Vec<String> = (0..20)
        .map(|_| place(&server, "default", "desktop"))
        .collect();

    // The database crashes (no checkpoint) while a placement is asked for: the server holds
    // the acknowledgement until the database is back, then answers, and nothing is lost.
    cluster.crash_server();
    let waiting = std::thread::scope(|scope| {
        let request = scope.spawn(|| {
            let started = Instant::now();
            (place(&server, "default", "desktop"), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(1500));
        cluster.start_server();
        request.join().unwrap()
    });
    let (id, took) = waiting;
    assert!(
        took >= Duration::from_millis(1000),
        "answered after {took:?}, while the database was down"
    );
    acknowledged.push(id);

    // And a kill -9 right after the acknowledgements.
    server.kill9();
    let restarted = on_cluster(
        &cluster,
        &database,
        ServerOptions {
            data_dir: Some(server.data_dir()),
            ..ServerOptions::default()
        },
    );
    acknowledged.sort();
    assert_eq!(session_ids(&restarted, "default"), acknowledged);
    // The usage in the database is the sum over the sessions.
    let usage = cluster.psql(&database, "SELECT (record->>'sessions')::int FROM usage");
    assert_eq!(usage, acknowledged.len().to_string());
    let sessions = cluster.psql(&database, "SELECT count(*) FROM sessions");
    assert_eq!(sessions, acknowledged.len().to_string());
}

#[test]
fn processes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let database = cluster().create_database();
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| on(&database, ServerOptions::default())))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let migrated: usize = servers
        .iter()
        .map(|s| {
            s.logs()
                .iter()
                .filter(|line| line.contains("database schema migrated"))
                .count()
        })
        .sum();
    assert_eq!(migrated, 1, "one of the three migrated");
    drop(servers);

    cluster().psql(
        &database,
        "UPDATE zonebroker_schema SET version = version + 1",
    );
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0=default", "--data-dir"])
        .arg(private_tempdir().path())
        .arg("--database")
        .arg(cluster().url(&database))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("migrated by a newer zonebroker"),
        "{stderr}"
    );
}

#[test]
fn every_process_on_a_database_accepts_the_same_generated_tokens() {
    let database = cluster().create_database();
    let without_tokens = || ServerOptions {
        admin_token: None,
        agent_token: None,
        ..ServerOptions::default()
    };
    let first = on(&database, without_tokens());
    let second = on(&database, without_tokens());
    let token = cluster().psql(
        &database,
        "SELECT convert_from(value, 'UTF8') FROM meta WHERE key = 'admin_token'",
    );
    assert_eq!(token.len(), 64, "{token}");
    for server in [&first, &second] {
        let (status, _) =
            server.call_as("default", "GET", "/api/v1/zones", None, Some(&token), None);
        assert_eq!(status, 200);
        let (status, _) = server.call_as(
            "default",
            "GET",
            "/api/v1/zones",
            None,
            Some(ADMIN_TOKEN),
            None,
        );
        assert_eq!(status, 401);
    }
    // Never in a file of the data directory.
    assert!(!first.data_dir().path().join("admin-token").exists());
}

#[test]
fn migrate_copies_an_embedded_installation_and_a_database_server_serves_it() {
    // An embedded installation with a generated token, agents, a plugin and sessions.
    let embedded = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["default".into(), "east".into()],
            admin_token: None,
            storage: Storage::Embedded,
            ..ServerOptions::default()
        },
    );
    let token = std::fs::read_to_string(embedded.data_dir().path().join("admin-token")).unwrap();
    let call = |server: &Server, method: &str, path: &str, body: Option<&Value>| {
        server.call_as("east", method, path, body, Some(token.trim()), None)
    };
    let a1 = agent(&embedded, "east", "e1", 10);
    image(&embedded, token.trim(), "desktop");
    let upload = embedded
        .http()
        .post(embedded.url("east", "/api/v1/plugins/spread/versions?activate=true"))
        .bearer_auth(token.trim())
        .header("content-type", "application/wasm")
        .body(example_strategy())
        .send()
        .unwrap();
    assert_eq!(upload.status(), 201, "{}", upload.text().unwrap());
    let (status, answer) = call(
        &embedded,
        "PATCH",
        "/api/v1/zones/east",
        Some(&json!({ "load_balance_strategy": "spread" })),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, session) = call(
        &embedded,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": "desktop", "user": "ada" })),
    );
    assert_eq!(status, 201, "{session}");
    let before: Vec<Value> = [
        "/api/v1/zones",
        "/api/v1/agents",
        "/api/v1/images",
        "/api/v1/sessions",
        "/api/v1/plugins/spread",
    ]
    .iter()
    .map(|path| call(&embedded, "GET", path, None).1)
    .collect();
    let data_dir: Arc<tempfile::TempDir> = embedded.data_dir();
    embedded.stop();

    let database = cluster().create_database();
    let migrate = || {
        Command::new(BIN)
            .arg("migrate")
            .arg("--from-data-dir")
            .arg(data_dir.path())
            .arg("--database")
            .arg(cluster().url(&database))
            .output()
            .unwrap()
    };
    let out = migrate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("sessions") && printed.contains("plugin_blobs"),
        "{printed}"
    );
    let again = migrate();
    assert!(!again.status.success(), "a second copy is refused");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database only"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A server on the database (and a fresh data directory) serves it all, with the
    // installation's token, and places with the uploaded strategy.
    let served = on(
        &database,
        ServerOptions {
            zones: vec!["default".into(), "east".into()],
            admin_token: None,
            ..ServerOptions::default()
        },
    );
    let after: Vec<Value> = [
        "/api/v1/zones",
        "/api/v1/agents",
        "/api/v1/images",
        "/api/v1/sessions",
        "/api/v1/plugins/spread",
    ]
    .iter()
    .map(|path| call(&served, "GET", path, None).1)
    .collect();
    assert_eq!(after[..4], before[..4]);
    assert_eq!(after[4]["active_version"], before[4]["active_version"]);
    assert!(!after[4]["active_version"].is_null());
    let (status, placed) = call(
        &served,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": "desktop", "user": "bob" })),
    );
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["agent"], a1.as_str());
}
