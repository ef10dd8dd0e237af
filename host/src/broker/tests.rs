//! The broker with a real store, real plugins (built-in and hostile) and no HTTP.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::agent::AgentCheckin;
use crate::domain::image::Image;
use crate::domain::plugin::PluginLimits;
use crate::domain::session::SessionRequest;
use crate::domain::zone::{RequestOrigin, ZonePatch};
use crate::plugins::{CallLimits, PluginRuntime, RuntimeConfig, install_builtins};

fn broker(dir: &std::path::Path) -> Broker {
    broker_with(
        dir,
        CallLimits {
            deadline: Duration::from_millis(50),
            ..CallLimits::STRATEGY
        },
    )
}

/// A broker whose strategy calls run under `strategy_limits`.
fn broker_with(dir: &std::path::Path, strategy_limits: CallLimits) -> Broker {
    let runtime = PluginRuntime::new(RuntimeConfig {
        strategy_limits,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let registry = Registry::new(Arc::new(runtime));
    install_builtins(&registry, &crate::plugins::NoCache).unwrap();
    for fixture in ["infinite_loop", "panics", "out_of_range"] {
        let plugin = registry
            .runtime()
            .load(&zonebroker_test_support::fixture(fixture))
            .unwrap();
        registry
            .activate(&fixture.replace('_', "-"), Arc::new(plugin), false)
            .unwrap();
    }
    let store = Store::open(dir).unwrap();
    let config = BrokerConfig {
        listener_zones: ["east".to_string()].into(),
        ..BrokerConfig::default()
    };
    Broker::open(store, Arc::new(registry), config).unwrap()
}

fn checkin(hostname: &str, cores: f64) -> AgentCheckin {
    AgentCheckin {
        hostname: hostname.into(),
        address: "10.0.0.1".into(),
        port: 443,
        cores,
        memory: 1 << 40,
        max_sessions: 10,
        gpus: None,
        cpu_load: None,
        memory_load: None,
    }
}

fn origin() -> RequestOrigin {
    RequestOrigin::from_host_header("broker.example:8443").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_strategy_never_fails_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let image = Image {
        name: "desktop".into(),
        cores: 2.0,
        memory: 1 << 30,
        gpus: 0,
        enabled: true,
        zone: None,
    };
    broker.create_image(image).await.unwrap();
    // "busy" gets a session while it is alone: half its cores are reserved.
    broker
        .check_in("east", checkin("busy", 4.0), None)
        .await
        .unwrap();
    let first = SessionRequest {
        image: Some("desktop".into()),
        workspace: None,
        user: "bob".into(),
    };
    broker
        .request_session("east", &origin(), first)
        .await
        .unwrap();
    let idle = broker
        .check_in("east", checkin("idle", 64.0), None)
        .await
        .unwrap();

    for (strategy, code) in [
        ("infinite-loop", "deadline_exceeded"),
        ("panics", "trap"),
        ("out-of-range", "invalid_ranking"),
    ] {
        let patch = ZonePatch {
            load_balance_strategy: Some(strategy.into()),
            ..Default::default()
        };
        broker.update_zone("east", patch).await.unwrap();
        let request = SessionRequest {
            image: Some("desktop".into()),
            workspace: None,
            user: "ada".into(),
        };
        let session = broker
            .request_session("east", &origin(), request)
            .await
            .unwrap();
        assert_eq!(
            session.agent, idle.state.agent.id,
            "{strategy}: least-load picks the idle agent"
        );
        let metrics = broker.metrics().render();
        let line =
            format!(r#"zonebroker_strategy_faults_total{{strategy="{strategy}",code="{code}"}} 1"#);
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
        let fallbacks = format!(
            r#"zonebroker_placement_fallbacks_total{{zone="east",strategy="{strategy}"}} 1"#
        );
        assert!(metrics.contains(&fallbacks), "missing {fallbacks}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_need_an_installed_strategy_and_protect_what_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let unknown = ZonePatch {
        load_balance_strategy: Some("nope".into()),
        ..Default::default()
    };
    match broker.update_zone("east", unknown).await {
        Err(BrokerError::Invalid(field)) => assert_eq!(field.field, "load_balance_strategy"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    assert!(matches!(
        broker.delete_zone("east").await,
        Err(BrokerError::Conflict {
            code: "zone_in_use",
            ..
        })
    ));
    assert!(broker.zone("default").is_ok(), "default always exists");
    assert!(matches!(
        broker.delete_zone("default").await,
        Err(BrokerError::Conflict { .. })
    ));
}

/// A version's own limits are what its calls run under after a restart too, capped at the
/// maxima of the process that loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versions_limits_apply_after_a_restart_within_the_maxima() {
    let dir = tempfile::tempdir().unwrap();
    let limits = PluginLimits {
        fuel: Some(30_000_000),
        deadline_ms: Some(250),
        memory_bytes: None,
    };
    {
        let broker = Arc::new(broker(dir.path()));
        let bytes = zonebroker_test_support::example_strategy();
        broker
            .upload_plugin("spread", bytes, limits, true, "test")
            .await
            .unwrap();
    }
    let restarted = broker(dir.path());
    let slot = restarted.registry.get("spread").expect("the plugin loaded");
    assert_eq!(slot.active().limits(), limits);
    let runtime = restarted.registry.runtime();
    let applied = runtime.limits_of(&slot.active());
    assert_eq!(
        (applied.fuel, applied.deadline),
        (30_000_000, Duration::from_millis(250))
    );
    // A process with a smaller maximum caps them.
    let capped = CallLimits {
        fuel: 1_000_000,
        ..runtime.config().max_limits
    }
    .cap(&limits);
    assert_eq!(capped.fuel, Some(1_000_000));
    assert_eq!(capped.deadline_ms, Some(250));
}

/// Re-uploading the bytes of a stored version when its smoke call fails (here: a broker whose
/// strategy budget is too small) refuses the upload and keeps the version: after a restart the
/// active version still loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reupload_keeps_the_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = zonebroker_test_support::example_strategy();
    let version = {
        let broker = Arc::new(broker(dir.path()));
        let view = broker
            .upload_plugin(
                "spread",
                bytes.clone(),
                PluginLimits::default(),
                true,
                "test",
            )
            .await
            .unwrap();
        assert!(view.active && view.created);
        view.version
    };
    {
        let starved = Arc::new(broker_with(
            dir.path(),
            CallLimits {
                fuel: 10,
                ..CallLimits::STRATEGY
            },
        ));
        let artifacts = starved.store.artifacts_of(&version).unwrap();
        assert!(artifacts >= 1, "the upload cached its compiled component");
        match starved
            .upload_plugin(
                "spread",
                bytes.clone(),
                PluginLimits::default(),
                true,
                "test",
            )
            .await
        {
            Err(BrokerError::Upload(UploadError::Smoke(_))) => {}
            other => panic!("expected a failed smoke call, got {other:?}"),
        }
        assert!(starved.store.blob(&version).unwrap().is_some());
        assert_eq!(starved.store.artifacts_of(&version).unwrap(), artifacts);
    }
    let restarted = broker(dir.path());
    let slot = restarted.registry.get("spread").expect("the plugin loaded");
    assert_eq!(slot.active().sha256(), version);
}

/// An upload refused for what it imports leaves nothing in the store, not even a compiled
/// artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_leaves_no_compiled_artifact() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(broker(dir.path()));
    // Refused at load for an import; refused by the smoke call (a file not found, a panic).
    for (fixture, code) in [
        ("calls_http", "forbidden_import"),
        ("reads_files", ""),
        ("panics", ""),
    ] {
        let bytes = zonebroker_test_support::fixture(fixture);
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        match broker
            .upload_plugin("refused", bytes, PluginLimits::default(), true, "test")
            .await
        {
            Err(BrokerError::Upload(UploadError::Load(error))) => {
                assert_eq!(error.code(), code, "{fixture}: {error}")
            }
            Err(BrokerError::Upload(UploadError::Smoke(_))) if code.is_empty() => {}
            other => panic!("{fixture}: expected a refusal, got {other:?}"),
        }
        assert_eq!(broker.store.artifacts_of(&sha256).unwrap(), 0, "{fixture}");
        assert!(broker.store.blob(&sha256).unwrap().is_none(), "{fixture}");
    }
    assert!(broker.plugin("refused").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_index_follows_every_change_to_an_agent_and_placement_reads_only_it() {
    use crate::domain::agent::AgentPatch;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let check = |broker: &Broker| broker.read().agents.check();
    let image = Image {
        name: "desktop".into(),
        cores: 1.0,
        memory: 1 << 30,
        gpus: 0,
        enabled: true,
        zone: None,
    };
    broker.create_image(image).await.unwrap();
    let mut ids = Vec::new();
    for (i, zone) in ["east", "west", "east", "west"].into_iter().enumerate() {
        let checked = broker
            .check_in(zone, checkin(&format!("agent-{i}"), 8.0), None)
            .await
            .unwrap();
        ids.push((checked.state.agent.id, checked.credential.unwrap()));
        check(&broker);
    }
    assert_eq!(broker.read().agents.count_in("east"), 2);

    // A west agent moves to east (its next check-in comes through an east listener).
    let (moved, credential) = &ids[1];
    broker
        .check_in("east", checkin("agent-1", 8.0), Some(credential.expose()))
        .await
        .unwrap();
    check(&broker);
    assert_eq!(broker.read().agents.count_in("east"), 3);
    assert_eq!(broker.read().agents.count_in("west"), 1);

    // Disabled agents leave the candidates; usage follows placements and releases.
    let patch = AgentPatch {
        enabled: Some(false),
        ..Default::default()
    };
    broker.patch_agent(ids[0].0, patch).await.unwrap();
    check(&broker);
    let request = || SessionRequest {
        image: Some("desktop".into()),
        workspace: None,
        user: "ada".into(),
    };
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let session = broker
            .request_session("east", &origin(), request())
            .await
            .unwrap();
        assert_ne!(session.agent, ids[0].0, "a disabled agent is no candidate");
        assert_eq!(session.zone, "east");
        check(&broker);
        sessions.push(session);
    }
    assert!(sessions.iter().any(|s| s.agent == *moved));
    let slot_sessions: u32 = broker
        .read()
        .agents
        .slots_in("east")
        .iter()
        .map(|s| s.usage.sessions)
        .sum();
    assert_eq!(slot_sessions, 4, "the slots carry the reservations");
    for session in sessions {
        broker.delete_session(session.id).await.unwrap();
        check(&broker);
    }
    broker.reset_agent_credential(ids[2].0).await.unwrap();
    broker.delete_agent(ids[3].0).await.unwrap();
    check(&broker);
    assert_eq!(broker.read().agents.count_in("west"), 0);
    let (page, next) = broker.agents(None, Some(2));
    assert_eq!(page.len(), 2);
    let (rest, last) = broker.agents(next, Some(2));
    assert_eq!((rest.len(), last), (1, None));
    assert!(
        page[1].agent.id < rest[0].agent.id,
        "pages follow in id order"
    );
}

/// `settle` leaves the view as the store has the record: ours once taken, the store's when
/// it holds another version, and the previous record back when the store fails or the
/// caller stops waiting (its request cancelled). Zones stand in for a versioned kind here,
/// with their proxy port as the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_write_the_store_did_not_take_leaves_the_view_as_the_store_has_it() {
    use super::records::VersionedKind;
    use crate::domain::zone::Zone;
    use crate::store::{StoreError, Swapped};
    const ZONES: VersionedKind<Zone> = VersionedKind {
        records: |inventory| &mut inventory.zones,
        version: |zone| zone.proxy_port.into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let at = |port| Zone {
        proxy_port: port,
        ..Zone::with_defaults("x")
    };
    let shown = || broker.read().zones.get("x").map(|zone| zone.proxy_port);
    let show = |zone: Option<Zone>| match zone {
        Some(zone) => broker.write().zones.insert("x".into(), zone),
        None => broker.write().zones.remove("x"),
    };
    let answered = |answer| async move { answer };

    show(Some(at(2)));
    let taken = broker
        .settle(
            &ZONES,
            "x",
            Some(&at(2)),
            Some(at(1)),
            answered(Ok(Swapped::Done)),
        )
        .await;
    assert!(matches!(taken, Ok(Swapped::Done)));
    assert_eq!(shown(), Some(2), "taken: ours stays");

    show(Some(at(3)));
    let stale = broker
        .settle(
            &ZONES,
            "x",
            Some(&at(3)),
            Some(at(2)),
            answered(Ok(Swapped::Stale(Some(at(5))))),
        )
        .await;
    assert!(matches!(stale, Ok(Swapped::Stale(Some(_)))));
    assert_eq!(shown(), Some(5), "stale: the store's version replaces ours");

    show(Some(at(6)));
    let failed = broker
        .settle(
            &ZONES,
            "x",
            Some(&at(6)),
            Some(at(5)),
            answered(Err(StoreError::Corrupt {
                tree: "zones",
                message: "the disk went away".into(),
            })),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(shown(), Some(5), "failed: the previous record is back");

    // A create whose request is cancelled while the store has not answered.
    show(None);
    show(Some(at(7)));
    let ours = at(7);
    let waiting = broker.settle(&ZONES, "x", Some(&ours), None, std::future::pending());
    assert!(
        tokio::time::timeout(Duration::from_millis(20), waiting)
            .await
            .is_err()
    );
    assert_eq!(
        shown(),
        None,
        "cancelled: the view no longer shows the create"
    );
}
