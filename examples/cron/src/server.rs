//! [`CronServer`]: one cron instance — HTTP listener, leader election, scheduler
//! driver and controller — started and stopped together.

use std::net::SocketAddr;

use crate::config::CronConfig;

/// Why a cron instance could not start.
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

/// A running cron instance.
pub struct CronServer {
    local_addr: SocketAddr,
}

impl CronServer {
    pub async fn start(config: CronConfig, logger: slog::Logger) -> Result<CronServer, StartError> {
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
        Ok(CronServer { local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(self) {}
}
