//! Request extractors whose rejections are Marathon-style JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, rejection};

/// The query string as ordered pairs. Marathon's clients repeat keys
/// (`embed=app.tasks&embed=app.counts`, `event_type=a&event_type=b`), which a
/// struct-shaped query cannot hold.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| rejection(e.status(), e.body_text()))
    }
}

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order; comma-separated values are split, as
    /// Marathon accepts both `embed=a&embed=b` and `embed=a,b`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .flat_map(|(_, value)| value.split(','))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .collect()
    }

    /// A boolean parameter, `default` when absent. Python clients send `True` and
    /// `False`, so case does not matter; a bare `?force` means true.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "" | "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "Query parameter '{name}' must be true or false, not {value:?}"
                ))),
            },
        }
    }

    /// `force`, default false, on every call that may create a deployment.
    pub fn force(&self) -> Result<bool, ApiError> {
        self.flag("force", false)
    }
}

/// A path parameter; a malformed one (bad percent-encoding) is a JSON 400.
pub struct PathArg<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathArg(value))
            .map_err(|e| rejection(e.status(), e.body_text()))
    }
}

/// The raw request body. Handlers parse it themselves so that bad JSON becomes the
/// model's 400 and a well-formed but invalid app its 422.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|e| rejection(e.status(), e.body_text()))
    }
}

impl Body {
    /// The body as JSON of any shape (400 when it is not JSON).
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        serde_json::from_slice(&self.0)
            .map_err(|e| crate::error::AppsError::InvalidJson(e.to_string()).into())
    }
}
