//! Loading a plugin: check the bytes, read its world and imports before compiling, take the
//! compiled component from the artifact cache or compile it, then link and pre-instantiate
//! it for its kind.

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifacts::{ArtifactCache, NoCache};
use super::error::LoadError;
use super::kind::PluginKind;
use super::runtime::PluginRuntime;
use super::sandbox::CallState;
use super::wit;
use zonebroker_core::domain::plugin::PluginLimits;

/// A plugin version, compiled and linked, ready to be called any number of times.
pub struct LoadedPlugin {
    pub(crate) kind: PluginKind,
    sha256: String,
    size: usize,
    /// Where this plugin's calls differ from its kind's default limits.
    limits: PluginLimits,
    pub(crate) instance: Instantiator,
}

/// The component, linked and pre-instantiated for the calls of its kind.
pub(crate) enum Instantiator {
    Strategy(wit::strategy::StrategyPre<CallState>),
    ScriptGenerator(wit::generator::ScriptGeneratorPre<CallState>),
    VmProvider(wit::provider::VmProviderPre<CallState>),
}

impl LoadedPlugin {
    /// What the plugin is for.
    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// The version: the sha256 of the component's bytes, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Where this plugin's calls differ from its kind's default limits.
    pub fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// This plugin with its own limits (checked against the server's maxima by the caller,
    /// see [`CallLimits::refusal`](crate::CallLimits::refusal)).
    pub fn with_limits(mut self, limits: PluginLimits) -> Self {
        self.limits = limits;
        self
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Whether a load compiled the component or took it from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiled {
    Now,
    FromCache,
}

impl PluginRuntime {
    /// Check, compile and link a component. CPU-heavy (tens of milliseconds in an
    /// optimised build): call it off the async runtime.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        self.load_cached(bytes, &NoCache).map(|(plugin, _)| plugin)
    }

    /// [`load`](Self::load), taking the compiled component from `cache` when it holds one
    /// for these bytes and this engine, and filling it (once the component linked) otherwise.
    /// Answers whether it compiled. Compilations wait for a free compile slot, without a
    /// deadline: for versions already accepted (activation, start-up).
    pub fn load_cached(
        &self,
        bytes: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<(LoadedPlugin, Compiled), LoadError> {
        self.load_within(bytes, cache, None)
    }

    /// [`load_cached`](Self::load_cached) for an upload: a compilation (waiting for a slot
    /// included) that takes longer than `max_compile_time` is refused with
    /// [`LoadError::CompileTimeout`], and its result discarded when it eventually arrives.
    pub fn load_upload(
        &self,
        bytes: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<(LoadedPlugin, Compiled), LoadError> {
        self.load_within(bytes, cache, Some(self.config.max_compile_time))
    }

    fn load_within(
        &self,
        bytes: &[u8],
        cache: &dyn ArtifactCache,
        max_compile_time: Option<std::time::Duration>,
    ) -> Result<(LoadedPlugin, Compiled), LoadError> {
        check_header(bytes)?;
        // World and imports first, from the bytes: a refused component costs a parse, not a
        // compilation.
        inspect_world(bytes)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let key = format!("{sha256}-{:016x}", self.engine_fingerprint);
        let cached = cache.get(&key).and_then(|artifact| {
            // SAFETY: artifacts come only from `Component::serialize` of this engine
            // configuration (the key carries its fingerprint), stored by the broker in its own
            // database, never from a client. A stale or damaged one fails to deserialize and is
            // compiled afresh.
            unsafe { Component::deserialize(&self.engine, &artifact) }.ok()
        });
        let (component, compiled) = match cached {
            Some(component) => (component, Compiled::FromCache),
            None => (self.compile(bytes, max_compile_time)?, Compiled::Now),
        };
        let plugin = self.link(component.clone(), sha256, bytes.len())?;
        if compiled == Compiled::Now
            && let Ok(artifact) = component.serialize()
        {
            cache.put(&key, artifact);
        }
        Ok((plugin, compiled))
    }

    /// Detect the kind, refuse forbidden imports, pre-instantiate.
    fn link(
        &self,
        component: Component,
        sha256: String,
        size: usize,
    ) -> Result<LoadedPlugin, LoadError> {
        let kind = detect_kind(&self.engine, &component)?;
        let ty = component.component_type();
        if let Some((import, _)) = ty
            .imports(&self.engine)
            .find(|(name, _)| !super::kind::allows_import(kind, name))
        {
            return Err(LoadError::ForbiddenImport {
                kind,
                import: import.to_string(),
            });
        }
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let instance = match kind {
            PluginKind::Strategy => Instantiator::Strategy(
                wit::strategy::StrategyPre::new(
                    self.linkers
                        .strategy
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
            PluginKind::ScriptGenerator => Instantiator::ScriptGenerator(
                wit::generator::ScriptGeneratorPre::new(
                    self.linkers
                        .generator
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
            PluginKind::VmProvider => Instantiator::VmProvider(
                wit::provider::VmProviderPre::new(
                    self.linkers
                        .provider
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
        };
        Ok(LoadedPlugin {
            kind,
            sha256,
            size,
            limits: PluginLimits::default(),
            instance,
        })
    }
}

/// Refuse what is not a component before handing it to the compiler, with a clear reason.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        return Err(LoadError::NotWasm);
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(LoadError::NotAComponent);
    }
    Ok(())
}

/// The kind of a component and whether its imports are allowed, read from its top-level
/// import and export sections without compiling it (the same names wasmtime's component
/// type answers, which [`PluginRuntime::link`] checks again after compiling).
fn inspect_world(bytes: &[u8]) -> Result<PluginKind, LoadError> {
    use wasmparser::{Parser, Payload};
    let malformed = |e: wasmparser::BinaryReaderError| {
        LoadError::Compile(format!("the component is malformed: {e}"))
    };
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components open a level and close it with their own `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.map_err(malformed)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.map_err(malformed)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let kind = kind_of_exports(exports)?;
    if let Some(import) = imports
        .into_iter()
        .find(|name| !super::kind::allows_import(kind, name))
    {
        return Err(LoadError::ForbiddenImport { kind, import });
    }
    Ok(kind)
}

/// The kind whose interface is the one plugin interface among `exports`.
fn kind_of_exports(exports: Vec<String>) -> Result<PluginKind, LoadError> {
    let kinds: Vec<PluginKind> = exports
        .iter()
        .filter_map(|name| super::kind::from_export(name))
        .collect();
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] => Err(LoadError::UnknownWorld { exports }),
        _ => Err(LoadError::AmbiguousWorld { exports }),
    }
}

/// The kind of plugin a component is, from the one plugin interface it exports.
fn detect_kind(engine: &Engine, component: &Component) -> Result<PluginKind, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    kind_of_exports(exports)
}
