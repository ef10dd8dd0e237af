//! `/api/v1/autoscale-configs`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::broker::AutoScaleConfigView;
use crate::domain::autoscale::AutoScaleConfig;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// Every AutoScale config, with its status.
#[utoipa::path(get, path = "/autoscale-configs", tag = "autoscale", security(("admin" = [])),
    responses((status = OK, body = Vec<AutoScaleConfigView>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<AutoScaleConfigView>> {
    Json(state.broker.autoscale_configs())
}

/// Create an AutoScale config. Its startup script is rendered with sample values: an unknown variable or a lone brace is refused (422, `startup_script`, with the line and column).
#[utoipa::path(post, path = "/autoscale-configs", tag = "autoscale", security(("admin" = [])), request_body = AutoScaleConfig,
    responses((status = CREATED, body = AutoScaleConfigView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AutoScaleConfig>,
) -> Result<(StatusCode, Json<AutoScaleConfigView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_autoscale_config(body).await?),
    ))
}

/// One AutoScale config, with its status.
#[utoipa::path(get, path = "/autoscale-configs/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = AutoScaleConfigView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AutoScaleConfigView>, ApiError> {
    Ok(Json(state.broker.autoscale_config(&name)?))
}

/// Change an AutoScale config (a password left out keeps its value).
#[utoipa::path(patch, path = "/autoscale-configs/{name}", tag = "autoscale", security(("admin" = [])),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396): the fields to change; `null` clears an optional one"),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = AutoScaleConfigView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Json<AutoScaleConfigView>, ApiError> {
    Ok(Json(
        state.broker.update_autoscale_config(&name, &patch).await?,
    ))
}

/// Delete an AutoScale config that has no servers left (disable it and let the reconcile loop drain them first).
#[utoipa::path(delete, path = "/autoscale-configs/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_autoscale_config(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
