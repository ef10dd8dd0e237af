//! Persistence behind one interface, [`Store`], with two engines:
//!
//! - **sled** (the embedded default, `--data-dir`): one tree per entity in the data
//!   directory, for one process;
//! - **PostgreSQL** (`--database URL`): one table per entity in a shared database.
//!
//! The store speaks in domain operations (place a session, end it, close a host, write a
//! record), never in trees or tables, and each engine carries them out its own way:
//!
//! - A placement re-checks capacity against the usage the store holds and records the
//!   session, atomically, so concurrent requests never over-commit a host: on sled a
//!   compare-and-swap on the host's usage record, then the session record; on PostgreSQL
//!   one statement (a conditional `UPDATE` over the ranked offers, `FOR UPDATE SKIP
//!   LOCKED`, and the session's `INSERT`). The session operations are `async` and the
//!   broker awaits them with no lock held.
//! - Records are written at once (to sled's trees; to PostgreSQL's write journal) and made
//!   durable by `commit().await`, which every write path awaits, with no lock held, before
//!   it answers: one fsync (sled) or one transaction (PostgreSQL) carries every write that
//!   arrived while the previous one ran (group commit).
//! - Records kept at a version (provider and AutoScale configs) are written only over the
//!   version the write names, judged by the engine ([`Swapped`]): a compare-and-swap on
//!   sled, a transaction holding the row on PostgreSQL; awaited, with no lock held.
//! - On sled, usage is rebuilt from the sessions at open, so a crash between reserving and
//!   recording a session leaks nothing. PostgreSQL changes both in one statement and never
//!   rebuilds.
//! - The secrets an installation shares (the user-key secret, the check-in signing key, the
//!   installation id; on PostgreSQL also the admin and agent tokens) are made by the first
//!   process and read by every later one.
//! - Compiled plugin artifacts are local to a process (the data directory), never shared:
//!   code compiled by another machine is never loaded.
//!
//! **Architecture Invariant:** nothing sled- or PostgreSQL-specific leaks out of this module.

mod commit;
pub mod migrate;
mod postgres;
mod sled_engine;

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use commit::CommitError;
pub use postgres::DatabaseOptions;

use crate::domain::agent::Agent;
use crate::domain::autoscale::{
    AutoScaleConfig, ConfigStatus, Pool, Server, StoredProviderConfig, Workspace,
};
use crate::domain::capacity::{Capacity, Demand, Usage};
use crate::domain::image::Image;
use crate::domain::ldap::LdapConfig;
use crate::domain::plugin::PluginRecord;
use crate::domain::session::{HostKind, Session};
use crate::domain::zone::Zone;
use postgres::Postgres;
use sled_engine::SledEngine;

/// The layout version of sled records this build writes; a data directory from a newer
/// layout is refused, and so is a record of a newer one. Every sled record carries the
/// version it was written at (`{"schema":1,"record":{...}}`). A field added to a record
/// needs no new version: records are read tolerantly (a field a build does not know is
/// ignored), so an older build still reads what a newer one wrote. A change older builds
/// would misread (a field renamed or retyped) raises it, with the migration from the older
/// version in [`decode`]. (PostgreSQL keeps bare records; its schema has its own version.)
const SCHEMA_VERSION: u32 = 1;

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
    #[error("the database at {database}: {message}")]
    Database { database: String, message: String },
    #[error(
        "the database was migrated by a newer zonebroker (schema {found}, this build knows {known}); upgrade this process"
    )]
    NewerDatabaseSchema { found: i32, known: i32 },
    /// A reconcile write fenced on a config lease this process no longer holds at that
    /// epoch: nothing was written.
    #[error(
        "this process no longer holds the lease of AutoScale config `{}` at epoch {}: another reconciles it",
        .0.config, .0.epoch
    )]
    Fenced(Fence),
}

/// What a reconcile write is fenced on: the lease of AutoScale config `config`, held by
/// this process at `epoch` when the pass began. The store refuses the write, in its own
/// transaction, unless the lease is still held by this process at that epoch and
/// unexpired (on sled, one process holds every lease).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub config: String,
    pub epoch: i64,
}

/// What a write at a version found.
#[derive(Debug)]
pub enum Swapped<T> {
    /// Written (or deleted), durably.
    Done,
    /// The stored record is not at the version the write named: here it is as it is now
    /// (`None`: there is none). Nothing was written.
    Stale(Option<T>),
    /// The write's host was to be closed with it, and has sessions: nothing was written.
    /// (Only a write that closes its host, [`Store::swap_server`] with `close_idle`.)
    Busy,
}

/// The entities the store keeps: a sled tree or a PostgreSQL table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Table {
    Zones,
    Images,
    Agents,
    Sessions,
    Usage,
    Plugins,
    PluginBlobs,
    Pools,
    ProviderConfigs,
    AutoscaleConfigs,
    Servers,
    Workspaces,
    LdapConfigs,
    ConfigStatus,
}

impl Table {
    /// Every table, in declaration order (so `table as usize` indexes it).
    const ALL: [Table; 14] = [
        Table::Zones,
        Table::Images,
        Table::Agents,
        Table::Sessions,
        Table::Usage,
        Table::Plugins,
        Table::PluginBlobs,
        Table::Pools,
        Table::ProviderConfigs,
        Table::AutoscaleConfigs,
        Table::Servers,
        Table::Workspaces,
        Table::LdapConfigs,
        Table::ConfigStatus,
    ];

    /// The sled tree's and the PostgreSQL table's name.
    fn name(self) -> &'static str {
        match self {
            Table::Zones => "zones",
            Table::Images => "images",
            Table::Agents => "agents",
            Table::Sessions => "sessions",
            Table::Usage => "usage",
            Table::Plugins => "plugins",
            Table::PluginBlobs => "plugin_blobs",
            Table::Pools => "pools",
            Table::ProviderConfigs => "provider_configs",
            Table::AutoscaleConfigs => "autoscale_configs",
            Table::Servers => "servers",
            Table::Workspaces => "workspaces",
            Table::LdapConfigs => "ldap_configs",
            Table::ConfigStatus => "config_status",
        }
    }

    /// The table called `name`.
    fn named(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// Whether other processes follow its changes (not sessions and usage, which placements
    /// judge in the database, nor components, which records name by their hash).
    fn in_feed(self) -> bool {
        !matches!(self, Table::Sessions | Table::Usage | Table::PluginBlobs)
    }

    /// Whether its records are keyed by a UUID (else by a name or a sha256).
    fn keyed_by_id(self) -> bool {
        matches!(
            self,
            Table::Agents | Table::Sessions | Table::Usage | Table::Servers
        )
    }
}

/// A record's key.
#[derive(Clone, Copy, Debug)]
enum Key<'a> {
    Name(&'a str),
    Id(Uuid),
}

impl Key<'_> {
    /// As sled stores it: the name's bytes, or the UUID's 16 bytes.
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Name(name) => name.as_bytes(),
            Key::Id(id) => id.as_bytes(),
        }
    }

    /// As PostgreSQL stores it.
    fn text(&self) -> String {
        match self {
            Key::Name(name) => name.to_string(),
            Key::Id(id) => id.to_string(),
        }
    }
}

enum Engine {
    Sled(SledEngine),
    Postgres(Postgres),
}

/// The secrets an installation shares, made once.
struct Secrets {
    /// Keys the hash that shows strategies a user without naming them.
    user_key_secret: [u8; 32],
    /// Signs check-in tokens.
    checkin_key: [u8; 32],
    /// This installation's random id, made once: every VM it creates carries it as a tag,
    /// so that it never touches another installation's VMs in a shared cloud account.
    installation_id: Uuid,
}

/// The durable state of the broker.
pub struct Store {
    engine: Engine,
    /// Compiled components by `{sha256}-{engine fingerprint}`: local to this process.
    plugin_artifacts: sled::Tree,
    secrets: Secrets,
}

impl Store {
    /// Open (or create) the embedded store under `data_dir/db`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let (engine, secrets) = SledEngine::open(&data_dir.join("db"))?;
        let plugin_artifacts = engine.artifact_tree()?;
        let store = Store {
            engine: Engine::Sled(engine),
            plugin_artifacts,
            secrets,
        };
        if let Engine::Sled(sled) = &store.engine {
            store.rebuild_usage(sled)?;
        }
        Ok(store)
    }

    /// Connect to the PostgreSQL database `options` name, create or migrate its schema, and
    /// keep the compiled-plugin cache under `data_dir/plugin-cache`. Call it from the async
    /// runtime the store will live on (its write journal runs there).
    pub async fn open_database(
        options: &DatabaseOptions,
        data_dir: &Path,
    ) -> Result<Store, StoreError> {
        Store::open_postgres(options, data_dir, None).await
    }

    async fn open_postgres(
        options: &DatabaseOptions,
        data_dir: &Path,
        seed: Option<&postgres::Seed<'_>>,
    ) -> Result<Store, StoreError> {
        let (engine, secrets) = Postgres::open(options, seed).await?;
        let cache = sled::Config::new()
            .path(data_dir.join("plugin-cache"))
            .open()?;
        Ok(Store {
            plugin_artifacts: cache.open_tree("plugin_artifacts")?,
            engine: Engine::Postgres(engine),
            secrets,
        })
    }

    /// Wait until every write made before the call is durable.
    pub async fn commit(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => Ok(sled.commit().await?),
            Engine::Postgres(pg) => pg.commit().await,
        }
    }

    /// Make everything durable now, blocking (start-up, off the async workers).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.flush_now(),
            Engine::Postgres(pg) => pg.block_on(pg.commit()),
        }
    }

    /// Make everything durable now and let go of the database (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.flush().await,
            Engine::Postgres(pg) => pg.close().await,
        }
    }

    /// An opaque, stable 64-bit key of `user` for strategies.
    pub fn user_key(&self, user: &str) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.secrets.user_key_secret)
            .chain_update(user.as_bytes())
            .finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap())
    }

    /// The key that signs check-in tokens.
    pub fn checkin_key(&self) -> &[u8; 32] {
        &self.secrets.checkin_key
    }

    /// This installation's id (random, made when the store was).
    pub fn installation_id(&self) -> Uuid {
        self.secrets.installation_id
    }

    /// The admin or agent token the database keeps for every process
    /// that shares it; `None` for the embedded store, whose tokens are files in the data
    /// directory.
    pub fn shared_token(&self, which: SharedToken) -> Option<String> {
        match &self.engine {
            Engine::Sled(_) => None,
            Engine::Postgres(pg) => Some(pg.token(which).to_string()),
        }
    }

    // Records, one generic path per engine.

    fn put<T: Serialize>(&self, table: Table, key: Key, value: &T) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.put(table, key, encode(value)),
            Engine::Postgres(pg) => {
                pg.stage(table, key, Some(encode_bare(value)));
                Ok(())
            }
        }
    }

    fn delete(&self, table: Table, key: Key) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.delete(table, key),
            Engine::Postgres(pg) => {
                pg.stage(table, key, None);
                Ok(())
            }
        }
    }

    /// Write `next` under `key` (`None` deletes it) if the stored record is at `expected`
    /// (`version` reads a record's; `None`: only if there is none), durably. The check and
    /// the write are one step in the engine (a compare-and-swap on sled; one transaction
    /// holding the row on PostgreSQL), so two writers never lose each other's update, even
    /// from two processes. With a `fence`, the same step refuses the write unless the lease
    /// is still held at its epoch ([`StoreError::Fenced`]); with `close_idle` (a host's
    /// record), it closes the host to new sessions, and writes nothing if the host has any
    /// ([`Swapped::Busy`]).
    #[allow(clippy::too_many_arguments)]
    async fn swap<T: Serialize + DeserializeOwned>(
        &self,
        table: Table,
        key: Key<'_>,
        expected: Option<u64>,
        next: Option<&T>,
        version: fn(&T) -> u64,
        fence: Option<&Fence>,
        close_idle: bool,
    ) -> Result<Swapped<T>, StoreError> {
        let at_expected = |raw: Option<&[u8]>| match raw {
            None => expected.is_none(),
            Some(raw) => {
                decode::<T>(table.name(), raw).is_ok_and(|r| Some(version(&r)) == expected)
            }
        };
        let current = match &self.engine {
            Engine::Sled(sled) => {
                // One process: the close and the write need no single step (a write that
                // turns out stale is judged again, and closes again if it still does).
                if close_idle && !self.close_if_idle_now(sled, key)? {
                    return Ok(Swapped::Busy);
                }
                match sled.swap(table, key, next.map(encode), at_expected)? {
                    Ok(()) => {
                        sled.commit().await?;
                        return Ok(Swapped::Done);
                    }
                    Err(current) => current,
                }
            }
            Engine::Postgres(pg) => {
                let next = next.map(encode_bare);
                let at_expected = |raw: Option<&str>| at_expected(raw.map(str::as_bytes));
                let swapped = pg
                    .swap(table, key, next.as_deref(), at_expected, fence, close_idle)
                    .await?;
                match swapped {
                    Swapped::Done => return Ok(Swapped::Done),
                    Swapped::Busy => return Ok(Swapped::Busy),
                    Swapped::Stale(current) => current.map(String::into_bytes),
                }
            }
        };
        let current = current.map(|raw| decode(table.name(), &raw)).transpose()?;
        Ok(Swapped::Stale(current))
    }

    fn scan<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let raw = match &self.engine {
            Engine::Sled(sled) => sled.scan(table)?,
            Engine::Postgres(pg) => pg.block_on(pg.scan(table))?,
        };
        raw.iter()
            .map(|value| decode(table.name(), value))
            .collect()
    }

    // Zones, by name.

    pub fn zones(&self) -> Result<Vec<Zone>, StoreError> {
        self.scan(Table::Zones)
    }

    pub fn put_zone(&self, zone: &Zone) -> Result<(), StoreError> {
        self.put(Table::Zones, Key::Name(&zone.name), zone)
    }

    pub fn delete_zone(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::Zones, Key::Name(name))
    }

    // Images, by name.

    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        self.scan(Table::Images)
    }

    pub fn put_image(&self, image: &Image) -> Result<(), StoreError> {
        self.put(Table::Images, Key::Name(&image.name), image)
    }

    pub fn delete_image(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::Images, Key::Name(name))
    }

    // Agents, by id.

    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.scan(Table::Agents)
    }

    pub fn put_agent(&self, agent: &Agent) -> Result<(), StoreError> {
        self.put(Table::Agents, Key::Id(agent.id), agent)
    }

    pub fn delete_agent(&self, id: Uuid) -> Result<(), StoreError> {
        self.delete(Table::Agents, Key::Id(id))?;
        self.forget_usage(id)
    }

    // Plugins: records by name, components by sha256, compiled artifacts by key.

    pub fn plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.scan(Table::Plugins)
    }

    pub fn put_plugin(&self, record: &PluginRecord) -> Result<(), StoreError> {
        self.put(Table::Plugins, Key::Name(&record.name), record)
    }

    pub fn delete_plugin(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::Plugins, Key::Name(name))
    }

    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.put(Table::PluginBlobs, Key::Name(sha256), bytes.to_vec()),
            Engine::Postgres(pg) => {
                pg.stage_blob(sha256, Some(bytes.to_vec()));
                Ok(())
            }
        }
    }

    /// The component with this sha256. Blocks on PostgreSQL (a query): call it off the
    /// async workers or from within [`tokio::task::block_in_place`].
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.get(Table::PluginBlobs, Key::Name(sha256)),
            Engine::Postgres(pg) => pg.block_on(pg.blob(sha256)),
        }
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
        match &self.engine {
            Engine::Sled(sled) => sled.delete(Table::PluginBlobs, Key::Name(sha256))?,
            Engine::Postgres(pg) => pg.stage_blob(sha256, None),
        }
        for key in self
            .plugin_artifacts
            .scan_prefix(format!("{sha256}-").as_bytes())
            .keys()
        {
            self.plugin_artifacts.remove(key?)?;
        }
        Ok(())
    }

    // Pools, provider configs, AutoScale configs and workspaces, by name; servers by id.

    pub fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        self.scan(Table::Pools)
    }

    pub fn put_pool(&self, pool: &Pool) -> Result<(), StoreError> {
        self.put(Table::Pools, Key::Name(&pool.name), pool)
    }

    pub fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::Pools, Key::Name(name))
    }

    pub fn provider_configs(&self) -> Result<Vec<StoredProviderConfig>, StoreError> {
        self.scan(Table::ProviderConfigs)
    }

    /// Write provider config `name` (`None` deletes it) if it is at version `expected`
    /// (`None`: only if there is none): see [`Swapped`].
    pub async fn swap_provider_config(
        &self,
        name: &str,
        expected: Option<u64>,
        next: Option<&StoredProviderConfig>,
    ) -> Result<Swapped<StoredProviderConfig>, StoreError> {
        self.swap(
            Table::ProviderConfigs,
            Key::Name(name),
            expected,
            next,
            |stored| stored.config.version,
            None,
            false,
        )
        .await
    }

    pub fn autoscale_configs(&self) -> Result<Vec<AutoScaleConfig>, StoreError> {
        self.scan(Table::AutoscaleConfigs)
    }

    /// Write AutoScale config `name` (`None` deletes it) if it is at version `expected`
    /// (`None`: only if there is none): see [`Swapped`].
    pub async fn swap_autoscale_config(
        &self,
        name: &str,
        expected: Option<u64>,
        next: Option<&AutoScaleConfig>,
    ) -> Result<Swapped<AutoScaleConfig>, StoreError> {
        self.swap(
            Table::AutoscaleConfigs,
            Key::Name(name),
            expected,
            next,
            |config| config.version,
            None,
            false,
        )
        .await
    }

    pub fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        self.scan(Table::Workspaces)
    }

    pub fn put_workspace(&self, workspace: &Workspace) -> Result<(), StoreError> {
        self.put(Table::Workspaces, Key::Name(&workspace.name), workspace)
    }

    pub fn delete_workspace(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::Workspaces, Key::Name(name))
    }

    pub fn ldap_configs(&self) -> Result<Vec<LdapConfig>, StoreError> {
        self.scan(Table::LdapConfigs)
    }

    pub fn put_ldap_config(&self, config: &LdapConfig) -> Result<(), StoreError> {
        self.put(Table::LdapConfigs, Key::Name(&config.name), config)
    }

    pub fn delete_ldap_config(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::LdapConfigs, Key::Name(name))
    }

    // What the reconcile loop last found per AutoScale config, by config name.

    pub fn config_statuses(&self) -> Result<Vec<(String, ConfigStatus)>, StoreError> {
        let table = Table::ConfigStatus;
        let raw: Vec<(String, Vec<u8>)> = match &self.engine {
            Engine::Sled(sled) => sled
                .entries(table)?
                .into_iter()
                .map(|(key, value)| {
                    String::from_utf8(key)
                        .map(|name| (name, value))
                        .map_err(|e| corrupt(table.name(), e))
                })
                .collect::<Result<_, _>>()?,
            Engine::Postgres(pg) => pg.block_on(pg.scan_keyed(table))?,
        };
        raw.into_iter()
            .map(|(name, value)| Ok((name, decode(table.name(), &value)?)))
            .collect()
    }

    /// Store AutoScale config `name`'s status, durably, as the holder of its lease writes it:
    /// refused ([`StoreError::Fenced`]) once another process holds the lease, so a deposed
    /// holder never writes over its successor's status.
    pub async fn put_config_status(
        &self,
        name: &str,
        status: &ConfigStatus,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => {
                sled.put(Table::ConfigStatus, Key::Name(name), encode(status))?;
                Ok(sled.commit().await?)
            }
            Engine::Postgres(pg) => {
                let record = encode_bare(status);
                let key = Key::Name(name);
                pg.swap(
                    Table::ConfigStatus,
                    key,
                    Some(&record),
                    |_| true,
                    Some(fence),
                    false,
                )
                .await?;
                Ok(())
            }
        }
    }

    pub fn delete_config_status(&self, name: &str) -> Result<(), StoreError> {
        self.delete(Table::ConfigStatus, Key::Name(name))
    }

    pub fn servers(&self) -> Result<Vec<Server>, StoreError> {
        self.scan(Table::Servers)
    }

    /// Write server `id` (`None` deletes it, with its usage) if it is at version `expected`
    /// (`None`: only if there is none), fenced on `fence` if given, and with `close_idle`
    /// closing it to new sessions in the same step, only if it has none: see [`Swapped`].
    /// The only way a server record is written: placements and session ends change it in
    /// the same step as the usage, at a new version (see [`Server::session_placed`]).
    pub async fn swap_server(
        &self,
        id: Uuid,
        expected: Option<u64>,
        next: Option<&Server>,
        fence: Option<&Fence>,
        close_idle: bool,
    ) -> Result<Swapped<Server>, StoreError> {
        let swapped = self
            .swap(
                Table::Servers,
                Key::Id(id),
                expected,
                next,
                |server| server.version,
                fence,
                close_idle,
            )
            .await?;
        if next.is_none() && matches!(swapped, Swapped::Done) {
            self.forget_usage(id)?;
        }
        Ok(swapped)
    }

    // Sessions and the usage they reserve.

    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.scan(Table::Sessions)
    }

    /// What the sessions of `host` reserve now (nothing if it has none).
    pub fn usage_of(&self, host: Uuid) -> Result<Usage, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => match sled.get(Table::Usage, Key::Id(host))? {
                Some(raw) => decode("usage", &raw),
                None => Ok(Usage::default()),
            },
            Engine::Postgres(pg) => Ok(pg.usage_of(host)),
        }
    }

    /// What the sessions of every host reserve.
    pub fn usage(&self) -> Result<HashMap<Uuid, Usage>, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled
                .entries(Table::Usage)?
                .into_iter()
                .map(|(key, value)| {
                    let id = Uuid::from_slice(&key).map_err(|e| corrupt("usage", e))?;
                    Ok((id, decode("usage", &value)?))
                })
                .collect(),
            Engine::Postgres(pg) => Ok(pg.all_usage()),
        }
    }

    /// Reserve `demand` on the first of `offers` (best first; every offer carries the same
    /// session, as it would run on that host) whose usage leaves room within its capacity,
    /// and record the offer's session, atomically: on a pool server the same step ends its
    /// idle time. Answers which offer was taken and its host's usage, or `None` when none had
    /// room. Durable once the caller's `commit()` returns (on PostgreSQL, once this does).
    pub async fn place(
        &self,
        demand: &Demand,
        offers: &[Offer],
    ) -> Result<Option<Reserved>, StoreError> {
        let sled = match &self.engine {
            Engine::Sled(sled) => sled,
            Engine::Postgres(pg) => return pg.place(demand, offers).await,
        };
        for (
            offer,
            Offer {
                host,
                capacity,
                session,
            },
        ) in offers.iter().enumerate()
        {
            let reserved = sled.update_usage(*host, |usage| {
                usage.has_room(capacity, demand).then(|| usage.plus(demand))
            })?;
            let Some(usage) = reserved else { continue };
            let recorded = self
                .put_session(session)
                .and_then(|()| match session.host_kind {
                    HostKind::Server => self.edit_server(*host, Server::session_placed),
                    HostKind::Agent => Ok(()),
                });
            if let Err(error) = recorded {
                sled.update_usage(*host, |usage| Some(usage.minus(demand)))?;
                return Err(error);
            }
            return Ok(Some(Reserved { offer, usage }));
        }
        Ok(None)
    }

    /// End `session` and give back what it reserved, atomically; a `single_use` host (a
    /// server that is not reusable) is closed in the same step, and a pool server is marked
    /// as [`Server::session_ended`] says. Answers whether the session was still there (it
    /// may have ended meanwhile, with its host) and its host's usage.
    pub async fn end_session(
        &self,
        session: &Session,
        single_use: bool,
        now_ms: u64,
    ) -> Result<SessionEnded, StoreError> {
        let sled = match &self.engine {
            Engine::Sled(sled) => sled,
            Engine::Postgres(pg) => return pg.end_session(session, single_use, now_ms).await,
        };
        if sled.get(Table::Sessions, Key::Id(session.id))?.is_none() {
            return Ok(SessionEnded {
                existed: false,
                usage: self.usage_of(session.agent)?,
            });
        }
        self.remove_session(session.id)?;
        let usage = sled
            .update_usage(session.agent, |usage| {
                let usage = usage.minus(&session.demand);
                Some(if single_use { usage.closed() } else { usage })
            })?
            .unwrap_or_default();
        if session.host_kind == HostKind::Server {
            self.edit_server(session.agent, |server| {
                server.session_ended(!single_use, usage.sessions, now_ms)
            })?;
        }
        Ok(SessionEnded {
            existed: true,
            usage,
        })
    }

    /// Session `id` as the store has it: on PostgreSQL, a session another process placed
    /// (the view has every session this process placed and, on sled, every session).
    pub async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        self.shared_record(Table::Sessions, Key::Id(id))
            .await
            .map(Option::flatten)
    }

    /// The record under `key` in `table` as the shared database has it now (any process
    /// may have written it); `None` on sled, where the view has every record.
    async fn shared_record<T: DeserializeOwned>(
        &self,
        table: Table,
        key: Key<'_>,
    ) -> Result<Option<Option<T>>, StoreError> {
        let Engine::Postgres(pg) = &self.engine else {
            return Ok(None);
        };
        pg.record(table, key)
            .await?
            .map(|raw| decode(table.name(), raw.as_bytes()))
            .transpose()
            .map(Some)
    }

    /// Sessions after position `after` (creation time, id), oldest first, at most `limit`
    /// and one more (so a page knows whether more follow): every process's, from
    /// PostgreSQL; `None` on sled, whose sessions the view has.
    pub async fn sessions_after(
        &self,
        after: Option<(u64, Uuid)>,
        limit: usize,
    ) -> Result<Option<Vec<Session>>, StoreError> {
        let Engine::Postgres(pg) = &self.engine else {
            return Ok(None);
        };
        let raw = pg.sessions_after(after, limit.saturating_add(1)).await?;
        raw.iter()
            .map(|raw| decode(Table::Sessions.name(), raw.as_bytes()))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Read every host's usage again (other processes' placements and ends change it);
    /// answers the hosts whose usage is newer than this process knew. Nothing on sled,
    /// where this process makes every change.
    pub async fn refresh_usage(&self) -> Result<Vec<Uuid>, StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(Vec::new()),
            Engine::Postgres(pg) => pg.refresh_usage().await,
        }
    }

    /// End every session on `host` at once (its server is lost or removed) and leave it
    /// with no usage, closed to new sessions. Answers the sessions ended.
    pub async fn end_sessions_on(&self, host: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let sled = match &self.engine {
            Engine::Sled(sled) => sled,
            Engine::Postgres(pg) => return pg.end_sessions_on(host).await,
        };
        // O(sessions): a server is lost or removed rarely.
        let ended: Vec<Uuid> = self
            .sessions()?
            .into_iter()
            .filter(|session| session.agent == host)
            .map(|session| session.id)
            .collect();
        for id in &ended {
            self.remove_session(*id)?;
        }
        sled.update_usage(host, |_| Some(Usage::default().closed()))?;
        Ok(ended)
    }

    /// Close `host` to new sessions if it has none, atomically, so a placement racing with
    /// the close cannot land on it. Answers whether it closed (false: a session got there
    /// first).
    pub async fn close_if_idle(&self, host: Uuid) -> Result<bool, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => self.close_if_idle_now(sled, Key::Id(host)),
            Engine::Postgres(pg) => Ok(pg.close_host(host, true).await?.is_some()),
        }
    }

    /// [`Store::close_if_idle`] on sled.
    fn close_if_idle_now(&self, sled: &SledEngine, host: Key) -> Result<bool, StoreError> {
        let Key::Id(host) = host else {
            unreachable!("hosts are keyed by id")
        };
        Ok(sled
            .update_usage(host, |usage| {
                (usage.sessions == 0).then_some(usage.closed())
            })?
            .is_some())
    }

    /// Close `host` to new sessions, whatever it runs: no reservation succeeds after this,
    /// whichever snapshot the placement ranked. Answers its usage.
    pub async fn close(&self, host: Uuid) -> Result<Usage, StoreError> {
        let closed = match &self.engine {
            Engine::Sled(sled) => sled.update_usage(host, |usage| Some(usage.closed()))?,
            Engine::Postgres(pg) => pg.close_host(host, false).await?,
        };
        Ok(closed.unwrap_or_default())
    }

    /// Server `id` as the store has it now, where other processes may have written it since
    /// the view learned it (PostgreSQL; `Some(None)`: gone); `None` on sled, whose records
    /// only this process writes (the view has them).
    pub async fn server_now(&self, id: Uuid) -> Result<Option<Option<Server>>, StoreError> {
        self.shared_record(Table::Servers, Key::Id(id)).await
    }

    /// A write of server `id` may or may not have been taken (it failed, or its writer
    /// stopped waiting): on sled, the record as it is now (`Some(None)`: gone), for the
    /// view; on PostgreSQL `None`, and the follower's next read of the feed reads the record
    /// again.
    pub fn server_unsettled(&self, id: Uuid) -> Option<Option<Server>> {
        match &self.engine {
            Engine::Sled(sled) => match sled.get(Table::Servers, Key::Id(id)) {
                Ok(raw) => raw
                    .map(|raw| decode(Table::Servers.name(), &raw))
                    .transpose()
                    .inspect_err(|error| tracing::error!(server = %id, %error, "cannot read a server record"))
                    .ok(),
                Err(error) => {
                    tracing::error!(server = %id, %error, "cannot read a server record");
                    None
                }
            },
            Engine::Postgres(pg) => {
                pg.read_again(Table::Servers, &id.to_string());
                None
            }
        }
    }

    /// Have the follower read the records of `servers` again with its next read of the feed
    /// (PostgreSQL; on sled this process made every change).
    pub fn read_servers_again(&self, servers: &[Uuid]) {
        if let Engine::Postgres(pg) = &self.engine {
            for id in servers {
                pg.read_again(Table::Servers, &id.to_string());
            }
        }
    }

    fn forget_usage(&self, host: Uuid) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(sled) => sled.delete(Table::Usage, Key::Id(host)),
            Engine::Postgres(pg) => {
                pg.forget_usage(host);
                Ok(())
            }
        }
    }

    fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        self.put(Table::Sessions, Key::Id(session.id), session)
    }

    fn remove_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.delete(Table::Sessions, Key::Id(id))
    }

    /// Change server `id`'s record in place, atomically against the writes at a version
    /// (sled; PostgreSQL edits it in SQL). A server that is gone stays gone.
    fn edit_server(&self, id: Uuid, edit: impl Fn(&mut Server)) -> Result<(), StoreError> {
        let Engine::Sled(sled) = &self.engine else {
            unreachable!("PostgreSQL edits servers in its statements")
        };
        loop {
            let Some(raw) = sled.get(Table::Servers, Key::Id(id))? else {
                return Ok(());
            };
            let mut server: Server = decode(Table::Servers.name(), &raw)?;
            edit(&mut server);
            let unchanged = |now: Option<&[u8]>| now == Some(raw.as_slice());
            if sled
                .swap(
                    Table::Servers,
                    Key::Id(id),
                    Some(encode(&server)),
                    unchanged,
                )?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Recompute every host's usage from the sessions (sled, at open: what a crash between
    /// a reservation and its session record left is mended). A host closed to new sessions
    /// stays closed. PostgreSQL changes usage and sessions in one statement, so never needs
    /// this.
    fn rebuild_usage(&self, sled: &SledEngine) -> Result<(), StoreError> {
        let rebuilt = usage_from_sessions(&self.sessions()?, &self.usage()?);
        for id in rebuilt.forgotten {
            sled.delete(Table::Usage, Key::Id(id))?;
        }
        for (id, usage) in rebuilt.changed {
            tracing::warn!(host = %id, "usage rebuilt from sessions after an unclean stop");
            sled.update_usage(id, |_| Some(usage))?;
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
        // Rare (one per compile) and worth keeping: on disk now, not at the next commit
        // (with PostgreSQL, no commit flushes the local cache).
        self.plugin_artifacts.flush()?;
        Ok(())
    }
}

/// A host offered to [`Store::place`], with the session it would run there.
pub struct Offer {
    pub host: Uuid,
    pub capacity: Capacity,
    pub session: Session,
}

/// What [`Store::place`] reserved: the offer taken and its host's usage after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reserved {
    pub offer: usize,
    pub usage: Usage,
}

/// What [`Store::end_session`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionEnded {
    /// The session was there (false: it had ended already, with its host or meanwhile).
    pub existed: bool,
    /// Its host's usage after.
    pub usage: Usage,
}

/// A record another process changed, as it is now (`None`: it was deleted).
#[derive(Debug)]
pub enum Changed {
    Zone(String, Option<Zone>),
    Image(String, Option<Image>),
    Agent(Uuid, Option<Agent>),
    Plugin(String, Option<PluginRecord>),
    Pool(String, Option<Pool>),
    ProviderConfig(String, Option<StoredProviderConfig>),
    AutoscaleConfig(String, Option<AutoScaleConfig>),
    Server(Uuid, Option<Server>),
    Workspace(String, Option<Workspace>),
    LdapConfig(String, Option<LdapConfig>),
    ConfigStatus(String, Option<ConfigStatus>),
}

impl Changed {
    /// Decode `raw` (JSON) as the record of `key` in `table`.
    fn decode(table: Table, key: &str, raw: Option<&str>) -> Result<Changed, StoreError> {
        fn record<T: DeserializeOwned>(
            table: Table,
            raw: Option<&str>,
        ) -> Result<Option<T>, StoreError> {
            raw.map(|raw| decode(table.name(), raw.as_bytes()))
                .transpose()
        }
        let id = || {
            Uuid::parse_str(key).map_err(|e| StoreError::Corrupt {
                tree: table.name(),
                message: format!("key `{key}`: {e}"),
            })
        };
        let name = key.to_string();
        Ok(match table {
            Table::Zones => Changed::Zone(name, record(table, raw)?),
            Table::Images => Changed::Image(name, record(table, raw)?),
            Table::Agents => Changed::Agent(id()?, record(table, raw)?),
            Table::Plugins => Changed::Plugin(name, record(table, raw)?),
            Table::Pools => Changed::Pool(name, record(table, raw)?),
            Table::ProviderConfigs => Changed::ProviderConfig(name, record(table, raw)?),
            Table::AutoscaleConfigs => Changed::AutoscaleConfig(name, record(table, raw)?),
            Table::Servers => Changed::Server(id()?, record(table, raw)?),
            Table::Workspaces => Changed::Workspace(name, record(table, raw)?),
            Table::LdapConfigs => Changed::LdapConfig(name, record(table, raw)?),
            Table::ConfigStatus => Changed::ConfigStatus(name, record(table, raw)?),
            Table::Sessions | Table::Usage | Table::PluginBlobs => {
                return Err(StoreError::Corrupt {
                    tree: table.name(),
                    message: format!(
                        "`{key}` is listed in the change feed, which this kind of record is not"
                    ),
                });
            }
        })
    }

    /// Its table and key as the engine keeps them.
    fn key(&self) -> (Table, String) {
        match self {
            Changed::Zone(name, _) => (Table::Zones, name.clone()),
            Changed::Image(name, _) => (Table::Images, name.clone()),
            Changed::Agent(id, _) => (Table::Agents, id.to_string()),
            Changed::Plugin(name, _) => (Table::Plugins, name.clone()),
            Changed::Pool(name, _) => (Table::Pools, name.clone()),
            Changed::ProviderConfig(name, _) => (Table::ProviderConfigs, name.clone()),
            Changed::AutoscaleConfig(name, _) => (Table::AutoscaleConfigs, name.clone()),
            Changed::Server(id, _) => (Table::Servers, id.to_string()),
            Changed::Workspace(name, _) => (Table::Workspaces, name.clone()),
            Changed::LdapConfig(name, _) => (Table::LdapConfigs, name.clone()),
            Changed::ConfigStatus(name, _) => (Table::ConfigStatus, name.clone()),
        }
    }
}

/// A config's lease as [`Store::hold_config_lease`] answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigLease {
    /// Grows with every change of holder: the fence of the holder's writes.
    pub epoch: i64,
    /// The change feed's revision when it was answered: a process that has just taken the
    /// lease acts only once its view has applied the feed this far (its predecessor's last
    /// records included).
    pub revision: i64,
}

/// What [`Store::changes_after`] found.
pub enum Followed {
    /// The records other processes changed, read at `revision`; `mark` is for
    /// [`Store::written_here_since`].
    Changes {
        revision: i64,
        changed: Vec<Changed>,
        mark: u64,
    },
    /// Changes after the revision asked for were pruned: this process cannot catch up.
    FellBehind { pruned_through: i64 },
}

impl Store {
    /// The revision to follow other processes' changes from (taken before any record was
    /// read); `None` when no other process can share the store (sled).
    pub fn feed_start(&self) -> Option<i64> {
        match &self.engine {
            Engine::Sled(_) => None,
            Engine::Postgres(pg) => Some(pg.start_revision),
        }
    }

    /// The records other processes changed after `revision`, as they are now. A record
    /// that does not decode is left out (and logged), so that one bad record never stops
    /// the feed.
    pub async fn changes_after(&self, revision: i64) -> Result<Followed, StoreError> {
        let Engine::Postgres(pg) = &self.engine else {
            return Ok(Followed::Changes {
                revision,
                changed: Vec::new(),
                mark: 0,
            });
        };
        let mark = pg.mark();
        match pg.changes_after(revision).await? {
            postgres::ChangesRead::FellBehind { pruned_through } => {
                Ok(Followed::FellBehind { pruned_through })
            }
            postgres::ChangesRead::Changes { revision, changed } => Ok(Followed::Changes {
                revision,
                mark,
                changed: changed
                    .into_iter()
                    .filter_map(|(table, key, raw)| {
                        Changed::decode(table, &key, raw.as_deref())
                            .inspect_err(|error| {
                                tracing::error!(%error, "a changed record does not decode: left out")
                            })
                            .ok()
                    })
                    .collect(),
            }),
        }
    }

    /// Whether this process wrote `changed`'s record after `mark` (its write may be newer
    /// than the record read): the view keeps its own then, and the next read of the feed
    /// reads the record again.
    pub fn written_here_since(&self, mark: u64, changed: &Changed) -> bool {
        match &self.engine {
            Engine::Sled(_) => false,
            Engine::Postgres(pg) => {
                let (table, key) = changed.key();
                pg.written_since(mark, table, &key)
            }
        }
    }

    /// Take, or renew, the lease on reconciling AutoScale config `config` for `lease`,
    /// unless another process holds it (and has not let it lapse for `grace`). Answers the
    /// lease while this process holds it. On sled (one process) always held, at epoch 1.
    pub async fn hold_config_lease(
        &self,
        config: &str,
        lease: std::time::Duration,
        grace: std::time::Duration,
    ) -> Result<Option<ConfigLease>, StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(Some(ConfigLease {
                epoch: 1,
                revision: 0,
            })),
            Engine::Postgres(pg) => Ok(pg
                .hold_config_lease(config, lease, grace)
                .await?
                .map(|(epoch, revision)| ConfigLease { epoch, revision })),
        }
    }

    /// Give back the config leases this process holds (a clean stop).
    pub async fn release_config_leases(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(()),
            Engine::Postgres(pg) => pg.release_config_leases().await,
        }
    }

    /// Notified when another process announces changes (PostgreSQL's `LISTEN/NOTIFY`, where
    /// the database has them): a follower reads the feed at once rather than at its next
    /// poll. `None`: poll only.
    pub fn change_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match &self.engine {
            Engine::Sled(_) => None,
            Engine::Postgres(pg) => pg.change_signal(),
        }
    }

    /// The changes read at `mark` are applied: what this process wrote up to it need no
    /// longer be kept apart from later reads.
    pub fn changes_applied(&self, mark: u64) {
        if let Engine::Postgres(pg) = &self.engine {
            pg.forget_through(mark);
        }
    }

    /// Remove the changes every follower has had time to read.
    pub async fn prune_changes(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(()),
            Engine::Postgres(pg) => pg.prune_changes().await,
        }
    }
}

/// Which token [`Store::shared_token`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedToken {
    Admin,
    Agent,
}

/// What rebuilding usage from sessions changes.
#[derive(Debug, Default, PartialEq)]
struct RebuiltUsage {
    /// Hosts whose usage differs from the stored one, with the right one.
    changed: Vec<(Uuid, Usage)>,
    /// Hosts with stored usage and no session, not closed: their record goes.
    forgotten: Vec<Uuid>,
}

/// The usage `sessions` reserve, against what is `stored`: closed hosts stay closed.
fn usage_from_sessions(sessions: &[Session], stored: &HashMap<Uuid, Usage>) -> RebuiltUsage {
    let mut usage: HashMap<Uuid, Usage> = HashMap::new();
    for session in sessions {
        let entry = usage.entry(session.agent).or_default();
        *entry = entry.plus(&session.demand);
    }
    for (id, _) in stored.iter().filter(|(_, usage)| usage.closed) {
        let entry = usage.entry(*id).or_default();
        *entry = entry.closed();
    }
    let mut rebuilt = RebuiltUsage {
        forgotten: stored
            .keys()
            .filter(|id| !usage.contains_key(id))
            .copied()
            .collect(),
        changed: usage
            .into_iter()
            .filter(|(id, usage)| stored.get(id) != Some(usage))
            .collect(),
    };
    rebuilt.forgotten.sort();
    rebuilt.changed.sort_by_key(|(id, _)| *id);
    rebuilt
}

fn corrupt(tree: &'static str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        message: message.to_string(),
    }
}

fn store_task_failed(error: &tokio::task::JoinError) -> StoreError {
    StoreError::Corrupt {
        tree: "(start-up)",
        message: format!("a start-up task failed: {error}"),
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

/// A record as sled keeps it: with its layout version.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let versioned = Versioned {
        schema: SCHEMA_VERSION,
        record: value,
    };
    // Secrets are stored as they are (and shown nowhere else).
    crate::domain::secret::revealed(|| serde_json::to_vec(&versioned))
        .expect("domain records serialize")
}

/// A record as PostgreSQL keeps it: bare JSON (the database's schema has the version).
fn encode_bare<T: Serialize>(value: &T) -> String {
    crate::domain::secret::revealed(|| serde_json::to_string(value))
        .expect("domain records serialize")
}

fn decode<T: DeserializeOwned>(tree: &'static str, raw: &[u8]) -> Result<T, StoreError> {
    if !raw.starts_with(VERSIONED_PREFIX) {
        // A bare record: PostgreSQL's, or sled's from before records carried their version
        // (the layout of version 1).
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

#[cfg(test)]
mod tests;
