//! AutoScale end to end: the real binary, the built-in `aws-ec2` provider against moto's
//! EC2, the built-in generator rendering `examples/startup-scripts/linux.sh`, and the test
//! playing each VM's boot by running the user data moto holds, which checks in over HTTP.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use zonebroker_test_support::autoscale::{
    CONFIG_TAG, INSTALLATION_TAG, SERVER_TAG, autoscale_config, bootstrap, call, instances_of,
    setup, token_in, wait_for,
};
use zonebroker_test_support::moto::Moto;
use zonebroker_test_support::postgres;
use zonebroker_test_support::{Server, ServerOptions, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");

/// How long a wait for the reconcile loop's work may take: a few passes and moto calls
/// take seconds, but on a loaded machine moto (Python) answers many times slower, and a
/// wait ends as soon as its condition holds.
const PASSES_DONE: Duration = Duration::from_secs(90);

/// This broker's installation id (the value of its VMs' installation tag).
fn installation(server: &Server) -> String {
    let answer = call(server, "GET", "/api/v1/installation", None);
    assert_eq!(answer["vm_tag"]["name"], INSTALLATION_TAG);
    answer["id"].as_str().unwrap().to_string()
}

fn start(data_dir: Option<std::sync::Arc<tempfile::TempDir>>) -> Server {
    Server::start(
        BIN,
        ServerOptions {
            args: vec!["--autoscale-interval".into(), "300ms".into()],
            data_dir,
            // Every event the broker can emit, to prove no secret is among them.
            log_filter: "zonebroker=trace".into(),
            ..ServerOptions::default()
        },
    )
}

/// Change AutoScale config `name` (a merge patch).
fn patch_config(server: &Server, name: &str, patch: Value) -> Value {
    call(
        server,
        "PATCH",
        &format!("/api/v1/autoscale-configs/{name}"),
        Some(patch),
    )
}

fn servers(server: &Server) -> Vec<Value> {
    call(server, "GET", "/api/v1/servers", None)
        .as_array()
        .unwrap()
        .clone()
}

fn servers_of<'a>(all: &'a [Value], config: &str) -> Vec<&'a Value> {
    all.iter().filter(|s| s["config"] == config).collect()
}

/// Play instance `instance_id`'s boot: run the startup script moto holds as its user data,
/// reaching the broker over plain HTTP on loopback. Answers whether the script succeeded.
fn boot(moto: &Moto, instance_id: &str) -> (bool, String) {
    let script = moto.user_data(instance_id);
    assert!(script.starts_with("#!/bin/bash"), "{script}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &script).unwrap();
    let output = Command::new("bash")
        .arg(file.path())
        .env("ZONEBROKER_SCHEME", "http")
        .env("ZONEBROKER_ADDRESS", "127.0.0.1")
        // The "VM" is the test machine: leave its accounts and firewall alone.
        .env("ZONEBROKER_SKIP_SYSTEM_SETUP", "1")
        .output()
        .expect("run bash");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), log)
}

fn request_session(server: &Server, user: &str) -> Value {
    let (status, session) = server.call(
        "default",
        "POST",
        "/api/v1/sessions",
        Some(&json!({"workspace": "desktop", "user": user})),
    );
    assert_eq!(status, 201, "{session}");
    session
}

#[test]
fn pools_scale_up_fill_drain_and_replace_vms_in_moto() {
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    // An agent beside the pool, so that its credential is among the secrets checked at the
    // end; it checks in twice (with its credential the second time).
    let agent = json!({"hostname": "agent-1", "address": "10.0.0.5", "port": 4902,
        "cores": 4, "memory": 8589934592u64, "max_sessions": 2});
    server.check_in("default", agent.clone());
    let agent_credential = server.agent_credential("agent-1").expect("a credential");
    server.check_in("default", agent);

    // Secrets are write-only.
    let provider = call(&server, "GET", "/api/v1/vm-provider-configs/moto", None);
    assert!(
        provider["settings"].get("secret_access_key").is_none(),
        "{provider}"
    );
    assert_eq!(provider["settings"]["region"], "us-east-1");

    // Minimum 10, 4 per server: three VMs.
    let created = call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 10, 4)),
    );
    assert_eq!(created["config"]["connection_password"], Value::Null);
    assert_eq!(created["connection_password_set"], true);
    let vms = wait_for("three instances", PASSES_DONE, || {
        let vms = instances_of(&moto, "linux");
        (vms.len() >= 3).then_some(vms)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        instances_of(&moto, "linux").len(),
        3,
        "no more than ceil(10 / 4)"
    );
    let all = servers(&server);
    let linux = servers_of(&all, "linux");
    assert_eq!(linux.len(), 3);
    assert!(
        linux.iter().all(|s| s["status"] == "provisioning"),
        "{all:?}"
    );
    let logs = server.logs().join("\n");
    assert!(!logs.contains("w0rd"), "the password never reaches the log");
    // Nor the user data any user of a VM can read: only the single-use check-in token.
    for (instance, _) in &vms {
        let script = moto.user_data(instance);
        assert!(!script.contains("w0rd"), "{script}");
        assert!(
            script.contains("zb_variable 'connection_password'"),
            "{script}"
        );
    }
    // And the metadata service answers only IMDSv2 (session-token) requests.
    let tokens = moto.boto3(&format!(
        "r = ec2.describe_instances(InstanceIds=['{}'])\nprint(r['Reservations'][0]['Instances'][0]['MetadataOptions']['HttpTokens'])",
        vms[0].0
    ));
    assert_eq!(tokens.trim(), "required");

    // Each VM boots: its script fetches its variables, then checks in with its own token,
    // and its server runs.
    for (instance, _) in &vms {
        let (ok, log) = boot(&moto, instance);
        assert!(ok, "boot of {instance}: {log}");
    }
    let all = servers(&server);
    assert!(
        servers_of(&all, "linux")
            .iter()
            .all(|s| s["status"] == "running" && s["address"] == "127.0.0.1"),
        "{all:?}"
    );
    // A token works once: the replayed script's bootstrap is refused, and so is each step.
    let (ok, log) = boot(&moto, &vms[0].0);
    assert!(
        !ok && log.contains("401"),
        "a replayed token is refused: {log}"
    );
    let token = token_in(&moto.user_data(&vms[0].0));
    for step in ["bootstrap", "checkin"] {
        let (status, answer) = server.call_as(
            "default",
            "POST",
            &format!("/api/v1/servers/{step}"),
            Some(&json!({"address": "10.0.0.9"})),
            Some(&token),
            None,
        );
        assert_eq!(status, 401, "{step} after the check-in: {answer}");
    }
    let (status, answer) = server.call_as(
        "default",
        "POST",
        "/api/v1/servers/checkin",
        Some(&json!({"address": "10.0.0.9"})),
        Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk"),
        None,
    );
    assert_eq!(status, 401, "a forged token: {answer}");

    // Sessions fill the servers; the pool scales up to keep 10 free.
    call(
        &server,
        "POST",
        "/api/v1/workspaces",
        Some(
            json!({"name": "desktop", "type": "pool", "pool": "desktops", "rdp_client": "local-client"}),
        ),
    );
    let sessions: Vec<Value> = (0..4)
        .map(|i| request_session(&server, &format!("user{i}")))
        .collect();
    assert!(sessions.iter().all(|s| s["host_kind"] == "server"));
    let vms = wait_for("a fourth instance", PASSES_DONE, || {
        let vms = instances_of(&moto, "linux");
        (vms.len() >= 4).then_some(vms)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        instances_of(&moto, "linux").len(),
        4,
        "12 - 4 = 8 free: one more server"
    );

    // A local-client session answers with an .rdp file.
    let rdp = server
        .admin_get("default", sessions[0]["rdp_file"].as_str().unwrap())
        .text()
        .unwrap();
    assert!(rdp.contains("full address:s:127.0.0.1:3389"), "{rdp}");
    assert!(rdp.contains("username:s:kasm"), "{rdp}");
    assert!(rdp.contains("gatewayhostname:s:"), "{rdp}");

    // Boot the fourth; lower the minimum: idle surplus goes after the back-off.
    let fourth = vms
        .iter()
        .find(|(id, _)| !all_contains(&all, id))
        .unwrap()
        .0
        .clone();
    let (ok, log) = boot(&moto, &fourth);
    assert!(ok, "{log}");
    patch_config(&server, "linux", json!({"minimum_available_sessions": 4}));
    let busy: std::collections::HashSet<String> = sessions
        .iter()
        .map(|s| s["agent"].as_str().unwrap().to_string())
        .collect();
    wait_for("idle servers to go", PASSES_DONE, || {
        let all = servers(&server);
        let linux = servers_of(&all, "linux");
        let free: u64 = linux
            .iter()
            .map(|s| s["max_sessions"].as_u64().unwrap() - s["sessions"].as_u64().unwrap())
            .sum();
        (linux.len() == busy.len() && free >= 4).then_some(())
    });
    wait_for("their instances to terminate", PASSES_DONE, || {
        (instances_of(&moto, "linux").len() == busy.len()).then_some(())
    });

    // Not reusable: a server whose session ends is destroyed (once its sessions are over).
    patch_config(
        &server,
        "linux",
        json!({"reusable": false, "minimum_available_sessions": 0}),
    );
    for session in &sessions {
        call(
            &server,
            "DELETE",
            &format!("/api/v1/sessions/{}", session["id"].as_str().unwrap()),
            None,
        );
    }
    wait_for("spent servers to go", PASSES_DONE, || {
        servers_of(&servers(&server), "linux")
            .is_empty()
            .then_some(())
    });
    wait_for("every instance to terminate", PASSES_DONE, || {
        instances_of(&moto, "linux").is_empty().then_some(())
    });
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    assert!(
        metrics.contains(r#"zonebroker_autoscale_vms_created_total{config="linux"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"zonebroker_autoscale_vms_destroyed_total{config="linux",reason="spent"}"#)
    );
    assert!(
        metrics.contains(
            r#"zonebroker_autoscale_vms_destroyed_total{config="linux",reason="surplus"}"#
        )
    );
    assert_no_secret_is_shown(
        server,
        &[
            "test-secret-key",
            "p@ss 'w0rd' $(reboot)",
            "w0rd",
            &agent_credential,
        ],
    );
}

/// Every read endpoint (each list and each item in it), `/metrics` and the server's log
/// (at `zonebroker=trace`), then, with the server stopped, the check-in signing key from its
/// store: none of `secrets`, nor the key, appears anywhere.
fn assert_no_secret_is_shown(server: Server, secrets: &[&str]) {
    let mut shown = String::new();
    for list in [
        "/api/v1/zones",
        "/api/v1/agents",
        "/api/v1/images",
        "/api/v1/sessions",
        "/api/v1/plugins",
        "/api/v1/pools",
        "/api/v1/vm-provider-configs",
        "/api/v1/autoscale-configs",
        "/api/v1/servers",
        "/api/v1/workspaces",
        "/api/v1/ldap-configs",
        "/api/v1/installation",
    ] {
        let body = server.admin_get("default", list).text().unwrap();
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&body) {
            for item in items {
                let key = [&item["id"], &item["name"], &item["config"]["name"]]
                    .into_iter()
                    .find_map(|k| k.as_str().map(str::to_string))
                    .unwrap_or_else(|| panic!("an item of {list} without id or name: {item}"));
                shown += &server
                    .admin_get("default", &format!("{list}/{key}"))
                    .text()
                    .unwrap();
            }
        }
        shown += &body;
    }
    shown += &server.admin_get("default", "/metrics").text().unwrap();
    assert!(server.logs().len() > 100, "the trace log was collected");
    shown += &server.logs().join("\n");
    assert!(
        shown.contains("\"TRACE\"") || shown.contains("\"DEBUG\""),
        "the log is at trace level"
    );
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!shown.contains(secret), "`{secret}` was shown");
    }
    let data_dir = server.data_dir();
    server.stop();
    let key: Vec<u8> = if postgres::storage_engine() == "postgres" {
        let database = postgres::database_of(data_dir.path());
        let sql = "SELECT encode(value, 'hex') FROM meta WHERE key = 'checkin_key'";
        hex::decode(postgres::cluster().psql(&database, sql)).unwrap()
    } else {
        let store = zonebroker::store::Store::open(data_dir.path()).unwrap();
        store.checkin_key().to_vec()
    };
    assert_eq!(key.len(), 32);
    use base64::Engine as _;
    for form in [
        hex::encode(&key),
        base64::engine::general_purpose::STANDARD.encode(&key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key),
    ] {
        assert!(!shown.contains(&form), "the check-in key was shown");
    }
}

fn all_contains(all: &[Value], instance: &str) -> bool {
    all.iter().any(|s| s["instance_id"] == instance)
}

#[test]
fn a_vm_that_never_checks_in_is_replaced_and_provider_errors_show_on_their_config() {
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    let mut config = autoscale_config("silent", 1, 1);
    config["provision_timeout"] = json!(2);
    call(&server, "POST", "/api/v1/autoscale-configs", Some(config));
    let first = wait_for("an instance", PASSES_DONE, || {
        instances_of(&moto, "silent").into_iter().next()
    });
    // It never boots: after 2 s it is terminated and another VM, for another server,
    // takes its place.
    let second = wait_for("a replacement", PASSES_DONE, || {
        instances_of(&moto, "silent")
            .into_iter()
            .find(|vm| vm.0 != first.0)
    });
    assert_ne!(second.1, first.1, "a new server record");
    wait_for("the silent VM to be terminated", PASSES_DONE, || {
        (!instances_of(&moto, "silent")
            .iter()
            .any(|vm| vm.0 == first.0))
        .then_some(())
    });
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    assert!(
        metrics.contains(r#"reason="provision_timeout""#),
        "{metrics}"
    );

    // A config whose cloud is unreachable fails on its own, visibly; the other goes on.
    let mut settings: serde_json::Map<String, Value> = moto
        .settings()
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    settings.insert("endpoint".into(), json!("http://127.0.0.1:9"));
    call(
        &server,
        "POST",
        "/api/v1/vm-provider-configs",
        Some(
            json!({"name": "dead", "provider": "aws-ec2", "settings": settings,
                    "allow_private_endpoints": true}),
        ),
    );
    let mut broken = autoscale_config("broken", 1, 1);
    broken["vm_provider_config"] = json!("dead");
    call(&server, "POST", "/api/v1/autoscale-configs", Some(broken));
    let status = wait_for("last_error", PASSES_DONE, || {
        let view = call(&server, "GET", "/api/v1/autoscale-configs/broken", None);
        view["status"]["last_error"]
            .as_str()
            .map(|_| view["status"].clone())
    });
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .starts_with("list-vms"),
        "{status}"
    );
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    assert!(
        metrics.contains(r#"zonebroker_autoscale_config_failing{config="broken"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"zonebroker_autoscale_config_failing{config="silent"} 0"#),
        "{metrics}"
    );
    let healthy = call(&server, "GET", "/api/v1/autoscale-configs/silent", None);
    assert_eq!(healthy["status"]["last_error"], Value::Null, "{healthy}");
    server.stop();
}

#[test]
fn a_crash_mid_scale_up_ends_with_exactly_the_needed_instances() {
    let moto = Moto::start();
    let mut server = start(None);
    setup(&server, &moto);
    // An orphan: our tags, but no server record knows it.
    let installation = installation(&server);
    moto.ec2(&[
        ("Action", "RunInstances"),
        ("ImageId", "ami-760aaa0f"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", CONFIG_TAG),
        ("TagSpecification.1.Tag.1.Value", "big"),
        ("TagSpecification.1.Tag.2.Key", SERVER_TAG),
        (
            "TagSpecification.1.Tag.2.Value",
            "7d0c3a52-0000-4000-8000-000000000000",
        ),
        ("TagSpecification.1.Tag.3.Key", INSTALLATION_TAG),
        ("TagSpecification.1.Tag.3.Value", &installation),
    ]);
    assert_eq!(instances_of(&moto, "big").len(), 1);

    // 40 sessions, 4 per server: ten VMs. Kill the broker while it creates them.
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("big", 40, 4)),
    );
    wait_for("the scale-up to start", PASSES_DONE, || {
        (instances_of(&moto, "big").len() >= 3).then_some(())
    });
    server.kill9();
    let at_crash = instances_of(&moto, "big").len();
    eprintln!("live instances at the crash: {at_crash}");

    let server = start(Some(server.data_dir()));
    let vms = wait_for("exactly ten instances", Duration::from_secs(60), || {
        let vms = instances_of(&moto, "big");
        let all = servers(&server);
        let records = servers_of(&all, "big");
        let recorded = records
            .iter()
            .filter(|s| s["instance_id"].is_string())
            .count();
        (vms.len() == 10 && records.len() == 10 && recorded == 10).then_some(vms)
    });
    // A few more passes change nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        instances_of(&moto, "big").len(),
        10,
        "crashed with {at_crash} live"
    );
    let all = servers(&server);
    let records: std::collections::HashSet<String> = servers_of(&all, "big")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for (instance, server_id) in &vms {
        assert!(
            records.contains(server_id),
            "{instance} belongs to a record"
        );
    }
    server.stop();
}

/// A provider config that needs no cloud to be saved (validation makes no network call).
fn offline_provider(server: &Server) {
    call(
        server,
        "POST",
        "/api/v1/pools",
        Some(json!({"name": "desktops"})),
    );
    call(
        server,
        "POST",
        "/api/v1/vm-provider-configs",
        Some(json!({"name": "moto", "provider": "aws-ec2", "settings": {
            "region": "us-east-1", "access_key_id": "AKIDTESTING",
            "secret_access_key": "very-secret-key", "ami_id": "ami-760aaa0f",
            "instance_type": "t3.small", "endpoint": "http://127.0.0.1:9",
        }, "allow_private_endpoints": true})),
    );
}

fn refused(server: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, answer) = server.call("default", method, path, Some(&body));
    assert!(
        (400..500).contains(&status),
        "{method} {path} {body}: {status} {answer}"
    );
    (status, answer["error"].clone())
}

#[test]
fn configs_are_checked_when_saved_and_secrets_stay_write_only() {
    let server = start(None);
    offline_provider(&server);
    let path = "/api/v1/autoscale-configs";

    // Templates: an unknown variable, a lone brace, an unquoted credential, a Windows-only
    // variable in a Linux script: each refused with the field and the position.
    for (template, expected) in [
        ("#!/bin/bash\necho {nope}\n", "line 2, column 6"),
        ("#!/bin/bash\necho {checkin_jwt\n", "line 2, column 6"),
        ("#!/bin/bash\necho }\n", "line 2, column 6"),
        (
            "#!/bin/bash\nPASSWORD={connection_password}\n",
            "line 2, column 10",
        ),
        ("#!/bin/bash\nID={server_id}\n", "line 2, column 4"),
        ("#cloud-config\nruncmd: [reboot]\n", "line 1, column 1"),
    ] {
        let mut config = autoscale_config("linux", 1, 1);
        config["startup_script"] = json!(template);
        let (status, error) = refused(&server, "POST", path, config);
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some("startup_script")),
            "{error}"
        );
        assert!(
            error["message"].as_str().unwrap().contains(expected),
            "{template}: {error}"
        );
    }
    // The shipped Windows template renders for Windows.
    let mut windows = autoscale_config("windows", 1, 1);
    windows["os"] = json!("windows");
    windows["startup_script"] = json!(
        std::fs::read_to_string(workspace_root().join("examples/startup-scripts/windows.ps1"))
            .unwrap()
    );
    call(&server, "POST", path, Some(windows));
    // References.
    for (field, value) in [
        ("pool", "nowhere"),
        ("zone", "nowhere"),
        ("vm_provider_config", "nowhere"),
        ("script_generator", "least-load"),
    ] {
        let mut config = autoscale_config("linux", 1, 1);
        config[field] = json!(value);
        let (status, error) = refused(&server, "POST", path, config);
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some(field)),
            "{error}"
        );
    }
    // Provider settings the plugin does not take, or judges wrong, name the setting.
    let (status, error) = refused(
        &server,
        "PATCH",
        "/api/v1/vm-provider-configs/moto",
        json!({"settings": {"colour": "blue"}}),
    );
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("settings.colour")),
        "{error}"
    );
    let (_, error) = refused(
        &server,
        "PATCH",
        "/api/v1/vm-provider-configs/moto",
        json!({"settings": {"region": null}}),
    );
    assert_eq!(error["field"], "settings.region", "{error}");

    // Through the CLI, from a file; a merge patch keeps the password it leaves out.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("linux.json");
    std::fs::write(&file, autoscale_config("linux", 0, 2).to_string()).unwrap();
    let cli = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .args(["--server", &server.url("default", "")])
            .env(
                "ZONEBROKER_ADMIN_TOKEN",
                zonebroker_test_support::ADMIN_TOKEN,
            )
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    cli(&["autoscale", "create", file.to_str().unwrap()]);
    std::fs::write(&file, r#"{"enabled": false, "connection_info": null}"#).unwrap();
    let updated = cli(&["autoscale", "update", "linux", file.to_str().unwrap()]);
    assert_eq!(updated["config"]["enabled"], false);
    assert_eq!(updated["connection_password_set"], true, "{updated}");
    let provider = cli(&["provider-config", "get", "moto"]);
    assert!(
        provider["settings"].get("secret_access_key").is_none(),
        "{provider}"
    );
    // Secrets follow a new endpoint only when given again.
    let (status, error) = refused(
        &server,
        "PATCH",
        "/api/v1/vm-provider-configs/moto",
        json!({"settings": {"endpoint": "http://127.0.0.1:10"}}),
    );
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("settings.secret_access_key")),
        "{error}"
    );
    call(
        &server,
        "PATCH",
        "/api/v1/vm-provider-configs/moto",
        Some(
            json!({"settings": {"endpoint": "http://127.0.0.1:10", "secret_access_key": "very-secret-key"}}),
        ),
    );
    call(
        &server,
        "POST",
        "/api/v1/ldap-configs",
        Some(
            json!({"name": "corp", "url": "ldaps://dc1.example.test", "bind_dn": "joiner",
            "bind_password": "ldap-secret-pw", "search_base": "DC=example,DC=test"}),
        ),
    );
    let (status, error) = refused(
        &server,
        "PATCH",
        "/api/v1/ldap-configs/corp",
        json!({"url": "ldaps://elsewhere.example.com"}),
    );
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("bind_password")),
        "{error}"
    );
    let ldap = call(&server, "GET", "/api/v1/ldap-configs/corp", None);
    assert_eq!(ldap["bind_password"], Value::Null);
    assert_eq!(ldap["url"], "ldaps://dc1.example.test", "unchanged");
    // What uses something cannot be deleted.
    let (status, _) = refused(
        &server,
        "DELETE",
        "/api/v1/vm-provider-configs/moto",
        Value::Null,
    );
    assert_eq!(status, 409);
    let (status, _) = refused(&server, "DELETE", "/api/v1/pools/desktops", Value::Null);
    assert_eq!(status, 409);
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("very-secret-key") && !logs.contains("w0rd"),
        "secrets never logged"
    );
    server.stop();
}

// Active Directory computer records, against a real domain controller (Samba).

use zonebroker_test_support::samba::{self, Samba};

fn ldap_config(server: &Server, samba: &Samba, name: &str, overrides: Value) {
    let mut config = json!({
        "name": name,
        "url": samba.url(),
        "bind_dn": samba::ADMIN,
        "bind_password": samba::ADMIN_PASSWORD,
        "search_base": samba::BASE_DN,
        "ca_certificate": samba.ca_pem,
        "connect_timeout": 3,
        "operation_timeout": 10,
    });
    for (key, value) in overrides.as_object().unwrap() {
        config[key] = value.clone();
    }
    call(server, "POST", "/api/v1/ldap-configs", Some(config));
}

fn windows_config(name: &str, ldap: &str, ou: &str) -> Value {
    let mut config = autoscale_config(name, 1, 1);
    config["os"] = json!("windows");
    config["startup_script"] = json!(
        std::fs::read_to_string(workspace_root().join("examples/startup-scripts/windows.ps1"))
            .unwrap()
    );
    config["create_ad_computer_record"] = json!(true);
    config["ldap_config"] = json!(ldap);
    config["ad_computer_ou_dn"] = json!(ou);
    config
}

/// The live server of config `name` once it has a VM: (server, instance id).
fn server_with_vm(server: &Server, name: &str) -> (Value, String) {
    wait_for("a server with a VM", PASSES_DONE, || {
        let all = servers(server);
        servers_of(&all, name)
            .into_iter()
            .find(|s| s["instance_id"].is_string() && s["status"] != "destroying")
            .map(|s| ((*s).clone(), s["instance_id"].as_str().unwrap().to_string()))
    })
}

/// Boot as the script does: fetch the variables with the token the script carries (answered
/// here), then check in.
fn check_in_from_script(server: &Server, moto: &Moto, instance: &str) -> Value {
    let token = token_in(&moto.user_data(instance));
    let variables = bootstrap(server, &token);
    let (status, answer) = server.call_as(
        "default",
        "POST",
        "/api/v1/servers/checkin",
        Some(&json!({"address": "127.0.0.1"})),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    variables
}

#[test]
fn computer_records_are_created_before_and_deleted_after_their_vms() {
    let samba = Samba::start();
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    ldap_config(&server, &samba, "corp", json!({}));
    let ldap = call(&server, "GET", "/api/v1/ldap-configs/corp", None);
    assert_eq!(ldap["bind_password"], Value::Null, "write-only");
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(windows_config("win", "corp", samba::OU_DN)),
    );

    // The object is in the OU, with a workstation trust account's attributes.
    let (record, instance) = server_with_vm(&server, "win");
    let hostname = record["hostname"].as_str().unwrap().to_string();
    assert!(hostname.len() <= 15);
    let dn = record["ad_computer_dn"].as_str().unwrap().to_string();
    assert_eq!(dn, format!("CN={hostname},{}", samba::OU_DN));
    let entry = samba.entry(&dn).expect("the computer object exists");
    for attribute in [
        "objectClass: computer".to_string(),
        format!("sAMAccountName: {}$", hostname.to_uppercase()),
        "userAccountControl: 4096".into(),
        format!("dNSHostName: {hostname}.example.test"),
    ] {
        assert!(entry.contains(&attribute), "{attribute} in\n{entry}");
    }
    // The script holds no credential; it fetches the account's single-use password when
    // the VM boots. A bind as the machine account with it succeeds, which proves it.
    let script = moto.user_data(&instance);
    assert!(
        script.contains("$JoinCredential = (Get-ZbVariable 'ad_join_credential')"),
        "{script}"
    );
    let variables = check_in_from_script(&server, &moto, &instance);
    assert_eq!(variables["domain"], "example.test");
    let credential = variables["ad_join_credential"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(credential.len(), 32);
    assert!(!script.contains(&credential));
    assert!(samba.bind_as(&dn, &credential), "bind as {dn}");
    assert!(samba.bind_as(
        &format!("{}$@{}", hostname.to_uppercase(), samba::REALM),
        &credential
    ));
    assert!(!samba.bind_as(&dn, "not-the-password"));
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains(&credential),
        "the join credential is never logged"
    );

    // Destroying the server deletes the object (after the VM).
    patch_config(&server, "win", json!({"minimum_available_sessions": 0}));
    wait_for("the object to go", PASSES_DONE, || {
        samba.entry(&dn).is_none().then_some(())
    });
    assert!(instances_of(&moto, "win").is_empty());

    // An object with a child: a plain delete fails, is retried and shows on the server and
    // the config; with recursive cleanup it goes, child and all.
    patch_config(&server, "win", json!({"minimum_available_sessions": 1}));
    let (record, instance) = server_with_vm(&server, "win");
    let dn = record["ad_computer_dn"].as_str().unwrap().to_string();
    samba.modify(
        "ldapadd",
        &format!("dn: CN=child,{dn}\nobjectClass: serviceConnectionPoint\ncn: child\n"),
    );
    check_in_from_script(&server, &moto, &instance);
    patch_config(&server, "win", json!({"minimum_available_sessions": 0}));
    let error = wait_for("the failed delete to show", PASSES_DONE, || {
        let config = call(&server, "GET", "/api/v1/autoscale-configs/win", None);
        config["status"]["last_error"]
            .as_str()
            .filter(|e| e.starts_with("ad-delete"))
            .map(str::to_string)
    });
    assert!(
        error.contains("66") || error.to_lowercase().contains("non-leaf"),
        "{error}"
    );
    let all = servers(&server);
    let stuck = servers_of(&all, "win")[0];
    assert_eq!(stuck["status"], "destroying");
    assert!(stuck["last_error"].is_string(), "{stuck}");
    assert!(samba.entry(&dn).is_some());
    patch_config(&server, "win", json!({"recursive_ad_cleanup": true}));
    wait_for(
        "the object and its child to go",
        Duration::from_secs(60),
        || {
            (samba.entry(&dn).is_none() && servers_of(&servers(&server), "win").is_empty())
                .then_some(())
        },
    );
    assert_no_secret_is_shown(
        server,
        &[
            samba::ADMIN_PASSWORD,
            &credential,
            "test-secret-key",
            "w0rd",
        ],
    );
}

#[test]
fn directory_failures_show_on_the_config_and_no_vm_is_created() {
    let samba = Samba::start();
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    ldap_config(&server, &samba, "corp", json!({}));
    ldap_config(
        &server,
        &samba,
        "wrong-password",
        json!({"bind_password": "nope"}),
    );
    ldap_config(
        &server,
        &samba,
        "unreachable",
        json!({"url": "ldaps://127.0.0.1:1"}),
    );
    for (config, ldap, ou, expected) in [
        ("badpw", "wrong-password", samba::OU_DN, "refused the bind"),
        ("down", "unreachable", samba::OU_DN, "cannot reach"),
        (
            "noou",
            "corp",
            "OU=Nowhere,DC=example,DC=test",
            "does not exist",
        ),
    ] {
        call(
            &server,
            "POST",
            "/api/v1/autoscale-configs",
            Some(windows_config(config, ldap, ou)),
        );
        let error = wait_for(expected, PASSES_DONE, || {
            let view = call(
                &server,
                "GET",
                &format!("/api/v1/autoscale-configs/{config}"),
                None,
            );
            view["status"]["last_error"].as_str().map(str::to_string)
        });
        assert!(
            error.starts_with("ad-create") && error.contains(expected),
            "{config}: {error}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for config in ["badpw", "down", "noou"] {
        assert!(instances_of(&moto, config).is_empty(), "no VM for {config}");
        let all = servers(&server);
        assert!(
            servers_of(&all, config)
                .iter()
                .all(|s| s["instance_id"].is_null() && s["ad_computer_dn"].is_null()),
            "{all:?}"
        );
    }
    server.stop();
}

/// The unmanaged VMs a config reports: (instance id, problem).
fn unmanaged(server: &Server, config: &str) -> Vec<(String, String)> {
    let view = call(
        server,
        "GET",
        &format!("/api/v1/autoscale-configs/{config}"),
        None,
    );
    view["status"]["unmanaged_vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            (
                vm["instance_id"].as_str().unwrap().to_string(),
                vm["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A VM made by hand with boto3 (not through any broker), with `tags`; answers its id.
fn hand_made(moto: &Moto, tags: &[(&str, &str)], protected: bool) -> String {
    let tags: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{{'Key': '{k}', 'Value': '{v}'}}"))
        .collect();
    // (moto takes termination protection from ModifyInstanceAttribute, not RunInstances.)
    moto.boto3(&format!(
        "r = ec2.run_instances(ImageId='ami-760aaa0f', MinCount=1, MaxCount=1, \
         TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [{}]}}])\n\
         i = r['Instances'][0]['InstanceId']\n\
         ec2.modify_instance_attribute(InstanceId=i, DisableApiTermination={{'Value': {}}})\n\
         print(i)",
        tags.join(", "),
        if protected { "True" } else { "False" },
    ))
    .trim()
    .to_string()
}

#[test]
fn two_brokers_in_one_account_never_touch_each_others_vms() {
    let moto = Moto::start();
    // Staging and production, one cloud account, a config of the same name in each.
    let brokers = [start(None), start(None)];
    for broker in &brokers {
        setup(broker, &moto);
        call(
            broker,
            "POST",
            "/api/v1/autoscale-configs",
            Some(autoscale_config("linux", 1, 1)),
        );
    }
    let ids = [installation(&brokers[0]), installation(&brokers[1])];
    assert_ne!(ids[0], ids[1]);
    // Somebody allowed to tag instances puts the config's tag on a VM of theirs.
    let forged = hand_made(
        &moto,
        &[(CONFIG_TAG, "linux"), (SERVER_TAG, "not-a-server")],
        false,
    );
    let vms = wait_for("each broker's VM", PASSES_DONE, || {
        let vms = instances_of(&moto, "linux");
        (vms.len() == 3).then_some(vms)
    });
    // Many passes later, every VM is still there, and each broker's server keeps its own.
    std::thread::sleep(Duration::from_secs(3));
    let live: Vec<(String, String)> = instances_of(&moto, "linux");
    assert_eq!(live, vms, "nobody destroyed anybody's VM");
    for (broker, id) in brokers.iter().zip(&ids) {
        let all = servers(broker);
        let mine = servers_of(&all, "linux");
        assert_eq!(mine.len(), 1, "{all:?}");
        let instance = mine[0]["instance_id"].as_str().unwrap();
        let tags = moto
            .live_instances()
            .into_iter()
            .find(|(i, _, _)| i == instance)
            .unwrap()
            .2;
        assert!(
            tags.contains(&(INSTALLATION_TAG.to_string(), id.clone())),
            "{tags:?}"
        );
        // The forged VM is reported, never touched; the other broker's is not even reported.
        assert_eq!(
            unmanaged(broker, "linux"),
            [(forged.clone(), "not_ours".to_string())]
        );
    }
    let metrics = brokers[0].admin_get("default", "/metrics").text().unwrap();
    assert!(
        !metrics.contains(r#"reason="orphan""#),
        "nothing was taken for an orphan: {metrics}"
    );
    for broker in brokers {
        broker.stop();
    }
}

#[test]
fn a_vm_the_provider_refuses_to_destroy_is_reported_and_the_pass_goes_on() {
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    // An orphan of ours with termination protection on.
    let installation = installation(&server);
    let protected = hand_made(
        &moto,
        &[
            (INSTALLATION_TAG, &installation),
            (CONFIG_TAG, "linux"),
            (SERVER_TAG, "7d0c3a52-0000-4000-8000-000000000000"),
        ],
        true,
    );
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 1, 1)),
    );
    // The pool still gets its VM, pass after pass, while the protected one is reported.
    let reported = wait_for("the refusal to show", PASSES_DONE, || {
        let reported = unmanaged(&server, "linux");
        (!reported.is_empty()).then_some(reported)
    });
    assert_eq!(
        reported,
        [(protected.clone(), "destroy_failed".to_string())]
    );
    wait_for("the pool's own VM", PASSES_DONE, || {
        servers_of(&servers(&server), "linux")
            .iter()
            .any(|s| s["instance_id"].is_string())
            .then_some(())
    });
    let view = call(&server, "GET", "/api/v1/autoscale-configs/linux", None);
    assert_eq!(view["status"]["last_error"], Value::Null, "{view}");
    assert!(
        moto.live_instances()
            .iter()
            .any(|(id, _, _)| id == &protected)
    );
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    assert!(
        metrics.contains(r#"zonebroker_autoscale_unmanaged_vms{config="linux"} 1"#),
        "{metrics}"
    );
    // Protection off: the next pass destroys it and the report clears.
    moto.boto3(&format!(
        "ec2.modify_instance_attribute(InstanceId='{protected}', DisableApiTermination={{'Value': False}})"
    ));
    wait_for("the orphan to go", PASSES_DONE, || {
        unmanaged(&server, "linux").is_empty().then_some(())
    });
    assert!(
        !moto
            .live_instances()
            .iter()
            .any(|(id, _, _)| id == &protected)
    );
    server.stop();
}

/// The full reconcile passes (those that list the cloud) config `config` has run so far.
fn passes(server: &Server, config: &str) -> u64 {
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    let prefix = format!("zonebroker_autoscale_passes_total{{config=\"{config}\",kind=\"full\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

/// A broker whose config `linux` keeps two single-session servers, both booted, and a pool
/// workspace `desktop`.
fn two_running_servers() -> (Moto, Server) {
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 2, 1)),
    );
    call(
        &server,
        "POST",
        "/api/v1/workspaces",
        Some(json!({"name": "desktop", "type": "pool", "pool": "desktops"})),
    );
    let vms = wait_for("two instances", PASSES_DONE, || {
        let vms = instances_of(&moto, "linux");
        (vms.len() == 2).then_some(vms)
    });
    for (instance, _) in &vms {
        let (ok, log) = boot(&moto, instance);
        assert!(ok, "{log}");
    }
    (moto, server)
}

#[test]
fn a_vm_terminated_behind_the_brokers_back_is_replaced_within_a_pass() {
    let (moto, server) = two_running_servers();
    let session = request_session(&server, "ada");
    let doomed = session["agent"].as_str().unwrap().to_string();
    let instance = servers(&server)
        .into_iter()
        .find(|s| s["id"] == doomed.as_str())
        .unwrap()["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Older than the listing's grace period, then terminated with AWS's own SDK.
    std::thread::sleep(Duration::from_secs(1));
    moto.boto3(&format!(
        "ec2.terminate_instances(InstanceIds=['{instance}'])"
    ));
    let before = passes(&server, "linux");
    wait_for("the pool to be back at its minimum", PASSES_DONE, || {
        let all = servers(&server);
        let linux = servers_of(&all, "linux");
        (linux.len() == 2 && linux.iter().all(|s| s["id"] != doomed.as_str())).then_some(())
    });
    assert!(
        passes(&server, "linux") <= before + 2,
        "the pass in flight, then the one that noticed"
    );
    let (status, _) = server.call(
        "default",
        "GET",
        &format!("/api/v1/sessions/{}", session["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 404, "its session was ended");
    assert_eq!(instances_of(&moto, "linux").len(), 2, "a replacement VM");
    // No session goes to the dead server: one on the survivor, then no room until the
    // replacement boots.
    let next = request_session(&server, "bob");
    assert_ne!(next["agent"], doomed.as_str());
    let (status, _) = server.call(
        "default",
        "POST",
        "/api/v1/sessions",
        Some(&json!({"workspace": "desktop", "user": "eve"})),
    );
    assert_eq!(status, 503);
    let logs = server.logs().join("\n");
    assert!(logs.contains("server lost"), "the log says why");
    server.stop();
}

#[test]
fn an_operator_drains_an_autoscaled_server_and_can_force_it() {
    let (moto, server) = two_running_servers();
    let session = request_session(&server, "ada");
    let busy = session["agent"].as_str().unwrap().to_string();

    // Drained: 202, no new session, destroyed once its session ends.
    let (status, answer) = server.call(
        "default",
        "DELETE",
        &format!("/api/v1/servers/{busy}"),
        None,
    );
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("draining")),
        "{answer}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let drained = call(&server, "GET", &format!("/api/v1/servers/{busy}"), None);
    assert_eq!(drained["status"], "draining", "kept while its session runs");
    for user in ["bob", "eve"] {
        let (status, placed) = server.call(
            "default",
            "POST",
            "/api/v1/sessions",
            Some(&json!({"workspace": "desktop", "user": user})),
        );
        assert!(
            status == 503 || placed["agent"] != busy.as_str(),
            "{placed}"
        );
    }
    call(
        &server,
        "DELETE",
        &format!("/api/v1/sessions/{}", session["id"].as_str().unwrap()),
        None,
    );
    wait_for("the drained server to go", PASSES_DONE, || {
        let (status, _) = server.call("default", "GET", &format!("/api/v1/servers/{busy}"), None);
        (status == 404).then_some(())
    });

    // Forced: its session ends at once and it goes.
    let running = wait_for("a running server with a session", PASSES_DONE, || {
        for (instance, _) in instances_of(&moto, "linux") {
            let _ = boot(&moto, &instance);
        }
        let (status, session) = server.call(
            "default",
            "POST",
            "/api/v1/sessions",
            Some(&json!({"workspace": "desktop", "user": "mia"})),
        );
        (status == 201).then_some(session)
    });
    let target = running["agent"].as_str().unwrap().to_string();
    let (status, _) = server.call(
        "default",
        "DELETE",
        &format!("/api/v1/servers/{target}?force=true"),
        None,
    );
    assert_eq!(status, 202);
    let (status, _) = server.call(
        "default",
        "GET",
        &format!("/api/v1/sessions/{}", running["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 404, "ended by force");
    wait_for("the forced server to go", PASSES_DONE, || {
        let (status, _) = server.call("default", "GET", &format!("/api/v1/servers/{target}"), None);
        (status == 404).then_some(())
    });
    let metrics = server.admin_get("default", "/metrics").text().unwrap();
    assert!(
        metrics.contains(
            r#"zonebroker_autoscale_vms_destroyed_total{config="linux",reason="drained"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        server
            .logs()
            .join("\n")
            .contains("draining on an operator's request")
    );
    server.stop();
}

#[test]
fn a_config_whose_servers_never_got_a_vm_can_be_deleted() {
    let moto = Moto::start();
    let server = start(None);
    setup(&server, &moto);
    // Every create fails before its VM: the directory cannot be reached.
    call(
        &server,
        "POST",
        "/api/v1/ldap-configs",
        Some(
            json!({"name": "down", "url": "ldaps://127.0.0.1:1", "bind_dn": "joiner",
            "bind_password": "pw", "search_base": "DC=example,DC=test", "connect_timeout": 1}),
        ),
    );
    let mut config = autoscale_config("stuck", 2, 1);
    config["os"] = json!("windows");
    config["startup_script"] = json!(
        std::fs::read_to_string(workspace_root().join("examples/startup-scripts/windows.ps1"))
            .unwrap()
    );
    config["create_ad_computer_record"] = json!(true);
    config["ldap_config"] = json!("down");
    config["ad_computer_ou_dn"] = json!("OU=VDI,DC=example,DC=test");
    call(&server, "POST", "/api/v1/autoscale-configs", Some(config));
    wait_for("the failure", PASSES_DONE, || {
        let view = call(&server, "GET", "/api/v1/autoscale-configs/stuck", None);
        view["status"]["last_error"].as_str().map(|_| ())
    });
    assert_eq!(servers_of(&servers(&server), "stuck").len(), 2);
    let (status, answer) =
        server.call("default", "DELETE", "/api/v1/autoscale-configs/stuck", None);
    assert_eq!(status, 204, "{answer}");
    assert!(
        servers_of(&servers(&server), "stuck").is_empty(),
        "dropped with it"
    );

    // A config with a VM cannot go: the 409 names the server and says how to drain it.
    call(
        &server,
        "POST",
        "/api/v1/autoscale-configs",
        Some(autoscale_config("linux", 1, 1)),
    );
    let (record, _) = server_with_vm(&server, "linux");
    let (status, answer) =
        server.call("default", "DELETE", "/api/v1/autoscale-configs/linux", None);
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(record["id"].as_str().unwrap()),
        "{message}"
    );
    assert!(message.contains("minimum_available_sessions"), "{message}");
    assert!(message.contains("DELETE /api/v1/servers/"), "{message}");
    server.stop();
}
