//! Persistence in sled: one tree per entity, values as JSON, keys as names or UUID bytes.
//!
//! The store speaks in domain operations (record a session, reserve a slot), never in trees,
//! so that a PostgreSQL-protocol database can replace sled with the same semantics.
//!
//! - A reservation is a compare-and-swap on the agent's usage record: it re-checks capacity
//!   against what is stored, so concurrent requests never over-commit an agent.
//! - Usage is derived state: at open it is rebuilt from the sessions on disk, so a crash
//!   between reserving and recording a session leaks nothing.
//! - Durability: callers apply their writes, then `commit().await`: one flush (fsync) is
//!   shared by every write that arrived while the previous one ran (group commit).
//!
//! **Architecture Invariant:** nothing sled-specific leaks out of this module.

mod commit;

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use commit::CommitError;
use commit::GroupCommit;

use crate::domain::agent::Agent;
use crate::domain::autoscale::{AutoScaleConfig, Pool, Server, StoredProviderConfig, Workspace};
use crate::domain::capacity::{Capacity, Demand, Usage};
use crate::domain::image::Image;
use crate::domain::ldap::LdapConfig;
use crate::domain::plugin::PluginRecord;
use crate::domain::session::Session;
use crate::domain::zone::Zone;

/// The layout version this build writes; a data directory from a newer layout is refused,
/// and so is a record of a newer one. Every record carries the version it was written at
/// (`{"schema":1,"record":{...}}`). A field added to a record needs no new version: records
/// are read tolerantly (a field a build does not know is ignored), so an older build still
/// reads what a newer one wrote. A change older builds would misread (a field renamed or
/// retyped) raises it, with the migration from the older version in [`decode`].
const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
const USER_KEY_SECRET: &[u8] = b"user_key_secret";
const CHECKIN_KEY: &[u8] = b"checkin_key";
const INSTALLATION_ID: &[u8] = b"installation_id";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "the data directory was written by a newer zonebroker (schema {found}, this build knows {known})"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("corrupt record in `{tree}`: {message}")]
    Corrupt { tree: &'static str, message: String },
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("cannot start the flusher: {0}")]
    Flusher(std::io::Error),
}

/// The durable state of the broker.
pub struct Store {
    db: sled::Db,
    zones: sled::Tree,
    agents: sled::Tree,
    images: sled::Tree,
    sessions: sled::Tree,
    usage: sled::Tree,
    plugins: sled::Tree,
    /// Uploaded components by sha256.
    plugin_blobs: sled::Tree,
    /// Compiled components by `{sha256}-{engine fingerprint}`.
    plugin_artifacts: sled::Tree,
    pools: sled::Tree,
    provider_configs: sled::Tree,
    autoscale_configs: sled::Tree,
    servers: sled::Tree,
    workspaces: sled::Tree,
    ldap_configs: sled::Tree,
    commit: GroupCommit,
    /// Keys the hash that shows strategies a user without naming them.
    user_key_secret: [u8; 32],
    /// Signs check-in tokens.
    checkin_key: [u8; 32],
    /// This installation's random id, made once: every VM it creates carries it as a tag,
    /// so that it never touches another installation's VMs in a shared cloud account.
    installation_id: Uuid,
}

impl Store {
    /// Open (or create) the store under `data_dir/db`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            // Durability comes from explicit group commits of acknowledged writes.
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree("meta")?;
        check_schema(&meta)?;
        let user_key_secret = random_secret(&meta, USER_KEY_SECRET)?;
        let checkin_key = random_secret(&meta, CHECKIN_KEY)?;
        let installation_id = installation_id(&meta)?;
        db.flush()?;
        let store = Store {
            zones: db.open_tree("zones")?,
            agents: db.open_tree("agents")?,
            images: db.open_tree("images")?,
            sessions: db.open_tree("sessions")?,
            usage: db.open_tree("usage")?,
            plugins: db.open_tree("plugins")?,
            plugin_blobs: db.open_tree("plugin_blobs")?,
            plugin_artifacts: db.open_tree("plugin_artifacts")?,
            pools: db.open_tree("pools")?,
            provider_configs: db.open_tree("provider_configs")?,
            autoscale_configs: db.open_tree("autoscale_configs")?,
            servers: db.open_tree("servers")?,
            workspaces: db.open_tree("workspaces")?,
            ldap_configs: db.open_tree("ldap_configs")?,
            commit: GroupCommit::start(db.clone()).map_err(StoreError::Flusher)?,
            user_key_secret,
            checkin_key,
            installation_id,
            db,
        };
        store.rebuild_usage()?;
        Ok(store)
    }

    /// Wait until every write made before the call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        Ok(self.commit.commit().await?)
    }

    /// Flush everything now, blocking (start-up).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Flush everything now (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// An opaque, stable 64-bit key of `user` for strategies.
    pub fn user_key(&self, user: &str) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.user_key_secret)
            .chain_update(user.as_bytes())
            .finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap())
    }

    // Zones, by name.

    pub fn zones(&self) -> Result<Vec<Zone>, StoreError> {
        scan(&self.zones, "zones")
    }

    pub fn put_zone(&self, zone: &Zone) -> Result<(), StoreError> {
        put(&self.zones, zone.name.as_bytes(), zone)
    }

    pub fn delete_zone(&self, name: &str) -> Result<(), StoreError> {
        self.zones.remove(name.as_bytes())?;
        Ok(())
    }

    // Images, by name.

    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        scan(&self.images, "images")
    }

    pub fn put_image(&self, image: &Image) -> Result<(), StoreError> {
        put(&self.images, image.name.as_bytes(), image)
    }

    pub fn delete_image(&self, name: &str) -> Result<(), StoreError> {
        self.images.remove(name.as_bytes())?;
        Ok(())
    }

    // Agents, by id.

    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        scan(&self.agents, "agents")
    }

    pub fn put_agent(&self, agent: &Agent) -> Result<(), StoreError> {
        put(&self.agents, agent.id.as_bytes(), agent)
    }

    pub fn delete_agent(&self, id: Uuid) -> Result<(), StoreError> {
        self.agents.remove(id.as_bytes())?;
        self.usage.remove(id.as_bytes())?;
        Ok(())
    }

    // Plugins: records by name, components by sha256, compiled artifacts by key.

    pub fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        scan(&self.plugins, "plugins")
    }

    pub fn put_plugin(&self, record: &PluginRecord) -> Result<(), StoreError> {
        put(&self.plugins, record.name.as_bytes(), record)
    }

    pub fn delete_plugin(&self, name: &str) -> Result<(), StoreError> {
        self.plugins.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.plugin_blobs.insert(sha256.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .plugin_blobs
            .get(sha256.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// How many compiled artifacts of the component with this sha256 the store holds (one
    /// per engine configuration that compiled it).
    pub fn artifacts_of(&self, sha256: &str) -> Result<usize, StoreError> {
        let mut count = 0;
        for key in self
            .plugin_artifacts
            .scan_prefix(format!("{sha256}-").as_bytes())
            .keys()
        {
            key?;
            count += 1;
        }
        Ok(count)
    }

    /// Forget a component and every artifact compiled from it.
    pub fn delete_blob(&self, sha256: &str) -> Result<(), StoreError> {
        self.plugin_blobs.remove(sha256.as_bytes())?;
        for key in self
            .plugin_artifacts
            .scan_prefix(format!("{sha256}-").as_bytes())
            .keys()
        {
            self.plugin_artifacts.remove(key?)?;
        }
        Ok(())
    }

    /// The key that signs check-in tokens.
    pub fn checkin_key(&self) -> &[u8; 32] {
        &self.checkin_key
    }

    /// This installation's id (random, made when the data directory was).
    pub fn installation_id(&self) -> Uuid {
        self.installation_id
    }

    // Pools, provider configs, AutoScale configs and workspaces, by name; servers by id.

    pub fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        scan(&self.pools, "pools")
    }

    pub fn put_pool(&self, pool: &Pool) -> Result<(), StoreError> {
        put(&self.pools, pool.name.as_bytes(), pool)
    }

    pub fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        self.pools.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn provider_configs(&self) -> Result<Vec<StoredProviderConfig>, StoreError> {
        scan(&self.provider_configs, "provider_configs")
    }

    pub fn put_provider_config(&self, stored: &StoredProviderConfig) -> Result<(), StoreError> {
        put(
            &self.provider_configs,
            stored.config.name.as_bytes(),
            stored,
        )
    }

    pub fn delete_provider_config(&self, name: &str) -> Result<(), StoreError> {
        self.provider_configs.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn autoscale_configs(&self) -> Result<Vec<AutoScaleConfig>, StoreError> {
        scan(&self.autoscale_configs, "autoscale_configs")
    }

    pub fn put_autoscale_config(&self, config: &AutoScaleConfig) -> Result<(), StoreError> {
        put(&self.autoscale_configs, config.name.as_bytes(), config)
    }

    pub fn delete_autoscale_config(&self, name: &str) -> Result<(), StoreError> {
        self.autoscale_configs.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        scan(&self.workspaces, "workspaces")
    }

    pub fn put_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        put(&self.workspaces, workspace.name.as_bytes(), workspace)
    }

    pub fn delete_workspace(&self, name: &str) -> Result<(), StoreError> {
        self.workspaces.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn ldap_configs(&self) -> Result<Vec<LdapConfig>, StoreError> {
        scan(&self.ldap_configs, "ldap_configs")
    }

    pub fn put_ldap_config(&self, config: &LdapConfig) -> Result<(), StoreError> {
        put(&self.ldap_configs, config.name.as_bytes(), config)
    }

    pub fn delete_ldap_config(&self, name: &str) -> Result<(), StoreError> {
        self.ldap_configs.remove(name.as_bytes())?;
        Ok(())
    }

    pub fn servers(&self) -> Result<Vec<Server>, StoreError> {
        scan(&self.servers, "servers")
    }

    pub fn put_server(&self, server: &Server) -> Result<(), StoreError> {
        put(&self.servers, server.id.as_bytes(), server)
    }

    pub fn delete_server(&self, id: Uuid) -> Result<(), StoreError> {
        self.servers.remove(id.as_bytes())?;
        self.usage.remove(id.as_bytes())?;
        Ok(())
    }

    /// Close `host` to new sessions if it has none, atomically, so a placement racing with
    /// the close cannot land on it. Answers whether it closed (false: a session got there
    /// first).
    pub fn close_if_idle(&self, host: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .update_usage(host, |usage| {
                (usage.sessions == 0).then_some(usage.closed())
            })?
            .is_some())
    }

    /// Close `host` to new sessions, whatever it runs: no reservation succeeds after this,
    /// whichever snapshot the placement ranked. Answers its usage.
    pub fn close(&self, host: Uuid) -> Result<Usage, StoreError> {
        Ok(self
            .update_usage(host, |usage| Some(usage.closed()))?
            .unwrap_or_default())
    }

    // Sessions and the usage they reserve.

    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        scan(&self.sessions, "sessions")
    }

    /// What the sessions of `host` reserve now (nothing if it has none).
    pub fn usage_of(&self, host: Uuid) -> Result<Usage, StoreError> {
        match self.usage.get(host.as_bytes())? {
            Some(raw) => decode("usage", &raw),
            None => Ok(Usage::default()),
        }
    }

    /// What the sessions of every agent reserve.
    pub fn usage(&self) -> Result<HashMap<Uuid, Usage>, StoreError> {
        let mut all = HashMap::new();
        for entry in self.usage.iter() {
            let (key, value) = entry?;
            let id = Uuid::from_slice(&key).map_err(|e| corrupt("usage", e))?;
            all.insert(id, decode("usage", &value)?);
        }
        Ok(all)
    }

    /// Reserve `demand` on `agent` if its stored usage leaves room within `capacity`.
    /// Answers the new usage, or `None` when there was no room. Atomic: a compare-and-swap
    /// loop on the agent's usage record.
    pub fn try_reserve(
        &self,
        agent: Uuid,
        capacity: &Capacity,
        demand: &Demand,
    ) -> Result<Option<Usage>, StoreError> {
        self.update_usage(agent, |usage| {
            usage.has_room(capacity, demand).then(|| usage.plus(demand))
        })
    }

    /// Give back what a session of `demand` reserved on `agent`.
    pub fn release(&self, agent: Uuid, demand: &Demand) -> Result<Usage, StoreError> {
        Ok(self
            .update_usage(agent, |usage| Some(usage.minus(demand)))?
            .unwrap_or_default())
    }

    /// `host`'s sessions all ended at once (they were ended, not released one by one): no
    /// usage left, closed to new sessions.
    pub fn close_emptied(&self, host: Uuid) -> Result<Usage, StoreError> {
        Ok(self
            .update_usage(host, |_| Some(Usage::default().closed()))?
            .unwrap_or_default())
    }

    /// Give back what a session of `demand` reserved on `host` and close it to new
    /// sessions, in one atomic step (a single-use server whose session ended).
    pub fn release_and_close(&self, host: Uuid, demand: &Demand) -> Result<Usage, StoreError> {
        Ok(self
            .update_usage(host, |usage| Some(usage.minus(demand).closed()))?
            .unwrap_or_default())
    }

    fn update_usage(
        &self,
        agent: Uuid,
        change: impl Fn(Usage) -> Option<Usage>,
    ) -> Result<Option<Usage>, StoreError> {
        let key = agent.as_bytes();
        let mut current = self.usage.get(key)?;
        loop {
            let usage = match &current {
                Some(raw) => decode("usage", raw)?,
                None => Usage::default(),
            };
            let Some(next) = change(usage) else {
                return Ok(None);
            };
            let encoded = encode(&next);
            match self.usage.compare_and_swap(key, current, Some(encoded))? {
                Ok(()) => return Ok(Some(next)),
                Err(conflict) => current = conflict.current,
            }
        }
    }

    pub fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        put(&self.sessions, session.id.as_bytes(), session)
    }

    /// Remove a session record; answers it if it existed.
    pub fn remove_session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        match self.sessions.remove(id.as_bytes())? {
            Some(raw) => Ok(Some(decode("sessions", &raw)?)),
            None => Ok(None),
        }
    }

    /// Recompute every agent's usage from the sessions on disk: what a crash between a
    /// reservation and its session record (or a deletion and its release) left is mended.
    /// A host closed to new sessions stays closed.
    fn rebuild_usage(&self) -> Result<(), StoreError> {
        let mut usage: HashMap<Uuid, Usage> = HashMap::new();
        for session in self.sessions()? {
            let entry = usage.entry(session.agent).or_default();
            *entry = entry.plus(&session.demand);
        }
        let stored = self.usage()?;
        for (id, _) in stored.iter().filter(|(_, usage)| usage.closed) {
            let entry = usage.entry(*id).or_default();
            *entry = entry.closed();
        }
        for id in stored.keys().filter(|id| !usage.contains_key(id)) {
            self.usage.remove(id.as_bytes())?;
        }
        for (id, usage) in &usage {
            if stored.get(id) != Some(usage) {
                tracing::warn!(agent = %id, "usage rebuilt from sessions after an unclean stop");
                self.usage.insert(id.as_bytes(), encode(usage))?;
            }
        }
        Ok(())
    }
}

/// Compiled plugin artifacts, opaque bytes by key (the plugin host's cache; see
/// `crate::plugin_cache`).
impl Store {
    pub fn plugin_artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .plugin_artifacts
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    pub fn put_plugin_artifact(&self, key: &str, artifact: Vec<u8>) -> Result<(), StoreError> {
        self.plugin_artifacts.insert(key.as_bytes(), artifact)?;
        Ok(())
    }
}

fn check_schema(meta: &sled::Tree) -> Result<(), StoreError> {
    match meta.get(SCHEMA_KEY)? {
        None => {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        }
        Some(raw) => {
            let found = <[u8; 4]>::try_from(raw.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("meta", "schema version is not 4 bytes"))?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    found,
                    known: SCHEMA_VERSION,
                });
            }
        }
    }
    Ok(())
}

/// The installation id kept in `meta`, made on first use.
fn installation_id(meta: &sled::Tree) -> Result<Uuid, StoreError> {
    if let Some(raw) = meta.get(INSTALLATION_ID)? {
        return Uuid::from_slice(&raw).map_err(|e| corrupt("meta", e));
    }
    let id = Uuid::new_v4();
    meta.insert(INSTALLATION_ID, id.as_bytes())?;
    Ok(id)
}

/// A random secret kept in `meta` under `key`, made on first use.
fn random_secret(meta: &sled::Tree, key: &[u8]) -> Result<[u8; 32], StoreError> {
    if let Some(raw) = meta.get(key)? {
        return <[u8; 32]>::try_from(raw.as_ref())
            .map_err(|_| corrupt("meta", "a secret is not 32 bytes"));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| corrupt("meta", e))?;
    meta.insert(key, &secret)?;
    Ok(secret)
}

fn corrupt(tree: &'static str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        message: message.to_string(),
    }
}

/// A record as written: the layout version, then the record.
#[derive(Serialize)]
struct Versioned<'a, T> {
    schema: u32,
    record: &'a T,
}

/// A record as read.
#[derive(Deserialize)]
struct Read<T> {
    schema: u32,
    record: T,
}

/// The version of a record that did not read.
#[derive(Deserialize)]
struct SchemaOf {
    schema: u32,
}

/// How every versioned record begins (`serde_json` writes fields in declaration order).
const VERSIONED_PREFIX: &[u8] = b"{\"schema\":";

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let versioned = Versioned {
        schema: SCHEMA_VERSION,
        record: value,
    };
    // Secrets are stored as they are (and shown nowhere else).
    crate::domain::secret::revealed(|| serde_json::to_vec(&versioned))
        .expect("domain records serialize")
}

fn decode<T: DeserializeOwned>(tree: &'static str, raw: &[u8]) -> Result<T, StoreError> {
    if !raw.starts_with(VERSIONED_PREFIX) {
        // Written before records carried their version: the layout of version 1.
        return serde_json::from_slice(raw).map_err(|e| corrupt(tree, e));
    }
    let newer = |found: u32| StoreError::NewerSchema {
        found,
        known: SCHEMA_VERSION,
    };
    match serde_json::from_slice::<Read<T>>(raw) {
        Ok(read) if read.schema > SCHEMA_VERSION => Err(newer(read.schema)),
        Ok(read) => Ok(read.record),
        Err(error) => match serde_json::from_slice::<SchemaOf>(raw) {
            Ok(SchemaOf { schema }) if schema > SCHEMA_VERSION => Err(newer(schema)),
            _ => Err(corrupt(tree, error)),
        },
    }
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<(), StoreError> {
    tree.insert(key, encode(value))?;
    Ok(())
}

fn scan<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|entry| {
            let (_, value) = entry?;
            decode(name, &value)
        })
        .collect()
}

#[cfg(test)]
mod tests;
