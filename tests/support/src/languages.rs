//! Strategies in Python and JavaScript, built from source with the toolchains `cargo xtask
//! setup` installs: `componentize-py` (PyPI, in `<target>/tools/venv`) and
//! `@bytecodealliance/componentize-js` (npm, in `<target>/tools/node`). Each component is
//! built once per test process into `<target>/language-guests/`, never into the source
//! directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::{installed_tool, python_tool, run, target_dir, workspace_root};

/// The source language of a strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
}

/// `componentize-js` as `cargo xtask setup` installs it.
pub fn componentize_js() -> PathBuf {
    installed_tool("node/node_modules/.bin/componentize-js")
}

/// The strategy component whose source is `dir` (relative to the repository root): for
/// Python the module `app` in it, for JavaScript its `strategy.js`. Built on first use.
pub fn strategy_component(language: Language, dir: &str) -> Vec<u8> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = match built.get(dir) {
        Some(out) => out.clone(),
        None => {
            let out = build(language, &workspace_root().join(dir));
            built.insert(dir.to_string(), out.clone());
            out
        }
    };
    std::fs::read(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()))
}

fn build(language: Language, source: &Path) -> PathBuf {
    let wit = workspace_root().join("wit");
    let out_dir = target_dir().join("language-guests");
    std::fs::create_dir_all(&out_dir).expect("output directory");
    let name = source
        .file_name()
        .expect("a source directory")
        .to_string_lossy();
    let out = out_dir.join(format!("{name}.wasm"));
    let started = std::time::Instant::now();
    match language {
        Language::Python => run(
            Command::new(python_tool("componentize-py"))
                .arg("-d")
                .arg(&wit)
                .args(["-w", "strategy", "componentize", "app", "-p"])
                .arg(source)
                .arg("-o")
                .arg(&out)
                .current_dir(&out_dir),
            "componentize-py",
        ),
        Language::JavaScript => run(
            Command::new(componentize_js())
                .arg(source.join("strategy.js"))
                .arg("--wit")
                .arg(&wit)
                .args([
                    "--world-name",
                    "strategy",
                    "--disable",
                    "http",
                    "fetch-event",
                ])
                .arg("--out")
                .arg(&out),
            "componentize-js",
        ),
    }
    eprintln!(
        "built {} ({language:?}) in {:?}",
        out.display(),
        started.elapsed()
    );
    out
}

/// Run a Python example's own tests (pytest) with bindings generated from the WIT into a
/// scratch directory, so that the example's directory stays as committed.
pub fn run_python_tests(dir: &str) {
    let source = workspace_root().join(dir);
    let bindings = tempfile::tempdir().expect("scratch directory");
    run(
        Command::new(python_tool("componentize-py"))
            .arg("-d")
            .arg(workspace_root().join("wit"))
            .args(["-w", "strategy", "bindings"])
            .arg(bindings.path()),
        "componentize-py bindings",
    );
    run(
        Command::new(python_tool("python"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&source)
            .env("PYTHONPATH", bindings.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "pytest",
    );
}

/// Run a JavaScript example's own tests (`node --test`) in its directory.
pub fn run_javascript_tests(dir: &str) {
    run(
        Command::new("node")
            .arg("--test")
            .current_dir(workspace_root().join(dir)),
        "node --test",
    );
}
