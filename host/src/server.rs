//! `zonebroker serve`: open the data directory, start the plugin runtime with the built-in
//! plugins, bind every listener (each the manager of one zone) and serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::{ADMIN_TOKEN_FILE, AGENT_TOKEN_FILE, Token, TokenError, TokenSource};
use crate::api::{self, AppState};
use crate::autoscale;
use crate::broker::{Broker, BrokerConfig, BrokerError};
use crate::domain::names::{self, NameError};
use crate::plugins::{
    self, PluginRuntime, Registry, RegistryError, RuntimeConfig, RuntimeInitError,
};
use crate::store::{Store, StoreError};

/// `ADDR=ZONE`: a listener and the zone it manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub zone: String,
}

/// Why a `--listen` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenerSpecError {
    #[error("expected ADDR=ZONE, e.g. 127.0.0.1:8080=default")]
    Shape,
    #[error("`{0}` is not an IP address with a port")]
    Addr(String),
    #[error("zone name: {0}")]
    Zone(#[from] NameError),
}

impl FromStr for ListenerSpec {
    type Err = ListenerSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, zone) = s.rsplit_once('=').ok_or(ListenerSpecError::Shape)?;
        let addr = addr
            .parse()
            .map_err(|_| ListenerSpecError::Addr(addr.to_string()))?;
        names::validate(zone)?;
        Ok(ListenerSpec {
            addr,
            zone: zone.to_string(),
        })
    }
}

impl Default for ListenerSpec {
    fn default() -> Self {
        ListenerSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            zone: "default".into(),
        }
    }
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
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
    #[error("listener {addr} failed: {source}")]
    Serve {
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
    create_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let admin_token = load_token(
        "admin token",
        config.admin_token.clone(),
        &config.data_dir,
        ADMIN_TOKEN_FILE,
    )?;
    let agent_token = load_token(
        "agent token",
        config.agent_token.clone(),
        &config.data_dir,
        AGENT_TOKEN_FILE,
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
        plugins::install_builtins(&registry, &store)?;
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
        tracing::info!(%addr, zone = spec.zone, "listening");
        bound.push((listener, addr, spec.zone));
    }

    // Where VMs reach the broker: `$request_host$` in a zone's `upstream_auth_address`.
    let addresses = autoscale::BrokerAddresses {
        by_zone: bound
            .iter()
            .rev()
            .map(|(_, addr, zone)| (zone.clone(), addr.to_string()))
            .collect(),
        default: bound
            .first()
            .map(|(_, addr, _)| addr.to_string())
            .unwrap_or_default(),
    };
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
            addresses,
        },
    )
    .spawn(stop_rx.clone());
    let mut servers = tokio::task::JoinSet::new();
    for (listener, addr, zone) in bound {
        let app = api::router(state.clone(), &zone);
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|source| ServeError::Serve { addr, source })
        });
    }

    let mut result = Ok(());
    tokio::select! {
        () = shutdown => tracing::info!("shutting down: finishing requests in flight"),
        Some(joined) = servers.join_next() => {
            result = joined.map_err(|e| ServeError::Task(e.to_string())).and_then(|r| r);
            tracing::error!("a listener stopped; shutting down");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = servers.join_next().await {
        if let Err(e) = joined
            .map_err(|e| ServeError::Task(e.to_string()))
            .and_then(|r| r)
        {
            tracing::error!("{e}");
        }
    }
    if let Err(error) = reconciler.await {
        tracing::error!("the reconcile loop failed: {error}");
    }
    broker.flush().await?;
    tracing::info!("stopped");
    result
}

fn load_token(
    what: &str,
    env: Option<String>,
    data_dir: &std::path::Path,
    file: &str,
) -> Result<Token, TokenError> {
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

fn create_data_dir(path: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServeError::DataDir {
            path: path.to_path_buf(),
            source,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_specs_parse_addr_and_zone() {
        let spec: ListenerSpec = "127.0.0.1:8080=east".parse().unwrap();
        assert_eq!(spec.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(spec.zone, "east");
        let v6: ListenerSpec = "[::1]:9000=west-2".parse().unwrap();
        assert_eq!(v6.addr.port(), 9000);
        assert!(matches!(
            "127.0.0.1:8080".parse::<ListenerSpec>(),
            Err(ListenerSpecError::Shape)
        ));
        assert!(matches!(
            "localhost:80=a".parse::<ListenerSpec>(),
            Err(ListenerSpecError::Addr(_))
        ));
        assert!(matches!(
            "127.0.0.1:80=East".parse::<ListenerSpec>(),
            Err(ListenerSpecError::Zone(_))
        ));
    }
}
