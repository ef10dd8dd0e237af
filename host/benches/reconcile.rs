//! The AutoScale reconcile loop at scale, in one run:
//! - one pass over 1,000 AutoScale configs that creates their 10,000 servers (cold);
//! - one pass over the same 1,000 configs and 10,000 servers with nothing to do (steady);
//! - the baseline: the pure `plan()` arithmetic alone over the same configs and servers;
//! - the delay from a demand change (a config's minimum raised) to the provider's create call,
//!   with the loop running as in the server.
//!
//! The broker is real (sled on disk, the built-in script generator rendering every script);
//! the cloud is an in-memory fake, for this benchmark only: it answers at once, so what is
//! measured is the loop's own cost.
//!
//! `cargo bench -p zonebroker --bench reconcile`. Results in BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;
use zonebroker::autoscale::directory::LdapDirectory;
use zonebroker::autoscale::{BrokerAddresses, Cloud, Reconciler, ReconcilerSettings};
use zonebroker::broker::{Broker, BrokerConfig};
use zonebroker::domain::autoscale::{
    AutoScaleConfig, ProviderSettings, ServerState, ServerStatus, StoredProviderConfig,
    VmProviderConfig, plan,
};
use zonebroker::domain::provider::{ProviderError, Vm, VmSpec, VmState};
use zonebroker::plugin_cache::StoredArtifacts;
use zonebroker::plugins::{PluginRuntime, Registry, RuntimeConfig, install_builtins};
use zonebroker::store::Store;

const CONFIGS: usize = 1_000;
const PER_SERVER: u32 = 4;
const SERVERS_PER_CONFIG: u32 = 10;

/// A cloud in memory: VMs by config tag, then instance id (all of one installation); every
/// create is reported on a channel.
struct FakeCloud {
    vms: Mutex<HashMap<String, HashMap<String, Vm>>>,
    created: mpsc::UnboundedSender<(String, Instant)>,
}

impl Cloud for FakeCloud {
    async fn create(&self, _: &StoredProviderConfig, spec: VmSpec) -> Result<Vm, ProviderError> {
        let vm = Vm {
            instance_id: format!("i-{}", Uuid::new_v4().simple()),
            state: VmState::Pending,
            private_address: None,
            public_address: None,
            tags: spec.tags,
        };
        let config = vm.tag("zonebroker:config").unwrap_or_default().to_string();
        self.vms
            .lock()
            .unwrap()
            .entry(config.clone())
            .or_default()
            .insert(vm.instance_id.clone(), vm.clone());
        let _ = self.created.send((config, Instant::now()));
        Ok(vm)
    }

    async fn get(&self, _: &StoredProviderConfig, instance_id: &str) -> Result<Vm, ProviderError> {
        self.vms
            .lock()
            .unwrap()
            .values()
            .find_map(|vms| vms.get(instance_id).cloned())
            .ok_or_else(|| ProviderError::NotFound(instance_id.to_string()))
    }

    async fn destroy(
        &self,
        _: &StoredProviderConfig,
        instance_id: &str,
    ) -> Result<(), ProviderError> {
        for vms in self.vms.lock().unwrap().values_mut() {
            vms.remove(instance_id);
        }
        Ok(())
    }

    async fn list(
        &self,
        _: &StoredProviderConfig,
        tag: (String, String),
    ) -> Result<Vec<Vm>, ProviderError> {
        let vms = self.vms.lock().unwrap();
        Ok(match tag.0.as_str() {
            "zonebroker:config" => vms
                .get(&tag.1)
                .map(|vms| vms.values().cloned().collect())
                .unwrap_or_default(),
            "zonebroker:installation" => {
                vms.values().flat_map(|vms| vms.values().cloned()).collect()
            }
            other => panic!("listed by {other}"),
        })
    }
}

fn config(i: usize) -> AutoScaleConfig {
    serde_json::from_value(json!({
        "name": format!("config-{i}"),
        "pool": "pool",
        "zone": "default",
        "connection_type": "rdp",
        "credential_type": "static",
        "connection_username": "kasm",
        "connection_password": "secret",
        "minimum_available_sessions": PER_SERVER * SERVERS_PER_CONFIG,
        "max_sessions_per_server": PER_SERVER,
        "vm_provider_config": "cloud",
        "os": "linux",
        "startup_script": "#!/bin/bash\ncurl -X POST -H 'Authorization: Bearer {checkin_jwt}' https://{upstream_auth_address}/api/v1/servers/checkin\n",
        "downscale_backoff": 3600,
    }))
    .unwrap()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let plugins = Arc::new(PluginRuntime::new(RuntimeConfig::default()).unwrap());
    let registry = Registry::new(plugins);
    install_builtins(&registry, &StoredArtifacts(&store)).unwrap();
    let broker =
        Arc::new(Broker::open(store, Arc::new(registry), BrokerConfig::default()).unwrap());
    broker
        .create_pool(serde_json::from_value(json!({"name": "pool"})).unwrap())
        .await
        .unwrap();
    let settings: ProviderSettings = [
        ("region", "us-east-1"),
        ("access_key_id", "AKIDBENCH"),
        ("secret_access_key", "bench-secret"),
        ("ami_id", "ami-12345678"),
        ("instance_type", "t3.small"),
        ("endpoint", "http://127.0.0.1:9"),
    ]
    .into_iter()
    .collect();
    broker
        .create_provider_config(VmProviderConfig {
            name: "cloud".into(),
            provider: "aws-ec2".into(),
            settings,
            version: 0,
            allow_private_endpoints: true,
        })
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..CONFIGS {
        broker.create_autoscale_config(config(i)).await.unwrap();
    }
    println!(
        "setup: {CONFIGS} configs saved (each template rendered) in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let (created_tx, mut created_rx) = mpsc::unbounded_channel();
    let cloud = Arc::new(FakeCloud {
        vms: Mutex::new(HashMap::new()),
        created: created_tx,
    });
    let reconciler = Reconciler::new(
        broker.clone(),
        cloud.clone(),
        Arc::new(LdapDirectory),
        ReconcilerSettings {
            interval: Duration::from_secs(3600),
            addresses: BrokerAddresses {
                default: "127.0.0.1:8080".into(),
                ..BrokerAddresses::default()
            },
            config_lease: Duration::from_secs(10),
        },
    );

    // Cold: every config creates its servers.
    let started = Instant::now();
    let report = reconciler.pass().await;
    let cold = started.elapsed();
    assert_eq!(
        report.created as usize,
        CONFIGS * SERVERS_PER_CONFIG as usize,
        "{report:?}"
    );
    assert_eq!(
        broker.servers().len(),
        CONFIGS * SERVERS_PER_CONFIG as usize
    );
    while created_rx.try_recv().is_ok() {}
    println!(
        "cold pass: {} configs, {} servers created (records, scripts, create calls): {:.2} s ({:.0} µs per server)",
        report.configs,
        report.created,
        cold.as_secs_f64(),
        cold.as_secs_f64() * 1e6 / f64::from(report.created)
    );

    // Steady: nothing to do.
    let mut steady = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let report = reconciler.pass().await;
        steady.push(started.elapsed());
        assert_eq!((report.created, report.destroyed), (0, 0), "{report:?}");
    }
    let steady = median(steady);

    // Baseline: the arithmetic alone, over the same shape of data.
    let configs: Vec<AutoScaleConfig> = (0..CONFIGS).map(config).collect();
    let servers: Vec<ServerState> = (0..SERVERS_PER_CONFIG)
        .map(|i| ServerState {
            id: Uuid::from_u128(u128::from(i)),
            status: ServerStatus::Provisioning,
            sessions: 0,
            max_sessions: PER_SERVER,
            spent: false,
            created_at_ms: 1_000,
            idle_since_ms: None,
        })
        .collect();
    let mut baseline = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let mut creates = 0;
        for config in &configs {
            creates += std::hint::black_box(plan(config, &servers, 2_000, None)).create;
        }
        assert_eq!(creates, 0);
        baseline.push(started.elapsed());
    }
    let baseline = median(baseline);
    println!(
        "steady pass: {CONFIGS} configs, {} servers: {:.2} ms; plan() alone: {:.3} ms; pass / plan = {:.0}x",
        CONFIGS * SERVERS_PER_CONFIG as usize,
        steady.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        steady.as_secs_f64() / baseline.as_secs_f64()
    );

    // Demand change to create call, with the loop running.
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = reconciler.clone().spawn(stop_rx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while created_rx.try_recv().is_ok() {}
    let mut delays = Vec::new();
    for i in 0..30 {
        let name = format!("config-{i}");
        let minimum = PER_SERVER * (SERVERS_PER_CONFIG + 1);
        broker
            .update_autoscale_config(
                &name,
                &|config: &AutoScaleConfig| {
                    Ok(AutoScaleConfig {
                        minimum_available_sessions: minimum,
                        ..config.clone()
                    })
                },
                None,
            )
            .await
            .unwrap();
        let changed = Instant::now();
        let (config, at) = tokio::time::timeout(Duration::from_secs(30), created_rx.recv())
            .await
            .expect("a create call")
            .unwrap();
        assert_eq!(config, name);
        delays.push(at.duration_since(changed));
        // Let the pass finish before the next change.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while created_rx.try_recv().is_ok() {}
    }
    let _ = stop_tx.send(true);
    task.await.unwrap();
    println!(
        "demand change to create call (loop running, {} configs): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        CONFIGS,
        median(delays.clone()).as_secs_f64() * 1e3,
        percentile(delays.clone(), 0.9).as_secs_f64() * 1e3,
        delays.iter().max().unwrap().as_secs_f64() * 1e3,
    );
}
