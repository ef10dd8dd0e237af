//! Servers: the hosts of pool sessions. Static ones an operator adds; auto-scaled ones the
//! reconcile loop records before it asks the provider for the VM, and that check in with
//! their single-use `checkin_jwt` once booted.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::records::{MAX_UPDATE_ATTEMPTS, too_contended};
use super::{Broker, BrokerError, Inventory, now_ms};
use crate::checkin;
use crate::domain::autoscale::{AutoScaleConfig, Server, ServerStatus, StaticServer, hostname};
use crate::domain::capacity::Usage;
use crate::domain::timestamp::rfc3339;
use crate::domain::validation::{self, FieldError};
use crate::store::{Fence, Store, Swapped};

/// A server and what its sessions reserve.
#[derive(Clone, Debug)]
pub struct ServerEntry {
    pub server: Server,
    pub usage: Usage,
}

/// The body of `POST /servers/checkin`: where the server takes connections.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerCheckin {
    #[schema(pattern = r"^[A-Za-z0-9._:\[\]-]+$", max_length = 253)]
    pub address: String,
    /// Default: the config's connection port.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

/// A server as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServerView {
    pub id: Uuid,
    pub pool: String,
    pub zone: String,
    /// The AutoScale config that owns it; `null` for a static server.
    pub config: Option<String>,
    pub hostname: String,
    pub address: Option<String>,
    pub port: u16,
    pub connection_type: crate::domain::autoscale::ConnectionType,
    pub status: ServerStatus,
    pub instance_id: Option<String>,
    pub sessions: u32,
    pub max_sessions: u32,
    /// Not reusable and has had its session: destroyed once idle.
    pub spent: bool,
    pub created_at: String,
    pub status_changed_at: String,
    pub idle_since: Option<String>,
    pub last_error: Option<String>,
    /// Its Active Directory computer object, if the config creates them.
    pub ad_computer_dn: Option<String>,
}

impl ServerEntry {
    pub fn view(&self) -> ServerView {
        let s = &self.server;
        ServerView {
            id: s.id,
            pool: s.pool.clone(),
            zone: s.zone.clone(),
            config: s.config.clone(),
            hostname: s.hostname.clone(),
            address: s.address.clone(),
            port: s.port,
            connection_type: s.connection_type,
            status: s.status,
            instance_id: s.instance_id.clone(),
            sessions: self.sessions(),
            max_sessions: s.max_sessions,
            spent: s.spent,
            created_at: rfc3339(s.created_at_ms),
            status_changed_at: rfc3339(s.status_changed_at_ms),
            idle_since: s.idle_since_ms.map(rfc3339),
            last_error: s.last_error.clone(),
            ad_computer_dn: s.ad_computer_dn.clone(),
        }
    }

    /// Sessions running on it.
    pub fn sessions(&self) -> u32 {
        self.usage.sessions
    }
}

impl Broker {
    pub fn servers(&self) -> Vec<ServerView> {
        self.read()
            .servers
            .values()
            .map(ServerEntry::view)
            .collect()
    }

    pub fn server(&self, id: Uuid) -> Result<ServerView, BrokerError> {
        self.read()
            .servers
            .get(&id)
            .map(ServerEntry::view)
            .ok_or_else(|| not_found(id))
    }

    /// What `pick` takes from each server of AutoScale config `config` (the reconcile
    /// loop), read under the lock without copying the servers: O(the config's servers),
    /// whatever the fleet. A pass asks several times, so it copies only what it needs (a
    /// state, an id, the few servers a step acts on), never every record.
    pub(crate) fn servers_of<T>(
        &self,
        config: &str,
        pick: impl FnMut(&ServerEntry) -> Option<T>,
    ) -> Vec<T> {
        let inventory = self.read();
        inventory
            .server_ids_of(config)
            .map(|id| &inventory.servers[id])
            .filter_map(pick)
            .collect()
    }

    /// Add a static server: running at once, never destroyed by AutoScale.
    pub async fn create_static_server(
        &self,
        spec: StaticServer,
    ) -> Result<ServerView, BrokerError> {
        spec.validate()?;
        let now = now_ms();
        let id = Uuid::new_v4();
        let server = Server {
            id,
            pool: spec.pool,
            zone: spec.zone,
            config: None,
            hostname: spec.hostname,
            address: Some(spec.address),
            port: spec.port.unwrap_or(spec.connection_type.default_port()),
            connection_type: spec.connection_type,
            max_sessions: spec.max_sessions,
            status: ServerStatus::Running,
            instance_id: None,
            idempotency_key: id.to_string(),
            checkin_token_id: None,
            spent: false,
            created_at_ms: now,
            status_changed_at_ms: now,
            idle_since_ms: Some(now),
            last_error: None,
            ad_computer_dn: None,
            ad_ldap_config: None,
            installation_tagged: false,
            bootstrap_required: false,
            bootstrapped_at_ms: None,
            vm_created_at_ms: None,
            uncertain_create_at_ms: None,
            version: 0,
        };
        self.write_server(id, None, |inventory, _| {
            if !inventory.pools.contains_key(&server.pool) {
                return Err(FieldError::new("pool", format!("no pool `{}`", server.pool)).into());
            }
            if !inventory.zones.contains_key(&server.zone) {
                return Err(FieldError::new("zone", format!("no zone `{}`", server.zone)).into());
            }
            Ok(ServerWrite::Put(Box::new(server.clone())))
        })
        .await?;
        let view = self.server(id)?;
        tracing::info!(server = %id, hostname = view.hostname, "static server added");
        Ok(view)
    }

    /// An operator removes server `id`. A static server goes at once if it runs no
    /// session (with `force`, its sessions are ended first). An auto-scaled server is
    /// drained: it takes no new session from now on, and the reconcile loop destroys it
    /// (VM, directory object, record) once its sessions are over; with `force`, they are
    /// ended now. Answers what happened.
    pub async fn remove_server(&self, id: Uuid, force: bool) -> Result<Removal, BrokerError> {
        let config = {
            let inventory = self.read();
            let entry = inventory.servers.get(&id).ok_or_else(|| not_found(id))?;
            if entry.server.config.is_none() && !force && entry.sessions() > 0 {
                return Err(BrokerError::Conflict {
                    code: "server_in_use",
                    message: format!(
                        "server `{id}` runs {} session(s): end them, or remove it with `force=true`",
                        entry.sessions()
                    ),
                });
            }
            entry.server.config.clone()
        };
        if force {
            self.end_sessions_on(id, "its server is removed by an operator")
                .await?;
            self.commit().await?;
        }
        let removal = match &config {
            None => {
                if !self.store.close_if_idle(id).await? {
                    return Err(BrokerError::Conflict {
                        code: "server_in_use",
                        message: format!("server `{id}` got a session meanwhile: try again"),
                    });
                }
                self.write_server(id, None, |_, current| match current {
                    Some(_) => Ok(ServerWrite::Delete),
                    None => Err(not_found(id)),
                })
                .await?;
                Removal::Removed
            }
            Some(_) => {
                let usage = self.store.close(id).await?;
                let usage = self.usage_now(id, usage);
                if let Some(entry) = self.write().servers.get_mut(&id) {
                    entry.usage = usage;
                }
                self.write_server(id, None, |_, current| {
                    let server = current.ok_or_else(|| not_found(id))?;
                    if !matches!(
                        server.status,
                        ServerStatus::Provisioning | ServerStatus::Running
                    ) {
                        return Ok(ServerWrite::Keep);
                    }
                    let mut server = server.clone();
                    server.status = ServerStatus::Draining;
                    server.status_changed_at_ms = now_ms();
                    Ok(ServerWrite::Put(Box::new(server)))
                })
                .await?;
                Removal::Draining(Box::new(self.server(id)?))
            }
        };
        match &removal {
            Removal::Removed => tracing::info!(server = %id, force, "static server removed"),
            Removal::Draining(view) => {
                tracing::info!(server = %id, hostname = view.hostname, sessions = view.sessions, force, "server draining on an operator's request: destroyed once its sessions end");
                self.demand_changed(config);
            }
        }
        Ok(removal)
    }

    /// End every session on server `id` now (its server is lost or removed), and leave it
    /// closed to new ones. The caller commits.
    async fn end_sessions_on(&self, id: Uuid, why: &str) -> Result<(), BrokerError> {
        let ended = self.store.end_sessions_on(id).await?;
        let mut inventory = self.write();
        for session in &ended {
            inventory.remove_session(*session);
            tracing::warn!(session = %session, server = %id, "session ended: {why}");
        }
        let usage = self.usage_now(id, Usage::default().closed());
        if let Some(entry) = inventory.servers.get_mut(&id) {
            entry.usage = usage;
        }
        Ok(())
    }

    /// The VM of server `id` is gone: it takes no more sessions, its sessions are ended,
    /// and it is marked `lost` for the reconcile loop to clean up and replace (a write
    /// fenced on the pass's lease). Answers how many sessions ended.
    pub(crate) async fn mark_lost(
        &self,
        fence: &Fence,
        id: Uuid,
        why: &str,
    ) -> Result<u32, BrokerError> {
        let Some(sessions) = self.read().servers.get(&id).map(|entry| entry.sessions()) else {
            return Ok(0);
        };
        self.end_sessions_on(id, "its server's VM is gone").await?;
        self.commit().await?;
        self.write_server(id, Some(fence), |_, current| {
            let Some(server) = current else {
                return Ok(ServerWrite::Keep);
            };
            let mut server = server.clone();
            server.status = ServerStatus::Lost;
            server.status_changed_at_ms = now_ms();
            server.last_error = Some(why.to_string());
            Ok(ServerWrite::Put(Box::new(server)))
        })
        .await?;
        Ok(sessions)
    }

    /// A booting VM asks for its variables with its `checkin_jwt`: if the token is ours,
    /// unexpired, and names a server that waits for exactly this token and has not fetched
    /// them yet, the server is claimed for the bootstrap until the claim is completed or
    /// dropped (so two requests with one token cannot both get an answer from this
    /// process; [`Broker::complete_bootstrap`] decides between processes).
    pub(crate) fn claim_bootstrap(&self, token: &str) -> Result<BootstrapClaim<'_>, BrokerError> {
        let claims = self.verify_checkin_token(token)?;
        let mut inventory = self.write();
        let server = waiting_for(
            inventory
                .servers
                .get(&claimed_server(&claims)?)
                .map(|e| &e.server),
            &claims,
        )?
        .clone();
        if server.bootstrapped_at_ms.is_some() || !inventory.bootstrap_claims.insert(server.id) {
            return Err(token_refused());
        }
        let config = server
            .config
            .as_ref()
            .and_then(|name| inventory.autoscale_configs.get(name))
            .cloned();
        let Some(config) = config else {
            inventory.bootstrap_claims.remove(&server.id);
            return Err(token_refused());
        };
        Ok(BootstrapClaim {
            broker: self,
            server,
            claims,
            config,
        })
    }

    /// Record that the claimed server fetched its variables (durably, before they are
    /// answered): the token takes no second bootstrap, through this process or another.
    /// Answers the server as recorded.
    pub(crate) async fn complete_bootstrap(
        &self,
        claim: BootstrapClaim<'_>,
    ) -> Result<Server, BrokerError> {
        let server = self
            .write_server(claim.server.id, None, |_, current| {
                let server = waiting_for(current, &claim.claims)?;
                if server.bootstrapped_at_ms.is_some() {
                    return Err(token_refused());
                }
                let mut server = server.clone();
                server.bootstrapped_at_ms = Some(now_ms());
                Ok(ServerWrite::Put(Box::new(server)))
            })
            .await?
            .ok_or_else(token_refused)?;
        drop(claim);
        tracing::info!(server = %server.id, hostname = server.hostname, "server fetched its variables");
        Ok(server)
    }

    /// Whether `token` is a check-in token of this installation and unexpired (signature
    /// and expiry only: whether its server still waits for it is the caller's check).
    pub fn verify_checkin_token(&self, token: &str) -> Result<checkin::Claims, BrokerError> {
        checkin::verify(self.store.checkin_key(), token, now_ms() / 1000)
            .map_err(|e| BrokerError::Unauthorized(format!("check-in token refused: {e}")))
    }

    /// A booted VM presents its `checkin_jwt`: if it is ours, unexpired, names a server that
    /// waits for exactly this token and has fetched its variables, the server records its
    /// address and starts taking sessions. The token is spent by its first check-in,
    /// through whichever process: the write is at the version the check was made on.
    pub async fn server_checkin(
        &self,
        token: &str,
        checkin: ServerCheckin,
    ) -> Result<ServerView, BrokerError> {
        let claims = self.verify_checkin_token(token)?;
        let address = checkin
            .address
            .trim_start_matches('[')
            .trim_end_matches(']');
        validation::host("address", address)?;
        if checkin.port == Some(0) {
            return Err(FieldError::new("port", "from 1 to 65535").into());
        }
        let id = claimed_server(&claims)?;
        self.write_server(id, None, |_, current| {
                let waiting = waiting_for(current, &claims)?;
                if waiting.bootstrap_required && waiting.bootstrapped_at_ms.is_none() {
                    return Err(BrokerError::Conflict {
                        code: "bootstrap_required",
                        message: "the server has not fetched its variables: POST /api/v1/servers/bootstrap with this token first".into(),
                    });
                }
                let now = now_ms();
                let mut server = waiting.clone();
                server.address = Some(address.to_string());
                if let Some(port) = checkin.port {
                    server.port = port;
                }
                server.status = ServerStatus::Running;
                server.checkin_token_id = None;
                server.status_changed_at_ms = now;
                server.idle_since_ms = Some(now);
                server.last_error = None;
                Ok(ServerWrite::Put(Box::new(server)))
            })
            .await?;
        let view = self.server(id)?;
        self.demand_changed_on_server(view.id);
        tracing::info!(server = %view.id, hostname = view.hostname, address = view.address, "server checked in");
        Ok(view)
    }

    /// Record a server an AutoScale config is about to create, with its idempotency key and
    /// check-in token id, durably, before the provider is asked for the VM (a write fenced
    /// on the pass's lease). Answers the server and its check-in token.
    pub(crate) async fn record_new_server(
        &self,
        fence: &Fence,
        token_lifetime_secs: u64,
    ) -> Result<(Server, String), BrokerError> {
        let config_name = fence.config.as_str();
        let id = Uuid::new_v4();
        let jti = Uuid::new_v4().to_string();
        let now = now_ms();
        let server = self
            .write_server(id, Some(fence), |inventory, _| {
                let config = inventory
                    .autoscale_configs
                    .get(config_name)
                    .ok_or_else(|| BrokerError::NotFound {
                        kind: "AutoScale config",
                        key: config_name.to_string(),
                    })?;
                Ok(ServerWrite::Put(Box::new(Server {
                    id,
                    pool: config.pool.clone(),
                    zone: config.zone.clone(),
                    config: Some(config.name.clone()),
                    hostname: inventory.unique_hostname(&config.server_name_prefix, id),
                    address: None,
                    port: config.port(),
                    connection_type: config.connection_type,
                    max_sessions: config.max_sessions_per_server,
                    status: ServerStatus::Provisioning,
                    instance_id: None,
                    idempotency_key: format!("zb-{}", id.simple()),
                    checkin_token_id: Some(jti.clone()),
                    spent: false,
                    created_at_ms: now,
                    status_changed_at_ms: now,
                    idle_since_ms: None,
                    last_error: None,
                    ad_computer_dn: None,
                    ad_ldap_config: None,
                    installation_tagged: true,
                    bootstrap_required: true,
                    bootstrapped_at_ms: None,
                    vm_created_at_ms: None,
                    uncertain_create_at_ms: None,
                    version: 0,
                })))
            })
            .await?
            .ok_or_else(|| not_found(id))?;
        let token = checkin::issue(
            self.store.checkin_key(),
            &id.to_string(),
            &jti,
            now / 1000,
            token_lifetime_secs,
        );
        Ok((server, token))
    }

    /// Change a server record with `change` (the reconcile loop; a write fenced on the
    /// pass's lease), durably. `change` is applied to the record as it is (again, if another
    /// process changed it meanwhile). Answers the server as changed, or `None` if it is gone.
    pub(crate) async fn update_server(
        &self,
        fence: &Fence,
        id: Uuid,
        change: impl Fn(&mut Server),
    ) -> Result<Option<Server>, BrokerError> {
        self.write_server(id, Some(fence), |_, current| {
            let Some(server) = current else {
                return Ok(ServerWrite::Keep);
            };
            let mut server = server.clone();
            change(&mut server);
            if server.status != current.map_or(server.status, |c| c.status) {
                server.status_changed_at_ms = now_ms();
            }
            Ok(ServerWrite::Put(Box::new(server)))
        })
        .await
    }

    /// Close an idle server to new sessions and mark it destroying, in one step, atomic
    /// against placement (a write fenced on the pass's lease). Answers false (and changes
    /// nothing) if a session got there first.
    pub(crate) async fn begin_destroy(&self, fence: &Fence, id: Uuid) -> Result<bool, BrokerError> {
        let _turn = self.versioned_writes.lock().await;
        let written = self
            .write_server_in_turn(id, Some(fence), true, |_, current| {
                let Some(server) = current else {
                    return Ok(ServerWrite::Keep);
                };
                if matches!(server.status, ServerStatus::Destroying | ServerStatus::Lost) {
                    return Ok(ServerWrite::Keep);
                }
                let mut server = server.clone();
                server.status = ServerStatus::Destroying;
                server.status_changed_at_ms = now_ms();
                Ok(ServerWrite::Put(Box::new(server)))
            })
            .await;
        match written {
            Ok(server) => {
                if let Some(entry) = self.write().servers.get_mut(&id) {
                    entry.usage = entry.usage.closed();
                }
                Ok(server.is_some())
            }
            Err(BrokerError::Conflict {
                code: HOST_BUSY, ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Forget a destroyed server (a write fenced on the pass's lease).
    pub(crate) async fn forget_server(&self, fence: &Fence, id: Uuid) -> Result<(), BrokerError> {
        self.write_server(id, Some(fence), |_, current| {
            Ok(match current {
                Some(_) => ServerWrite::Delete,
                None => ServerWrite::Keep,
            })
        })
        .await?;
        Ok(())
    }

    /// Write server `id` at a version, the only way a server record is written: `decide`
    /// judges the record as the view has it (with the view, under its lock) and says what to
    /// write; if another process changed the record meanwhile, it judges again the record as
    /// the store has it now. The view shows the write from the moment it is decided (so the
    /// checks other writes make under the view's lock see it) and learns the store's record
    /// when the write was stale. With a `fence`, a reconcile write: refused
    /// ([`crate::store::StoreError::Fenced`]) unless the pass's lease is still held.
    /// Answers the record as written (or kept; `None`: there is none).
    pub(super) async fn write_server(
        &self,
        id: Uuid,
        fence: Option<&Fence>,
        decide: impl FnMut(&Inventory, Option<&Server>) -> Result<ServerWrite, BrokerError>,
    ) -> Result<Option<Server>, BrokerError> {
        let _turn = self.versioned_writes.lock().await;
        self.write_server_in_turn(id, fence, false, decide).await
    }

    /// [`Broker::write_server`], for a caller that holds `versioned_writes`; with
    /// `close_idle`, the write also closes the server to new sessions in the same step,
    /// and is refused (a 409 [`HOST_BUSY`]) if it has any.
    pub(super) async fn write_server_in_turn(
        &self,
        id: Uuid,
        fence: Option<&Fence>,
        close_idle: bool,
        mut decide: impl FnMut(&Inventory, Option<&Server>) -> Result<ServerWrite, BrokerError>,
    ) -> Result<Option<Server>, BrokerError> {
        // Whether the record judged is the store's (else the view's, which may lag behind
        // another process's write: a refusal is made only on the store's).
        let mut from_store = false;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            // Judged and shown in the view under one hold of its lock.
            let written = {
                let mut inventory = self.write();
                let current = inventory.servers.get(&id).map(|entry| &entry.server);
                let previous = current.cloned();
                let expected = current.map(|server| server.version);
                match decide(&inventory, current) {
                    Err(_) if !from_store => None,
                    Err(refused) => return Err(refused),
                    Ok(ServerWrite::Keep) => return Ok(previous),
                    Ok(ServerWrite::Put(server)) => {
                        let mut server = *server;
                        server.version = expected.map_or(1, |version| version + 1);
                        inventory.put_server(server.clone());
                        Some((previous, Some(server)))
                    }
                    Ok(ServerWrite::Delete) => {
                        inventory.remove_server(id);
                        Some((previous, None))
                    }
                }
            };
            let Some((previous, next)) = written else {
                from_store = true;
                if let Some(now) = self.store.server_now(id).await? {
                    self.write().learn_server(id, now, &self.store);
                }
                continue;
            };
            let expected = previous.as_ref().map(|server| server.version);
            let mut unsettled = UnsettledServer {
                broker: self,
                id,
                ours: next.as_ref().map(|server| server.version),
                previous: Some(previous),
            };
            let swapped = self
                .store
                .swap_server(id, expected, next.as_ref(), fence, close_idle)
                .await?;
            match swapped {
                Swapped::Done => {
                    unsettled.previous = None;
                    return Ok(next);
                }
                Swapped::Stale(now) => {
                    unsettled.previous = None;
                    self.write().learn_server(id, now, &self.store);
                    from_store = true;
                }
                Swapped::Busy => {
                    // Nothing written: `unsettled` puts the record back as it goes.
                    return Err(BrokerError::Conflict {
                        code: HOST_BUSY,
                        message: format!("server `{id}` got a session meanwhile: try again"),
                    });
                }
            }
        }
        Err(too_contended("server", &id.to_string()))
    }

    /// A server write the store did not confirm (it refused it, failed, or its caller
    /// stopped waiting): the view shows `previous` again where it still shows the write
    /// (version `ours`; `None`: a delete), then learns the record as the store has it, at
    /// once (sled) or with the follower's next read (PostgreSQL; a write that was taken
    /// after all is newer than `previous`, so the follower applies it).
    fn undo_server_write(&self, id: Uuid, ours: Option<u64>, previous: Option<Server>) {
        {
            let mut inventory = self.write();
            let shown = inventory.servers.get(&id).map(|entry| entry.server.version);
            if shown == ours {
                inventory.learn_server(id, previous, &self.store);
            }
        }
        if let Some(now) = self.store.server_unsettled(id) {
            self.write().learn_server(id, now, &self.store);
        }
    }
}

/// The code of a write refused because its server has sessions.
const HOST_BUSY: &str = "server_in_use";

/// What a server write does with the record (see [`Broker::write_server`]).
pub(super) enum ServerWrite {
    /// Write this record (at the next version).
    Put(Box<Server>),
    /// Remove the record, with its usage.
    Delete,
    /// Write nothing.
    Keep,
}

/// A server write the view shows and the store has not confirmed: dropped with `previous`
/// still set (refused, failed, or its caller stopped waiting), the write is undone in the
/// view (see [`Broker::undo_server_write`]).
struct UnsettledServer<'a> {
    broker: &'a Broker,
    id: Uuid,
    /// The version of the write (`None`: a delete).
    ours: Option<u64>,
    previous: Option<Option<Server>>,
}

impl Drop for UnsettledServer<'_> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.broker.undo_server_write(self.id, self.ours, previous);
        }
    }
}

/// What `DELETE /servers/{id}` did.
#[derive(Debug)]
pub enum Removal {
    /// A static server, gone.
    Removed,
    /// An auto-scaled server, now draining (destroyed once its sessions end).
    Draining(Box<ServerView>),
}

/// A server claimed for its bootstrap (see [`Broker::claim_bootstrap`]); the claim is
/// released when this is dropped, so a failed or abandoned bootstrap can be retried.
pub(crate) struct BootstrapClaim<'a> {
    broker: &'a Broker,
    pub server: Server,
    claims: checkin::Claims,
    pub config: AutoScaleConfig,
}

impl Drop for BootstrapClaim<'_> {
    fn drop(&mut self) {
        self.broker.write().bootstrap_claims.remove(&self.server.id);
    }
}

fn token_refused() -> BrokerError {
    BrokerError::Unauthorized(
        "check-in token refused: it was used already or its server no longer waits for it".into(),
    )
}

/// The server a valid check-in token names.
fn claimed_server(claims: &checkin::Claims) -> Result<Uuid, BrokerError> {
    Uuid::parse_str(&claims.sub).map_err(|_| token_refused())
}

/// `server`, the one a valid check-in token names, if it is provisioning and still waits
/// for that very token.
fn waiting_for<'a>(
    server: Option<&'a Server>,
    claims: &checkin::Claims,
) -> Result<&'a Server, BrokerError> {
    match server {
        Some(server)
            if server.status == ServerStatus::Provisioning
                && server.checkin_token_id.as_deref() == Some(claims.jti.as_str()) =>
        {
            Ok(server)
        }
        _ => Err(token_refused()),
    }
}

impl Inventory {
    /// Show server `id` as the store has it (`None`: gone), keeping its usage.
    pub(super) fn learn_server(&mut self, id: Uuid, now: Option<Server>, store: &Store) {
        match now {
            Some(server) if self.servers.contains_key(&id) => {
                self.put_server(server);
            }
            Some(server) => self.insert_server(ServerEntry {
                server,
                usage: store.usage_of(id).unwrap_or_default(),
            }),
            None => self.remove_server(id),
        }
    }

    /// Insert or replace a server record, keeping its usage. Answers its view.
    fn put_server(&mut self, server: Server) -> ServerView {
        match self.servers.get_mut(&server.id) {
            Some(entry) => {
                entry.server = server;
                entry.view()
            }
            None => {
                let entry = ServerEntry {
                    server,
                    usage: Usage::default(),
                };
                let view = entry.view();
                self.insert_server(entry);
                view
            }
        }
    }

    /// Add a server to the inventory and its indexes. A server's pool, zone and config
    /// never change once it exists, so replacing `entry.server` in place keeps them true.
    pub(super) fn insert_server(&mut self, entry: ServerEntry) {
        let server = &entry.server;
        if let Some(config) = &server.config {
            self.servers_by_config
                .entry(config.clone())
                .or_default()
                .insert(server.id);
        }
        self.servers_by_pool
            .entry(server.pool.clone())
            .or_default()
            .entry(server.zone.clone())
            .or_default()
            .insert(server.id);
        self.servers.insert(entry.server.id, entry);
    }

    pub(super) fn remove_server(&mut self, id: Uuid) {
        let Some(entry) = self.servers.remove(&id) else {
            return;
        };
        if let Some(config) = &entry.server.config
            && let Some(ids) = self.servers_by_config.get_mut(config)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.servers_by_config.remove(config);
            }
        }
        let server = &entry.server;
        if let Some(zones) = self.servers_by_pool.get_mut(&server.pool) {
            if let Some(ids) = zones.get_mut(&server.zone) {
                ids.remove(&id);
                if ids.is_empty() {
                    zones.remove(&server.zone);
                }
            }
            if zones.is_empty() {
                self.servers_by_pool.remove(&server.pool);
            }
        }
    }

    /// The ids of `pool`'s servers in zone `only` if given, else in every zone but
    /// `except`: O(1) to start, O(1) per id, whatever the other pools and zones hold.
    pub(super) fn pool_servers<'a>(
        &'a self,
        pool: &str,
        only: Option<&'a str>,
        except: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Uuid> + 'a {
        self.servers_by_pool
            .get(pool)
            .into_iter()
            .flat_map(move |zones| {
                zones
                    .iter()
                    .filter(move |(zone, _)| {
                        only.is_none_or(|only| only == zone.as_str())
                            && except != Some(zone.as_str())
                    })
                    .flat_map(|(_, ids)| ids)
            })
    }

    /// A host name for server `id` that no other server has (host names are short, so a
    /// collision is possible, if unlikely).
    fn unique_hostname(&self, prefix: &str, id: Uuid) -> String {
        let mut candidate = hostname(prefix, id);
        while self
            .servers
            .values()
            .any(|e| e.server.hostname == candidate)
        {
            candidate = hostname(prefix, Uuid::new_v4());
        }
        candidate
    }

    /// The ids of AutoScale config `config`'s servers.
    pub(super) fn server_ids_of(&self, config: &str) -> impl Iterator<Item = &Uuid> {
        self.servers_by_config.get(config).into_iter().flatten()
    }
}

fn not_found(id: Uuid) -> BrokerError {
    BrokerError::NotFound {
        kind: "server",
        key: id.to_string(),
    }
}
