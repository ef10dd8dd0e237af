//! The change feed: how each process learns what the others changed.
//!
//! Every transaction that writes records (a journal batch, a write at a version) also takes
//! the next `revision` and lists the records it changed in `changes`, with that revision
//! and its writer. The `UPDATE` of the one `revision` row holds its lock until the
//! transaction ends, so revisions commit in the order they were taken: a reader that sees
//! revision r has seen every one before it (no gap fills in later, unlike a sequence).
//!
//! A follower remembers the last revision it read, reads the changes after it that other
//! processes wrote, and reads those records as they are now, in the same snapshot (so the
//! newest record wins whatever order the changes came in). Sessions and usage are not in
//! the feed: placements judge usage in the database.
//!
//! Changes are kept for [`KEPT_FOR`]; `revision.pruned_through` says up to which revision
//! they were removed, so a follower further behind knows it missed some.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::super::{StoreError, Table};
use super::Postgres;
use super::schema::key_column;

/// How long a change stays in `changes`.
pub const KEPT_FOR: Duration = Duration::from_secs(300);

/// Take the next revision and list `$1` (tables) / `$2` (keys) under it, written by `$3`.
const RECORD: &str = "
    WITH next AS (UPDATE revision SET value = value + 1 WHERE singleton RETURNING value)
    INSERT INTO changes (revision, kind, key, writer, written_at)
    SELECT next.value, c.kind, c.key, $3, clock_timestamp()
    FROM next, unnest($1::text[], $2::text[]) AS c(kind, key)";

/// Who lists changes: this process, and whether it announces them ([`super::notify`]).
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    pub id: Uuid,
    pub notify: bool,
}

/// List `changed` (tables and keys) under the next revision, inside `transaction`, and
/// announce them at commit if `writer` does; nothing when none of them is in the feed.
pub async fn record(
    transaction: &deadpool_postgres::Transaction<'_>,
    writer: Writer,
    changed: impl IntoIterator<Item = (Table, &str)>,
) -> Result<(), tokio_postgres::Error> {
    let (kinds, keys): (Vec<&str>, Vec<&str>) = changed
        .into_iter()
        .filter(|(table, _)| table.in_feed())
        .map(|(table, key)| (table.name(), key))
        .unzip();
    if kinds.is_empty() {
        return Ok(());
    }
    let statement = transaction.prepare_cached(RECORD).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&kinds, &keys, &writer.id];
    let listed = transaction.execute(&statement, &params);
    if writer.notify {
        let announcement = [super::notify::CHANNEL.to_string(), writer.id.to_string()];
        let announce_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&announcement[0], &announcement[1]];
        let announce = transaction.execute("SELECT pg_notify($1, $2)", &announce_params);
        let (listed, announced) = tokio::join!(listed, announce);
        listed?;
        announced?;
    } else {
        listed.await?;
    }
    Ok(())
}

/// What changed after a revision.
pub enum Read {
    Changes {
        /// The revision the records were read at: every change up to it is in them.
        revision: i64,
        /// Each record another process changed: its table, key and JSON now (`None`: gone).
        changed: Vec<(Table, String, Option<String>)>,
    },
    /// Changes after the revision asked for were pruned.
    FellBehind { pruned_through: i64 },
}

impl Postgres {
    /// The records other processes changed after `after`, and those an earlier read left
    /// to be read again, as they are now, read in one snapshot.
    pub async fn changes_after(&self, after: i64) -> Result<Read, StoreError> {
        let again = std::mem::take(&mut *self.recheck.lock().unwrap_or_else(|p| p.into_inner()));
        let read = self.read_changes(after, &again).await;
        if read.is_err() {
            self.recheck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(again);
        }
        read
    }

    async fn read_changes(
        &self,
        after: i64,
        again: &BTreeSet<(Table, String)>,
    ) -> Result<Read, StoreError> {
        let sql = |e: tokio_postgres::Error| self.sql(&e);
        let mut client = self.client().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(sql)?;
        let row = transaction
            .query_one(
                "SELECT value, pruned_through FROM revision WHERE singleton",
                &[],
            )
            .await
            .map_err(sql)?;
        let (revision, pruned_through): (i64, i64) = (row.get(0), row.get(1));
        if after < pruned_through {
            return Ok(Read::FellBehind { pruned_through });
        }
        let rows = transaction
            .query(
                "SELECT DISTINCT kind, key FROM changes WHERE revision > $1 AND writer <> $2",
                &[&after, &self.id],
            )
            .await
            .map_err(sql)?;
        let mut keys: BTreeMap<Table, BTreeSet<String>> = BTreeMap::new();
        for (table, key) in again {
            keys.entry(*table).or_default().insert(key.clone());
        }
        for row in &rows {
            let kind: &str = row.get(0);
            match Table::named(kind) {
                Some(table) if table.in_feed() => {
                    keys.entry(table).or_default().insert(row.get(1));
                }
                _ => tracing::warn!(
                    database = self.database,
                    kind,
                    "a change to a kind of record this build does not follow: ignored"
                ),
            }
        }
        let mut changed = Vec::with_capacity(rows.len());
        for (table, keys) in keys {
            let keys: Vec<String> = keys.into_iter().collect();
            let (column, key_type) = key_column(table);
            let query = format!(
                "SELECT {column}::text, record::text FROM {} WHERE {column} = ANY($1::text[]::{key_type}[])",
                table.name()
            );
            let mut found: BTreeMap<String, String> = transaction
                .query(&query, &[&keys])
                .await
                .map_err(sql)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            for key in keys {
                let record = found.remove(&key);
                changed.push((table, key, record));
            }
        }
        transaction.commit().await.map_err(sql)?;
        Ok(Read::Changes { revision, changed })
    }

    /// Remove the changes older than [`KEPT_FOR`] and say up to which revision they went.
    pub async fn prune_changes(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "WITH pruned AS (
                     DELETE FROM changes WHERE written_at < now() - make_interval(secs => $1)
                     RETURNING revision
                 )
                 UPDATE revision SET pruned_through = greatest(
                     pruned_through, (SELECT max(revision) FROM pruned))
                 WHERE singleton AND EXISTS (SELECT 1 FROM pruned)",
                &[&KEPT_FOR.as_secs_f64()],
            )
            .await
            .map_err(|e| self.sql(&e))?;
        Ok(())
    }
}
