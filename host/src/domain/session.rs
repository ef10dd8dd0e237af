//! Sessions: a user's running image on an agent, and how to reach it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::capacity::Demand;
use super::validation::{self, FieldError};
use super::zone::Connection;

/// A placed session, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub user: String,
    pub image: String,
    /// The zone of the agent it runs on.
    pub zone: String,
    pub agent: Uuid,
    pub agent_hostname: String,
    pub connection: Connection,
    /// What it reserves on the agent.
    pub demand: Demand,
    /// Unix time, milliseconds.
    pub created_at_ms: u64,
}

/// The body of `POST /sessions`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    /// The image to run.
    pub image: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    /// Who the session is for.
    pub user: String,
}

impl SessionRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("image", &self.image)?;
        validation::text("user", &self.user, 256)
    }
}
