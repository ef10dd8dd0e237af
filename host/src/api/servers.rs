//! `/api/v1/servers`: the hosts of pool sessions, and the check-in of new VMs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, CheckinToken};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::broker::{ServerCheckin, ServerView};
use crate::domain::autoscale::StaticServer;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(checkin))
}

fn server_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no server `{raw}`")))
}

/// Every server, static and auto-scaled.
#[utoipa::path(get, path = "/servers", tag = "servers", security(("admin" = [])),
    responses((status = OK, body = Vec<ServerView>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<ServerView>> {
    Json(state.broker.servers())
}

/// Add a static server to a pool (running at once; AutoScale never destroys it).
#[utoipa::path(post, path = "/servers", tag = "servers", security(("admin" = [])), request_body = StaticServer,
    responses((status = CREATED, body = ServerView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<StaticServer>,
) -> Result<(StatusCode, Json<ServerView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_static_server(spec).await?),
    ))
}

/// One server.
#[utoipa::path(get, path = "/servers/{id}", tag = "servers", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The server's id")),
    responses((status = OK, body = ServerView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(state.broker.server(server_id(&id)?)?))
}

/// Remove a static server without sessions (auto-scaled servers belong to their config).
#[utoipa::path(delete, path = "/servers/{id}", tag = "servers", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The server's id")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_static_server(server_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new VM checks in with its `checkin_jwt` (from its startup script) and says where it
/// takes connections; its server starts taking sessions. A token works once, for its own
/// server, until it expires.
#[utoipa::path(post, path = "/servers/checkin", tag = "servers", security(("checkin" = [])), request_body = ServerCheckin,
    responses((status = OK, body = ServerView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
        (status = UNAUTHORIZED, description = "A forged, expired, used or unknown token", body = ErrorBody)))]
async fn checkin(
    CheckinToken(token): CheckinToken,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ServerCheckin>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(state.broker.server_checkin(&token, body).await?))
}
