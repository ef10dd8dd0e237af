//! Small calls the end-to-end suites make of a server: an agent checked in, an image
//! added, a session requested, a metric read, a condition waited for.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, Server};

const GIB: u64 = 1 << 30;

/// Check in agent `hostname` through `zone`'s listener, with 64 cores and 1 TiB; answers
/// its id.
pub fn agent(server: &Server, zone: &str, hostname: &str, max_sessions: u32) -> String {
    let body = json!({
        "hostname": hostname, "address": "10.0.0.1", "port": 4902,
        "cores": 64.0, "memory": 1024 * GIB, "max_sessions": max_sessions,
    });
    server.check_in(zone, body)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Add image `name` (1 core, 1 GiB) with `token`.
pub fn image(server: &Server, token: &str, name: &str) {
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

/// `POST /sessions` of `image` for `user` through `zone`'s listener.
pub fn request_session(server: &Server, zone: &str, image: &str, user: &str) -> (u16, Value) {
    server.call(
        zone,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "image": image, "user": user })),
    )
}

/// The value of the metric line starting with `series` (name and labels) at `/metrics`.
pub fn metric(server: &Server, series: &str) -> Option<f64> {
    let text = server.admin_get("default", "/metrics").text().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Wait until `seen` holds (at most 10 s); answers how long it took.
pub fn until(what: &str, seen: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !seen() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not seen after 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Upload `bytes` as a version of plugin `plugin` through `zone`'s listener (the active one
/// if `activate`); answers the version (its sha256).
pub fn upload_plugin(
    server: &Server,
    zone: &str,
    plugin: &str,
    bytes: &[u8],
    activate: bool,
) -> String {
    let path = format!("/api/v1/plugins/{plugin}/versions?activate={activate}");
    let response = server
        .http()
        .post(server.url(zone, &path))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}
