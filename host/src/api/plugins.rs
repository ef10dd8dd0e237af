//! `/api/v1/plugins`: the installed plugins and their active versions.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::auth::Admin;
use crate::plugins::PluginSummary;

pub fn routes() -> Router<AppState> {
    Router::new().route("/plugins", get(list))
}

/// Every plugin: name, kind, built-in flag and active version (sha256).
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<PluginSummary>> {
    Json(state.registry.list())
}
