//! Deployment zones and session placement end to end: the real binary with two listeners
//! (east, west), agents checking in over HTTP, sessions requested over HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const GIB: u64 = 1 << 30;

fn east_west() -> Server {
    Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into(), "west".into()],
            ..ServerOptions::default()
        },
    )
}

fn agent(server: &Server, zone: &str, hostname: &str, cores: f64, max_sessions: u32) -> String {
    let body = json!({
        "hostname": hostname, "address": format!("10.0.0.{}", hostname.len()), "port": 4902,
        "cores": cores, "memory": 1024 * GIB, "max_sessions": max_sessions,
    });
    server.check_in(zone, body)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn image(server: &Server, name: &str, cores: f64, zone: Option<&str>) {
    let body = json!({ "name": name, "cores": cores, "memory": GIB, "zone": zone });
    let (status, answer) = server.call("east", "POST", "/api/v1/images", Some(&body));
    assert_eq!(status, 201, "{answer}");
}

fn request(server: &Server, zone: &str, image: &str, user: &str) -> (u16, Value) {
    server.call(
        zone,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": image, "user": user })),
    )
}

fn place(server: &Server, zone: &str, image: &str) -> Value {
    let (status, session) = request(server, zone, image, "ada");
    assert_eq!(status, 201, "{session}");
    session
}

fn set_zone(server: &Server, zone: &str, patch: Value) {
    let (status, answer) = server.call(
        "east",
        "PATCH",
        &format!("/api/v1/zones/{zone}"),
        Some(&patch),
    );
    assert_eq!(status, 200, "{answer}");
}

fn enable(server: &Server, id: &str, enabled: bool) {
    let (status, answer) = server.call(
        "east",
        "PATCH",
        &format!("/api/v1/agents/{id}"),
        Some(&json!({ "enabled": enabled })),
    );
    assert_eq!(status, 200, "{answer}");
}

fn agents_by_hostname(server: &Server) -> HashMap<String, Value> {
    let (_, agents) = server.call("east", "GET", "/api/v1/agents", None);
    agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["hostname"].as_str().unwrap().to_string(), a.clone()))
        .collect()
}

#[test]
fn each_builtin_strategy_picks_the_agent_its_name_says() {
    let server = east_west();
    // Loads (reserved cores / cores) and session counts after the set-up below:
    //   a1: 2 of 4 cores = 0.5 (most), 2 sessions
    //   a2: 5 of 20 = 0.25,            5 sessions (most)
    //   a3: 3 of 48 = 0.0625 (least),  3 sessions
    //   a4: 1 of 8 = 0.125,            1 session (fewest)
    let ids: Vec<String> = [("a1", 4.0), ("a2", 20.0), ("a3", 48.0), ("a4", 8.0)]
        .iter()
        .map(|(name, cores)| agent(&server, "east", name, *cores, 10))
        .collect();
    image(&server, "one-core", 1.0, None);
    for (target, sessions) in [(0, 2), (1, 5), (2, 3), (3, 1)] {
        for (i, id) in ids.iter().enumerate() {
            enable(&server, id, i == target);
        }
        for _ in 0..sessions {
            assert_eq!(
                place(&server, "east", "one-core")["agent"],
                ids[target].as_str()
            );
        }
    }
    for id in &ids {
        enable(&server, id, true);
    }
    for (strategy, expected) in [
        ("least-load", "a3"),
        ("most-load", "a1"),
        ("least-kasms", "a4"),
        ("most-kasms", "a2"),
    ] {
        set_zone(
            &server,
            "east",
            json!({ "load_balance_strategy": strategy }),
        );
        let session = place(&server, "east", "one-core");
        assert_eq!(session["agent_hostname"], expected, "{strategy}");
        let (status, _) = server.call(
            "east",
            "DELETE",
            &format!("/api/v1/sessions/{}", session["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(status, 204);
    }
}

#[test]
fn the_users_zone_comes_first_and_alternates_only_when_allowed() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 1);
    agent(&server, "west", "w1", 8.0, 5);
    image(&server, "desktop", 1.0, None);

    let first = place(&server, "east", "desktop");
    assert_eq!(
        (first["zone"].as_str(), first["agent_hostname"].as_str()),
        (Some("east"), Some("e1"))
    );
    let second = place(&server, "east", "desktop");
    assert_eq!(
        (second["zone"].as_str(), second["agent_hostname"].as_str()),
        (Some("west"), Some("w1")),
        "east is full"
    );

    set_zone(&server, "east", json!({ "search_alternate_zones": false }));
    let (status, error) = request(&server, "east", "desktop", "ada");
    assert_eq!(status, 503);
    assert_eq!(error["error"]["code"], "no_capacity");

    let from_west = place(&server, "west", "desktop");
    assert_eq!(from_west["zone"], "west");
}

#[test]
fn an_image_restricted_to_a_zone_runs_only_there() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 10);
    agent(&server, "west", "w1", 8.0, 10);
    image(&server, "west-only", 1.0, Some("west"));
    image(&server, "east-only", 1.0, Some("east"));

    assert_eq!(place(&server, "east", "west-only")["zone"], "west");
    assert_eq!(place(&server, "west", "east-only")["zone"], "east");
    set_zone(&server, "east", json!({ "search_alternate_zones": false }));
    assert_eq!(
        request(&server, "east", "west-only", "ada").0,
        503,
        "never on an east agent"
    );
    assert_eq!(place(&server, "east", "east-only")["zone"], "east");
}

#[test]
fn connection_urls_follow_the_zone_and_the_request() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 10); // address 10.0.0.2
    image(&server, "desktop", 1.0, None);
    let body = json!({ "image": "desktop", "user": "ada" });
    let with_host = |host: &str| {
        let (status, session) = server.call_as(
            "east",
            "POST",
            "/api/v1/sessions",
            Some(&body),
            Some(ADMIN_TOKEN),
            Some(host),
        );
        assert_eq!(status, 201, "{session}");
        session
    };

    let session = with_host("desk.example.com:9443");
    let id = session["id"].as_str().unwrap();
    assert_eq!(
        session["connection"]["url"],
        format!("https://desk.example.com:9443/desktop/{id}/")
    );
    assert_eq!(
        session["connection"]["allow_origin_domain"],
        "desk.example.com"
    );
    assert_eq!(session["connection"]["upstream_auth_address"], "proxy");

    let session = with_host("desk.example.com");
    let id = session["id"].as_str().unwrap();
    assert_eq!(
        session["connection"]["url"],
        format!("https://desk.example.com:443/desktop/{id}/"),
        "port 0, no port: 443"
    );

    set_zone(
        &server,
        "east",
        json!({ "proxy_hostname": "proxy.$request_host$", "proxy_port": 8443, "proxy_path": "/k" }),
    );
    let session = with_host("desk.example.com:9443");
    let id = session["id"].as_str().unwrap();
    assert_eq!(
        session["connection"]["url"],
        format!("https://proxy.desk.example.com:8443/k/{id}/")
    );

    set_zone(&server, "east", json!({ "proxy_connections": false }));
    let session = with_host("desk.example.com:9443");
    assert_eq!(
        session["connection"]["url"], "https://10.0.0.2:4902/",
        "straight to the agent"
    );
}

#[test]
fn two_hundred_concurrent_requests_fill_eight_slots_exactly() {
    let server = Arc::new(east_west());
    agent(&server, "east", "e1", 64.0, 4);
    agent(&server, "west", "w1", 64.0, 4);
    image(&server, "desktop", 1.0, None);
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (server, barrier) = (server.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let zone = if i % 2 == 0 { "east" } else { "west" };
                request(&server, zone, "desktop", &format!("user{i}")).0
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 8);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 192);
    let (_, sessions) = server.call("east", "GET", "/api/v1/sessions", None);
    assert_eq!(sessions.as_array().unwrap().len(), 8);
    for (hostname, agent) in agents_by_hostname(&server) {
        assert_eq!(agent["sessions"], 4, "{hostname}");
        assert_eq!(agent["cores_reserved"], 4.0, "{hostname}");
    }
}

#[test]
fn deleting_a_session_frees_its_reservation() {
    let server = east_west();
    agent(&server, "east", "e1", 2.0, 10);
    image(&server, "desktop", 2.0, None);
    let session = place(&server, "east", "desktop");
    assert_eq!(request(&server, "east", "desktop", "bob").0, 503);
    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
    assert_eq!(
        server.call("east", "GET", &path, None).1["id"],
        session["id"]
    );
    assert_eq!(server.call("east", "DELETE", &path, None).0, 204);
    assert_eq!(server.call("east", "GET", &path, None).0, 404);
    assert_eq!(server.call("east", "DELETE", &path, None).0, 404);
    assert_eq!(agents_by_hostname(&server)["e1"]["cores_reserved"], 0.0);
    place(&server, "east", "desktop");
}

#[test]
fn agents_move_with_their_listener_and_go_stale() {
    let server = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into(), "west".into()],
            args: vec!["--agent-timeout".into(), "1".into()],
            ..ServerOptions::default()
        },
    );
    let id = agent(&server, "east", "roamer", 8.0, 4);
    let again = agent(&server, "west", "roamer", 8.0, 4);
    assert_eq!(id, again, "the same host name is the same agent");
    let agents = agents_by_hostname(&server);
    assert_eq!(agents.len(), 1);
    assert_eq!(agents["roamer"]["zone"], "west");
    assert_eq!(agents["roamer"]["status"], "online");

    image(&server, "desktop", 1.0, None);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(agents_by_hostname(&server)["roamer"]["status"], "offline");
    assert_eq!(
        request(&server, "west", "desktop", "ada").0,
        503,
        "a silent agent is no candidate"
    );
    agent(&server, "west", "roamer", 8.0, 4);
    assert_eq!(place(&server, "west", "desktop")["agent"], id.as_str());
}

#[test]
fn state_survives_a_restart_and_a_kill_9() {
    let mut server = east_west();
    let (status, _) = server.call(
        "east",
        "POST",
        "/api/v1/zones",
        Some(&json!({ "name": "north", "proxy_port": 8443 })),
    );
    assert_eq!(status, 201);
    let id = agent(&server, "east", "e1", 8.0, 10);
    image(&server, "desktop", 1.0, None);
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        acknowledged.push(
            place(&server, "east", "desktop")["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let zones_before = server.call("east", "GET", "/api/v1/zones", None).1;

    // A kill -9 right after the acknowledgements: every acknowledged session is on disk.
    server.kill9();
    let data_dir = server.data_dir();
    let restarted = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into(), "west".into()],
            data_dir: Some(data_dir.clone()),
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        restarted.call("east", "GET", "/api/v1/zones", None).1,
        zones_before
    );
    let (_, sessions) = restarted.call("east", "GET", "/api/v1/sessions", None);
    let mut ids: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    let agents = agents_by_hostname(&restarted);
    assert_eq!(agents["e1"]["id"], id.as_str());
    assert_eq!(agents["e1"]["sessions"], 5);
    assert_eq!(agents["e1"]["cores_reserved"], 5.0);

    // And a graceful restart keeps it all too.
    drop(restarted);
    let again = Server::start(
        BIN,
        ServerOptions {
            zones: vec!["east".into(), "west".into()],
            data_dir: Some(data_dir),
            ..ServerOptions::default()
        },
    );
    assert_eq!(
        again.call("east", "GET", "/api/v1/sessions", None).1,
        sessions
    );
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 10);
    image(&server, "desktop", 1.0, None);
    let snapshot = |server: &Server| {
        ["/api/v1/zones", "/api/v1/images", "/api/v1/sessions"]
            .map(|path| server.call("east", "GET", path, None).1)
    };
    let before = snapshot(&server);

    let cases: Vec<(&str, &str, Value, u16, &str, Option<&str>)> = vec![
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "north", "colour": "red" }),
            422,
            "invalid_field",
            Some("colour"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "North" }),
            422,
            "invalid_field",
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "north", "proxy_port": "x" }),
            422,
            "invalid_field",
            Some("proxy_port"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "north", "proxy_port": 70000 }),
            422,
            "invalid_field",
            Some("proxy_port"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "north", "load_balance_strategy": "nope" }),
            422,
            "invalid_field",
            Some("load_balance_strategy"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "north", "proxy_path": "no-slash" }),
            422,
            "invalid_field",
            Some("proxy_path"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "proxy_port": 1 }),
            422,
            "invalid_field",
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/zones",
            json!({ "name": "east" }),
            409,
            "already_exists",
            None,
        ),
        (
            "PATCH",
            "/api/v1/zones/east",
            json!({ "name": "other" }),
            422,
            "invalid_field",
            Some("name"),
        ),
        (
            "PATCH",
            "/api/v1/zones/nowhere",
            json!({}),
            404,
            "not_found",
            None,
        ),
        (
            "DELETE",
            "/api/v1/zones/default",
            Value::Null,
            409,
            "zone_in_use",
            None,
        ),
        (
            "DELETE",
            "/api/v1/zones/east",
            Value::Null,
            409,
            "zone_in_use",
            None,
        ),
        (
            "POST",
            "/api/v1/images",
            json!({ "name": "x", "cores": 0, "memory": 1 }),
            422,
            "invalid_field",
            Some("cores"),
        ),
        (
            "POST",
            "/api/v1/images",
            json!({ "name": "x", "cores": 1, "memory": 1, "zone": "nowhere" }),
            422,
            "invalid_field",
            Some("zone"),
        ),
        (
            "POST",
            "/api/v1/sessions",
            json!({ "image": "nothing", "user": "ada" }),
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            "/api/v1/sessions",
            json!({ "image": "desktop" }),
            422,
            "invalid_field",
            Some("user"),
        ),
        (
            "POST",
            "/api/v1/sessions",
            json!({ "image": "desktop", "user": "" }),
            422,
            "invalid_field",
            Some("user"),
        ),
        (
            "GET",
            "/api/v1/sessions/not-a-uuid",
            Value::Null,
            404,
            "not_found",
            None,
        ),
        (
            "PATCH",
            "/api/v1/agents/00000000-0000-0000-0000-000000000000",
            json!({ "enabled": false }),
            404,
            "not_found",
            None,
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let body = (!body.is_null()).then_some(body);
        let (got, answer) = server.call("east", method, path, body.as_ref());
        assert_eq!(got, status, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
        }
    }

    // Not JSON at all, and not declared as JSON.
    let url = server.url("east", "/api/v1/zones");
    let response = server
        .http()
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().unwrap()["error"]["code"],
        "invalid_json"
    );
    let response = server
        .http()
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body("name=north")
        .send()
        .unwrap();
    assert_eq!(response.status(), 415);

    // A disabled image cannot be requested.
    let (status, _) = server.call(
        "east",
        "PATCH",
        "/api/v1/images/desktop",
        Some(&json!({ "enabled": false })),
    );
    assert_eq!(status, 200);
    assert_eq!(request(&server, "east", "desktop", "ada").0, 404);
    server.call(
        "east",
        "PATCH",
        "/api/v1/images/desktop",
        Some(&json!({ "enabled": true })),
    );

    // Agents check in only with the agent token, and their bodies are checked too.
    let checkin = json!({ "hostname": "x", "address": "10.0.0.9", "port": 1, "cores": 1, "memory": 1, "max_sessions": 1 });
    let (status, _) = server.call("east", "POST", "/api/v1/agents/checkin", Some(&checkin));
    assert_eq!(status, 401, "the admin token is not the agent token");
    let (status, answer) = server.call_as(
        "east",
        "POST",
        "/api/v1/agents/checkin",
        Some(&json!({ "hostname": "x" })),
        Some(zonebroker_test_support::AGENT_TOKEN),
        None,
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("address"))
    );

    assert_eq!(snapshot(&server), before, "nothing changed");
    assert_eq!(agents_by_hostname(&server).len(), 1);
}

#[test]
fn zones_can_be_created_updated_and_deleted_when_unused() {
    let server = east_west();
    let (status, zone) = server.call(
        "east",
        "POST",
        "/api/v1/zones",
        Some(&json!({ "name": "north" })),
    );
    assert_eq!(status, 201);
    assert_eq!(
        zone,
        json!({
            "name": "north", "allow_origin_domain": "$request_host$", "upstream_auth_address": "proxy",
            "load_balance_strategy": "least-load", "search_alternate_zones": true, "proxy_connections": true,
            "proxy_hostname": "$request_host$", "proxy_path": "/desktop", "proxy_port": 0,
        })
    );
    let (status, zone) = server.call(
        "east",
        "PATCH",
        "/api/v1/zones/north",
        Some(&json!({ "load_balance_strategy": "most-kasms" })),
    );
    assert_eq!(
        (status, zone["load_balance_strategy"].as_str()),
        (200, Some("most-kasms"))
    );
    let (_, zones) = server.call("east", "GET", "/api/v1/zones", None);
    let names: Vec<&str> = zones
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "east", "north", "west"]);
    assert_eq!(
        server.call("east", "DELETE", "/api/v1/zones/north", None).0,
        204
    );
    assert_eq!(
        server.call("east", "GET", "/api/v1/zones/north", None).0,
        404
    );
}

#[test]
fn the_cli_drives_the_admin_api() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 10);
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(BIN)
            .args(args)
            .args(["--server", &server.url("east", "")])
            .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status.success(), stdout, stderr)
    };
    let (ok, out, err) = cli(&[
        "zone",
        "create",
        "north",
        "--strategy",
        "most-load",
        "--proxy-port",
        "8443",
    ]);
    assert!(ok, "{err}");
    let zone: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            zone["load_balance_strategy"].as_str(),
            zone["proxy_port"].as_u64()
        ),
        (Some("most-load"), Some(8443))
    );
    let (ok, out, _) = cli(&[
        "zone",
        "update",
        "north",
        "--search-alternate-zones",
        "false",
    ]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["search_alternate_zones"],
        false
    );
    let (ok, out, _) = cli(&["zone", "list"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (ok, out, _) = cli(&["agent", "list"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["hostname"],
        "e1"
    );
    let (ok, _, err) = cli(&[
        "image", "create", "desktop", "--cores", "1", "--memory", "2GiB",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["session", "request", "--image", "desktop", "--user", "ada"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["agent_hostname"],
        "e1"
    );
    let (ok, _, err) = cli(&["zone", "create", "Bad"]);
    assert!(!ok);
    assert!(
        err.contains("invalid_field") && err.contains("`name`"),
        "{err}"
    );
}

#[test]
fn metrics_count_placements_by_zone_and_strategy() {
    let server = east_west();
    agent(&server, "east", "e1", 8.0, 1);
    agent(&server, "west", "w1", 8.0, 1);
    image(&server, "desktop", 1.0, None);
    place(&server, "east", "desktop");
    place(&server, "east", "desktop");
    assert_eq!(request(&server, "east", "desktop", "ada").0, 503);
    let text = server
        .http()
        .get(server.url("east", "/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        r#"zonebroker_placements_total{zone="east",strategy="least-load",scope="same_zone"} 1"#,
        r#"zonebroker_placements_total{zone="east",strategy="least-load",scope="alternate_zone"} 1"#,
        r#"zonebroker_placement_no_capacity_total{zone="east"} 1"#,
        r#"zonebroker_placement_duration_seconds_count{zone="east"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn the_openapi_document_covers_every_route() {
    let server = east_west();
    let (status, doc) = server.call_as("east", "GET", "/api/v1/openapi.json", None, None, None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/plugins"),
        ("get", "/api/v1/plugins/{name}"),
        ("delete", "/api/v1/plugins/{name}"),
        ("post", "/api/v1/plugins/{name}/versions"),
        ("post", "/api/v1/plugins/{name}/activate"),
        ("delete", "/api/v1/plugins/{name}/versions/{version}"),
        ("get", "/api/v1/zones"),
        ("post", "/api/v1/zones"),
        ("get", "/api/v1/zones/{name}"),
        ("patch", "/api/v1/zones/{name}"),
        ("delete", "/api/v1/zones/{name}"),
        ("get", "/api/v1/zones/{name}/shadow"),
        ("post", "/api/v1/zones/{name}/shadow/promote"),
        ("post", "/api/v1/agents/checkin"),
        ("get", "/api/v1/agents"),
        ("get", "/api/v1/agents/{id}"),
        ("patch", "/api/v1/agents/{id}"),
        ("delete", "/api/v1/agents/{id}"),
        ("post", "/api/v1/agents/{id}/reset-credential"),
        ("get", "/api/v1/images"),
        ("post", "/api/v1/images"),
        ("get", "/api/v1/images/{name}"),
        ("patch", "/api/v1/images/{name}"),
        ("delete", "/api/v1/images/{name}"),
        ("get", "/api/v1/sessions"),
        ("post", "/api/v1/sessions"),
        ("get", "/api/v1/sessions/{id}"),
        ("delete", "/api/v1/sessions/{id}"),
        ("get", "/api/v1/sessions/{id}/rdp"),
        ("get", "/api/v1/pools"),
        ("post", "/api/v1/pools"),
        ("get", "/api/v1/pools/{name}"),
        ("delete", "/api/v1/pools/{name}"),
        ("get", "/api/v1/vm-provider-configs"),
        ("post", "/api/v1/vm-provider-configs"),
        ("get", "/api/v1/vm-provider-configs/{name}"),
        ("patch", "/api/v1/vm-provider-configs/{name}"),
        ("delete", "/api/v1/vm-provider-configs/{name}"),
        ("get", "/api/v1/autoscale-configs"),
        ("post", "/api/v1/autoscale-configs"),
        ("get", "/api/v1/autoscale-configs/{name}"),
        ("patch", "/api/v1/autoscale-configs/{name}"),
        ("delete", "/api/v1/autoscale-configs/{name}"),
        ("get", "/api/v1/workspaces"),
        ("post", "/api/v1/workspaces"),
        ("get", "/api/v1/workspaces/{name}"),
        ("patch", "/api/v1/workspaces/{name}"),
        ("delete", "/api/v1/workspaces/{name}"),
        ("get", "/api/v1/servers"),
        ("post", "/api/v1/servers"),
        ("get", "/api/v1/servers/{id}"),
        ("delete", "/api/v1/servers/{id}"),
        ("post", "/api/v1/servers/bootstrap"),
        ("post", "/api/v1/servers/checkin"),
        ("get", "/api/v1/installation"),
        ("get", "/api/v1/ldap-configs"),
        ("post", "/api/v1/ldap-configs"),
        ("get", "/api/v1/ldap-configs/{name}"),
        ("patch", "/api/v1/ldap-configs/{name}"),
        ("delete", "/api/v1/ldap-configs/{name}"),
    ];
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // And every documented route answers something other than "no such route".
    for (method, path) in &expected {
        let path = path
            .replace("{name}", "east")
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{version}", "0000");
        let (status, answer) = server.call("east", &method.to_uppercase(), &path, None);
        assert!(
            !(status == 404 && answer["error"]["message"] == "no such route") && status != 405,
            "{method} {path}: {status} {answer}"
        );
    }
}

/// `GET path` with the admin token: status, the next page's `Link` target, body.
fn get_page(server: &Server, path: &str) -> (u16, Option<String>, Value) {
    let response = server.admin_get("east", path);
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string())
        .map(|link| {
            let target = link.split(';').next().unwrap().trim();
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        });
    (status, next, response.json().unwrap())
}

/// Follow `path`'s pages from the first: each page's ids, in order.
fn pages(server: &Server, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let (status, link, body) = get_page(server, &path);
        assert_eq!(status, 200, "{path}: {body}");
        pages.push(
            body.as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_string())
                .collect(),
        );
        next = link;
    }
    pages
}

#[test]
fn agents_and_sessions_are_listed_in_pages_in_a_stable_order() {
    let server = east_west();
    for i in 0..7 {
        agent(&server, "east", &format!("page-agent-{i}"), 64.0, 100);
    }
    image(&server, "desktop", 0.1, None);
    // Sessions are ordered by creation time in milliseconds, then by id: two placed in the
    // same millisecond may list in either order, so each gets its own.
    let sessions: Vec<String> = (0..5)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            place(&server, "east", "desktop")["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // Agents: in the order of their ids, pages of 3, the last without a `Link`.
    let all = |path: &str| -> Vec<String> {
        let (status, link, body) = get_page(&server, path);
        assert_eq!(
            (status, link),
            (200, None),
            "without `limit`, everything at once"
        );
        body.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    let every_agent = all("/api/v1/agents");
    let mut sorted = every_agent.clone();
    sorted.sort();
    assert_eq!(every_agent, sorted, "ordered by id");
    let agent_pages = pages(&server, "/api/v1/agents?limit=3");
    assert_eq!(
        agent_pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    assert_eq!(agent_pages.concat(), every_agent);

    // Sessions: oldest first; a cursor whose session ended still marks its place.
    let every_session = all("/api/v1/sessions");
    assert_eq!(every_session, sessions, "oldest first");
    let (_, next, first) = get_page(&server, "/api/v1/sessions?limit=2");
    assert_eq!(first.as_array().unwrap().len(), 2);
    let (status, _) = server.call(
        "east",
        "DELETE",
        &format!("/api/v1/sessions/{}", sessions[1]),
        None,
    );
    assert_eq!(status, 204);
    let rest = pages(&server, &next.expect("more sessions follow"));
    assert_eq!(rest.concat(), sessions[2..]);

    // Bad paging is a 422 naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", ""),
        ("after=nonsense", "after"),
    ] {
        for list in ["agents", "sessions"] {
            let (status, _, body) = get_page(&server, &format!("/api/v1/{list}?{query}"));
            assert_eq!(status, 422, "{list}?{query}: {body}");
            if !field.is_empty() {
                assert_eq!(body["error"]["field"], field, "{list}?{query}: {body}");
            }
        }
    }

    // The CLI pages through (500 at a time): every agent, once, past a page's end.
    for i in 7..505 {
        agent(&server, "east", &format!("page-agent-{i}"), 1.0, 1);
    }
    let output = std::process::Command::new(BIN)
        .args(["agent", "list", "--server", &server.url("east", "")])
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 505);
    ids.dedup();
    assert_eq!(ids.len(), 505, "no agent twice");
    assert_eq!(ids, all("/api/v1/agents"));
}
