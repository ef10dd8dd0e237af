//! Plugin kinds, one per WIT world, and what each may import.

pub use zonebroker_core::domain::plugin::PluginKind;

/// Our WIT package and the versions of it this host implements (semver-compatible `0.1.x`).
const PACKAGE: &str = "zonebroker:plugin";
const PACKAGE_VERSION_PREFIX: &str = "0.1.";
/// WASI interfaces are linked at `0.2.12`; any `0.2.x` import is compatible.
const WASI_VERSION_PREFIX: &str = "0.2.";

/// How the sandbox serves an interface a plugin may import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Part of our own contract (`wit/zonebroker.wit`).
    Contract,
    /// A virtual stand-in with nothing real behind it: captured stdio, an empty
    /// environment, a filesystem with no directory, fixed clocks and seeded randomness.
    Virtual,
    /// Linked so that language runtimes that import it load, but every operation is
    /// refused: no socket can be created and no name resolved.
    Refused,
    /// Real, behind a fence: outgoing HTTP to the endpoints a provider's settings name.
    Fenced,
}

impl Served {
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Contract => "contract",
            Served::Virtual => "virtual",
            Served::Refused => "refused-at-call",
            Served::Fenced => "fenced",
        }
    }
}

/// One interface plugins may import: which kinds, and how it is served.
#[derive(Clone, Copy, Debug)]
pub struct AllowedImport {
    /// `package/interface`, without the version.
    pub interface: &'static str,
    pub kinds: &'static [PluginKind],
    pub served: Served,
    /// What the plugin finds there.
    pub note: &'static str,
}

const ALL: &[PluginKind] = &PluginKind::ALL;
/// The kinds whose calls are deterministic (fixed clocks, seeded randomness).
const DETERMINISTIC: &[PluginKind] = &[PluginKind::Strategy, PluginKind::ScriptGenerator];
const STRATEGY: &[PluginKind] = &[PluginKind::Strategy];
const PROVIDER: &[PluginKind] = &[PluginKind::VmProvider];
const GENERATOR: &[PluginKind] = &[PluginKind::ScriptGenerator];
const PROVIDER_AND_GENERATOR: &[PluginKind] =
    &[PluginKind::VmProvider, PluginKind::ScriptGenerator];

const fn allow(
    interface: &'static str,
    kinds: &'static [PluginKind],
    served: Served,
    note: &'static str,
) -> AllowedImport {
    AllowedImport {
        interface,
        kinds,
        served,
        note,
    }
}

/// Every interface a plugin may import, by kind: the one table the loader checks and
/// `zonebroker plugin check` prints. Anything else (real files, sockets for providers,
/// incoming HTTP, HTTP for strategies) is refused at load. The WASI rows are what a std Rust
/// guest imports for its panic paths, and what CPython (componentize-py) and StarlingMonkey
/// (componentize-js) import.
pub const ALLOWED_IMPORTS: &[AllowedImport] = &[
    allow(
        "zonebroker:plugin/log",
        ALL,
        Served::Contract,
        "lines to the host's logs, capped per call",
    ),
    allow(
        "zonebroker:plugin/placement-types",
        STRATEGY,
        Served::Contract,
        "the strategy's types",
    ),
    allow(
        "zonebroker:plugin/types",
        PROVIDER_AND_GENERATOR,
        Served::Contract,
        "shared types",
    ),
    allow(
        "zonebroker:plugin/provider-types",
        PROVIDER,
        Served::Contract,
        "the provider's types",
    ),
    allow(
        "zonebroker:plugin/script-types",
        GENERATOR,
        Served::Contract,
        "the generator's types",
    ),
    allow("wasi:io/error", ALL, Served::Virtual, "stream errors"),
    allow(
        "wasi:io/poll",
        ALL,
        Served::Virtual,
        "polling; every pollable is ready at once",
    ),
    allow("wasi:io/streams", ALL, Served::Virtual, "stdio streams"),
    allow(
        "wasi:cli/environment",
        ALL,
        Served::Virtual,
        "no arguments, no variables",
    ),
    allow(
        "wasi:cli/exit",
        ALL,
        Served::Virtual,
        "ends the call with an error",
    ),
    allow("wasi:cli/stdin", ALL, Served::Virtual, "empty"),
    allow(
        "wasi:cli/stdout",
        ALL,
        Served::Virtual,
        "captured to the logs, capped per call",
    ),
    allow(
        "wasi:cli/stderr",
        ALL,
        Served::Virtual,
        "captured to the logs, capped per call",
    ),
    allow(
        "wasi:cli/terminal-input",
        ALL,
        Served::Virtual,
        "no terminal",
    ),
    allow(
        "wasi:cli/terminal-output",
        ALL,
        Served::Virtual,
        "no terminal",
    ),
    allow(
        "wasi:cli/terminal-stdin",
        ALL,
        Served::Virtual,
        "no terminal",
    ),
    allow(
        "wasi:cli/terminal-stdout",
        ALL,
        Served::Virtual,
        "no terminal",
    ),
    allow(
        "wasi:cli/terminal-stderr",
        ALL,
        Served::Virtual,
        "no terminal",
    ),
    allow(
        "wasi:clocks/wall-clock",
        ALL,
        Served::Virtual,
        "stopped at the Unix epoch (providers: real)",
    ),
    allow(
        "wasi:clocks/monotonic-clock",
        ALL,
        Served::Virtual,
        "stopped, timers due at once (providers: real)",
    ),
    allow(
        "wasi:random/random",
        ALL,
        Served::Virtual,
        "a fixed seed (providers: real)",
    ),
    allow(
        "wasi:random/insecure",
        ALL,
        Served::Virtual,
        "a fixed seed (providers: real)",
    ),
    allow(
        "wasi:random/insecure-seed",
        ALL,
        Served::Virtual,
        "a fixed seed (providers: real)",
    ),
    allow(
        "wasi:filesystem/types",
        DETERMINISTIC,
        Served::Virtual,
        "no file can be opened",
    ),
    allow(
        "wasi:filesystem/preopens",
        DETERMINISTIC,
        Served::Virtual,
        "no directory",
    ),
    allow(
        "wasi:sockets/instance-network",
        DETERMINISTIC,
        Served::Refused,
        "a network with no access",
    ),
    allow(
        "wasi:sockets/network",
        DETERMINISTIC,
        Served::Refused,
        "a network with no access",
    ),
    allow(
        "wasi:sockets/ip-name-lookup",
        DETERMINISTIC,
        Served::Refused,
        "every lookup fails",
    ),
    allow(
        "wasi:sockets/tcp-create-socket",
        DETERMINISTIC,
        Served::Refused,
        "access denied",
    ),
    allow(
        "wasi:sockets/tcp",
        DETERMINISTIC,
        Served::Refused,
        "no socket exists",
    ),
    allow(
        "wasi:sockets/udp-create-socket",
        DETERMINISTIC,
        Served::Refused,
        "access denied",
    ),
    allow(
        "wasi:sockets/udp",
        DETERMINISTIC,
        Served::Refused,
        "no socket exists",
    ),
    allow(
        "wasi:http/types",
        PROVIDER,
        Served::Fenced,
        "outgoing HTTP types",
    ),
    allow(
        "wasi:http/outgoing-handler",
        PROVIDER,
        Served::Fenced,
        "only to the endpoints its settings name",
    ),
];

/// The rows of [`ALLOWED_IMPORTS`] a plugin of `kind` may import.
pub fn allowed_imports(kind: PluginKind) -> impl Iterator<Item = &'static AllowedImport> {
    ALLOWED_IMPORTS
        .iter()
        .filter(move |row| row.kinds.contains(&kind))
}

/// The interface (without package and version) a component of this kind exports.
fn exported_interface(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Strategy => "balancer",
        PluginKind::VmProvider => "provider",
        PluginKind::ScriptGenerator => "generator",
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
    let version_prefix = if name.starts_with(PACKAGE) {
        PACKAGE_VERSION_PREFIX
    } else {
        WASI_VERSION_PREFIX
    };
    version.starts_with(version_prefix) && allowed_imports(kind).any(|row| row.interface == name)
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
    fn strategies_get_the_sandboxed_wasi_language_runtimes_import() {
        let s = PluginKind::Strategy;
        assert!(allows_import(s, "wasi:cli/stdout@0.2.6"));
        assert!(allows_import(s, "zonebroker:plugin/log@0.1.0"));
        assert!(allows_import(s, "zonebroker:plugin/placement-types@0.1.0"));
        // What CPython and StarlingMonkey import: served with no directory, and sockets
        // that refuse every operation.
        assert!(allows_import(s, "wasi:filesystem/preopens@0.2.9"));
        assert!(allows_import(s, "wasi:filesystem/types@0.2.9"));
        assert!(allows_import(s, "wasi:sockets/tcp@0.2.9"));
        assert!(!allows_import(s, "wasi:http/outgoing-handler@0.2.6"));
        assert!(!allows_import(s, "wasi:http/types@0.2.6"));
        assert!(!allows_import(s, "wasi:filesystem/types@0.3.0"));
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
        assert!(!allows_import(p, "wasi:filesystem/types@0.2.4"));
    }

    #[test]
    fn every_row_names_a_versionless_interface_once() {
        let mut seen = std::collections::HashSet::new();
        for row in ALLOWED_IMPORTS {
            assert!(!row.interface.contains('@'), "{}", row.interface);
            assert!(seen.insert(row.interface), "{} twice", row.interface);
            assert!(!row.kinds.is_empty(), "{}", row.interface);
        }
    }
}
