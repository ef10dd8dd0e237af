//! What the operations on named records share: their refusals (not found, already exists,
//! in use), the changes updates apply, and the compare-and-swap of versioned records
//! (`If-Match`, retries).

use super::BrokerError;
use crate::domain::validation::FieldError;

/// A change to a record, as the API hands it over (a JSON merge patch there): the broker
/// applies it to the record it holds, and again to a newer one if that changed meanwhile,
/// so it receives typed records and never the request's JSON.
pub trait Change<T>: Sync {
    /// The record this change makes of `current`.
    fn apply(&self, current: &T) -> Result<T, FieldError>;
    /// Whether the change names the field at `path` (`["settings", "secret_key"]`), so a
    /// secret given again is told from one left out, which keeps its value.
    fn names(&self, path: &[&str]) -> bool;
}

/// A typed change: a function of the current record, which names no field (so it gives no
/// secret again).
impl<T, F: Fn(&T) -> Result<T, FieldError> + Sync> Change<T> for F {
    fn apply(&self, current: &T) -> Result<T, FieldError> {
        self(current)
    }

    fn names(&self, _: &[&str]) -> bool {
        false
    }
}

/// How many times an update is applied again to a record that changed under it before it
/// gives up (409 `concurrent_update`).
pub(super) const MAX_UPDATE_ATTEMPTS: usize = 32;

/// Refuse a write whose `If-Match` does not name the record's `current` version.
pub(super) fn check_precondition(
    kind: &'static str,
    name: &str,
    current: u64,
    if_match: Option<&[u64]>,
) -> Result<(), BrokerError> {
    match if_match {
        Some(versions) if !versions.contains(&current) => Err(BrokerError::PreconditionFailed {
            kind,
            key: name.to_string(),
            current,
        }),
        _ => Ok(()),
    }
}

pub(super) fn too_contended(kind: &'static str, name: &str) -> BrokerError {
    BrokerError::Conflict {
        code: "concurrent_update",
        message: format!("{kind} `{name}` kept changing under this update: try again"),
    }
}

pub(super) fn not_found(kind: &'static str, name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind,
        key: name.to_string(),
    }
}

pub(super) fn refuse_existing(
    exists: bool,
    kind: &'static str,
    name: &str,
) -> Result<(), BrokerError> {
    if exists {
        return Err(BrokerError::AlreadyExists {
            kind,
            key: name.to_string(),
        });
    }
    Ok(())
}

/// Refuse to delete `kind` `name` while `users` depend on it.
pub(super) fn in_use(kind: &'static str, name: &str, users: &[String]) -> Result<(), BrokerError> {
    if users.is_empty() {
        return Ok(());
    }
    Err(BrokerError::Conflict {
        code: "in_use",
        message: format!("{kind} `{name}` is used by {}", users.join(", ")),
    })
}
