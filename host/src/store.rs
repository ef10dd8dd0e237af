//! Persistence in sled: one tree per entity, opened in the data directory.
//!
//! **Architecture Invariant:** nothing sled-specific leaks out of this module; callers speak
//! in domain operations, so that another store (a PostgreSQL-protocol database) can replace it.

use std::path::Path;

/// The layout version this build writes; a data directory from a newer layout is refused.
const SCHEMA_VERSION: u32 = 1;
const META_TREE: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

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
}

/// The durable state of the broker.
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Open (or create) the store under `data_dir/db`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            // Durability comes from explicit flushes of acknowledged writes, not a timer.
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree(META_TREE)?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(raw) => {
                let found = <[u8; 4]>::try_from(raw.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: META_TREE,
                        message: "schema version is not 4 bytes".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        found,
                        known: SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(Store { db })
    }

    /// Write everything acknowledged so far to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempdir();
        {
            let store = Store::open(&dir).unwrap();
            store
                .db
                .open_tree(META_TREE)
                .unwrap()
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            store.db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(&dir),
            Err(StoreError::NewerSchema { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zonebroker-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
