//! The five routes of a named resource (`GET`/`POST` on the collection, `GET`/`PATCH`/`DELETE`
//! on `{name}`), each a thin handler over one broker operation, with its OpenAPI description.
//! `PATCH` bodies are JSON merge patches (RFC 7396).
//!
//! A `versioned: yes` resource (its view implements [`Versioned`]) answers its `GET` and
//! `PATCH` with an `ETag` (`"<version>"`, strong) and honours `If-Match` on `PATCH`: 412
//! `precondition_failed` when the record is no longer at a version it names, 400 for a
//! header that is not a list of entity tags. Without `If-Match` the broker still applies
//! the patch atomically to the latest record.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::error::ApiError;

/// A view of a record whose writes compare-and-swap a version.
pub trait Versioned {
    fn version(&self) -> u64;
}

/// The `ETag` of a record at `version`: strong, quoted.
pub fn etag(version: u64) -> [(header::HeaderName, HeaderValue); 1] {
    let value =
        HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a header value");
    [(header::ETAG, value)]
}

/// The versions `If-Match` names: `None` without the header or for `*` (any existing
/// record); weak tags and tags that are no version of ours are kept out (they never match
/// under the strong comparison `If-Match` uses), so a list of only those matches nothing.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Vec<u64>>, ApiError> {
    let malformed = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
            "If-Match must be `*` or a list of entity tags such as `\"3\"`",
        )
        .field("If-Match")
    };
    let mut versions = Vec::new();
    let mut any_header = false;
    for value in headers.get_all(header::IF_MATCH) {
        any_header = true;
        let value = value.to_str().map_err(|_| malformed())?;
        for tag in value.split(',').map(str::trim) {
            if tag == "*" {
                return Ok(None);
            }
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .filter(|inner| !inner.contains('"'))
                .ok_or_else(malformed)?;
            if weak {
                continue;
            }
            if let Ok(version) = opaque.parse::<u64>() {
                versions.push(version);
            }
        }
    }
    Ok(any_header.then_some(versions))
}

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
        versioned: $versioned:ident,
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
            Json(state.broker.$list().into_iter().map(<$view>::from).collect())
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
            let created = state.broker.$create(body.into()).await?;
            Ok((StatusCode::CREATED, Json(<$view>::from(created))))
        }

        $crate::api::resource::named_resource!(@get_update $versioned, $item, $tag, $body, $view, $get, $update, $get_doc, $update_doc);

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
    (@get_update yes, $item:tt, $tag:tt, $body:ident, $view:ident, $get:ident, $update:ident, $get_doc:tt, $update_doc:tt) => {
        #[doc = $get_doc]
        #[utoipa::path(get, path = $item, tag = $tag, security(("admin" = [])),
            params(("name" = String, Path, description = "Its name")),
            responses((status = OK, body = $view,
                    headers(("ETag" = String, description = "Its version, strong and quoted (`\"3\"`): send it in `If-Match` to update only this version"))),
                (status = NOT_FOUND, body = ErrorBody), (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn get(
            _: Admin,
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> Result<impl axum::response::IntoResponse, ApiError> {
            use $crate::api::resource::Versioned as _;
            let view = <$view>::from(state.broker.$get(&name)?);
            Ok(($crate::api::resource::etag(view.version()), Json(view)))
        }

        #[doc = $update_doc]
        #[utoipa::path(patch, path = $item, tag = $tag, security(("admin" = [])),
            request_body(content = Object, description = "A JSON merge patch (RFC 7396): the fields to change; `null` clears an optional one"),
            params(("name" = String, Path, description = "Its name"),
                ("If-Match" = Option<String>, Header, description = "Apply only if it is still at this version (the `ETag` of a `GET`); else 412",
                    nullable = false, pattern = r#"^ *(\*|(W/)?"[!#-+\--~]*")( *, *(\*|(W/)?"[!#-+\--~]*"))* *$"#)),
            responses((status = OK, body = $view,
                    headers(("ETag" = String, description = "Its new version"))),
                (status = BAD_REQUEST, body = ErrorBody),
                (status = UNPROCESSABLE_ENTITY, body = ErrorBody), (status = NOT_FOUND, body = ErrorBody),
                (status = CONFLICT, body = ErrorBody),
                (status = PRECONDITION_FAILED, description = "It changed since the version `If-Match` names", body = ErrorBody),
                (status = UNAUTHORIZED, body = ErrorBody)))]
        async fn update(
            _: Admin,
            State(state): State<AppState>,
            Path(name): Path<String>,
            headers: axum::http::HeaderMap,
            JsonBody(patch): JsonBody<Value>,
        ) -> Result<impl axum::response::IntoResponse, ApiError> {
            use $crate::api::resource::Versioned as _;
            let if_match = $crate::api::resource::if_match(&headers)?;
            let patch = $crate::api::patch::MergePatch::<$body>::new(patch);
            let view = <$view>::from(state.broker.$update(&name, &patch, if_match.as_deref()).await?);
            Ok(($crate::api::resource::etag(view.version()), Json(view)))
        }
    };
    (@get_update no, $item:tt, $tag:tt, $body:ident, $view:ident, $get:ident, $update:ident, $get_doc:tt, $update_doc:tt) => {
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
            Ok(Json(state.broker.$get(&name)?.into()))
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
            let patch = $crate::api::patch::MergePatch::<$body>::new(patch);
            Ok(Json(state.broker.$update(&name, &patch).await?.into()))
        }
    };
}

pub(crate) use named_resource;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Option<Vec<u64>>, u16> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        if_match(&headers).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn if_match_names_strong_versions_or_any() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["*"]), Ok(None));
        assert_eq!(parse(&["\"3\""]), Ok(Some(vec![3])));
        assert_eq!(
            parse(&["\"3\", W/\"4\" , \"x\"", "\"5\""]),
            Ok(Some(vec![3, 5]))
        );
        assert_eq!(
            parse(&["W/\"4\""]),
            Ok(Some(vec![])),
            "a weak tag matches nothing"
        );
        for malformed in ["3", "\"3", "3\"", "", "\"3\",", "W/3", "\"a\"b\""] {
            assert_eq!(parse(&[malformed]), Err(400), "{malformed:?}");
        }
    }

    #[test]
    fn an_etag_is_the_version_quoted() {
        assert_eq!(etag(42)[0].1, "\"42\"");
    }
}
