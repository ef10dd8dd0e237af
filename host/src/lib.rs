//! zonebroker: a control plane that brokers remote-desktop and container sessions across
//! deployment zones and keeps server pools sized through cloud providers. Every decision an
//! operator may customise runs as a sandboxed WebAssembly component.
//!
//! The map of the workspace is in `ARCHITECTURE.md` at the repository root. This crate is
//! the server: the store, the broker, the AutoScale loop, the HTTP API, the CLI. The domain
//! is `zonebroker-core` and the plugin runtime `zonebroker-plugin-host`, re-exported here
//! under the module names the code has always used.

pub use zonebroker_core::{checkin, domain, placement};
pub use zonebroker_plugin_host as plugins;

pub mod api;
pub mod autoscale;
pub mod broker;
pub mod metrics;
pub mod plugin_cache;
pub mod server;
pub mod store;
pub mod tls_client;
