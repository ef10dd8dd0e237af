//! `/api/v1/pools`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use super::records::Pool;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
}

/// Every pool.
#[utoipa::path(get, path = "/pools", tag = "autoscale", security(("admin" = [])),
    responses((status = OK, body = Vec<Pool>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<Pool>> {
    Json(state.broker.pools().into_iter().map(Pool::from).collect())
}

/// Create a pool of servers.
#[utoipa::path(post, path = "/pools", tag = "autoscale", security(("admin" = [])), request_body = Pool,
    responses((status = CREATED, body = Pool), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(pool): JsonBody<Pool>,
) -> Result<(StatusCode, Json<Pool>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_pool(pool.into()).await?.into()),
    ))
}

/// One pool.
#[utoipa::path(get, path = "/pools/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "The pool's name")),
    responses((status = OK, body = Pool), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Pool>, ApiError> {
    Ok(Json(state.broker.pool(&name)?.into()))
}

/// Delete a pool no AutoScale config, workspace or server uses.
#[utoipa::path(delete, path = "/pools/{name}", tag = "autoscale", security(("admin" = [])),
    params(("name" = String, Path, description = "The pool's name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_pool(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
