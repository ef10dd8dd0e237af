//! The reconcile loop: for every AutoScale config, make the cloud match what the pool needs.
//!
//! Each config has its own pass (see [`PassScheduler`]): on every tick
//! (`--autoscale-interval`) and right after its demand changes (the broker's wake-up: a
//! session placed or ended, a server checked in or removed, a config saved). A config's
//! pass:
//! 1. lists the VMs of this installation (the `zonebroker:installation` tag) and keeps those
//!    of the config; now and then (and while servers from before installation tags exist)
//!    also those carrying the config's tag, to find its older VMs and to report VMs that
//!    carry the tag without being ours, which it never touches;
//! 2. adopts a VM whose server record lacks its instance id (the crash fell between the
//!    create call and recording its answer); destroys a VM of ours that no record knows (an
//!    orphan), or a second VM of a server (a create that timed out but happened); a VM the
//!    provider refuses to destroy is reported and the pass goes on;
//! 3. marks `lost` a server whose VM is gone (missing from the listing and confirmed by
//!    `get-vm`): its sessions end and it is cleaned up and replaced;
//! 4. destroys what the pure [`plan`] says (closing each server to sessions atomically first),
//!    and what an earlier pass could not finish; a failure leaves the server `destroying`;
//! 5. plans again over what is left and creates: each server record (idempotency key,
//!    check-in token id) is committed *before* the provider call; then every `provisioning`
//!    server without an instance gets its AD computer object (recorded first) if the config
//!    asks, its script and its VM.
//!
//! **Architecture Invariant:** a VM is only ever created for a server record already on
//! disk, and the record's id and this installation's id travel with the VM as tags; so a
//! crash at any point neither leaks a VM (the next pass destroys or adopts what carries our
//! tags) nor duplicates one (a record is provisioned again only if no VM carries its id),
//! and a VM without this installation's tag is never destroyed. At most one pass per config
//! runs at a time; a failing config backs off on its own, and a slow one delays no other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::addresses::BrokerAddresses;
use super::cloud::Cloud;
use super::directory::{Directory, DirectoryError, LdapDirectory, random_password};
use super::schedule::{PassKind, PassScheduler};
use crate::broker::{Broker, ConfigStatus, ServerEntry, UnmanagedVm, VmProblem, now_ms};
use crate::checkin;
use crate::domain::autoscale::{
    AutoScaleConfig, DestroyReason, Server, ServerStatus, StoredProviderConfig, hostname, plan,
    script_values,
};
use crate::domain::ldap::{LdapConfig, computer_dn};
use crate::domain::provider::{ProviderError, Vm, VmSpec, VmState};
use crate::domain::text::cap;

/// The tag naming the installation (broker) a VM belongs to.
pub const TAG_INSTALLATION: &str = "zonebroker:installation";
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
    /// Where VMs reach the broker, by zone.
    pub addresses: BrokerAddresses,
}

impl ReconcilerSettings {
    /// How often a config also lists the VMs carrying its tag (see the module's step 1).
    fn audit_interval(&self) -> Duration {
        self.interval * 6
    }

    /// How long a new VM may be missing from the provider's listing before its server is
    /// taken for lost: clouds list new VMs late (EC2 is eventually consistent).
    fn vanish_grace(&self) -> Duration {
        self.interval * 3
    }
}

/// What one pass did, for logs, tests and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub configs: u32,
    pub created: u32,
    pub destroyed: u32,
    pub adopted: u32,
    pub orphans_destroyed: u32,
    pub lost: u32,
    pub failed_configs: u32,
}

impl PassReport {
    fn add(&mut self, other: &PassReport) {
        self.configs += 1;
        self.created += other.created;
        self.destroyed += other.destroyed;
        self.adopted += other.adopted;
        self.orphans_destroyed += other.orphans_destroyed;
        self.lost += other.lost;
        self.failed_configs += other.failed_configs;
    }

    fn did_something(&self) -> bool {
        self.created + self.destroyed + self.adopted + self.orphans_destroyed + self.lost > 0
    }
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

/// What one config's pass found besides its outcome.
#[derive(Default)]
struct Findings {
    report: PassReport,
    unmanaged: Vec<UnmanagedVm>,
    /// Whether it listed by the config's tag (else the `not_ours` VMs of the last audit
    /// still stand).
    audited: bool,
    /// Whether it listed the cloud at all (else the VMs the last listing could not destroy
    /// are still to report).
    listed: bool,
    /// The first server it could not destroy: shown on the config and retried every pass,
    /// but no reason to back off (the pool's creates must go on).
    stuck: Option<Failure>,
}

/// One listing of this installation's VMs through a provider config, shared by the passes
/// of every config that uses it.
type Listing = Arc<tokio::sync::OnceCell<Arc<InstallationVms>>>;

/// This installation's live VMs listed through one provider config, by their config tag
/// (indexed once, so each config's pass costs its own VMs, not the installation's).
struct InstallationVms {
    by_config: HashMap<String, Vec<Vm>>,
    /// Ours, but tagged with no config that exists (deleted with a VM it did not know of):
    /// taken, to be destroyed, by the first pass that sees them.
    leftovers: Mutex<Vec<Vm>>,
}

impl InstallationVms {
    fn index(listed: Vec<Vm>, configs: &HashSet<String>) -> InstallationVms {
        let mut by_config: HashMap<String, Vec<Vm>> = HashMap::new();
        let mut leftovers = Vec::new();
        for vm in listed.into_iter().filter(|vm| !vm.state.is_gone()) {
            match vm.tag(TAG_CONFIG).filter(|c| configs.contains(*c)) {
                Some(config) => by_config.entry(config.to_string()).or_default().push(vm),
                None => leftovers.push(vm),
            }
        }
        InstallationVms {
            by_config,
            leftovers: Mutex::new(leftovers),
        }
    }
}

/// The reconcile loop over `broker`'s AutoScale configs, driving clouds through `C`.
pub struct Reconciler<C: Cloud, D: Directory = LdapDirectory> {
    broker: Arc<Broker>,
    cloud: Arc<C>,
    directory: Arc<D>,
    settings: ReconcilerSettings,
    /// When each config last listed by its config tag. A std `Mutex`: held for a lookup or
    /// an insert, never across an `.await`.
    last_audit: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The configs whose cloud has answered a listing since start: before that, not even a
    /// demand pass creates anything (a wrong endpoint shows as `list-vms`, with no record
    /// made). A std `Mutex`, never held across an `.await`.
    listed: Mutex<HashSet<String>>,
    /// The latest listing of this installation's VMs per provider config, and when it was
    /// asked for: the configs on one provider share one `list-vms` while it is fresh and no
    /// pass has destroyed a VM through that provider since (so a pass of N configs lists
    /// once, not N times). A std `Mutex`, never held across an `.await`.
    listings: Mutex<HashMap<String, (tokio::time::Instant, Listing)>>,
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
            last_audit: Mutex::default(),
            listed: Mutex::default(),
            listings: Mutex::default(),
        })
    }

    /// Run passes until `stop` turns true: every config's pass on every tick, and a
    /// config's pass as soon as the broker reports a demand change for it; each config's
    /// passes on their own task, one at a time (see [`PassScheduler`]). On stop, the passes
    /// in flight finish.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut scheduler = PassScheduler::default();
            let mut passes: JoinSet<PassReport> = JoinSet::new();
            let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
            let mut next_full = tokio::time::Instant::now();
            loop {
                let (due, kind): (Vec<String>, _) = if tokio::time::Instant::now() >= next_full {
                    next_full = tokio::time::Instant::now() + self.settings.interval;
                    self.broker.take_demand_changes();
                    (self.broker.autoscale_config_names(), PassKind::Full)
                } else {
                    let changed = self.broker.take_demand_changes();
                    (changed.into_iter().collect(), PassKind::Demand)
                };
                for name in due {
                    if scheduler.request(&name, kind) {
                        self.start_pass(&mut passes, &mut names, name, kind);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep_until(next_full) => {}
                    () = self.broker.autoscale_wake().notified() => {}
                    Some(joined) = passes.join_next_with_id() => {
                        let (id, report) = match joined {
                            Ok((id, report)) => (id, report),
                            Err(error) => {
                                tracing::error!("a config's pass panicked: {error}");
                                (error.id(), PassReport::default())
                            }
                        };
                        let name = names.remove(&id).unwrap_or_default();
                        if report.did_something() {
                            tracing::info!(config = name, ?report, "autoscale pass");
                        }
                        if let Some(kind) = scheduler.finished(&name) {
                            self.start_pass(&mut passes, &mut names, name, kind);
                        }
                    }
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
            while passes.join_next().await.is_some() {}
            tracing::debug!("reconcile loop stopped");
        })
    }

    fn start_pass(
        self: &Arc<Self>,
        passes: &mut JoinSet<PassReport>,
        names: &mut HashMap<tokio::task::Id, String>,
        name: String,
        kind: PassKind,
    ) {
        let this = self.clone();
        let span = tracing::info_span!("autoscale_pass", config = name, kind = kind.as_str());
        let config = name.clone();
        let handle = passes
            .spawn(async move { this.reconcile_config(&config, kind).await }.instrument(span));
        names.insert(handle.id(), name);
    }

    /// One full pass over every AutoScale config, concurrently.
    pub async fn pass(self: &Arc<Self>) -> PassReport {
        self.pass_over(self.broker.autoscale_config_names(), PassKind::Full)
            .await
    }

    /// One pass of `kind` over AutoScale configs `names`, concurrently; answers once all are
    /// done.
    pub async fn pass_over(self: &Arc<Self>, names: Vec<String>, kind: PassKind) -> PassReport {
        let mut tasks = JoinSet::new();
        for name in names {
            let this = self.clone();
            let span = tracing::info_span!("autoscale_pass", config = name, kind = kind.as_str());
            tasks.spawn(async move { this.reconcile_config(&name, kind).await }.instrument(span));
        }
        let mut report = PassReport::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(config) => report.add(&config),
                Err(error) => {
                    report.configs += 1;
                    report.failed_configs += 1;
                    tracing::error!("a config's pass panicked: {error}");
                }
            }
        }
        report
    }

    /// One config's pass; failures back off and show on the config and in the metrics.
    async fn reconcile_config(&self, name: &str, kind: PassKind) -> PassReport {
        let now = now_ms();
        let status = self.broker.config_status(name);
        if status.backoff_until_ms.is_some_and(|until| now < until) {
            return PassReport::default();
        }
        let mut findings = Findings::default();
        let outcome = self.reconcile_steps(name, kind, now, &mut findings).await;
        let metrics = self.broker.metrics();
        // What this pass did not look at again still stands: VMs not ours (when it did not
        // audit), and VMs of ours that could not be destroyed (when it did not list).
        let mut unmanaged = findings.unmanaged;
        let servers: HashSet<String> = self
            .broker
            .servers_of(name)
            .into_iter()
            .filter_map(|e| e.server.instance_id)
            .collect();
        let carried: Vec<UnmanagedVm> = status
            .unmanaged_vms
            .iter()
            .filter(|vm| match vm.problem {
                VmProblem::NotOurs => !findings.audited,
                VmProblem::DestroyFailed => !findings.listed && !servers.contains(&vm.instance_id),
            })
            .filter(|vm| !unmanaged.iter().any(|u| u.instance_id == vm.instance_id))
            .cloned()
            .collect();
        unmanaged.extend(carried);
        let mut report = findings.report;
        let status = match outcome {
            Ok(available) => {
                if let Some(stuck) = &findings.stuck {
                    report.failed_configs = 1;
                    metrics.provider_error(name, stuck.call);
                    tracing::warn!(
                        config = name,
                        call = stuck.call,
                        "a server cannot be destroyed yet; retried next pass: {}",
                        stuck.message
                    );
                }
                ConfigStatus {
                    available_sessions: available,
                    unmanaged_vms: unmanaged,
                    last_error: findings
                        .stuck
                        .map(|stuck| format!("{}: {}", stuck.call, cap(stuck.message))),
                    ..ConfigStatus::default()
                }
            }
            Err(failure) => {
                report.failed_configs = 1;
                metrics.provider_error(name, failure.call);
                let failures = status.consecutive_failures + 1;
                let backoff = BACKOFF_START
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(BACKOFF_MAX);
                let message = cap(failure.message.clone());
                tracing::warn!(
                    config = name,
                    call = failure.call,
                    failures,
                    backoff_s = backoff.as_secs(),
                    "autoscale pass failed: {message}"
                );
                ConfigStatus {
                    last_error: Some(format!("{}: {message}", failure.call)),
                    consecutive_failures: failures,
                    backoff_until_ms: Some(now + backoff.as_millis() as u64),
                    unmanaged_vms: unmanaged,
                    ..status
                }
            }
        };
        metrics.autoscale_pass(
            name,
            kind.as_str(),
            status.available_sessions,
            status.last_error.is_some(),
            status.unmanaged_vms.len(),
        );
        self.broker.set_config_status(name, status);
        report
    }

    /// The steps of one config's pass; answers the available sessions it planned with.
    async fn reconcile_steps(
        &self,
        name: &str,
        kind: PassKind,
        now: u64,
        findings: &mut Findings,
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

        // Steps 1 to 3 need the cloud's listing: full passes, a config's first pass since
        // start, and any pass that must provision again a record whose earlier create may
        // have made a VM (which must be adopted, not made twice). A demand pass of a healthy
        // config goes straight to planning.
        let retries = self.broker.servers_of(name).iter().any(|e| {
            e.server.status == ServerStatus::Provisioning && e.server.instance_id.is_none()
        });
        let listed_before = self
            .listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name);
        if kind == PassKind::Full || retries || !listed_before {
            // 1. The config's VMs.
            let vms = self.list_vms(&config, &provider, kind, findings).await?;
            findings.listed = true;
            if !listed_before {
                self.listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string());
            }

            // 2. Adopt what a crash left unrecorded; remove what no record knows.
            self.adopt_and_sweep(&config, &provider, &vms, findings)
                .await?;

            // 3. Servers whose VM is gone.
            self.find_lost(&config, &provider, &vms, now, findings)
                .await?;
        }

        // 4. Destroy: what the plan says, and what an earlier pass could not finish.
        let effective = AutoScaleConfig {
            minimum_available_sessions: if config.enabled {
                config.minimum_available_sessions
            } else {
                0
            },
            ..config.clone()
        };
        let max_instances = provider.validated.max_instances;
        let planned = plan(&effective, &self.planner_states(name), now, max_instances);
        let mut reasons: BTreeMap<Uuid, DestroyReason> = BTreeMap::new();
        let mut destroy_failure = None;
        for (id, reason) in &planned.destroy {
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
            let reason = match entry.server.status {
                ServerStatus::Destroying => reasons
                    .get(&entry.server.id)
                    .map_or("retry", |r| r.as_str()),
                ServerStatus::Lost => "lost",
                _ => continue,
            };
            // A server that cannot be destroyed yet (recorded on it) must not hold up the
            // creates the pool needs: report the first failure after them.
            match self.destroy(&config, &provider, &entry, reason).await {
                Ok(()) => findings.report.destroyed += 1,
                Err(failure) => {
                    if failure.call == "destroy-vm"
                        && let Some(instance_id) = &entry.server.instance_id
                    {
                        findings.unmanaged.push(UnmanagedVm {
                            instance_id: instance_id.clone(),
                            problem: VmProblem::DestroyFailed,
                            message: cap(failure.message.clone()),
                        });
                    }
                    destroy_failure.get_or_insert(failure);
                }
            }
        }

        // 5. Create, by a plan over what is left: records first, durably; then the VMs of
        // every record without one. Servers that could not be destroyed still hold their
        // VMs, so they count against `max_instances`.
        let planned = plan(&effective, &self.planner_states(name), now, max_instances);
        let creates = if config.enabled { planned.create } else { 0 };
        for _ in 0..creates {
            self.broker
                .record_new_server(name, config.provision_timeout)
                .await
                .map_err(store_failure)?;
        }
        for entry in self.broker.servers_of(name) {
            let server = &entry.server;
            // A disabled config creates nothing; its records without a VM time out.
            // (A create whose outcome is unknown waits until a listing settles it.)
            if config.enabled
                && server.status == ServerStatus::Provisioning
                && server.instance_id.is_none()
                && server.uncertain_create_at_ms.is_none()
            {
                self.provision(&config, &provider, server, now).await?;
                findings.report.created += 1;
            }
        }
        findings.stuck = destroy_failure;
        Ok(planned.available)
    }

    fn planner_states(&self, config: &str) -> Vec<crate::domain::autoscale::ServerState> {
        self.broker
            .servers_of(config)
            .iter()
            .map(|e| e.server.planner_state(e.sessions()))
            .collect()
    }

    /// The live VMs of `config`: this installation's that carry the config's tag and,
    /// when an audit is due, those of its servers from before installation tags. VMs with
    /// the config's tag and no installation tag that no such server names are reported,
    /// never touched; VMs of another installation are not looked at.
    async fn list_vms(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        kind: PassKind,
        findings: &mut Findings,
    ) -> Result<Vec<Vm>, Failure> {
        let ours = self.installation_vms(provider).await?;
        let mut vms = ours
            .by_config
            .get(&config.name)
            .cloned()
            .unwrap_or_default();
        let leftovers =
            std::mem::take(&mut *ours.leftovers.lock().unwrap_or_else(|p| p.into_inner()));
        for vm in leftovers {
            // Ours, of a config that no longer exists: nothing will ever use it.
            tracing::warn!(
                instance = vm.instance_id,
                config = vm.tag(TAG_CONFIG),
                "destroying a VM of this installation whose config is gone"
            );
            self.destroy_unknown(config, provider, &vm, "orphan", findings)
                .await;
        }

        let servers = self.broker.servers_of(&config.name);
        let legacy: HashSet<Uuid> = servers
            .iter()
            .filter(|e| !e.server.installation_tagged)
            .map(|e| e.server.id)
            .collect();
        // VMs from before installation tags are only found this way: list for them on every
        // pass that lists at all while their servers live.
        let audit = !legacy.is_empty() || (kind == PassKind::Full && self.audit_due(&config.name));
        if !audit {
            return Ok(vms);
        }
        let tagged = self
            .cloud
            .list(provider, (TAG_CONFIG.to_string(), config.name.clone()))
            .await
            .map_err(failed("list-vms"))?;
        findings.audited = true;
        let previous = self.broker.config_status(&config.name).unmanaged_vms;
        for vm in tagged.into_iter().filter(|vm| !vm.state.is_gone()) {
            if vm.tag(TAG_INSTALLATION).is_some() {
                continue; // ours (listed above), or another installation's
            }
            let server = vm.tag(TAG_SERVER).and_then(|id| Uuid::parse_str(id).ok());
            if server.is_some_and(|id| legacy.contains(&id)) {
                vms.push(vm); // a VM of ours from before installation tags
                continue;
            }
            if !previous.iter().any(|p| p.instance_id == vm.instance_id) {
                tracing::warn!(
                    instance = vm.instance_id,
                    "a VM carries this config's tag but not this installation's, and no server of ours names it: left alone"
                );
            }
            findings.unmanaged.push(UnmanagedVm {
                instance_id: vm.instance_id.clone(),
                problem: VmProblem::NotOurs,
                message: format!(
                    "carries `{TAG_CONFIG}={}` but not this installation's `{TAG_INSTALLATION}` tag, and no server of the config names it: never touched",
                    config.name
                ),
            });
        }
        Ok(vms)
    }

    /// This installation's VMs through `provider`: a listing another config's pass asked
    /// for moments ago (see [`Reconciler::listings`]), or a new one.
    async fn installation_vms(
        &self,
        provider: &StoredProviderConfig,
    ) -> Result<Arc<InstallationVms>, Failure> {
        let fresh_for = self.settings.interval.min(Duration::from_secs(1));
        let now = tokio::time::Instant::now();
        let listing = {
            let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
            let entry = listings
                .entry(provider.config.name.clone())
                .or_insert_with(|| (now, Listing::default()));
            if now.duration_since(entry.0) >= fresh_for {
                *entry = (now, Listing::default());
            }
            entry.1.clone()
        };
        let installation = self.broker.store().installation_id().to_string();
        let listed = listing
            .get_or_try_init(|| async {
                let listed = self
                    .cloud
                    .list(provider, (TAG_INSTALLATION.to_string(), installation))
                    .await?;
                let configs: HashSet<String> =
                    self.broker.autoscale_config_names().into_iter().collect();
                Ok::<_, ProviderError>(Arc::new(InstallationVms::index(listed, &configs)))
            })
            .await;
        match listed {
            Ok(vms) => Ok(vms.clone()),
            Err(error) => {
                self.forget_listing(provider);
                Err(failed("list-vms")(error))
            }
        }
    }

    /// A VM was destroyed through `provider`: its listing is stale.
    fn forget_listing(&self, provider: &StoredProviderConfig) {
        self.listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&provider.config.name);
    }

    /// Whether `config`'s full pass lists by its config tag now: on its first, and every
    /// audit interval.
    fn audit_due(&self, config: &str) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.last_audit.lock().unwrap_or_else(|p| p.into_inner());
        let due = last
            .get(config)
            .is_none_or(|at| now.duration_since(*at) >= self.settings.audit_interval());
        if due {
            last.insert(config.to_string(), now);
        }
        due
    }

    /// Adopt the VM of a record that lacks its instance id; destroy a second VM of a
    /// server, and a VM no record knows.
    async fn adopt_and_sweep(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        vms: &[Vm],
        findings: &mut Findings,
    ) -> Result<(), Failure> {
        let servers = self.broker.servers_of(&config.name);
        let mut adopted: HashSet<Uuid> = HashSet::new();
        for vm in vms {
            let server_id = vm.tag(TAG_SERVER).and_then(|id| Uuid::parse_str(id).ok());
            match server_id.and_then(|id| servers.iter().find(|e| e.server.id == id)) {
                Some(entry)
                    if entry.server.instance_id.is_none() && adopted.insert(entry.server.id) =>
                {
                    let instance_id = vm.instance_id.clone();
                    self.broker
                        .update_server(entry.server.id, |s| {
                            s.instance_id = Some(instance_id);
                            s.vm_created_at_ms = Some(now_ms());
                            s.uncertain_create_at_ms = None;
                        })
                        .await
                        .map_err(store_failure)?;
                    findings.report.adopted += 1;
                    tracing::info!(server = %entry.server.id, instance = vm.instance_id, "adopted a VM created before a restart");
                }
                Some(entry)
                    if entry.server.instance_id.as_deref() == Some(vm.instance_id.as_str()) => {}
                Some(entry) => {
                    // A second VM for one server (a create that timed out but happened).
                    tracing::warn!(server = %entry.server.id, instance = vm.instance_id, "destroying a duplicate VM of a server");
                    self.destroy_unknown(config, provider, vm, "duplicate", findings)
                        .await;
                }
                None => {
                    tracing::warn!(
                        instance = vm.instance_id,
                        server = vm.tag(TAG_SERVER),
                        "destroying an orphan VM: no server record names it"
                    );
                    self.destroy_unknown(config, provider, vm, "orphan", findings)
                        .await;
                }
            }
        }
        // A create whose outcome was unknown, long enough ago for its VM to be listed, and
        // no VM carries the server's id: it made none.
        let grace_ms = self.settings.vanish_grace().as_millis() as u64;
        let now = now_ms();
        for entry in &servers {
            let server = &entry.server;
            let settled = server
                .uncertain_create_at_ms
                .is_some_and(|at| now.saturating_sub(at) >= grace_ms);
            if settled && server.instance_id.is_none() && !adopted.contains(&server.id) {
                self.broker
                    .update_server(server.id, |s| s.uncertain_create_at_ms = None)
                    .await
                    .map_err(store_failure)?;
            }
        }
        Ok(())
    }

    /// Destroy a VM of ours that no server holds. A refusal (termination protection, ...)
    /// is reported on the config and does not stop the pass.
    async fn destroy_unknown(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        vm: &Vm,
        reason: &'static str,
        findings: &mut Findings,
    ) {
        let destroyed = self.cloud.destroy(provider, &vm.instance_id).await;
        self.forget_listing(provider);
        match destroyed.or_else(ignore_not_found) {
            Ok(()) => {
                self.broker.metrics().vm_destroyed(&config.name, reason);
                findings.report.orphans_destroyed += 1;
            }
            Err(error) => {
                tracing::warn!(
                    instance = vm.instance_id,
                    reason,
                    "cannot destroy a VM: {error}"
                );
                findings.unmanaged.push(UnmanagedVm {
                    instance_id: vm.instance_id.clone(),
                    problem: VmProblem::DestroyFailed,
                    message: cap(format!("{reason}, but destroy-vm failed: {error}")),
                });
            }
        }
    }

    /// Mark `lost` every server of `config` whose VM is gone: missing from `vms` (or
    /// listed stopped), and confirmed with `get-vm`. A VM younger than the grace period is
    /// left for the next pass; an unanswered `get-vm` decides nothing.
    async fn find_lost(
        &self,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        vms: &[Vm],
        now: u64,
        findings: &mut Findings,
    ) -> Result<(), Failure> {
        let listed: HashMap<&str, VmState> = vms
            .iter()
            .map(|vm| (vm.instance_id.as_str(), vm.state))
            .collect();
        let grace_ms = self.settings.vanish_grace().as_millis() as u64;
        for entry in self.broker.servers_of(&config.name) {
            let server = &entry.server;
            let Some(instance_id) = &server.instance_id else {
                continue;
            };
            let watched = matches!(
                server.status,
                ServerStatus::Provisioning | ServerStatus::Running | ServerStatus::Draining
            );
            let young = server
                .vm_created_at_ms
                .is_some_and(|at| now.saturating_sub(at) < grace_ms);
            let suspect = match listed.get(instance_id.as_str()) {
                Some(state) => matches!(state, VmState::Stopped | VmState::Stopping),
                None => true,
            };
            if !watched || young || !suspect {
                continue;
            }
            let why = match self.cloud.get(provider, instance_id).await {
                Err(ProviderError::NotFound(_)) => "its VM no longer exists",
                Ok(vm) if vm.state.is_gone() => "its VM was terminated",
                Ok(vm) if matches!(vm.state, VmState::Stopped | VmState::Stopping) => {
                    "its VM was stopped"
                }
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(server = %server.id, instance = instance_id, "its VM is not listed and get-vm failed; deciding next pass: {error}");
                    continue;
                }
            };
            let ended = self
                .broker
                .mark_lost(server.id, why)
                .await
                .map_err(store_failure)?;
            findings.report.lost += 1;
            tracing::warn!(server = %server.id, hostname = server.hostname, instance = instance_id, sessions_ended = ended, "server lost: {why}");
        }
        Ok(())
    }

    /// Destroy a server's VM, then its directory object, then forget it. A failure leaves
    /// it `destroying` (or `lost`, with what is left), for the next pass.
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
            self.forget_listing(provider);
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
        let message = cap(message.to_string());
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
        let ldap = self.ldap_config_of(config, server).ok()?;
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

    /// Before its VM: the server's AD computer object. Created (under another host name if
    /// the name is taken by an object that is not ours) with a password nobody keeps: the
    /// VM's bootstrap sets the one it joins with. An object of ours that a crash left
    /// unrecorded is adopted. Answers the server as updated.
    async fn prepare_ad_account(
        &self,
        config: &AutoScaleConfig,
        server: &Server,
    ) -> Result<Server, Failure> {
        if server.ad_computer_dn.is_some() {
            return Ok(server.clone());
        }
        let ldap = self.ldap_config_of(config, server)?;
        let ou = config.ad_computer_ou_dn.clone().unwrap_or_default();
        let owner = object_owner(server);
        let mut server = server.clone();
        let mut attempt = 0;
        let dn = loop {
            attempt += 1;
            let created = self
                .directory
                .create_computer(&ldap, &ou, &server.hostname, &random_password(), &owner)
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
        let (recorded, through) = (Some(dn.clone()), Some(ldap.name.clone()));
        match self
            .broker
            .update_server(server.id, |s| {
                s.ad_computer_dn = recorded;
                s.ad_ldap_config = through;
            })
            .await
            .map_err(store_failure)?
        {
            Some(server) => Ok(server),
            None => {
                // The server was dropped meanwhile (its config deleted): so is its object.
                if let Err(error) = self.directory.delete_computer(&ldap, &dn, false).await {
                    tracing::warn!(
                        dn,
                        "cannot delete the object of a server deleted meanwhile: {error}"
                    );
                }
                Err(Failure {
                    call: "ad-create",
                    message: format!("server {} was deleted meanwhile", server.id),
                })
            }
        }
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
        let server = if config.create_ad_computer_record {
            self.prepare_ad_account(config, server).await?
        } else {
            server.clone()
        };
        let server = &server;
        let upstream = self
            .settings
            .addresses
            .upstream_auth_address(&self.broker, &config.zone);
        let variables = script_values(config, server, &token, &upstream);
        let rendered = self
            .broker
            .registry()
            .render(
                &config.script_generator,
                config.os,
                config.startup_script.clone(),
                variables,
            )
            .await;
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
                (
                    TAG_INSTALLATION.to_string(),
                    self.broker.store().installation_id().to_string(),
                ),
                (TAG_SERVER.to_string(), server.id.to_string()),
                (TAG_CONFIG.to_string(), config.name.clone()),
                ("zonebroker:pool".to_string(), config.pool.clone()),
            ],
        };
        // (A listing that misses the new VM is harmless: its server has the instance id,
        // and a young VM is never taken for lost.)
        match self.cloud.create(provider, spec).await {
            Ok(vm) => {
                let instance_id = vm.instance_id.clone();
                let recorded = self
                    .broker
                    .update_server(server.id, |s| {
                        s.instance_id = Some(instance_id);
                        s.vm_created_at_ms = Some(now_ms());
                        s.uncertain_create_at_ms = None;
                        s.last_error = None;
                    })
                    .await
                    .map_err(store_failure)?;
                if recorded.is_none() {
                    // The server was dropped while its VM was made (its config deleted):
                    // nothing would ever use or destroy the VM.
                    tracing::warn!(server = %server.id, instance = vm.instance_id, "the server was deleted while its VM was created: destroying the VM");
                    self.cloud
                        .destroy(provider, &vm.instance_id)
                        .await
                        .or_else(ignore_not_found)
                        .map_err(failed("destroy-vm"))?;
                    return Ok(());
                }
                self.broker.metrics().vm_created(&config.name);
                tracing::info!(server = %server.id, hostname = server.hostname, instance = vm.instance_id, "VM created");
                Ok(())
            }
            Err(error) => {
                // Surely no VM: no directory object either. (After a timeout or an unknown
                // failure the VM may exist: the next listing adopts it, and it needs its
                // object; until then the server may hold a VM.)
                let surely_no_vm = matches!(
                    error,
                    ProviderError::InvalidConfig { .. }
                        | ProviderError::Auth(_)
                        | ProviderError::Quota(_)
                        | ProviderError::NotFound(_)
                );
                let message = cap(error.to_string());
                self.broker
                    .update_server(server.id, |s| {
                        s.last_error = Some(message);
                        if !surely_no_vm {
                            s.uncertain_create_at_ms = Some(now_ms());
                        }
                    })
                    .await
                    .map_err(store_failure)?;
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
