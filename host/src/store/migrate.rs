//! `zonebroker migrate`: copy an embedded (sled) installation into an empty PostgreSQL
//! database, records, components, secrets and tokens alike, so that an installation grows
//! from one process to a shared database without being rebuilt by hand.

use std::path::Path;

use super::postgres::Seed;
use super::{DatabaseOptions, Engine, Key, Store, StoreError, Table, corrupt, decode, encode_bare};

/// The tokens of the installation being copied (its token files), if it had them.
#[derive(Default)]
pub struct Tokens {
    pub admin: Option<String>,
    pub agent: Option<String>,
}

/// What was copied: records per table.
#[derive(Debug)]
pub struct Copied {
    pub tables: Vec<(&'static str, usize)>,
}

/// Copy the sled store in `data_dir` (which no server may have open) into the empty
/// database `options` names. The copy keeps the installation id, the check-in signing key
/// and the user-key secret, so VMs, check-in tokens and strategies' user keys stay valid.
/// Refuses a database that holds any record.
pub async fn copy_into_database(
    data_dir: &Path,
    options: &DatabaseOptions,
    tokens: Tokens,
) -> Result<Copied, StoreError> {
    let from = {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Store::open(&data_dir))
            .await
            .map_err(|e| super::store_task_failed(&e))??
    };
    let Engine::Sled(sled) = &from.engine else {
        unreachable!("Store::open opens sled")
    };
    let seed = Seed {
        secrets: &from.secrets,
        admin_token: tokens.admin,
        agent_token: tokens.agent,
    };
    let to = Store::open_postgres(options, data_dir, Some(&seed)).await?;
    let Engine::Postgres(pg) = &to.engine else {
        unreachable!("open_postgres opens PostgreSQL")
    };
    let mut tables = Vec::new();
    let mut usage = Vec::new();
    for table in Table::ALL {
        let entries = sled.entries(table)?;
        for (key, value) in &entries {
            let text = if table.keyed_by_id() {
                uuid::Uuid::from_slice(key)
                    .map_err(|e| corrupt(table.name(), e))?
                    .to_string()
            } else {
                String::from_utf8(key.clone()).map_err(|e| corrupt(table.name(), e))?
            };
            if table == Table::PluginBlobs {
                pg.stage_blob(&text, Some(value.clone()));
            } else if table == Table::Usage {
                let host = uuid::Uuid::from_slice(key).map_err(|e| corrupt("usage", e))?;
                usage.push((host, decode("usage", value)?));
            } else {
                let record: serde_json::Value = decode(table.name(), value)?;
                pg.stage(table, Key::Name(&text), Some(encode_bare(&record)));
            }
        }
        tables.push((table, entries.len()));
    }
    to.commit().await?;
    // After the hosts' records, which give each a usage row.
    pg.copy_usage(&usage).await?;
    let counted = count_copies(pg, tables).await;
    to.flush().await?;
    Ok(Copied { tables: counted? })
}

/// Check that the database holds as many records of each table as were copied.
async fn count_copies(
    pg: &super::postgres::Postgres,
    tables: Vec<(Table, usize)>,
) -> Result<Vec<(&'static str, usize)>, StoreError> {
    let mut copied = Vec::new();
    for (table, expected) in tables {
        let found = pg.count(table).await?;
        if found != expected as i64 {
            return Err(corrupt(
                table.name(),
                format!("copied {expected} records but the database holds {found}"),
            ));
        }
        copied.push((table.name(), expected));
    }
    Ok(copied)
}
