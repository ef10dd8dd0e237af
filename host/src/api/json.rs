//! The JSON body extractor: every way a body can be wrong becomes an [`ApiError`] naming
//! what is wrong and where.
//!
//! Request bodies are strict: a field the body's type does not know is refused here, in one
//! place, while the records they become are tolerant when read back from the store (so a
//! rollback to an older binary still reads a record a newer one wrote). The OpenAPI
//! document says the same: every request body's schema has `additionalProperties: false`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::validation::{self, FieldError};

/// Largest accepted JSON body.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| mime.trim().to_ascii_lowercase())
            .is_some_and(|mime| {
                mime == "application/json" || mime == "application/merge-patch+json"
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("a JSON body may have at most {MAX_JSON_BODY} bytes"),
                    )
                } else {
                    ApiError::new(rejection.status(), "unreadable_body", rejection.body_text())
                }
            })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parse `bytes` (a JSON object) as a `T`, with the failing field's path on a type error.
///
/// A number with a zero fraction (`2.0`) is accepted where an integer is expected, as JSON
/// Schema's `integer` (and so the OpenAPI document) allows.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| body_error(&e))?;
    // Every request body is an object (serde would also read a struct from an array).
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    integral_floats_to_integers(&mut value);
    Ok(strict(value)?)
}

/// Read `value` as a `T`, refusing any field `T` does not know; an error names the field.
pub fn strict<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    let mut unknown: Option<String> = None;
    let mut note_unknown = |path: serde_ignored::Path| {
        unknown.get_or_insert_with(|| path.to_string());
    };
    let read: T = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        value,
        &mut note_unknown,
    ))
    .map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        FieldError::new(validation::serde_error_field(&message, &path), message)
    })?;
    match unknown {
        None => Ok(read),
        Some(path) => {
            let name = path.rsplit('.').next().unwrap_or(&path).to_string();
            Err(FieldError::new(
                path,
                format!("unknown field `{name}`: this request takes no such field"),
            ))
        }
    }
}

fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                *value = Value::from(f as u64);
            } else if f.fract() == 0.0 && f < 0.0 && f > i64::MIN as f64 {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

fn body_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = error.to_string();
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {message}"),
        ),
        Category::Data => {
            FieldError::new(validation::serde_error_field(&message, "."), message).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::autoscale::Pool;
    use crate::domain::zone::ZoneSpec;

    fn error(body: &str) -> ApiError {
        parse::<ZoneSpec>(body.as_bytes()).err().expect("an error")
    }

    #[test]
    fn each_kind_of_bad_body_names_its_problem() {
        let e = error("{\"name\": ");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        let e = error(r#"{"name":"a","colour":"red"}"#);
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some("colour")
            )
        );
        let e = error(r#"{"proxy_port":1}"#);
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = error(r#"{"name":"a","proxy_port":"x"}"#);
        assert_eq!(e.field.as_deref(), Some("proxy_port"));
        let e = error(r#"{"name":"a","proxy_port":70000}"#);
        assert_eq!(e.field.as_deref(), Some("proxy_port"));
        let e = error(r#"{"name":"a"} trailing"#);
        assert_eq!(e.code, "invalid_json");
        let e = error("[]");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = error(r#"["north", null]"#);
        assert_eq!(e.code, "invalid_body", "a struct is not read from an array");
        let spec = parse::<ZoneSpec>(br#"{"name":"a","proxy_port":8443.0}"#).unwrap();
        assert_eq!(
            spec.proxy_port,
            Some(8443),
            "an integral float is an integer"
        );
        let e = error(r#"{"name":"a","proxy_port":1.5}"#);
        assert_eq!(e.field.as_deref(), Some("proxy_port"));
    }

    #[test]
    fn a_type_that_tolerates_unknown_fields_is_still_strict_as_a_request_body() {
        // A pool record read from the store ignores a field it does not know...
        let stored: Pool = serde_json::from_str(r#"{"name":"p","colour":"red"}"#).unwrap();
        assert_eq!(stored.name, "p");
        // ...but a request body naming one is refused, with the field's path.
        let e = parse::<Pool>(br#"{"name":"p","colour":"red"}"#)
            .err()
            .expect("refused");
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some("colour")
            )
        );
        assert!(
            e.message.contains("unknown field `colour`"),
            "{}",
            e.message
        );
        assert!(parse::<Pool>(br#"{"name":"p"}"#).is_ok());
    }
}
