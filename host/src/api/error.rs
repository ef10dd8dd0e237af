//! The one error type of every handler: a status and `{"error": {"code", "message", "field"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::broker::BrokerError;
use crate::domain::validation::FieldError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable, snake_case.
    pub code: &'static str,
    /// What is wrong, for a human.
    pub message: String,
    /// The request field at fault, if one is (a JSON pointer-like dotted path).
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
}

/// The body of every error answer (for the OpenAPI document).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable, snake_case: `unauthorized`, `not_found`, `invalid_field`,
    /// `invalid_json`, `already_exists`, `no_capacity`, `precondition_failed`,
    /// `agent_credential_missing`, `agent_credential_wrong`, ...
    pub code: String,
    /// For a human.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Name the request field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(field: FieldError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            field.message,
        )
        .field(field.field)
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        let message = error.to_string();
        match error {
            BrokerError::NotFound { .. } => ApiError::not_found(message),
            BrokerError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", message)
            }
            BrokerError::Conflict { code, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            BrokerError::Invalid(field) => field.into(),
            BrokerError::NoCapacity { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", message)
            }
            BrokerError::Upload(error) => {
                let code = match &error {
                    crate::broker::UploadError::Load(load) => load.code(),
                    crate::broker::UploadError::Smoke(_) => "smoke_test_failed",
                    crate::broker::UploadError::KindMismatch { .. } => "wrong_kind",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            BrokerError::Unauthorized(_) => ApiError::unauthorized(message),
            BrokerError::AgentCredential { missing } => ApiError::new(
                StatusCode::UNAUTHORIZED,
                if missing {
                    "agent_credential_missing"
                } else {
                    "agent_credential_wrong"
                },
                message,
            ),
            BrokerError::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                message,
            ),
            BrokerError::Unavailable { code, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            }
            BrokerError::Store(_) => ApiError::internal(message),
            BrokerError::Internal { context, cause } => {
                tracing::error!(cause, "internal error: {context}");
                ApiError::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    #[tokio::test]
    async fn an_internal_failure_is_a_500_naming_no_cause() {
        let error = BrokerError::internal(
            "the version's load did not finish",
            "task 7 panicked with message \"index out of bounds\"",
        );
        let response = ApiError::from(error).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({ "error": {
                "code": "internal",
                "message": "internal error: the version's load did not finish",
                "field": null,
            } })
        );
    }
}
