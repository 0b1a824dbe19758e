//! [`AppsError`]: every way an apps request can fail, mapped once onto HTTP in
//! [`crate::api::error`].

use crate::model::ValidationErrors;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppsError {
    /// The body is not JSON, or not of the expected shape (400).
    #[error("Invalid JSON: {0}")]
    InvalidJson(String),
    /// The body is well formed but not a valid app or group (422).
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// No such app, group, task, deployment or version (404).
    #[error("{0}")]
    NotFound(String),
    /// An app or group with this id exists already (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// The change touches apps that running deployments hold (409; `force` overrides).
    #[error(
        "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'."
    )]
    Locked { deployments: Vec<String> },
    /// This instance is not the leader, or has not loaded its state yet (503).
    #[error("{0}")]
    Unavailable(String),
    /// The state store failed (503 when retrying may help).
    #[error("state store: {0}")]
    Store(String),
}

impl From<crate::model::ModelError> for AppsError {
    fn from(error: crate::model::ModelError) -> Self {
        match error {
            crate::model::ModelError::InvalidJson(message) => AppsError::InvalidJson(message),
            crate::model::ModelError::Invalid(errors) => AppsError::Invalid(errors),
        }
    }
}
