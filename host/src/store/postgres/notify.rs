//! Early wake-ups for the change feed's followers: a transaction that lists changes also
//! sends a notification on [`CHANNEL`] carrying its writer's id (delivered at commit), and
//! each process listens on a connection of its own and reads the feed at once when another
//! writer's notification arrives. Only a wake-up: followers still poll, so a database
//! without `LISTEN` (CockroachDB) or a notification lost with a connection costs latency,
//! never a change. Placements and session ends never notify.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

/// The channel changes are announced on.
pub const CHANNEL: &str = "zonebroker_changes";

/// How long to wait before listening again after the connection was lost.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub struct Listener {
    /// Notified when another process announces changes.
    pub woken: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen for other processes' announcements, on a connection of its own (kept, and made
/// again when lost). `None` if the database refuses `LISTEN`; a first connection that
/// fails otherwise is made again like a lost one.
pub async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    me: Uuid,
    database: String,
) -> Option<Listener> {
    let woken = Arc::new(Notify::new());
    let first = match connect(&config, &tls, &woken, me).await {
        Ok(listening) => Some(listening),
        Err(error) if error.as_db_error().is_some() => {
            tracing::info!(
                database,
                "the database does not take LISTEN ({error}): the change feed is polled only"
            );
            return None;
        }
        Err(error) => {
            tracing::warn!(database, "cannot listen for changes yet: {error}");
            None
        }
    };
    let task = tokio::spawn({
        let woken = woken.clone();
        async move {
            if let Some(first) = first {
                let _ = first.await;
            }
            loop {
                tracing::debug!(database, "the change feed's listening connection was lost");
                tokio::time::sleep(RECONNECT_AFTER).await;
                if let Ok(listening) = connect(&config, &tls, &woken, me).await {
                    // Changes announced while no connection listened: the poll finds them.
                    let _ = listening.await;
                }
            }
        }
    })
    .abort_handle();
    Some(Listener { woken, task })
}

/// Connect and `LISTEN`; answers a task that runs until the connection ends.
async fn connect(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    woken: &Arc<Notify>,
    me: Uuid,
) -> Result<tokio::task::JoinHandle<()>, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let me = me.to_string();
    let woken = woken.clone();
    // The connection is driven here: its notifications, and the LISTEN below.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) if note.payload() != me => {
                    woken.notify_one()
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        driver.abort();
        return Err(error);
    }
    Ok(tokio::spawn(async move {
        // The client lives as long as its connection: dropping it would close it.
        let _client = client;
        let _ = driver.await;
    }))
}
