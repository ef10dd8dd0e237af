//! Agent identity end to end: per-agent credentials on check-in (the shared agent token is
//! not enough to take over a host name), their reset, and `--require-agent-approval`.

use serde_json::{Value, json};
use zonebroker_test_support::{AGENT_TOKEN, Server, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const GIB: u64 = 1 << 30;

fn body(hostname: &str, address: &str) -> Value {
    json!({
        "hostname": hostname, "address": address, "port": 4902,
        "cores": 8, "memory": 64 * GIB, "max_sessions": 10,
    })
}

fn image(server: &Server) {
    let image = json!({ "name": "desktop", "cores": 1, "memory": GIB });
    let (status, answer) = server.call("default", "POST", "/api/v1/images", Some(&image));
    assert_eq!(status, 201, "{answer}");
}

fn request(server: &Server, user: &str) -> (u16, Value) {
    server.call(
        "default",
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": "desktop", "user": user })),
    )
}

fn agent_address(server: &Server, id: &str) -> String {
    let (status, agent) = server.call("default", "GET", &format!("/api/v1/agents/{id}"), None);
    assert_eq!(status, 200, "{agent}");
    agent["address"].as_str().unwrap().to_string()
}

fn error_code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn a_check_in_without_the_agents_credential_cannot_take_it_over() {
    let server = Server::start(BIN, ServerOptions::default());
    image(&server);

    // The first check-in of a host name answers its credential, once.
    let (status, first) = server.check_in_with("default", &body("desk-1", "10.0.0.1"), None);
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    let credential = first["credential"]
        .as_str()
        .expect("a credential")
        .to_string();
    assert_eq!(credential.len(), 64, "32 random bytes in hex: {credential}");
    assert!(credential.chars().all(|c| c.is_ascii_hexdigit()));

    let (status, session) = request(&server, "ada");
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["agent"], id.as_str());

    // The shared agent token alone no longer moves the agent to another address.
    let hijack = body("desk-1", "10.6.6.6");
    let (status, answer) = server.check_in_with("default", &hijack, None);
    assert_eq!(
        (status, error_code(&answer)),
        (401, "agent_credential_missing"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Zonebroker-Agent-Credential")
    );
    let wrong = "0".repeat(64);
    let (status, answer) = server.check_in_with("default", &hijack, Some(&wrong));
    assert_eq!(
        (status, error_code(&answer)),
        (401, "agent_credential_wrong"),
        "{answer}"
    );
    // The credential does not replace the agent token either.
    let (status, _) = server.call_as(
        "default",
        "POST",
        "/api/v1/agents/checkin",
        Some(&hijack),
        Some(&credential),
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(agent_address(&server, &id), "10.0.0.1");
    let (status, session) = request(&server, "bob");
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["agent"], id.as_str());
    assert!(!session.to_string().contains("10.6.6.6"), "{session}");

    // With its credential the agent checks in as before, and is shown no new one.
    let (status, again) =
        server.check_in_with("default", &body("desk-1", "10.0.0.2"), Some(&credential));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert!(again.get("credential").is_none(), "{again}");
    assert_eq!(agent_address(&server, &id), "10.0.0.2");

    // An operator's reset lets the next check-in take a new one; the old one is refused.
    let path = format!("/api/v1/agents/{id}/reset-credential");
    let (status, _) = server.call_as("default", "POST", &path, None, Some(AGENT_TOKEN), None);
    assert_eq!(status, 401, "the agent token cannot reset credentials");
    let (status, reset) = server.call("default", "POST", &path, None);
    assert_eq!(status, 200, "{reset}");
    assert!(reset.get("credential").is_none(), "{reset}");
    let (status, retaken) = server.check_in_with("default", &body("desk-1", "10.0.0.3"), None);
    assert_eq!(status, 200, "{retaken}");
    assert_eq!(
        retaken["id"],
        id.as_str(),
        "the same agent, its sessions kept"
    );
    assert_eq!(retaken["sessions"], 2);
    let renewed = retaken["credential"]
        .as_str()
        .expect("a new credential")
        .to_string();
    assert_ne!(renewed, credential);
    let (status, answer) =
        server.check_in_with("default", &body("desk-1", "10.6.6.6"), Some(&credential));
    assert_eq!(
        (status, error_code(&answer)),
        (401, "agent_credential_wrong"),
        "{answer}"
    );
    let (status, _) = server.check_in_with("default", &body("desk-1", "10.0.0.3"), Some(&renewed));
    assert_eq!(status, 200);
    assert_eq!(agent_address(&server, &id), "10.0.0.3");
    let (status, answer) = server.call(
        "default",
        "POST",
        "/api/v1/agents/7e57e57e-0000-4000-8000-000000000000/reset-credential",
        None,
    );
    assert_eq!(status, 404, "{answer}");

    // Neither credential is ever shown again or logged.
    let (_, list) = server.call("default", "GET", "/api/v1/agents", None);
    let (_, one) = server.call("default", "GET", &format!("/api/v1/agents/{id}"), None);
    let logs = server.logs().join("\n");
    for secret in [&credential, &renewed] {
        assert!(!list.to_string().contains(secret.as_str()), "{list}");
        assert!(!one.to_string().contains(secret.as_str()), "{one}");
        assert!(!logs.contains(secret.as_str()), "a credential in the log");
    }
    assert!(
        one.get("credential").is_none() && one.get("credential_sha256").is_none(),
        "{one}"
    );
    assert!(
        logs.contains("agent check-in refused"),
        "refusals are logged"
    );
}

#[test]
fn with_required_approval_a_new_agent_gets_no_session_until_enabled() {
    let server = Server::start(
        BIN,
        ServerOptions {
            args: vec!["--require-agent-approval".into()],
            ..ServerOptions::default()
        },
    );
    image(&server);
    let agent = server.check_in("default", body("desk-1", "10.0.0.1"));
    assert_eq!(
        (agent["status"].as_str(), agent["enabled"].as_bool()),
        (Some("pending"), Some(false)),
        "{agent}"
    );
    let id = agent["id"].as_str().unwrap().to_string();
    // Checking in again does not approve it.
    let again = server.check_in("default", body("desk-1", "10.0.0.1"));
    assert_eq!(again["status"], "pending");
    let (status, answer) = request(&server, "ada");
    assert_eq!(
        (status, error_code(&answer)),
        (503, "no_capacity"),
        "{answer}"
    );

    let (status, enabled) = server.call(
        "default",
        "PATCH",
        &format!("/api/v1/agents/{id}"),
        Some(&json!({ "enabled": true })),
    );
    assert_eq!(
        (status, enabled["status"].as_str()),
        (200, Some("online")),
        "{enabled}"
    );
    let (status, session) = request(&server, "ada");
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["agent"], id.as_str());
}

#[test]
fn without_required_approval_a_new_agent_takes_sessions_at_once() {
    let server = Server::start(BIN, ServerOptions::default());
    image(&server);
    let agent = server.check_in("default", body("desk-1", "10.0.0.1"));
    assert_eq!(agent["status"], "online", "{agent}");
    // The helper presents the credential it was given.
    assert!(server.agent_credential("desk-1").is_some());
    let again = server.check_in("default", body("desk-1", "10.0.0.1"));
    assert_eq!(again["id"], agent["id"]);
    assert_eq!(request(&server, "ada").0, 201);
}
