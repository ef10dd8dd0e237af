//! An AutoScale pool in moto, as the end-to-end suites drive it: the records (a pool, a
//! provider config pointed at moto, AutoScale configs rendering the example Linux script),
//! the VMs moto holds, and the check-in tokens their scripts carry.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::moto::Moto;
use crate::{Server, workspace_root};

pub const CONFIG_TAG: &str = "zonebroker:config";
pub const SERVER_TAG: &str = "zonebroker:server-id";
pub const INSTALLATION_TAG: &str = "zonebroker:installation";

/// The check-in token a rendered script carries.
pub fn token_in(script: &str) -> String {
    script
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split(['\'', '"', ' ']).next())
        .unwrap()
        .to_string()
}

/// Fetch a server's variables with its token, as its script does first.
pub fn bootstrap(server: &Server, token: &str) -> Value {
    let (status, answer) = server.call_as(
        "default",
        "POST",
        "/api/v1/servers/bootstrap",
        None,
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    answer
}

pub fn linux_template() -> String {
    std::fs::read_to_string(workspace_root().join("examples/startup-scripts/linux.sh")).unwrap()
}

pub fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = server.call("default", method, path, body.as_ref());
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

/// A pool, a provider config pointed at `moto`, and the zone's check-in address set to the
/// broker's own listener (`$request_host$` stands for it in scripts).
pub fn setup(server: &Server, moto: &Moto) {
    call(
        server,
        "PATCH",
        "/api/v1/zones/default",
        Some(json!({"upstream_auth_address": "$request_host$"})),
    );
    call(
        server,
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "desktops"})),
    );
    let settings: serde_json::Map<String, Value> = moto
        .settings()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    call(
        server,
        "POST",
        "/api/v1/vm-provider-configs",
        Some(
            json!({"name": "moto", "provider": "aws-ec2", "settings": settings,
                    "allow_private_endpoints": true}),
        ),
    );
}

pub fn autoscale_config(name: &str, minimum: u32, per_server: u32) -> Value {
    json!({
        "name": name,
        "pool": "desktops",
        "zone": "default",
        "connection_type": "rdp",
        "credential_type": "static",
        "connection_username": "kasm",
        "connection_password": "p@ss 'w0rd' $(reboot)",
        "reusable": true,
        "minimum_available_sessions": minimum,
        "max_sessions_per_server": per_server,
        "vm_provider_config": "moto",
        "os": "linux",
        "startup_script": linux_template(),
        "provision_timeout": 600,
        "downscale_backoff": 1,
    })
}

/// moto's live instances of AutoScale config `config`: (instance id, server id).
pub fn instances_of(moto: &Moto, config: &str) -> Vec<(String, String)> {
    moto.live_instances()
        .into_iter()
        .filter(|(_, _, tags)| tags.iter().any(|(k, v)| k == CONFIG_TAG && v == config))
        .map(|(id, _, tags)| {
            let server = tags
                .iter()
                .find(|(k, _)| k == SERVER_TAG)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (id, server)
        })
        .collect()
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
