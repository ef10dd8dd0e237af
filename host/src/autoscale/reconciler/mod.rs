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
//! 4. destroys what the pure [`plan`](crate::domain::autoscale::plan) says (closing each
//!    server to sessions atomically first), and what an earlier pass could not finish; a
//!    failure leaves the server `destroying`;
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
//!
//! Here, the loop (scheduling passes, the tick); in [`pass`], one config's pass (steps 1 to
//! 5); in [`provisioning`], creating and destroying a server's VM; in [`directory_steps`],
//! its AD computer object.

mod directory_steps;
mod leases;
mod pass;
mod provisioning;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::addresses::BrokerAddresses;
use super::cloud::Cloud;
use super::directory::{Directory, LdapDirectory};
use super::schedule::{PassKind, PassScheduler};
use crate::broker::Broker;
use crate::domain::provider::ProviderError;

/// The tag naming the installation (broker) a VM belongs to.
pub const TAG_INSTALLATION: &str = "zonebroker:installation";
/// The tag naming the AutoScale config a VM belongs to.
pub const TAG_CONFIG: &str = "zonebroker:config";
/// The tag naming the server record a VM was created for.
pub const TAG_SERVER: &str = "zonebroker:server-id";

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct ReconcilerSettings {
    /// Time between passes when nothing wakes the loop.
    pub interval: Duration,
    /// Where VMs reach the broker, by zone.
    pub addresses: BrokerAddresses,
    /// How long a config's lease lasts: another process takes a config over this long
    /// after its holder stopped renewing (a clean stop gives it back at once).
    pub config_lease: Duration,
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
    listings: Mutex<HashMap<String, (tokio::time::Instant, pass::Listing)>>,
    /// The configs this process reconciles.
    leases: leases::ConfigLeases,
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
            last_audit: Mutex::default(),
            listed: Mutex::default(),
            listings: Mutex::default(),
            leases: leases::ConfigLeases::new(settings.config_lease),
            settings,
        })
    }

    /// Run passes until `stop` turns true: every config's pass on every tick, and a
    /// config's pass as soon as the broker reports a demand change for it; each config's
    /// passes on their own task, one at a time (see [`PassScheduler`]). On stop, the passes
    /// in flight finish.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let keeper = tokio::spawn({
                let (this, stop) = (self.clone(), stop.clone());
                async move { this.leases.keep(&this.broker, stop).await }
            });
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
            if let Err(error) = keeper.await {
                tracing::error!("keeping the config leases failed: {error}");
            }
            self.leases.release(&self.broker).await;
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
}

fn ignore_not_found(error: ProviderError) -> Result<(), ProviderError> {
    match error {
        ProviderError::NotFound(_) => Ok(()),
        other => Err(other),
    }
}

/// The `call` of a failure that is a write refused for the lease this pass was fenced on:
/// another process reconciles the config now.
const FENCED: &str = "lease";

fn store_failure(error: crate::broker::BrokerError) -> Failure {
    let call = match error {
        crate::broker::BrokerError::Store(crate::store::StoreError::Fenced(_)) => FENCED,
        _ => "store",
    };
    failed(call)(error)
}
