//! Project commands that are more than one cargo call. Run through the alias in
//! `.cargo/config.toml`:
//!
//! - `cargo xtask run [ARGS...]`: install the `wasm32-wasip2` target, then build and start
//!   the server (`zonebroker serve --data-dir ./data` unless ARGS are given).
//! - `cargo xtask test [ARGS...]`: set up, check the crate graph (`cargo xtask layers`), run
//!   the whole test suite on the embedded store, the storage-heavy suites again on
//!   PostgreSQL, then the README's quickstart as written (`cargo xtask quickstart`).
//! - `cargo xtask layers`: check that `zonebroker-core` and `zonebroker-plugin-host` depend
//!   on none of the crates the architecture keeps out of them.
//! - `cargo xtask quickstart`: run the commands of README.md's "Quickstart for operators"
//!   against a server started as the README starts it, in a fresh directory, checking what
//!   their comments promise.
//! - `cargo xtask setup`: only the set-up (idempotent): the `wasm32-wasip2` target, a Python
//!   virtual environment with the test peers and the Python plugin toolchain
//!   (`target/tools/venv`: schemathesis, moto, componentize-py, pytest), the JavaScript plugin
//!   toolchain (`target/tools/node`: componentize-js), and Debian's Samba and PostgreSQL.
//!
//! Every step is idempotent, so the commands work the same on a fresh machine (with only the
//! Rust toolchain) and on a warm one.

use std::process::{Command, ExitCode};

mod layers;
mod quickstart;

const GUEST_TARGET: &str = "wasm32-wasip2";

/// Python tools the tests run, pinned: (package, extras, version). schemathesis checks the
/// API against its OpenAPI document; moto's server is the EC2 the AutoScale tests talk to;
/// componentize-py builds Python strategies, and pytest runs their native tests.
const PYTHON_TOOLS: &[(&str, &str, &str)] = &[
    ("schemathesis", "", "4.32.5"),
    ("moto", "[server]", "5.2.5"),
    ("componentize-py", "", "0.25.1"),
    ("pytest", "", "9.2.0"),
];

/// npm packages the tests run, pinned: componentize-js builds JavaScript strategies.
const NODE_TOOLS: &[(&str, &str)] = &[("@bytecodealliance/componentize-js", "0.23.0")];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "setup" => setup(),
        // The server needs only the guest target; the test peers stay with the tests.
        "run" => ensure_guest_target().and_then(|()| run_server(&rest)),
        "test" => setup()
            .and_then(|()| layers::check(&workspace_root()))
            .and_then(|()| test(&rest))
            .and_then(|()| quickstart::run(&workspace_root())),
        "quickstart" => ensure_guest_target().and_then(|()| quickstart::run(&workspace_root())),
        "layers" => layers::check(&workspace_root()),
        _ => {
            eprintln!("usage: cargo xtask <setup|run|test|quickstart|layers> [ARGS...]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Install what the build and the tests need beyond the Rust toolchain.
fn setup() -> Result<(), String> {
    ensure_guest_target()?;
    ensure_python_tools()?;
    ensure_node_tools()?;
    ensure_debian_packages()
}

/// `<target>/tools/node`: where the tests look for their npm tools.
fn node_dir() -> std::path::PathBuf {
    target_dir().join("tools").join("node")
}

fn ensure_node_tools() -> Result<(), String> {
    let dir = node_dir();
    let installed = |package: &str, version: &str| {
        let manifest = dir.join("node_modules").join(package).join("package.json");
        std::fs::read_to_string(manifest)
            .is_ok_and(|text| text.contains(&format!("\"version\": \"{version}\"")))
    };
    if NODE_TOOLS
        .iter()
        .all(|(package, version)| installed(package, version))
    {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let packages: Vec<String> = NODE_TOOLS
        .iter()
        .map(|(package, version)| format!("{package}@{version}"))
        .collect();
    eprintln!("xtask: installing {packages:?} into {}", dir.display());
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .args(&packages))
}

/// Debian packages the tests use: Samba as a throw-away Active Directory domain controller,
/// the OpenLDAP client tools to look into it, openssl to make its test certificates.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("samba-tool", "samba-ad-dc"),
    ("samba-tool", "samba-ad-provision"),
    ("ldapsearch", "ldap-utils"),
    ("ldbsearch", "ldb-tools"),
    ("openssl", "openssl"),
];

fn ensure_debian_packages() -> Result<(), String> {
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
            || ["/usr/sbin", "/usr/bin"]
                .iter()
                .any(|dir| std::path::Path::new(dir).join(program).is_file())
    };
    let provisioner = std::path::Path::new("/usr/share/samba/setup/provision.ldif").is_file();
    if DEBIAN_PACKAGES.iter().all(|(program, _)| on_path(program))
        && provisioner
        && postgres_server_installed()
    {
        return Ok(());
    }
    let mut packages: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(_, package)| *package)
        .collect();
    packages.push(POSTGRES_PACKAGE);
    eprintln!("xtask: installing Debian packages {packages:?}");
    let sudo = |command: &mut Command| -> Result<(), String> {
        if is_root() {
            run(command)
        } else {
            let mut elevated = Command::new("sudo");
            elevated.arg(command.get_program()).args(command.get_args());
            for (key, value) in command.get_envs() {
                if let Some(value) = value {
                    elevated.env(key, value);
                }
            }
            run(&mut elevated)
        }
    };
    sudo(Command::new("apt-get").args(["update", "-qq"]))?;
    sudo(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian's PostgreSQL server: the tests start a throw-away cluster of it per test binary.
const POSTGRES_PACKAGE: &str = "postgresql";

/// Whether a PostgreSQL server's programs are installed where Debian puts them.
fn postgres_server_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|version| version.path().join("bin").join("initdb").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The repository's root (the workspace of this xtask).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The workspace's target directory.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `<target>/tools/venv`: where the tests look for their Python tools.
fn venv_dir() -> std::path::PathBuf {
    target_dir().join("tools").join("venv")
}

fn ensure_python_tools() -> Result<(), String> {
    let venv = venv_dir();
    let bin = venv.join("bin");
    let installed = |package: &str, version: &str| {
        Command::new(bin.join("pip"))
            .args(["show", package])
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .any(|l| l == format!("Version: {version}"))
            })
    };
    if PYTHON_TOOLS
        .iter()
        .all(|(package, _, version)| installed(package, version))
    {
        return Ok(());
    }
    if !bin.join("pip").exists() {
        eprintln!("xtask: creating the Python environment {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    let packages: Vec<String> = PYTHON_TOOLS
        .iter()
        .map(|(package, extras, version)| format!("{package}{extras}=={version}"))
        .collect();
    eprintln!("xtask: installing {packages:?}");
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(&packages))
}

fn ensure_guest_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|t| t.trim() == GUEST_TARGET)
            {
                return Ok(());
            }
            eprintln!("xtask: installing the {GUEST_TARGET} target (rustup target add)");
            run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))
        }
        _ => {
            eprintln!(
                "xtask: rustup not found; make sure the {GUEST_TARGET} target is installed for this toolchain"
            );
            Ok(())
        }
    }
}

fn run_server(args: &[String]) -> Result<(), String> {
    // `cargo xtask run -- serve ...` and `cargo xtask run serve ...` mean the same.
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    let mut command = cargo();
    // The workspace's manifest, so that `cargo xtask run` works from any directory.
    command
        .args(["run", "--release", "-p", "zonebroker", "--manifest-path"])
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--");
    if args.is_empty() {
        command.args(["serve", "--data-dir", "./data"]);
    } else {
        command.args(args);
    }
    run(&mut command)
}

fn test(args: &[String]) -> Result<(), String> {
    // The benchmarks are not run here, but they must keep compiling: built first, in the
    // same profile as the tests (so they share every artifact but their own).
    run(cargo().args(["build", "--release", "--workspace", "--benches"]))?;
    let embedded = run(cargo()
        .args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(args));
    // The storage-heavy suites again, on PostgreSQL (one throw-away cluster per test binary).
    let shared = if args.is_empty() {
        let mut command = cargo();
        command
            .args(["test", "--release", "-p", "zonebroker", "--no-fail-fast"])
            .env("ZONEBROKER_TEST_STORAGE", "postgres");
        for suite in SUITES_ON_POSTGRES {
            command.args(["--test", suite]);
        }
        eprintln!("xtask: the storage-heavy suites again on PostgreSQL: {SUITES_ON_POSTGRES:?}");
        run(&mut command)
    } else {
        Ok(())
    };
    embedded.and(shared)
}

/// The end-to-end suites that run on both engines (`ZONEBROKER_TEST_STORAGE=postgres`); the
/// others run on the embedded store only (see README.md, "Storage").
const SUITES_ON_POSTGRES: &[&str] = &[
    "zones_and_sessions",
    "plugin_lifecycle",
    "config_writes",
    "agent_identity",
    "hot_swap",
    "autoscale_moto",
    "openapi_conformance",
    "shadow_strategies",
];

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    without_cargo_package_env(&mut command);
    command
}

/// Remove what cargo sets for running this xtask (`CARGO_PKG_NAME=xtask`, ...) from a child's
/// environment. Build scripts such as ring's rerun when one of these changes, so a nested
/// `cargo` that sees them would rebuild half the tree that a `cargo` run by hand built.
fn without_cargo_package_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name.as_ref());
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}
