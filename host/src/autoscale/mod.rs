//! AutoScale: keeping server pools sized through VM-provider plugins.

pub mod addresses;
pub mod bootstrap;
pub mod cloud;
pub mod directory;
pub mod reconciler;
pub mod schedule;

pub use addresses::BrokerAddresses;
pub use bootstrap::Bootstrapper;
pub use cloud::{Cloud, PluginCloud};
pub use reconciler::{PassReport, Reconciler, ReconcilerSettings};

#[cfg(test)]
mod tests;
