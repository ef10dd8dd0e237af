//! `zonebroker plugin new NAME [--lang rust|python|javascript]`: a strategy project that
//! tests, builds and uploads as it is: a Rust crate on the SDK, or a Python or JavaScript
//! project carrying its own copy of the WIT contract.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The SDK next to the sources this binary was built from.
const BUILT_WITH_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// The language of a new strategy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[default]
    Rust,
    Python,
    Javascript,
}

pub fn new_strategy(
    name: &str,
    lang: Lang,
    path: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<()> {
    zonebroker::domain::names::validate(name)
        .with_context(|| format!("`{name}` is not a plugin name"))?;
    let dir = path.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    match lang {
        Lang::Rust => new_rust_strategy(name, &dir, sdk),
        Lang::Python | Lang::Javascript => new_interpreted_strategy(name, lang, &dir),
    }
}

/// The WIT contract, as this binary was built with it: (path in the project, text).
const WIT: &[(&str, &str)] = &[
    (
        "wit/zonebroker.wit",
        include_str!("../../../wit/zonebroker.wit"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("templates/python/app.py")),
    ("strategy.py", include_str!("templates/python/strategy.py")),
    (
        "test_strategy.py",
        include_str!("templates/python/test_strategy.py"),
    ),
    ("README.md", include_str!("templates/python/README.md")),
    (".gitignore", include_str!("templates/python/gitignore")),
];

const JAVASCRIPT: &[(&str, &str)] = &[
    (
        "strategy.js",
        include_str!("templates/javascript/strategy.js"),
    ),
    (
        "strategy.test.js",
        include_str!("templates/javascript/strategy.test.js"),
    ),
    (
        "package.json",
        include_str!("templates/javascript/package.json"),
    ),
    ("README.md", include_str!("templates/javascript/README.md")),
    (".gitignore", include_str!("templates/javascript/gitignore")),
];

/// A Python (componentize-py) or JavaScript (componentize-js) project: the rule, its
/// native tests, the entry point, the WIT, and a README with the commands. For Python, the
/// bindings are generated now when `componentize-py` is on the PATH.
fn new_interpreted_strategy(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    let wasm = format!("{}.wasm", name.replace('-', "_"));
    let files = if lang == Lang::Python {
        PYTHON
    } else {
        JAVASCRIPT
    };
    for (file, text) in WIT.iter().chain(files) {
        let text = text.replace("{{name}}", name).replace("{{wasm}}", &wasm);
        write(&dir.join(file), &text)?;
    }
    println!("created {} (strategy `{name}`, {lang:?})", dir.display());
    println!("next:");
    println!("  cd {}", dir.display());
    if lang == Lang::Python {
        let bindings = std::process::Command::new("componentize-py")
            .args(["-d", "wit", "-w", "strategy", "bindings", "."])
            .current_dir(dir)
            .output();
        match bindings {
            Ok(out) if out.status.success() => println!("  (bindings generated: wit_world/)"),
            _ => {
                println!("  pip install componentize-py==0.25.1 pytest");
                println!("  componentize-py -d wit -w strategy bindings .");
            }
        }
        println!("  python -m pytest");
        println!("  componentize-py -d wit -w strategy componentize app -o {wasm}");
    } else {
        println!("  npm install");
        println!("  npm test");
        println!("  npm run build");
    }
    println!("  zonebroker plugin check {wasm}");
    println!("  zonebroker plugin upload {name} {wasm} --activate");
    Ok(())
}

fn new_rust_strategy(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let sdk = sdk.unwrap_or_else(|| PathBuf::from(BUILT_WITH_SDK));
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the plugin SDK is not at {}: pass --sdk PATH/TO/zonebroker/plugins/sdk",
            sdk.display()
        )
    })?;
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let type_name = if type_name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Strategy{type_name}")
    } else {
        type_name
    };
    let wasm = format!("{}.wasm", name.replace('-', "_"));

    write(&dir.join("Cargo.toml"), &cargo_toml(name, &sdk))?;
    write(&dir.join(".cargo/config.toml"), CARGO_CONFIG)?;
    write(&dir.join("src/lib.rs"), &lib_rs(&type_name))?;
    write(&dir.join("README.md"), &readme(name, &wasm))?;
    write(&dir.join(".gitignore"), "/target/\n")?;
    println!("created {} (strategy `{name}`)", dir.display());
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-wasip2");
    println!("  zonebroker plugin check target/wasm32-wasip2/release/{wasm}");
    println!("  zonebroker plugin upload {name} target/wasm32-wasip2/release/{wasm} --activate");
    Ok(())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component to upload; rlib: `cargo test` runs the unit tests natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
zonebroker-plugin-sdk = {{ path = "{sdk}" }}

[profile.release]
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A crate of its own, even inside another workspace.
[workspace]
"#,
        sdk = sdk.display()
    )
}

const CARGO_CONFIG: &str = r#"# A small stack and initial memory make each call into the plugin cheap for the broker
# (its memory is reset and reused between calls); SIMD speeds up sorting.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=65536", "-C", "link-arg=--initial-memory=262144", "-C", "target-feature=+simd128"]
"#;

fn lib_rs(type_name: &str) -> String {
    format!(
        r#"//! A zonebroker load-balancing strategy.
//!
//! `rank` orders the candidates for one session, best first; leave a candidate out to refuse
//! it. Candidates come sorted by id: ties broken by index are reproducible.

use zonebroker_plugin_sdk::strategy::{{Candidates, PlacementRequest, Strategy, rank_descending}};

pub struct {type_name};

impl Strategy for {type_name} {{
    fn rank(_request: &PlacementRequest, candidates: &Candidates) -> Result<Vec<u32>, String> {{
        // The candidate with the most free session slots first.
        Ok(rank_descending(candidates.len(), |i| candidates.free_slots(i)))
    }}
}}

zonebroker_plugin_sdk::export_strategy!({type_name});

#[cfg(test)]
mod tests {{
    use super::*;
    use zonebroker_plugin_sdk::strategy::Candidate;

    #[test]
    fn most_free_slots_first() {{
        let candidates = Candidates::from_rows([
            Candidate::new().cores(8.0, 1.0).sessions(3, 4),
            Candidate::new().cores(8.0, 6.0).sessions(1, 4),
        ]);
        let ranking = {type_name}::rank(&PlacementRequest::default(), &candidates).unwrap();
        assert_eq!(ranking, [1, 0]);
    }}

    #[test]
    fn no_candidates_no_ranking() {{
        let ranking = {type_name}::rank(&PlacementRequest::default(), &Candidates::from_rows([] as [Candidate; 0]));
        assert_eq!(ranking.unwrap(), Vec::<u32>::new());
    }}
}}
"#
    )
}

fn readme(name: &str, wasm: &str) -> String {
    format!(
        r#"# {name}: a zonebroker strategy

```sh
rustup target add wasm32-wasip2                      # once
cargo test                                           # native unit tests
cargo build --release --target wasm32-wasip2         # the component
zonebroker plugin check target/wasm32-wasip2/release/{wasm}
zonebroker plugin upload {name} target/wasm32-wasip2/release/{wasm} --activate
zonebroker zone update default --strategy {name}
```

`zonebroker plugin check` runs the server's validation and smoke call locally and prints the
ranking of a sample; `upload` needs `ZONEBROKER_ADMIN_TOKEN` (and `--server URL` unless the
broker is on `http://127.0.0.1:8080`). Roll back with `zonebroker plugin rollback {name}`.
"#
    )
}
