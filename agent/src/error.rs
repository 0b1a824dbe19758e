//! Why an agent could not start.

use agora_core::limits::LimitError;
use agora_core::resources::ResourceError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("invalid resources: {0}")]
    Resources(#[from] ResourceError),
    #[error("invalid attributes: {0}")]
    Attributes(#[from] LimitError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AgentError::Io {
            context: context.into(),
            source,
        }
    }
}
