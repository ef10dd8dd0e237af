//! Retrying what the database may take later: a lost connection, the server shutting down
//! or starting, a serialization failure or a deadlock (CockroachDB answers 40001 to
//! conflicts). Anything else is the database refusing the statement itself.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::{error_chain, sql_error};

pub enum Failure {
    /// The connection or a serialization conflict: the same work may succeed later.
    Retry(String),
    /// The database refused the work itself.
    Refused(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        let retry = match error.code() {
            // A value of the wrong type for its parameter or column: this build's mistake,
            // which no retry mends.
            None if misconverted(&error) => false,
            None => true,
            Some(code) => {
                *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || code.code().starts_with("08")
                    || code.code().starts_with("57P")
            }
        };
        let message = sql_error(&error);
        if retry {
            Failure::Retry(message)
        } else {
            Failure::Refused(message)
        }
    }
}

fn misconverted(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    error.source().is_some_and(|source| {
        source.is::<tokio_postgres::types::WrongType>()
            || source.is::<tokio_postgres::types::WasNull>()
    })
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(error: deadpool_postgres::PoolError) -> Failure {
        Failure::Retry(error_chain(&error))
    }
}

/// Run `attempt` until it succeeds or is refused, backing off from 50 ms to 2 s between
/// tries; `what` names the work in the log. Each attempt must be safe to repeat after one
/// whose outcome is unknown (a connection lost during its commit).
pub async fn retrying<T, F, Fut>(database: &str, what: &str, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut delay = Duration::from_millis(50);
    for tries in 1u32.. {
        match attempt().await {
            Ok(done) => {
                if tries > 1 {
                    tracing::info!(database, tries, what, "the database took the work again");
                }
                return Ok(done);
            }
            Err(Failure::Retry(error)) => {
                tracing::warn!(
                    database,
                    tries,
                    what,
                    "cannot reach the database, retrying in {delay:?}: {error}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(Failure::Refused(error)) => {
                tracing::error!(database, what, "the database refused it: {error}");
                return Err(format!("the database refused {what}: {error}"));
            }
        }
    }
    unreachable!("the loop returns")
}
