//! Loading plugins (check, compile, link, pre-instantiate) and calling them (a fresh `Store`
//! per call under the call's limits).

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

use super::engine::{EpochTicker, build_engine, deadline_ticks};
use super::error::{CallError, LoadError};
use super::kind::PluginKind;
use super::sandbox::{CallLimits, CallOutput, CallState, LogLevel};
use super::wit::{self, with_wit_candidates};
use zonebroker_core::domain::ranking::{CandidateColumns, PlacementRequest, Ranking};
use zonebroker_core::domain::script::{Os, TemplateError};
use zonebroker_core::domain::text::cap as cap_text;

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
    /// as [`CallError::Busy`] rather than allocated.
    pub max_concurrent_calls: u32,
    /// How long an upload's compilation may take, waiting for a compile slot included;
    /// past it the upload is refused ([`LoadError::CompileTimeout`]).
    pub max_compile_time: std::time::Duration,
    /// How many compilations may run at once (each keeps a core busy).
    pub max_concurrent_compiles: usize,
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
        }
    }
}

/// The plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeInitError(String);

/// A plugin version, compiled and linked, ready to be called any number of times.
pub struct LoadedPlugin {
    kind: PluginKind,
    sha256: String,
    size: usize,
    instance: Instantiator,
}

enum Instantiator {
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
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .finish()
    }
}

/// Where compiled components are kept between runs, keyed by content hash and engine
/// configuration (`{sha256}-{engine fingerprint}`).
pub trait ArtifactCache {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&self, key: &str, artifact: Vec<u8>);
}

/// A cache that reads through to another one but keeps what a load would put in memory until
/// told to [`keep`](Self::keep) it: an upload's compiled artifact reaches the store only once
/// the upload is accepted.
pub struct PendingArtifacts<'a> {
    cache: &'a dyn ArtifactCache,
    pending: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

impl<'a> PendingArtifacts<'a> {
    pub fn new(cache: &'a dyn ArtifactCache) -> Self {
        PendingArtifacts {
            cache,
            pending: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// What a load put, to be stored later with [`ArtifactCache::put`].
    pub fn into_pending(self) -> Vec<(String, Vec<u8>)> {
        self.pending
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ArtifactCache for PendingArtifacts<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key)
    }
    fn put(&self, key: &str, artifact: Vec<u8>) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((key.to_string(), artifact));
    }
}

/// At most `capacity` compilations at once. A slot is held by the compiling thread until it
/// really ends, even when its caller stopped waiting.
struct CompileSlots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One held compile slot, given back on drop.
struct CompileSlot(std::sync::Arc<CompileSlots>);

impl CompileSlots {
    fn new(capacity: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(CompileSlots {
            free: std::sync::Mutex::new(capacity.max(1)),
            freed: std::sync::Condvar::new(),
        })
    }

    /// A slot, waiting for one until `deadline` (forever without one).
    fn acquire(
        self: &std::sync::Arc<Self>,
        deadline: Option<std::time::Instant>,
    ) -> Option<CompileSlot> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = match deadline {
                None => self.freed.wait(free).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(std::time::Instant::now())?;
                    self.freed
                        .wait_timeout(free, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        *free -= 1;
        Some(CompileSlot(self.clone()))
    }
}

impl Drop for CompileSlot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// No cache: always compile.
pub struct NoCache;

impl ArtifactCache for NoCache {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _: &str, _: Vec<u8>) {}
}

/// Whether a load compiled the component or took it from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiled {
    Now,
    FromCache,
}

/// What a smoke call produced.
#[derive(Debug)]
pub enum SmokeReport {
    /// A strategy's ranking of the synthetic candidates.
    Ranking {
        candidates: CandidateColumns,
        ranking: Ranking,
        output: CallOutput,
    },
    /// A generator's rendering of the smoke template.
    Script(String),
    /// A provider's description of itself.
    Provider(zonebroker_core::domain::provider::ProviderInfo),
}

/// One call into a VM provider.
#[derive(Clone, Debug)]
pub enum ProviderCall {
    Describe,
    Validate {
        settings: Vec<(String, String)>,
    },
    Create {
        settings: Vec<(String, String)>,
        spec: zonebroker_core::domain::provider::VmSpec,
    },
    Get {
        settings: Vec<(String, String)>,
        instance_id: String,
    },
    Destroy {
        settings: Vec<(String, String)>,
        instance_id: String,
    },
    List {
        settings: Vec<(String, String)>,
        tag: (String, String),
    },
}

impl ProviderCall {
    /// The WIT function it calls.
    pub fn function(&self) -> &'static str {
        match self {
            ProviderCall::Describe => "describe",
            ProviderCall::Validate { .. } => "validate",
            ProviderCall::Create { .. } => "create-vm",
            ProviderCall::Get { .. } => "get-vm",
            ProviderCall::Destroy { .. } => "destroy-vm",
            ProviderCall::List { .. } => "list-vms",
        }
    }
}

/// What a provider answered.
#[derive(Clone, Debug)]
pub enum ProviderAnswer {
    Info(zonebroker_core::domain::provider::ProviderInfo),
    Validated(
        Result<
            zonebroker_core::domain::provider::ValidatedSettings,
            zonebroker_core::domain::provider::ProviderError,
        >,
    ),
    Vm(
        Result<
            zonebroker_core::domain::provider::Vm,
            zonebroker_core::domain::provider::ProviderError,
        >,
    ),
    Destroyed(Result<(), zonebroker_core::domain::provider::ProviderError>),
    Vms(
        Result<
            Vec<zonebroker_core::domain::provider::Vm>,
            zonebroker_core::domain::provider::ProviderError,
        >,
    ),
}

/// Fuel a provider call may burn before it yields to the async runtime: a few milliseconds
/// of guest code.
const PROVIDER_YIELD_FUEL: u64 = 2_000_000;

/// The engine, one linker per plugin kind and the epoch ticker: everything calls share.
pub struct PluginRuntime {
    engine: Engine,
    /// Changes whenever compiled artifacts of another engine would not load in this one.
    engine_fingerprint: u64,
    strategy_linker: Linker<CallState>,
    generator_linker: Linker<CallState>,
    provider_linker: Linker<CallState>,
    config: RuntimeConfig,
    compile_slots: std::sync::Arc<CompileSlots>,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeInitError> {
        let init = |e: wasmtime::Error| RuntimeInitError(format!("{e:#}"));
        let max_memory = [
            &config.strategy_limits,
            &config.generator_limits,
            &config.provider_limits,
        ]
        .iter()
        .map(|limits| limits.memory_bytes)
        .max()
        .unwrap_or(0);
        let engine = build_engine(config.max_concurrent_calls, max_memory).map_err(init)?;

        let mut strategy_linker = Linker::new(&engine);
        wit::strategy::Strategy::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut strategy_linker,
            |state| state,
        )
        .map_err(init)?;
        sandboxed_wasi::add_to_linker(&mut strategy_linker).map_err(init)?;

        let mut generator_linker = Linker::new(&engine);
        wit::generator::ScriptGenerator::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut generator_linker,
            |state| state,
        )
        .map_err(init)?;
        sandboxed_wasi::add_to_linker(&mut generator_linker).map_err(init)?;

        let mut provider_linker = Linker::new(&engine);
        // Our own imports one by one: the world's `add_to_linker` would also want the WASI
        // interfaces, which come from wasmtime-wasi(-http) below.
        {
            use wit::provider::zonebroker::plugin::{log, provider_types, types};
            let l = &mut provider_linker;
            log::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state).map_err(init)?;
            types::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state)
                .map_err(init)?;
            provider_types::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state)
                .map_err(init)?;
        }
        sandboxed_wasi::add_async_to_linker(&mut provider_linker).map_err(init)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut provider_linker)
            .map_err(init)?;

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
            strategy_linker,
            generator_linker,
            provider_linker,
            compile_slots: CompileSlots::new(config.max_concurrent_compiles),
            config,
            _ticker: ticker,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// How many compilations are running now, those whose caller stopped waiting included.
    pub fn compiles_running(&self) -> usize {
        let free = *self
            .compile_slots
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.config.max_concurrent_compiles.max(1) - free
    }

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

    /// Compile on a thread of its own, holding a compile slot until that thread ends, and
    /// stop waiting for it after `max_compile_time` (wasmtime cannot interrupt a
    /// compilation).
    fn compile(
        &self,
        bytes: &[u8],
        max_compile_time: Option<std::time::Duration>,
    ) -> Result<Component, LoadError> {
        let deadline = max_compile_time.map(|limit| (limit, std::time::Instant::now() + limit));
        let timeout = |limit| LoadError::CompileTimeout { limit };
        let slot = self
            .compile_slots
            .acquire(deadline.map(|(_, at)| at))
            .ok_or_else(|| timeout(deadline.expect("only a deadline gives up").0))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                let result = Component::new(&engine, &bytes);
                // Nobody may be waiting any more: then the component is dropped here.
                let _ = sender.send(result);
                drop(slot);
            })
            .map_err(|e| LoadError::Compile(format!("cannot start a compile thread: {e}")))?;
        let result = match deadline {
            None => receiver
                .recv()
                .map_err(|_| LoadError::Compile("the compile thread died".into()))?,
            Some((limit, at)) => {
                let left = at.saturating_duration_since(std::time::Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(result) => result,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err(timeout(limit)),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(LoadError::Compile("the compile thread died".into()));
                    }
                }
            }
        };
        result.map_err(|e| LoadError::Compile(format!("{e:#}")))
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
                    self.strategy_linker
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
            PluginKind::ScriptGenerator => Instantiator::ScriptGenerator(
                wit::generator::ScriptGeneratorPre::new(
                    self.generator_linker
                        .instantiate_pre(&component)
                        .map_err(link)?,
                )
                .map_err(link)?,
            ),
            PluginKind::VmProvider => Instantiator::VmProvider(
                wit::provider::VmProviderPre::new(
                    self.provider_linker
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
            instance,
        })
    }

    /// The call every upload must pass before it is stored: a strategy ranks a synthetic
    /// candidate list validly; a generator renders a template that uses every variable.
    /// Answers what the plugin produced, for `zonebroker plugin check`.
    pub fn smoke_test(&self, plugin: &LoadedPlugin) -> Result<SmokeReport, CallError> {
        match plugin.kind {
            PluginKind::Strategy => {
                let mut candidates = smoke::candidates();
                let (result, output) =
                    self.rank_with_output(plugin, &smoke::request(), &mut candidates);
                Ok(SmokeReport::Ranking {
                    candidates,
                    ranking: result?,
                    output,
                })
            }
            PluginKind::ScriptGenerator => {
                let rendered =
                    self.render(plugin, Os::Linux, smoke::TEMPLATE, &smoke::variables())?;
                match rendered {
                    Ok(script) => Ok(SmokeReport::Script(script)),
                    Err(error) => Err(CallError::Guest(format!(
                        "the smoke template did not render: {error}"
                    ))),
                }
            }
            PluginKind::VmProvider => {
                // Providers are async: their smoke call (`describe`, no network) runs on a
                // small runtime of its own, as this is called off the async workers.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CallError::Host(e.to_string()))?;
                match runtime.block_on(self.provider_call(
                    plugin,
                    &super::http::Endpoints::none(),
                    ProviderCall::Describe,
                ))? {
                    ProviderAnswer::Info(info) => Ok(SmokeReport::Provider(info)),
                    _ => Err(CallError::Host("describe answered something else".into())),
                }
            }
        }
    }

    /// Rank `candidates` for `request` with a strategy plugin, and check the answer.
    ///
    /// The columns are lent to the call and returned intact, so a caller can fall back to
    /// another strategy on failure without rebuilding them.
    pub fn rank(
        &self,
        plugin: &LoadedPlugin,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> Result<Ranking, CallError> {
        let (result, output) = self.rank_with_output(plugin, request, candidates);
        output.emit();
        result
    }

    /// [`rank`](Self::rank), also answering what the plugin printed and logged (for
    /// `zonebroker plugin check`). Emits nothing to `tracing`.
    pub fn rank_with_output(
        &self,
        plugin: &LoadedPlugin,
        request: &PlacementRequest,
        candidates: &mut CandidateColumns,
    ) -> (Result<Ranking, CallError>, CallOutput) {
        let Instantiator::Strategy(pre) = &plugin.instance else {
            let error = CallError::WrongKind {
                expected: PluginKind::Strategy,
                actual: plugin.kind,
            };
            return (Err(error), CallOutput::default());
        };
        let limits = &self.config.strategy_limits;
        let mut store = self.new_store(limits);
        let n = candidates.len();
        let request: wit::strategy::zonebroker::plugin::placement_types::PlacementRequest =
            request.into();
        let result = with_wit_candidates(candidates, |candidates| {
            let instance = pre.instantiate(&mut store)?;
            instance
                .zonebroker_plugin_balancer()
                .call_rank(&mut store, request, candidates)
        });
        let output = store.data_mut().take_output();
        let result = match result {
            Ok(Ok(indices)) => Ranking::validate(indices, n).map_err(CallError::from),
            Ok(Err(message)) => Err(CallError::Guest(cap_text(message))),
            Err(error) => Err(classify(error, limits, &output)),
        };
        (result, output)
    }

    /// Render a startup-script template with a script-generator plugin. The outer error is
    /// the call's; the inner one is the template's, as the plugin reports it.
    pub fn render(
        &self,
        plugin: &LoadedPlugin,
        os: Os,
        template: &str,
        variables: &[(String, String)],
    ) -> Result<Result<String, TemplateError>, CallError> {
        let Instantiator::ScriptGenerator(pre) = &plugin.instance else {
            return Err(CallError::WrongKind {
                expected: PluginKind::ScriptGenerator,
                actual: plugin.kind,
            });
        };
        let limits = &self.config.generator_limits;
        let mut store = self.new_store(limits);
        let variables: Vec<_> = variables
            .iter()
            .map(
                |(name, value)| wit::generator::zonebroker::plugin::types::Pair {
                    name: name.clone(),
                    value: value.clone(),
                },
            )
            .collect();
        let result = pre.instantiate(&mut store).and_then(|instance| {
            instance.zonebroker_plugin_generator().call_render(
                &mut store,
                os.into(),
                template,
                &variables,
            )
        });
        let output = store.data_mut().take_output();
        output.emit();
        match result {
            Ok(rendered) => Ok(rendered.map_err(TemplateError::from)),
            Err(error) => Err(classify(error, limits, &output)),
        }
    }

    /// Call a VM-provider plugin. Network calls are allowed to `endpoints` only (origins,
    /// as validated settings name them); the whole call, network included, ends at the
    /// provider deadline.
    pub async fn provider_call(
        &self,
        plugin: &LoadedPlugin,
        endpoints: &super::http::Endpoints,
        call: ProviderCall,
    ) -> Result<ProviderAnswer, CallError> {
        use super::wit::provider_convert as convert;
        let Instantiator::VmProvider(pre) = &plugin.instance else {
            return Err(CallError::WrongKind {
                expected: PluginKind::VmProvider,
                actual: plugin.kind,
            });
        };
        let limits = &self.config.provider_limits;
        let mut store = Store::new(&self.engine, CallState::provider(limits, endpoints));
        store.limiter(|state| state.limiter());
        store
            .set_fuel(limits.fuel)
            .expect("the engine is configured with fuel");
        // A provider call runs on the async workers: however long it computes, it hands
        // the worker back every few milliseconds, so listeners and other calls keep going.
        store
            .fuel_async_yield_interval(Some(PROVIDER_YIELD_FUEL))
            .expect("the engine is configured with fuel");
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let provider = instance.zonebroker_plugin_provider();
            let settings = |s: &[(String, String)]| convert::pairs(s);
            Ok::<_, wasmtime::Error>(match &call {
                ProviderCall::Describe => {
                    ProviderAnswer::Info(convert::info(provider.call_describe(&mut store).await?))
                }
                ProviderCall::Validate { settings: s } => ProviderAnswer::Validated(
                    provider
                        .call_validate(&mut store, &settings(s))
                        .await?
                        .map(convert::validated)
                        .map_err(convert::error),
                ),
                ProviderCall::Create { settings: s, spec } => ProviderAnswer::Vm(
                    provider
                        .call_create_vm(&mut store, &settings(s), &convert::spec(spec))
                        .await?
                        .map(convert::vm)
                        .map_err(convert::error),
                ),
                ProviderCall::Get {
                    settings: s,
                    instance_id,
                } => ProviderAnswer::Vm(
                    provider
                        .call_get_vm(&mut store, &settings(s), instance_id)
                        .await?
                        .map(convert::vm)
                        .map_err(convert::error),
                ),
                ProviderCall::Destroy {
                    settings: s,
                    instance_id,
                } => ProviderAnswer::Destroyed(
                    provider
                        .call_destroy_vm(&mut store, &settings(s), instance_id)
                        .await?
                        .map_err(convert::error),
                ),
                ProviderCall::List { settings: s, tag } => ProviderAnswer::Vms(
                    provider
                        .call_list_vms(
                            &mut store,
                            &settings(s),
                            &convert::pairs(std::slice::from_ref(tag))[0],
                        )
                        .await?
                        .map(|vms| vms.into_iter().map(convert::vm).collect())
                        .map_err(convert::error),
                ),
            })
        };
        let result = tokio::time::timeout(limits.deadline, run).await;
        let output = store.data_mut().take_output();
        output.emit();
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(classify(error, limits, &output)),
            Err(_) => Err(CallError::DeadlineExceeded {
                deadline: limits.deadline,
            }),
        }
    }

    /// A store for one call, its limits armed.
    fn new_store(&self, limits: &CallLimits) -> Store<CallState> {
        let mut store = Store::new(&self.engine, CallState::new(limits));
        store.limiter(|state| state.limiter());
        store
            .set_fuel(limits.fuel)
            .expect("the engine is configured with fuel");
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        store
    }
}

/// The synthetic inputs of [`PluginRuntime::smoke_test`].
mod smoke {
    use zonebroker_core::domain::ranking::{CandidateColumns, CandidateRow, PlacementRequest};

    pub fn request() -> PlacementRequest {
        PlacementRequest {
            cores: 1.0,
            memory: 2 << 30,
            gpus: 0,
            user_key: 0x5eed,
            same_zone: true,
        }
    }

    /// Eight agents with varied sizes, loads and sessions (one with nothing known).
    pub fn candidates() -> CandidateColumns {
        (0..8u32)
            .map(|i| CandidateRow {
                cores_total: if i == 7 { 0.0 } else { f64::from(4 << (i % 3)) },
                cores_reserved: f64::from(i % 4),
                memory_total: if i == 7 {
                    0
                } else {
                    (16u64 << 30) * u64::from(1 + i % 2)
                },
                memory_reserved: u64::from(i) << 30,
                gpus_total: i % 2,
                gpus_reserved: 0,
                sessions: i % 5,
                max_sessions: 10,
                user_sessions: i % 2,
                cpu_load: (i as f32) / 10.0,
                memory_load: ((7 - i) as f32) / 10.0,
            })
            .collect()
    }

    /// Every variable, and both kinds of literal brace.
    pub const TEMPLATE: &str = "#!/bin/sh\n# {{smoke}}\n\
        echo {ad_join_credential} {checkin_jwt} {connection_username} {connection_password} \
        {domain} {upstream_auth_address}\n";

    pub fn variables() -> Vec<(String, String)> {
        [
            ("ad_join_credential", "Pa55word"),
            ("checkin_jwt", "eyJ0eXAiOiJKV1QifQ.e30.c2ln"),
            ("connection_username", "kasm"),
            ("connection_password", "secret"),
            ("domain", "example.test"),
            ("upstream_auth_address", "broker.example.test"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
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

/// Turn a failed call into the typed error that says what the plugin did.
fn classify(error: wasmtime::Error, limits: &CallLimits, output: &CallOutput) -> CallError {
    if let Some(cap) = error.downcast_ref::<super::sandbox::MemoryCapExceeded>() {
        return CallError::MemoryLimitExceeded {
            requested: cap.requested,
            cap: cap.cap,
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return CallError::Busy;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::CpuBudgetExhausted { fuel: limits.fuel },
        Some(Trap::Interrupt) => CallError::DeadlineExceeded {
            deadline: limits.deadline,
        },
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        // Rust guests keep a shadow stack at the bottom of linear memory: overflowing it
        // wraps below address 0 and surfaces as an out-of-bounds access.
        Some(Trap::MemoryOutOfBounds) => CallError::Trap {
            trap: format!(
                "{} (a wild pointer, or a shadow-stack overflow)",
                Trap::MemoryOutOfBounds
            ),
            stderr: cap_text(output.stderr.trim().to_string()),
        },
        Some(trap) => CallError::Trap {
            trap: trap.to_string(),
            stderr: cap_text(output.stderr.trim().to_string()),
        },
        None => CallError::Host(cap_text(format!("{error:#}"))),
    }
}

impl CallOutput {
    /// Forward what the plugin printed and logged to `tracing`, in the caller's span.
    pub fn emit(&self) {
        for line in &self.log {
            let message = line.message.as_str();
            match line.level {
                LogLevel::Trace => tracing::trace!(target: "plugin", "{message}"),
                LogLevel::Debug => tracing::debug!(target: "plugin", "{message}"),
                LogLevel::Info => tracing::info!(target: "plugin", "{message}"),
                LogLevel::Warn => tracing::warn!(target: "plugin", "{message}"),
                LogLevel::Error => tracing::error!(target: "plugin", "{message}"),
            }
        }
        for line in self.stdout.lines() {
            tracing::info!(target: "plugin", stream = "stdout", "{line}");
        }
        for line in self.stderr.lines() {
            tracing::warn!(target: "plugin", stream = "stderr", "{line}");
        }
        if self.truncated {
            tracing::warn!(target: "plugin", "plugin output over the per-call cap was dropped");
        }
    }
}

/// The WASI a plugin may see: stdio, environment (empty), exit, clocks and random, all
/// from [`CallState`]'s deterministic context. No filesystem, no sockets.
mod sandboxed_wasi {
    use wasmtime::component::{HasData, Linker, ResourceTable};
    use wasmtime_wasi::WasiView;
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync::io};
    use wasmtime_wasi::random::WasiRandom;

    use crate::sandbox::CallState;

    struct HasIo;
    impl HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }

    fn table(state: &mut CallState) -> &mut ResourceTable {
        state.ctx().table
    }

    /// For providers, whose calls are async: the async I/O (waiting on an HTTP response
    /// yields to the runtime) and the same non-blocking rest.
    pub fn add_async_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(l)?;
        random::insecure::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        cli::exit::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::environment::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        Ok(())
    }

    pub fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<_, HasIo>(l, table)?;
        io::poll::add_to_linker::<_, HasIo>(l, table)?;
        io::streams::add_to_linker::<_, HasIo>(l, table)?;
        clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, CallState::clocks)?;
        clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, CallState::clocks)?;
        random::random::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        cli::exit::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::environment::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        Ok(())
    }
}
