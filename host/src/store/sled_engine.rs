//! The embedded engine: one sled tree per table in the data directory, for one process.
//! Writes are applied to sled at once and made durable by a group commit (one fsync shared
//! by every write that arrived meanwhile); reservations are compare-and-swaps on the usage
//! record.

use std::path::Path;

use uuid::Uuid;

use super::commit::{CommitError, GroupCommit};
use super::{Key, SCHEMA_VERSION, Secrets, StoreError, Table, corrupt, decode, encode};
use crate::domain::capacity::Usage;

const SCHEMA_KEY: &[u8] = b"schema_version";
const USER_KEY_SECRET: &[u8] = b"user_key_secret";
const CHECKIN_KEY: &[u8] = b"checkin_key";
const INSTALLATION_ID: &[u8] = b"installation_id";

pub(super) struct SledEngine {
    pub(super) db: sled::Db,
    /// By [`Table`], in [`Table::ALL`]'s order.
    trees: Vec<sled::Tree>,
    commit: GroupCommit,
}

impl SledEngine {
    pub fn open(path: &Path) -> Result<(SledEngine, Secrets), StoreError> {
        let db = sled::Config::new()
            .path(path)
            // Durability comes from explicit group commits of acknowledged writes.
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree("meta")?;
        check_schema(&meta)?;
        let secrets = Secrets {
            user_key_secret: random_secret(&meta, USER_KEY_SECRET)?,
            checkin_key: random_secret(&meta, CHECKIN_KEY)?,
            installation_id: installation_id(&meta)?,
        };
        db.flush()?;
        let trees = Table::ALL
            .iter()
            .map(|table| db.open_tree(table.name()))
            .collect::<Result<_, _>>()?;
        let engine = SledEngine {
            trees,
            commit: GroupCommit::start(db.clone()).map_err(StoreError::Flusher)?,
            db,
        };
        Ok((engine, secrets))
    }

    /// Compiled plugin artifacts live in the same database.
    pub fn artifact_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("plugin_artifacts")?)
    }

    pub(super) fn tree(&self, table: Table) -> &sled::Tree {
        // `Table::ALL` lists the tables in declaration order (checked by a test).
        &self.trees[table as usize]
    }

    pub async fn commit(&self) -> Result<(), CommitError> {
        self.commit.commit().await
    }

    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn put(&self, table: Table, key: Key, value: Vec<u8>) -> Result<(), StoreError> {
        self.tree(table).insert(key.bytes(), value)?;
        Ok(())
    }

    pub fn delete(&self, table: Table, key: Key) -> Result<(), StoreError> {
        self.tree(table).remove(key.bytes())?;
        Ok(())
    }

    pub fn get(&self, table: Table, key: Key) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(table).get(key.bytes())?.map(|v| v.to_vec()))
    }

    /// Every value of `table`.
    pub fn scan(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree(table)
            .iter()
            .values()
            .map(|value| Ok(value?.to_vec()))
            .collect()
    }

    /// Every key and value of `table`.
    pub fn entries(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.tree(table)
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// Write `next` (`None` deletes) under `key` if `at_expected` accepts the stored value
    /// (`None`: absent), by compare-and-swap on its bytes; answers the stored value instead
    /// if it does not.
    pub fn swap(
        &self,
        table: Table,
        key: Key,
        next: Option<Vec<u8>>,
        at_expected: impl Fn(Option<&[u8]>) -> bool,
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let tree = self.tree(table);
        let mut current = tree.get(key.bytes())?;
        loop {
            if !at_expected(current.as_deref()) {
                return Ok(Err(current.map(|v| v.to_vec())));
            }
            match tree.compare_and_swap(key.bytes(), current, next.clone())? {
                Ok(()) => return Ok(Ok(())),
                Err(conflict) => current = conflict.current,
            }
        }
    }

    /// A compare-and-swap loop on `host`'s usage record.
    pub fn update_usage(
        &self,
        host: Uuid,
        change: impl Fn(Usage) -> Option<Usage>,
    ) -> Result<Option<Usage>, StoreError> {
        let tree = self.tree(Table::Usage);
        let key = host.as_bytes();
        let mut current = tree.get(key)?;
        loop {
            let usage = match &current {
                Some(raw) => decode("usage", raw)?,
                None => Usage::default(),
            };
            let Some(next) = change(usage) else {
                return Ok(None);
            };
            match tree.compare_and_swap(key, current, Some(encode(&next)))? {
                Ok(()) => return Ok(Some(next)),
                Err(conflict) => current = conflict.current,
            }
        }
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

#[cfg(test)]
pub(super) const SCHEMA_KEY_FOR_TESTS: &[u8] = SCHEMA_KEY;
