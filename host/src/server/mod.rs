//! `zonebroker serve`: open the data directory, start the plugin runtime with the built-in
//! plugins, bind every listener (each the manager of one zone) and serve until told to stop.

mod http;
mod listen;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::{ADMIN_TOKEN_FILE, AGENT_TOKEN_FILE, Token, TokenError, TokenSource};
use crate::api::{self, AppState};
use crate::autoscale;
use crate::broker::{Broker, BrokerConfig, BrokerError};
use crate::domain::zone::REQUEST_HOST;
use crate::plugin_cache::StoredArtifacts;
use crate::plugins::{
    self, PluginRuntime, Registry, RegistryError, RuntimeConfig, RuntimeInitError,
};
use crate::store::{DatabaseOptions, SharedToken, Store, StoreError};

pub use http::{ConnectionLimits, TlsError};
pub use listen::{ListenerSpec, ListenerSpecError, TlsFiles};

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The embedded store, token files and compiled plugins; with `database`, only the
    /// compiled plugins (what is local to this process).
    pub data_dir: PathBuf,
    /// The PostgreSQL database that keeps the state instead of the embedded store.
    pub database: Option<DatabaseOptions>,
    pub listeners: Vec<ListenerSpec>,
    /// `ZONEBROKER_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
    /// `ZONEBROKER_AGENT_TOKEN`, if set.
    pub agent_token: Option<String>,
    /// An agent silent for longer is not a placement candidate.
    pub agent_timeout: std::time::Duration,
    /// The largest plugin component an upload may carry, in bytes.
    pub max_plugin_size: usize,
    pub runtime: RuntimeConfig,
    /// Time between reconcile passes when nothing wakes the loop sooner.
    pub autoscale_interval: std::time::Duration,
    /// How long an AutoScale config's lease lasts (see `--config-lease`).
    pub config_lease: std::time::Duration,
    /// How often the change feed of a shared database is read (see `--feed-interval`).
    pub feed_interval: std::time::Duration,
    /// TLS files of every listener that names none of its own.
    pub tls: Option<TlsFiles>,
    /// Per listener: connections at once, time to send headers.
    pub connection_limits: ConnectionLimits,
    /// Time to receive, handle and answer one request.
    pub request_timeouts: api::RequestTimeouts,
    /// New agents stay pending (no sessions) until an operator enables them.
    pub require_agent_approval: bool,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory {path} is open to other users (mode {mode:04o}); it holds cloud keys, LDAP passwords and the check-in signing key: `chmod 700 {path}` and start again"
    )]
    DataDirMode { path: PathBuf, mode: u32 },
    #[error("TLS of listener {addr}: {source}")]
    Tls { addr: SocketAddr, source: TlsError },
    #[error(
        "listener {addr} (zone `{zone}`) is bound to every address, and AutoScale config `{config}` sends its VMs to `$request_host$`, which would be {addr}: name the address VMs reach with `--listen {addr}={zone},public=HOST[:PORT]`"
    )]
    NoPublicAddress {
        addr: SocketAddr,
        zone: String,
        config: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("token: {0}")]
    Token(#[from] TokenError),
    #[error("loading the state: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Runtime(#[from] RuntimeInitError),
    #[error("built-in plugins: {0}")]
    Builtins(#[from] RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// Run the server until `shutdown` completes, then stop accepting, let requests in flight
/// finish and flush the store.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // Everything the server writes (sled's files, tokens, keys) is for its own user only.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    create_data_dir(&config.data_dir)?;
    let store = match &config.database {
        Some(database) => Store::open_database(database, &config.data_dir).await?,
        None => {
            let data_dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&data_dir))
                .await
                .map_err(|e| ServeError::Task(e.to_string()))??
        }
    };
    let admin_token = load_token(
        SharedToken::Admin,
        config.admin_token.clone(),
        &store,
        &config.data_dir,
    )?;
    let agent_token = load_token(
        SharedToken::Agent,
        config.agent_token.clone(),
        &store,
        &config.data_dir,
    )?;

    // Loading plugins (compiling any whose artifact is not cached) is CPU work: keep it off
    // the async workers.
    let listeners = listeners_or_default(&config.listeners);
    let broker_config = BrokerConfig {
        agent_timeout: config.agent_timeout,
        listener_zones: listeners.iter().map(|l| l.zone.clone()).collect(),
        require_agent_approval: config.require_agent_approval,
    };
    let runtime_config = config.runtime.clone();
    let started = std::time::Instant::now();
    let broker = tokio::task::spawn_blocking(move || -> Result<Broker, ServeError> {
        let runtime = Arc::new(PluginRuntime::new(runtime_config)?);
        let registry = Registry::new(runtime);
        plugins::install_builtins(&registry, &StoredArtifacts(&store))?;
        Ok(Broker::open(store, Arc::new(registry), broker_config)?)
    })
    .await
    .map_err(|e| ServeError::Task(e.to_string()))??;
    let broker = Arc::new(broker);
    tracing::info!(
        plugins = broker.registry().list().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state and plugins loaded"
    );
    let mut bound = Vec::new();
    for spec in listeners {
        let tls = spec
            .tls
            .as_ref()
            .or(config.tls.as_ref())
            .map(http::tls_acceptor)
            .transpose()
            .map_err(|source| ServeError::Tls {
                addr: spec.addr,
                source,
            })?;
        let listener = TcpListener::bind(spec.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: spec.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: spec.addr,
            source,
        })?;
        tracing::info!(
            %addr,
            zone = spec.zone,
            tls = tls.is_some(),
            public = spec.public.as_deref().unwrap_or_default(),
            "listening"
        );
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                zone = spec.zone,
                "plain HTTP on a non-loopback address: tokens, agent credentials and VM secrets cross the network in clear; serve HTTPS with --tls-cert and --tls-key (or put a TLS proxy in front)"
            );
        }
        bound.push(BoundListener {
            listener,
            addr,
            tls,
            spec,
        });
    }

    // Where VMs reach the broker: `$request_host$` in a zone's `upstream_auth_address`.
    let addresses = broker_addresses(&bound);
    refuse_unreachable_addresses(&broker, &bound)?;
    tracing::info!(
        installation = %broker.store().installation_id(),
        "every VM this installation creates carries this id as its `zonebroker:installation` tag"
    );
    let directory = Arc::new(autoscale::directory::LdapDirectory);
    let state = AppState {
        broker: broker.clone(),
        admin_token,
        agent_token,
        max_plugin_size: config.max_plugin_size,
        request_timeouts: config.request_timeouts,
        bootstrap: Arc::new(autoscale::Bootstrapper::new(
            broker.clone(),
            directory.clone(),
            addresses.clone(),
        )),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconciler = autoscale::Reconciler::new(
        broker.clone(),
        Arc::new(autoscale::PluginCloud(broker.registry().clone())),
        directory,
        autoscale::ReconcilerSettings {
            interval: config.autoscale_interval,
            config_lease: config.config_lease,
            addresses,
        },
    )
    .spawn(stop_rx.clone());
    let following = tokio::spawn(
        broker
            .clone()
            .follow_changes(config.feed_interval, stop_rx.clone()),
    );
    // A follower that failed would leave this process serving a view that no longer
    // follows the others: stop rather than serve it.
    let follower = tokio::spawn(async move {
        if let Err(error) = following.await
            && error.is_panic()
        {
            tracing::error!("following the change feed failed: {error}; stopping");
            std::process::exit(70);
        }
    });
    let mut servers = tokio::task::JoinSet::new();
    for listener in bound {
        let app = api::router(state.clone(), &listener.spec.zone);
        servers.spawn(http::serve(
            listener.listener,
            listener.tls,
            app,
            config.connection_limits,
            stop_rx.clone(),
        ));
    }

    let mut result = Ok(());
    tokio::select! {
        () = shutdown => tracing::info!("shutting down: finishing requests in flight"),
        Some(joined) = servers.join_next() => {
            result = joined.map_err(|e| ServeError::Task(e.to_string()));
            tracing::error!("a listener stopped; shutting down");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = servers.join_next().await {
        if let Err(e) = joined {
            tracing::error!("a listener failed: {e}");
        }
    }
    if let Err(error) = reconciler.await {
        tracing::error!("the reconcile loop failed: {error}");
    }
    if let Err(error) = follower.await {
        tracing::error!("following the change feed failed: {error}");
    }
    broker.flush().await?;
    tracing::info!("stopped");
    result
}

/// A token from the environment, else the database's (shared by every process), else the
/// data directory's file (made on first start).
fn load_token(
    which: SharedToken,
    env: Option<String>,
    store: &Store,
    data_dir: &std::path::Path,
) -> Result<Token, TokenError> {
    let (what, file) = match which {
        SharedToken::Admin => ("admin token", ADMIN_TOKEN_FILE),
        SharedToken::Agent => ("agent token", AGENT_TOKEN_FILE),
    };
    if let (None, Some(shared)) = (
        env.as_ref().filter(|v| !v.is_empty()),
        store.shared_token(which),
    ) {
        tracing::info!("{what} from the database (the same for every process that shares it)");
        return Ok(Token::new(shared));
    }
    let (token, source) = Token::load_or_generate(env, data_dir, file)?;
    match &source {
        TokenSource::Environment => tracing::info!("{what} from the environment"),
        TokenSource::File(path) => tracing::info!(path = %path.display(), "{what} from file"),
        TokenSource::Generated(path) => {
            tracing::info!(path = %path.display(), "generated a new {what} (mode 0600)")
        }
    }
    Ok(token)
}

fn listeners_or_default(specs: &[ListenerSpec]) -> Vec<ListenerSpec> {
    if specs.is_empty() {
        vec![ListenerSpec::default()]
    } else {
        specs.to_vec()
    }
}

/// A listener, bound.
struct BoundListener {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    spec: ListenerSpec,
}

impl BoundListener {
    fn reachable_at(&self) -> Option<String> {
        self.spec.reachable_at(self.addr)
    }
}

/// What `$request_host$` stands for in each zone's `upstream_auth_address`.
fn broker_addresses(bound: &[BoundListener]) -> autoscale::BrokerAddresses {
    let address = |listener: &BoundListener| {
        listener
            .reachable_at()
            .unwrap_or_else(|| listener.addr.to_string())
    };
    autoscale::BrokerAddresses {
        by_zone: bound
            .iter()
            .rev()
            .map(|listener| (listener.spec.zone.clone(), address(listener)))
            .collect(),
        default: bound.first().map(address).unwrap_or_default(),
    }
}

/// Refuse to start when an AutoScale config would send its VMs to `$request_host$` of a
/// listener bound to every address without a public address: they could never check in.
fn refuse_unreachable_addresses(
    broker: &Broker,
    bound: &[BoundListener],
) -> Result<(), ServeError> {
    for view in broker.autoscale_configs() {
        let config = &view.config;
        let listener = bound
            .iter()
            .find(|l| l.spec.zone == config.zone)
            .or(bound.first());
        let Some(listener) = listener else { continue };
        let uses_request_host = broker
            .zone(&config.zone)
            .is_ok_and(|zone| zone.upstream_auth_address.contains(REQUEST_HOST));
        if uses_request_host && listener.reachable_at().is_none() {
            return Err(ServeError::NoPublicAddress {
                addr: listener.addr,
                zone: listener.spec.zone.clone(),
                config: config.name.clone(),
            });
        }
    }
    Ok(())
}

/// Create the data directory for this user only, or refuse one that others can read.
fn create_data_dir(path: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServeError::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
    let mode = std::fs::metadata(path)
        .map_err(|source| ServeError::DataDir {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ServeError::DataDirMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT.
///
/// The handlers are installed when this is called (inside the runtime, before `serve`), so a
/// signal that arrives while the server is still starting is not lost.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}
