//! The five routes of a named resource (`GET`/`POST` on the collection, `GET`/`PATCH`/`DELETE`
//! on `{name}`), each a thin handler over one broker operation, with its OpenAPI description.
//! `PATCH` bodies are JSON merge patches (RFC 7396).

/// Define `routes()` and the handlers of one named resource. Every token that reaches a
/// `#[utoipa::path]` attribute is passed as a token tree (`tt`), so the attribute sees plain
/// literals.
macro_rules! named_resource {
    (
        collection: $collection:tt,
        item: $item:tt,
        tag: $tag:tt,
        body: $body:ident,
        view: $view:ident,
        broker: { list: $list:ident, get: $get:ident, create: $create:ident, update: $update:ident, delete: $delete:ident },
        docs: { list: $list_doc:tt, get: $get_doc:tt, create: $create_doc:tt, update: $update_doc:tt, delete: $delete_doc:tt $(,)? },
    ) => {
        use axum::Json;
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use serde_json::Value;
        use utoipa_axum::router::OpenApiRouter;
        use utoipa_axum::routes;

        use $crate::api::AppState;
        use $crate::api::auth::Admin;
        use $crate::api::error::{ApiError, ErrorBody};
        use $crate::api::json::JsonBody;

        pub fn routes() -> OpenApiRouter<AppState> {
            OpenApiRouter::new()
                .routes(routes!(list, create))
                .routes(routes!(get, update, delete))
        }

        #[doc = $list_doc]
        #[utoipa::path(get, path = $collection, tag = $tag, security(("admin" = [])),
            responses((status = OK, body = Vec<$view>), (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<$view>> {
            Json(state.broker.$list())
        }

        #[doc = $create_doc]
        #[utoipa::path(post, path = $collection, tag = $tag, security(("admin" = [])), request_body = $body,
            responses((status = CREATED, body = $view), (status = BAD_REQUEST, body = ErrorBody),
                (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = CONFLICT, body = ErrorBody),
                (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn create(
            _: Admin,
            State(state): State<AppState>,
            JsonBody(body): JsonBody<$body>,
        ) -> Result<(StatusCode, Json<$view>), ApiError> {
            Ok((StatusCode::CREATED, Json(state.broker.$create(body).await?)))
        }

        #[doc = $get_doc]
        #[utoipa::path(get, path = $item, tag = $tag, security(("admin" = [])),
            params(("name" = String, Path, description = "Its name")),
            responses((status = OK, body = $view), (status = NOT_FOUND, body = ErrorBody),
                (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn get(
            _: Admin,
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> Result<Json<$view>, ApiError> {
            Ok(Json(state.broker.$get(&name)?))
        }

        #[doc = $update_doc]
        #[utoipa::path(patch, path = $item, tag = $tag, security(("admin" = [])),
            request_body(content = Object, description = "A JSON merge patch (RFC 7396): the fields to change; `null` clears an optional one"),
            params(("name" = String, Path, description = "Its name")),
            responses((status = OK, body = $view), (status = BAD_REQUEST, body = ErrorBody),
                (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
                (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn update(
            _: Admin,
            State(state): State<AppState>,
            Path(name): Path<String>,
            JsonBody(patch): JsonBody<Value>,
        ) -> Result<Json<$view>, ApiError> {
            Ok(Json(state.broker.$update(&name, &patch).await?))
        }

        #[doc = $delete_doc]
        #[utoipa::path(delete, path = $item, tag = $tag, security(("admin" = [])),
            params(("name" = String, Path, description = "Its name")),
            responses((status = NO_CONTENT), (status = NOT_FOUND, body = ErrorBody),
                (status = CONFLICT, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn delete(
            _: Admin,
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> Result<StatusCode, ApiError> {
            state.broker.$delete(&name).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

pub(crate) use named_resource;
