//! zonebroker-core: the domain of a session broker with deployment zones, as pure types and
//! rules. The map of the workspace is in `ARCHITECTURE.md` at the repository root.
//!
//! **Architecture Invariant:** this crate knows nothing about storage, HTTP, WebAssembly,
//! async runtimes or directories: it depends on no I/O crate (no sled, wasmtime, axum, tokio,
//! ldap3; CI checks the crate graph), and everything here is unit-tested without a server.

pub mod checkin;
pub mod domain;
pub mod placement;
