//! What the operations on named records share: their refusals (not found, already exists,
//! in use) and the compare-and-swap of versioned records (`If-Match`, retries).

use super::BrokerError;

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
