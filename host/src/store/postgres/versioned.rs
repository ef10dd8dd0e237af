//! Records kept at a version (VM provider configs, AutoScale configs, servers): a write
//! names the version it replaces and the database refuses it, in the same transaction, if
//! the stored record is at another, so that no process writes back a copy older than what
//! another wrote. These writes are transactions of their own, not the journal's: each
//! answers whether it was taken. A reconcile write is also fenced: the same transaction
//! refuses it unless this process still holds the config's lease at the pass's epoch,
//! and holds the lease row (`FOR SHARE`) until it commits, so no takeover lands between
//! the check and the write.

use tokio_postgres::types::ToSql;

use super::super::{Fence, Key, StoreError, Swapped, Table};
use super::Postgres;
use super::changes;
use super::retry::retrying;
use super::schema::key_column;

/// Whether this process (`$2`) holds the lease of config `$1` at epoch `$3`, unexpired; the
/// row stays locked against a takeover until the write commits. A fenced write that stalls
/// (its process stopped or cut off) is ended by the database after `FENCED_WRITE_IDLE`, so
/// it holds the lease row no longer than that.
const FENCE: &str = "SELECT 1 FROM config_leases
                     WHERE config = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
                     FOR SHARE";

/// Close host `$1` to new sessions if it has none (with the write that marks it for
/// destruction, so no placement lands between the two).
const CLOSE_IDLE: &str = "UPDATE usage SET closed = true, revision = revision + 1
                          WHERE host = $1::text::uuid AND sessions = 0";

/// See [`FENCE`].
const FENCED_WRITE_IDLE: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

impl Postgres {
    /// The record under `key` in `table` as it is now (any process may have written it);
    /// waits for a database that is away, as the write it is read for would.
    pub async fn record(&self, table: Table, key: Key<'_>) -> Result<Option<String>, StoreError> {
        let (column, key_type) = key_column(table);
        let sql = format!(
            "SELECT record::text FROM {} WHERE {column} = $1::text::{key_type}",
            table.name()
        );
        let key = key.text();
        let row = retrying(&self.database, "reading a record", || async {
            let client = self.pool.get().await?;
            Ok::<_, super::retry::Failure>(client.query_opt(sql.as_str(), &[&key]).await?)
        })
        .await
        .map_err(|e| self.failed(e))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Write `next` (JSON; `None` deletes) under `key` in `table` if `at_expected` accepts
    /// the stored record (`None`: absent); else answer the stored record's JSON. The row is
    /// locked (`FOR UPDATE`) while it is judged, so a concurrent write waits and then
    /// judges the record this one left.
    ///
    /// Repeated after an attempt whose outcome is unknown, a write that finds its own
    /// record (or, deleting, finds none) counts as taken. A host (a server) gets its usage
    /// row with its record, and loses it with it.
    pub async fn swap(
        &self,
        table: Table,
        key: Key<'_>,
        next: Option<&str>,
        at_expected: impl Fn(Option<&str>) -> bool,
        fence: Option<&Fence>,
        close_idle: bool,
    ) -> Result<Swapped<String>, StoreError> {
        let (column, key_type) = key_column(table);
        let name = table.name();
        let select = format!(
            "SELECT record::text, record = $2::text::jsonb FROM {name}
             WHERE {column} = $1::text::{key_type} FOR UPDATE"
        );
        let update = format!(
            "UPDATE {name} SET record = $2::text::jsonb WHERE {column} = $1::text::{key_type}"
        );
        let insert = format!(
            "INSERT INTO {name} ({column}, record) VALUES ($1::text::{key_type}, $2::text::jsonb)
             ON CONFLICT ({column}) DO NOTHING"
        );
        let delete = format!("DELETE FROM {name} WHERE {column} = $1::text::{key_type}");
        let host = matches!(table, Table::Servers | Table::Agents);
        let key = key.text();
        let what = format!("a write of {name} `{key}` at its version");
        let mut attempts = 0;
        retrying(&self.database, &what, || {
            attempts += 1;
            let repeated = attempts > 1;
            let (select, update, insert, delete, key) = (&select, &update, &insert, &delete, &key);
            let at_expected = &at_expected;
            async move {
                let mut client = self.pool.get().await?;
                let params: [&(dyn ToSql + Sync); 2] = [key, &next];
                loop {
                    let transaction = client.transaction().await?;
                    if fence.is_some() {
                        transaction.batch_execute(FENCED_WRITE_IDLE).await?;
                    }
                    // A host's usage row first, then its record: placements and ends lock
                    // them in that order too. (Undone with the rest if nothing is written.)
                    if host {
                        let usage = match next {
                            Some(_) => {
                                "INSERT INTO usage (host) VALUES ($1::text::uuid)
                                 ON CONFLICT (host) DO NOTHING"
                            }
                            None => "DELETE FROM usage WHERE host = $1::text::uuid",
                        };
                        transaction.execute(usage, &[key]).await?;
                        if close_idle && transaction.execute(CLOSE_IDLE, &[key]).await? == 0 {
                            return Ok(Ok(Swapped::Busy));
                        }
                    }
                    let found = transaction.query_opt(select.as_str(), &params).await?;
                    let current: Option<String> = found.as_ref().map(|row| row.get(0));
                    let ours = found
                        .as_ref()
                        .and_then(|row| row.get::<_, Option<bool>>(1))
                        .unwrap_or(false);
                    // (Before the fence: an earlier attempt that committed was fenced then.)
                    if repeated && (ours || (next.is_none() && current.is_none())) {
                        return Ok(Ok(Swapped::Done));
                    }
                    // The record's row, then the lease's: every fenced write locks them in
                    // that order, and a change of a lease's holder locks only the lease's.
                    if let Some(fence) = fence {
                        let params: [&(dyn ToSql + Sync); 3] =
                            [&fence.config, &self.id, &fence.epoch];
                        if transaction.query_opt(FENCE, &params).await?.is_none() {
                            return Ok(Err(fence.clone()));
                        }
                    }
                    if !at_expected(current.as_deref()) {
                        return Ok(Ok(Swapped::Stale(current)));
                    }
                    let written = match (next, &current) {
                        (Some(_), Some(_)) => transaction.execute(update.as_str(), &params).await?,
                        (Some(_), None) => transaction.execute(insert.as_str(), &params).await?,
                        (None, _) => transaction.execute(delete.as_str(), &[key]).await?,
                    };
                    if written == 0 && next.is_some() {
                        // Another process inserted it since the row was read (there was no
                        // row to lock then): judge what it wrote.
                        continue;
                    }
                    changes::record(&transaction, self.feed_writer, [(table, key.as_str())])
                        .await?;
                    transaction.commit().await?;
                    return Ok(Ok(Swapped::Done));
                }
            }
        })
        .await
        .map_err(|e| self.failed(e))?
        .map_err(StoreError::Fenced)
    }
}
