//! Build the built-in plugins from `plugins/` as wasm32-wasip2 components and generate the
//! table that embeds them (`$OUT_DIR/builtin_plugins.rs`).

use std::fmt::Write as _;
use std::path::PathBuf;

use zonebroker_guest_build::{GuestBuild, component_file};

/// Built-in strategies: (plugin name, package in `plugins/`).
const BUILTIN_STRATEGIES: &[(&str, &str)] = &[
    ("least-load", "zonebroker-strategy-least-load"),
    ("most-load", "zonebroker-strategy-most-load"),
    ("least-kasms", "zonebroker-strategy-least-kasms"),
    ("most-kasms", "zonebroker-strategy-most-kasms"),
];

/// Built-in script generators.
const BUILTIN_GENERATORS: &[(&str, &str)] = &[("default-generator", "zonebroker-script-generator")];

/// Built-in VM providers.
const BUILTIN_PROVIDERS: &[(&str, &str)] = &[("aws-ec2", "zonebroker-provider-aws-ec2")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .and_then(|host| host.parent())
        .unwrap();
    for watched in [
        "wit",
        "plugins",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let build = BUILTIN_STRATEGIES
        .iter()
        .chain(BUILTIN_GENERATORS)
        .chain(BUILTIN_PROVIDERS)
        .fold(GuestBuild::new(), |build, (_, package)| {
            build.package(package)
        });
    let artifacts = build.run(root).unwrap_or_else(|e| panic!("{e}"));

    let mut table = String::new();
    for (constant, what, plugins) in [
        ("BUILTIN_STRATEGIES", "strategies", BUILTIN_STRATEGIES),
        (
            "BUILTIN_GENERATORS",
            "script generators",
            BUILTIN_GENERATORS,
        ),
        ("BUILTIN_PROVIDERS", "VM providers", BUILTIN_PROVIDERS),
    ] {
        writeln!(
            table,
            "/// The built-in {what}: (plugin name, component bytes)."
        )
        .unwrap();
        writeln!(table, "pub const {constant}: &[(&str, &[u8])] = &[").unwrap();
        for (name, package) in plugins {
            let wasm = artifacts.join(component_file(package));
            assert!(wasm.exists(), "missing built plugin {}", wasm.display());
            let path = wasm.to_str().expect("target directory path is UTF-8");
            writeln!(table, "    ({name:?}, include_bytes!({path:?})),").unwrap();
        }
        table.push_str("];\n");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("builtin_plugins.rs");
    std::fs::write(out, table).unwrap();
}
