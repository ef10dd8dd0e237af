//! The `zonebroker` binary: the server and the operator's command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

mod cli;

use zonebroker::api::RequestTimeouts;
use zonebroker::domain::duration;
use zonebroker::plugins::RuntimeConfig;
use zonebroker::server::{self, ConnectionLimits, ListenerSpec, ServeConfig, TlsFiles};
use zonebroker::store::DatabaseOptions;

#[derive(Parser)]
#[command(
    name = "zonebroker",
    version,
    about = "Broker sessions across deployment zones; plugins in WebAssembly."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ZONEBROKER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Deployment zones (admin API).
    Zone {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ZoneCommand,
    },
    /// Agents (admin API).
    Agent {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::AgentCommand,
    },
    /// Images (admin API).
    Image {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ImageCommand,
    },
    /// Plugins: scaffold, check locally, upload, activate, roll back (admin API).
    Plugin {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::PluginCommand,
    },
    /// Server pools (admin API).
    Pool {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// VM provider configs: a provider plugin and its settings (admin API).
    ProviderConfig {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// AutoScale configs, with their status (admin API).
    Autoscale {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// Servers: static ones to add, auto-scaled ones to inspect (admin API).
    Server {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// LDAP configs: the directories AutoScale configs create AD computer records in (admin API).
    LdapConfig {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// Workspaces: what users launch, a container image or a pool (admin API).
    Workspace {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// Copy an embedded installation (a stopped server's --data-dir) into an empty
    /// PostgreSQL database: records, plugin components, secrets and tokens.
    Migrate(MigrateArgs),
    /// Sessions (admin API).
    Session {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::SessionCommand,
    },
}

#[derive(clap::Args)]
struct DatabaseArgs {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=FILE]`:
    /// keep the state in this PostgreSQL database, shared by every process that names it,
    /// instead of the embedded store in --data-dir. TLS uses rustls and always verifies the
    /// server's certificate and host name.
    #[arg(
        long = "database",
        env = "ZONEBROKER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    url: Option<String>,
    /// The CA certificates (PEM) that sign the database server's certificate (as
    /// `sslrootcert` in the URL). [default: the web's roots]
    #[arg(
        long = "database-ca-file",
        env = "ZONEBROKER_DATABASE_CA_FILE",
        value_name = "FILE"
    )]
    ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    fn options(self) -> Option<DatabaseOptions> {
        self.url.map(|url| DatabaseOptions {
            url,
            ca_file: self.ca_file,
        })
    }
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The embedded installation's data directory (its server stopped).
    #[arg(long, value_name = "DIR")]
    from_data_dir: PathBuf,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the embedded store, generated tokens and compiled plugins live; with
    /// --database only what is local to this process (compiled plugins).
    #[arg(long, env = "ZONEBROKER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[command(flatten)]
    database: DatabaseArgs,
    /// A listener and the zone it manages, as ADDR=ZONE; repeatable. Options after commas:
    /// `tls-cert=FILE,tls-key=FILE` (this listener's own TLS), `public=HOST[:PORT]` (the
    /// address VMs and users reach it at: what `$request_host$` stands for in startup
    /// scripts; needed when bound to 0.0.0.0). [default: 127.0.0.1:8080=default]
    #[arg(
        long = "listen",
        value_name = "ADDR=ZONE[,tls-cert=FILE,tls-key=FILE][,public=HOST[:PORT]]"
    )]
    listeners: Vec<ListenerSpec>,
    /// Serve HTTPS on every listener with this certificate chain (PEM, leaf first).
    #[arg(
        long,
        env = "ZONEBROKER_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ZONEBROKER_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
    /// How long an agent may stay silent and remain a placement candidate (`60`, `90s`,
    /// `2m`).
    #[arg(long, env = "ZONEBROKER_AGENT_TIMEOUT", default_value = "60s", value_parser = duration_between(Duration::from_secs(1), Duration::from_secs(86_400)))]
    agent_timeout: Duration,
    /// The largest plugin component an upload may carry, in bytes (or with a suffix: 32MiB).
    /// Interpreters are large: a CPython strategy is about 18 MB, a JavaScript one 12 MB.
    #[arg(long, default_value = "32MiB", value_parser = cli::parse_bytes)]
    max_plugin_size: u64,
    /// New agents are stored `pending` and get no sessions until an admin enables them
    /// (`zonebroker agent enable ID`).
    #[arg(long, env = "ZONEBROKER_REQUIRE_AGENT_APPROVAL")]
    require_agent_approval: bool,
    /// Time between AutoScale reconcile passes (demand changes also start one at once):
    /// seconds, or with a unit (`500ms`, `10s`, `5m`).
    #[arg(long, env = "ZONEBROKER_AUTOSCALE_INTERVAL", default_value = "10s", value_parser = duration_between(Duration::from_millis(50), Duration::from_secs(3600)))]
    autoscale_interval: Duration,
    /// With a shared database: how long a process's lease on reconciling an AutoScale
    /// config lasts; another process takes the config over this long after its holder
    /// stopped renewing (a clean stop gives it back at once).
    #[arg(long, env = "ZONEBROKER_CONFIG_LEASE", default_value = "10s", value_parser = duration_between(Duration::from_millis(300), Duration::from_secs(3600)))]
    config_lease: Duration,
    /// With a shared database: how often this process reads the changes other processes
    /// made (it is also woken at once where the database has LISTEN/NOTIFY).
    #[arg(long, env = "ZONEBROKER_FEED_INTERVAL", default_value = "200ms", value_parser = duration_between(Duration::from_millis(10), Duration::from_secs(3600)))]
    feed_interval: Duration,
    /// How long a client may take to send a request's headers (and its TLS handshake).
    #[arg(long, default_value = "10s", value_parser = duration_between(Duration::from_millis(10), Duration::from_secs(3600)))]
    header_read_timeout: Duration,
    /// How long a request may take, from its headers to its answer (body included).
    #[arg(long, default_value = "60s", value_parser = duration_between(Duration::from_millis(10), Duration::from_secs(86_400)))]
    request_timeout: Duration,
    /// How long a plugin upload may take, transfer and compilation included.
    #[arg(long, default_value = "10m", value_parser = duration_between(Duration::from_millis(10), Duration::from_secs(86_400)))]
    upload_timeout: Duration,
    /// Connections each listener serves at once; more wait to be accepted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Threads that run requests, reconcile passes and provider calls. [default: one per
    /// core]
    #[arg(long, env = "ZONEBROKER_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// How long a plugin upload may spend compiling (waiting for a compile slot included;
    /// compilations run one per core); past it the upload is refused with 422.
    #[arg(long, env = "ZONEBROKER_MAX_COMPILE_TIME", default_value = "120s", value_parser = duration_between(Duration::from_millis(1), Duration::from_secs(86_400)))]
    max_compile_time: Duration,
    /// The most memory one plugin may be given of its own at upload or activation
    /// (`memory_bytes`); kinds' defaults: strategies and generators 64 MiB, providers 96 MiB.
    #[arg(long, default_value = "256MiB", value_parser = cli::parse_bytes)]
    max_plugin_memory: u64,
    /// The greatest CPU budget (fuel) one plugin may be given of its own (`fuel`);
    /// strategies and generators get 1e9 by default, providers 2e10.
    #[arg(long, default_value_t = 100_000_000_000)]
    max_plugin_fuel: u64,
    /// The longest deadline one plugin's calls may be given of their own (`deadline_ms`);
    /// strategies get 100 ms by default, generators 1 s, providers 60 s.
    #[arg(long, default_value = "60s", value_parser = duration_between(Duration::from_millis(1), Duration::from_secs(3_600)))]
    max_plugin_deadline: Duration,
}

/// A flag's parser: a duration (seconds, or with a unit) within `min..=max`.
fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| duration::parse_within(text, min, max).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args),
        Command::Migrate(args) => migrate(args),
        Command::Zone {
            connection,
            command,
        } => cli::zone(&cli::Client::new(&connection)?, command),
        Command::Agent {
            connection,
            command,
        } => cli::agent(&cli::Client::new(&connection)?, command),
        Command::Image {
            connection,
            command,
        } => cli::image(&cli::Client::new(&connection)?, command),
        Command::Plugin {
            connection,
            command,
        } => cli::plugin(&connection, command),
        Command::Session {
            connection,
            command,
        } => cli::session(&cli::Client::new(&connection)?, command),
        Command::Pool {
            connection,
            command,
        } => cli::resource(&cli::Client::new(&connection)?, "/pools", command),
        Command::ProviderConfig {
            connection,
            command,
        } => cli::resource(
            &&cli::Client::new(&connection)?,
            "/vm-provider-configs",
            command,
        ),
        Command::Autoscale {
            connection,
            command,
        } => cli::resource(
            &&cli::Client::new(&connection)?,
            "/autoscale-configs",
            command,
        ),
        Command::Server {
            connection,
            command,
        } => cli::resource(&cli::Client::new(&connection)?, "/servers", command),
        Command::Workspace {
            connection,
            command,
        } => cli::resource(&cli::Client::new(&connection)?, "/workspaces", command),
        Command::LdapConfig {
            connection,
            command,
        } => cli::resource(&cli::Client::new(&connection)?, "/ldap-configs", command),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig {
        data_dir: args.data_dir,
        database: args.database.options(),
        listeners: args.listeners,
        admin_token: std::env::var("ZONEBROKER_ADMIN_TOKEN").ok(),
        agent_token: std::env::var("ZONEBROKER_AGENT_TOKEN").ok(),
        agent_timeout: args.agent_timeout,
        max_plugin_size: args.max_plugin_size as usize,
        runtime: RuntimeConfig {
            max_compile_time: args.max_compile_time,
            max_limits: zonebroker::plugins::CallLimits {
                memory_bytes: usize::try_from(args.max_plugin_memory).unwrap_or(usize::MAX),
                fuel: args.max_plugin_fuel,
                deadline: args.max_plugin_deadline,
                ..zonebroker::plugins::CallLimits::MAXIMA
            },
            ..RuntimeConfig::default()
        },
        autoscale_interval: args.autoscale_interval,
        config_lease: args.config_lease,
        feed_interval: args.feed_interval,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        connection_limits: ConnectionLimits {
            header_read_timeout: args.header_read_timeout,
            max_connections: args.max_connections as usize,
        },
        request_timeouts: RequestTimeouts {
            request: args.request_timeout,
            upload: args.upload_timeout,
        },
        require_agent_approval: args.require_agent_approval,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(async {
            let shutdown = server::shutdown_signal()?;
            anyhow::Ok(server::serve(config, shutdown).await?)
        })
        .context("zonebroker serve")
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let options = args
        .database
        .options()
        .context("name the database to copy into: --database URL (or ZONEBROKER_DATABASE_URL)")?;
    let data_dir = args.from_data_dir;
    if !data_dir.join("db").is_dir() {
        anyhow::bail!(
            "{} holds no embedded store (no `db` directory): name a server's --data-dir",
            data_dir.display()
        );
    }
    let tokens = zonebroker::store::migrate::Tokens {
        admin: read_token(&data_dir, zonebroker::api::auth::ADMIN_TOKEN_FILE)?,
        agent: read_token(&data_dir, zonebroker::api::auth::AGENT_TOKEN_FILE)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let copied = runtime
        .block_on(zonebroker::store::migrate::copy_into_database(
            &data_dir, &options, tokens,
        ))
        .context("zonebroker migrate")?;
    for (table, records) in copied.tables {
        println!("{table:<20} {records}");
    }
    println!(
        "copied {} into the database; serve it with --database",
        data_dir.display()
    );
    Ok(())
}

/// A token file of a data directory, if it has one.
fn read_token(data_dir: &std::path::Path, file: &str) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
