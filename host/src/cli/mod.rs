//! The operator's command line: each subcommand is one admin API call against a running
//! server, printed as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// Where the server is and how to authenticate.
#[derive(Args, Clone)]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "ZONEBROKER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The admin token.
    #[arg(
        long,
        global = true,
        env = "ZONEBROKER_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Trust this CA certificate (PEM) for an `https://` server, instead of the web's
    /// public roots (a broker with its own certificate authority).
    #[arg(long, global = true, env = "ZONEBROKER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub enum ZoneCommand {
    /// List zones.
    List,
    /// Show one zone.
    Get { name: String },
    /// Create a zone; settings not given take their defaults.
    Create {
        name: String,
        #[command(flatten)]
        settings: ZoneSettings,
    },
    /// Change some of a zone's settings.
    Update {
        name: String,
        #[command(flatten)]
        settings: ZoneSettings,
    },
    /// Delete a zone.
    Delete { name: String },
    /// What the zone's shadow strategy did: agreement, faults, call times, disagreements.
    Shadow { name: String },
    /// Make the zone's shadow strategy its strategy.
    PromoteShadow { name: String },
}

/// Zone settings as flags; only those given are sent.
#[derive(Args)]
pub struct ZoneSettings {
    /// The strategy plugin that ranks agents.
    #[arg(long = "strategy")]
    load_balance_strategy: Option<String>,
    /// A strategy to run beside it on every placement and compare with it.
    #[arg(long, conflicts_with = "no_shadow_strategy")]
    shadow_strategy: Option<String>,
    /// Stop running a shadow strategy.
    #[arg(long)]
    no_shadow_strategy: bool,
    #[arg(long)]
    search_alternate_zones: Option<bool>,
    #[arg(long)]
    proxy_connections: Option<bool>,
    #[arg(long)]
    proxy_hostname: Option<String>,
    #[arg(long)]
    proxy_path: Option<String>,
    #[arg(long)]
    proxy_port: Option<u16>,
    #[arg(long)]
    allow_origin_domain: Option<String>,
    #[arg(long)]
    upstream_auth_address: Option<String>,
}

impl ZoneSettings {
    fn to_json(&self) -> Map<String, Value> {
        let mut body = Map::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.to_string(), value);
            }
        };
        set(
            "load_balance_strategy",
            self.load_balance_strategy.clone().map(Value::from),
        );
        set(
            "shadow_strategy",
            match (&self.shadow_strategy, self.no_shadow_strategy) {
                (_, true) => Some(Value::Null),
                (shadow, false) => shadow.clone().map(Value::from),
            },
        );
        set(
            "search_alternate_zones",
            self.search_alternate_zones.map(Value::from),
        );
        set("proxy_connections", self.proxy_connections.map(Value::from));
        set(
            "proxy_hostname",
            self.proxy_hostname.clone().map(Value::from),
        );
        set("proxy_path", self.proxy_path.clone().map(Value::from));
        set("proxy_port", self.proxy_port.map(Value::from));
        set(
            "allow_origin_domain",
            self.allow_origin_domain.clone().map(Value::from),
        );
        set(
            "upstream_auth_address",
            self.upstream_auth_address.clone().map(Value::from),
        );
        body
    }
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// List agents with their zone, sessions, reservations and status.
    List,
    /// Show one agent.
    Get { id: String },
    /// Enable or disable an agent.
    Enable {
        id: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// Forget an agent's credential: its next check-in takes a new one.
    ResetCredential { id: String },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    List,
    /// Create an image.
    Create {
        name: String,
        /// Cores a session reserves, e.g. 0.5.
        #[arg(long)]
        cores: f64,
        /// Memory a session reserves: bytes, or with a suffix (512MiB, 2GiB).
        #[arg(long, value_parser = parse_bytes)]
        memory: u64,
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        /// Only run on agents of this zone.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Delete an image.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Request a session of an image or a workspace (placed in the zone of the server
    /// URL's listener).
    Request {
        #[arg(
            long,
            conflicts_with = "workspace",
            required_unless_present = "workspace"
        )]
        image: Option<String>,
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        user: String,
    },
    /// List sessions.
    List,
    /// End a session.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Scaffold a strategy crate to edit, test and build.
    New {
        /// The plugin's name (a DNS label); also the project's name and directory.
        name: String,
        /// The language: a Rust crate on the SDK, or a Python (componentize-py) or
        /// JavaScript (componentize-js) project with the WIT contract.
        #[arg(long, value_enum, default_value_t)]
        lang: scaffold::Lang,
        /// Where to create the crate [default: ./NAME].
        #[arg(long)]
        path: Option<PathBuf>,
        /// The zonebroker-plugin-sdk crate to depend on [default: the SDK this binary was
        /// built with].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Validate a component and make the smoke call, exactly as an upload would, locally.
    Check {
        file: PathBuf,
        /// Check under these limits instead of the kind's defaults, as an upload with them.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Upload a component as a new version of plugin NAME.
    Upload {
        name: String,
        file: PathBuf,
        /// Also make it the active version.
        #[arg(long)]
        activate: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List plugins.
    List,
    /// Show a plugin: versions, active version, history, users.
    Show { name: String },
    /// Make a version active (and set its limits).
    Activate {
        name: String,
        version: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Re-activate the version that was active before the current one.
    Rollback { name: String },
    /// Delete a plugin, or one of its versions.
    Delete {
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
}

/// A plugin version's own limits, instead of its kind's (each up to the server's maximum):
/// an interpreter (Python, JavaScript) needs more than a Rust strategy.
#[derive(Args, Debug, Default)]
pub struct LimitArgs {
    /// Memory cap (bytes, or with a suffix: 256MiB).
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    /// CPU budget, in fuel units (about one per wasm instruction).
    #[arg(long)]
    fuel: Option<u64>,
    /// Deadline of each call, in milliseconds.
    #[arg(long)]
    deadline_ms: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> zonebroker::domain::plugin::PluginLimits {
        zonebroker::domain::plugin::PluginLimits {
            memory_bytes: self.memory,
            fuel: self.fuel,
            deadline_ms: self.deadline_ms,
        }
    }

    /// As the `limits` object of an activation: only the limits given.
    fn body(&self) -> Value {
        serde_json::to_value(self.limits()).expect("plain numbers serialize")
    }

    /// As query parameters (`&memory_bytes=...`), for an upload.
    fn query(&self) -> String {
        let Value::Object(fields) = self.body() else {
            return String::new();
        };
        fields
            .iter()
            .map(|(name, value)| format!("&{name}={value}"))
            .collect()
    }
}

/// The commands every AutoScale resource takes; bodies are JSON files, as the API takes them.
#[derive(Subcommand)]
pub enum ResourceCommand {
    /// List them.
    List,
    /// Show one (by name; servers by id).
    Get { name: String },
    /// Create one from a JSON file (`-` reads standard input); the API's body, field for field.
    Create { file: PathBuf },
    /// Change one with a JSON merge patch from a file (`-` reads standard input): only the
    /// fields to change; `null` clears an optional field; secrets left out keep their values.
    Update { name: String, file: PathBuf },
    /// Delete one (refused while something uses it).
    Delete { name: String },
}

/// Run a [`ResourceCommand`] against the collection at `base` (`/pools`, `/servers`, ...).
pub fn resource(client: &Client, base: &str, command: ResourceCommand) -> anyhow::Result<()> {
    let value = match command {
        ResourceCommand::List => client.call("GET", base, None)?,
        ResourceCommand::Get { name } => client.call("GET", &format!("{base}/{name}"), None)?,
        ResourceCommand::Create { file } => client.call("POST", base, Some(read_json(&file)?))?,
        ResourceCommand::Update { name, file } => {
            let patch = read_json(&file)?;
            client.send(
                "PATCH",
                &format!("{base}/{name}"),
                Some(("application/merge-patch+json", serde_json::to_vec(&patch)?)),
            )?
        }
        ResourceCommand::Delete { name } => {
            client.call("DELETE", &format!("{base}/{name}"), None)?
        }
    };
    print(value)
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// `512`, `512KiB`, `512MiB`, `2GiB`, `1TiB` (also KB/MB/GB/TB as powers of 1000).
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a size"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown unit `{other}` (use KiB, MiB, GiB, TiB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{value}` is too large"))
}

/// A thin client of the admin API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(connection: &Connection) -> anyhow::Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .timeout_connect(Some(std::time::Duration::from_secs(10)));
        if let Some(path) = &connection.ca_cert {
            use ureq::tls::{Certificate, RootCerts, TlsConfig};
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let roots = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect::<Vec<Certificate<'static>>>();
            anyhow::ensure!(
                !roots.is_empty(),
                "{} holds no PEM certificate",
                path.display()
            );
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(std::sync::Arc::new(roots)))
                    .build(),
            );
        }
        Ok(Client {
            base: connection.server.trim_end_matches('/').to_string(),
            token: connection.token.clone(),
            agent: config.build().into(),
        })
    }

    /// Call `method path` with an optional JSON body; answer the JSON reply or fail with the
    /// server's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = match body {
            Some(body) => Some(("application/json", serde_json::to_vec(&body)?)),
            None => None,
        };
        self.send(method, path, body)
    }

    /// Every item of the list at `path`, fetched a page at a time (following each page's
    /// `Link: <...>; rel="next"`), so a large fleet is not one huge answer.
    pub fn list_all(&self, path: &str) -> anyhow::Result<Value> {
        const PAGE: usize = 500;
        let mut items = Vec::new();
        let mut next = Some(format!("{path}?limit={PAGE}"));
        while let Some(page) = next.take() {
            let (value, link) = self.exchange("GET", &page, None)?;
            let Value::Array(page_items) = value else {
                bail!("GET {page}: not a list: {value}");
            };
            items.extend(page_items);
            next = link
                .as_deref()
                .and_then(zonebroker::api::paging::next_link)
                .map(|target| target.trim_start_matches("/api/v1").to_string());
        }
        Ok(Value::Array(items))
    }

    /// `POST path` with a component as the body, showing its progress and then a spinner
    /// while the server compiles it. It waits up to [`UPLOAD_TIMEOUT`] in all (the server's
    /// own `--max-compile-time`, 120 s by default, bounds the compilation).
    pub fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let (url, request) = self.request("POST", path);
        let request = request
            .header("Content-Type", "application/wasm")
            .header("Content-Length", bytes.len());
        let (body, progress) = progress::UploadProgress::start(bytes);
        let request = self
            .agent
            .configure_request(request.body(ureq::SendBody::from_owned_reader(body))?)
            .timeout_global(Some(UPLOAD_TIMEOUT))
            .build();
        let response = self.agent.run(request);
        drop(progress);
        answer(response.with_context(|| format!("POST {url}"))?)
    }

    /// A request for `method path` of the API, with the admin token if there is one; and
    /// its URL.
    fn request(&self, method: &str, path: &str) -> (String, ureq::http::request::Builder) {
        let url = format!("{}/api/v1{path}", self.base);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        (url, request)
    }

    /// Call `method path` with an optional body of the given content type.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        Ok(self.exchange(method, path, body)?.0)
    }

    /// Call `method path`: the answer's JSON and its `Link` header.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let (url, request) = self.request(method, path);
        let response = match body {
            Some((content_type, bytes)) => self
                .agent
                .run(request.header("Content-Type", content_type).body(bytes)?),
            None => self.agent.run(request.body(())?),
        }
        .with_context(|| format!("{method} {url}"))?;
        let link = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((answer(response)?, link))
    }
}

/// How long `zonebroker plugin upload` waits in all: sending a large component over a slow
/// link and the server's compilation.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The JSON of a reply, or the server's error message as the error.
fn answer(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_success() {
        return Ok(value);
    }
    let error = &value["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => {
            let field = error["field"]
                .as_str()
                .map(|f| format!(" (field `{f}`)"))
                .unwrap_or_default();
            bail!("{status}: {code}: {message}{field}")
        }
        _ => bail!("{status}: {value}"),
    }
}

fn print(value: Value) -> anyhow::Result<()> {
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

pub fn zone(client: &Client, command: ZoneCommand) -> anyhow::Result<()> {
    let value = match command {
        ZoneCommand::List => client.call("GET", "/zones", None)?,
        ZoneCommand::Get { name } => client.call("GET", &format!("/zones/{name}"), None)?,
        ZoneCommand::Create { name, settings } => {
            let mut body = settings.to_json();
            body.insert("name".into(), Value::from(name));
            client.call("POST", "/zones", Some(Value::Object(body)))?
        }
        ZoneCommand::Update { name, settings } => client.call(
            "PATCH",
            &format!("/zones/{name}"),
            Some(Value::Object(settings.to_json())),
        )?,
        ZoneCommand::Delete { name } => client.call("DELETE", &format!("/zones/{name}"), None)?,
        ZoneCommand::Shadow { name } => {
            client.call("GET", &format!("/zones/{name}/shadow"), None)?
        }
        ZoneCommand::PromoteShadow { name } => {
            client.call("POST", &format!("/zones/{name}/shadow/promote"), None)?
        }
    };
    print(value)
}

pub fn agent(client: &Client, command: AgentCommand) -> anyhow::Result<()> {
    let value = match command {
        AgentCommand::List => client.list_all("/agents")?,
        AgentCommand::Get { id } => client.call("GET", &format!("/agents/{id}"), None)?,
        AgentCommand::Enable { id, enabled } => client.call(
            "PATCH",
            &format!("/agents/{id}"),
            Some(json!({ "enabled": enabled })),
        )?,
        AgentCommand::ResetCredential { id } => {
            client.call("POST", &format!("/agents/{id}/reset-credential"), None)?
        }
    };
    print(value)
}

pub fn image(client: &Client, command: ImageCommand) -> anyhow::Result<()> {
    let value = match command {
        ImageCommand::List => client.call("GET", "/images", None)?,
        ImageCommand::Create { name, cores, memory, gpus, zone } => client.call(
            "POST",
            "/images",
            Some(json!({ "name": name, "cores": cores, "memory": memory, "gpus": gpus, "zone": zone })),
        )?,
        ImageCommand::Delete { name } => client.call("DELETE", &format!("/images/{name}"), None)?,
    };
    print(value)
}

pub fn session(client: &Client, command: SessionCommand) -> anyhow::Result<()> {
    let value = match command {
        SessionCommand::Request {
            image,
            workspace,
            user,
        } => client.call(
            "POST",
            "/sessions",
            Some(json!({ "image": image, "workspace": workspace, "user": user })),
        )?,
        SessionCommand::List => client.list_all("/sessions")?,
        SessionCommand::Delete { id } => client.call("DELETE", &format!("/sessions/{id}"), None)?,
    };
    print(value)
}

pub fn plugin(connection: &Connection, command: PluginCommand) -> anyhow::Result<()> {
    let client = || Client::new(connection);
    let value = match command {
        PluginCommand::New {
            name,
            lang,
            path,
            sdk,
        } => return scaffold::new_strategy(&name, lang, path, sdk),
        PluginCommand::Check { file, limits } => return check(&file, &limits),
        PluginCommand::Upload {
            name,
            file,
            activate,
            limits,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = format!(
                "/plugins/{name}/versions?activate={activate}{}",
                limits.query()
            );
            client()?.upload(&path, bytes)?
        }
        PluginCommand::List => client()?.call("GET", "/plugins", None)?,
        PluginCommand::Show { name } => client()?.call("GET", &format!("/plugins/{name}"), None)?,
        PluginCommand::Activate {
            name,
            version,
            limits,
        } => client()?.call(
            "POST",
            &format!("/plugins/{name}/activate"),
            Some(json!({ "version": version, "limits": limits.body() })),
        )?,
        PluginCommand::Rollback { name } => {
            let client = client()?;
            let plugin = client.call("GET", &format!("/plugins/{name}"), None)?;
            let Some(previous) = plugin["history"]
                .as_array()
                .and_then(|history| history.last())
                .and_then(|last| last["from"].as_str())
            else {
                bail!("plugin `{name}` has no earlier active version to roll back to");
            };
            client.call(
                "POST",
                &format!("/plugins/{name}/activate"),
                Some(json!({ "version": previous })),
            )?
        }
        PluginCommand::Delete { name, version } => match version {
            Some(version) => client()?.call(
                "DELETE",
                &format!("/plugins/{name}/versions/{version}"),
                None,
            )?,
            None => client()?.call("DELETE", &format!("/plugins/{name}"), None)?,
        },
    };
    print(value)
}

/// The imports a plugin of `kind` may have, and how the sandbox serves each (the table the
/// loader checks), for an author whose component was refused for one.
fn print_allowed_imports(kind: zonebroker::plugins::PluginKind) {
    println!("a {kind} plugin may import (any 0.2.x of WASI, 0.1.x of zonebroker:plugin):");
    for row in zonebroker::plugins::allowed_imports(kind) {
        println!(
            "  {:<34} {:<16} {}",
            row.interface,
            row.served.as_str(),
            row.note
        );
    }
    println!(
        "anything else is refused at load; build without it (see README, \"Write your own strategy\")"
    );
}

/// `zonebroker plugin check`: the server's own validation and smoke call, run here.
fn check(file: &Path, limits: &LimitArgs) -> anyhow::Result<()> {
    use zonebroker::plugins::{PluginRuntime, RuntimeConfig, SmokeReport};

    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = PluginRuntime::new(RuntimeConfig::default())?;
    let plugin = match runtime.load(&bytes) {
        Ok(plugin) => plugin,
        Err(error) => {
            if let zonebroker::plugins::LoadError::ForbiddenImport { kind, .. } = &error {
                print_allowed_imports(*kind);
            }
            return Err(anyhow::Error::new(error).context("the component is refused"));
        }
    };
    let limits = limits.limits();
    if let Some((field, why)) = runtime.config().max_limits.refusal(&limits) {
        bail!("{field}: {why}");
    }
    let plugin = plugin.with_limits(limits);
    println!("component: {}", file.display());
    println!("kind:      {}", plugin.kind());
    println!("version:   {}", plugin.sha256());
    println!("size:      {} bytes", plugin.size());
    println!("imports:   only what a {} plugin may use", plugin.kind());
    match runtime
        .smoke_test(&plugin)
        .context("the smoke call failed")?
    {
        SmokeReport::Ranking {
            candidates,
            ranking,
            output,
        } => {
            println!(
                "smoke call: ranked {} sample candidates, best first:",
                candidates.len()
            );
            println!(
                "  rank  candidate  cores used/total  memory used/total (GiB)  sessions  this user's"
            );
            for (rank, &index) in ranking.indices().iter().enumerate() {
                let c = candidates.row(index as usize);
                println!(
                    "  {:>4}  {:>9}  {:>7.1}/{:<8.1}  {:>10.1}/{:<12.1}  {:>4}/{:<3}  {:>11}",
                    rank + 1,
                    index,
                    c.cores_reserved,
                    c.cores_total,
                    c.memory_reserved as f64 / f64::from(1 << 30),
                    c.memory_total as f64 / f64::from(1 << 30),
                    c.sessions,
                    c.max_sessions,
                    c.user_sessions,
                );
            }
            let left_out = candidates.len() - ranking.indices().len();
            if left_out > 0 {
                println!("  ({left_out} candidate(s) left out)");
            }
            for line in &output.log {
                println!("  log {:?}: {}", line.level, line.message);
            }
        }
        SmokeReport::Script(script) => println!("smoke call: rendered\n{script}"),
        SmokeReport::Provider(info) => {
            println!("smoke call: describe: {} ({})", info.name, info.description);
            for setting in &info.settings {
                let flags = match (setting.required, setting.secret) {
                    (true, true) => " (required, secret)",
                    (true, false) => " (required)",
                    (false, true) => " (secret)",
                    (false, false) => "",
                };
                println!("  {}{flags}: {}", setting.name, setting.description);
            }
        }
    }
    println!("ok: the server would accept this component");
    Ok(())
}

mod progress;
mod scaffold;

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert!(parse_bytes("2 furlongs").is_err());
        assert!(parse_bytes("GiB").is_err());
    }
}
