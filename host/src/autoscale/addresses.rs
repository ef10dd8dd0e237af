//! Where VMs reach the broker: the address of each zone's listener, which stands for
//! `$request_host$` in the zone's `upstream_auth_address`.

use std::collections::BTreeMap;

use crate::broker::Broker;
use crate::domain::zone::REQUEST_HOST;

/// The broker's own address (`host:port`) by zone.
#[derive(Clone, Debug, Default)]
pub struct BrokerAddresses {
    /// The listener address of each zone that has one.
    pub by_zone: BTreeMap<String, String>,
    /// The address for zones without a listener of their own.
    pub default: String,
}

impl BrokerAddresses {
    /// Zone `zone`'s `upstream_auth_address`, `$request_host$` standing for the broker's
    /// address in that zone: what startup scripts call back to.
    pub fn upstream_auth_address(&self, broker: &Broker, zone: &str) -> String {
        let address = self.by_zone.get(zone).unwrap_or(&self.default);
        match broker.zone(zone) {
            Ok(zone) => zone.upstream_auth_address.replace(REQUEST_HOST, address),
            Err(_) => address.clone(),
        }
    }
}
