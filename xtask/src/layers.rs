//! `cargo xtask layers`: the architecture's rules as the crate graph, checked. Each library
//! crate of the server lists the crates it must never depend on (directly or through
//! another), with default features, as `cargo tree -e normal` resolves them.

use std::collections::BTreeSet;
use std::path::Path;

/// (crate, what it must not depend on, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "zonebroker-core",
        &[
            "sled",
            "wasmtime",
            "axum",
            "tokio",
            "ldap3",
            "hyper",
            "zonebroker-plugin-host",
        ],
        "the domain is pure: no storage, WebAssembly, HTTP, async runtime or directory",
    ),
    (
        "zonebroker-plugin-host",
        &["sled", "axum", "ldap3", "zonebroker"],
        "the plugin host knows nothing of storage, the HTTP API or directories",
    ),
];

pub fn check(root: &Path) -> Result<(), String> {
    let mut broken = Vec::new();
    for (krate, forbidden, why) in RULES {
        let dependencies = dependencies(root, krate)?;
        let found: Vec<&str> = forbidden
            .iter()
            .copied()
            .filter(|name| dependencies.contains(*name))
            .collect();
        if found.is_empty() {
            println!(
                "layers: {krate} depends on none of {}",
                forbidden.join(", ")
            );
        } else {
            broken.push(format!("{krate} depends on {} ({why})", found.join(", ")));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the crate graph breaks the architecture (`cargo tree -p CRATE -e normal -i NAME` shows the path):\n  {}",
            broken.join("\n  ")
        ))
    }
}

/// Every crate `krate` depends on, itself excluded.
fn dependencies(root: &Path, krate: &str) -> Result<BTreeSet<String>, String> {
    let output = super::cargo()
        .current_dir(root)
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let names = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect::<BTreeSet<_>>();
    Ok(names.into_iter().filter(|name| name != krate).collect())
}
