//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the types' `ToSchema` derives, served at `/api/v1/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The document's header and security schemes; paths are added by the routers.
pub fn base() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("zonebroker")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Broker sessions across deployment zones. Admin calls take \
                     `Authorization: Bearer <admin token>`; agent check-ins take the agent \
                     registration token; servers check in with their `checkin_jwt`. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    for name in ["admin", "agent", "checkin"] {
        components.add_security_scheme(
            name,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    doc
}

/// The complete document.
pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = super::routes().split_for_parts().1;
        document_body_errors(&mut doc);
        close_request_bodies(&mut doc);
        doc
    })
}

/// Every operation that takes a body can also answer 413 (too large) and 415 (wrong content
/// type), and one with a JSON body 400 (not valid JSON), from the body extractor rather than
/// the handler.
fn document_body_errors(doc: &mut OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = || {
        ResponseBuilder::new()
            .description("The body is too large, of the wrong content type, or not valid JSON")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.post, &mut item.patch, &mut item.put]
            .into_iter()
            .flatten()
        {
            let Some(body) = &operation.request_body else {
                continue;
            };
            let json = match body {
                utoipa::openapi::RefOr::T(body) => body.content.contains_key("application/json"),
                utoipa::openapi::RefOr::Ref(_) => true,
            };
            for status in ["413", "415"].into_iter().chain(json.then_some("400")) {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error().into());
            }
        }
    }
}

/// Every request body's schema refuses properties it does not name, as the body extractor
/// does ([`super::json::strict`]); the types themselves tolerate unknown fields, since they
/// are also the records read back from the store.
fn close_request_bodies(doc: &mut OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let mut bodies = Vec::new();
    for item in doc.paths.paths.values() {
        for operation in [&item.post, &item.patch, &item.put].into_iter().flatten() {
            let Some(RefOr::T(body)) = &operation.request_body else {
                continue;
            };
            for content in body.content.values() {
                if let RefOr::T(content) = content
                    && let Some(RefOr::Ref(schema)) = &content.schema
                {
                    bodies.push(
                        schema
                            .ref_location
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in bodies {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = OK, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn document() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| openapi().to_json().expect("the document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}
