//! The PostgreSQL engine's write journal: writes are staged in memory as they are made (under
//! the broker's lock, with no I/O) and a writer task applies them in transactions; a write
//! is acknowledged once the transaction that carries it has committed.
//!
//! One transaction carries every write staged while the previous one ran (group commit).
//! Within a batch only the last write of each key counts, so a batch is a set of upserts and
//! deletes per table that can be replayed: after a connection failure or a serialization
//! failure the same batch is retried (with back-off) until the database takes it, so a
//! database restart delays acknowledgements and loses none.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::error::SqlState;

use super::super::Table;
use super::super::commit::{CommitError, Progress};
use super::schema::key_column;
use super::{error_chain, sql_error};

/// A staged value: a record (JSON) or a component's bytes; `None` deletes.
#[derive(Debug)]
pub enum Value {
    Record(String),
    Bytes(Vec<u8>),
}

/// The writes of one batch, last write per key.
type Batch = BTreeMap<(Table, String), Option<Value>>;

struct Staged {
    writes: Batch,
    /// How many writes were staged so far.
    count: u64,
}

pub struct Journal {
    /// A std `Mutex`: held to stage a write or take a batch, never across an `.await`.
    staged: Mutex<Staged>,
    wake: Notify,
    written: Progress,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            staged: Mutex::new(Staged {
                writes: BTreeMap::new(),
                count: 0,
            }),
            wake: Notify::new(),
            written: Progress::new(),
        }
    }

    pub fn stage(&self, table: Table, key: String, value: Option<Value>) {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.writes.insert((table, key), value);
        staged.count += 1;
    }

    /// Wait until every write staged before the call is committed.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let seq = self.staged.lock().unwrap_or_else(|p| p.into_inner()).count;
        self.written.wait_for(seq, || self.wake.notify_one()).await
    }

    /// The writer: takes what is staged, commits it, reports, until the task is aborted.
    pub async fn run(&self, pool: deadpool_postgres::Pool, database: String) {
        let mut done = 0;
        loop {
            self.wake.notified().await;
            loop {
                let (batch, target) = {
                    let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
                    if staged.count == done {
                        break;
                    }
                    (std::mem::take(&mut staged.writes), staged.count)
                };
                let error = write_retrying(&pool, &batch, &database).await.err();
                done = target;
                self.written.report(target, error);
            }
        }
    }
}

/// Commit `batch`, retrying what a retry can mend; answers why it cannot be committed
/// otherwise (the database refused it: the callers' writes are lost and said so).
async fn write_retrying(
    pool: &deadpool_postgres::Pool,
    batch: &Batch,
    database: &str,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(50);
    for attempt in 1u32.. {
        match write(pool, batch).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(database, attempt, "the database took the writes again");
                }
                return Ok(());
            }
            Err(Failure::Retry(error)) => {
                tracing::warn!(
                    database,
                    attempt,
                    writes = batch.len(),
                    "cannot commit to the database, retrying in {delay:?}: {error}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(Failure::Refused(error)) => {
                tracing::error!(
                    database,
                    writes = batch.len(),
                    "the database refused a batch of writes; they are not stored: {error}"
                );
                return Err(format!("the database refused the write: {error}"));
            }
        }
    }
    unreachable!("the loop returns")
}

enum Failure {
    /// The connection or a serialization conflict: the same batch may succeed later.
    Retry(String),
    /// The database refused the writes themselves.
    Refused(String),
}

async fn write(pool: &deadpool_postgres::Pool, batch: &Batch) -> Result<(), Failure> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| Failure::Retry(error_chain(&e)))?;
    let transaction = client.transaction().await.map_err(classify)?;
    let mut tables: BTreeMap<Table, (Vec<&str>, Vec<&str>, Vec<&[u8]>, Vec<&str>)> =
        BTreeMap::new();
    for ((table, key), value) in batch {
        let (records_keys, records, blobs, deletes) = tables.entry(*table).or_default();
        match value {
            Some(Value::Record(json)) => {
                records_keys.push(key);
                records.push(json);
            }
            Some(Value::Bytes(bytes)) => {
                records_keys.push(key);
                blobs.push(bytes);
            }
            None => deletes.push(key),
        }
    }
    for (table, (keys, records, blobs, deletes)) in &tables {
        let (column, key_type) = key_column(*table);
        let name = table.name();
        if !deletes.is_empty() {
            let sql = format!("DELETE FROM {name} WHERE {column} = ANY($1::text[]::{key_type}[])");
            let statement = transaction.prepare_cached(&sql).await.map_err(classify)?;
            transaction
                .execute(&statement, &[deletes])
                .await
                .map_err(classify)?;
        }
        if !keys.is_empty() {
            let (sql, values): (String, &(dyn tokio_postgres::types::ToSql + Sync)) = if *table
                == Table::PluginBlobs
            {
                (
                    format!(
                        "INSERT INTO {name} ({column}, component)
                             SELECT k, v FROM unnest($1::text[], $2::bytea[]) AS w(k, v)
                             ON CONFLICT ({column}) DO UPDATE SET component = excluded.component"
                    ),
                    blobs,
                )
            } else {
                (
                        format!(
                            "INSERT INTO {name} ({column}, record)
                             SELECT k::{key_type}, v::jsonb FROM unnest($1::text[], $2::text[]) AS w(k, v)
                             ON CONFLICT ({column}) DO UPDATE SET record = excluded.record"
                        ),
                        records,
                    )
            };
            let statement = transaction.prepare_cached(&sql).await.map_err(classify)?;
            transaction
                .execute(&statement, &[keys, values])
                .await
                .map_err(classify)?;
        }
    }
    transaction.commit().await.map_err(classify)
}

/// Whether a retry can mend `error`: a lost connection, the server shutting down or
/// starting, a serialization failure or deadlock (CockroachDB answers 40001 to conflicts).
fn classify(error: tokio_postgres::Error) -> Failure {
    let retry = match error.code() {
        None => true,
        Some(code) => {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || code.code().starts_with("08")
                || code.code().starts_with("57P")
        }
    };
    let message = sql_error(&error);
    if retry {
        Failure::Retry(message)
    } else {
        Failure::Refused(message)
    }
}
