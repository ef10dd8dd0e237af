//! Who reconciles each AutoScale config: one row per config with its holder, an expiry and
//! a fencing epoch. A process takes a config's lease when it is free, expired (for at least
//! the grace it is asked to leave: a config of another zone is left to its own zone's
//! managers that long), or its own; the epoch grows whenever the holder changes or a lease
//! lapsed, so a write fenced on an older epoch is known stale. Times are the database's
//! (`now()`), never a process's clock.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::super::StoreError;
use super::Postgres;
use super::retry::{Failure, retrying};

/// Take or renew the lease of config `$1` for holder `$2` for `$3` seconds, unless another
/// holds it and it has not been expired for `$4` seconds. Answers the epoch if held.
const HOLD: &str = "
    INSERT INTO config_leases AS l (config, holder, epoch, expires_at)
    VALUES ($1, $2, 1, now() + make_interval(secs => $3))
    ON CONFLICT (config) DO UPDATE SET
        holder = excluded.holder,
        epoch = CASE WHEN l.holder = excluded.holder AND l.expires_at > now()
                     THEN l.epoch ELSE l.epoch + 1 END,
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at <= now() - make_interval(secs => $4)
    RETURNING epoch";

/// The change feed's revision, read after [`HOLD`] in a statement of its own: its snapshot
/// then includes every write the previous holder fenced on its lease (the lease row, held
/// `FOR SHARE` by such a write, made HOLD wait for its commit). Read in HOLD's own statement,
/// it would be the revision as of before that wait.
const REVISION: &str = "SELECT value FROM revision WHERE singleton";

impl Postgres {
    /// See [`crate::store::Store::hold_config_lease`]: the epoch, and the change feed's
    /// revision (what a new holder's view must have applied before it acts).
    pub async fn hold_config_lease(
        &self,
        config: &str,
        lease: Duration,
        grace: Duration,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let params = (lease.as_secs_f64(), grace.as_secs_f64());
        let row = retrying(&self.database, "taking a config's lease", || async {
            let mut client = self.pool.get().await?;
            let transaction = client.transaction().await?;
            // A write of the holder keeps the row `FOR SHARE` until it commits: a holder that
            // stalls inside one (stopped, cut off) is not waited for here; the database
            // ends its transaction after `FENCED_WRITE_IDLE`.
            transaction
                .batch_execute("SET LOCAL lock_timeout = '1s'")
                .await?;
            let statement = transaction.prepare_cached(HOLD).await?;
            let held = transaction
                .query_opt(&statement, &[&config, &self.id, &params.0, &params.1])
                .await;
            let held = match held {
                Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => None,
                other => other?,
            };
            let Some(held) = held else {
                return Ok::<_, Failure>(None);
            };
            transaction.commit().await?;
            let revision = client.query_one(REVISION, &[]).await?;
            Ok(Some((held.get(0), revision.get(0))))
        })
        .await
        .map_err(|e| self.failed(e))?;
        Ok(row)
    }

    /// Give back every config lease this process holds (a clean stop): they expire now, so
    /// the others take them over at once (those of another zone still leave them a lease
    /// longer to the config's own zone's managers).
    pub async fn release_config_leases(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE config_leases SET expires_at = now() WHERE holder = $1",
                &[&self.id],
            )
            .await
            .map_err(|e| self.sql(&e))?;
        Ok(())
    }
}
