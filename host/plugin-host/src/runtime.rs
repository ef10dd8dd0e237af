//! The plugin runtime: the one engine, a linker per plugin kind, the epoch ticker, and the
//! limits of every kind of call. Loading lives in [`crate::load`], calling in one module per
//! plugin kind.

use wasmtime::Engine;

use super::compile::CompileSlots;
use super::engine::{EpochTicker, build_engine};
use super::kind::PluginKind;
use super::linker::Linkers;
use super::load::LoadedPlugin;
use super::sandbox::CallLimits;

/// How the runtime is sized and what each kind of call may use.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Limits of every strategy call.
    pub strategy_limits: CallLimits,
    /// Limits of every script-generator call.
    pub generator_limits: CallLimits,
    /// Limits of every VM-provider call (network round trips included).
    pub provider_limits: CallLimits,
    /// How many plugin calls may run at once (pre-reserved sandboxes); one more is refused
    /// as [`CallError::Busy`](crate::CallError::Busy) rather than allocated.
    pub max_concurrent_calls: u32,
    /// How long an upload's compilation may take, waiting for a compile slot included;
    /// past it the upload is refused ([`LoadError::CompileTimeout`](crate::LoadError::CompileTimeout)).
    pub max_compile_time: std::time::Duration,
    /// How many compilations may run at once (each keeps a core busy).
    pub max_concurrent_compiles: usize,
    /// The greatest limits a plugin may be given of its own (`output_bytes` is not used).
    pub max_limits: CallLimits,
}

/// The default `max_compile_time`: enough for an 18 MB interpreter component.
pub const DEFAULT_MAX_COMPILE_TIME: std::time::Duration = std::time::Duration::from_secs(120);

/// One compilation per core.
pub fn default_concurrent_compiles() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            strategy_limits: CallLimits::STRATEGY,
            generator_limits: CallLimits {
                deadline: std::time::Duration::from_secs(1),
                ..CallLimits::STRATEGY
            },
            provider_limits: CallLimits::PROVIDER,
            max_concurrent_calls: 256,
            max_compile_time: DEFAULT_MAX_COMPILE_TIME,
            max_concurrent_compiles: default_concurrent_compiles(),
            max_limits: CallLimits::MAXIMA,
        }
    }
}

/// The plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeInitError(String);

/// The engine, one linker per plugin kind and the epoch ticker: everything calls share.
pub struct PluginRuntime {
    pub(crate) engine: Engine,
    /// Changes whenever compiled artifacts of another engine would not load in this one.
    pub(crate) engine_fingerprint: u64,
    pub(crate) linkers: Linkers,
    pub(crate) config: RuntimeConfig,
    pub(crate) compile_slots: std::sync::Arc<CompileSlots>,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeInitError> {
        let init = |e: wasmtime::Error| RuntimeInitError(format!("{e:#}"));
        let max_memory = [
            &config.strategy_limits,
            &config.generator_limits,
            &config.provider_limits,
            &config.max_limits,
        ]
        .iter()
        .map(|limits| limits.memory_bytes)
        .max()
        .unwrap_or(0);
        let engine = build_engine(config.max_concurrent_calls, max_memory).map_err(init)?;
        let linkers = Linkers::new(&engine).map_err(init)?;
        let ticker = EpochTicker::start(&engine).map_err(|e| RuntimeInitError(e.to_string()))?;
        let engine_fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        Ok(PluginRuntime {
            engine,
            engine_fingerprint,
            linkers,
            compile_slots: CompileSlots::new(config.max_concurrent_compiles),
            config,
            _ticker: ticker,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The limits of `plugin`'s calls: its kind's, with the plugin's own where it sets them,
    /// each capped at this runtime's maxima.
    pub fn limits_of(&self, plugin: &LoadedPlugin) -> CallLimits {
        let defaults = match plugin.kind() {
            PluginKind::Strategy => self.config.strategy_limits,
            PluginKind::ScriptGenerator => self.config.generator_limits,
            PluginKind::VmProvider => self.config.provider_limits,
        };
        defaults.with_overrides(&self.config.max_limits.cap(&plugin.limits()))
    }
}
