//! The broker: the one struct that holds the server's state and carries out every operation
//! the API offers (zones, agents, images, sessions), over the store, the plugin registry and
//! an in-memory inventory.
//!
//! Each operation validates with `domain`, applies its writes to the store and the
//! inventory under the inventory lock, then (lock released) waits for the durable commit
//! before answering. Placement reads a snapshot under the read lock and reserves through the
//! store's compare-and-swap, so the lock is never held across a strategy call.

mod agent_index;
mod agents;
mod autoscale_configs;
mod feed;
mod images;
mod ldap_configs;
mod plugins;
mod pools;
mod provider_configs;
mod records;
mod servers;
mod sessions;
mod shadows;
mod workspaces;
mod zones;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

pub use crate::domain::autoscale::{ConfigStatus, UnmanagedVm, VmProblem};
use agent_index::AgentIndex;
pub use agents::{AgentState, CheckedIn};
pub use autoscale_configs::AutoScaleConfigView;
pub use plugins::{ActivationView, PluginView, UploadError, UploadView, UsedBy, VersionView};
pub use records::Change;
pub use servers::{Removal, ServerCheckin, ServerEntry, ServerView};
pub use shadows::{DisagreementView, ShadowView};

use crate::domain::autoscale::{AutoScaleConfig, Pool, StoredProviderConfig, Workspace};
use crate::domain::capacity::Usage;
use crate::domain::image::Image;
use crate::domain::ldap::LdapConfig;
use crate::domain::plugin::PluginRecord;
use crate::domain::session::Session;
use crate::domain::validation::FieldError;
use crate::domain::zone::Zone;
use crate::metrics::Metrics;
use crate::plugins::{PluginKind, Registry};
use crate::store::{Store, StoreError};

/// How the broker behaves.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// An agent silent for longer is not a placement candidate.
    pub agent_timeout: Duration,
    /// The zones the server's listeners manage; they exist and cannot be deleted.
    pub listener_zones: BTreeSet<String>,
    /// New agents are stored pending (disabled) until an operator enables them.
    pub require_agent_approval: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            agent_timeout: Duration::from_secs(60),
            listener_zones: BTreeSet::from([crate::domain::zone::DEFAULT_ZONE.to_string()]),
            require_agent_approval: false,
        }
    }
}

/// Why an operation failed; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no {kind} `{key}`")]
    NotFound { kind: &'static str, key: String },
    #[error("{kind} `{key}` already exists")]
    AlreadyExists { kind: &'static str, key: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no host has room for {what}")]
    NoCapacity { what: String },
    #[error("{0}")]
    Unauthorized(String),
    /// An agent's check-in without its credential, or with a wrong one.
    #[error("{}", if *missing {
        "this agent has a credential: send it in the `Zonebroker-Agent-Credential` header"
    } else {
        "wrong agent credential (`Zonebroker-Agent-Credential`); an operator can reset it"
    })]
    AgentCredential { missing: bool },
    /// A write's precondition (`If-Match`) no longer holds: the record changed.
    #[error("{kind} `{key}` changed: it is at version {current}")]
    PreconditionFailed {
        kind: &'static str,
        key: String,
        current: u64,
    },
    /// Something the operation needs (a directory, a cloud) cannot be reached now; the
    /// same request may succeed later.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure that is not the caller's fault (a blocking task that panicked or was
    /// cancelled, the plugin registry refusing what the inventory allowed). Answered with
    /// `context` only; `cause` is for the log.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        cause: String,
    },
}

impl BrokerError {
    /// An [`BrokerError::Internal`] failure: `context` says what failed, `cause` why.
    pub fn internal(context: &'static str, cause: impl std::fmt::Display) -> Self {
        BrokerError::Internal {
            context,
            cause: cause.to_string(),
        }
    }
}

/// What the broker knows in memory: everything the store holds, indexed for placement.
#[derive(Default)]
struct Inventory {
    zones: BTreeMap<String, Zone>,
    images: BTreeMap<String, Image>,
    /// By zone, id and host name.
    agents: AgentIndex,
    sessions: HashMap<Uuid, Session>,
    /// Uploaded plugins (built-ins live only in the registry).
    plugins: BTreeMap<String, PluginRecord>,
    /// Sessions per user per agent or server, for strategies that spread a user's sessions.
    user_sessions: HashMap<String, HashMap<Uuid, u32>>,
    pools: BTreeMap<String, Pool>,
    provider_configs: BTreeMap<String, StoredProviderConfig>,
    autoscale_configs: BTreeMap<String, AutoScaleConfig>,
    /// What the reconcile loop last found per AutoScale config (stored by the process that
    /// reconciles it; a restart starts from the stored status, back-off included).
    config_status: HashMap<String, ConfigStatus>,
    servers: BTreeMap<Uuid, ServerEntry>,
    /// The servers of each AutoScale config (the reconcile loop asks per config).
    servers_by_config: HashMap<String, BTreeSet<Uuid>>,
    /// The servers of each pool by zone (placement on a pool reads one zone's).
    servers_by_pool: HashMap<String, BTreeMap<String, BTreeSet<Uuid>>>,
    workspaces: BTreeMap<String, Workspace>,
    ldap_configs: BTreeMap<String, LdapConfig>,
    /// Servers whose bootstrap is under way (one at a time per server: a token is answered
    /// at most once).
    bootstrap_claims: std::collections::HashSet<Uuid>,
}

/// The server's state and operations.
pub struct Broker {
    store: Store,
    registry: Arc<Registry>,
    /// A std `RwLock`, not tokio's: held only for in-memory work and single sled writes,
    /// never across an `.await` or a plugin call.
    inventory: RwLock<Inventory>,
    config: BrokerConfig,
    metrics: Arc<Metrics>,
    /// Zones' shadow strategies, ranked on a thread of their own.
    shadows: shadows::Shadows,
    /// Wakes the reconcile loop when demand changes (a session placed or ended, a server
    /// checked in, a config saved), so it need not wait for its next tick.
    autoscale_wake: tokio::sync::Notify,
    /// The AutoScale configs whose demand changed since the loop last took them. A std
    /// `Mutex`: held for a set insert or swap, never across an `.await`.
    autoscale_dirty: std::sync::Mutex<BTreeSet<String>>,
    /// Held by a write of a versioned record (provider and AutoScale configs) from its last
    /// check against the view until the store has judged it ([`Broker::settle`]), so that
    /// no write in this process builds on another's before the store took it: a version the
    /// store refuses was written by another process.
    versioned_writes: tokio::sync::Mutex<()>,
    /// The change feed's revision the view has applied (a shared store's; 0 otherwise).
    applied_revision: std::sync::atomic::AtomicI64,
}

impl Broker {
    /// Load everything from `store`, create the default and listener zones if missing, and
    /// activate the uploaded plugins (CPU work when a compiled artifact is missing: call it
    /// off the async runtime).
    pub fn open(
        store: Store,
        registry: Arc<Registry>,
        config: BrokerConfig,
    ) -> Result<Broker, BrokerError> {
        let mut inventory = Inventory::default();
        for zone in store.zones()? {
            inventory.zones.insert(zone.name.clone(), zone);
        }
        for image in store.images()? {
            inventory.images.insert(image.name.clone(), image);
        }
        let usage = store.usage()?;
        for agent in store.agents()? {
            let usage = usage.get(&agent.id).copied().unwrap_or_default();
            inventory.agents.insert(AgentState { agent, usage });
        }
        for session in store.sessions()? {
            inventory.add_session(session);
        }
        for record in store.plugins()? {
            inventory.plugins.insert(record.name.clone(), record);
        }
        for pool in store.pools()? {
            inventory.pools.insert(pool.name.clone(), pool);
        }
        for stored in store.provider_configs()? {
            inventory
                .provider_configs
                .insert(stored.config.name.clone(), stored);
        }
        for config in store.autoscale_configs()? {
            inventory
                .autoscale_configs
                .insert(config.name.clone(), config);
        }
        for workspace in store.workspaces()? {
            inventory
                .workspaces
                .insert(workspace.name.clone(), workspace);
        }
        for config in store.ldap_configs()? {
            inventory.ldap_configs.insert(config.name.clone(), config);
        }
        for (name, status) in store.config_statuses()? {
            inventory.config_status.insert(name, status);
        }
        for server in store.servers()? {
            let usage = usage.get(&server.id).copied().unwrap_or_default();
            inventory.insert_server(ServerEntry { server, usage });
        }
        let mut required: BTreeSet<String> = config.listener_zones.clone();
        required.insert(crate::domain::zone::DEFAULT_ZONE.to_string());
        for name in required {
            if !inventory.zones.contains_key(&name) {
                let zone = Zone::with_defaults(&name);
                store.put_zone(&zone)?;
                tracing::info!(zone = name, "created zone with defaults");
                inventory.zones.insert(name, zone);
            }
        }
        let metrics = Arc::new(Metrics::default());
        let broker = Broker {
            store,
            shadows: shadows::Shadows::start(registry.clone(), metrics.clone()),
            registry,
            inventory: RwLock::new(inventory),
            config,
            metrics,
            autoscale_wake: tokio::sync::Notify::new(),
            autoscale_dirty: Default::default(),
            versioned_writes: Default::default(),
            applied_revision: std::sync::atomic::AtomicI64::new(0),
        };
        if let Some(start) = broker.store.feed_start() {
            broker
                .applied_revision
                .store(start, std::sync::atomic::Ordering::Release);
        }
        broker.load_uploaded_plugins();
        // Zones created above and plugin artifacts compiled at start-up: on disk now.
        broker.store.flush_now()?;
        Ok(broker)
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store (as the compiled-artifact cache of plugin loads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Resolves when demand may have changed since the last call (the reconcile loop).
    pub fn autoscale_wake(&self) -> &tokio::sync::Notify {
        &self.autoscale_wake
    }

    /// The AutoScale configs whose demand changed since the last call, emptied.
    pub fn take_demand_changes(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .autoscale_dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Mark `configs` for the reconcile loop and wake it.
    fn demand_changed(&self, configs: impl IntoIterator<Item = String>) {
        self.autoscale_dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(configs);
        self.autoscale_wake.notify_one();
    }

    /// Demand changed on server `id`: its AutoScale config, if any, should look.
    fn demand_changed_on_server(&self, id: Uuid) {
        let config = self
            .read()
            .servers
            .get(&id)
            .and_then(|entry| entry.server.config.clone());
        self.demand_changed(config);
    }

    /// A session of `pool` found no room: every AutoScale config of the pool should look.
    fn demand_changed_in_pool(&self, pool: &str) {
        let configs: Vec<String> = self
            .read()
            .autoscale_configs
            .values()
            .filter(|c| c.pool == pool)
            .map(|c| c.name.clone())
            .collect();
        self.demand_changed(configs);
    }

    /// Flush everything to disk (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    fn read(&self) -> RwLockReadGuard<'_, Inventory> {
        self.inventory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inventory> {
        self.inventory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the writes made so far are durable.
    async fn commit(&self) -> Result<(), BrokerError> {
        Ok(self.store.commit().await?)
    }

    /// Whether `name` is an installed strategy plugin.
    /// Whether `name` is an installed strategy; `field` names the setting in the error.
    fn check_strategy(&self, field: &str, name: &str) -> Result<(), FieldError> {
        match self.registry.get(name) {
            Some(slot) if slot.kind() == PluginKind::Strategy => Ok(()),
            Some(slot) => Err(FieldError::new(
                field,
                format!(
                    "plugin `{name}` is a {} plugin, not a strategy",
                    slot.kind()
                ),
            )),
            None => Err(FieldError::new(
                field,
                format!("no strategy plugin named `{name}` is installed"),
            )),
        }
    }

    /// The change feed's revision the view has applied: every change up to it is in it.
    pub(crate) fn applied_revision(&self) -> i64 {
        self.applied_revision
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `zone` is one of this process's listeners' zones.
    pub(crate) fn manages_zone(&self, zone: &str) -> bool {
        self.config.listener_zones.contains(zone)
    }

    fn agent_timeout_ms(&self) -> u64 {
        self.config.agent_timeout.as_millis() as u64
    }
}

impl Inventory {
    fn zone_or_not_found(&self, name: &str) -> Result<Zone, BrokerError> {
        self.zones
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                kind: "zone",
                key: name.to_string(),
            })
    }

    fn add_session(&mut self, session: Session) {
        *self
            .user_sessions
            .entry(session.user.clone())
            .or_default()
            .entry(session.agent)
            .or_default() += 1;
        self.sessions.insert(session.id, session);
    }

    fn remove_session(&mut self, id: Uuid) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        if let Some(per_agent) = self.user_sessions.get_mut(&session.user) {
            if let Some(count) = per_agent.get_mut(&session.agent) {
                *count -= 1;
                if *count == 0 {
                    per_agent.remove(&session.agent);
                }
            }
            if per_agent.is_empty() {
                self.user_sessions.remove(&session.user);
            }
        }
        Some(session)
    }

    fn set_usage(&mut self, agent: Uuid, usage: Usage) {
        self.agents.update(&agent, |state| state.usage = usage);
    }
}

/// Run CPU-bound, synchronous work (a strategy or generator call) from async code without
/// starving the runtime: on a multi-threaded runtime the worker hands its other tasks off
/// first.
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
