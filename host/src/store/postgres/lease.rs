//! The lease of the one process that serves a database. Reservations are checked in SQL and
//! safe across processes, but until several managers can share one (a change feed, a lease
//! per AutoScale config), a second process would never see the first one's changes to the
//! other records and would reconcile the same configs: so a process takes this lease at
//! start, renews it while it runs, gives it back when it stops, and a second process is
//! refused while the lease is held.
//!
//! A holder that died without giving it back blocks others until the lease expires, unless it
//! ran on the same machine and its process is gone (a restart after a crash takes over at
//! once).

use std::time::Duration;

use uuid::Uuid;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Who holds, or wants, the lease.
#[derive(Clone, Debug)]
pub struct Holder {
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
}

impl Holder {
    pub fn this_process() -> Holder {
        Holder {
            id: Uuid::new_v4(),
            host: host_name(),
            pid: std::process::id() as i32,
        }
    }
}

/// Why the lease was not taken.
#[derive(Debug)]
pub enum Refused {
    Held { host: String, pid: i32, for_s: f64 },
    Sql(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Refused {
    fn from(error: tokio_postgres::Error) -> Refused {
        Refused::Sql(error)
    }
}

/// Take the lease for `me`: free, expired, or held by a process of this machine that is
/// gone. One conditional write on the row, so two processes starting together cannot both
/// win.
pub async fn take(client: &tokio_postgres::Client, me: &Holder) -> Result<(), Refused> {
    let current = client
        .query_opt(
            "SELECT holder, host, pid, extract(epoch FROM expires_at - now())::float8
             FROM manager_lease WHERE singleton",
            &[],
        )
        .await?;
    let seconds = LEASE.as_secs_f64();
    let taken = match current {
        None => {
            client
                .execute(
                    "INSERT INTO manager_lease (singleton, holder, host, pid, expires_at)
                     VALUES (true, $1, $2, $3, now() + $4 * interval '1 second')
                     ON CONFLICT (singleton) DO NOTHING",
                    &[&me.id, &me.host, &me.pid, &seconds],
                )
                .await?
        }
        Some(row) => {
            let (holder, host, pid, left): (Uuid, String, i32, f64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            // On this machine and gone (a pid equal to ours is a previous incarnation: a
            // container restarted with the same pid).
            let gone = host == me.host && (pid == me.pid || !process_alive(pid));
            if left > 0.0 && !gone {
                return Err(Refused::Held {
                    host,
                    pid,
                    for_s: left,
                });
            }
            // Replace exactly the holder seen: if another process took it meanwhile, this
            // changes nothing.
            client
                .execute(
                    "UPDATE manager_lease
                     SET holder = $1, host = $2, pid = $3,
                         expires_at = now() + $4 * interval '1 second'
                     WHERE singleton AND holder = $5",
                    &[&me.id, &me.host, &me.pid, &seconds, &holder],
                )
                .await?
        }
    };
    if taken == 1 {
        return Ok(());
    }
    // Someone else won the race: report them.
    let row = client
        .query_one(
            "SELECT host, pid, extract(epoch FROM expires_at - now())::float8
             FROM manager_lease WHERE singleton",
            &[],
        )
        .await?;
    Err(Refused::Held {
        host: row.get(0),
        pid: row.get(1),
        for_s: row.get(2),
    })
}

/// Renew `me`'s lease; answers false when another process holds it now.
pub async fn renew(
    client: &tokio_postgres::Client,
    me: &Holder,
) -> Result<bool, tokio_postgres::Error> {
    let renewed = client
        .execute(
            "UPDATE manager_lease SET expires_at = now() + $2 * interval '1 second'
             WHERE singleton AND holder = $1",
            &[&me.id, &LEASE.as_secs_f64()],
        )
        .await?;
    Ok(renewed == 1)
}

/// Give the lease back (a clean stop).
pub async fn give_back(
    client: &tokio_postgres::Client,
    me: &Holder,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM manager_lease WHERE singleton AND holder = $1",
            &[&me.id],
        )
        .await
        .map(drop)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists (and may be signalled).
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "unknown".into();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}
