//! `/api/v1/workspaces`.

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
use crate::domain::autoscale::Workspace;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// Every workspace.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces", security(("admin" = [])),
    responses((status = OK, body = Vec<Workspace>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<Workspace>> {
    Json(state.broker.workspaces())
}

/// Create a workspace: a `container` workspace runs an image on an agent; a `pool` workspace takes a slot on a server of a pool.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces", security(("admin" = [])), request_body = Workspace,
    responses((status = CREATED, body = Workspace), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Workspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_workspace(body).await?),
    ))
}

/// One workspace.
#[utoipa::path(get, path = "/workspaces/{name}", tag = "workspaces", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = Workspace), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(state.broker.workspace(&name)?))
}

/// Change a workspace.
#[utoipa::path(patch, path = "/workspaces/{name}", tag = "workspaces", security(("admin" = [])),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396): the fields to change; `null` clears an optional one"),
    params(("name" = String, Path, description = "Its name")),
    responses((status = OK, body = Workspace), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(state.broker.update_workspace(&name, &patch).await?))
}

/// Delete a workspace no session runs.
#[utoipa::path(delete, path = "/workspaces/{name}", tag = "workspaces", security(("admin" = [])),
    params(("name" = String, Path, description = "Its name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_workspace(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
