//! Shadow strategies through the real server: a zone's `shadow_strategy` ranks each
//! placement's input beside the zone's strategy; its report counts agreement, faults and
//! call times; placements are the same with a shadow as without; promotion makes it the
//! zone's strategy.

use serde_json::{Value, json};
use zonebroker_test_support::api::{metric, until, upload_plugin};
use zonebroker_test_support::{ADMIN_TOKEN, Server, ServerOptions, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_zonebroker");
/// Sessions placed in each round.
const ROUND: usize = 6;

fn set_zone(server: &Server, patch: Value) -> (u16, Value) {
    server.call("default", "PATCH", "/api/v1/zones/default", Some(&patch))
}

fn shadow_report(server: &Server) -> Value {
    let (status, report) = server.call("default", "GET", "/api/v1/zones/default/shadow", None);
    assert_eq!(status, 200, "{report}");
    report
}

/// Place a round of sessions (several users), then end them; answers the agents chosen.
fn round(server: &Server) -> Vec<String> {
    let sessions: Vec<Value> = (0..ROUND)
        .map(|i| {
            let (status, session) = server.call(
                "default",
                "POST",
                "/api/v1/sessions",
                Some(&json!({ "image": "desktop", "user": format!("user{}", i % 3) })),
            );
            assert_eq!(status, 201, "{session}");
            session
        })
        .collect();
    for session in &sessions {
        let id = session["id"].as_str().unwrap();
        let (status, _) = server.call("default", "DELETE", &format!("/api/v1/sessions/{id}"), None);
        assert_eq!(status, 204);
    }
    sessions
        .iter()
        .map(|s| s["agent"].as_str().unwrap().to_string())
        .collect()
}

/// A round with `shadow` as the zone's shadow, once its report has seen every call.
fn round_with_shadow(server: &Server, shadow: &str) -> (Vec<String>, Value) {
    let (status, zone) = set_zone(server, json!({ "shadow_strategy": shadow }));
    assert_eq!(status, 200, "{zone}");
    assert_eq!(zone["shadow_strategy"], shadow);
    let placed = round(server);
    until(&format!("{shadow}: every shadow call reported"), || {
        let report = shadow_report(server);
        report["calls"].as_u64().unwrap() + report["dropped"].as_u64().unwrap() == ROUND as u64
    });
    (placed, shadow_report(server))
}

#[test]
fn shadows_that_agree_disagree_or_trap_are_reported_and_change_no_placement() {
    let server = Server::start(BIN, ServerOptions::default());
    let mut agents: Vec<String> = ["a1", "a2", "a3"]
        .iter()
        .map(|hostname| zonebroker_test_support::api::agent(&server, "default", hostname, 10))
        .collect();
    agents.sort();
    zonebroker_test_support::api::image(&server, ADMIN_TOKEN, "desktop");
    for name in ["in-order", "reversed", "traps-in-service"] {
        upload_plugin(
            &server,
            "default",
            name,
            &fixture(&name.replace('-', "_")),
            true,
        );
    }
    let (status, answer) = set_zone(&server, json!({ "load_balance_strategy": "in-order" }));
    assert_eq!(status, 200, "{answer}");

    // Without a shadow: the report is empty and says so.
    let baseline = round(&server);
    assert!(baseline.iter().all(|a| *a == agents[0]), "{baseline:?}");
    let report = shadow_report(&server);
    assert_eq!(report["shadow_strategy"], Value::Null);
    assert_eq!(report["calls"], 0);

    // The zone's own strategy as its shadow: every first choice agrees.
    let (placed, report) = round_with_shadow(&server, "in-order");
    assert_eq!(placed, baseline);
    assert_eq!(
        (
            &report["agreed"],
            &report["agreement_rate"],
            &report["faults"]
        ),
        (&json!(ROUND), &json!(1.0), &json!(0)),
        "{report}"
    );
    assert!(report["p50_ms"].as_f64().is_some() && report["p99_ms"].as_f64().is_some());
    assert_eq!(report["disagreements"], json!([]));

    // A shadow that never agrees: every placement is a disagreement, with both rankings.
    let (placed, report) = round_with_shadow(&server, "reversed");
    assert_eq!(placed, baseline);
    assert_eq!(
        (&report["agreed"], &report["agreement_rate"]),
        (&json!(0), &json!(0.0)),
        "{report}"
    );
    let disagreements = report["disagreements"].as_array().unwrap();
    assert_eq!(disagreements.len(), ROUND);
    for d in disagreements {
        assert_eq!(d["strategy_ranking"], json!(agents), "{d}");
        let reversed: Vec<&String> = agents.iter().rev().collect();
        assert_eq!(d["shadow_ranking"], json!(reversed), "{d}");
        assert_eq!(
            (&d["candidates"], &d["same_zone"]),
            (&json!(3), &json!(true))
        );
    }
    let series =
        r#"zonebroker_shadow_calls_total{zone="default",strategy="reversed",outcome="disagreed"}"#;
    assert_eq!(metric(&server, series), Some(ROUND as f64));

    // A shadow that traps: counted as faults, and the placements never notice.
    let (placed, report) = round_with_shadow(&server, "traps-in-service");
    assert_eq!(placed, baseline);
    assert_eq!(
        (&report["faults"], &report["agreement_rate"]),
        (&json!(ROUND), &Value::Null),
        "{report}"
    );
    assert!(
        report["last_fault"]
            .as_str()
            .is_some_and(|f| f.contains("in service at last")),
        "{report}"
    );
    let fallbacks = metric(
        &server,
        r#"zonebroker_placement_fallbacks_total{zone="default",strategy="in-order"}"#,
    );
    assert_eq!(fallbacks, None, "the zone's own strategy never failed");

    // A shadow must be an installed strategy; one in use cannot be deleted.
    let (status, answer) = set_zone(&server, json!({ "shadow_strategy": "nope" }));
    assert_eq!(
        (status, &answer["error"]["field"]),
        (422, &json!("shadow_strategy"))
    );
    set_zone(&server, json!({ "shadow_strategy": "reversed" }));
    let (status, answer) = server.call("default", "DELETE", "/api/v1/plugins/reversed", None);
    assert_eq!(status, 409, "{answer}");

    // Promotion: the shadow becomes the strategy, and the zone has no shadow left.
    let (status, zone) = server.call(
        "default",
        "POST",
        "/api/v1/zones/default/shadow/promote",
        None,
    );
    assert_eq!(status, 200, "{zone}");
    assert_eq!(
        (&zone["load_balance_strategy"], &zone["shadow_strategy"]),
        (&json!("reversed"), &Value::Null),
        "{zone}"
    );
    let promoted = round(&server);
    assert!(promoted.iter().all(|a| *a == agents[2]), "{promoted:?}");
    let (status, answer) = server.call(
        "default",
        "POST",
        "/api/v1/zones/default/shadow/promote",
        None,
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("no_shadow_strategy")),
        "{answer}"
    );
    // `null` clears a shadow.
    set_zone(&server, json!({ "shadow_strategy": "in-order" }));
    let (status, zone) = set_zone(&server, json!({ "shadow_strategy": null }));
    assert_eq!((status, &zone["shadow_strategy"]), (200, &Value::Null));
}
