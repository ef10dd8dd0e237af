//! Helpers shared by zonebroker's tests.
//!
//! - [`fixture`]: a test plugin component, built from `tests/fixtures/` on first use.
//! - [`Server`]: the real `zonebroker` binary on loopback, in a fresh data directory, with
//!   its listeners' addresses read from its own logs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod api;
pub mod autoscale;
pub mod configs;
pub mod languages;
pub mod load;
pub mod moto;
pub mod postgres;
pub mod samba;
pub mod tls;

/// A fresh directory only its user can open: what `serve` requires of its data directory.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("temp dir")
}

/// Run `command`, panicking with its output if it fails.
pub fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

use serde_json::Value;
use zonebroker_guest_build::{GuestBuild, component_file};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

const HOSTILE_PACKAGE: &str = "zonebroker-hostile-fixtures";
const ECHO_GENERATOR_PACKAGE: &str = "zonebroker-fixture-echo-generator";
const ROGUE_PROVIDER_PACKAGE: &str = "zonebroker-fixture-rogue-provider";

/// The component of test fixture `name`: an example of `tests/fixtures/hostile`
/// (`infinite_loop`, `panics`, ...), `echo_generator` or `rogue_provider`. Built once per
/// test process.
pub fn fixture(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            GuestBuild::new()
                .package(HOSTILE_PACKAGE)
                .package(ECHO_GENERATOR_PACKAGE)
                .package(ROGUE_PROVIDER_PACKAGE)
                .with_examples()
                .run(&workspace_root())
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let path = if name == "echo_generator" {
        dir.join(component_file(ECHO_GENERATOR_PACKAGE))
    } else if name == "rogue_provider" {
        dir.join(component_file(ROGUE_PROVIDER_PACKAGE))
    } else {
        dir.join("examples").join(format!("{name}.wasm"))
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The component of the example strategy in `examples/spread-users`, built on first use.
pub fn example_strategy() -> Vec<u8> {
    const PACKAGE: &str = "spread-users";
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| GuestBuild::new().package(PACKAGE).run(&workspace_root()))
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(dir.join(component_file(PACKAGE))).expect("example component")
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A command from the Python environment `cargo xtask setup` prepares
/// (`<target>/tools/venv/bin/NAME`).
pub fn python_tool(name: &str) -> PathBuf {
    installed_tool(&format!("venv/bin/{name}"))
}

/// `<target>/tools/RELATIVE`, where `cargo xtask setup` installs the tests' tools.
pub fn installed_tool(relative: &str) -> PathBuf {
    let path = target_dir().join("tools").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// The admin token test servers are started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The agent registration token test servers are started with.
pub const AGENT_TOKEN: &str = "test-agent-token-9876543210";

/// A running `zonebroker serve`, killed when dropped.
pub struct Server {
    child: Child,
    data_dir: Arc<tempfile::TempDir>,
    /// Bound address of each zone's listener.
    pub zones: HashMap<String, String>,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
    /// The credential each agent host name's first check-in answered (see [`Server::check_in`]).
    agent_credentials: Mutex<HashMap<String, String>>,
}

/// How to start a [`Server`].
pub struct ServerOptions {
    /// Zones, one listener each on an ephemeral loopback port.
    pub zones: Vec<String>,
    /// `ZONEBROKER_ADMIN_TOKEN`; `None` lets the server generate one.
    pub admin_token: Option<String>,
    /// `ZONEBROKER_AGENT_TOKEN`; `None` lets the server generate one.
    pub agent_token: Option<String>,
    /// Reuse this data directory (a restart) instead of a fresh one.
    pub data_dir: Option<Arc<tempfile::TempDir>>,
    /// More arguments for `serve`.
    pub args: Vec<String>,
    /// `RUST_LOG` of the server.
    pub log_filter: String,
    /// Where it keeps its state.
    pub storage: Storage,
}

/// Where a test server keeps its state.
#[derive(Clone, Debug, Default)]
pub enum Storage {
    /// The engine `ZONEBROKER_TEST_STORAGE` names (see [`postgres::storage_engine`]).
    #[default]
    FromEnvironment,
    /// sled in the data directory, whatever the environment says.
    Embedded,
    /// This PostgreSQL database.
    Database(String),
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            zones: vec!["default".into()],
            admin_token: Some(ADMIN_TOKEN.into()),
            agent_token: Some(AGENT_TOKEN.into()),
            data_dir: None,
            args: Vec::new(),
            log_filter: "info".into(),
            storage: Storage::default(),
        }
    }
}

impl Server {
    /// Start `binary` (the test's `env!("CARGO_BIN_EXE_zonebroker")`) and wait until every
    /// listener is up.
    pub fn start(binary: &str, options: ServerOptions) -> Server {
        let data_dir = options
            .data_dir
            .unwrap_or_else(|| Arc::new(private_tempdir()));
        let mut command = Command::new(binary);
        command
            .args(["--log-format", "json", "serve", "--data-dir"])
            .arg(data_dir.path())
            .env("RUST_LOG", &options.log_filter)
            .args(&options.args)
            .env_remove("ZONEBROKER_ADMIN_TOKEN")
            .env_remove("ZONEBROKER_AGENT_TOKEN")
            .env_remove("ZONEBROKER_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for zone in &options.zones {
            command.arg("--listen").arg(format!("127.0.0.1:0={zone}"));
        }
        // The engine under test: a database of this binary's PostgreSQL per data directory
        // (the same one on a restart), unless the test names its own.
        let database = match options.storage {
            Storage::FromEnvironment if postgres::storage_engine() == "postgres" => {
                Some(postgres::cluster().url(&postgres::database_of(data_dir.path())))
            }
            Storage::FromEnvironment | Storage::Embedded => None,
            Storage::Database(url) => Some(url),
        };
        if let Some(url) = database {
            command.arg("--database").arg(url);
        }
        if let Some(token) = &options.admin_token {
            command.env("ZONEBROKER_ADMIN_TOKEN", token);
        }
        if let Some(token) = &options.agent_token {
            command.env("ZONEBROKER_AGENT_TOKEN", token);
        }
        let mut child = command.spawn().expect("start zonebroker");

        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let listening = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .filter(|event| event["fields"]["message"] == "listening")
                        .map(|event| {
                            let field = |name: &str| {
                                event["fields"][name]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            (field("zone"), field("addr"))
                        });
                    // Kept before it is reported, so a started server's log holds its
                    // `listening` lines.
                    logs.lock().unwrap().push(line);
                    if let Some(listener) = listening {
                        let _ = tx.send(listener);
                    }
                }
            }
        });

        // One listener per zone, and any more the arguments name.
        let listeners =
            options.zones.len() + options.args.iter().filter(|a| *a == "--listen").count();
        let mut zones = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while zones.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((zone, addr)) => {
                    zones.insert(zone, addr);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "zonebroker did not start; its log:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Server {
            child,
            data_dir,
            zones,
            logs,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            agent_credentials: Mutex::new(HashMap::new()),
        }
    }

    /// `ADDR` (`ip:port`) of `zone`'s listener.
    pub fn addr(&self, zone: &str) -> &str {
        &self.zones[zone]
    }

    /// `http://ADDR` of `zone`'s listener.
    pub fn url(&self, zone: &str, path: &str) -> String {
        format!("http://{}{path}", self.zones[zone])
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// GET `path` on the first zone's listener with the admin token.
    pub fn admin_get(&self, zone: &str, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(self.url(zone, path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("request")
    }

    /// `method path` on `zone`'s listener with the admin token and an optional JSON body:
    /// the status and the JSON answer (`Null` when empty).
    pub fn call(&self, zone: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(zone, method, path, body, Some(ADMIN_TOKEN), None)
    }

    /// Like [`call`](Self::call), with any token (or none) and an optional `Host` header.
    pub fn call_as(
        &self,
        zone: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        host: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(zone, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// An agent checks in through `zone`'s listener; answers the agent as the server shows it.
    /// Like a real agent, it remembers the credential its host name's first check-in
    /// answered and presents it at every later one.
    pub fn check_in(&self, zone: &str, body: Value) -> Value {
        let hostname = body["hostname"].as_str().unwrap_or_default().to_string();
        let credential = self.agent_credential(&hostname);
        let (status, agent) = self.check_in_with(zone, &body, credential.as_deref());
        assert_eq!(status, 200, "check-in of {body}: {agent}");
        if let Some(credential) = agent["credential"].as_str() {
            self.agent_credentials
                .lock()
                .unwrap()
                .insert(hostname, credential.to_string());
        }
        agent
    }

    /// The credential [`check_in`](Self::check_in) holds for `hostname`, if any.
    pub fn agent_credential(&self, hostname: &str) -> Option<String> {
        self.agent_credentials
            .lock()
            .unwrap()
            .get(hostname)
            .cloned()
    }

    /// One check-in with the agent token and this credential (or none), remembering nothing:
    /// the status and the JSON answer.
    pub fn check_in_with(
        &self,
        zone: &str,
        body: &Value,
        credential: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(zone, "/api/v1/agents/checkin"))
            .bearer_auth(AGENT_TOKEN)
            .json(body);
        if let Some(credential) = credential {
            request = request.header("Zonebroker-Agent-Credential", credential);
        }
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Stop the server gracefully (SIGTERM) and wait for it to exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "the server did not stop cleanly: {status:?}"
        );
    }

    /// Kill the process without letting it clean up (SIGKILL) and wait for it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// The data directory (keep the `Arc` to restart on it).
    pub fn data_dir(&self) -> Arc<tempfile::TempDir> {
        self.data_dir.clone()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until a log line satisfies `wanted`, at most `timeout`; answers every line so far.
    /// (A line the server writes right after `listening` may not have been read yet when
    /// `start` returns.)
    pub fn wait_for_log(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.iter().any(|line| wanted(line)) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal (`libc`-free: through the `kill` command).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server warned about, so that a failure seen once
        // (under CI's load, say) can be explained from its output alone.
        if std::thread::panicking() {
            let logs = self.logs();
            let notable: Vec<&String> = logs
                .iter()
                .filter(|line| {
                    line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
                })
                .collect();
            eprintln!(
                "--- the server's {} warnings and errors (of {} log lines) ---",
                notable.len(),
                logs.len()
            );
            for line in notable.iter().rev().take(200).rev() {
                eprintln!("{line}");
            }
            eprintln!("--- its last 40 log lines ---");
            for line in logs.iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
        }
    }
}
