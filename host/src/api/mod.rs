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
pub mod paging;
pub mod patch;
mod plugins;
mod pools;
mod provider_configs;
pub mod records;
mod resource;
mod servers;
mod sessions;
mod views;
mod workspaces;
mod zones;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
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
    /// How long a request may take, from its headers to the end of its answer.
    pub request_timeouts: RequestTimeouts,
    /// Answers booting VMs' bootstraps (their variables, secrets included, once).
    pub bootstrap: Arc<crate::autoscale::Bootstrapper>,
}

/// How long a request may take, body and handling included, before it is answered 408.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeouts {
    /// Every request but plugin uploads.
    pub request: Duration,
    /// A plugin upload: a large component over a slow link, then its compilation.
    pub upload: Duration,
}

impl Default for RequestTimeouts {
    fn default() -> Self {
        RequestTimeouts {
            request: Duration::from_secs(60),
            upload: Duration::from_secs(600),
        }
    }
}

/// The route of plugin uploads, which get [`RequestTimeouts::upload`].
const UPLOAD_ROUTE: &str = "/api/v1/plugins/{name}/versions";

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
    let timeouts = state.request_timeouts;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // JSON bodies; plugin uploads read theirs with `--max-plugin-size`.
        .layer(DefaultBodyLimit::max(json::MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(timeouts, time_limit))
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

/// Answer 408 when a request (reading its body included) takes longer than its limit.
async fn time_limit(
    State(timeouts): State<RequestTimeouts>,
    request: Request,
    next: Next,
) -> Response {
    let upload = request.method() == Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|path| path.as_str() == UPLOAD_ROUTE);
    let limit = if upload {
        timeouts.upload
    } else {
        timeouts.request
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request took longer than {} to send and answer",
                    crate::domain::duration::display(limit)
                ),
            )
            .into_response()
        }
    }
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
