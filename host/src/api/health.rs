//! `GET /healthz`: liveness, without authentication.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, ListenerZone};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// Liveness of one listener.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when answered.
    pub status: &'static str,
    /// The zone this listener manages.
    pub zone: String,
    /// Installed plugins.
    pub plugins: usize,
    pub version: &'static str,
}

/// Liveness, and the zone of the listener that answered.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = OK, body = Health)))]
async fn healthz(
    State(state): State<AppState>,
    Extension(zone): Extension<ListenerZone>,
) -> Json<Health> {
    Json(Health {
        status: "ok",
        zone: zone.0.to_string(),
        plugins: state.broker.registry().list().len(),
        version: env!("CARGO_PKG_VERSION"),
    })
}
