//! Following the changes other processes make to the shared store (the change feed): every
//! `--feed-interval` (and at once when another process announces changes, where the
//! database has `LISTEN/NOTIFY`), the records they changed since the last read, applied to
//! the view.
//!
//! A record this process wrote after the read began is left as the view has it (its own
//! write is newer, or will be once committed: the next read brings whatever comes after
//! it). Writes at a version wait while a read is applied, so a config's view never goes
//! back to a version older than one this process wrote.
//!
//! An AutoScale config's status written by the process that holds its lease is shown here
//! as that process's (`reconciled_elsewhere`).
//!
//! A plugin whose active version changed elsewhere is loaded here too (compiled from the
//! stored component into this process's own cache, off the async workers) and swapped in:
//! an activation on one process hot-swaps the plugin on all.
//!
//! Usage is not in the feed (every placement changes it): every [`REFRESH_USAGE_EVERY`] the
//! usage of every host is read again, and what others' placements and ends changed is
//! shown in the view; a server whose usage changed has its record read again with the next
//! read of the feed (a placement or an end may change its idle time or make it spent). The
//! view's usage only steers the ranking; the database judges every reservation. Sessions
//! other processes placed are not in the view: they are read from the store when asked for
//! by id ([`Broker::session`]) or listed ([`Broker::sessions`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{AgentState, Broker, ServerEntry};
use crate::domain::autoscale::ConfigStatus;
use crate::domain::plugin::PluginRecord;
use crate::store::{Changed, Followed};

/// How often the usage of every host is read again.
pub const REFRESH_USAGE_EVERY: Duration = Duration::from_secs(1);

/// How often this process removes changes old enough that every follower has read them.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Broker {
    /// Follow the other processes' changes, reading the feed every `every` and when woken,
    /// until `stop` turns true; nothing to do when the store is not shared (sled).
    pub async fn follow_changes(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let Some(mut revision) = self.store.feed_start() else {
            return;
        };
        let signal = self.store.change_signal();
        let woken = async || match &signal {
            Some(signal) => signal.notified().await,
            None => std::future::pending().await,
        };
        let mut pruned = Instant::now();
        let mut usage_read = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = woken() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let versioned = self.versioned_writes.lock().await;
            match self.store.changes_after(revision).await {
                Ok(Followed::Changes {
                    revision: read_at,
                    changed,
                    mark,
                }) => {
                    let (applied, plugins) = self.apply_changes(changed, mark);
                    self.store.changes_applied(mark);
                    revision = read_at;
                    self.applied_revision
                        .store(revision, std::sync::atomic::Ordering::Release);
                    self.metrics.feed_read(revision, applied);
                    drop(versioned);
                    if !plugins.is_empty() {
                        self.load_changed_plugins(plugins).await;
                    }
                }
                Ok(Followed::FellBehind { pruned_through }) => {
                    // The view cannot be brought up to date from the feed: a restart
                    // reads everything afresh.
                    tracing::error!(
                        revision,
                        pruned_through,
                        "this process fell behind the change feed (changes it had not read were pruned): stopping"
                    );
                    std::process::exit(75);
                }
                Err(error) => {
                    self.metrics.feed_read_failed();
                    tracing::warn!(%error, "cannot read the change feed");
                }
            }
            if usage_read.elapsed() >= REFRESH_USAGE_EVERY {
                usage_read = Instant::now();
                match self.store.refresh_usage().await {
                    Ok(hosts) => {
                        self.show_usage(&hosts);
                        // Another process's placement or session end may have changed the
                        // server's record too (its idle time, spent): read with the feed.
                        let servers = {
                            let inventory = self.read();
                            hosts
                                .into_iter()
                                .filter(|host| inventory.servers.contains_key(host))
                                .collect::<Vec<_>>()
                        };
                        self.store.read_servers_again(&servers);
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the hosts' usage"),
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(error) = self.store.prune_changes().await {
                    tracing::warn!(%error, "cannot prune the change feed");
                }
            }
        }
    }

    /// Apply records other processes changed (read after `mark`) to the view; answers how
    /// many were applied, and the plugins whose active version may have changed, for
    /// [`Broker::load_changed_plugins`].
    fn apply_changes(&self, changed: Vec<Changed>, mark: u64) -> (usize, Vec<PluginRecord>) {
        let mut plugins = Vec::new();
        let mut applied = 0;
        if changed.is_empty() {
            return (applied, plugins);
        }
        let mut demand = Vec::new();
        let mut inventory = self.write();
        for change in changed {
            // Checked under the view's lock, which every local write holds as it stages.
            if self.store.written_here_since(mark, &change) {
                continue;
            }
            applied += 1;
            tracing::debug!(?change, "applying another process's change");
            match change {
                Changed::Zone(name, zone) => replace(&mut inventory.zones, name, zone),
                Changed::Image(name, image) => replace(&mut inventory.images, name, image),
                Changed::Pool(name, pool) => replace(&mut inventory.pools, name, pool),
                Changed::Workspace(name, workspace) => {
                    replace(&mut inventory.workspaces, name, workspace)
                }
                Changed::LdapConfig(name, config) => {
                    replace(&mut inventory.ldap_configs, name, config)
                }
                Changed::ProviderConfig(name, config) => {
                    replace(&mut inventory.provider_configs, name, config)
                }
                Changed::AutoscaleConfig(name, config) => {
                    replace(&mut inventory.autoscale_configs, name.clone(), config);
                    demand.push(name);
                }
                Changed::Agent(id, Some(agent)) => {
                    let usage = match inventory.agents.get(&id) {
                        Some(state) => state.usage,
                        None => self.store.usage_of(id).unwrap_or_default(),
                    };
                    inventory.agents.insert(AgentState { agent, usage });
                }
                Changed::Agent(id, None) => {
                    inventory.agents.remove(&id);
                }
                Changed::ConfigStatus(name, Some(status)) => {
                    let status = ConfigStatus {
                        reconciled_elsewhere: true,
                        ..status
                    };
                    inventory.config_status.insert(name, status);
                }
                Changed::ConfigStatus(name, None) => {
                    inventory.config_status.remove(&name);
                }
                Changed::Plugin(name, Some(record)) => {
                    inventory.plugins.insert(name, record.clone());
                    plugins.push(record);
                }
                Changed::Plugin(name, None) => {
                    inventory.plugins.remove(&name);
                    self.registry.remove(&name);
                }
                Changed::Server(id, Some(server))
                    if inventory
                        .servers
                        .get(&id)
                        .is_some_and(|entry| entry.server.version > server.version) =>
                {
                    // Read before a placement or an end of this process changed it (they
                    // do not wait for the feed): the view's is newer. Versions only grow.
                }
                Changed::Server(id, server) => {
                    let usage = match inventory.servers.get(&id) {
                        Some(entry) => entry.usage,
                        None => self.store.usage_of(id).unwrap_or_default(),
                    };
                    let config = inventory
                        .servers
                        .get(&id)
                        .and_then(|entry| entry.server.config.clone());
                    inventory.remove_server(id);
                    if let Some(server) = server {
                        demand.extend(server.config.clone());
                        inventory.insert_server(ServerEntry { server, usage });
                    }
                    demand.extend(config);
                }
            }
        }
        drop(inventory);
        self.demand_changed(demand);
        (applied, plugins)
    }

    /// Show in the view the usage the store now knows of `hosts` (agents and servers).
    fn show_usage(&self, hosts: &[uuid::Uuid]) {
        if hosts.is_empty() {
            return;
        }
        let mut inventory = self.write();
        for host in hosts {
            // Read under the lock, as every write of the view's usage does: the newest.
            let Ok(usage) = self.store.usage_of(*host) else {
                continue;
            };
            inventory.set_usage(*host, usage);
            if let Some(entry) = inventory.servers.get_mut(host) {
                entry.usage = usage;
            }
        }
    }

    /// Load the active versions of `plugins` (changed by another process) where the
    /// registry has another, off the async workers.
    async fn load_changed_plugins(self: &Arc<Self>, plugins: Vec<PluginRecord>) {
        let broker = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            for record in &plugins {
                broker.load_active_version(record);
            }
        })
        .await;
        if let Err(error) = loaded {
            tracing::error!(%error, "loading plugins another process changed failed");
        }
    }
}

/// Put `record` under `key` in `records`, or remove the key (`None`).
fn replace<T>(records: &mut std::collections::BTreeMap<String, T>, key: String, record: Option<T>) {
    match record {
        Some(record) => {
            records.insert(key, record);
        }
        None => {
            records.remove(&key);
        }
    }
}
