//! Writes of VM provider configs and AutoScale configs end to end: concurrent patches lose
//! nothing, `ETag` / `If-Match` (412 when stale), and values that reach `.rdp` files and
//! scripts are checked.

use std::sync::Barrier;

use serde_json::{Value, json};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, configs};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
const PROVIDER: &str = "/api/v1/vm-provider-configs/cloud";
const AUTOSCALE: &str = "/api/v1/autoscale-configs/linux";

/// A server with a pool, a VM provider config `cloud` (its endpoint answers nothing) and
/// a disabled AutoScale config `linux`.
fn setup() -> Server {
    let server = Server::start(BIN, ServerOptions::default());
    configs::create(&server);
    server
}

/// `method path` with the admin token, a JSON body and these headers: status, `ETag`, body.
fn send(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server
        .http()
        .request(method, server.url("default", path))
        .bearer_auth(ADMIN_TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().unwrap();
    (
        status,
        etag,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// PATCH `path` with every patch at once, from as many threads; each must succeed.
fn patch_concurrently(server: &Server, path: &str, patches: &[Value]) {
    let barrier = Barrier::new(patches.len());
    std::thread::scope(|scope| {
        for patch in patches {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                let (status, _, answer) = send(server, "PATCH", path, Some(patch), &[]);
                assert_eq!(status, 200, "{patch}: {answer}");
            });
        }
    });
}

#[test]
fn concurrent_patches_of_different_fields_of_an_autoscale_config_all_land() {
    let server = setup();
    for round in 0..3u64 {
        let patches = [
            json!({ "connection_info": format!("info-{round}") }),
            json!({ "downscale_backoff": 1000 + round }),
            json!({ "provision_timeout": 2000 + round }),
            json!({ "max_sessions_per_server": 10 + round }),
            json!({ "server_name_prefix": format!("p{round}") }),
            json!({ "connection_port": 4000 + round }),
            json!({ "minimum_available_sessions": 0, "reusable": round % 2 == 0 }),
            json!({ "connection_username": format!("user{round}") }),
        ];
        patch_concurrently(&server, AUTOSCALE, &patches);
        let (status, etag, view) = send(&server, "GET", AUTOSCALE, None, &[]);
        assert_eq!(status, 200);
        let config = &view["config"];
        assert_eq!(
            config["connection_info"],
            format!("info-{round}"),
            "{config}"
        );
        assert_eq!(config["downscale_backoff"], 1000 + round, "{config}");
        assert_eq!(config["provision_timeout"], 2000 + round, "{config}");
        assert_eq!(config["max_sessions_per_server"], 10 + round, "{config}");
        assert_eq!(
            config["server_name_prefix"],
            format!("p{round}"),
            "{config}"
        );
        assert_eq!(config["connection_port"], 4000 + round, "{config}");
        assert_eq!(config["reusable"], round % 2 == 0, "{config}");
        assert_eq!(
            config["connection_username"],
            format!("user{round}"),
            "{config}"
        );
        let version = 1 + 8 * (round + 1);
        assert_eq!(config["version"], version, "one version per write");
        assert_eq!(etag, Some(format!("\"{version}\"")));
    }
}

#[test]
fn concurrent_patches_of_different_settings_of_a_provider_config_all_land() {
    let server = setup();
    for round in 0..3u64 {
        let settings = [
            ("instance_type", format!("t3.size{round}")),
            ("subnet_id", format!("subnet-{round}")),
            ("security_group_ids", format!("sg-{round}")),
            ("key_name", format!("key-{round}")),
            ("max_instances", format!("{}", 5 + round)),
            ("ami_id", format!("ami-0000000{round}")),
            ("access_key_id", format!("AKID{round}")),
        ];
        let patches: Vec<Value> = settings
            .iter()
            .map(|(name, value)| json!({ "settings": { *name: value } }))
            .collect();
        patch_concurrently(&server, PROVIDER, &patches);
        let (status, etag, config) = send(&server, "GET", PROVIDER, None, &[]);
        assert_eq!(status, 200);
        for (name, value) in &settings {
            assert_eq!(config["settings"][name], value.as_str(), "{name}: {config}");
        }
        assert!(config["settings"].get("secret_access_key").is_none());
        let version = 1 + 7 * (round + 1);
        assert_eq!(config["version"], version);
        assert_eq!(etag, Some(format!("\"{version}\"")));
    }
}

/// Every write changes the ETag, a stale `If-Match` gets 412 and changes nothing, a
/// malformed one gets 400.
fn if_match_guards_writes(path: &str, field: &str, first: Value, second: Value) {
    let server = setup();
    let read = || {
        let (status, etag, body) = send(&server, "GET", path, None, &[]);
        assert_eq!(status, 200, "{body}");
        (etag.expect("an ETag"), body)
    };
    let value_of = |body: &Value| {
        let config = if body.get("config").is_some() {
            &body["config"]
        } else {
            body
        };
        field.split('.').fold(config, |v, key| &v[key]).clone()
    };
    let patch_of = |value: &Value| {
        field
            .rsplit('.')
            .fold(value.clone(), |inner, key| json!({ key: inner }))
    };

    let (etag, _) = read();
    assert_eq!(etag, "\"1\"", "a new record is at version 1");
    let (status, written, _) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&first)),
        &[("If-Match", &etag)],
    );
    assert_eq!(status, 200);
    let written = written.expect("a PATCH answers the new ETag");
    assert_ne!(written, etag);
    let (now, body) = read();
    assert_eq!(now, written);
    assert_eq!(value_of(&body), first);

    // The ETag read before that write is stale now.
    let (status, _, answer) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&second)),
        &[("If-Match", &etag)],
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (412, Some("precondition_failed")),
        "{answer}"
    );
    let weak = format!("W/{now}");
    let (status, _, _) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&second)),
        &[("If-Match", &weak)],
    );
    assert_eq!(status, 412, "a weak tag never matches");
    for malformed in ["2", "\"2", "W/2"] {
        let (status, _, answer) = send(
            &server,
            "PATCH",
            path,
            Some(&patch_of(&second)),
            &[("If-Match", malformed)],
        );
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_if_match")),
            "{malformed}: {answer}"
        );
    }
    let (unchanged, body) = read();
    assert_eq!(unchanged, now, "refused writes change nothing");
    assert_eq!(value_of(&body), first);

    // A list naming the current version, or `*`, applies; so does no If-Match at all.
    let list = format!("\"999\", {now}");
    let (status, third, _) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&second)),
        &[("If-Match", &list)],
    );
    assert_eq!(status, 200);
    let third = third.unwrap();
    assert_ne!(third, now);
    let (status, fourth, _) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&first)),
        &[("If-Match", "*")],
    );
    assert_eq!(status, 200);
    assert_ne!(fourth.as_ref(), Some(&third));
    // A version in the body is no precondition and is not taken.
    let (status, fifth, body) = send(&server, "PATCH", path, Some(&json!({ "version": 1 })), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(fifth, Some("\"5\"".to_string()), "{body}");
    let (status, _, _) = send(
        &server,
        "PATCH",
        path,
        Some(&patch_of(&second)),
        &[("If-Match", "\"1\"")],
    );
    assert_eq!(status, 412);
}

#[test]
fn if_match_guards_autoscale_config_writes() {
    if_match_guards_writes(AUTOSCALE, "downscale_backoff", json!(111), json!(222));
}

#[test]
fn if_match_guards_provider_config_writes() {
    if_match_guards_writes(
        PROVIDER,
        "settings.instance_type",
        json!("t3.small"),
        json!("t3.large"),
    );
}

#[test]
fn a_username_that_would_add_a_line_to_an_rdp_file_is_refused() {
    let server = setup();
    let evil = "bob\r\nfull address:s:evil";
    let mut body = configs::autoscale_body();
    body["name"] = json!("evil");
    body["connection_username"] = json!(evil);
    let (status, answer) = server.call("default", "POST", "/api/v1/autoscale-configs", Some(&body));
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("connection_username")),
        "{answer}"
    );
    assert_eq!(
        server
            .call("default", "GET", "/api/v1/autoscale-configs/evil", None)
            .0,
        404
    );

    let before = send(&server, "GET", AUTOSCALE, None, &[]).1;
    let (status, answer) = server.call(
        "default",
        "PATCH",
        AUTOSCALE,
        Some(&json!({ "connection_username": "bob\nx" })),
    );
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("connection_username")),
        "{answer}"
    );
    let (_, after, view) = send(&server, "GET", AUTOSCALE, None, &[]);
    assert_eq!(view["config"]["connection_username"], "kasm");
    assert_eq!(after, before, "nothing written");
}

#[test]
fn the_openapi_document_declares_etag_and_if_match() {
    let server = Server::start(BIN, ServerOptions::default());
    let (status, doc) = server.call("default", "GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    for path in [
        "/api/v1/vm-provider-configs/{name}",
        "/api/v1/autoscale-configs/{name}",
    ] {
        let item = &doc["paths"][path];
        assert!(
            item["get"]["responses"]["200"]["headers"]["ETag"].is_object(),
            "{path}: {item}"
        );
        let patch = &item["patch"];
        assert!(
            patch["responses"]["200"]["headers"]["ETag"].is_object(),
            "{path}: {patch}"
        );
        assert!(patch["responses"]["412"].is_object(), "{path}: {patch}");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
            "{path}: {patch}"
        );
    }
}

/// Records are tolerant of fields they do not know when read back from the store; request
/// bodies are not: an unknown field, created or patched, is refused with its name, and
/// nothing is written.
#[test]
fn request_bodies_refuse_unknown_fields_and_write_nothing() {
    let server = setup();
    let mut autoscale = configs::autoscale_body();
    autoscale["name"] = json!("linux2");
    for (collection, mut body) in [
        ("pools", json!({"name": "pool2"})),
        (
            "images",
            json!({"name": "img", "cores": 1, "memory": 1073741824u64}),
        ),
        (
            "workspaces",
            json!({"name": "desk", "type": "pool", "pool": "pool"}),
        ),
        (
            "ldap-configs",
            json!({"name": "dir", "url": "ldaps://dc.example.test", "bind_dn": "cn=broker",
                "bind_password": "pw", "search_base": "DC=example,DC=test"}),
        ),
        (
            "vm-provider-configs",
            json!({"name": "cloud2", "provider": "aws-ec2", "settings": {}}),
        ),
        ("autoscale-configs", autoscale),
    ] {
        body["colour"] = json!("red");
        let path = format!("/api/v1/{collection}");
        let (status, _, answer) = send(&server, "POST", &path, Some(&body), &[]);
        assert_eq!(status, 422, "{path}: {answer}");
        assert_eq!(answer["error"]["field"], "colour", "{path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field `colour`"),
            "{answer}"
        );
        let name = body["name"].as_str().unwrap();
        let (status, _, _) = send(&server, "GET", &format!("{path}/{name}"), None, &[]);
        assert_eq!(status, 404, "{path}/{name} was not created");
    }
    for path in [PROVIDER, AUTOSCALE] {
        let (_, before, _) = send(&server, "GET", path, None, &[]);
        let (status, _, answer) = send(&server, "PATCH", path, Some(&json!({"colour": 1})), &[]);
        assert_eq!(
            (status, &answer["error"]["field"]),
            (422, &json!("colour")),
            "{path}: {answer}"
        );
        let (_, after, _) = send(&server, "GET", path, None, &[]);
        assert_eq!(before, after, "{path}: the version did not move");
    }
    // The document says so for every request body.
    let (_, _, doc) = send(&server, "GET", "/api/v1/openapi.json", None, &[]);
    for schema in [
        "Pool",
        "Image",
        "Workspace",
        "LdapConfig",
        "VmProviderConfig",
        "AutoScaleConfig",
    ] {
        assert_eq!(
            doc["components"]["schemas"][schema]["additionalProperties"],
            json!(false),
            "{schema}"
        );
    }
}
