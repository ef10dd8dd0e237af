//! `/api/v1/vm-provider-configs`.

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
use crate::domain::autoscale::VmProviderConfig;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// Every VM provider config (secret settings left out).
#[utoipa::path(get, path = "/vm-provider-configs", tag = "autoscale", security(("admin" = [])),
    responses((status = OK, body = Vec<VmProviderConfig>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<VmProviderConfig>> {
    Json(state.broker.provider_configs())
}

/// Create a VM provider config; the provider plugin's `validate` checks the settings. Secret settings are write-only.
#[utoipa::path(post, path = "/vm-provider-configs", tag = "autoscale", security(("admin" = [])), request_body = VmProviderConfig,
    responses((status = CREATED, body = VmProviderConfig), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<VmProviderConfig>,
) -> Result<(StatusCode, Json<VmProviderConfig>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_provider_config(body).await?),
    ))
}

/// One VM provider config (secret settings left out).
#[utoipa::path(get, path = "/vm-provider-configs/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = VmProviderConfig), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VmProviderConfig>, ApiError> {
    Ok(Json(state.broker.provider_config(&name)?))
}

/// Change a VM provider config; secret settings left out keep their values. Every AutoScale config using it sees the change.
#[utoipa::path(patch, path = "/vm-provider-configs/{name}", tag = "autoscale", security(("admin" = [])),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396): the fields to change; `null` clears an optional one"),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = VmProviderConfig), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Json<VmProviderConfig>, ApiError> {
    Ok(Json(
        state.broker.update_provider_config(&name, &patch).await?,
    ))
}

/// Delete a VM provider config no AutoScale config uses.
#[utoipa::path(delete, path = "/vm-provider-configs/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_provider_config(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
