//! The reconcile loop: for every AutoScale config, make the cloud match what the pool needs.
//!
//! One pass per tick (`--autoscale-interval`) and right after demand changes (the broker's
//! wake-up: a session placed or ended, a server checked in, a config saved). A pass runs
//! every config concurrently; each config's pass:
//! 1. lists the VMs the provider has with the config's tag: a VM whose server record lacks
//!    its instance id is adopted (the crash fell between the create call and recording its
//!    answer); a VM no record knows is destroyed (an orphan), and so is a second VM of a
//!    server that has one (a create that timed out but happened);
//! 2. plans with the pure [`plan`]: VMs to create, servers to destroy and why;
//! 3. destroys: closes the server to sessions atomically, marks it `destroying`, calls the
//!    provider, deletes its AD computer object, forgets the record; a failure leaves it
//!    `destroying` for the next pass and does not hold up the creates;
//! 4. creates: writes each server record (idempotency key, check-in token id) and commits
//!    it *before* the provider call, then provisions every `provisioning` server that has no
//!    instance yet: creates its AD computer object if the config asks (recorded first),
//!    renders its script and calls `create-vm`.
//!
//! **Architecture Invariant:** a VM is only ever created for a server record already on
//! disk, and the record's id travels with the VM as a tag; so a crash at any point neither
//! leaks a VM (the next pass destroys or adopts what carries our tag) nor duplicates one
//! (a record is provisioned again only if no VM carries its id). Passes never overlap.
//! A failing config backs off on its own; the others go on.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::checkin;
use super::cloud::Cloud;
use super::directory::{Directory, DirectoryError, LdapDirectory, random_password};
use crate::broker::{Broker, ConfigStatus, ServerEntry, now_ms};
use crate::domain::autoscale::{
    AdJoin, AutoScaleConfig, DestroyReason, Server, ServerStatus, StoredProviderConfig, hostname,
    plan, script_values,
};
use crate::domain::ldap::{LdapConfig, computer_dn, dns_domain};
use crate::domain::provider::{ProviderError, VmSpec};

/// The tag naming the AutoScale config a VM belongs to.
pub const TAG_CONFIG: &str = "zonebroker:config";
/// The tag naming the server record a VM was created for.
pub const TAG_SERVER: &str = "zonebroker:server-id";

/// The first back-off after a failure; it doubles with each failure in a row.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct ReconcilerSettings {
    /// Time between passes when nothing wakes the loop.
    pub interval: Duration,
    /// Where VMs reach the broker (`host:port`) by zone: `$request_host$` in the zone's
    /// `upstream_auth_address` stands for it in startup scripts.
    pub broker_addresses: BTreeMap<String, String>,
    /// The address for zones without a listener of their own.
    pub default_broker_address: String,
}

/// What one pass did, for logs, tests and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub configs: u32,
    pub created: u32,
    pub destroyed: u32,
    pub adopted: u32,
    pub orphans_destroyed: u32,
    pub failed_configs: u32,
}

/// A failed step of one config's pass.
struct Failure {
    call: &'static str,
    message: String,
}

/// A failed step `call`, from any error (a provider's, a directory's, ...).
fn failed<E: std::fmt::Display>(call: &'static str) -> impl FnOnce(E) -> Failure {
    move |error| Failure {
        call,
        message: error.to_string(),
    }
}

/// The reconcile loop over `broker`'s AutoScale configs, driving clouds through `C`.
pub struct Reconciler<C: Cloud, D: Directory = LdapDirectory> {
    broker: Arc<Broker>,
    cloud: Arc<C>,
    directory: Arc<D>,
    settings: ReconcilerSettings,
}

impl<C: Cloud, D: Directory> Reconciler<C, D> {
    pub fn new(
        broker: Arc<Broker>,
        cloud: Arc<C>,
        directory: Arc<D>,
        settings: ReconcilerSettings,
    ) -> Arc<Self> {
        Arc::new(Reconciler {
            broker,
            cloud,
            directory,
            settings,
        })
    }

    /// Run passes until `stop` turns true: a full pass every interval, and in between, as
    /// soon as the broker reports a demand change, a pass over the configs it names.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut next_full = tokio::time::Instant::now();
            loop {
                let names = if tokio::time::Instant::now() >= next_full {
                    next_full = tokio::time::Instant::now() + self.settings.interval;
                    self.broker.take_demand_changes();
                    self.broker.autoscale_config_names()
                } else {
                    self.broker.take_demand_changes().into_iter().collect()
                };
                let report = self.pass_over(names).await;
                if report.created + report.destroyed + report.adopted + report.orphans_destroyed > 0
                {
                    tracing::info!(?report, "autoscale pass");
                }
                tokio::select! {
                    () = tokio::time::sleep_until(next_full) => {}
                    () = self.broker.autoscale_wake().notified() => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
            tracing::debug!("reconcile loop stopped");
        })
    }

    /// One pass over every AutoScale config, concurrently.
    pub async fn pass(self: &Arc<Self>) -> PassReport {
        self.pass_over(self.broker.autoscale_config_names()).await
    }

    /// One pass over AutoScale configs `names`, concurrently.
    pub async fn pass_over(self: &Arc<Self>, names: Vec<String>) -> PassReport {
        let mut tasks = JoinSet::new();
        for name in names {
            let this = self.clone();
            let span = tracing::info_span!("autoscale_pass", config = name);
            tasks.spawn(async move { this.reconcile_config(&name).await }.instrument(span));
        }
        let mut report = PassReport::default();
        while let Some(joined) = tasks.join_next().await {
            report.configs += 1;
            match joined {
                Ok(config) => {
                    report.created += config.created;
                    report.destroyed += config.destroyed;
                    report.adopted += config.adopted;
                    report.orphans_destroyed += config.orphans_destroyed;
                    report.failed_configs += config.failed_configs;
                }
                Err(error) => {
                    report.failed_configs += 1;
                    tracing::error!("a config's pass panicked: {error}");
                }
            }
        }
        report
    }

    /// One config's pass; failures back off and show on the config and in the metrics.
    async fn reconcile_config(&self, name: &str) -> PassReport {
        let now = now_ms();
        let status = self.broker.config_status(name);
        if status.backoff_until_ms.is_some_and(|until| now < until) {
            return PassReport::default();
        }
        let mut report = PassReport::default();
        let outcome = self.reconcile_steps(name, now, &mut report).await;
        let metrics = self.broker.metrics();
        let status = match outcome {
            Ok(available) => ConfigStatus {
                available_sessions: available,
                ..ConfigStatus::default()
            },
            Err(failure) => {
                report.failed_configs = 1;
                metrics.provider_error(name, failure.call);
                let failures = status.consecutive_failures + 1;
                let backoff = BACKOFF_START
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(BACKOFF_MAX);
                tracing::warn!(
                    config = name,
                    call = failure.call,
                    failures,
                    backoff_s = backoff.as_secs(),
                    "autoscale pass failed: {}",
                    failure.message
                );
                ConfigStatus {
                    last_error: Some(format!("{}: {}", failure.call, failure.message)),
                    consecutive_failures: failures,
                    backoff_until_ms: Some(now + backoff.as_millis() as u64),
                    ..status
                }
            }
        };
        metrics.autoscale_pass(name, status.available_sessions, status.last_error.is_some());
        self.broker.set_config_status(name, status);
        report
    }

    /// The steps of one config's pass; answers the available sessions it planned with.
    async fn reconcile_steps(
        &self,
        name: &str,
        now: u64,
        report: &mut PassReport,
    ) -> Result<u32, Failure> {
        let Some(config) = self.broker.autoscale_config_stored(name) else {
            return Ok(0);
        };
        let provider = self
            .broker
            .stored_provider_config(&config.vm_provider_config)
            .ok_or_else(|| Failure {
                call: "config",
                message: format!("no VM provider config `{}`", config.vm_provider_config),
            })?;

        // 1. Adopt what a crash left unrecorded; remove what no record knows.
        let vms = self
            .cloud
            .list(&provider, (TAG_CONFIG.to_string(), name.to_string()))
            .await
            .map_err(failed("list-vms"))?;
        let servers = self.broker.servers_of(name);
        let known: HashSet<Uuid> = servers.iter().map(|e| e.server.id).collect();
        let mut adopted: HashSet<Uuid> = HashSet::new();
        for vm in vms.iter().filter(|vm| !vm.state.is_gone()) {
            let server_id = vm.tag(TAG_SERVER).and_then(|id| Uuid::parse_str(id).ok());
            match server_id.and_then(|id| servers.iter().find(|e| e.server.id == id)) {
                Some(entry)
                    if entry.server.instance_id.is_none() && adopted.insert(entry.server.id) =>
                {
                    let instance_id = vm.instance_id.clone();
                    self.broker
                        .update_server(entry.server.id, |s| s.instance_id = Some(instance_id))
                        .await
                        .map_err(store_failure)?;
                    report.adopted += 1;
                    tracing::info!(server = %entry.server.id, instance = vm.instance_id, "adopted a VM created before a restart");
                }
                Some(entry)
                    if entry.server.instance_id.as_deref() == Some(vm.instance_id.as_str()) => {}
                Some(entry) => {
                    // A second VM for one server (a create that timed out but happened).
                    tracing::warn!(server = %entry.server.id, instance = vm.instance_id, "destroying a duplicate VM of a server");
                    self.cloud
                        .destroy(&provider, &vm.instance_id)
                        .await
                        .or_else(ignore_not_found)
                        .map_err(failed("destroy-vm"))?;
                    self.broker.metrics().vm_destroyed(name, "duplicate");
                    report.orphans_destroyed += 1;
                }
                None => {
                    let reason = match server_id {
                        Some(id) if !known.contains(&id) => "no server record",
                        _ => "no server id tag",
                    };
                    tracing::warn!(instance = vm.instance_id, reason, "destroying an orphan VM");
                    self.cloud
                        .destroy(&provider, &vm.instance_id)
                        .await
                        .or_else(ignore_not_found)
                        .map_err(failed("destroy-vm"))?;
                    self.broker.metrics().vm_destroyed(name, "orphan");
                    report.orphans_destroyed += 1;
                }
            }
        }

        // 2. Plan.
        let servers = self.broker.servers_of(name);
        let states: Vec<_> = servers
            .iter()
            .map(|e| e.server.planner_state(e.sessions()))
            .collect();
        let effective = AutoScaleConfig {
            minimum_available_sessions: if config.enabled {
                config.minimum_available_sessions
            } else {
                0
            },
            ..config.clone()
        };
        let plan = plan(&effective, &states, now, provider.validated.max_instances);
        let creates = if config.enabled { plan.create } else { 0 };

        // 3. Destroy: what the plan says, and what an earlier pass could not finish.
        let mut reasons: BTreeMap<Uuid, DestroyReason> = BTreeMap::new();
        let mut destroy_failure = None;
        for (id, reason) in &plan.destroy {
            if self
                .broker
                .begin_destroy(*id)
                .await
                .map_err(store_failure)?
            {
                reasons.insert(*id, *reason);
            }
        }
        for entry in self.broker.servers_of(name) {
            if entry.server.status != ServerStatus::Destroying {
                continue;
            }
            let reason = reasons
                .get(&entry.server.id)
                .map_or("retry", |r| r.as_str());
            // A server that cannot be destroyed yet (recorded on it) must not hold up the
            // creates the pool needs: report the first failure after them.
            match self.destroy(&config, &provider, &entry, reason).await {
                Ok(()) => report.destroyed += 1,
                Err(failure) => {
                    destroy_failure.get_or_insert(failure);
                }
            }
        }

        // 4. Create: records first, durably; then the VMs of every record without one.
        let lifetime = config.provision_timeout;
        for _ in 0..creates {
            self.broker
                .record_new_server(name, lifetime)
                .await
                .map_err(store_failure)?;
        }
        for entry in self.broker.servers_of(name) {
            let server = &entry.server;
            // A disabled config creates nothing; its records without a VM time out.
            if config.enabled
                && server.status == ServerStatus::Provisioning
                && server.instance_id.is_none()
            {
                self.provision(&config, &provider, server, now).await?;
                report.created += 1;
            }
        }
        match destroy_failure {
            Some(failure) => Err(failure),
            None => Ok(plan.available),
        }
    }

    /// Destroy a server's VM, then its directory object, then forget it. A failure leaves
    /// it `destroying` (with what is left), for the next pass.
    async fn destroy(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        entry: &ServerEntry,
        reason: &str,
    ) -> Result<(), Failure> {
        let server = &entry.server;
        if let Some(instance_id) = &server.instance_id {
            let destroyed = self
                .cloud
                .destroy(provider, instance_id)
                .await
                .or_else(ignore_not_found);
            if let Err(error) = destroyed {
                self.record_error(server, &error.to_string()).await?;
                return Err(failed("destroy-vm")(error));
            }
        }
        let dn = match &server.ad_computer_dn {
            Some(dn) => Some(dn.clone()),
            None if config.create_ad_computer_record => {
                self.unrecorded_object(config, server).await
            }
            None => None,
        };
        if let Some(dn) = &dn {
            self.broker
                .update_server(server.id, |s| s.instance_id = None)
                .await
                .map_err(store_failure)?;
            let ldap = self.ldap_config_of(config, server)?;
            let deleted = self
                .directory
                .delete_computer(&ldap, dn, config.recursive_ad_cleanup)
                .await;
            if let Err(error) = deleted {
                self.record_error(server, &error.to_string()).await?;
                return Err(failed("ad-delete")(error));
            }
            tracing::info!(server = %server.id, dn, "AD computer object deleted");
        }
        self.broker
            .forget_server(server.id)
            .await
            .map_err(store_failure)?;
        if let Some(config) = &server.config {
            self.broker.metrics().vm_destroyed(config, reason);
        }
        tracing::info!(server = %server.id, hostname = server.hostname, instance = server.instance_id, reason, "server destroyed");
        Ok(())
    }

    async fn record_error(&self, server: &Server, message: &str) -> Result<(), Failure> {
        let message = message.to_string();
        self.broker
            .update_server(server.id, |s| s.last_error = Some(message))
            .await
            .map_err(store_failure)?;
        Ok(())
    }

    /// The LDAP config `server`'s object was made through (else the config's), password
    /// included.
    fn ldap_config_of(
        &self,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Result<LdapConfig, Failure> {
        let name = server
            .ad_ldap_config
            .as_deref()
            .or(config.ldap_config.as_deref())
            .unwrap_or_default();
        self.broker.ldap_config_stored(name).ok_or_else(|| Failure {
            call: "ad",
            message: format!("no LDAP config `{name}`"),
        })
    }

    /// The object a crash may have left between creating it and recording it on `server`:
    /// the computer of its host name in the config's OU, if its description names the
    /// server. Best effort: a directory that cannot be asked is logged, not waited for.
    async fn unrecorded_object(&self, config: &AutoScaleConfig, server: &Server) -> Option<String> {
        let ldap = self.ldap_config(config).ok()?;
        let dn = computer_dn(&server.hostname, config.ad_computer_ou_dn.as_deref()?);
        match self.directory.description(&ldap, &dn).await {
            Ok(Some(description)) if description == object_owner(server) => Some(dn),
            Ok(_) | Err(DirectoryError::NoSuchObject { .. }) => None,
            Err(error) => {
                tracing::warn!(server = %server.id, dn, "cannot check for a computer object left by a crash: {error}");
                None
            }
        }
    }

    /// The config's LDAP config, password included.
    fn ldap_config(&self, config: &AutoScaleConfig) -> Result<LdapConfig, Failure> {
        let name = config.ldap_config.as_deref().unwrap_or_default();
        self.broker.ldap_config_stored(name).ok_or_else(|| Failure {
            call: "ad",
            message: format!("no LDAP config `{name}`"),
        })
    }

    /// Before its VM: the server's AD computer object, with a fresh single-use password.
    /// Creates it (under another host name if the name is taken by an object that is not
    /// ours), or, if a crash lost the password of one already made, sets a new one. Answers
    /// the server as updated and how its script joins the domain.
    async fn prepare_ad_account(
        &self,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Result<(Server, AdJoin), Failure> {
        let ldap = self.ldap_config_of(config, server)?;
        let ou = config.ad_computer_ou_dn.clone().unwrap_or_default();
        let join = AdJoin {
            password: random_password(),
            domain: dns_domain(&ou).unwrap_or_default(),
        };
        if let Some(dn) = &server.ad_computer_dn {
            self.directory
                .set_password(&ldap, dn, &join.password)
                .await
                .map_err(failed("ad-set-password"))?;
            return Ok((server.clone(), join));
        }
        let owner = object_owner(server);
        let mut server = server.clone();
        let mut attempt = 0;
        let dn = loop {
            attempt += 1;
            let created = self
                .directory
                .create_computer(&ldap, &ou, &server.hostname, &join.password, &owner)
                .await;
            match created {
                Ok(dn) => break dn,
                Err(DirectoryError::AlreadyExists { dn }) => {
                    // The name may be taken elsewhere in the domain (`sAMAccountName`),
                    // with no object at this DN: that is somebody else's too.
                    let description = match self.directory.description(&ldap, &dn).await {
                        Ok(description) => description,
                        Err(DirectoryError::NoSuchObject { .. }) => None,
                        Err(error) => return Err(failed("ad-create")(error)),
                    };
                    if description.as_deref() == Some(owner.as_str()) {
                        // Made by an earlier pass that crashed before recording it.
                        self.directory
                            .set_password(&ldap, &dn, &join.password)
                            .await
                            .map_err(failed("ad-set-password"))?;
                        break dn;
                    }
                    if attempt >= 4 {
                        return Err(failed("ad-create")(DirectoryError::AlreadyExists { dn }));
                    }
                    let renamed = hostname(&config.server_name_prefix, Uuid::new_v4());
                    tracing::warn!(server = %server.id, taken = dn, renamed, "the host name is taken in the directory; renaming the server");
                    server = self
                        .broker
                        .update_server(server.id, |s| s.hostname = renamed)
                        .await
                        .map_err(store_failure)?
                        .unwrap_or(server);
                }
                Err(error) => return Err(failed("ad-create")(error)),
            }
        };
        tracing::info!(server = %server.id, dn, "AD computer object created");
        let recorded = Some(dn);
        let through = Some(ldap.name.clone());
        server = self
            .broker
            .update_server(server.id, |s| {
                s.ad_computer_dn = recorded;
                s.ad_ldap_config = through;
            })
            .await
            .map_err(store_failure)?
            .unwrap_or(server);
        Ok((server, join))
    }

    /// Render `server`'s startup script and ask the provider for its VM.
    async fn provision(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        server: &Server,
        now: u64,
    ) -> Result<(), Failure> {
        let jti = server.checkin_token_id.clone().unwrap_or_default();
        let deadline_ms = server.created_at_ms + config.provision_timeout * 1000;
        let token = checkin::issue(
            self.broker.store().checkin_key(),
            &server.id.to_string(),
            &jti,
            now / 1000,
            deadline_ms.saturating_sub(now).div_ceil(1000).max(1),
        );
        let (server, ad_join) = if config.create_ad_computer_record {
            let (server, join) = self.prepare_ad_account(config, server).await?;
            (server, Some(join))
        } else {
            (server.clone(), None)
        };
        let server = &server;
        let upstream = self.upstream_auth_address(&config.zone);
        let variables = script_values(config, server, &token, &upstream, ad_join.as_ref());
        let registry = self.broker.registry().clone();
        let (generator, os, template) = (
            config.script_generator.clone(),
            config.os,
            config.startup_script.clone(),
        );
        let rendered = tokio::task::spawn_blocking(move || {
            registry.render(&generator, os, &template, &variables)
        })
        .await
        .map_err(failed("render"))?;
        let script = match rendered {
            Ok(Ok(script)) => script,
            Ok(Err(template)) => return Err(failed("render")(template)),
            Err(error) => return Err(failed("render")(error)),
        };
        let spec = VmSpec {
            server_id: server.id.to_string(),
            hostname: server.hostname.clone(),
            idempotency_key: server.idempotency_key.clone(),
            os: config.os,
            startup_script: script,
            tags: vec![
                (TAG_SERVER.to_string(), server.id.to_string()),
                (TAG_CONFIG.to_string(), config.name.clone()),
                ("zonebroker:pool".to_string(), config.pool.clone()),
            ],
        };
        match self.cloud.create(provider, spec).await {
            Ok(vm) => {
                let instance_id = vm.instance_id.clone();
                self.broker
                    .update_server(server.id, |s| {
                        s.instance_id = Some(instance_id);
                        s.last_error = None;
                    })
                    .await
                    .map_err(store_failure)?;
                self.broker.metrics().vm_created(&config.name);
                tracing::info!(server = %server.id, hostname = server.hostname, instance = vm.instance_id, "VM created");
                Ok(())
            }
            Err(error) => {
                self.record_error(server, &error.to_string()).await?;
                // Surely no VM: no directory object either. (After a timeout or an unknown
                // failure the VM may exist: the next listing adopts it, and it needs its
                // object.)
                let surely_no_vm = matches!(
                    error,
                    ProviderError::InvalidConfig { .. }
                        | ProviderError::Auth(_)
                        | ProviderError::Quota(_)
                        | ProviderError::NotFound(_)
                );
                if let Some(dn) = server.ad_computer_dn.as_ref().filter(|_| surely_no_vm) {
                    let ldap = self.ldap_config_of(config, server)?;
                    match self.directory.delete_computer(&ldap, dn, false).await {
                        Ok(()) => {
                            self.broker
                                .update_server(server.id, |s| {
                                    s.ad_computer_dn = None;
                                    s.ad_ldap_config = None;
                                })
                                .await
                                .map_err(store_failure)?;
                        }
                        Err(ad) => {
                            tracing::warn!(server = %server.id, dn, "the AD object of a VM that failed to create stays until the server is destroyed: {ad}")
                        }
                    }
                }
                Err(failed("create-vm")(error))
            }
        }
    }

    /// The zone's `upstream_auth_address`, `$request_host$` standing for the broker's
    /// address in that zone.
    fn upstream_auth_address(&self, zone: &str) -> String {
        let address = self
            .settings
            .broker_addresses
            .get(zone)
            .unwrap_or(&self.settings.default_broker_address);
        match self.broker.zone(zone) {
            Ok(zone) => zone
                .upstream_auth_address
                .replace(crate::domain::zone::REQUEST_HOST, address),
            Err(_) => address.clone(),
        }
    }
}

/// The `description` of `server`'s computer object: how an object is known to be ours.
fn object_owner(server: &Server) -> String {
    format!("zonebroker server {}", server.id)
}

fn ignore_not_found(error: ProviderError) -> Result<(), ProviderError> {
    match error {
        ProviderError::NotFound(_) => Ok(()),
        other => Err(other),
    }
}

fn store_failure(error: crate::broker::BrokerError) -> Failure {
    failed("store")(error)
}
