//! Write zonebroker plugins as plain Rust.
//!
//! zonebroker runs every decision an operator may customise as a sandboxed WebAssembly
//! component: load-balancing strategies, VM-provider adapters and startup-script generators.
//! This crate turns a plain Rust trait implementation into such a component, and lets the
//! same implementation be unit-tested natively with `cargo test`.
//!
//! | plugin kind | trait | export macro | cargo feature |
//! |---|---|---|---|
//! | load-balancing strategy | [`strategy::Strategy`] | [`export_strategy!`] | `strategy` (default) |
//! | VM provider | `provider::VmProvider` | `export_provider!` | `provider` |
//! | startup-script generator | `generator::ScriptGenerator` | `export_generator!` | `generator` |
//!
//! Enable exactly one feature: a component implements exactly one world.
//!
//! # A complete strategy
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "spread-users"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! zonebroker-plugin-sdk = { path = "../zonebroker/plugins/sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use zonebroker_plugin_sdk::strategy::{rank_ascending, Candidates, PlacementRequest, Strategy};
//!
//! /// Prefer the candidate running the fewest sessions of this user, then the emptiest.
//! pub struct SpreadUsers;
//!
//! impl Strategy for SpreadUsers {
//!     fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {
//!         Ok(rank_ascending(candidates.len(), |i| {
//!             // Sort by (user's sessions, load): pack both into one key.
//!             candidates.user_sessions[i] as f64 * 2.0 + candidates.load(i).min(1.0)
//!         }))
//!     }
//! }
//!
//! zonebroker_plugin_sdk::export_strategy!(SpreadUsers);
//!
//! #[cfg(test)]
//! mod tests {
//!     use super::*;
//!     use zonebroker_plugin_sdk::strategy::Candidate;
//!
//!     #[test]
//!     fn prefers_agents_without_this_users_sessions() {
//!         let candidates = Candidates::from_rows([
//!             Candidate::new().cores(4.0, 0.0).sessions(1, 4).user_sessions(1),
//!             Candidate::new().cores(4.0, 3.0).sessions(3, 4),
//!         ]);
//!         let ranking = SpreadUsers::rank(&PlacementRequest::default(), &candidates).unwrap();
//!         assert_eq!(ranking, [1, 0]);
//!     }
//! }
//! # fn main() {
//! #     use zonebroker_plugin_sdk::strategy::Candidate;
//! #     let candidates = Candidates::from_rows([
//! #         Candidate::new().cores(4.0, 0.0).sessions(1, 4).user_sessions(1),
//! #         Candidate::new().cores(4.0, 3.0).sessions(3, 4),
//! #     ]);
//! #     assert_eq!(SpreadUsers::rank(&PlacementRequest::default(), &candidates).unwrap(), [1, 0]);
//! # }
//! ```
//!
//! `.cargo/config.toml` (recommended: a small stack lets the host reset and reuse the
//! component's memory between calls almost for free, halving the cost of a call):
//!
//! ```toml
//! [target.wasm32-wasip2]
//! rustflags = ["-C", "link-arg=-zstack-size=65536", "-C", "link-arg=--initial-memory=262144", "-C", "target-feature=+simd128"]
//! ```
//!
//! Build the component:
//!
//! ```sh
//! rustup target add wasm32-wasip2
//! cargo test                                    # the native unit tests
//! cargo build --release --target wasm32-wasip2  # target/wasm32-wasip2/release/spread_users.wasm
//! ```
//!
//! # The sandbox
//!
//! A plugin gets no files, environment variables, sockets or process control. A strategy sees
//! a fixed clock and seeded randomness (the same inputs always give the same ranking) and runs
//! under a memory cap, an instruction budget and a wall-clock deadline of milliseconds. Print
//! with [`log`]; stdout and stderr also reach the host's logs, size-capped.

#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate example shows a test module the way an author writes it; a hidden `main` runs it.
#![allow(clippy::test_attr_in_doctest)]

extern crate self as zonebroker_plugin_sdk;

#[doc(hidden)]
pub mod bindings;
pub mod encoding;
pub mod log;

#[cfg(feature = "generator")]
pub mod generator;
#[cfg(feature = "provider")]
pub mod http;
#[cfg(feature = "provider")]
pub mod provider;
#[cfg(feature = "strategy")]
pub mod strategy;

#[doc(hidden)]
pub use bindings as __bindings;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;
