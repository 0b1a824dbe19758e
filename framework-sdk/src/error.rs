//! The driver's one error type, and how a master's gRPC status maps onto it.

use std::time::Duration;

use agora_core::limits::LimitError;

/// gRPC metadata key a follower master sets to name the leader (`host:port`).
pub const LEADER_METADATA_KEY: &str = "agora-leader";

/// Why a driver call, or the driver itself, failed. Every variant that stems from the
/// master keeps the master's own message so the framework author sees the real cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// The call was not sent: the driver has no live subscription (not yet subscribed,
    /// or reconnecting). Retry after the next `subscribed` callback.
    #[error("not subscribed to a master: the call was not sent")]
    NotSubscribed,

    /// The driver configuration cannot work (no masters, a bad address, ...).
    #[error("invalid driver configuration: {0}")]
    Config(String),

    /// The call itself breaks a protocol limit; it was not sent.
    #[error("invalid call: {0}")]
    InvalidCall(#[from] LimitError),

    /// The master is not the leader. `leader` is its hint (`host:port`), if it knows one.
    #[error("master is not the leader ({}): {message}", leader.as_deref().unwrap_or("leader unknown"))]
    NotLeader {
        leader: Option<String>,
        message: String,
    },

    /// The master answered with a gRPC error status.
    #[error("master answered {code:?}: {message}")]
    Rejected { code: tonic::Code, message: String },

    /// The master could not be reached.
    #[error("cannot connect to master {master}: {reason}")]
    Connect { master: String, reason: String },

    /// No answer within the configured time.
    #[error("no answer from the master within {0:?}")]
    Timeout(Duration),

    /// The master broke the protocol (e.g. its first event was not SUBSCRIBED).
    #[error("protocol violation by master {master}: {reason}")]
    Protocol { master: String, reason: String },

    /// The master sent an ERROR event: the framework must stop.
    #[error("the master aborted the framework: {0}")]
    Aborted(String),
}

impl DriverError {
    /// Maps a gRPC status, keeping the master's message and its leader hint.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(leader) = leader_hint(status) {
            return DriverError::NotLeader {
                leader: Some(leader),
                message: status.message().to_string(),
            };
        }
        DriverError::Rejected {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The leader a follower pointed at, if this error is a redirect.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            DriverError::NotLeader { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }
}

impl From<tonic::Status> for DriverError {
    fn from(status: tonic::Status) -> Self {
        DriverError::from_status(&status)
    }
}

/// The `agora-leader` metadata of a status, if present and plausibly an address: a
/// follower master names the leader this way on its refusals.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?.to_str().ok()?;
    let value = value.trim();
    // An empty or absurd hint is no hint: the driver then tries the next master.
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_whitespace) {
        return None;
    }
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_leader_metadata_is_a_redirect() {
        let mut status = tonic::Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_METADATA_KEY, "10.0.0.2:5050".parse().unwrap());
        let err = DriverError::from_status(&status);
        assert_eq!(err.leader_hint(), Some("10.0.0.2:5050"));
        assert!(err.to_string().contains("not the leader"));
    }

    #[test]
    fn status_keeps_the_masters_message() {
        let err = DriverError::from(tonic::Status::permission_denied("stale stream id"));
        assert_eq!(
            err,
            DriverError::Rejected {
                code: tonic::Code::PermissionDenied,
                message: "stale stream id".into()
            }
        );
        assert_eq!(err.leader_hint(), None);
    }
}
