//! `/api/v1/servers`: the hosts of pool sessions, and the check-in of new VMs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::{Admin, CheckinToken};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use crate::broker::{Removal, ServerCheckin, ServerView};
use crate::domain::autoscale::StaticServer;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(bootstrap))
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

#[derive(Deserialize, IntoParams)]
struct RemoveParams {
    /// End the server's sessions now instead of waiting for them.
    #[serde(default)]
    force: bool,
}

/// Remove a server. An auto-scaled server is drained (202): it takes no new session, and is
/// destroyed (VM, directory object, record) once its sessions end; `force=true` ends them
/// now. A static server is removed at once (204) if it runs no session (409 otherwise,
/// unless `force=true`).
#[utoipa::path(delete, path = "/servers/{id}", tag = "servers", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The server's id"), RemoveParams),
    responses((status = ACCEPTED, description = "Draining: destroyed once its sessions end", body = ServerView),
        (status = NO_CONTENT, description = "A static server, removed"),
        (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<RemoveParams>,
) -> Result<Response, ApiError> {
    let id = server_id(&id)?;
    Ok(match state.broker.remove_server(id, params.force).await? {
        Removal::Removed => StatusCode::NO_CONTENT.into_response(),
        Removal::Draining(view) => (StatusCode::ACCEPTED, Json(*view)).into_response(),
    })
}

/// A booting VM's first call, with its `checkin_jwt`: the server's variables (secrets
/// included: `connection_password`, `ad_join_credential`; the names are Kasm's), answered
/// once. As JSON, or with `Accept: text/plain` as lines `name=BASE64(value)` for shell
/// scripts. The check-in is accepted only after it.
#[utoipa::path(post, path = "/servers/bootstrap", tag = "servers", security(("checkin" = [])),
    responses((status = OK, description = "The variables, by name", content(
            (BTreeMap<String, String> = "application/json"),
            (String = "text/plain"))),
        (status = UNAUTHORIZED, description = "A forged, expired, used or unknown token", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "The directory cannot set the join credential now: retry with the same token", body = ErrorBody)))]
async fn bootstrap(
    CheckinToken(token): CheckinToken,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let variables = state.bootstrap.bootstrap(&token).await?;
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.contains("text/plain") && !accept.contains("application/json")
        });
    Ok(if wants_text {
        let base64 = base64::engine::general_purpose::STANDARD;
        let lines: String = variables
            .iter()
            .map(|(name, value)| format!("{name}={}\n", base64.encode(value)))
            .collect();
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], lines).into_response()
    } else {
        Json(variables.into_iter().collect::<BTreeMap<String, String>>()).into_response()
    })
}

/// A new VM checks in with its `checkin_jwt` (from its startup script) and says where it
/// takes connections; its server starts taking sessions. Only after the bootstrap; a token
/// checks in once, for its own server, until it expires.
#[utoipa::path(post, path = "/servers/checkin", tag = "servers", security(("checkin" = [])), request_body = ServerCheckin,
    responses((status = OK, body = ServerView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
        (status = CONFLICT, description = "The server has not fetched its variables yet (bootstrap first)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "A forged, expired, used or unknown token", body = ErrorBody)))]
async fn checkin(
    CheckinToken(token): CheckinToken,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ServerCheckin>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(state.broker.server_checkin(&token, body).await?))
}
