//! `GET /api/v1/installation`: who this broker is in a shared cloud account.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::Admin;
use super::error::ErrorBody;
use crate::autoscale::reconciler::TAG_INSTALLATION;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(installation))
}

/// This installation.
#[derive(Serialize, ToSchema)]
pub struct Installation {
    /// Random, made once with the data directory.
    pub id: Uuid,
    /// The tag every VM this installation creates carries (`name` = `value`); the broker
    /// never destroys a VM without it. Scope cloud permissions with it (for example an IAM
    /// condition on `ec2:ResourceTag/zonebroker:installation`).
    pub vm_tag: VmTag,
    pub version: &'static str,
}

/// A tag.
#[derive(Serialize, ToSchema)]
pub struct VmTag {
    pub name: &'static str,
    pub value: String,
}

/// This installation's id and the tag its VMs carry.
#[utoipa::path(get, path = "/installation", tag = "meta", security(("admin" = [])),
    responses((status = OK, body = Installation), (status = UNAUTHORIZED, body = ErrorBody)))]
async fn installation(_: Admin, State(state): State<AppState>) -> Json<Installation> {
    let id = state.broker.store().installation_id();
    Json(Installation {
        id,
        vm_tag: VmTag {
            name: TAG_INSTALLATION,
            value: id.to_string(),
        },
        version: env!("CARGO_PKG_VERSION"),
    })
}
