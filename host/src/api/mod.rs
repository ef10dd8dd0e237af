//! The HTTP API: routers assembled from one small module per resource, auth as extractors,
//! one error type ([`ApiError`]) that every handler returns, and an OpenAPI document
//! generated from the handlers themselves.
//!
//! **Architecture Invariant:** handlers parse, authorise and translate; the rules live in
//! `domain` and `placement`, the operations in `broker`. CPU-heavy work never runs on the
//! async runtime's threads unannounced.

mod agents;
pub mod auth;
mod autoscale_configs;
pub mod error;
mod health;
mod images;
mod installation;
pub mod json;
mod ldap_configs;
mod metrics;
mod openapi;
mod plugins;
mod pools;
mod provider_configs;
mod resource;
mod servers;
mod sessions;
mod views;
mod workspaces;
mod zones;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Token;
pub use error::ApiError;
pub use openapi::openapi;

use crate::broker::Broker;

/// What every handler can reach. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct AppState {
    /// The server's state and operations.
    pub broker: Arc<Broker>,
    /// Admin calls; compared in constant time by [`auth::Admin`].
    pub admin_token: Token,
    /// Agent check-ins; compared in constant time by [`auth::AgentAuth`].
    pub agent_token: Token,
    /// The largest plugin component an upload may carry, in bytes.
    pub max_plugin_size: usize,
    /// Answers booting VMs' bootstraps (their variables, secrets included, once).
    pub bootstrap: Arc<crate::autoscale::Bootstrapper>,
}

/// The deployment zone a listener manages: every request through it belongs to that zone.
#[derive(Clone, Debug)]
pub struct ListenerZone(pub Arc<str>);

/// Every route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(zones::routes())
        .merge(agents::routes())
        .merge(images::routes())
        .merge(sessions::routes())
        .merge(plugins::routes())
        .merge(pools::routes())
        .merge(provider_configs::routes())
        .merge(autoscale_configs::routes())
        .merge(servers::routes())
        .merge(workspaces::routes())
        .merge(ldap_configs::routes())
        .merge(installation::routes())
        .merge(openapi::routes());
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::routes())
        .merge(metrics::routes())
        .nest("/api/v1", v1)
}

/// The full router for one listener of `zone`.
pub fn router(state: AppState, zone: &str) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            ListenerZone(zone.into()),
            trace_request,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// One span per request (method, route, zone), one event when it ends (status, latency).
async fn trace_request(
    State(zone): State<ListenerZone>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        zone = &*zone.0,
    );
    request.extensions_mut().insert(zone);
    let start = Instant::now();
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        let elapsed_us = start.elapsed().as_micros() as u64;
        if response.status().is_server_error() {
            tracing::warn!(status, elapsed_us, "request failed");
        } else {
            tracing::debug!(status, elapsed_us, "request done");
        }
        response
    }
    .instrument(span)
    .await
}
