//! `/api/v1/sessions`: request a session (placement), list, end.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use super::paging::{self, Paging, SessionPageParams};
use super::views::SessionView;
use super::{AppState, ListenerZone};
use crate::domain::session::{SessionPosition, SessionRequest};
use crate::domain::zone::RequestOrigin;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(rdp_file))
}

fn session_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no session `{raw}`")))
}

/// Place a session of an image (on an agent) or of a workspace (a container workspace on an
/// agent, a pool workspace on a server of its pool) for a user, in the zone of the listener
/// the request came in on.
#[utoipa::path(post, path = "/sessions", tag = "sessions", security(("admin" = [])), request_body = SessionRequest,
    responses((status = CREATED, body = SessionView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, description = "Unknown or disabled image or workspace", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "No agent or server has room (`no_capacity`)", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn create(
    _: Admin,
    State(state): State<AppState>,
    Extension(zone): Extension<ListenerZone>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SessionRequest>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let origin = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(RequestOrigin::from_host_header)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_host",
                "the request needs a valid `Host` header",
            )
            .field("Host")
        })?;
    let session = state
        .broker
        .request_session(&zone.0, &origin, request)
        .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Every session, oldest first; with `limit`, a page of them (see `Link`).
#[utoipa::path(get, path = "/sessions", tag = "sessions", security(("admin" = [])), params(SessionPageParams),
    responses((status = OK, body = Vec<SessionView>,
            headers(("Link" = String, description = "With `limit`, when more sessions follow: `<...?limit=N&after=CURSOR>; rel=\"next\"`"))),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging<SessionPosition>,
) -> axum::response::Response {
    let (sessions, next) = match state.broker.sessions(paging.after, paging.limit).await {
        Ok(page) => page,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let views: Vec<SessionView> = sessions.into_iter().map(SessionView::from).collect();
    paging::answer("/sessions", paging.limit, views, next)
}

/// One session.
#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The session's id")),
    responses((status = OK, body = SessionView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(state.broker.session(session_id(&id)?).await?.into()))
}

/// The `.rdp` file of a `local-client` pool session: the server's address, the user name
/// and the zone's RDP gateway, for the user's own RDP client.
#[utoipa::path(get, path = "/sessions/{id}/rdp", tag = "sessions", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The session's id")),
    responses((status = OK, description = "The RDP connection file", content_type = "application/x-rdp", body = String),
        (status = NOT_FOUND, description = "No such session, or not a `local-client` session", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn rdp_file(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = state.broker.session(session_id(&id)?).await?;
    let rdp = session.rdp.ok_or_else(|| {
        ApiError::not_found(format!(
            "session `{id}` is not a `local-client` session: it has no .rdp file"
        ))
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-rdp".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.rdp\"", session.id),
            ),
        ],
        rdp.render(),
    ))
}

/// End a session and free what it reserved.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The session's id")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_session(session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
