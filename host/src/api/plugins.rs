//! `/api/v1/plugins`: upload versions, activate and roll back, delete; the installed plugins
//! with their versions, history and users.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::broker::{PluginView, UploadView};
use crate::domain::plugin::PluginLimits;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, delete_plugin))
        .routes(routes!(upload))
        .routes(routes!(activate))
        .routes(routes!(delete_version))
}

/// Who made a change: the admin credential and the client's address.
fn actor(connection: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    match connection {
        Some(Extension(ConnectInfo(addr))) => format!("admin@{}", addr.ip()),
        None => "admin".to_string(),
    }
}

/// Every plugin: built-ins and uploads, with their versions and what uses them.
#[utoipa::path(get, path = "/plugins", tag = "plugins", security(("admin" = [])),
    responses((status = OK, body = Vec<PluginView>), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<PluginView>> {
    Json(state.broker.plugins())
}

/// One plugin: its versions, which is active, the activation history, which zones use it.
#[utoipa::path(get, path = "/plugins/{name}", tag = "plugins", security(("admin" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = OK, body = PluginView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(state.broker.plugin(&name)?))
}

#[derive(Deserialize, IntoParams)]
struct UploadParams {
    /// Make the uploaded version the active one.
    #[serde(default)]
    activate: bool,
    /// This version's memory cap in bytes, instead of its kind's (up to `--max-plugin-memory`).
    #[param(minimum = 1)]
    memory_bytes: Option<u64>,
    /// This version's CPU budget in fuel units, instead of its kind's (up to `--max-plugin-fuel`).
    #[param(minimum = 1)]
    fuel: Option<u64>,
    /// This version's call deadline in milliseconds, instead of its kind's (up to
    /// `--max-plugin-deadline`).
    #[param(minimum = 1)]
    deadline_ms: Option<u64>,
}

impl UploadParams {
    fn limits(&self) -> PluginLimits {
        PluginLimits {
            memory_bytes: self.memory_bytes,
            fuel: self.fuel,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// Upload a component as a version of plugin `name` (created if new). The server checks it
/// (a component of a known world, allowed imports only, the plugin's kind) and makes a smoke
/// call within the plugin's budget before storing it. The same bytes twice: 200, unchanged.
#[utoipa::path(post, path = "/plugins/{name}/versions", tag = "plugins", security(("admin" = [])),
    params(("name" = String, Path, description = "The plugin's name"), UploadParams),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses((status = CREATED, body = UploadView), (status = OK, description = "Already a version", body = UploadView),
        (status = PAYLOAD_TOO_LARGE, body = ErrorBody), (status = UNSUPPORTED_MEDIA_TYPE, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "Not a component, unknown world, wrong kind, forbidden import or failed smoke call", body = ErrorBody),
        (status = CONFLICT, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody),
        (status = INTERNAL_SERVER_ERROR, description = "An internal failure (its cause is logged)", body = ErrorBody)))]
async fn upload(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let Query(params) = Query::<UploadParams>::try_from_uri(&uri).map_err(|rejection| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            rejection.body_text(),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.trim().eq_ignore_ascii_case("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the component as the body with `Content-Type: application/wasm`",
        ));
    }
    let limit = state.max_plugin_size;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the component is larger than the limit of {limit} bytes (--max-plugin-size)"),
        )
    })?;
    let upload = state
        .broker
        .upload_plugin(
            &name,
            bytes.to_vec(),
            params.limits(),
            params.activate,
            &actor(connection),
        )
        .await?;
    let status = if upload.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(upload)))
}

/// The body of `POST /plugins/{name}/activate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Activate {
    /// The sha256 of the version to make active (a newer one, or an older one to roll back).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    version: String,
    /// Limits to set for this version, over the ones it has (each up to the server's
    /// maximum); fields left out keep their value.
    #[serde(default)]
    limits: PluginLimits,
}

/// Make a version active, or roll back to an older one. Atomic: calls in flight finish on
/// the version they started with; the next call uses the new one.
#[utoipa::path(post, path = "/plugins/{name}/activate", tag = "plugins", security(("admin" = [])), request_body = Activate,
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = OK, body = PluginView), (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, body = ErrorBody), (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody),
        (status = INTERNAL_SERVER_ERROR, description = "An internal failure (its cause is logged)", body = ErrorBody)))]
async fn activate(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(body): JsonBody<Activate>,
) -> Result<Json<PluginView>, ApiError> {
    let plugin = state
        .broker
        .activate_plugin(&name, &body.version, body.limits, &actor(connection))
        .await?;
    Ok(Json(plugin))
}

/// Delete a version that is not active.
#[utoipa::path(delete, path = "/plugins/{name}/versions/{version}", tag = "plugins", security(("admin" = [])),
    params(("name" = String, Path, description = "The plugin's name"), ("version" = String, Path, description = "The version's sha256")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete_version(
    _: Admin,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_plugin_version(&name, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a plugin and all its versions: refused while a zone uses it, and for built-ins.
#[utoipa::path(delete, path = "/plugins/{name}", tag = "plugins", security(("admin" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete_plugin(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_plugin(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
