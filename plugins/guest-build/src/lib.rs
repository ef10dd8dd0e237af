//! Build guest crates of this workspace as `wasm32-wasip2` components, from the host's
//! `build.rs` (the embedded built-ins) or from a test (the fixtures).
//!
//! The nested cargo gets its own target directory, `<target>/wasm-guests`: the outer build
//! holds the lock of `<target>` while a build script runs. The directory is shared by every
//! profile of the host, so the guests are built once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every plugin is built for; rustc's linker emits a component directly.
pub const TARGET: &str = "wasm32-wasip2";
/// The workspace profile for plugins: optimised, LTO, `panic = "abort"`, stripped.
pub const PROFILE: &str = "wasm-release";

/// What to build.
#[derive(Debug, Default)]
pub struct GuestBuild {
    packages: Vec<String>,
    examples: bool,
}

impl GuestBuild {
    pub fn new() -> Self {
        Self::default()
    }

    /// Build this workspace package's library.
    pub fn package(mut self, name: &str) -> Self {
        self.packages.push(name.to_string());
        self
    }

    /// Also build the packages' examples (each an example with `crate-type = ["cdylib"]`).
    pub fn with_examples(mut self) -> Self {
        self.examples = true;
        self
    }

    /// Run the build for the workspace at `root`. Answers the directory holding the
    /// components (`<name>.wasm`, and `examples/<name>.wasm`).
    ///
    /// One cargo invocation per package: cargo unifies the features of packages built
    /// together, and a plugin must get exactly its own world's SDK feature.
    pub fn run(&self, root: &Path) -> Result<PathBuf, String> {
        let target_dir = guest_target_dir(root);
        for package in &self.packages {
            self.build_one(root, &target_dir, package)?;
        }
        Ok(target_dir.join(TARGET).join(PROFILE))
    }

    fn build_one(&self, root: &Path, target_dir: &Path, package: &str) -> Result<(), String> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command
            .current_dir(root)
            .args(["build", "--quiet", "--profile", PROFILE, "--target", TARGET])
            .arg("--target-dir")
            .arg(target_dir)
            .args(["-p", package]);
        if self.examples {
            command.arg("--examples").arg("--lib");
        }
        // The caller's flags and target must not leak into the guest build.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            command.env_remove(var);
        }
        let status = command
            .status()
            .map_err(|e| format!("cannot run cargo to build plugins: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building {package} for {TARGET} failed ({status}). Is the target installed? \
                 `rustup target add {TARGET}` (`cargo xtask test` does it for you)"
            ));
        }
        Ok(())
    }
}

/// `<target>/wasm-guests`, where `<target>` is `CARGO_TARGET_DIR` or `<root>/target`.
pub fn guest_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-guests")
}

/// The file name of a package's component: `my-plugin` → `my_plugin.wasm`.
pub fn component_file(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}
