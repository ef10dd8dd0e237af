//! Pools: the groups of servers that pool workspaces run on.

use super::records::{in_use, not_found, refuse_existing};
use super::{Broker, BrokerError};
use crate::domain::autoscale::Pool;

impl Broker {
    pub fn pools(&self) -> Vec<Pool> {
        self.read().pools.values().cloned().collect()
    }

    pub fn pool(&self, name: &str) -> Result<Pool, BrokerError> {
        self.read()
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("pool", name))
    }

    pub async fn create_pool(&self, pool: Pool) -> Result<Pool, BrokerError> {
        pool.validate()?;
        {
            let mut inventory = self.write();
            refuse_existing(inventory.pools.contains_key(&pool.name), "pool", &pool.name)?;
            self.store.put_pool(&pool)?;
            inventory.pools.insert(pool.name.clone(), pool.clone());
        }
        self.commit().await?;
        tracing::info!(pool = pool.name, "pool created");
        Ok(pool)
    }

    /// Delete a pool no config, workspace or server uses.
    pub async fn delete_pool(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.pools.contains_key(name) {
                return Err(not_found("pool", name));
            }
            let users = inventory
                .autoscale_configs
                .values()
                .filter(|c| c.pool == name)
                .map(|c| format!("AutoScale config `{}`", c.name))
                .chain(
                    inventory
                        .workspaces
                        .values()
                        .filter(|w| w.pool.as_deref() == Some(name))
                        .map(|w| format!("workspace `{}`", w.name)),
                )
                .chain(
                    inventory
                        .servers
                        .values()
                        .filter(|s| s.server.pool == name)
                        .map(|s| format!("server `{}`", s.server.hostname)),
                )
                .collect::<Vec<_>>();
            in_use("pool", name, &users)?;
            self.store.delete_pool(name)?;
            inventory.pools.remove(name);
        }
        self.commit().await?;
        tracing::info!(pool = name, "pool deleted");
        Ok(())
    }
}
