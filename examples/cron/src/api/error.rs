//! The one mapping of [`CronError`] onto HTTP, and the API's own failures (a bad
//! query parameter, an unreadable body, an unknown path) in the same Metronome JSON:
//! every error body is an object with at least `message`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::CronError;

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

    /// 404 for a job id, as Metronome words it.
    pub fn unknown_job(id: &str) -> Self {
        CronError::NotFound(format!("Job '{id}' does not exist")).into()
    }

    /// 404 for a schedule id.
    pub fn unknown_schedule(id: &str) -> Self {
        CronError::NotFound(format!("Schedule '{id}' does not exist")).into()
    }

    /// 404 for a run id.
    pub fn unknown_run(id: &str) -> Self {
        CronError::NotFound(format!("JobRun '{id}' does not exist")).into()
    }
}

impl From<CronError> for ApiError {
    fn from(error: CronError) -> Self {
        match error {
            // play's answer to a body that is not JSON: where (the document) and why.
            CronError::InvalidJson(detail) => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({
                    "message": "Invalid JSON",
                    "details": [{ "path": "/", "errors": [detail] }],
                }),
            },
            CronError::Invalid { message, details } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({
                    "message": message,
                    "details": details
                        .into_iter()
                        .map(|(path, errors)| json!({ "path": path, "errors": errors }))
                        .collect::<Vec<_>>(),
                }),
            },
            CronError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, message),
            CronError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
            error @ (CronError::Unavailable(_) | CronError::Store(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl IntoResponse for CronError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// axum's own rejections (unreadable body, malformed path or query) as JSON 400s
/// (413 for a body over the limit), never axum's plain text.
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
