//! The PostgreSQL schema and its migrations, applied at start under a row lock.
//!
//! Every table keeps a domain record as `jsonb` under its key, with the constraints the
//! broker relies on expressed in SQL (names and ids as primary keys, an agent's host name
//! unique). The SQL is plain (no advisory locks, no extensions; `NOTIFY` only as an
//! optional wake-up) so that PostgreSQL-compatible databases (CockroachDB, YugabyteDB) can
//! run it.

use tokio_postgres::error::SqlState;

use super::super::Table;

/// Migration `n` (1-based) takes the schema from version `n - 1` to `n`. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the embedded store's trees.
    r#"
    CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE zones (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE images (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE agents (
        id uuid PRIMARY KEY,
        record jsonb NOT NULL,
        hostname text GENERATED ALWAYS AS (record->>'hostname') STORED,
        CONSTRAINT agents_hostname_unique UNIQUE (hostname)
    );
    CREATE TABLE sessions (id uuid PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE usage (host uuid PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE plugins (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE plugin_blobs (sha256 text PRIMARY KEY, component bytea NOT NULL);
    CREATE TABLE pools (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE provider_configs (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE autoscale_configs (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE servers (id uuid PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE workspaces (name text PRIMARY KEY, record jsonb NOT NULL);
    CREATE TABLE ldap_configs (name text PRIMARY KEY, record jsonb NOT NULL);
    "#,
    // 2: the lease of the one process that may serve the database (until several managers
    // can share it).
    r#"
    CREATE TABLE manager_lease (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        holder uuid NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        expires_at timestamptz NOT NULL
    );
    "#,
    // 3: usage as columns that placements reserve with one conditional UPDATE, never
    // rebuilt at start; every agent and server has its row. (No CHECK constraints: every
    // placement would evaluate them, and the statements never take a column below zero.)
    r#"
    ALTER TABLE usage
        ADD COLUMN sessions integer NOT NULL DEFAULT 0,
        ADD COLUMN millicores bigint NOT NULL DEFAULT 0,
        ADD COLUMN memory bigint NOT NULL DEFAULT 0,
        ADD COLUMN gpus integer NOT NULL DEFAULT 0,
        ADD COLUMN closed boolean NOT NULL DEFAULT false,
        ADD COLUMN revision bigint NOT NULL DEFAULT 0;
    UPDATE usage SET
        sessions = coalesce((record->>'sessions')::integer, 0),
        millicores = coalesce((record->>'millicores')::bigint, 0),
        memory = coalesce((record->>'memory')::bigint, 0),
        gpus = coalesce((record->>'gpus')::integer, 0),
        closed = coalesce((record->>'closed')::boolean, false);
    ALTER TABLE usage DROP COLUMN record;
    INSERT INTO usage (host) SELECT id FROM agents UNION SELECT id FROM servers
        ON CONFLICT (host) DO NOTHING;
    "#,
    // 4: the change feed: every transaction that changes records takes the next revision
    // (the row lock orders them: revisions commit in order) and lists what it changed, so
    // that every process can follow the others' changes.
    r#"
    CREATE TABLE revision (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        value bigint NOT NULL,
        pruned_through bigint NOT NULL
    );
    INSERT INTO revision (singleton, value, pruned_through) VALUES (true, 0, 0);
    CREATE TABLE changes (
        revision bigint NOT NULL,
        kind text NOT NULL,
        key text NOT NULL,
        writer uuid NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (revision, kind, key)
    );
    CREATE INDEX changes_written_at ON changes (written_at);
    "#,
    // 5: who reconciles each AutoScale config: a lease with an expiry, and an epoch that
    // grows with every change of holder (the fence of the holder's writes).
    r#"
    CREATE TABLE config_leases (
        config text PRIMARY KEY,
        holder uuid NOT NULL,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    "#,
    // 6: what the reconcile loop last found per AutoScale config, written by the process
    // that reconciles it, shown by all.
    r#"
    CREATE TABLE config_status (name text PRIMARY KEY, record jsonb NOT NULL);
    "#,
    // 7: several processes share a database (the change feed, config leases, servers
    // written at a version): the lease of the one process that served it goes, unless
    // an older zonebroker still holds it (it writes servers without a version and
    // reconciles unfenced: it must be stopped first).
    r#"
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM manager_lease WHERE expires_at > now()) THEN
            RAISE EXCEPTION 'an older zonebroker (one process per database) still serves this database: stop it, then start this one';
        END IF;
    END $$;
    DROP TABLE manager_lease;
    "#,
];

/// The schema version this build creates and understands.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The key column of `table`, and its SQL type.
pub fn key_column(table: Table) -> (&'static str, &'static str) {
    match table {
        Table::Usage => ("host", "uuid"),
        Table::PluginBlobs => ("sha256", "text"),
        table if table.keyed_by_id() => ("id", "uuid"),
        _ => ("name", "text"),
    }
}

/// What migrating found.
pub enum Migrated {
    /// From this version to [`VERSION`].
    Upgraded {
        from: i32,
    },
    Current,
    /// The database is at a newer version than this build knows.
    Newer(i32),
}

/// Create the schema or bring it to [`VERSION`], in one transaction holding the lock on the
/// version row, so that processes starting together migrate once: the others wait on the
/// row, then find it current.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
) -> Result<Migrated, tokio_postgres::Error> {
    // Two processes creating the table at once: one may fail on the catalog (its row type
    // already exists, or the table); the table exists then.
    for attempt in 0.. {
        match client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS zonebroker_schema (
                     singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                     version integer NOT NULL
                 )",
            )
            .await
        {
            Ok(()) => break,
            Err(error)
                if attempt < 5
                    && matches!(
                        error.code(),
                        Some(
                            &SqlState::UNIQUE_VIOLATION
                                | &SqlState::DUPLICATE_TABLE
                                | &SqlState::DUPLICATE_OBJECT
                        )
                    ) => {}
            Err(error) => return Err(error),
        }
    }
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO zonebroker_schema (singleton, version) VALUES (true, 0)
             ON CONFLICT (singleton) DO NOTHING",
            &[],
        )
        .await?;
    let found: i32 = transaction
        .query_one(
            "SELECT version FROM zonebroker_schema WHERE singleton FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    if found > VERSION {
        return Ok(Migrated::Newer(found));
    }
    if found == VERSION {
        transaction.commit().await?;
        return Ok(Migrated::Current);
    }
    for migration in &MIGRATIONS[found as usize..] {
        transaction.batch_execute(migration).await?;
    }
    transaction
        .execute(
            "UPDATE zonebroker_schema SET version = $1 WHERE singleton",
            &[&VERSION],
        )
        .await?;
    transaction.commit().await?;
    Ok(Migrated::Upgraded { from: found })
}
