//! The reconcile loop, the bootstrap and the pool's single-use servers with a fake cloud
//! and a fake directory (the real ones are exercised end to end against moto and Samba in
//! `tests/autoscale_moto.rs`): the cases a real cloud or directory cannot be steered into on
//! demand, and orderings a test must control.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};

use super::BrokerAddresses;
use super::bootstrap::Bootstrapper;
use super::cloud::Cloud;
use super::directory::{Directory, DirectoryError};
use super::reconciler::{Reconciler, ReconcilerSettings};
use crate::broker::{Broker, BrokerConfig, BrokerError, ServerCheckin, now_ms};
use crate::checkin;
use crate::domain::autoscale::{AutoScaleConfig, StoredProviderConfig, VmProviderConfig};
use crate::domain::ldap::LdapConfig;
use crate::domain::provider::{ProviderError, Vm, VmSpec, VmState};
use crate::domain::session::SessionRequest;
use crate::domain::zone::RequestOrigin;
use crate::plugins::{PluginRuntime, Registry, RuntimeConfig, install_builtins};
use crate::store::Store;

/// A cloud in memory. Creates for a config with a gate wait for the test to open it.
#[derive(Default)]
struct FakeCloud {
    fail_create: AtomicBool,
    /// Creates answer a timeout; with `made`, after making the VM all the same.
    time_out_create: Mutex<Option<bool>>,
    /// VMs that refuse to be destroyed (termination protection).
    protected: Mutex<std::collections::HashSet<String>>,
    created: Mutex<Vec<VmSpec>>,
    vms: Mutex<Vec<Vm>>,
    /// Creates of these configs wait for a permit.
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Told the config of every create call as it starts.
    creating: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl FakeCloud {
    fn gate(&self, config: &str) -> Arc<Semaphore> {
        self.gates
            .lock()
            .unwrap()
            .entry(config.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }
}

impl Cloud for FakeCloud {
    async fn create(&self, _: &StoredProviderConfig, spec: VmSpec) -> Result<Vm, ProviderError> {
        let config = spec
            .tags
            .iter()
            .find(|(k, _)| k == "zonebroker:config")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if let Some(tx) = &*self.creating.lock().unwrap() {
            let _ = tx.send(config.clone());
        }
        let gate = self.gates.lock().unwrap().get(&config).cloned();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(ProviderError::Quota("no capacity in the zone".into()));
        }
        let vm = Vm {
            instance_id: format!("i-{}", spec.server_id),
            state: VmState::Running,
            private_address: None,
            public_address: None,
            tags: spec.tags.clone(),
        };
        let time_out = *self.time_out_create.lock().unwrap();
        if time_out != Some(false) {
            self.vms.lock().unwrap().push(vm.clone());
            self.created.lock().unwrap().push(spec);
        }
        match time_out {
            Some(_) => Err(ProviderError::Transient("RunInstances: timed out".into())),
            None => Ok(vm),
        }
    }
    async fn get(&self, _: &StoredProviderConfig, id: &str) -> Result<Vm, ProviderError> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .find(|vm| vm.instance_id == id)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(id.into()))
    }
    async fn destroy(&self, _: &StoredProviderConfig, id: &str) -> Result<(), ProviderError> {
        if self.protected.lock().unwrap().contains(id) {
            return Err(ProviderError::Other(format!(
                "OperationNotPermitted: the instance '{id}' may not be terminated"
            )));
        }
        self.vms.lock().unwrap().retain(|vm| vm.instance_id != id);
        Ok(())
    }
    async fn list(
        &self,
        _: &StoredProviderConfig,
        (name, value): (String, String),
    ) -> Result<Vec<Vm>, ProviderError> {
        Ok(self
            .vms
            .lock()
            .unwrap()
            .iter()
            .filter(|vm| vm.tag(&name) == Some(value.as_str()))
            .cloned()
            .collect())
    }
}

/// What the first create call finds already in the directory under the server's name.
#[derive(Clone, Copy, PartialEq)]
enum Preexisting {
    Nothing,
    /// Somebody else's computer.
    Foreign,
    /// Ours: an earlier pass created it and crashed before recording it.
    Ours,
}

/// Objects by DN: (description, password).
struct FakeDirectory {
    objects: Mutex<HashMap<String, (String, String)>>,
    preexisting: Mutex<Preexisting>,
    unreachable: AtomicBool,
}

impl FakeDirectory {
    fn new(preexisting: Preexisting) -> Self {
        FakeDirectory {
            objects: Mutex::default(),
            preexisting: Mutex::new(preexisting),
            unreachable: AtomicBool::new(false),
        }
    }
}

impl Directory for FakeDirectory {
    async fn create_computer(
        &self,
        _: &LdapConfig,
        ou_dn: &str,
        hostname: &str,
        password: &str,
        description: &str,
    ) -> Result<String, DirectoryError> {
        let dn = format!("CN={hostname},{ou_dn}");
        let mut objects = self.objects.lock().unwrap();
        let preexisting =
            std::mem::replace(&mut *self.preexisting.lock().unwrap(), Preexisting::Nothing);
        match preexisting {
            Preexisting::Foreign => {
                objects.insert(dn.clone(), ("a person's PC".into(), "theirs".into()));
            }
            Preexisting::Ours => {
                objects.insert(dn.clone(), (description.into(), "lost in the crash".into()));
            }
            Preexisting::Nothing => {}
        }
        if objects.contains_key(&dn) {
            return Err(DirectoryError::AlreadyExists { dn });
        }
        objects.insert(dn.clone(), (description.into(), password.into()));
        Ok(dn)
    }
    async fn description(
        &self,
        _: &LdapConfig,
        dn: &str,
    ) -> Result<Option<String>, DirectoryError> {
        Ok(self.objects.lock().unwrap().get(dn).map(|(d, _)| d.clone()))
    }
    async fn set_password(
        &self,
        ldap: &LdapConfig,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(DirectoryError::Unreachable {
                url: ldap.url.clone(),
                message: "connection refused".into(),
            });
        }
        match self.objects.lock().unwrap().get_mut(dn) {
            Some(object) => {
                object.1 = password.into();
                Ok(())
            }
            None => Err(DirectoryError::NoSuchObject {
                dn: dn.into(),
                message: String::new(),
            }),
        }
    }
    async fn delete_computer(
        &self,
        _: &LdapConfig,
        dn: &str,
        _: bool,
    ) -> Result<(), DirectoryError> {
        self.objects.lock().unwrap().remove(dn);
        Ok(())
    }
}

const OU: &str = "OU=VDI,DC=example,DC=test";

async fn broker(dir: &tempfile::TempDir) -> Arc<Broker> {
    let store = Store::open(dir.path()).unwrap();
    let registry = Registry::new(Arc::new(
        PluginRuntime::new(RuntimeConfig::default()).unwrap(),
    ));
    install_builtins(&registry, &crate::plugin_cache::StoredArtifacts(&store)).unwrap();
    let broker =
        Arc::new(Broker::open(store, Arc::new(registry), BrokerConfig::default()).unwrap());
    broker
        .create_pool(serde_json::from_value(json!({"name": "pool"})).unwrap())
        .await
        .unwrap();
    let settings = [
        ("region", "us-east-1"),
        ("access_key_id", "AKID"),
        ("secret_access_key", "secret"),
        ("ami_id", "ami-12345678"),
        ("instance_type", "t3.small"),
        ("endpoint", "http://127.0.0.1:9"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
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
    broker
        .create_ldap_config(
            serde_json::from_value(json!({
                "name": "corp", "url": "ldaps://dc1.example.test", "bind_dn": "joiner",
                "bind_password": "pw", "search_base": "DC=example,DC=test",
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    broker
}

/// A Windows config that creates AD computer records, one server.
async fn windows_config(broker: &Broker) {
    broker
        .create_autoscale_config(
            serde_json::from_value(json!({
                "name": "win", "pool": "pool", "zone": "default", "connection_type": "rdp",
                "credential_type": "sso", "minimum_available_sessions": 1,
                "max_sessions_per_server": 1, "vm_provider_config": "cloud", "os": "windows",
                "startup_script": "join {domain} {server_hostname} {ad_join_credential|ps}",
                "create_ad_computer_record": true, "ldap_config": "corp", "ad_computer_ou_dn": OU,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// A Linux config: `minimum` free slots, `per_server` slots per server.
async fn linux_config(broker: &Broker, name: &str, minimum: u32, per_server: u32, reusable: bool) {
    broker
        .create_autoscale_config(
            serde_json::from_value(json!({
                "name": name, "pool": "pool", "zone": "default", "connection_type": "rdp",
                "credential_type": "static", "connection_username": "kasm",
                "connection_password": "p@ss w0rd", "reusable": reusable,
                "minimum_available_sessions": minimum, "max_sessions_per_server": per_server,
                "vm_provider_config": "cloud", "os": "linux",
                "startup_script": "#!/bin/bash\nPASS={connection_password|sh}\ncurl -H 'Authorization: Bearer {checkin_jwt}' https://{upstream_auth_address}/\n",
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

fn settings() -> ReconcilerSettings {
    ReconcilerSettings {
        interval: Duration::from_secs(3600),
        addresses: BrokerAddresses {
            default: "127.0.0.1:8080".into(),
            ..BrokerAddresses::default()
        },
        config_lease: Duration::from_secs(10),
    }
}

struct Setup {
    broker: Arc<Broker>,
    cloud: Arc<FakeCloud>,
    directory: Arc<FakeDirectory>,
    reconciler: Arc<Reconciler<FakeCloud, FakeDirectory>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new(preexisting: Preexisting) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(&dir).await;
        let cloud = Arc::new(FakeCloud::default());
        let directory = Arc::new(FakeDirectory::new(preexisting));
        let reconciler =
            Reconciler::new(broker.clone(), cloud.clone(), directory.clone(), settings());
        Setup {
            broker,
            cloud,
            directory,
            reconciler,
            _dir: dir,
        }
    }

    fn bootstrapper(&self) -> Bootstrapper<FakeDirectory> {
        Bootstrapper::new(
            self.broker.clone(),
            self.directory.clone(),
            settings().addresses,
        )
    }

    /// The check-in token in the script of the VM created for `server`.
    fn token_of(&self, server: uuid::Uuid) -> String {
        let created = self.cloud.created.lock().unwrap();
        let script = &created
            .iter()
            .find(|spec| spec.server_id == server.to_string())
            .expect("a VM for the server")
            .startup_script;
        script
            .split("Bearer ")
            .nth(1)
            .unwrap()
            .split(['\'', ' ', '"'])
            .next()
            .unwrap()
            .to_string()
    }
}

async fn one_windows_pass(preexisting: Preexisting, fail_create: bool) -> Setup {
    let setup = Setup::new(preexisting).await;
    windows_config(&setup.broker).await;
    setup.cloud.fail_create.store(fail_create, Ordering::SeqCst);
    setup.reconciler.pass().await;
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_comes_first_and_its_password_only_goes_to_the_bootstrap() {
    let setup = one_windows_pass(Preexisting::Nothing, false).await;
    let server = &setup.broker.servers()[0];
    let dn = server.ad_computer_dn.clone().expect("recorded");
    let description = setup.directory.objects.lock().unwrap()[&dn].0.clone();
    assert_eq!(description, format!("zonebroker server {}", server.id));
    let script = setup.cloud.created.lock().unwrap()[0]
        .startup_script
        .clone();
    assert!(
        script.ends_with(&format!(
            "join example.test {} (Get-ZbVariable 'ad_join_credential')",
            server.hostname
        )),
        "{script}"
    );
    let first_password = setup.directory.objects.lock().unwrap()[&dn].1.clone();
    assert!(
        !script.contains(&first_password),
        "no password in the script"
    );

    // The bootstrap sets a fresh password on the object and answers it, once.
    let token = setup.token_of(server.id);
    let variables = setup.bootstrapper().bootstrap(&token).await.unwrap();
    let get = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let password = get("ad_join_credential");
    assert_eq!(password.len(), 32);
    assert_ne!(password, first_password);
    assert_eq!(setup.directory.objects.lock().unwrap()[&dn].1, password);
    assert_eq!(get("domain"), "example.test");
    assert_eq!(get("server_hostname"), server.hostname);
    assert!(matches!(
        setup.bootstrapper().bootstrap(&token).await,
        Err(BrokerError::Unauthorized(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_the_directory_cannot_serve_changes_nothing_and_can_be_retried() {
    let setup = one_windows_pass(Preexisting::Nothing, false).await;
    let server = setup.broker.servers()[0].clone();
    let token = setup.token_of(server.id);
    setup.directory.unreachable.store(true, Ordering::SeqCst);
    assert!(matches!(
        setup.bootstrapper().bootstrap(&token).await,
        Err(BrokerError::Unavailable { .. })
    ));
    // Not fetched: no check-in yet.
    let checkin = || ServerCheckin {
        address: "10.0.0.7".into(),
        port: None,
    };
    assert!(matches!(
        setup.broker.server_checkin(&token, checkin()).await,
        Err(BrokerError::Conflict {
            code: "bootstrap_required",
            ..
        })
    ));
    setup.directory.unreachable.store(false, Ordering::SeqCst);
    setup.bootstrapper().bootstrap(&token).await.unwrap();
    setup
        .broker
        .server_checkin(&token, checkin())
        .await
        .unwrap();
    // Spent by the check-in: neither step takes the token again.
    assert!(matches!(
        setup.broker.server_checkin(&token, checkin()).await,
        Err(BrokerError::Unauthorized(_))
    ));
    assert!(matches!(
        setup.bootstrapper().bootstrap(&token).await,
        Err(BrokerError::Unauthorized(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_another_computer_is_not_overwritten_the_server_is_renamed() {
    let setup = one_windows_pass(Preexisting::Foreign, false).await;
    let server = &setup.broker.servers()[0];
    let objects = setup.directory.objects.lock().unwrap();
    assert_eq!(objects.len(), 2, "theirs and ours");
    let theirs = objects
        .values()
        .find(|(d, _)| d == "a person's PC")
        .unwrap();
    assert_eq!(theirs.1, "theirs", "untouched");
    let dn = server.ad_computer_dn.clone().unwrap();
    assert_eq!(
        dn,
        format!("CN={},{OU}", server.hostname),
        "under its new name"
    );
    assert_eq!(
        setup.cloud.created.lock().unwrap()[0].hostname,
        server.hostname
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_a_crash_left_unrecorded_is_adopted_and_gets_its_password_at_bootstrap() {
    let setup = one_windows_pass(Preexisting::Ours, false).await;
    let server = setup.broker.servers()[0].clone();
    let dn = server.ad_computer_dn.clone().unwrap();
    assert_eq!(setup.directory.objects.lock().unwrap().len(), 1);
    assert_eq!(dn, format!("CN={},{OU}", server.hostname), "same name");
    let token = setup.token_of(server.id);
    let variables = setup.bootstrapper().bootstrap(&token).await.unwrap();
    let password = &setup.directory.objects.lock().unwrap()[&dn].1;
    assert_ne!(password, "lost in the crash");
    assert!(variables.contains(&("ad_join_credential".to_string(), password.clone())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_fails_to_create_leaves_no_object_behind() {
    let setup = one_windows_pass(Preexisting::Nothing, true).await;
    assert!(setup.cloud.created.lock().unwrap().is_empty());
    assert!(setup.directory.objects.lock().unwrap().is_empty());
    let server = &setup.broker.servers()[0];
    assert_eq!(server.ad_computer_dn, None);
    assert!(server.instance_id.is_none());
    let status = setup.broker.autoscale_config("win").unwrap().status;
    assert!(status.last_error.unwrap().starts_with("create-vm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_hold_the_check_in_token_and_no_secret() {
    let setup = Setup::new(Preexisting::Nothing).await;
    linux_config(&setup.broker, "linux", 1, 1, true).await;
    setup.reconciler.pass().await;
    let server = setup.broker.servers()[0].clone();
    let script = setup.cloud.created.lock().unwrap()[0]
        .startup_script
        .clone();
    assert!(
        !script.contains("p@ss") && !script.contains("w0rd"),
        "{script}"
    );
    assert!(script.contains("PASS=\"$(zb_variable 'connection_password')\""));
    let token = setup.token_of(server.id);
    assert!(checkin::verify(setup.broker.store().checkin_key(), &token, now_ms() / 1000).is_ok());
    let variables = setup.bootstrapper().bootstrap(&token).await.unwrap();
    assert!(variables.contains(&("connection_password".into(), "p@ss w0rd".into())));
    assert!(
        variables.contains(&("upstream_auth_address".into(), "proxy".into())),
        "the zone's default"
    );
    assert!(!variables.iter().any(|(name, _)| name == "checkin_jwt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_whose_creates_hang_does_not_hold_up_another() {
    let setup = Setup::new(Preexisting::Nothing).await;
    let (creating_tx, mut creating) = mpsc::unbounded_channel();
    *setup.cloud.creating.lock().unwrap() = Some(creating_tx);
    let slow_gate = setup.cloud.gate("slow");
    let (stop_tx, stop) = watch::channel(false);
    let task = setup.reconciler.clone().spawn(stop);

    // The slow config's create call starts, and hangs until the test releases it.
    let mut next_create = async || {
        tokio::time::timeout(Duration::from_secs(10), creating.recv())
            .await
            .expect("a create call")
            .unwrap()
    };
    linux_config(&setup.broker, "slow", 1, 1, true).await;
    assert_eq!(next_create().await, "slow");
    // Meanwhile the other config's demand appears: it is served while "slow" hangs.
    linux_config(&setup.broker, "fast", 1, 1, true).await;
    assert_eq!(
        next_create().await,
        "fast",
        "not held up by the hanging create"
    );
    let fast_has_its_vm = || {
        setup
            .broker
            .servers()
            .iter()
            .any(|s| s.config.as_deref() == Some("fast") && s.instance_id.is_some())
    };
    while !fast_has_its_vm() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let slow = |s: &crate::broker::ServerView| s.config.as_deref() == Some("slow");
    assert!(
        setup
            .broker
            .servers()
            .iter()
            .filter(|s| slow(s))
            .all(|s| s.instance_id.is_none()),
        "the slow create is still in flight"
    );
    assert_eq!(slow_gate.available_permits(), 0);

    // Released, the slow config completes; then the loop stops cleanly.
    slow_gate.add_permits(1);
    while !setup
        .broker
        .servers()
        .iter()
        .any(|s| slow(s) && s.instance_id.is_some())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(setup.cloud.created.lock().unwrap().len(), 2);
}

/// A running server of `config`: its VM is created, fetches its variables and checks in.
async fn running_server(setup: &Setup) -> uuid::Uuid {
    setup.reconciler.pass().await;
    let server = setup.broker.servers()[0].clone();
    let token = setup.token_of(server.id);
    setup.bootstrapper().bootstrap(&token).await.unwrap();
    let checkin = ServerCheckin {
        address: "10.0.0.7".into(),
        port: None,
    };
    setup.broker.server_checkin(&token, checkin).await.unwrap();
    server.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_server_takes_no_session_after_one_ended_even_from_an_older_snapshot() {
    let setup = Setup::new(Preexisting::Nothing).await;
    linux_config(&setup.broker, "single", 3, 3, false).await;
    let server = running_server(&setup).await;
    // A strategy that takes its time (a few hundred milliseconds): placements hold their
    // snapshot while a session ends.
    let slow = setup
        .broker
        .registry()
        .runtime()
        .load(&zonebroker_test_support::fixture("slow_ascending"))
        .unwrap();
    setup
        .broker
        .registry()
        .activate("slow-ascending", Arc::new(slow), false)
        .unwrap();
    setup
        .broker
        .update_zone(
            "default",
            serde_json::from_value(json!({"load_balance_strategy": "slow-ascending"})).unwrap(),
        )
        .await
        .unwrap();
    setup
        .broker
        .create_workspace(
            serde_json::from_value(json!({"name": "desktop", "type": "pool", "pool": "pool"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let origin = RequestOrigin::from_host_header("broker.example").unwrap();
    let request = |user: &str| SessionRequest {
        image: None,
        workspace: Some("desktop".into()),
        user: user.into(),
    };
    let first = setup
        .broker
        .request_session("default", &origin, request("first"))
        .await
        .unwrap();
    assert_eq!(first.agent, server);

    // Placements start (each ranks on a snapshot with two free slots); while they rank,
    // the first session ends and spends the server.
    let placements: Vec<_> = (0..3)
        .map(|i| {
            let broker = setup.broker.clone();
            let origin = origin.clone();
            let request = request(&format!("user{i}"));
            tokio::spawn(async move { broker.request_session("default", &origin, request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    setup.broker.delete_session(first.id).await.unwrap();
    let mut placed = 1;
    for placement in placements {
        if let Ok(session) = placement.await.unwrap() {
            assert_eq!(session.agent, server);
            placed += 1;
        }
    }
    // Before the first session ended the server had two free slots; after, none. So it
    // ran at most its three slots' worth of sessions in all.
    assert!(
        placed <= 3,
        "{placed} sessions on a three-slot single-use server"
    );
    let view = setup.broker.server(server).unwrap();
    assert!(view.spent);
    // And from now on, none at all.
    assert!(
        setup
            .broker
            .request_session("default", &origin, request("late"))
            .await
            .is_err()
    );
}

fn vm(id: &str, tags: &[(&str, &str)]) -> Vm {
    Vm {
        instance_id: id.into(),
        state: VmState::Running,
        private_address: None,
        public_address: None,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_installations_vms_are_ever_destroyed() {
    let setup = Setup::new(Preexisting::Nothing).await;
    linux_config(&setup.broker, "linux", 0, 1, true).await;
    let ours = setup.broker.store().installation_id().to_string();
    let stranger = "7d0c3a52-0000-4000-8000-000000000000";
    setup.cloud.vms.lock().unwrap().extend([
        // Another broker's, same config name.
        vm(
            "i-theirs",
            &[
                ("zonebroker:installation", "another-installation"),
                ("zonebroker:config", "linux"),
                ("zonebroker:server-id", stranger),
            ],
        ),
        // Hand-made, with a forged config tag.
        vm(
            "i-forged",
            &[
                ("zonebroker:config", "linux"),
                ("zonebroker:server-id", stranger),
            ],
        ),
        // Ours, that no record knows: an orphan.
        vm(
            "i-orphan",
            &[
                ("zonebroker:installation", &ours),
                ("zonebroker:config", "linux"),
                ("zonebroker:server-id", stranger),
            ],
        ),
        // Ours, of a config that no longer exists.
        vm(
            "i-leftover",
            &[
                ("zonebroker:installation", &ours),
                ("zonebroker:config", "deleted"),
            ],
        ),
    ]);
    let report = setup.reconciler.pass().await;
    assert_eq!(report.orphans_destroyed, 2, "{report:?}");
    let left: Vec<String> = setup
        .cloud
        .vms
        .lock()
        .unwrap()
        .iter()
        .map(|vm| vm.instance_id.clone())
        .collect();
    assert_eq!(left, ["i-theirs", "i-forged"]);
    let status = setup.broker.autoscale_config("linux").unwrap().status;
    assert_eq!(status.unmanaged_vms.len(), 1, "{status:?}");
    assert_eq!(status.unmanaged_vms[0].instance_id, "i-forged");
    assert_eq!(
        status.unmanaged_vms[0].problem,
        crate::broker::VmProblem::NotOurs
    );
    assert_eq!(status.last_error, None);
    // A later pass that does not list by the config tag keeps reporting it.
    setup.reconciler.pass().await;
    let status = setup.broker.autoscale_config("linux").unwrap().status;
    assert_eq!(status.unmanaged_vms.len(), 1, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_vm_vanished_is_lost_its_sessions_end_and_it_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&dir).await;
    linux_config(&broker, "linux", 2, 2, true).await;
    let cloud = Arc::new(FakeCloud::default());
    let directory = Arc::new(FakeDirectory::new(Preexisting::Nothing));
    let settings = ReconcilerSettings {
        interval: Duration::from_millis(10),
        ..settings()
    };
    let setup = Setup {
        reconciler: Reconciler::new(broker.clone(), cloud.clone(), directory.clone(), settings),
        broker,
        cloud,
        directory,
        _dir: dir,
    };
    let server = running_server(&setup).await;
    setup
        .broker
        .create_workspace(
            serde_json::from_value(json!({"name": "desktop", "type": "pool", "pool": "pool"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let origin = RequestOrigin::from_host_header("broker.example").unwrap();
    let session = setup
        .broker
        .request_session(
            "default",
            &origin,
            SessionRequest {
                image: None,
                workspace: Some("desktop".into()),
                user: "ada".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(session.agent, server);

    // The VM disappears behind the broker's back (past the listing grace period).
    setup.cloud.vms.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = setup.reconciler.pass().await;
    assert_eq!(
        (report.lost, report.destroyed, report.created),
        (1, 1, 1),
        "{report:?}"
    );
    assert!(
        setup.broker.session(session.id).await.is_err(),
        "its session ended"
    );
    let servers = setup.broker.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_ne!(servers[0].id, server, "a replacement");
    assert_eq!(
        servers[0].status,
        crate::domain::autoscale::ServerStatus::Provisioning
    );
    let metrics = setup.broker.metrics().render();
    assert!(
        metrics.contains(
            r#"zonebroker_autoscale_vms_destroyed_total{config="linux",reason="lost"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_from_before_installation_tags_are_adopted_by_their_servers_record() {
    let setup = Setup::new(Preexisting::Nothing).await;
    linux_config(&setup.broker, "linux", 2, 1, true).await;
    // Two records written by an older zonebroker (no installation tag on their VMs): one
    // whose create call's answer a crash lost, one that knows its VM.
    let mut old = Vec::new();
    // On sled this process holds every lease, at epoch 1.
    let fence = crate::store::Fence {
        config: "linux".into(),
        epoch: 1,
    };
    for _ in 0..2 {
        let (server, _) = setup.broker.record_new_server(&fence, 600).await.unwrap();
        setup
            .broker
            .update_server(&fence, server.id, |s| s.installation_tagged = false)
            .await
            .unwrap();
        old.push(server.id);
    }
    setup
        .broker
        .update_server(&fence, old[1], |s| s.instance_id = Some("i-known".into()))
        .await
        .unwrap();
    let legacy = |id: &str, server: uuid::Uuid| {
        vm(
            id,
            &[
                ("zonebroker:config", "linux"),
                ("zonebroker:server-id", &server.to_string()),
            ],
        )
    };
    setup
        .cloud
        .vms
        .lock()
        .unwrap()
        .extend([legacy("i-lost-answer", old[0]), legacy("i-known", old[1])]);
    let report = setup.reconciler.pass().await;
    assert_eq!(
        (
            report.adopted,
            report.created,
            report.orphans_destroyed,
            report.lost
        ),
        (1, 0, 0, 0),
        "{report:?}"
    );
    let server = setup.broker.server(old[0]).unwrap();
    assert_eq!(server.instance_id.as_deref(), Some("i-lost-answer"));
    assert_eq!(
        setup.cloud.vms.lock().unwrap().len(),
        2,
        "neither destroyed"
    );
    let status = setup.broker.autoscale_config("linux").unwrap().status;
    assert!(status.unmanaged_vms.is_empty(), "{status:?}");
}

/// A setup whose reconciler ticks every 10 ms (so the listing grace is 30 ms); the loop is
/// not spawned, the test runs the passes.
async fn quick_setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&dir).await;
    let cloud = Arc::new(FakeCloud::default());
    let directory = Arc::new(FakeDirectory::new(Preexisting::Nothing));
    let settings = ReconcilerSettings {
        interval: Duration::from_millis(10),
        ..settings()
    };
    Setup {
        reconciler: Reconciler::new(broker.clone(), cloud.clone(), directory.clone(), settings),
        broker,
        cloud,
        directory,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_may_have_made_a_vm_holds_its_server_until_a_listing_settles_it() {
    // The create call times out, but the VM was made: adopted once listed, never made twice.
    let setup = quick_setup().await;
    linux_config(&setup.broker, "made", 1, 1, true).await;
    *setup.cloud.time_out_create.lock().unwrap() = Some(true);
    setup.reconciler.pass().await;
    let server = setup.broker.servers()[0].clone();
    assert!(server.instance_id.is_none());
    assert!(matches!(
        setup.broker.delete_autoscale_config("made").await,
        Err(BrokerError::Conflict { .. })
    ));
    *setup.cloud.time_out_create.lock().unwrap() = None;
    // (Past the failure's back-off of 2 s, and the listing's grace period.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = setup.reconciler.pass().await;
    assert_eq!((report.adopted, report.created), (1, 0), "{report:?}");
    assert_eq!(setup.cloud.vms.lock().unwrap().len(), 1);

    // The create call times out and made nothing: once a listing past the grace period shows
    // no VM with the server's id, the config can go with its record.
    let setup = quick_setup().await;
    linux_config(&setup.broker, "none", 1, 1, true).await;
    *setup.cloud.time_out_create.lock().unwrap() = Some(false);
    setup.reconciler.pass().await;
    setup
        .broker
        .update_autoscale_config(
            "none",
            &|config: &AutoScaleConfig| {
                Ok(AutoScaleConfig {
                    enabled: false,
                    ..config.clone()
                })
            },
            None,
        )
        .await
        .unwrap();
    let refused = setup.broker.delete_autoscale_config("none").await;
    match refused {
        Err(BrokerError::Conflict { message, .. }) => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    setup.reconciler.pass().await;
    setup.broker.delete_autoscale_config("none").await.unwrap();
    assert!(setup.broker.servers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_destroyed_is_shown_and_retried_without_backing_off() {
    let setup = quick_setup().await;
    linux_config(&setup.broker, "linux", 1, 1, true).await;
    let server = running_server(&setup).await;
    let instance = setup.broker.server(server).unwrap().instance_id.unwrap();
    setup
        .cloud
        .protected
        .lock()
        .unwrap()
        .insert(instance.clone());
    setup.broker.remove_server(server, false).await.unwrap();
    let report = setup.reconciler.pass().await;
    assert_eq!(report.created, 1, "the replacement is made all the same");
    let status = setup.broker.autoscale_config("linux").unwrap().status;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("destroy-vm"),
        "{status:?}"
    );
    assert_eq!(
        (status.backoff_until_ms, status.consecutive_failures),
        (None, 0),
        "no back-off"
    );
    assert_eq!(status.unmanaged_vms.len(), 1);
    assert_eq!(
        status.unmanaged_vms[0].problem,
        crate::broker::VmProblem::DestroyFailed
    );
    // Retried at once, and gone once the provider lets it go.
    setup.cloud.protected.lock().unwrap().clear();
    let report = setup.reconciler.pass().await;
    assert_eq!(report.destroyed, 1, "{report:?}");
    let status = setup.broker.autoscale_config("linux").unwrap().status;
    assert_eq!((status.last_error, status.unmanaged_vms.len()), (None, 0));
}
