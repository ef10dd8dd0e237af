//! Usage on PostgreSQL: columns of the `usage` table, changed only by single statements
//! that check and change them in the database (a placement's conditional `UPDATE` and the
//! session it records, a session's end and its release), so that no process reserves
//! against a copy. Each statement is its own transaction and is safe to repeat after an
//! attempt whose outcome is unknown.
//!
//! The engine keeps the last usage it saw of each host (with the row's `revision`, so an
//! older answer never replaces a newer one) for the broker's view.

use std::collections::HashMap;
use std::sync::LazyLock;

use tokio_postgres::Row;
use uuid::Uuid;

use super::super::{Offer, Reserved, SessionEnded, StoreError, encode_bare};
use super::Postgres;
use super::retry::{Failure, retrying};
use crate::domain::capacity::{Demand, Usage};
use crate::domain::session::{HostKind, Session};

/// The usage columns every statement answers, in this order.
const USAGE: &str = "sessions, millicores, memory, gpus, closed, revision";

/// Reserve on the best-ranked offer with room, record its session and, on a pool server,
/// end the server's idle time, in one statement. `lock` is `SKIP LOCKED` (rows another
/// placement holds are passed over) or empty (wait for them, then check them again).
fn place_sql(lock: &str) -> String {
    format!(
        "WITH offer AS (
             SELECT * FROM unnest($1::integer[], $2::uuid[], $3::bigint[], $4::bigint[],
                                  $5::integer[], $6::integer[], $7::text[])
                 AS o(rank, host, millicores, memory, gpus, max_sessions, session)
         ), pick AS (
             SELECT o.rank, o.host, o.session FROM usage u JOIN offer o ON o.host = u.host
             WHERE NOT u.closed
               AND u.sessions < o.max_sessions
               AND u.millicores + $8 <= o.millicores
               AND u.memory + $9 <= o.memory
               AND u.gpus + $10 <= o.gpus
             ORDER BY o.rank LIMIT 1
             FOR UPDATE OF u {lock}
         ), reserved AS (
             UPDATE usage u SET sessions = u.sessions + 1, millicores = u.millicores + $8,
                 memory = u.memory + $9, gpus = u.gpus + $10, revision = u.revision + 1
             FROM pick WHERE u.host = pick.host
             RETURNING pick.rank, pick.session, u.host, u.{}
         ), recorded AS (
             INSERT INTO sessions (id, record) SELECT $11, session::jsonb FROM reserved
         ), busy AS (
             UPDATE servers s SET record = jsonb_set(s.record, '{{idle_since_ms}}', 'null')
             FROM reserved r WHERE s.id = r.host AND $12
         )
         SELECT rank, host, {USAGE} FROM reserved",
        USAGE.replace(", ", ", u.")
    )
}

static PLACE_SKIPPING_LOCKED: LazyLock<String> = LazyLock::new(|| place_sql("SKIP LOCKED"));
static PLACE_WAITING: LazyLock<String> = LazyLock::new(|| place_sql(""));

/// Where a session already recorded is, and its host's usage (a placement repeated after
/// a lost answer).
const PLACED: &str = "SELECT (s.record->>'agent')::uuid, u.sessions, u.millicores, u.memory,
                             u.gpus, u.closed, u.revision
                      FROM sessions s JOIN usage u ON u.host = (s.record->>'agent')::uuid
                      WHERE s.id = $1";

/// End a session, give back what it reserved (closing the host if `$6`), and on a pool
/// server (`$8`) mark it spent if `$6` and idle from `$7` if no session is left. Answers
/// whether the session was there and the host's usage after (no revision: the host is
/// gone).
const END_SESSION: &str = "
    WITH ended AS (
        DELETE FROM sessions WHERE id = $1 RETURNING id
    ), released AS (
        UPDATE usage u SET sessions = greatest(u.sessions - 1, 0),
            millicores = greatest(u.millicores - $3, 0), memory = greatest(u.memory - $4, 0),
            gpus = greatest(u.gpus - $5, 0), closed = u.closed OR $6,
            revision = u.revision + 1
        WHERE u.host = $2 AND EXISTS (SELECT 1 FROM ended)
        RETURNING u.*
    ), idle AS (
        UPDATE servers s SET record = s.record || jsonb_build_object(
            'spent', coalesce((s.record->>'spent')::boolean, false) OR $6,
            'idle_since_ms', CASE WHEN r.sessions = 0 THEN to_jsonb($7::bigint)
                                  ELSE s.record->'idle_since_ms' END)
        FROM released r WHERE s.id = r.host AND $8
    )
    SELECT EXISTS (SELECT 1 FROM ended), coalesce(r.sessions, u.sessions, 0),
           coalesce(r.millicores, u.millicores, 0), coalesce(r.memory, u.memory, 0),
           coalesce(r.gpus, u.gpus, 0), coalesce(r.closed, u.closed, false),
           coalesce(r.revision, u.revision)
    FROM (SELECT 1) AS one
        LEFT JOIN usage u ON u.host = $2
        LEFT JOIN released r ON r.host = u.host";

/// End every session on host `$1` and leave it empty and closed. Answers the sessions ended
/// and the row's revision.
const END_SESSIONS_ON: &str = "
    WITH ended AS (
        DELETE FROM sessions WHERE (record->>'agent')::uuid = $1 RETURNING id
    ), emptied AS (
        INSERT INTO usage (host, closed) VALUES ($1, true)
        ON CONFLICT (host) DO UPDATE SET sessions = 0, millicores = 0, memory = 0, gpus = 0,
            closed = true, revision = usage.revision + 1
        RETURNING revision
    )
    SELECT ARRAY(SELECT id FROM ended), (SELECT revision FROM emptied)";

/// Close host `$1` to new sessions (only if it has none when `$2`).
const CLOSE: &str = "
    INSERT INTO usage (host, closed) VALUES ($1, true)
    ON CONFLICT (host) DO UPDATE SET closed = true, revision = usage.revision + 1
    WHERE NOT $2 OR usage.sessions = 0
    RETURNING sessions, millicores, memory, gpus, closed, revision";

/// The usage columns of `row` from column `at` on, and the row's revision after them.
fn usage_at(row: &Row, at: usize) -> (Usage, i64) {
    (usage_columns(row, at), row.get(at + 5))
}

fn usage_columns(row: &Row, at: usize) -> Usage {
    Usage {
        sessions: row.get::<_, i32>(at) as u32,
        millicores: row.get::<_, i64>(at + 1) as u64,
        memory: row.get::<_, i64>(at + 2) as u64,
        gpus: row.get::<_, i32>(at + 3) as u32,
        closed: row.get(at + 4),
    }
}

/// Every host's usage and revision.
pub async fn load(
    client: &tokio_postgres::Client,
) -> Result<HashMap<Uuid, (i64, Usage)>, tokio_postgres::Error> {
    let rows = client
        .query(&format!("SELECT host, {USAGE} FROM usage"), &[])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let (usage, revision) = usage_at(row, 1);
            (row.get(0), (revision, usage))
        })
        .collect())
}

impl Postgres {
    /// See [`crate::store::Store::place`].
    pub async fn place(
        &self,
        demand: &Demand,
        offers: &[Offer],
    ) -> Result<Option<Reserved>, StoreError> {
        let Some(first) = offers.first() else {
            return Ok(None);
        };
        let session_id = first.session.id;
        let on_server = first.session.host_kind == HostKind::Server;
        let ranks: Vec<i32> = (0..offers.len() as i32).collect();
        let hosts: Vec<Uuid> = offers.iter().map(|o| o.host).collect();
        let millicores: Vec<i64> = offers
            .iter()
            .map(|o| o.capacity.millicores as i64)
            .collect();
        let memory: Vec<i64> = offers.iter().map(|o| o.capacity.memory as i64).collect();
        let gpus: Vec<i32> = offers.iter().map(|o| o.capacity.gpus as i32).collect();
        let max_sessions: Vec<i32> = offers
            .iter()
            .map(|o| o.capacity.max_sessions as i32)
            .collect();
        let sessions: Vec<String> = offers.iter().map(|o| encode_bare(&o.session)).collect();
        let need = (
            demand.millicores as i64,
            demand.memory as i64,
            demand.gpus as i32,
        );
        let mut tries = 0;
        let placed = retrying(&self.database, "a placement", || {
            tries += 1;
            let repeated = tries > 1;
            let (ranks, hosts, millicores, memory, gpus, max_sessions, sessions) = (
                &ranks,
                &hosts,
                &millicores,
                &memory,
                &gpus,
                &max_sessions,
                &sessions,
            );
            async move {
                let client = self.pool.get().await?;
                if repeated && let Some(row) = client.query_opt(PLACED, &[&session_id]).await? {
                    // The attempt before committed and its answer was lost.
                    let host: Uuid = row.get(0);
                    let (usage, revision) = usage_at(&row, 1);
                    let rank = hosts.iter().position(|h| *h == host).unwrap_or(0);
                    return Ok(Some((rank, host, usage, revision)));
                }
                for sql in [&*PLACE_SKIPPING_LOCKED, &*PLACE_WAITING] {
                    let statement = client.prepare_cached(sql).await?;
                    let row = client
                        .query_opt(
                            &statement,
                            &[
                                ranks,
                                hosts,
                                millicores,
                                memory,
                                gpus,
                                max_sessions,
                                sessions,
                                &need.0,
                                &need.1,
                                &need.2,
                                &session_id,
                                &on_server,
                            ],
                        )
                        .await?;
                    if let Some(row) = row {
                        let (usage, revision) = usage_at(&row, 2);
                        return Ok(Some((
                            row.get::<_, i32>(0) as usize,
                            row.get(1),
                            usage,
                            revision,
                        )));
                    }
                }
                Ok::<_, Failure>(None)
            }
        })
        .await
        .map_err(|e| self.failed(e))?;
        Ok(placed.map(|(offer, host, usage, revision)| {
            self.learn(host, revision, usage);
            Reserved { offer, usage }
        }))
    }

    /// See [`crate::store::Store::end_session`].
    pub async fn end_session(
        &self,
        session: &Session,
        single_use: bool,
        now_ms: u64,
    ) -> Result<SessionEnded, StoreError> {
        let demand = (
            session.demand.millicores as i64,
            session.demand.memory as i64,
            session.demand.gpus as i32,
        );
        let on_server = session.host_kind == HostKind::Server;
        let now = now_ms as i64;
        let row = retrying(&self.database, "ending a session", || async {
            let client = self.pool.get().await?;
            let statement = client.prepare_cached(END_SESSION).await?;
            Ok::<_, Failure>(
                client
                    .query_one(
                        &statement,
                        &[
                            &session.id,
                            &session.agent,
                            &demand.0,
                            &demand.1,
                            &demand.2,
                            &single_use,
                            &now,
                            &on_server,
                        ],
                    )
                    .await?,
            )
        })
        .await
        .map_err(|e| self.failed(e))?;
        let usage = usage_columns(&row, 1);
        if let Some(revision) = row.get(6) {
            self.learn(session.agent, revision, usage);
        }
        Ok(SessionEnded {
            existed: row.get(0),
            usage,
        })
    }

    /// See [`crate::store::Store::end_sessions_on`].
    pub async fn end_sessions_on(&self, host: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let row = retrying(&self.database, "ending a host's sessions", || async {
            let client = self.pool.get().await?;
            Ok::<_, Failure>(client.query_one(END_SESSIONS_ON, &[&host]).await?)
        })
        .await
        .map_err(|e| self.failed(e))?;
        self.learn(host, row.get(1), Usage::default().closed());
        Ok(row.get(0))
    }

    /// See [`crate::store::Store::close`]: answers the usage if it closed.
    pub async fn close_host(
        &self,
        host: Uuid,
        only_if_idle: bool,
    ) -> Result<Option<Usage>, StoreError> {
        let row = retrying(&self.database, "closing a host", || async {
            let client = self.pool.get().await?;
            Ok::<_, Failure>(client.query_opt(CLOSE, &[&host, &only_if_idle]).await?)
        })
        .await
        .map_err(|e| self.failed(e))?;
        Ok(row.map(|row| {
            let (usage, revision) = usage_at(&row, 0);
            self.learn(host, revision, usage);
            usage
        }))
    }

    /// Remember `host`'s usage at `revision` unless a newer one is known.
    fn learn(&self, host: Uuid, revision: i64, usage: Usage) {
        let mut known = self.usage_map();
        match known.get(&host) {
            Some((seen, _)) if *seen > revision => {}
            _ => {
                known.insert(host, (revision, usage));
            }
        }
    }
}
