//! The reconcile loop's directory steps with a fake cloud and a fake directory (the real
//! ones are exercised end to end against moto and Samba in `tests/autoscale_moto.rs`): the
//! cases a real directory cannot be steered into on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::cloud::Cloud;
use super::directory::{Directory, DirectoryError};
use super::reconciler::{Reconciler, ReconcilerSettings};
use crate::broker::{Broker, BrokerConfig};
use crate::domain::autoscale::{StoredProviderConfig, VmProviderConfig};
use crate::domain::ldap::LdapConfig;
use crate::domain::provider::{ProviderError, Vm, VmSpec, VmState};
use crate::plugins::{PluginRuntime, Registry, RuntimeConfig, install_builtins};
use crate::store::Store;

#[derive(Default)]
struct FakeCloud {
    fail_create: AtomicBool,
    created: Mutex<Vec<VmSpec>>,
}

impl Cloud for FakeCloud {
    async fn create(&self, _: &StoredProviderConfig, spec: VmSpec) -> Result<Vm, ProviderError> {
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(ProviderError::Quota("no capacity in the zone".into()));
        }
        let vm = Vm {
            instance_id: format!("i-{}", spec.server_id),
            state: VmState::Pending,
            private_address: None,
            public_address: None,
            tags: spec.tags.clone(),
        };
        self.created.lock().unwrap().push(spec);
        Ok(vm)
    }
    async fn destroy(&self, _: &StoredProviderConfig, _: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn list(
        &self,
        _: &StoredProviderConfig,
        _: (String, String),
    ) -> Result<Vec<Vm>, ProviderError> {
        Ok(Vec::new())
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
}

impl FakeDirectory {
    fn new(preexisting: Preexisting) -> Self {
        FakeDirectory {
            objects: Mutex::default(),
            preexisting: Mutex::new(preexisting),
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
        _: &LdapConfig,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
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
    install_builtins(&registry, &store).unwrap();
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
    broker
}

async fn one_pass(
    preexisting: Preexisting,
    fail_create: bool,
) -> (
    Arc<Broker>,
    Arc<FakeCloud>,
    Arc<FakeDirectory>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&dir).await;
    let cloud = Arc::new(FakeCloud::default());
    cloud.fail_create.store(fail_create, Ordering::SeqCst);
    let directory = Arc::new(FakeDirectory::new(preexisting));
    let reconciler = Reconciler::new(
        broker.clone(),
        cloud.clone(),
        directory.clone(),
        ReconcilerSettings {
            interval: std::time::Duration::from_secs(3600),
            broker_addresses: Default::default(),
            default_broker_address: "127.0.0.1:8080".into(),
        },
    );
    reconciler.pass().await;
    (broker, cloud, directory, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_comes_first_and_its_password_only_goes_into_the_script() {
    let (broker, cloud, directory, _dir) = one_pass(Preexisting::Nothing, false).await;
    let server = &broker.servers()[0];
    let dn = server.ad_computer_dn.clone().expect("recorded");
    let objects = directory.objects.lock().unwrap();
    let (description, password) = &objects[&dn];
    assert_eq!(description, &format!("zonebroker server {}", server.id));
    let script = &cloud.created.lock().unwrap()[0].startup_script;
    assert_eq!(
        script,
        &format!("join example.test {} '{password}'", server.hostname)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_another_computer_is_not_overwritten_the_server_is_renamed() {
    let (broker, cloud, directory, _dir) = one_pass(Preexisting::Foreign, false).await;
    let server = &broker.servers()[0];
    let objects = directory.objects.lock().unwrap();
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
    assert_eq!(cloud.created.lock().unwrap()[0].hostname, server.hostname);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_a_crash_left_unrecorded_is_adopted_with_a_new_password() {
    let (broker, cloud, directory, _dir) = one_pass(Preexisting::Ours, false).await;
    let server = &broker.servers()[0];
    let objects = directory.objects.lock().unwrap();
    assert_eq!(objects.len(), 1);
    let dn = server.ad_computer_dn.clone().unwrap();
    assert_eq!(dn, format!("CN={},{OU}", server.hostname), "same name");
    let password = &objects[&dn].1;
    assert_ne!(password, "lost in the crash");
    assert!(
        cloud.created.lock().unwrap()[0]
            .startup_script
            .contains(password.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_fails_to_create_leaves_no_object_behind() {
    let (broker, cloud, directory, _dir) = one_pass(Preexisting::Nothing, true).await;
    assert!(cloud.created.lock().unwrap().is_empty());
    assert!(directory.objects.lock().unwrap().is_empty());
    let server = &broker.servers()[0];
    assert_eq!(server.ad_computer_dn, None);
    assert!(server.instance_id.is_none());
    let status = broker.autoscale_config("win").unwrap().status;
    assert!(status.last_error.unwrap().starts_with("create-vm"));
}
