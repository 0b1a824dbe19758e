//! The one mapping of [`AppsError`] onto HTTP, and the API's own failures (a bad
//! query parameter, a body axum could not read) in the same Marathon-style JSON:
//! clients parse every error body as `{"message": ...}`, never as plain text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::AppsError;

/// An error answer: a status and a JSON body with at least `message`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "message": message.into() }),
        }
    }

    /// 400: a query parameter, path or body that cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for an app id, as Marathon words it.
    pub fn unknown_app(id: &impl std::fmt::Display) -> Self {
        AppsError::NotFound(format!("App '{id}' does not exist")).into()
    }

    /// 404 for a group id.
    pub fn unknown_group(id: &impl std::fmt::Display) -> Self {
        AppsError::NotFound(format!("Group '{id}' does not exist")).into()
    }
}

impl From<AppsError> for ApiError {
    fn from(error: AppsError) -> Self {
        let message = error.to_string();
        match error {
            AppsError::InvalidJson(detail) => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({
                    "message": message,
                    "details": [{ "path": "/", "errors": [detail] }],
                }),
            },
            AppsError::Invalid(errors) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: serde_json::to_value(&errors).unwrap_or_else(|_| json!({"message": message})),
            },
            AppsError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, message),
            AppsError::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, message),
            AppsError::Locked { deployments } => ApiError {
                status: StatusCode::CONFLICT,
                body: json!({
                    "message": message,
                    "deployments": deployments
                        .iter()
                        .map(|id| json!({ "id": id }))
                        .collect::<Vec<_>>(),
                }),
            },
            AppsError::Unavailable(_) | AppsError::Store(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            }
        }
    }
}

impl From<crate::model::ModelError> for ApiError {
    fn from(error: crate::model::ModelError) -> Self {
        AppsError::from(error).into()
    }
}

impl From<crate::model::ValidationErrors> for ApiError {
    fn from(errors: crate::model::ValidationErrors) -> Self {
        AppsError::Invalid(errors).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl IntoResponse for AppsError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// axum's own rejections (unreadable body, malformed path or query) as
/// Marathon-style 400s (413 for a body over the limit), never axum's plain text.
pub(crate) fn rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, text)
    } else {
        ApiError::bad_request(text)
    }
}

/// 404 for paths no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

/// 405 for a known path with a method it does not take.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}
