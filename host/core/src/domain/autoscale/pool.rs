//! Server pools: the groups of servers pool workspaces place sessions on.

use serde::{Deserialize, Serialize};

use crate::domain::validation::{self, FieldError};

/// A pool of servers that pool workspaces place sessions on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct Pool {
    pub name: String,
    #[serde(rename = "type", default)]
    pub pool_type: PoolType,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PoolType {
    /// RDP/VNC/SSH servers.
    #[default]
    Server,
    /// Reserved for pools of container agents.
    DockerAgent,
}

impl Pool {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        if self.pool_type != PoolType::Server {
            return Err(FieldError::new(
                "type",
                "only `server` pools are supported so far",
            ));
        }
        Ok(())
    }
}
