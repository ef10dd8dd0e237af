//! Plugins by name, each with one active version that can be swapped atomically.
//!
//! A call takes its own reference to the active version before it starts, so a swap never
//! disturbs calls in flight: they finish on the version they started with, and the next
//! call sees the new one. Nothing here blocks on a call.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::info_span;

use super::error::{CallError, LoadError};
use super::kind::PluginKind;
use super::load::LoadedPlugin;
use super::runtime::PluginRuntime;
use zonebroker_core::domain::names::{self, NameError};
use zonebroker_core::domain::ranking::{CandidateColumns, PlacementRequest, Ranking};
use zonebroker_core::domain::script::{Os, TemplateError};

/// One plugin: its name, kind and active version.
pub struct PluginSlot {
    name: String,
    kind: PluginKind,
    builtin: bool,
    active: ArcSwap<LoadedPlugin>,
}

impl PluginSlot {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// Whether the plugin ships inside the zonebroker binary.
    pub fn builtin(&self) -> bool {
        self.builtin
    }

    /// The active version now. Hold the `Arc` for the length of a call.
    pub fn active(&self) -> Arc<LoadedPlugin> {
        self.active.load_full()
    }
}

/// What `GET /api/v1/plugins` shows of a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginSummary {
    pub name: String,
    pub kind: PluginKind,
    pub builtin: bool,
    /// The sha256 of the active version's component.
    pub active_version: String,
}

/// Why the registry refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid plugin name: {0}")]
    InvalidName(#[from] NameError),
    #[error("no plugin named `{0}`")]
    NotFound(String),
    #[error(
        "plugin `{name}` is a {existing} plugin; a {offered} component cannot be a version of it"
    )]
    KindMismatch {
        name: String,
        existing: PluginKind,
        offered: PluginKind,
    },
    #[error("plugin `{0}` is built in")]
    Builtin(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The plugins the host knows, by name.
pub struct Registry {
    runtime: Arc<PluginRuntime>,
    /// A std `RwLock`, not tokio's: it is held only to look up or insert a slot, never
    /// across a call or an `.await`.
    slots: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
}

impl Registry {
    pub fn new(runtime: Arc<PluginRuntime>) -> Self {
        Registry {
            runtime,
            slots: RwLock::new(BTreeMap::new()),
        }
    }

    /// The runtime the plugins run in.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// Make `plugin` the active version of `name`, creating the plugin if it is new.
    /// Answers the version it replaced, if any.
    ///
    /// A built-in name can only be installed as built-in (at start-up), and a version must be
    /// of the plugin's kind.
    pub fn activate(
        &self,
        name: &str,
        plugin: Arc<LoadedPlugin>,
        builtin: bool,
    ) -> Result<Option<Arc<LoadedPlugin>>, RegistryError> {
        names::validate(name)?;
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slots.get(name) {
            Some(slot) => {
                if slot.kind != plugin.kind() {
                    return Err(RegistryError::KindMismatch {
                        name: name.to_string(),
                        existing: slot.kind,
                        offered: plugin.kind(),
                    });
                }
                if slot.builtin && !builtin {
                    return Err(RegistryError::Builtin(name.to_string()));
                }
                Ok(Some(slot.active.swap(plugin)))
            }
            None => {
                let slot = PluginSlot {
                    name: name.to_string(),
                    kind: plugin.kind(),
                    builtin,
                    active: ArcSwap::new(plugin),
                };
                slots.insert(name.to_string(), Arc::new(slot));
                Ok(None)
            }
        }
    }

    /// Forget plugin `name` (its calls in flight finish on the version they hold).
    pub fn remove(&self, name: &str) -> Option<Arc<PluginSlot>> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots.remove(name)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots.get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginSummary> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .map(|slot| PluginSummary {
                name: slot.name.clone(),
                kind: slot.kind,
                builtin: slot.builtin,
                active_version: slot.active.load().sha256().to_string(),
            })
            .collect()
    }

    /// Rank with the active version of strategy `name`, in a `plugin_call` span.
    pub fn rank(
        &self,
        name: &str,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, StrategyCallError> {
        let slot = self
            .get(name)
            .ok_or_else(|| StrategyCallError::NotFound(name.to_string()))?;
        let plugin = slot.active();
        let span = info_span!(
            "plugin_call",
            plugin = name,
            version = &plugin.sha256()[..12],
            function = "rank",
            candidates = candidates.len(),
        );
        let _entered = span.enter();
        let start = Instant::now();
        let result = self.runtime.rank(&plugin, request, candidates);
        if let Err(error) = &result {
            tracing::warn!(
                elapsed_us = start.elapsed().as_micros() as u64,
                code = error.code(),
                "strategy call failed: {error}"
            );
        }
        result.map_err(StrategyCallError::Call)
    }
}

impl Registry {
    /// The active version of `name` if it is a plugin of `kind`.
    pub(crate) fn active_of(
        &self,
        name: &str,
        kind: PluginKind,
    ) -> Result<Arc<LoadedPlugin>, NamedCallError> {
        match self.get(name) {
            Some(slot) if slot.kind() == kind => Ok(slot.active()),
            _ => Err(NamedCallError::NotFound {
                kind,
                name: name.to_string(),
            }),
        }
    }

    /// Render `template` with script generator `name` (its active version), in a
    /// `plugin_call` span. The inner error is the template's.
    ///
    /// A render is synchronous CPU work of up to its deadline: it runs on a blocking
    /// thread, never on the async workers, so callers simply await it.
    pub async fn render(
        &self,
        name: &str,
        os: Os,
        template: String,
        variables: Vec<(String, String)>,
    ) -> Result<Result<String, TemplateError>, NamedCallError> {
        let plugin = self.active_of(name, PluginKind::ScriptGenerator)?;
        let span = info_span!(
            "plugin_call",
            plugin = name,
            version = &plugin.sha256()[..12],
            function = "render",
        );
        let runtime = self.runtime.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            runtime.render(&plugin, os, &template, &variables)
        })
        .await
        .unwrap_or_else(|joined| Err(CallError::Host(joined.to_string())));
        rendered.map_err(|error| NamedCallError::Call {
            name: name.to_string(),
            error,
        })
    }
}

/// Why a call to a named plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum NamedCallError {
    #[error("no {kind} plugin named `{name}` is installed")]
    NotFound { kind: PluginKind, name: String },
    #[error("plugin `{name}` failed: {error}")]
    Call { name: String, error: CallError },
}

/// Why ranking with a named strategy failed.
#[derive(Debug, thiserror::Error)]
pub enum StrategyCallError {
    #[error("no plugin named `{0}`")]
    NotFound(String),
    #[error("strategy {0}")]
    Call(#[from] CallError),
}
