//! `/api/v1/images`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use super::records::Image;
use crate::domain::image::ImagePatch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
}

/// Every image.
#[utoipa::path(get, path = "/images", tag = "images", security(("admin" = [])),
    responses((status = OK, body = Vec<Image>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<Image>> {
    Json(state.broker.images().into_iter().map(Image::from).collect())
}

/// Create an image.
#[utoipa::path(post, path = "/images", tag = "images", security(("admin" = [])), request_body = Image,
    responses((status = CREATED, body = Image), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(image): JsonBody<Image>,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.broker.create_image(image.into()).await?.into()),
    ))
}

/// One image.
#[utoipa::path(get, path = "/images/{name}", tag = "images", security(("admin" = [])),
    params(("name" = String, Path, description = "The image's name")),
    responses((status = OK, body = Image), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Image>, ApiError> {
    Ok(Json(state.broker.image(&name)?.into()))
}

/// Change an image.
#[utoipa::path(patch, path = "/images/{name}", tag = "images", security(("admin" = [])), request_body = ImagePatch,
    params(("name" = String, Path, description = "The image's name")),
    responses((status = OK, body = Image), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<ImagePatch>,
) -> Result<Json<Image>, ApiError> {
    Ok(Json(state.broker.update_image(&name, patch).await?.into()))
}

/// Delete an image no session runs.
#[utoipa::path(delete, path = "/images/{name}", tag = "images", security(("admin" = [])),
    params(("name" = String, Path, description = "The image's name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
