//! Workspaces: what users ask for, a container image on agents or a pool's servers.

use super::records::{not_found, refuse_existing};
use super::{Broker, BrokerError, Change, Inventory};
use crate::domain::autoscale::{Workspace, WorkspaceType};
use crate::domain::validation::FieldError;

impl Broker {
    // Workspaces.

    pub fn workspaces(&self) -> Vec<Workspace> {
        self.read().workspaces.values().cloned().collect()
    }

    pub fn workspace(&self, name: &str) -> Result<Workspace, BrokerError> {
        self.read()
            .workspaces
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("workspace", name))
    }

    pub async fn create_workspace(&self, workspace: Workspace) -> Result<Workspace, BrokerError> {
        workspace.validate()?;
        {
            let mut inventory = self.write();
            refuse_existing(
                inventory.workspaces.contains_key(&workspace.name),
                "workspace",
                &workspace.name,
            )?;
            inventory.check_workspace_references(&workspace)?;
            self.store.put_workspace(&workspace)?;
            inventory
                .workspaces
                .insert(workspace.name.clone(), workspace.clone());
        }
        self.commit().await?;
        tracing::info!(workspace = workspace.name, "workspace created");
        Ok(workspace)
    }

    /// Change a workspace.
    pub async fn update_workspace(
        &self,
        name: &str,
        change: &impl Change<Workspace>,
    ) -> Result<Workspace, BrokerError> {
        let workspace = {
            let mut inventory = self.write();
            let current = inventory
                .workspaces
                .get(name)
                .ok_or_else(|| not_found("workspace", name))?;
            let workspace = change.apply(current)?;
            if workspace.name != name {
                return Err(FieldError::new("name", "a workspace cannot be renamed").into());
            }
            workspace.validate()?;
            inventory.check_workspace_references(&workspace)?;
            self.store.put_workspace(&workspace)?;
            inventory
                .workspaces
                .insert(name.to_string(), workspace.clone());
            workspace
        };
        self.commit().await?;
        Ok(workspace)
    }

    /// Delete a workspace no session runs.
    pub async fn delete_workspace(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.workspaces.contains_key(name) {
                return Err(not_found("workspace", name));
            }
            let running = inventory
                .sessions
                .values()
                .filter(|s| s.workspace.as_deref() == Some(name))
                .count();
            if running > 0 {
                return Err(BrokerError::Conflict {
                    code: "workspace_in_use",
                    message: format!("{running} session(s) run workspace `{name}`"),
                });
            }
            self.store.delete_workspace(name)?;
            inventory.workspaces.remove(name);
        }
        self.commit().await?;
        Ok(())
    }
}

impl Inventory {
    fn check_workspace_references(&self, workspace: &Workspace) -> Result<(), FieldError> {
        match workspace.workspace_type {
            WorkspaceType::Container => {
                let image = workspace.image.as_deref().unwrap_or_default();
                if !self.images.contains_key(image) {
                    return Err(FieldError::new("image", format!("no image `{image}`")));
                }
            }
            WorkspaceType::Pool => {
                let pool = workspace.pool.as_deref().unwrap_or_default();
                if !self.pools.contains_key(pool) {
                    return Err(FieldError::new("pool", format!("no pool `{pool}`")));
                }
            }
        }
        Ok(())
    }
}
