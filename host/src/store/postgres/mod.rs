//! The shared engine: PostgreSQL over `tokio-postgres`, a `deadpool` pool and rustls.
//!
//! - At open: connect, migrate the schema under a row lock ([`schema::migrate`]), read or
//!   make the installation's shared secrets and tokens in `meta` (the first process makes
//!   them, every later one reads them), and load the usage records.
//! - Writes are staged in the [`journal::Journal`] as the broker makes them and committed by a
//!   writer task, one transaction per batch; `commit().await` waits for the transaction that
//!   carries the caller's writes.
//! - Usage lives in columns, changed only by single statements that check and change it in
//!   the database ([`usage`]): a placement reserves and records its session in one
//!   statement, an ending session deletes and releases in one. Usage is never rebuilt.
//! - Any number of processes share a database: each lists what it writes in the change
//!   feed ([`changes`]) and follows the others'; records several write are written at a
//!   version ([`versioned`]); each AutoScale config is reconciled by the holder of its
//!   lease ([`config_leases`]).

mod changes;
mod config_leases;
mod journal;
mod notify;
mod retry;
mod schema;
mod session_writer;
mod usage;
mod versioned;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::{Key, Secrets, SharedToken, StoreError, Table};
use crate::domain::capacity::Usage;
pub(super) use changes::Read as ChangesRead;
use journal::{Journal, Value};
use schema::Migrated;

/// Connections per process: the journal's writer holds one, the session writer up to two
/// (a batch running its statements, one waiting for its commit); start-up reads, component
/// reads and the rare usage statements share the rest.
const POOL_SIZE: usize = 6;

/// Where the database is and how to trust it.
#[derive(Clone)]
pub struct DatabaseOptions {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...&sslrootcert=FILE]`
    /// (or libpq's `key=value` form).
    pub url: String,
    /// The CA certificates (PEM) that sign the database server's certificate; the same as
    /// `sslrootcert` in the URL.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("DatabaseOptions")
            .field("database", &describe_url(&self.url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What a migration brings into the database's `meta`: the installation's secrets, and its
/// tokens if it had them.
pub(super) struct Seed<'a> {
    pub secrets: &'a Secrets,
    pub admin_token: Option<String>,
    pub agent_token: Option<String>,
}

impl Seed<'_> {
    fn value(&self, key: &str) -> Option<Vec<u8>> {
        match key {
            "user_key_secret" => Some(self.secrets.user_key_secret.to_vec()),
            "checkin_key" => Some(self.secrets.checkin_key.to_vec()),
            "installation_id" => Some(self.secrets.installation_id.as_bytes().to_vec()),
            "admin_token" => self.admin_token.clone().map(String::into_bytes),
            "agent_token" => self.agent_token.clone().map(String::into_bytes),
            _ => None,
        }
    }
}

pub(super) struct Postgres {
    pool: deadpool_postgres::Pool,
    /// `host:port/database`, for errors and logs (never the password).
    database: String,
    journal: Arc<Journal>,
    writer: tokio::task::AbortHandle,
    /// Commits placements and session ends, many to a transaction.
    sessions: Arc<session_writer::SessionWriter>,
    session_writer: tokio::task::AbortHandle,
    /// This process among those sharing the database: the holder of its config leases and
    /// the writer of its changes.
    id: Uuid,
    /// The last usage seen of each host, with its row's revision.
    usage: Mutex<HashMap<Uuid, (i64, Usage)>>,
    /// Records a read of the change feed found changed elsewhere but left as the view had
    /// them (this process wrote them after the read's mark): read again with the next read,
    /// whether or not they change again, so that the view never keeps an older copy.
    recheck: Mutex<BTreeSet<(Table, String)>>,
    tokens: (String, String),
    runtime: tokio::runtime::Handle,
    /// The revision of the change feed when this process opened the database, before it
    /// read any record: following the feed from it misses no change.
    pub start_revision: i64,
    /// Wakes the change feed's follower when another process announces changes (`None`:
    /// the database does not take `LISTEN`; the feed is polled only).
    listener: Option<notify::Listener>,
    /// How this process lists its changes.
    feed_writer: changes::Writer,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.writer.abort();
        self.session_writer.abort();
    }
}

impl Postgres {
    /// Open the database. With `seed` (a migration), the database must hold no records, and
    /// the seed's secrets and tokens replace any it has.
    pub async fn open(
        options: &DatabaseOptions,
        seed: Option<&Seed<'_>>,
    ) -> Result<(Postgres, Secrets), StoreError> {
        let (config, ca_file) =
            parse_url(&options.url, options.ca_file.clone()).map_err(|message| {
                StoreError::Database {
                    database: describe_url(&options.url),
                    message,
                }
            })?;
        let database = describe(&config);
        let failed = |message: String| StoreError::Database {
            database: database.clone(),
            message,
        };
        let tls = tls_connector(ca_file.as_deref()).map_err(&failed)?;
        let (listen_config, listen_tls) = (config.clone(), tls.clone());
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| failed(error_chain(&e)))?;
        let sql = |e: tokio_postgres::Error| failed(sql_error(&e));
        let mut client = pool.get().await.map_err(|e| failed(error_chain(&e)))?;
        match schema::migrate(&mut client).await.map_err(sql)? {
            Migrated::Newer(found) => {
                return Err(StoreError::NewerDatabaseSchema {
                    found,
                    known: schema::VERSION,
                });
            }
            Migrated::Upgraded { from } => {
                tracing::info!(
                    database,
                    from,
                    to = schema::VERSION,
                    "database schema migrated"
                )
            }
            Migrated::Current => {}
        }
        if seed.is_some() {
            refuse_unless_empty(&client).await.map_err(&failed)?;
        }
        let (secrets, tokens) = shared_secrets(&client, seed).await.map_err(&failed)?;
        let usage = usage::load(&client).await.map_err(sql)?;
        let start_revision: i64 = client
            .query_one("SELECT value FROM revision WHERE singleton", &[])
            .await
            .map_err(sql)?
            .get(0);
        drop(client);
        let id = Uuid::new_v4();
        let listener = notify::listen(listen_config, listen_tls, id, database.clone()).await;
        let feed_writer = changes::Writer {
            id,
            notify: listener.is_some(),
        };

        let journal = Arc::new(Journal::new());
        let writer = tokio::spawn({
            let (journal, pool, database) = (journal.clone(), pool.clone(), database.clone());
            async move { journal.run(pool, database, feed_writer).await }
        })
        .abort_handle();
        let sessions = Arc::new(session_writer::SessionWriter::new());
        let session_writer = tokio::spawn({
            let (sessions, pool, database) = (sessions.clone(), pool.clone(), database.clone());
            async move { sessions.run(pool, database).await }
        })
        .abort_handle();
        tracing::info!(database, "using the PostgreSQL database");
        let engine = Postgres {
            pool,
            database,
            journal,
            writer,
            sessions,
            session_writer,
            id,
            usage: Mutex::new(usage),
            recheck: Mutex::default(),
            tokens,
            runtime: tokio::runtime::Handle::current(),
            start_revision,
            listener,
            feed_writer,
        };
        Ok((engine, secrets))
    }

    /// Run `future` to completion from synchronous code: on a blocking thread, or on an
    /// async worker that hands its other tasks off first.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(future))
            }
            _ => self.runtime.block_on(future),
        }
    }

    /// Commit what is staged (a clean stop).
    pub async fn close(&self) -> Result<(), StoreError> {
        self.commit().await
    }

    pub async fn commit(&self) -> Result<(), StoreError> {
        self.journal
            .commit()
            .await
            .map_err(|error| self.failed(error.0))
    }

    /// Notified when another process announces changes, if the database can say so.
    pub fn change_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.listener.as_ref().map(|l| l.woken.clone())
    }

    /// See [`journal::Journal::mark`].
    pub fn mark(&self) -> u64 {
        self.journal.mark()
    }

    /// Whether this process wrote `key` after `mark`: if so, the next read of the feed
    /// reads the record again.
    pub fn written_since(&self, mark: u64, table: Table, key: &str) -> bool {
        let written = self.journal.written_since(mark, table, key);
        if written {
            self.read_again(table, key);
        }
        written
    }

    /// Have the follower's next read of the feed read `key` of `table` again (a write of
    /// it whose outcome this process does not know).
    pub fn read_again(&self, table: Table, key: &str) {
        self.recheck
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((table, key.to_string()));
    }

    /// See [`journal::Journal::forget_through`].
    pub fn forget_through(&self, mark: u64) {
        self.journal.forget_through(mark)
    }

    pub fn stage(&self, table: Table, key: Key, value: Option<String>) {
        self.journal
            .stage(table, key.text(), value.map(Value::Record));
    }

    pub fn stage_blob(&self, sha256: &str, bytes: Option<Vec<u8>>) {
        self.journal.stage(
            Table::PluginBlobs,
            sha256.to_string(),
            bytes.map(Value::Bytes),
        );
    }

    pub fn token(&self, which: SharedToken) -> &str {
        match which {
            SharedToken::Admin => &self.tokens.0,
            SharedToken::Agent => &self.tokens.1,
        }
    }

    /// Every record of `table`, as committed.
    pub async fn scan(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT record::text FROM {}", table.name());
        let rows = client.query(&sql, &[]).await.map_err(|e| self.sql(&e))?;
        Ok(rows
            .iter()
            .map(|row| row.get::<_, String>(0).into_bytes())
            .collect())
    }

    /// Every record of `table` with its key, as committed.
    pub async fn scan_keyed(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let (column, _) = schema::key_column(table);
        let sql = format!("SELECT {column}::text, record::text FROM {}", table.name());
        let rows = client.query(&sql, &[]).await.map_err(|e| self.sql(&e))?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get::<_, String>(1).into_bytes()))
            .collect())
    }

    pub async fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT component FROM plugin_blobs WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .map_err(|e| self.sql(&e))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// How many rows `table` holds (`migrate` refuses a database that has any).
    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT count(*) FROM {}", table.name());
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| self.sql(&e))?;
        Ok(row.get(0))
    }

    /// The last usage seen of `host`.
    pub fn usage_of(&self, host: Uuid) -> Usage {
        self.usage_map()
            .get(&host)
            .map(|(_, usage)| *usage)
            .unwrap_or_default()
    }

    pub fn all_usage(&self) -> HashMap<Uuid, Usage> {
        self.usage_map()
            .iter()
            .map(|(host, (_, usage))| (*host, *usage))
            .collect()
    }

    /// `host` is gone (its usage row goes with its record, in the journal).
    pub fn forget_usage(&self, host: Uuid) {
        self.usage_map().remove(&host);
    }

    fn usage_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (i64, Usage)>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| self.failed(error_chain(&e)))
    }

    fn failed(&self, message: String) -> StoreError {
        StoreError::Database {
            database: self.database.clone(),
            message,
        }
    }

    fn sql(&self, error: &tokio_postgres::Error) -> StoreError {
        self.failed(sql_error(error))
    }
}

/// `migrate` copies into an empty database only.
async fn refuse_unless_empty(client: &tokio_postgres::Client) -> Result<(), String> {
    for table in Table::ALL {
        let query = format!("SELECT EXISTS (SELECT 1 FROM {})", table.name());
        let row = client
            .query_one(&query, &[])
            .await
            .map_err(|e| sql_error(&e))?;
        if row.get::<_, bool>(0) {
            return Err(format!(
                "the database already holds an installation (table `{}` has records): `migrate` copies into an empty database only",
                table.name()
            ));
        }
    }
    Ok(())
}

/// The installation's secrets and tokens in `meta`: made by the first process (each one
/// insert-if-absent, so processes starting together agree), or replaced by a migration's
/// `seed`.
async fn shared_secrets(
    client: &tokio_postgres::Client,
    seed: Option<&Seed<'_>>,
) -> Result<(Secrets, (String, String)), String> {
    let random = |n: usize| {
        let mut bytes = vec![0u8; n];
        getrandom::fill(&mut bytes)
            .map(|()| bytes)
            .map_err(|e| format!("no randomness: {e}"))
    };
    let mut shared = HashMap::new();
    for (key, made) in [
        ("user_key_secret", random(32)?),
        ("checkin_key", random(32)?),
        ("installation_id", Uuid::new_v4().as_bytes().to_vec()),
        ("admin_token", hex::encode(random(32)?).into_bytes()),
        ("agent_token", hex::encode(random(32)?).into_bytes()),
    ] {
        let (value, statement) = match seed.and_then(|seed| seed.value(key)) {
            Some(seeded) => (
                seeded,
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
            None => (
                made,
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            ),
        };
        let sql = |e: tokio_postgres::Error| sql_error(&e);
        client
            .execute(statement, &[&key, &value])
            .await
            .map_err(sql)?;
        let row = client
            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
            .await
            .map_err(sql)?;
        shared.insert(key, row.get::<_, Vec<u8>>(0));
    }
    let corrupt = |key: &str| format!("`{key}` in table `meta` is malformed");
    let secret = |key: &str| <[u8; 32]>::try_from(shared[key].as_slice()).map_err(|_| corrupt(key));
    let token = |key: &str| String::from_utf8(shared[key].clone()).map_err(|_| corrupt(key));
    let secrets = Secrets {
        user_key_secret: secret("user_key_secret")?,
        checkin_key: secret("checkin_key")?,
        installation_id: Uuid::from_slice(&shared["installation_id"])
            .map_err(|_| corrupt("installation_id"))?,
    };
    Ok((secrets, (token("admin_token")?, token("agent_token")?)))
}

/// What the database said (its message and SQLSTATE), or why it could not be asked.
fn sql_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error_chain(error),
    }
}

/// An error and its causes, `: `-separated (a TLS failure says why the handshake failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
        source = source.and_then(std::error::Error::source);
    }
    text
}

/// The URL as `tokio-postgres` reads it, and the CA file. libpq's `sslmode=verify-full` and
/// `verify-ca` are read as `require` (every TLS connection verifies the server's certificate
/// and host name with rustls, whatever the mode), `sslrootcert=FILE` as the CA file.
fn parse_url(
    url: &str,
    ca_file: Option<PathBuf>,
) -> Result<(tokio_postgres::Config, Option<PathBuf>), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut ca_file = ca_file;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "verify-full" | "verify-ca")) => kept.push("sslmode=require"),
            Some(("sslrootcert", path)) => ca_file = Some(PathBuf::from(path)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config =
        tokio_postgres::Config::from_str(&url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("zonebroker");
    }
    Ok((config, ca_file))
}

/// TLS for the database with rustls: the CA file's certificates, or the web's roots.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let roots = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            crate::tls_client::roots_from_pem(&pem, &path.display().to_string())?
        }
        None => crate::tls_client::web_roots(),
    };
    let config = crate::tls_client::client_config(roots)?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `host:port/database` of a configuration.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// `host:port/database` of a URL, or a placeholder when it does not parse.
fn describe_url(url: &str) -> String {
    parse_url(url, None)
        .map(|(config, _)| describe(&config))
        .unwrap_or_else(|_| "(an unreadable URL)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_ssl_modes_and_root_certs_are_read_and_the_password_is_never_shown() {
        let (config, ca) = parse_url(
            "postgres://zb:s3cret@db.example:6432/broker?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
        let options = DatabaseOptions {
            url: "postgres://zb:s3cret@db.example:6432/broker".into(),
            ca_file: None,
        };
        let shown = format!("{options:?}");
        assert!(shown.contains("db.example:6432/broker"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(parse_url("mysql://nope", None).is_err());
    }
}
