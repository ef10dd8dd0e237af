//! Plugin kinds, one per WIT world, and what each may import.

pub use zonebroker_core::domain::plugin::PluginKind;

/// Our WIT package and the versions of it this host implements (semver-compatible `0.1.x`).
const PACKAGE: &str = "zonebroker:plugin";
const PACKAGE_VERSION_PREFIX: &str = "0.1.";
/// WASI interfaces are linked at `0.2.12`; any `0.2.x` import is compatible.
const WASI_VERSION_PREFIX: &str = "0.2.";

/// WASI a std Rust guest imports even when it never prints: std's panic and OOM paths use
/// them. The host links them to an empty, deterministic context.
const SANDBOXED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The interface (without package and version) a component of this kind exports.
fn exported_interface(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Strategy => "balancer",
        PluginKind::VmProvider => "provider",
        PluginKind::ScriptGenerator => "generator",
    }
}

/// Our own interfaces this kind may import (the types its exports use, and `log`).
fn own_imports(kind: PluginKind) -> &'static [&'static str] {
    match kind {
        PluginKind::Strategy => &["log", "placement-types"],
        PluginKind::VmProvider => &["log", "types", "provider-types"],
        PluginKind::ScriptGenerator => &["log", "types", "script-types"],
    }
}

/// WASI interfaces beyond the sandboxed set this kind may import.
fn extra_wasi(kind: PluginKind) -> &'static [&'static str] {
    match kind {
        PluginKind::VmProvider => &["wasi:http/types", "wasi:http/outgoing-handler"],
        PluginKind::Strategy | PluginKind::ScriptGenerator => &[],
    }
}

/// The kind whose exported interface is `export_name` (e.g.
/// `zonebroker:plugin/balancer@0.1.0`), if any.
pub fn from_export(export_name: &str) -> Option<PluginKind> {
    let (name, version) = split_version(export_name);
    let interface = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    if !version.is_some_and(|v| v.starts_with(PACKAGE_VERSION_PREFIX)) {
        return None;
    }
    PluginKind::ALL
        .into_iter()
        .find(|&kind| exported_interface(kind) == interface)
}

/// Whether a component of this kind may import `import_name` (with its version).
pub fn allows_import(kind: PluginKind, import_name: &str) -> bool {
    let (name, version) = split_version(import_name);
    let Some(version) = version else {
        return false;
    };
    if let Some(interface) = name.strip_prefix(PACKAGE).and_then(|n| n.strip_prefix('/')) {
        return version.starts_with(PACKAGE_VERSION_PREFIX)
            && own_imports(kind).contains(&interface);
    }
    version.starts_with(WASI_VERSION_PREFIX)
        && (SANDBOXED_WASI.contains(&name) || extra_wasi(kind).contains(&name))
}

fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_their_exported_interface() {
        assert_eq!(
            from_export("zonebroker:plugin/balancer@0.1.0"),
            Some(PluginKind::Strategy)
        );
        assert_eq!(
            from_export("zonebroker:plugin/provider@0.1.3"),
            Some(PluginKind::VmProvider)
        );
        assert_eq!(
            from_export("zonebroker:plugin/generator@0.1.0"),
            Some(PluginKind::ScriptGenerator)
        );
        assert_eq!(from_export("zonebroker:plugin/balancer@0.2.0"), None);
        assert_eq!(from_export("zonebroker:plugin/balancer"), None);
        assert_eq!(from_export("wasi:http/incoming-handler@0.2.0"), None);
    }

    #[test]
    fn strategies_get_only_the_sandboxed_wasi() {
        let s = PluginKind::Strategy;
        assert!(allows_import(s, "wasi:cli/stdout@0.2.6"));
        assert!(allows_import(s, "zonebroker:plugin/log@0.1.0"));
        assert!(allows_import(s, "zonebroker:plugin/placement-types@0.1.0"));
        assert!(!allows_import(s, "wasi:filesystem/preopens@0.2.6"));
        assert!(!allows_import(s, "wasi:sockets/tcp@0.2.6"));
        assert!(!allows_import(s, "wasi:http/outgoing-handler@0.2.6"));
        assert!(!allows_import(s, "wasi:cli/stdout@0.3.0"));
        assert!(!allows_import(s, "wasi:cli/stdout"));
        assert!(!allows_import(s, "zonebroker:plugin/provider-types@0.1.0"));
    }

    #[test]
    fn providers_may_use_outgoing_http_only() {
        let p = PluginKind::VmProvider;
        assert!(allows_import(p, "wasi:http/outgoing-handler@0.2.4"));
        assert!(allows_import(p, "wasi:http/types@0.2.4"));
        assert!(!allows_import(p, "wasi:http/incoming-handler@0.2.4"));
        assert!(!allows_import(p, "wasi:sockets/instance-network@0.2.4"));
    }
}
