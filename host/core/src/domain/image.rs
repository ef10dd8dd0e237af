//! Images: what a session runs, and what it reserves on an agent.

use serde::{Deserialize, Serialize};

use super::capacity::{Demand, millicores};
use super::validation::{self, FieldError};

/// A session image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// A stored record: tolerant of fields it does not know (request bodies are strict).
pub struct Image {
    pub name: String,
    /// Cores a session reserves (fractions allowed).
    pub cores: f64,
    /// Memory a session reserves, bytes.
    pub memory: u64,
    /// GPUs a session reserves.
    #[serde(default)]
    pub gpus: u32,
    /// Disabled images cannot be requested.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// When set, sessions of this image run only on agents of this zone.
    #[serde(default)]
    pub zone: Option<String>,
}

pub fn enabled() -> bool {
    true
}

impl Image {
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        validation::cores("cores", self.cores)?;
        if self.cores <= 0.0 {
            return Err(FieldError::new(
                "cores",
                "an image reserves more than 0 cores",
            ));
        }
        if self.memory == 0 {
            return Err(FieldError::new(
                "memory",
                "an image reserves more than 0 bytes",
            ));
        }
        validation::int64("memory", self.memory)?;
        validation::int32("gpus", self.gpus)?;
        if let Some(zone) = &self.zone {
            validation::name("zone", zone)?;
        }
        Ok(())
    }

    /// What one session of this image reserves.
    pub fn demand(&self) -> Demand {
        Demand {
            millicores: millicores(self.cores),
            memory: self.memory,
            gpus: self.gpus,
        }
    }

    /// Apply `patch` to a copy and validate it.
    pub fn patched(&self, patch: ImagePatch) -> Result<Image, FieldError> {
        let mut image = self.clone();
        if let Some(cores) = patch.cores {
            image.cores = cores;
        }
        if let Some(memory) = patch.memory {
            image.memory = memory;
        }
        if let Some(gpus) = patch.gpus {
            image.gpus = gpus;
        }
        if let Some(enabled) = patch.enabled {
            image.enabled = enabled;
        }
        if let Some(zone) = patch.zone {
            image.zone = zone;
        }
        image.validate()?;
        Ok(image)
    }
}

/// The body of `PATCH /images/{name}`. `"zone": null` lifts the zone restriction.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImagePatch {
    #[cfg_attr(
        feature = "openapi",
        schema(exclusive_minimum = 0.0, maximum = 100000.0)
    )]
    pub cores: Option<f64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub memory: Option<u64>,
    pub gpus: Option<u32>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub zone: Option<Option<String>>,
}

use super::validation::present;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_patches() {
        let image: Image =
            serde_json::from_str(r#"{"name":"chrome","cores":0.5,"memory":1073741824}"#).unwrap();
        assert!(image.enabled && image.zone.is_none() && image.gpus == 0);
        assert_eq!(image.validate(), Ok(()));
        assert_eq!(image.demand().millicores, 500);
        let zero = Image {
            cores: 0.0,
            ..image.clone()
        };
        assert_eq!(zero.validate().unwrap_err().field, "cores");
        let patched = image
            .patched(ImagePatch {
                zone: Some(Some("east".into())),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(patched.zone.as_deref(), Some("east"));
        let patch: ImagePatch = serde_json::from_str(r#"{"zone":null}"#).unwrap();
        assert_eq!(patched.patched(patch).unwrap().zone, None);
        // Read back from the store, an image tolerates a field a newer build added (request
        // bodies naming one are refused by the API: `api::json`).
        let stored: Image =
            serde_json::from_str(r#"{"name":"x","cores":1,"memory":1,"ram":2}"#).unwrap();
        assert_eq!(stored.memory, 1);
    }
}
