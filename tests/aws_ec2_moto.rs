//! The built-in `aws-ec2` provider against a real EC2 emulator (moto's server): every call
//! the AutoScale loop makes, over `wasi:http`, SigV4-signed; and the host's endpoint fence.

use std::net::TcpListener;
use std::time::Duration;

use zonebroker::domain::provider::{ProviderError, VmSpec, VmState};
use zonebroker::domain::script::Os;
use zonebroker::plugins::{
    BUILTIN_PROVIDERS, Endpoints, LoadedPlugin, PluginRuntime, RuntimeConfig,
};
use zonebroker_test_support::fixture;
use zonebroker_test_support::moto::Moto;

fn runtime_and_ec2() -> (PluginRuntime, LoadedPlugin) {
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let ec2 = runtime.load(BUILTIN_PROVIDERS[0].1).unwrap();
    (runtime, ec2)
}

fn spec(server_id: &str) -> VmSpec {
    VmSpec {
        server_id: server_id.into(),
        hostname: format!("zb-{}", &server_id[..6]),
        idempotency_key: format!("zb-{server_id}"),
        os: Os::Linux,
        startup_script: "#!/bin/bash\necho 'hello from the startup script'\n".into(),
        tags: vec![
            ("zonebroker:server-id".into(), server_id.into()),
            ("zonebroker:config".into(), "pool-a".into()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_get_and_destroy_against_moto() {
    let moto = Moto::start();
    let (runtime, ec2) = runtime_and_ec2();
    let settings = moto.settings();
    // moto listens on loopback: a private endpoint.
    let endpoints = Endpoints {
        origins: vec![moto.endpoint.clone()],
        allow_private: true,
    };
    let no_network = Endpoints::none();
    let call = runtime.provider(&ec2, &endpoints).unwrap();

    let Ok(validated) = runtime
        .provider(&ec2, &no_network)
        .unwrap()
        .validate(&settings)
        .await
        .unwrap()
    else {
        panic!("validation failed")
    };
    assert_eq!(validated.endpoints, [moto.endpoint.clone()]);

    let created = call
        .create(&settings, &spec("6f1c2a3e-aaaa"))
        .await
        .unwrap();
    let Ok(vm) = created else {
        panic!("create failed: {created:?}")
    };
    assert!(vm.instance_id.starts_with("i-"), "{vm:?}");
    assert!(matches!(vm.state, VmState::Pending | VmState::Running));

    // What moto holds: the instance, its tags, the script as user data.
    let live = moto.live_instances();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, vm.instance_id);
    assert!(
        live[0]
            .2
            .contains(&("zonebroker:server-id".into(), "6f1c2a3e-aaaa".into()))
    );
    assert!(live[0].2.contains(&("Name".into(), "zb-6f1c2a".into())));
    assert_eq!(
        moto.user_data(&vm.instance_id),
        spec("6f1c2a3e-aaaa").startup_script
    );

    let tag = ("zonebroker:config".to_string(), "pool-a".to_string());
    let Ok(listed) = call.list(&settings, &tag).await.unwrap() else {
        panic!("list failed")
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tag("zonebroker:server-id"), Some("6f1c2a3e-aaaa"));
    let other = ("zonebroker:config".to_string(), "pool-b".to_string());
    let Ok(none) = call.list(&settings, &other).await.unwrap() else {
        panic!("list failed")
    };
    assert!(none.is_empty());

    let Ok(got) = call.get(&settings, &vm.instance_id).await.unwrap() else {
        panic!("get failed")
    };
    assert_eq!(got.state, VmState::Running);

    for _ in 0..2 {
        // Destroying twice is not an error.
        let answer = call.destroy(&settings, &vm.instance_id).await.unwrap();
        assert!(answer.is_ok(), "{answer:?}");
    }
    let Ok(after) = call.list(&settings, &tag).await.unwrap() else {
        panic!("list failed")
    };
    assert!(
        after.is_empty(),
        "terminated instances are not listed: {after:?}"
    );

    let answer = call.get(&settings, "i-0123456789abcdef0").await.unwrap();
    assert!(
        matches!(answer, Err(ProviderError::NotFound(_))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_and_name_the_setting() {
    let (runtime, ec2) = runtime_and_ec2();
    let no_network = Endpoints::none();
    let ec2 = runtime.provider(&ec2, &no_network).unwrap();
    let validate = |settings: Vec<(&str, &str)>| {
        let settings: Vec<(String, String)> = settings
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ec2 = &ec2;
        async move { ec2.validate(&settings).await }
    };
    let base = vec![
        ("region", "eu-west-1"),
        ("access_key_id", "A"),
        ("secret_access_key", "S"),
        ("ami_id", "ami-1"),
    ];
    let Ok(ok) = validate(base.clone()).await.unwrap() else {
        panic!()
    };
    assert_eq!(ok.endpoints, ["https://ec2.eu-west-1.amazonaws.com"]);
    assert_eq!(ok.max_instances, None);

    for (settings, setting) in [
        (base[1..].to_vec(), "region"),
        (
            [base.clone(), vec![("max_instances", "lots")]].concat(),
            "max_instances",
        ),
        (
            [base.clone(), vec![("endpoint", "ftp://x")]].concat(),
            "endpoint",
        ),
        ([base.clone(), vec![("colour", "red")]].concat(), "colour"),
    ] {
        match validate(settings).await.unwrap() {
            Err(ProviderError::InvalidConfig { setting: got, .. }) => assert_eq!(got, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reaches_only_the_endpoints_its_settings_name() {
    let moto = Moto::start();
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let rogue = runtime.load(&fixture("rogue_provider")).unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let settings = vec![
        ("endpoint".to_string(), moto.endpoint.clone()),
        ("target".to_string(), target),
    ];
    // moto listens on loopback: a private endpoint.
    let endpoints = Endpoints {
        origins: vec![moto.endpoint.clone()],
        allow_private: true,
    };

    let rogue = runtime.provider(&rogue, &endpoints).unwrap();
    let answer = rogue
        .create(&settings, &spec("000000-rogue"))
        .await
        .unwrap();
    match answer {
        Err(ProviderError::Transient(message)) => {
            assert!(message.contains("HttpRequestDenied"), "{message}")
        }
        other => panic!("expected the request to be refused, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        elsewhere.accept().is_err(),
        "the other host must see no connection"
    );

    // The named endpoint is reachable.
    let tag = ("k".to_string(), "v".to_string());
    let answer = rogue.list(&settings, &tag).await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}
