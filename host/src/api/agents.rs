//! `/api/v1/agents`: check-ins (agent token) and administration (admin token).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Admin, AgentAuth};
use super::error::{ApiError, ErrorBody};
use super::json::JsonBody;
use super::paging::{self, AgentPageParams, Paging};
use super::views::{AgentCheckinAnswer, AgentView};
use super::{AppState, ListenerZone};
use crate::broker::{AgentState, now_ms};
use crate::domain::agent::{AgentCheckin, AgentPatch};
use crate::domain::secret::Secret;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkin))
        .routes(routes!(list))
        .routes(routes!(get, update, delete))
        .routes(routes!(reset_credential))
}

/// The header in which an agent presents its credential at every check-in after its first.
pub const CREDENTIAL_HEADER: &str = "zonebroker-agent-credential";

fn view(state: &AppState, agent: AgentState) -> AgentView {
    AgentView::new(agent, now_ms(), state.broker.agent_timeout())
}

/// Parse an agent id from the path (a 404 for anything that is not a UUID).
pub fn agent_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no agent `{raw}`")))
}

/// An agent checks in: created or updated by host name, assigned this listener's zone.
///
/// The first check-in of a host name (or the first after an operator reset the agent's
/// credential) answers a `credential`, once; every later check-in of that agent must send it
/// in the `Zonebroker-Agent-Credential` header beside the agent token, or is refused (401).
#[utoipa::path(post, path = "/agents/checkin", tag = "agents", security(("agent" = [])), request_body = AgentCheckin,
    params(("Zonebroker-Agent-Credential" = Option<String>, Header,
        description = "The credential the agent's first check-in answered; required once it has one")),
    responses((status = OK, body = AgentCheckinAnswer), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
        (status = UNAUTHORIZED, description = "Wrong agent token, or the agent's credential missing or wrong", body = ErrorBody)))]
async fn checkin(
    _: AgentAuth,
    State(state): State<AppState>,
    Extension(zone): Extension<ListenerZone>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AgentCheckin>,
) -> Result<Json<AgentCheckinAnswer>, ApiError> {
    let credential = match headers.get(CREDENTIAL_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "agent_credential_wrong",
                "wrong agent credential (`Zonebroker-Agent-Credential`)",
            )
        })?),
    };
    let checked_in = state
        .broker
        .check_in(&zone.0, body, credential.map(str::trim))
        .await?;
    Ok(Json(AgentCheckinAnswer {
        agent: view(&state, checked_in.state),
        // The one answer that shows it.
        credential: checked_in.credential.map(Secret::into_exposed),
    }))
}

/// Forget an agent's credential: its next check-in takes a new one, and the old one is
/// refused from then on (an agent that lost its credential, or a host re-installed).
#[utoipa::path(post, path = "/agents/{id}/reset-credential", tag = "agents", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses((status = OK, body = AgentView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn reset_credential(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = state.broker.reset_agent_credential(agent_id(&id)?).await?;
    Ok(Json(view(&state, agent)))
}

/// Every agent, in the order of their ids; with `limit`, a page of them (see `Link`).
#[utoipa::path(get, path = "/agents", tag = "agents", security(("admin" = [])), params(AgentPageParams),
    responses((status = OK, body = Vec<AgentView>,
            headers(("Link" = String, description = "With `limit`, when more agents follow: `<...?limit=N&after=CURSOR>; rel=\"next\"`"))),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn list(_: Admin, State(state): State<AppState>, paging: Paging<Uuid>) -> Response {
    let (agents, next) = state.broker.agents(paging.after, paging.limit);
    let views: Vec<AgentView> = agents.into_iter().map(|a| view(&state, a)).collect();
    paging::answer("/agents", paging.limit, views, next)
}

/// One agent.
#[utoipa::path(get, path = "/agents/{id}", tag = "agents", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses((status = OK, body = AgentView), (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = state.broker.agent(agent_id(&id)?)?;
    Ok(Json(view(&state, agent)))
}

/// Enable or disable an agent (enabling approves a `pending` one), or override its reported
/// cores or memory.
#[utoipa::path(patch, path = "/agents/{id}", tag = "agents", security(("admin" = [])), request_body = AgentPatch,
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses((status = OK, body = AgentView), (status = BAD_REQUEST, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<AgentPatch>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = state.broker.patch_agent(agent_id(&id)?, patch).await?;
    Ok(Json(view(&state, agent)))
}

/// Forget an agent that runs no sessions.
#[utoipa::path(delete, path = "/agents/{id}", tag = "agents", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The agent's id")),
    responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_agent(agent_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
