//! What the operations on named records share: their refusals (not found, already exists,
//! in use), the changes updates apply, and the compare-and-swap of versioned records
//! (`If-Match`, retries, the store's swap at a version).

use std::collections::BTreeMap;
use std::future::Future;

use super::{Broker, BrokerError, Inventory};
use crate::domain::validation::FieldError;
use crate::store::{StoreError, Swapped};

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

/// A kind of versioned record in the view: where the inventory keeps it, and its version.
pub(super) struct VersionedKind<T> {
    pub records: fn(&mut Inventory) -> &mut BTreeMap<String, T>,
    pub version: fn(&T) -> u64,
}

impl Broker {
    /// Make durable a versioned write that the view already shows (`ours`: the record
    /// written, `None` if removed; `previous`: what the view showed before), by `swap`, the
    /// store's write at the version `previous` had.
    ///
    /// The caller holds `versioned_writes`, so no other versioned write of this process
    /// runs meanwhile. The view shows the write before the store takes it so that the
    /// checks other writes make under the view's lock (references, records in use) see it;
    /// the store judges the version itself, so an update another process made is never
    /// written over. If the store holds another version, the view learns that one in place
    /// of ours and the answer is [`Swapped::Stale`] with it; if the store fails, or the
    /// caller stops waiting (its request cancelled), the view gets `previous` back. Either
    /// way the view may differ from the store only until the record's next write, which the
    /// store judges and the view learns from.
    pub(super) async fn settle<T: Clone>(
        &self,
        kind: &VersionedKind<T>,
        name: &str,
        ours: Option<&T>,
        previous: Option<T>,
        swap: impl Future<Output = Result<Swapped<T>, StoreError>>,
    ) -> Result<Swapped<T>, BrokerError> {
        let mut unsettled = Unsettled {
            broker: self,
            kind,
            name,
            ours: ours.map(kind.version),
            previous: Some(previous),
        };
        match swap.await {
            Ok(Swapped::Done) => {
                unsettled.previous = None;
                Ok(Swapped::Done)
            }
            // Nothing was written: `unsettled` puts `previous` back.
            Ok(Swapped::Busy) => Ok(Swapped::Busy),
            Ok(Swapped::Stale(now)) => {
                unsettled.previous = Some(now.clone());
                Ok(Swapped::Stale(now))
            }
            // `unsettled` puts `previous` back as it goes.
            Err(error) => Err(error.into()),
        }
    }
}

/// A write the view shows and the store has not confirmed: dropped, it puts `previous` (if
/// still set) in the view in place of ours, if the view still shows ours.
struct Unsettled<'a, T> {
    broker: &'a Broker,
    kind: &'a VersionedKind<T>,
    name: &'a str,
    ours: Option<u64>,
    previous: Option<Option<T>>,
}

impl<T> Drop for Unsettled<'_, T> {
    fn drop(&mut self) {
        let Some(instead) = self.previous.take() else {
            return;
        };
        let mut inventory = self.broker.write();
        let records = (self.kind.records)(&mut inventory);
        if records.get(self.name).map(self.kind.version) == self.ours {
            match instead {
                Some(record) => records.insert(self.name.to_string(), record),
                None => records.remove(self.name),
            };
        }
    }
}

pub(super) fn too_contended(kind: &'static str, name: &str) -> BrokerError {
    BrokerError::Conflict {
        code: "concurrent_update",
        message: format!("{kind} `{name}` kept changing under this update: try again"),
    }
}

/// A delete that found the record at another version in the store (another process
/// changed it).
pub(super) fn changed_meanwhile(kind: &'static str, name: &str, now: u64) -> BrokerError {
    BrokerError::Conflict {
        code: "concurrent_update",
        message: format!(
            "{kind} `{name}` changed while it was being deleted (it is at version {now} now): look at it again"
        ),
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
