//! zonebroker-plugin-host: the sandboxed plugin runtime. One wasmtime engine, plugins loaded once and called with a
//! fresh store per call, and a registry of plugins with an atomically swappable active
//! version.
//!
//! Loading ([`PluginRuntime::load`]: check, compile, link, pre-instantiate) is kept apart
//! from calling ([`PluginRuntime::rank`], [`PluginRuntime::render`],
//! [`PluginRuntime::provider`]: fresh `Store`, instantiate, call, drop); the registry
//! calls plugins by name ([`Registry::provider`] answers a typed [`ProviderHandle`]).
//! Every failure is a typed [`LoadError`] or [`CallError`].
//!
//! **Architecture Invariant:** a plugin gets no files, environment, sockets or process
//! control; a call cannot outlive its deadline, exceed its memory cap or its CPU budget, and
//! nothing it does survives into the next call. Nothing outside this crate touches wasmtime,
//! and this crate knows nothing about storage, HTTP serving or directories (no sled, axum or
//! ldap3; CI checks the crate graph): compiled artifacts are kept through the
//! [`ArtifactCache`] trait the server implements.

mod artifacts;
mod builtin;
mod call;
mod capped_output;
mod compile;
mod engine;
mod error;
mod fixed_clock;
mod generator;
mod http;
mod kind;
mod linker;
mod load;
mod provider;
mod provider_handle;
mod registry;
mod runtime;
mod sandbox;
mod smoke;
mod strategy;
mod wit;

pub use artifacts::{ArtifactCache, NoCache, PendingArtifacts};
pub use builtin::{
    BUILTIN_GENERATORS, BUILTIN_PROVIDERS, BUILTIN_STRATEGIES, DEFAULT_GENERATOR, install_builtins,
};
pub use error::{CallError, LoadError};
pub use http::{EndpointError, Endpoints, check_endpoint};
pub use kind::{ALLOWED_IMPORTS, AllowedImport, PluginKind, Served, allowed_imports};
pub use load::{Compiled, LoadedPlugin};
pub use provider::LoadedProvider;
pub use provider_handle::ProviderHandle;
pub use registry::{
    NamedCallError, PluginSlot, PluginSummary, Registry, RegistryError, StrategyCallError,
};
pub use runtime::{
    DEFAULT_MAX_COMPILE_TIME, PluginRuntime, RuntimeConfig, RuntimeInitError,
    default_concurrent_compiles,
};
pub use sandbox::{CallLimits, CallOutput, LogLevel, LogLine};
pub use smoke::SmokeReport;
