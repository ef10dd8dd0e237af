//! AutoScale: keeping server pools sized through VM-provider plugins.

pub mod checkin;
pub mod cloud;
pub mod directory;
pub mod reconciler;

pub use cloud::{Cloud, PluginCloud};
pub use reconciler::{PassReport, Reconciler, ReconcilerSettings};

#[cfg(test)]
mod tests;
