//! Usage on PostgreSQL: columns of the `usage` table, changed only by single statements
//! that check and change them in the database (a placement's conditional `UPDATE` and the
//! session it records, a session's end and its release), so that no process reserves
//! against a copy. Each statement is safe to repeat after an attempt whose outcome is
//! unknown. Placements and session ends are committed by the [`super::session_writer`],
//! many to a transaction; the rare operations (closing a host, ending all of its sessions)
//! are transactions of their own.
//!
//! The engine keeps the last usage it saw of each host (with the row's `revision`, so an
//! older answer never replaces a newer one) for the broker's view.

use std::collections::HashMap;
use std::sync::LazyLock;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};
use uuid::Uuid;

use super::super::{Offer, Reserved, SessionEnded, StoreError, encode_bare};
use super::Postgres;
use super::retry::{Failure, retrying};
use super::session_writer::{Done, Op};
use crate::domain::capacity::{Demand, Usage};
use crate::domain::session::{HostKind, Session};

/// The usage columns every statement answers, in this order.
const USAGE: &str = "sessions, millicores, memory, gpus, closed, revision";

/// [`USAGE`] of the table as `alias`.
fn usage_of(alias: &str) -> String {
    USAGE
        .split(", ")
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reserve on the best-ranked offer with room, record its session and, `on_server`, end
/// the server's idle time (a new version of its record if it was idle: see
/// `Server::session_placed`), in one statement. `lock` is `SKIP LOCKED` (rows another
/// placement holds are passed over) or empty (wait for them, then check them again). The
/// usage rows are found by index (`host = ANY`), whatever the planner guesses of `unnest`.
fn place_sql(lock: &str, on_server: bool) -> String {
    let busy = if on_server {
        ", busy AS (
             UPDATE servers s SET record = s.record || jsonb_build_object(
                 'idle_since_ms', null,
                 'version', coalesce((s.record->>'version')::bigint, 0) + 1)
             FROM reserved r WHERE s.id = r.host AND s.record->'idle_since_ms' <> 'null'
         )"
    } else {
        ""
    };
    format!(
        "WITH offer AS (
             SELECT * FROM unnest($1::integer[], $2::uuid[], $3::bigint[], $4::bigint[],
                                  $5::integer[], $6::integer[], $7::text[])
                 AS o(rank, host, millicores, memory, gpus, max_sessions, session)
         ), pick AS (
             SELECT o.rank, o.host, o.session FROM usage u JOIN offer o ON o.host = u.host
             WHERE u.host = ANY($2::uuid[])
               AND NOT u.closed
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
             RETURNING pick.rank, pick.session, u.host, {}
         ), recorded AS (
             INSERT INTO sessions (id, record) SELECT $11, session::jsonb FROM reserved
         ){busy}
         SELECT rank, host, {USAGE} FROM reserved",
        usage_of("u")
    )
}

/// The placement statements: skipping locked rows, then waiting for them; on an agent, on
/// a pool server.
static PLACE: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
    [false, true].map(|on_server| {
        [
            place_sql("SKIP LOCKED", on_server),
            place_sql("", on_server),
        ]
    })
});

/// Where a session already recorded is, and its host's usage (a placement repeated after
/// a lost answer).
const PLACED: &str = "SELECT (s.record->>'agent')::uuid, u.sessions, u.millicores, u.memory,
                             u.gpus, u.closed, u.revision
                      FROM sessions s JOIN usage u ON u.host = (s.record->>'agent')::uuid
                      WHERE s.id = $1";

/// End a session and give back what it reserved (closing the host if `$6`); `on_server`,
/// also mark the server spent if `$6` and idle from `$7` if no session is left, at a new
/// version if either changed (see `Server::session_ended`). Answers the host's usage after,
/// or no row if the session was not there (or its host is gone).
fn end_session_sql(on_server: bool) -> String {
    let release = "UPDATE usage u SET sessions = greatest(u.sessions - 1, 0),
            millicores = greatest(u.millicores - $3, 0), memory = greatest(u.memory - $4, 0),
            gpus = greatest(u.gpus - $5, 0), closed = u.closed OR $6,
            revision = u.revision + 1
        WHERE u.host = $2 AND EXISTS (SELECT 1 FROM ended)
        RETURNING";
    let ended = "WITH ended AS (DELETE FROM sessions WHERE id = $1 RETURNING id)";
    if on_server {
        format!(
            "{ended}, released AS ({release} u.*), idle AS (
                 UPDATE servers s SET record = s.record || jsonb_build_object(
                     'spent', coalesce((s.record->>'spent')::boolean, false) OR $6,
                     'idle_since_ms', CASE WHEN r.sessions = 0 THEN to_jsonb($7::bigint)
                                           ELSE s.record->'idle_since_ms' END,
                     'version', coalesce((s.record->>'version')::bigint, 0) + 1)
                 FROM released r WHERE s.id = r.host
                   AND ((NOT coalesce((s.record->>'spent')::boolean, false) AND $6)
                        OR (r.sessions = 0
                            AND s.record->'idle_since_ms' IS DISTINCT FROM to_jsonb($7::bigint)))
             )
             SELECT {USAGE} FROM released"
        )
    } else {
        format!("{ended} {release} {}", usage_of("u"))
    }
}

/// A host's usage (after ending a session that was not there).
const USAGE_OF: &str = "SELECT sessions, millicores, memory, gpus, closed, revision
                        FROM usage WHERE host = $1";

static END_SESSION: LazyLock<[String; 2]> = LazyLock::new(|| [false, true].map(end_session_sql));

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
    let usage = Usage {
        sessions: row.get::<_, i32>(at) as u32,
        millicores: row.get::<_, i64>(at + 1) as u64,
        memory: row.get::<_, i64>(at + 2) as u64,
        gpus: row.get::<_, i32>(at + 3) as u32,
        closed: row.get(at + 4),
    };
    (usage, row.get(at + 5))
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

/// One placement as the statements take it: the offers as columns, the demand, the
/// session's id.
pub struct Placement {
    session: Uuid,
    on_server: bool,
    ranks: Vec<i32>,
    hosts: Vec<Uuid>,
    millicores: Vec<i64>,
    memory: Vec<i64>,
    gpus: Vec<i32>,
    max_sessions: Vec<i32>,
    sessions: Vec<String>,
    need: (i64, i64, i32),
}

/// Where a placement landed: the offer, its host, the host's usage after and its revision.
pub struct Placed {
    pub offer: usize,
    pub host: Uuid,
    pub usage: Usage,
    pub revision: i64,
}

impl Placement {
    /// `offers` is not empty; every offer carries the same session.
    pub fn new(demand: &Demand, offers: &[Offer]) -> Placement {
        let column = |f: &dyn Fn(&Offer) -> u64| offers.iter().map(|o| f(o) as i64).collect();
        let column32 = |f: &dyn Fn(&Offer) -> u32| offers.iter().map(|o| f(o) as i32).collect();
        Placement {
            session: offers[0].session.id,
            on_server: offers[0].session.host_kind == HostKind::Server,
            ranks: (0..offers.len() as i32).collect(),
            hosts: offers.iter().map(|o| o.host).collect(),
            millicores: column(&|o| o.capacity.millicores),
            memory: column(&|o| o.capacity.memory),
            gpus: column32(&|o| o.capacity.gpus),
            max_sessions: column32(&|o| o.capacity.max_sessions),
            sessions: offers.iter().map(|o| encode_bare(&o.session)).collect(),
            need: (
                demand.millicores as i64,
                demand.memory as i64,
                demand.gpus as i32,
            ),
        }
    }

    /// Where an earlier attempt whose answer was lost placed the session, if it did.
    pub async fn find(&self, client: &ClientWrapper) -> Result<Option<Placed>, Error> {
        let Some(row) = client.query_opt(PLACED, &[&self.session]).await? else {
            return Ok(None);
        };
        let host: Uuid = row.get(0);
        let (usage, revision) = usage_at(&row, 1);
        let offer = self.hosts.iter().position(|h| *h == host).unwrap_or(0);
        Ok(Some(Placed {
            offer,
            host,
            usage,
            revision,
        }))
    }

    /// One try over the offers: passing over the rows other transactions hold, or waiting
    /// for them (`wait`) and checking them again.
    pub async fn try_once(
        &self,
        client: &ClientWrapper,
        wait: bool,
    ) -> Result<Option<Placed>, Error> {
        let statement = client
            .prepare_cached(&PLACE[usize::from(self.on_server)][usize::from(wait)])
            .await?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &self.ranks,
                    &self.hosts,
                    &self.millicores,
                    &self.memory,
                    &self.gpus,
                    &self.max_sessions,
                    &self.sessions,
                    &self.need.0,
                    &self.need.1,
                    &self.need.2,
                    &self.session,
                ],
            )
            .await?;
        Ok(row.map(|row| {
            let (usage, revision) = usage_at(&row, 2);
            Placed {
                offer: row.get::<_, i32>(0) as usize,
                host: row.get(1),
                usage,
                revision,
            }
        }))
    }
}

/// One session's end as its statement takes it.
pub struct Ending {
    session: Uuid,
    pub host: Uuid,
    demand: (i64, i64, i32),
    single_use: bool,
    now: i64,
    on_server: bool,
}

/// What ending a session did: whether it was there, its host's usage after and the row's
/// revision (none: the host is gone).
pub struct Ended {
    pub existed: bool,
    pub usage: Usage,
    pub revision: Option<i64>,
}

impl Ending {
    pub fn new(session: &Session, single_use: bool, now_ms: u64) -> Ending {
        Ending {
            session: session.id,
            host: session.agent,
            demand: (
                session.demand.millicores as i64,
                session.demand.memory as i64,
                session.demand.gpus as i32,
            ),
            single_use,
            now: now_ms as i64,
            on_server: session.host_kind == HostKind::Server,
        }
    }

    /// End it (repeatable: a second run finds it gone and releases nothing).
    pub async fn run(&self, client: &ClientWrapper) -> Result<Ended, Error> {
        let statement = client
            .prepare_cached(&END_SESSION[usize::from(self.on_server)])
            .await?;
        let params: [&(dyn ToSql + Sync); 7] = [
            &self.session,
            &self.host,
            &self.demand.0,
            &self.demand.1,
            &self.demand.2,
            &self.single_use,
            &self.now,
        ];
        let count = if self.on_server { 7 } else { 6 };
        if let Some(row) = client.query_opt(&statement, &params[..count]).await? {
            let (usage, revision) = usage_at(&row, 0);
            return Ok(Ended {
                existed: true,
                usage,
                revision: Some(revision),
            });
        }
        let row = client.query_opt(USAGE_OF, &[&self.host]).await?;
        let (usage, revision) = row.map(|row| usage_at(&row, 0)).unzip();
        Ok(Ended {
            existed: false,
            usage: usage.unwrap_or_default(),
            revision,
        })
    }
}

impl Postgres {
    /// Write `usage` as it is (`migrate`; placements change usage in place).
    pub async fn copy_usage(&self, usage: &[(Uuid, Usage)]) -> Result<(), StoreError> {
        let hosts: Vec<Uuid> = usage.iter().map(|(host, _)| *host).collect();
        let sessions: Vec<i32> = usage.iter().map(|(_, u)| u.sessions as i32).collect();
        let millicores: Vec<i64> = usage.iter().map(|(_, u)| u.millicores as i64).collect();
        let memory: Vec<i64> = usage.iter().map(|(_, u)| u.memory as i64).collect();
        let gpus: Vec<i32> = usage.iter().map(|(_, u)| u.gpus as i32).collect();
        let closed: Vec<bool> = usage.iter().map(|(_, u)| u.closed).collect();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO usage (host, sessions, millicores, memory, gpus, closed)
                 SELECT * FROM unnest($1::uuid[], $2::integer[], $3::bigint[], $4::bigint[],
                                      $5::integer[], $6::boolean[])
                 ON CONFLICT (host) DO UPDATE SET sessions = excluded.sessions,
                     millicores = excluded.millicores, memory = excluded.memory,
                     gpus = excluded.gpus, closed = excluded.closed,
                     revision = usage.revision + 1",
                &[&hosts, &sessions, &millicores, &memory, &gpus, &closed],
            )
            .await
            .map_err(|e| self.sql(&e))?;
        Ok(())
    }

    /// See [`crate::store::Store::place`]: one statement, committed with the placements
    /// and session ends queued beside it.
    pub async fn place(
        &self,
        demand: &Demand,
        offers: &[Offer],
    ) -> Result<Option<Reserved>, StoreError> {
        if offers.is_empty() {
            return Ok(None);
        }
        let done = self
            .sessions
            .submit(Op::Place(Placement::new(demand, offers)))
            .await
            .map_err(|e| self.failed(e))?;
        let Done::Placed(placed) = done else {
            unreachable!("a placement answers a placement")
        };
        Ok(placed.map(|placed| {
            self.learn(placed.host, placed.revision, placed.usage);
            Reserved {
                offer: placed.offer,
                usage: placed.usage,
            }
        }))
    }

    /// See [`crate::store::Store::end_session`].
    pub async fn end_session(
        &self,
        session: &Session,
        single_use: bool,
        now_ms: u64,
    ) -> Result<SessionEnded, StoreError> {
        let done = self
            .sessions
            .submit(Op::End(Ending::new(session, single_use, now_ms)))
            .await
            .map_err(|e| self.failed(e))?;
        let Done::Ended(ended) = done else {
            unreachable!("an ending answers an ending")
        };
        if let Some(revision) = ended.revision {
            self.learn(session.agent, revision, ended.usage);
        }
        Ok(SessionEnded {
            existed: ended.existed,
            usage: ended.usage,
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

    /// See [`crate::store::Store::sessions_after`].
    pub async fn sessions_after(
        &self,
        after: Option<(u64, Uuid)>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        const PAGE: &str = "SELECT record::text FROM sessions
            WHERE ((record->>'created_at_ms')::bigint, id) > ($1, $2)
            ORDER BY (record->>'created_at_ms')::bigint, id LIMIT $3";
        let (at, id) = after.unwrap_or((0, Uuid::nil()));
        let (at, limit) = (at as i64, i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = retrying(&self.database, "listing sessions", || async {
            let client = self.pool.get().await?;
            Ok::<_, Failure>(client.query(PAGE, &[&at, &id, &limit]).await?)
        })
        .await
        .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// See [`crate::store::Store::refresh_usage`].
    pub async fn refresh_usage(&self) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let rows = load(&client).await.map_err(|e| self.sql(&e))?;
        let mut known = self.usage_map();
        let mut newer = Vec::new();
        for (host, (revision, usage)) in rows {
            if known.get(&host).is_none_or(|(seen, _)| *seen < revision) {
                known.insert(host, (revision, usage));
                newer.push(host);
            }
        }
        Ok(newer)
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
