//! The plugins compiled into the binary: built from `plugins/` by `build.rs` for
//! `wasm32-wasip2` and embedded, so the server needs nothing beside itself.

use std::sync::Arc;

use super::artifacts::ArtifactCache;
use super::error::LoadError;
use super::load::Compiled;
use super::registry::{Registry, RegistryError};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The name of the built-in script generator: the default of every AutoScale config.
pub const DEFAULT_GENERATOR: &str = "default-generator";

/// Load every built-in plugin (compiled, or from `cache`) and register it, marked built-in,
/// as the active version of its name.
pub fn install_builtins(
    registry: &Registry,
    cache: &dyn ArtifactCache,
) -> Result<(), RegistryError> {
    for (name, bytes) in BUILTIN_STRATEGIES
        .iter()
        .chain(BUILTIN_GENERATORS)
        .chain(BUILTIN_PROVIDERS)
    {
        let (plugin, compiled) =
            registry
                .runtime()
                .load_cached(bytes, cache)
                .map_err(|e: LoadError| {
                    tracing::error!(plugin = name, "built-in plugin does not load: {e}");
                    e
                })?;
        registry.activate(name, Arc::new(plugin), true)?;
        tracing::debug!(
            plugin = name,
            compiled = compiled == Compiled::Now,
            "built-in plugin registered"
        );
    }
    Ok(())
}
