//! Pure types and rules: no I/O, no sled, no axum, no wasmtime.
//!
//! Types here derive `serde`, and `utoipa::ToSchema` behind the `openapi` feature (schema
//! metadata, no I/O), because they are also what the API speaks.

pub mod agent;
pub mod autoscale;
pub mod capacity;
pub mod duration;
pub mod endpoint;
pub mod image;
pub mod ldap;
pub mod names;
pub mod page;
pub mod plugin;
pub mod provider;
pub mod ranking;
pub mod script;
pub mod secret;
pub mod session;
pub mod text;
pub mod timestamp;
pub mod validation;
pub mod zone;
