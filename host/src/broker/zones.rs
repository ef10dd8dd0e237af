//! Zone operations.

use super::{Broker, BrokerError};
use crate::domain::zone::{DEFAULT_ZONE, Zone, ZonePatch, ZoneSpec};

impl Broker {
    pub fn zones(&self) -> Vec<Zone> {
        self.read().zones.values().cloned().collect()
    }

    pub fn zone(&self, name: &str) -> Result<Zone, BrokerError> {
        self.read()
            .zones
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    pub async fn create_zone(&self, spec: ZoneSpec) -> Result<Zone, BrokerError> {
        let zone = spec.into_zone()?;
        self.check_strategy("load_balance_strategy", &zone.load_balance_strategy)?;
        if let Some(shadow) = &zone.shadow_strategy {
            self.check_strategy("shadow_strategy", shadow)?;
        }
        {
            let mut inventory = self.write();
            if inventory.zones.contains_key(&zone.name) {
                return Err(BrokerError::AlreadyExists {
                    kind: "zone",
                    key: zone.name,
                });
            }
            self.store.put_zone(&zone)?;
            inventory.zones.insert(zone.name.clone(), zone.clone());
        }
        self.commit().await?;
        tracing::info!(zone = zone.name, "zone created");
        Ok(zone)
    }

    pub async fn update_zone(&self, name: &str, patch: ZonePatch) -> Result<Zone, BrokerError> {
        let zone = self.patch_zone(name, |_| Ok(patch))?;
        self.commit().await?;
        tracing::info!(zone = name, "zone updated");
        Ok(zone)
    }

    /// Apply the patch `decide` makes of zone `name` as it is, under the write lock (so the
    /// decision and the write see the same zone); not yet committed.
    fn patch_zone(
        &self,
        name: &str,
        decide: impl FnOnce(&Zone) -> Result<ZonePatch, BrokerError>,
    ) -> Result<Zone, BrokerError> {
        let mut inventory = self.write();
        let current = inventory.zones.get(name).ok_or_else(|| not_found(name))?;
        let patch = decide(current)?;
        if let Some(strategy) = &patch.load_balance_strategy {
            self.check_strategy("load_balance_strategy", strategy)?;
        }
        if let Some(Some(shadow)) = &patch.shadow_strategy {
            self.check_strategy("shadow_strategy", shadow)?;
        }
        let zone = current.patched(patch)?;
        self.store.put_zone(&zone)?;
        inventory.zones.insert(zone.name.clone(), zone.clone());
        Ok(zone)
    }

    /// What zone `name`'s shadow strategy did in this process.
    pub fn zone_shadow(&self, name: &str) -> Result<super::ShadowView, BrokerError> {
        let zone = self.zone(name)?;
        Ok(self.shadows.report(
            name,
            &zone.load_balance_strategy,
            zone.shadow_strategy.as_deref(),
        ))
    }

    /// Make zone `name`'s shadow strategy its strategy (and leave it without a shadow).
    pub async fn promote_shadow(&self, name: &str) -> Result<Zone, BrokerError> {
        let zone = self.patch_zone(name, |zone| match &zone.shadow_strategy {
            Some(shadow) => Ok(ZonePatch {
                load_balance_strategy: Some(shadow.clone()),
                shadow_strategy: Some(None),
                ..ZonePatch::default()
            }),
            None => Err(BrokerError::Conflict {
                code: "no_shadow_strategy",
                message: format!("zone `{name}` has no shadow strategy to promote"),
            }),
        })?;
        self.commit().await?;
        tracing::info!(
            zone = name,
            strategy = zone.load_balance_strategy,
            "shadow strategy promoted"
        );
        Ok(zone)
    }

    /// Delete a zone nothing depends on.
    pub async fn delete_zone(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.zones.contains_key(name) {
                return Err(not_found(name));
            }
            let refuse = |message: String| {
                Err(BrokerError::Conflict {
                    code: "zone_in_use",
                    message,
                })
            };
            if name == DEFAULT_ZONE {
                return refuse("zone `default` always exists".into());
            }
            if self.config.listener_zones.contains(name) {
                return refuse(format!(
                    "zone `{name}` is managed by a listener of this server"
                ));
            }
            let agents = inventory.agents.count_in(name);
            if agents > 0 {
                return refuse(format!("zone `{name}` has {agents} agent(s)"));
            }
            if let Some(image) = inventory
                .images
                .values()
                .find(|i| i.zone.as_deref() == Some(name))
            {
                return refuse(format!(
                    "image `{}` is restricted to zone `{name}`",
                    image.name
                ));
            }
            if let Some(config) = inventory
                .autoscale_configs
                .values()
                .find(|c| c.zone == name)
            {
                return refuse(format!(
                    "AutoScale config `{}` creates servers in zone `{name}`",
                    config.name
                ));
            }
            let servers = inventory
                .servers
                .values()
                .filter(|s| s.server.zone == name)
                .count();
            if servers > 0 {
                return refuse(format!("zone `{name}` has {servers} server(s)"));
            }
            self.store.delete_zone(name)?;
            inventory.zones.remove(name);
        }
        self.commit().await?;
        tracing::info!(zone = name, "zone deleted");
        Ok(())
    }
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: "zone",
        key: name.to_string(),
    }
}
