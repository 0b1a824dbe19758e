//! [`CronError`]: every way a cron request can fail, mapped once onto HTTP in the API.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CronError {
    /// The body is not JSON, or not of the expected shape (400).
    #[error("{0}")]
    InvalidJson(String),
    /// Well formed but invalid: the message names the field (422).
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<(String, Vec<String>)>,
    },
    /// No such job, schedule or run (404).
    #[error("{0}")]
    NotFound(String),
    /// A job or schedule with this id exists already, or the job has active runs
    /// (409).
    #[error("{0}")]
    Conflict(String),
    /// This instance does not lead, or has not loaded its state yet (503).
    #[error("{0}")]
    Unavailable(String),
    /// The state store failed (503).
    #[error("state store: {0}")]
    Store(String),
}
