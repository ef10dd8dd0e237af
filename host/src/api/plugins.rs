//! `/api/v1/plugins`: the installed plugins and their active versions.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::ErrorBody;
use crate::plugins::PluginSummary;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Every plugin: name, kind, built-in flag and active version (sha256).
#[utoipa::path(get, path = "/plugins", tag = "plugins", security(("admin" = [])),
    responses((status = OK, body = Vec<PluginSummary>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<PluginSummary>> {
    Json(state.broker.registry().list())
}
