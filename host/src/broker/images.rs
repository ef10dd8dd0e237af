//! Image operations.

use super::{Broker, BrokerError, Inventory};
use crate::domain::image::{Image, ImagePatch};
use crate::domain::validation::FieldError;

impl Broker {
    pub fn images(&self) -> Vec<Image> {
        self.read().images.values().cloned().collect()
    }

    pub fn image(&self, name: &str) -> Result<Image, BrokerError> {
        self.read()
            .images
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    pub async fn create_image(&self, image: Image) -> Result<Image, BrokerError> {
        image.validate()?;
        {
            let mut inventory = self.write();
            check_zone(&inventory, &image)?;
            if inventory.images.contains_key(&image.name) {
                return Err(BrokerError::AlreadyExists {
                    kind: "image",
                    key: image.name,
                });
            }
            self.store.put_image(&image)?;
            inventory.images.insert(image.name.clone(), image.clone());
        }
        self.commit().await?;
        Ok(image)
    }

    pub async fn update_image(&self, name: &str, patch: ImagePatch) -> Result<Image, BrokerError> {
        let image = {
            let mut inventory = self.write();
            let current = inventory.images.get(name).ok_or_else(|| not_found(name))?;
            let image = current.patched(patch)?;
            check_zone(&inventory, &image)?;
            self.store.put_image(&image)?;
            inventory.images.insert(image.name.clone(), image.clone());
            image
        };
        self.commit().await?;
        Ok(image)
    }

    /// Delete an image no session runs.
    pub async fn delete_image(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut inventory = self.write();
            if !inventory.images.contains_key(name) {
                return Err(not_found(name));
            }
            let running = inventory
                .sessions
                .values()
                .filter(|s| s.image.as_deref() == Some(name))
                .count();
            if running > 0 {
                return Err(BrokerError::Conflict {
                    code: "image_in_use",
                    message: format!("{running} session(s) run image `{name}`"),
                });
            }
            self.store.delete_image(name)?;
            inventory.images.remove(name);
        }
        self.commit().await?;
        Ok(())
    }
}

fn check_zone(inventory: &Inventory, image: &Image) -> Result<(), FieldError> {
    match &image.zone {
        Some(zone) if !inventory.zones.contains_key(zone) => {
            Err(FieldError::new("zone", format!("no zone `{zone}`")))
        }
        _ => Ok(()),
    }
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: "image",
        key: name.to_string(),
    }
}
