//! zonebroker: a control plane that brokers remote-desktop and container sessions across
//! deployment zones and keeps server pools sized through cloud providers. Every decision an
//! operator may customise runs as a sandboxed WebAssembly component.
//!
//! The map of this crate is in `ARCHITECTURE.md` at the repository root.

pub mod api;
pub mod autoscale;
pub mod broker;
pub mod domain;
pub mod metrics;
pub mod placement;
pub mod plugins;
pub mod server;
pub mod store;
