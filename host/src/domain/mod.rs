//! Pure types and rules: no I/O, no sled, no axum, no wasmtime.
//!
//! **Architecture Invariant:** nothing under `domain` imports `crate::store`, `crate::api`,
//! `crate::plugins`, or any I/O crate; everything here is unit-tested without a server.

pub mod names;
pub mod ranking;
pub mod script;
