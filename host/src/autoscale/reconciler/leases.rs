//! Which AutoScale configs this process reconciles: those whose lease it holds in the store
//! (one holder per config across every process sharing it; see `Store::hold_config_lease`).
//!
//! A lease is taken before a config's pass when this process does not hold it, and renewed
//! for every held config every third of the lease, so a live holder keeps its configs and a
//! dead one's are taken over once its leases expire. A config of a zone this process does
//! not manage is only taken after its lease has been expired for a whole lease more, which
//! leaves it to its own zone's managers while any is alive. This process counts a lease as
//! held until a margin before it could have expired (measured from before the request was
//! sent, on its own monotonic clock), so it stops reconciling a config before another can
//! take it over, even while the store cannot be reached. A process that has just taken a
//! lease (a new epoch) acts only once its view has applied the change feed up to the
//! revision current when it took it: its predecessor's last server records are then in
//! the view, so it never takes their fresh VMs for orphans.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::store::ConfigLease;

/// A lease held, as this process counts it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Held {
    epoch: i64,
    until: Instant,
    /// The change feed's revision the view must have applied before this process acts.
    caught_up_at: i64,
}

impl Held {
    /// The lease the store answered, after `previous`: a renewal keeps the revision the
    /// epoch was taken at; a new epoch waits for the feed as it stood when it was taken.
    fn after(previous: Option<Held>, lease: ConfigLease, until: Instant) -> Held {
        let caught_up_at = match previous {
            Some(previous) if previous.epoch == lease.epoch => previous.caught_up_at,
            _ => lease.revision,
        };
        Held {
            epoch: lease.epoch,
            until,
            caught_up_at,
        }
    }
}

/// Whether this process reconciles a config now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holding {
    /// It holds the lease at this epoch, and its view is caught up.
    Ready(i64),
    /// It holds the lease but its view has not yet applied its predecessor's last changes.
    CatchingUp,
    /// Another process holds it.
    Elsewhere,
}

pub(super) struct ConfigLeases {
    lease: Duration,
    /// A std `Mutex`: held for a lookup or an insert, never across an `.await`.
    held: Mutex<HashMap<String, Held>>,
}

impl ConfigLeases {
    pub fn new(lease: Duration) -> ConfigLeases {
        ConfigLeases {
            lease,
            held: Mutex::default(),
        }
    }

    /// Whether this process reconciles `config` now, taking its lease if it is free.
    pub async fn hold(&self, broker: &Broker, config: &str) -> Holding {
        let held = match self.lookup(config) {
            Some(held) if held.until > Instant::now() => Some(held),
            _ => self.take(broker, config).await,
        };
        match held {
            None => Holding::Elsewhere,
            Some(held) if broker.applied_revision() < held.caught_up_at => Holding::CatchingUp,
            Some(held) => Holding::Ready(held.epoch),
        }
    }

    /// Renew every held lease and try for every other config, every third of the lease,
    /// until `stop`.
    pub async fn keep(&self, broker: &Broker, mut stop: watch::Receiver<bool>) {
        loop {
            for config in broker.autoscale_config_names() {
                self.take(broker, &config).await;
            }
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|config, _| broker.autoscale_config_stored(config).is_some());
            tokio::select! {
                () = tokio::time::sleep(self.lease / 3) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Give every lease back (a clean stop, once no pass runs any more), so that the other
    /// processes take the configs over at once rather than once the leases expire.
    pub async fn release(&self, broker: &Broker) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Err(error) = broker.store().release_config_leases().await {
            tracing::warn!(%error, "cannot give back the AutoScale config leases");
        }
    }

    /// A write fenced on `config`'s lease was refused: another process holds it now, and
    /// this one stops counting it as held.
    pub fn lost(&self, broker: &Broker, config: &str) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(config);
        held_elsewhere(broker, config);
    }

    fn lookup(&self, config: &str) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(config)
            .copied()
    }

    /// Ask the store for `config`'s lease and remember the answer.
    async fn take(&self, broker: &Broker, config: &str) -> Option<Held> {
        let own_zone = broker
            .autoscale_config_stored(config)
            .is_some_and(|c| broker.manages_zone(&c.zone));
        let grace = if own_zone { Duration::ZERO } else { self.lease };
        let sent = Instant::now();
        let answer = broker
            .store()
            .hold_config_lease(config, self.lease, grace)
            .await;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(Some(lease)) => {
                let previous = held.get(config).copied();
                let now = Held::after(previous, lease, sent + counted(self.lease));
                held.insert(config.to_string(), now);
                if previous.is_none_or(|p| p.epoch != lease.epoch) {
                    tracing::info!(
                        config,
                        epoch = lease.epoch,
                        "this process reconciles the config"
                    );
                    broker.metrics().config_lease(config, true);
                }
                Some(now)
            }
            Ok(None) => {
                if held.remove(config).is_some() {
                    tracing::warn!(config, "another process took over the config's lease");
                }
                held_elsewhere(broker, config);
                None
            }
            // The store cannot be asked: what was held stays held until it runs out.
            Err(error) => {
                tracing::warn!(config, %error, "cannot renew the config's lease");
                held.get(config)
                    .filter(|h| h.until > Instant::now())
                    .copied()
            }
        }
    }
}

/// Another process holds `config`'s lease: its metric and status say so.
fn held_elsewhere(broker: &Broker, config: &str) {
    broker.metrics().config_lease(config, false);
    broker.config_reconciled_elsewhere(config);
}

/// How long a lease of `lease` counts as held after its request was sent: a fifth less,
/// a margin for the clocks of this process and the database running apart.
fn counted(lease: Duration) -> Duration {
    lease - lease / 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_waits_for_the_feed_as_it_stood_when_taken_and_a_renewal_does_not_move_it() {
        let until = Instant::now();
        let taken = Held::after(
            None,
            ConfigLease {
                epoch: 4,
                revision: 70,
            },
            until,
        );
        assert_eq!(taken.caught_up_at, 70);
        let renewed = Held::after(
            Some(taken),
            ConfigLease {
                epoch: 4,
                revision: 95,
            },
            until,
        );
        assert_eq!(
            renewed.caught_up_at, 70,
            "a renewal keeps the epoch's revision"
        );
        let retaken = Held::after(
            Some(renewed),
            ConfigLease {
                epoch: 6,
                revision: 120,
            },
            until,
        );
        assert_eq!(
            retaken.caught_up_at, 120,
            "another holder came between: wait for its records"
        );
    }

    #[test]
    fn a_lease_counts_as_held_for_less_than_its_length_and_is_renewed_well_before() {
        let lease = Duration::from_secs(10);
        assert_eq!(counted(lease), Duration::from_secs(8));
        assert!(
            lease / 3 * 2 < counted(lease),
            "two renewals fit before it runs out"
        );
    }
}
