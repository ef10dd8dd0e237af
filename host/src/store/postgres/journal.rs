//! The PostgreSQL engine's write journal: writes are staged in memory as they are made (under
//! the broker's lock, with no I/O) and a writer task applies them in transactions; a write
//! is acknowledged once the transaction that carries it has committed.
//!
//! One transaction carries every write staged while the previous one ran (group commit).
//! Within a batch only the last write of each key counts, so a batch is a set of upserts and
//! deletes per table that can be replayed: after a connection failure or a serialization
//! failure the same batch is retried (with back-off) until the database takes it, so a
//! database restart delays acknowledgements and loses none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::super::Table;
use super::super::commit::{CommitError, Progress};
use super::changes;
use super::retry::{Failure, retrying};
use super::schema::key_column;

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
    /// The number of the last write of each key staged after the last mark a reader of
    /// the database has finished with ([`Journal::forget_through`]).
    unsettled: HashMap<(Table, String), u64>,
}

pub struct Journal {
    /// A std `Mutex`: held to stage a write or take a batch, never across an `.await`.
    staged: Mutex<Staged>,
    wake: Notify,
    written: Progress,
    /// Every write numbered up to this one is committed (or failed): none is in flight.
    settled: AtomicU64,
}

impl Journal {
    pub fn new() -> Journal {
        Journal {
            staged: Mutex::new(Staged {
                writes: BTreeMap::new(),
                count: 0,
                unsettled: HashMap::new(),
            }),
            wake: Notify::new(),
            written: Progress::new(),
            settled: AtomicU64::new(0),
        }
    }

    pub fn stage(&self, table: Table, key: String, value: Option<Value>) {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.count += 1;
        let count = staged.count;
        staged.unsettled.insert((table, key.clone()), count);
        staged.writes.insert((table, key), value);
    }

    /// A mark: every write numbered up to it is settled (read it before reading the
    /// database, and [`Journal::written_since`] tells which keys the read may not show).
    pub fn mark(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Whether a write of `key` in `table` was staged after `mark` (staged, in flight, or
    /// committed since): a read of the database taken after the mark may predate it.
    pub fn written_since(&self, mark: u64, table: Table, key: &str) -> bool {
        let staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        // Only writes up to a finished reader's mark were forgotten: absent means written
        // at or before `mark`.
        staged
            .unsettled
            .get(&(table, key.to_string()))
            .is_some_and(|seq| *seq > mark)
    }

    /// The reader that took `mark` is done with it (it reads again with a later one): the
    /// writes up to it need no longer be told apart. Only the reader may forget, never the
    /// writer: a batch committed while a read was under way must still count as written
    /// since that read's mark.
    pub fn forget_through(&self, mark: u64) {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.unsettled.retain(|_, seq| *seq > mark);
    }

    /// Wait until every write staged before the call is committed.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let seq = self.staged.lock().unwrap_or_else(|p| p.into_inner()).count;
        self.written.wait_for(seq, || self.wake.notify_one()).await
    }

    /// The writer: takes what is staged, commits it (listing the records in the change feed
    /// as `writer`'s), reports, until the task is aborted.
    pub async fn run(
        &self,
        pool: deadpool_postgres::Pool,
        database: String,
        writer: changes::Writer,
    ) {
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
                let error = write_retrying(&pool, &batch, &database, writer).await.err();
                done = target;
                self.settled.store(target, Ordering::Release);
                self.written.report(target, error);
            }
        }
    }
}

/// Commit `batch`, retrying what a retry can mend (a batch is a set of upserts and deletes:
/// repeating it is safe); answers why it cannot be committed otherwise (the database refused
/// it: the callers' writes are lost and said so).
async fn write_retrying(
    pool: &deadpool_postgres::Pool,
    batch: &Batch,
    database: &str,
    writer: changes::Writer,
) -> Result<(), String> {
    let what = format!("a batch of {} writes", batch.len());
    retrying(database, &what, || write(pool, batch, writer)).await
}

async fn write(
    pool: &deadpool_postgres::Pool,
    batch: &Batch,
    writer: changes::Writer,
) -> Result<(), Failure> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
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
            let statement = transaction.prepare_cached(&sql).await?;
            transaction.execute(&statement, &[deletes]).await?;
            if matches!(table, Table::Agents | Table::Servers) {
                // A host's usage goes with it.
                let statement = transaction
                    .prepare_cached("DELETE FROM usage WHERE host = ANY($1::text[]::uuid[])")
                    .await?;
                transaction.execute(&statement, &[deletes]).await?;
            }
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
            let statement = transaction.prepare_cached(&sql).await?;
            transaction.execute(&statement, &[keys, values]).await?;
            if matches!(table, Table::Agents | Table::Servers) {
                // Every host has a usage row for placements to reserve on.
                let statement = transaction
                    .prepare_cached(
                        "INSERT INTO usage (host) SELECT unnest($1::text[]::uuid[])
                         ON CONFLICT (host) DO NOTHING",
                    )
                    .await?;
                transaction.execute(&statement, &[keys]).await?;
            }
        }
    }
    changes::record(
        &transaction,
        writer,
        batch.keys().map(|(table, key)| (*table, key.as_str())),
    )
    .await?;
    Ok(transaction.commit().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_as_newer_than_a_read_until_that_reader_forgets_its_mark() {
        let journal = Journal::new();
        let read_before = journal.mark();
        journal.stage(Table::Zones, "east".into(), None);
        assert!(journal.written_since(read_before, Table::Zones, "east"));
        assert!(!journal.written_since(read_before, Table::Zones, "west"));
        assert!(!journal.written_since(read_before, Table::Images, "east"));
        // The writer committing the batch does not make it older than the read: only the
        // reader, done with its mark, forgets.
        journal.settled.store(1, Ordering::Release);
        assert!(journal.written_since(read_before, Table::Zones, "east"));
        let read_after = journal.mark();
        journal.forget_through(read_before);
        assert!(journal.written_since(read_before, Table::Zones, "east"));
        journal.forget_through(read_after);
        assert!(!journal.written_since(read_after, Table::Zones, "east"));
        journal.stage(Table::Zones, "east".into(), None);
        assert!(
            journal.written_since(read_after, Table::Zones, "east"),
            "written again after the later read's mark"
        );
    }
}
