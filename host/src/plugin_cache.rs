//! The plugin host's artifact cache over the store: compiled components survive restarts.
//! The store keeps opaque bytes and knows nothing of plugins; the plugin host knows nothing
//! of the store. A failed read or write only costs a compile, so it is logged, not raised.

use crate::plugins::ArtifactCache;
use crate::store::Store;

/// [`ArtifactCache`] backed by the store's artifact tree.
pub struct StoredArtifacts<'a>(pub &'a Store);

impl ArtifactCache for StoredArtifacts<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0
            .plugin_artifact(key)
            .inspect_err(|error| tracing::warn!(key, "cannot read a compiled plugin: {error}"))
            .ok()
            .flatten()
    }

    fn put(&self, key: &str, artifact: Vec<u8>) {
        if let Err(error) = self.0.put_plugin_artifact(key, artifact) {
            tracing::warn!(key, "cannot cache a compiled plugin: {error}");
        }
    }
}
