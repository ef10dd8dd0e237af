//! `/api/v1/zones`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::broker::ShadowView;
use crate::domain::zone::{Zone, ZonePatch, ZoneSpec};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(shadow))
        .routes(routes!(promote_shadow))
}

/// Every zone.
#[utoipa::path(get, path = "/zones", tag = "zones", security(("admin" = [])),
    responses((status = OK, body = Vec<Zone>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<Zone>> {
    Json(state.broker.zones())
}

/// Create a zone; settings left out take their defaults.
#[utoipa::path(post, path = "/zones", tag = "zones", security(("admin" = [])), request_body = ZoneSpec,
    responses((status = CREATED, body = Zone), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<ZoneSpec>,
) -> Result<(StatusCode, Json<Zone>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_zone(spec).await?),
    ))
}

/// One zone.
#[utoipa::path(get, path = "/zones/{name}", tag = "zones", security(("admin" = [])),
    params(("name" = String, Path, description = "The zone's name")),
    responses((status = OK, body = Zone), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Zone>, ApiError> {
    Ok(Json(state.broker.zone(&name)?))
}

/// Change some of a zone's settings.
#[utoipa::path(patch, path = "/zones/{name}", tag = "zones", security(("admin" = [])), request_body = ZonePatch,
    params(("name" = String, Path, description = "The zone's name")),
    responses((status = OK, body = Zone), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<ZonePatch>,
) -> Result<Json<Zone>, ApiError> {
    Ok(Json(state.broker.update_zone(&name, patch).await?))
}

/// What the zone's shadow strategy did in this process: calls, agreement with the zone's
/// strategy on the first choice, faults, call times and the last 100 disagreements.
#[utoipa::path(get, path = "/zones/{name}/shadow", tag = "zones", security(("admin" = [])),
    params(("name" = String, Path, description = "The zone's name")),
    responses((status = OK, body = ShadowView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn shadow(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ShadowView>, ApiError> {
    Ok(Json(state.broker.zone_shadow(&name)?))
}

/// Make the zone's shadow strategy its strategy; the zone is left without a shadow.
#[utoipa::path(post, path = "/zones/{name}/shadow/promote", tag = "zones", security(("admin" = [])),
    params(("name" = String, Path, description = "The zone's name")),
    responses((status = OK, body = Zone), (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "The zone has no shadow strategy", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn promote_shadow(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Zone>, ApiError> {
    Ok(Json(state.broker.promote_shadow(&name).await?))
}

/// Delete a zone without agents, images, servers or a listener. `default` always exists.
#[utoipa::path(delete, path = "/zones/{name}", tag = "zones", security(("admin" = [])),
    params(("name" = String, Path, description = "The zone's name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_zone(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
