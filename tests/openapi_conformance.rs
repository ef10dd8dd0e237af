//! Schemathesis, a third-party property-based API tester, against the live server and the
//! OpenAPI document it serves: generated requests (valid and invalid) must get documented
//! statuses and bodies that match the schema, and never a server error.

use std::process::Command;

use serde_json::json;
use zonebroker_test_support::{
    ADMIN_TOKEN, AGENT_TOKEN, Server, ServerOptions, python_tool, workspace_root,
};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");

#[test]
fn schemathesis_finds_no_nonconformance() {
    let server = Server::start(BIN, ServerOptions::default());
    // Some data for the operations that need existing records.
    server.check_in(
        "default",
        json!({ "hostname": "agent-1", "address": "10.0.0.1", "port": 4902, "cores": 8,
                "memory": 17179869184u64, "max_sessions": 4 }),
    );
    let image = json!({ "name": "desktop", "cores": 1, "memory": 1073741824 });
    assert_eq!(
        server
            .call("default", "POST", "/api/v1/images", Some(&image))
            .0,
        201
    );

    let base = server.url("default", "");
    let output = Command::new(python_tool("st"))
        .arg("--config-file")
        .arg(workspace_root().join("tests/conformance/schemathesis.toml"))
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
        ])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing"])
        .args(["--max-time", "40", "--seed", "20261125", "--no-color"])
        .env("ZONEBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ZONEBROKER_AGENT_TOKEN", AGENT_TOKEN)
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("generated"),
        "schemathesis ran no test cases:\n{report}"
    );

    let internal_errors = server
        .logs()
        .iter()
        .filter(|line| line.contains("\"status\":500"))
        .count();
    assert_eq!(internal_errors, 0, "the server answered 500");
    let (status, _) = server.call("default", "GET", "/api/v1/zones", None);
    assert_eq!(status, 200, "the server still serves");
}
