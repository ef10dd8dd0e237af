//! `GET /healthz`: liveness, without authentication.

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{AppState, ListenerZone};

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz(
    State(state): State<AppState>,
    Extension(zone): Extension<ListenerZone>,
) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "zone": &*zone.0,
        "plugins": state.registry.list().len(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
