//! One config's pass: list its VMs, adopt what a crash left unrecorded, sweep orphans and
//! duplicates, find lost servers, then destroy and create by the plan (steps 1 to 5 of the
//! loop's description), and record the outcome (back-off, status, metrics).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::leases::Holding;
use super::{
    FENCED, Failure, PassReport, Reconciler, TAG_CONFIG, TAG_INSTALLATION, TAG_SERVER, failed,
    ignore_not_found, store_failure,
};
use crate::autoscale::cloud::Cloud;
use crate::autoscale::directory::Directory;
use crate::autoscale::schedule::PassKind;
use crate::broker::{ConfigStatus, UnmanagedVm, VmProblem, now_ms};
use crate::domain::autoscale::{
    AutoScaleConfig, DestroyReason, ServerStatus, StoredProviderConfig, plan,
};
use crate::domain::provider::{ProviderError, Vm, VmState};
use crate::domain::text::cap;
use crate::store::Fence;

/// The first back-off after a failure; it doubles with each failure in a row.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
pub(super) type Listing = Arc<tokio::sync::OnceCell<Arc<InstallationVms>>>;

/// This installation's live VMs listed through one provider config, by their config tag
/// (indexed once, so each config's pass costs its own VMs, not the installation's).
pub(super) struct InstallationVms {
    /// Shared with every pass that reads the listing (a pass copies none of them).
    by_config: HashMap<String, Arc<Vec<Vm>>>,
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
            by_config: by_config
                .into_iter()
                .map(|(config, vms)| (config, Arc::new(vms)))
                .collect(),
            leftovers: Mutex::new(leftovers),
        }
    }
}

impl<C: Cloud, D: Directory> Reconciler<C, D> {
    /// One config's pass; failures back off and show on the config and in the metrics.
    pub(super) async fn reconcile_config(&self, name: &str, kind: PassKind) -> PassReport {
        let now = now_ms();
        let mut status = self.broker.config_status(name);
        let fence = match self.leases.hold(&self.broker, name).await {
            Holding::Ready(epoch) => Fence {
                config: name.to_string(),
                epoch,
            },
            Holding::CatchingUp => {
                tracing::debug!(
                    config = name,
                    "taken over: waiting for this process's view to catch up with the change feed"
                );
                return PassReport::default();
            }
            Holding::Elsewhere => {
                self.broker.config_reconciled_elsewhere(name);
                return PassReport::default();
            }
        };
        if status.reconciled_elsewhere {
            // Taken over: the status is this process's from now on.
            status.reconciled_elsewhere = false;
            self.broker
                .record_config_status(&fence, status.clone())
                .await;
        }
        if status.backoff_until_ms.is_some_and(|until| now < until) {
            return PassReport::default();
        }
        let mut findings = Findings::default();
        let outcome = self.reconcile_steps(&fence, kind, now, &mut findings).await;
        if let Err(failure) = &outcome
            && failure.call == FENCED
        {
            // Another process took the config over while this pass ran: it stops here and
            // leaves the config, its status included, to the new holder.
            tracing::warn!(
                config = name,
                epoch = fence.epoch,
                "a write of this pass was refused: the config's lease is lost, another process reconciles it now: {}",
                failure.message
            );
            self.leases.lost(&self.broker, name);
            return findings.report;
        }
        let metrics = self.broker.metrics();
        // What this pass did not look at again still stands: VMs not ours (when it did not
        // audit), and VMs of ours that could not be destroyed (when it did not list).
        let mut unmanaged = findings.unmanaged;
        let servers: HashSet<String> = self
            .broker
            .servers_of(name, |e| e.server.instance_id.clone())
            .into_iter()
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
        self.broker.record_config_status(&fence, status).await;
        report
    }

    /// The steps of one config's pass; answers the available sessions it planned with.
    /// Every record it writes is fenced on `fence`, the lease of the config it reconciles.
    async fn reconcile_steps(
        &self,
        fence: &Fence,
        kind: PassKind,
        now: u64,
        findings: &mut Findings,
    ) -> Result<u32, Failure> {
        let name = fence.config.as_str();
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
        let retries = !self
            .broker
            .servers_of(name, |e| {
                (e.server.status == ServerStatus::Provisioning && e.server.instance_id.is_none())
                    .then_some(())
            })
            .is_empty();
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
            self.adopt_and_sweep(fence, &config, &provider, &vms, findings)
                .await?;

            // 3. Servers whose VM is gone.
            self.find_lost(fence, &config, &provider, &vms, now, findings)
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
                .begin_destroy(fence, *id)
                .await
                .map_err(store_failure)?
            {
                reasons.insert(*id, *reason);
            }
        }
        let closing = self.broker.servers_of(name, |e| {
            matches!(
                e.server.status,
                ServerStatus::Destroying | ServerStatus::Lost
            )
            .then(|| e.clone())
        });
        for entry in closing {
            let reason = match entry.server.status {
                ServerStatus::Destroying => reasons
                    .get(&entry.server.id)
                    .map_or("retry", |r| r.as_str()),
                ServerStatus::Lost => "lost",
                _ => continue,
            };
            // A server that cannot be destroyed yet (recorded on it) must not hold up the
            // creates the pool needs: report the first failure after them.
            match self
                .destroy(fence, &config, &provider, &entry, reason)
                .await
            {
                Ok(()) => findings.report.destroyed += 1,
                Err(failure) if failure.call == FENCED => return Err(failure),
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
                .record_new_server(fence, config.provision_timeout)
                .await
                .map_err(store_failure)?;
        }
        // A disabled config creates nothing; its records without a VM time out.
        // (A create whose outcome is unknown waits until a listing settles it.)
        let to_provision = self.broker.servers_of(name, |e| {
            let server = &e.server;
            (config.enabled
                && server.status == ServerStatus::Provisioning
                && server.instance_id.is_none()
                && server.uncertain_create_at_ms.is_none())
            .then(|| server.clone())
        });
        for server in &to_provision {
            self.provision(fence, &config, &provider, server, now)
                .await?;
            findings.report.created += 1;
        }
        findings.stuck = destroy_failure;
        Ok(planned.available)
    }

    fn planner_states(&self, config: &str) -> Vec<crate::domain::autoscale::ServerState> {
        self.broker
            .servers_of(config, |e| Some(e.server.planner_state(e.sessions())))
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
    ) -> Result<Arc<Vec<Vm>>, Failure> {
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

        let legacy: HashSet<Uuid> = self
            .broker
            .servers_of(&config.name, |e| {
                (!e.server.installation_tagged).then_some(e.server.id)
            })
            .into_iter()
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
                Arc::make_mut(&mut vms).push(vm); // a VM of ours from before installation tags
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
    pub(super) fn forget_listing(&self, provider: &StoredProviderConfig) {
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
        fence: &Fence,
        config: &AutoScaleConfig,
        provider: &StoredProviderConfig,
        vms: &[Vm],
        findings: &mut Findings,
    ) -> Result<(), Failure> {
        // Only what this step reads of each server, not the records.
        let servers = self.broker.servers_of(&config.name, |e| {
            Some(HeldVm {
                server: e.server.id,
                instance_id: e.server.instance_id.clone(),
                uncertain_create_at_ms: e.server.uncertain_create_at_ms,
            })
        });
        let mut adopted: HashSet<Uuid> = HashSet::new();
        for vm in vms {
            let server_id = vm.tag(TAG_SERVER).and_then(|id| Uuid::parse_str(id).ok());
            match server_id.and_then(|id| servers.iter().find(|h| h.server == id)) {
                Some(entry) if entry.instance_id.is_none() && adopted.insert(entry.server) => {
                    let instance_id = &vm.instance_id;
                    self.broker
                        .update_server(fence, entry.server, |s| {
                            s.instance_id = Some(instance_id.clone());
                            s.vm_created_at_ms = Some(now_ms());
                            s.uncertain_create_at_ms = None;
                        })
                        .await
                        .map_err(store_failure)?;
                    findings.report.adopted += 1;
                    tracing::info!(server = %entry.server, instance = vm.instance_id, "adopted a VM created before a restart");
                }
                Some(entry) if entry.instance_id.as_deref() == Some(vm.instance_id.as_str()) => {}
                Some(entry) => {
                    // A second VM for one server (a create that timed out but happened).
                    tracing::warn!(server = %entry.server, instance = vm.instance_id, "destroying a duplicate VM of a server");
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
        for held in &servers {
            let settled = held
                .uncertain_create_at_ms
                .is_some_and(|at| now.saturating_sub(at) >= grace_ms);
            if settled && held.instance_id.is_none() && !adopted.contains(&held.server) {
                self.broker
                    .update_server(fence, held.server, |s| s.uncertain_create_at_ms = None)
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
        fence: &Fence,
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
        // The servers whose VM looks gone (copied: each needs a `get-vm` to confirm).
        let suspects = self.broker.servers_of(&config.name, |entry| {
            let server = &entry.server;
            let instance_id = server.instance_id.as_deref()?;
            let watched = matches!(
                server.status,
                ServerStatus::Provisioning | ServerStatus::Running | ServerStatus::Draining
            );
            let young = server
                .vm_created_at_ms
                .is_some_and(|at| now.saturating_sub(at) < grace_ms);
            let suspect = match listed.get(instance_id) {
                Some(state) => matches!(state, VmState::Stopped | VmState::Stopping),
                None => true,
            };
            (watched && !young && suspect).then(|| server.clone())
        });
        for server in &suspects {
            let instance_id = server.instance_id.as_deref().unwrap_or_default();
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
                .mark_lost(fence, server.id, why)
                .await
                .map_err(store_failure)?;
            findings.report.lost += 1;
            tracing::warn!(server = %server.id, hostname = server.hostname, instance = instance_id, sessions_ended = ended, "server lost: {why}");
        }
        Ok(())
    }
}

/// What adopting and sweeping read of a server: its id, its VM and whether a create of it
/// has an unknown outcome.
struct HeldVm {
    server: Uuid,
    instance_id: Option<String>,
    uncertain_create_at_ms: Option<u64>,
}
