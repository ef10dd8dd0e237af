//! AutoScale: keeping server pools sized through VM-provider plugins.

pub mod checkin;
