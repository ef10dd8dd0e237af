//! Workspaces: what users request sessions of (a container image or a pool's servers).

use serde::{Deserialize, Serialize};

use crate::domain::validation::{self, FieldError};

/// What a workspace launches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceType {
    Container,
    Pool,
}

/// How users of a pool workspace connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RdpClient {
    /// In the browser, through the zone's proxy.
    #[default]
    WebNative,
    /// The user's own RDP client, through the RDP gateway (an `.rdp` file).
    LocalClient,
}

/// A workspace users request sessions of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct Workspace {
    pub name: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(rename = "type")]
    pub workspace_type: WorkspaceType,
    /// For `container` workspaces: the image.
    #[serde(default)]
    pub image: Option<String>,
    /// For `pool` workspaces: the pool.
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub rdp_client: RdpClient,
}

impl Workspace {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        for (field, value) in [
            ("friendly_name", &self.friendly_name),
            ("description", &self.description),
        ] {
            if let Some(value) = value {
                validation::text(field, value, 1000)?;
            }
        }
        match self.workspace_type {
            WorkspaceType::Container => match &self.image {
                Some(image) => validation::name("image", image),
                None => Err(FieldError::new(
                    "image",
                    "a container workspace names an image",
                )),
            },
            WorkspaceType::Pool => match &self.pool {
                Some(pool) => validation::name("pool", pool),
                None => Err(FieldError::new("pool", "a pool workspace names a pool")),
            },
        }
    }
}

pub fn yes() -> bool {
    true
}
