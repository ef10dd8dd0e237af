//! Build the built-in plugins from `plugins/` as wasm32-wasip2 components and generate the
//! table that embeds them (`$OUT_DIR/builtin_plugins.rs`).
//!
//! The guests are built by a nested cargo with its own target directory (the outer one is
//! locked while this script runs), shared by every profile of the host so that switching
//! between `cargo test --release` and `cargo bench` does not rebuild them.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in strategies: (plugin name, package in `plugins/`).
const BUILTIN_STRATEGIES: &[(&str, &str)] = &[
    ("least-load", "least-load"),
    ("most-load", "most-load"),
    ("least-kasms", "least-kasms"),
    ("most-kasms", "most-kasms"),
];

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "wasm-release";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-guests");

    for watched in ["wit", "plugins", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            GUEST_PROFILE,
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package) in BUILTIN_STRATEGIES {
        cargo.args(["-p", &format!("zonebroker-strategy-{package}")]);
    }
    // The host's own flags and target must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the built-in plugins: {e}"));
    if !status.success() {
        panic!(
            "building the built-in plugins for {GUEST_TARGET} failed ({status}). \
             Is the target installed? `rustup target add {GUEST_TARGET}` \
             (`cargo xtask run` and `cargo xtask test` do it for you)."
        );
    }

    let artifacts = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    let mut table = String::from(
        "/// The built-in strategies: (plugin name, component bytes).\n\
         pub const BUILTIN_STRATEGIES: &[(&str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTIN_STRATEGIES {
        let wasm = artifacts.join(format!(
            "zonebroker_strategy_{}.wasm",
            package.replace('-', "_")
        ));
        assert!(wasm.exists(), "missing built plugin {}", wasm.display());
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            path_str(&wasm)
        )
        .unwrap();
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("builtin_plugins.rs");
    std::fs::write(out, table).unwrap();
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("target directory path is UTF-8")
}
