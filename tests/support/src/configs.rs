//! The AutoScale records several suites start from: a pool, a VM provider config whose
//! endpoint answers nothing, and a disabled AutoScale config over them.

use serde_json::{Value, json};

use crate::Server;

/// A disabled AutoScale config `linux` in pool `pool` over provider config `cloud`.
pub fn autoscale_body() -> Value {
    json!({
        "name": "linux", "enabled": false, "pool": "pool", "zone": "default",
        "connection_type": "rdp", "credential_type": "static", "connection_username": "kasm",
        "connection_password": "secret", "minimum_available_sessions": 0,
        "max_sessions_per_server": 1, "vm_provider_config": "cloud", "os": "linux",
        "startup_script": "#!/bin/bash\ncurl -H 'Authorization: Bearer {checkin_jwt}' https://{upstream_auth_address}/\n",
    })
}

/// Create on `server` the pool `pool`, the VM provider config `cloud` (aws-ec2; its
/// endpoint answers nothing) and the AutoScale config of [`autoscale_body`].
pub fn create(server: &Server) {
    let created = |path: &str, body: Value| {
        let (status, answer) = server.call("default", "POST", path, Some(&body));
        assert_eq!(status, 201, "{path}: {answer}");
    };
    created("/api/v1/pools", json!({ "name": "pool" }));
    created(
        "/api/v1/vm-provider-configs",
        json!({ "name": "cloud", "provider": "aws-ec2", "allow_private_endpoints": true, "settings": {
            "region": "us-east-1", "access_key_id": "AKID", "secret_access_key": "secret",
            "ami_id": "ami-12345678", "endpoint": "http://127.0.0.1:9",
        }}),
    );
    created("/api/v1/autoscale-configs", autoscale_body());
}
