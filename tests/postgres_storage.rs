//! The PostgreSQL engine end to end: the real binary on this test binary's throw-away
//! PostgreSQL (Debian's server, `fsync` on). What only a shared database has: durability
//! across a database crash, the schema's version and lock, tokens kept in the database, and
//! `zonebroker migrate` from an embedded installation.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zonebroker_test_support::api::{agent, image, metric, request_session, until, upload_plugin};
use zonebroker_test_support::postgres::{Cluster, cluster};
use zonebroker_test_support::{
    ADMIN_TOKEN, Server, ServerOptions, Storage, configs, example_strategy, private_tempdir,
};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const GIB: u64 = 1 << 30;

fn on(database: &str, options: ServerOptions) -> Server {
    on_cluster(cluster(), database, options)
}

/// A server on `database` started with `args` as well.
fn on_with_args(database: &str, args: &[&str]) -> Server {
    on(
        database,
        ServerOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..ServerOptions::default()
        },
    )
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

fn place(server: &Server, zone: &str, image: &str) -> String {
    let (status, session) = request_session(server, zone, image, "ada");
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

/// `PATCH path` with `body`, only if the record is at `version` (`If-Match`).
fn patch_if_match(server: &Server, path: &str, version: u64, body: Value) -> (u16, String) {
    let response = server
        .http()
        .patch(server.url("default", path))
        .bearer_auth(ADMIN_TOKEN)
        .header("If-Match", format!("\"{version}\""))
        .json(&body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
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
    let usage = cluster.psql(&database, "SELECT sum(sessions) FROM usage");
    assert_eq!(usage, acknowledged.len().to_string());
    let sessions = cluster.psql(&database, "SELECT count(*) FROM sessions");
    assert_eq!(sessions, acknowledged.len().to_string());
}

/// Start `zonebroker serve` on `url` as a raw process (it may be refused), in `data_dir`.
fn serve_raw(url: &str, data_dir: &tempfile::TempDir) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0=default", "--data-dir"])
        .arg(data_dir.path())
        .arg("--database")
        .arg(url)
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn processes_starting_together_migrate_once_all_serve_and_a_newer_schema_is_refused() {
    let database = cluster().create_database();
    let url = cluster().url(&database);
    // Three processes start at once on a new database: one migrates, and all serve.
    let managers: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| on(&database, ServerOptions::default())))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let logs: Vec<Vec<String>> = managers.iter().map(Server::logs).collect();
    let count = |what: &str| {
        logs.iter()
            .filter(|log| log.iter().any(|line| line.contains(what)))
            .count()
    };
    assert_eq!(count("database schema migrated"), 1, "{logs:#?}");
    for manager in &managers {
        let (status, _) = manager.call("default", "GET", "/api/v1/zones", None);
        assert_eq!(status, 200);
    }
    drop(managers);

    let dir = private_tempdir();
    cluster().psql(
        &database,
        "UPDATE zonebroker_schema SET version = version + 1",
    );
    let out = serve_raw(&url, &dir).wait_with_output().unwrap();
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
    let token = || {
        cluster().psql(
            &database,
            "SELECT convert_from(value, 'UTF8') FROM meta WHERE key = 'admin_token'",
        )
    };
    let first = on(&database, without_tokens());
    let made = token();
    assert_eq!(made.len(), 64, "{made}");
    let data_dir = first.data_dir();
    // The next process (another data directory, as another machine would have) reads the
    // same token.
    first.stop();
    let second = on(&database, without_tokens());
    assert_eq!(token(), made);
    let (status, _) = second.call_as("default", "GET", "/api/v1/zones", None, Some(&made), None);
    assert_eq!(status, 200);
    let (status, _) = second.call_as(
        "default",
        "GET",
        "/api/v1/zones",
        None,
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 401);
    // Never in a file of the data directory.
    assert!(!data_dir.path().join("admin-token").exists());
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
    let place_for = |server: &Server, user: &str| {
        let body = json!({ "image": "desktop", "user": user });
        let (status, session) = call(server, "POST", "/api/v1/sessions", Some(&body));
        assert_eq!(status, 201, "{session}");
        session
    };
    place_for(&embedded, "ada");
    // What an operator sees: zones, agents, images, sessions, the uploaded plugin.
    let state = |server: &Server| -> Vec<Value> {
        let paths = ["zones", "agents", "images", "sessions", "plugins/spread"];
        paths
            .iter()
            .map(|path| call(server, "GET", &format!("/api/v1/{path}"), None).1)
            .collect()
    };
    let before = state(&embedded);
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
    let after = state(&served);
    assert_eq!(after[..4], before[..4]);
    assert_eq!(after[4]["active_version"], before[4]["active_version"]);
    assert!(!after[4]["active_version"].is_null());
    assert_eq!(place_for(&served, "bob")["agent"], a1.as_str());
}

#[test]
fn the_database_is_reached_over_tls_with_its_certificate_verified() {
    let (cluster, ca) = Cluster::start_tls();
    let database = cluster.create_database();
    let url = cluster.url(&database);
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let server = Server::start(
        BIN,
        ServerOptions {
            storage: Storage::Database(verified),
            ..ServerOptions::default()
        },
    );
    agent(&server, "default", "a1", 10);
    image(&server, ADMIN_TOKEN, "desktop");
    place(&server, "default", "desktop");
    drop(server);

    let refused = |url: &str, ca_file: Option<&std::path::Path>| {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0=default", "--data-dir"])
            .arg(private_tempdir().path())
            .arg("--database")
            .arg(url);
        if let Some(ca_file) = ca_file {
            command.arg("--database-ca-file").arg(ca_file);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "started with {url}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A certificate the web's roots do not vouch for is refused...
    let untrusted = refused(&format!("{url}?sslmode=verify-full"), None);
    assert!(untrusted.contains("certificate"), "{untrusted}");
    // ...and so is a plain connection, which this database does not take.
    let plain = refused(&format!("{url}?sslmode=disable"), Some(&ca));
    assert!(plain.contains("no pg_hba.conf entry"), "{plain}");
    // The CA given as a flag works as `sslrootcert` does.
    let flagged = Server::start(
        BIN,
        ServerOptions {
            storage: Storage::Database(format!("{url}?sslmode=require")),
            args: vec!["--database-ca-file".into(), ca.display().to_string()],
            ..ServerOptions::default()
        },
    );
    assert_eq!(session_ids(&flagged, "default").len(), 1);
}

/// Another manager's writes, made in the database behind this process's back, are judged
/// by the database, not by this process's copy: a PATCH applies to the newer version (its
/// field is kept, not written over), an `If-Match` naming the version this process last
/// saw is refused, and a DELETE of a config changed meanwhile is refused and keeps it.
#[test]
fn a_config_another_writer_changed_in_the_database_is_never_written_over() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on(&database, ServerOptions::default());
    configs::create(&server);
    const CONFIG: &str = "/api/v1/autoscale-configs/linux";
    let elsewhere = |version: u64, minimum: u32| {
        cluster.psql(
            &database,
            &format!(
                "UPDATE autoscale_configs SET record = record || \
                 '{{\"version\": {version}, \"minimum_available_sessions\": {minimum}}}' \
                 WHERE name = 'linux'"
            ),
        );
    };
    let stored = || {
        cluster.psql(
            &database,
            "SELECT record->>'version', record->>'minimum_available_sessions', \
             record->>'max_sessions_per_server' FROM autoscale_configs WHERE name = 'linux'",
        )
    };

    // This process still has version 1; the database has 2.
    elsewhere(2, 3);
    let (status, answer) = server.call(
        "default",
        "PATCH",
        CONFIG,
        Some(&json!({ "max_sessions_per_server": 2 })),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["config"]["version"], 3, "{answer}");
    assert_eq!(
        answer["config"]["minimum_available_sessions"], 3,
        "the other write is kept: {answer}"
    );
    assert_eq!(answer["config"]["max_sessions_per_server"], 2, "{answer}");
    assert_eq!(stored(), "3|3|2");

    // If-Match names the version this process last wrote; the database has moved on.
    elsewhere(4, 5);
    let (status, answer) =
        patch_if_match(&server, CONFIG, 3, json!({ "max_sessions_per_server": 7 }));
    assert_eq!(status, 412, "{answer}");
    assert_eq!(stored(), "4|5|2", "a refused write writes nothing");
    let (_, answer) = server.call("default", "GET", CONFIG, None);
    assert_eq!(
        answer["config"]["version"], 4,
        "the refusal taught the view: {answer}"
    );

    // A delete of a config changed meanwhile is refused, and the config stays.
    elsewhere(6, 1);
    let (status, answer) = server.call("default", "DELETE", CONFIG, None);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "concurrent_update", "{answer}");
    assert_eq!(stored(), "6|1|2");
    let (_, answer) = server.call("default", "GET", CONFIG, None);
    assert_eq!(answer["config"]["version"], 6, "{answer}");
    let (status, answer) = server.call("default", "DELETE", CONFIG, None);
    assert_eq!(status, 204, "{answer}");
    assert_eq!(stored(), "", "gone from the database");
}

/// Stands in for another manager sharing the database: `write` changes a record as that
/// manager's transaction would, with the record's entry in the change feed (the next
/// revision, another writer) in the same transaction.
fn as_another_manager(cluster: &Cluster, database: &str, kind: &str, key: &str, write: &str) {
    cluster.psql(
        database,
        &format!(
            "BEGIN; {write}; \
             WITH next AS (UPDATE revision SET value = value + 1 WHERE singleton RETURNING value) \
             INSERT INTO changes (revision, kind, key, writer) \
             SELECT value, '{kind}', '{key}', gen_random_uuid() FROM next; COMMIT"
        ),
    );
}

/// The change feed: this process lists its writes under a revision each transaction, and
/// follows what another manager commits (create, update, delete; images, agents and
/// AutoScale configs) without a restart.
#[test]
fn changes_another_manager_commits_reach_this_ones_view() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on(&database, ServerOptions::default());
    image(&server, ADMIN_TOKEN, "desktop");
    assert_eq!(
        cluster.psql(
            &database,
            "SELECT count(*), (SELECT value FROM revision) = (SELECT max(revision) FROM changes) \
             FROM changes WHERE kind = 'images' AND key = 'desktop'"
        ),
        "1|t",
        "this process's write is in the feed, at the latest revision"
    );
    let get = |path: &str| server.call("default", "GET", path, None);

    // Created, changed and deleted elsewhere.
    as_another_manager(
        cluster,
        &database,
        "images",
        "remote",
        "INSERT INTO images (name, record) \
         SELECT 'remote', jsonb_set(record, '{name}', '\"remote\"') FROM images WHERE name = 'desktop'",
    );
    let took = until("an image created elsewhere", || {
        get("/api/v1/images/remote").0 == 200
    });
    eprintln!("an image created elsewhere was seen after {took:?}");
    assert!(
        metric(&server, "zonebroker_change_feed_applied_total").is_some_and(|n| n >= 1.0),
        "the applied change is counted"
    );
    as_another_manager(
        cluster,
        &database,
        "images",
        "remote",
        &format!(
            "UPDATE images SET record = jsonb_set(record, '{{memory}}', '{}') WHERE name = 'remote'",
            2 * GIB
        ),
    );
    until("an image changed elsewhere", || {
        get("/api/v1/images/remote").1["memory"] == 2 * GIB
    });
    as_another_manager(
        cluster,
        &database,
        "images",
        "remote",
        "DELETE FROM images WHERE name = 'remote'",
    );
    until("an image deleted elsewhere", || {
        get("/api/v1/images/remote").0 == 404
    });

    // An agent disabled elsewhere takes no more sessions here.
    let id = agent(&server, "default", "host-1", 4);
    place(&server, "default", "desktop");
    as_another_manager(
        cluster,
        &database,
        "agents",
        &id,
        &format!(
            "UPDATE agents SET record = jsonb_set(record, '{{enabled}}', 'false') WHERE id = '{id}'"
        ),
    );
    until("an agent disabled elsewhere", || {
        get(&format!("/api/v1/agents/{id}")).1["enabled"] == false
    });
    let (status, answer) = request_session(&server, "default", "desktop", "alice");
    assert_eq!(status, 503, "{answer}");

    // An AutoScale config changed elsewhere: the view has its version, so a write naming
    // that version is taken at once.
    configs::create(&server);
    const CONFIG: &str = "/api/v1/autoscale-configs/linux";
    as_another_manager(
        cluster,
        &database,
        "autoscale_configs",
        "linux",
        "UPDATE autoscale_configs SET record = record || \
         '{\"version\": 2, \"minimum_available_sessions\": 3}' WHERE name = 'linux'",
    );
    until("an AutoScale config changed elsewhere", || {
        get(CONFIG).1["config"]["version"] == 2
    });
    let (status, answer) =
        patch_if_match(&server, CONFIG, 2, json!({ "max_sessions_per_server": 2 }));
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = get(CONFIG);
    assert_eq!(answer["config"]["version"], 3, "{answer}");
    assert_eq!(
        answer["config"]["minimum_available_sessions"], 3,
        "{answer}"
    );
}

/// An activation another manager commits hot-swaps the plugin here: the next placements
/// use the version it activated, compiled by this process from the stored component, with
/// no restart.
#[test]
fn a_plugin_another_manager_activates_is_swapped_in_here() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on(&database, ServerOptions::default());
    let builtin = |name: &str| {
        zonebroker::plugins::BUILTIN_STRATEGIES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    let upload =
        |bytes: &[u8], activate: bool| upload_plugin(&server, "default", "swappy", bytes, activate);
    upload(builtin("least-load"), true);
    let most_load = upload(builtin("most-load"), false);
    let (status, answer) = server.call(
        "default",
        "PATCH",
        "/api/v1/zones/default",
        Some(&json!({ "load_balance_strategy": "swappy" })),
    );
    assert_eq!(status, 200, "{answer}");
    image(&server, ADMIN_TOKEN, "desktop");
    agent(&server, "default", "host-1", 4);
    agent(&server, "default", "host-2", 4);
    let place = || {
        let (status, session) = request_session(&server, "default", "desktop", "ada");
        assert_eq!(status, 201, "{session}");
        (
            session["id"].as_str().unwrap().to_string(),
            session["agent"].clone(),
        )
    };
    let end = |id: &str| {
        let (status, answer) =
            server.call("default", "DELETE", &format!("/api/v1/sessions/{id}"), None);
        assert_eq!(status, 204, "{answer}");
    };
    let (_, loaded) = place();
    let (second, other) = place();
    assert_ne!(loaded, other, "least-load spreads the sessions");
    end(&second);

    as_another_manager(
        cluster,
        &database,
        "plugins",
        "swappy",
        &format!(
            "UPDATE plugins SET record = jsonb_set(record, '{{active}}', '\"{most_load}\"') \
             WHERE name = 'swappy'"
        ),
    );
    let took = until("placements with the version activated elsewhere", || {
        let (id, agent) = place();
        end(&id);
        agent == loaded
    });
    eprintln!("the version activated elsewhere placed after {took:?}");
    let (_, plugin) = server.call("default", "GET", "/api/v1/plugins/swappy", None);
    assert_eq!(plugin["active_version"], most_load.as_str(), "{plugin}");
}

/// What another manager's placements change, served here: a session it placed is found
/// and ended through this process (its reservation given back in the database), and the
/// usage it reserved shows in this process's view of the agent.
#[test]
fn sessions_and_usage_another_manager_changes_are_served_here() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on(&database, ServerOptions::default());
    image(&server, ADMIN_TOKEN, "desktop");
    let agent_id = agent(&server, "default", "host-1", 4);
    let ours = place(&server, "default", "desktop");
    let sessions_shown = || {
        server
            .call(
                "default",
                "GET",
                &format!("/api/v1/agents/{agent_id}"),
                None,
            )
            .1["sessions"]
            .clone()
    };
    assert_eq!(sessions_shown(), 1);

    // Another manager places a second session on the same agent, as its statement would:
    // the session and the agent's usage in one transaction.
    let theirs = uuid::Uuid::new_v4().to_string();
    cluster.psql(
        &database,
        &format!(
            "BEGIN; \
             INSERT INTO sessions (id, record) \
             SELECT '{theirs}', jsonb_set(record, '{{id}}', '\"{theirs}\"') FROM sessions WHERE id = '{ours}'; \
             UPDATE usage u SET sessions = u.sessions + 1, \
                 millicores = u.millicores + (s.record->'demand'->>'millicores')::bigint, \
                 memory = u.memory + (s.record->'demand'->>'memory')::bigint, \
                 revision = u.revision + 1 \
             FROM sessions s WHERE s.id = '{ours}' AND u.host = '{agent_id}'; \
             COMMIT"
        ),
    );
    let took = until("usage another manager reserved", || sessions_shown() == 2);
    eprintln!("usage reserved elsewhere shown after {took:?}");

    let path = format!("/api/v1/sessions/{theirs}");
    let (status, session) = server.call("default", "GET", &path, None);
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["agent"], agent_id.as_str(), "{session}");
    let mut both = vec![ours.clone(), theirs.clone()];
    both.sort();
    assert_eq!(
        session_ids(&server, "default"),
        both,
        "listed with this one's"
    );
    let (status, answer) = server.call("default", "DELETE", &path, None);
    assert_eq!(status, 204, "{answer}");
    assert_eq!(
        cluster.psql(
            &database,
            "SELECT (SELECT count(*) FROM sessions), (SELECT sum(sessions) FROM usage)"
        ),
        "1|1",
        "the session is gone and its reservation given back"
    );
    let (status, _) = server.call("default", "DELETE", &path, None);
    assert_eq!(status, 404);
    assert_eq!(sessions_shown(), 1);
}

/// An AutoScale config is reconciled by the one process that holds its lease: while another
/// manager holds it, this process leaves the config alone and says so; once that lease
/// lapses, this process takes the config over at the next epoch, and a clean stop gives
/// the lease back.
#[test]
fn an_autoscale_config_another_manager_holds_is_left_to_it_until_its_lease_lapses() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on_with_args(
        &database,
        &["--config-lease", "1s", "--autoscale-interval", "200ms"],
    );
    let other = uuid::Uuid::new_v4();
    cluster.psql(
        &database,
        &format!(
            "INSERT INTO config_leases (config, holder, epoch, expires_at) \
             VALUES ('linux', '{other}', 7, now() + interval '3 seconds')"
        ),
    );
    configs::create(&server);
    const CONFIG: &str = "/api/v1/autoscale-configs/linux";
    let status = || server.call("default", "GET", CONFIG, None).1["status"].clone();
    until("the config shown as reconciled elsewhere", || {
        status()["reconciled_elsewhere"] == true
    });
    let lease = || {
        cluster.psql(
            &database,
            &format!(
                "SELECT holder = '{other}', epoch, expires_at > now() FROM config_leases \
                 WHERE config = 'linux'"
            ),
        )
    };
    assert_eq!(lease(), "t|7|t", "the other manager's lease is left alone");
    let held_here = || {
        metric(
            &server,
            "zonebroker_autoscale_config_lease_held{config=\"linux\"}",
        )
    };
    assert_eq!(held_here(), Some(0.0));
    // The holder's status is the one shown.
    as_another_manager(
        cluster,
        &database,
        "config_status",
        "linux",
        "INSERT INTO config_status (name, record) VALUES ('linux', \
         '{\"last_error\": \"list-vms: seen by the holder\", \"consecutive_failures\": 1, \
           \"backoff_until_ms\": null, \"available_sessions\": 0, \"servers\": 0, \
           \"unmanaged_vms\": []}')",
    );
    until("the holder's status", || {
        status()["last_error"] == "list-vms: seen by the holder"
    });
    assert_eq!(status()["reconciled_elsewhere"], true);

    let took = until("the lapsed lease taken over", || lease() == "f|8|t");
    eprintln!("taken over {took:?} after the config was created");
    until("this process reconciling the config", || {
        status()["reconciled_elsewhere"] == false
    });
    assert_eq!(held_here(), Some(1.0));
    until("this process's status in the database", || {
        cluster.psql(
            &database,
            "SELECT record->>'last_error' LIKE 'list-vms:%ConnectionRefused%', record->>'reconciled_elsewhere' \
             FROM config_status WHERE name = 'linux'",
        ) == "t|false"
    });
    server.stop();
    assert_eq!(lease(), "f|8|f", "a clean stop gives the lease back");
}

/// A process that missed changes the feed no longer keeps (pruned before it read them)
/// stops rather than serve a view with a hole in it; started again, it reads everything
/// afresh and serves what it had missed.
#[test]
fn a_process_behind_the_pruned_change_feed_stops_and_serves_again_once_restarted() {
    let cluster = cluster();
    let database = cluster.create_database();
    let mut server = on(&database, ServerOptions::default());
    image(&server, ADMIN_TOKEN, "desktop");
    // Another manager's image, its change already pruned.
    cluster.psql(
        &database,
        "BEGIN; \
         INSERT INTO images (name, record) \
         SELECT 'remote', jsonb_set(record, '{name}', '\"remote\"') FROM images WHERE name = 'desktop'; \
         UPDATE revision SET value = value + 1, pruned_through = value + 1 WHERE singleton; \
         COMMIT",
    );
    let status = server
        .wait(Duration::from_secs(10))
        .expect("the process stops");
    assert_eq!(status.code(), Some(75), "{status:?}");

    let restarted = on(
        &database,
        ServerOptions {
            data_dir: Some(server.data_dir()),
            ..ServerOptions::default()
        },
    );
    let (status, answer) = restarted.call("default", "GET", "/api/v1/images/remote", None);
    assert_eq!(status, 200, "{answer}");
}

/// Where the database has `LISTEN/NOTIFY`, a change another manager announces wakes this
/// process's follower at once: seen long before the next poll (a minute away here).
#[test]
fn a_change_another_manager_announces_is_followed_before_the_next_poll() {
    let cluster = cluster();
    let database = cluster.create_database();
    let server = on_with_args(&database, &["--feed-interval", "60s"]);
    image(&server, ADMIN_TOKEN, "desktop");
    as_another_manager(
        cluster,
        &database,
        "images",
        "announced",
        "INSERT INTO images (name, record) \
         SELECT 'announced', jsonb_set(record, '{name}', '\"announced\"') FROM images WHERE name = 'desktop'; \
         SELECT pg_notify('zonebroker_changes', 'another manager')",
    );
    let took = until("an announced change", || {
        server
            .call("default", "GET", "/api/v1/images/announced", None)
            .0
            == 200
    });
    eprintln!("an announced change was seen after {took:?}");
}
