//! The Agora master: it collects agents' resources, offers them to frameworks, checks
//! and forwards their launches, and routes task status updates back to them.
//!
//! # Layout
//! - [`Master::start`] / [`MasterHandle`]: one listener serves gRPC (frameworks,
//!   agents, operators) and HTTP (`/health`, `/metrics`, `/api/v1/state`, `/`).
//! - `core/`: the actor that owns all state; API handlers send it commands. See
//!   `core/mod.rs` for how its work is split (frameworks, agents, accept, tasks,
//!   allocation, view).
//! - [`allocator`]: pure DRF allocation (who gets which agent's resources).
//! - [`offer_book`]: outstanding offers and the resources they hold.
//! - [`registry`]: the durable record of agents and frameworks, behind a trait that
//!   the replicated implementation fills in; [`registry::LocalRegistry`] is one file.
//! - `api/`: the tonic services (`scheduler`, `agent_link`, `operator`).
//! - `http`: the HTTP routes; [`metrics`]: the Prometheus metrics.
//!
//! Soft state (offers, connections, the task map) is rebuilt after a restart from
//! agents' re-registration and frameworks' re-subscription, as in Mesos.

pub mod allocator;
mod api;
mod core;
mod http;
pub mod metrics;
pub mod offer_book;
pub mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_core::limits::MAX_MESSAGE_BYTES;
use agora_proto as pb;
use axum::serve::ListenerExt;
use slog::{Logger, info};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub use crate::core::CoreTimings;
use crate::registry::{LocalRegistry, Registry, RegistryError};

/// The version every master reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot serve on the listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("the master's server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// How a master runs.
#[derive(Clone)]
pub struct MasterConfig {
    /// Where the registry lives; created if missing.
    pub data_dir: PathBuf,
    /// Reported to frameworks and agents.
    pub hostname: String,
    /// The address others should use for this master; defaults to the listener's.
    pub advertise_address: Option<String>,
    pub timings: CoreTimings,
    pub logger: Logger,
}

impl MasterConfig {
    /// Mesos' defaults for everything timed.
    pub fn new(data_dir: PathBuf, logger: Logger) -> Self {
        Self {
            data_dir,
            hostname: "localhost".into(),
            advertise_address: None,
            timings: CoreTimings::default(),
            logger,
        }
    }
}

pub struct Master;

/// A running master.
pub struct MasterHandle {
    local_addr: SocketAddr,
    /// Flipped to true to stop the core and the server.
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), MasterError>>,
    core: JoinHandle<()>,
    logger: Logger,
}

impl Master {
    /// Opens the registry in `config.data_dir` and serves on `listener`.
    pub async fn start(
        config: MasterConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<MasterHandle, MasterError> {
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::open(&config.data_dir)?);
        Self::start_with_registry(config, listener, registry).await
    }

    /// Like [`Master::start`] with a registry of the caller's choosing.
    pub async fn start_with_registry(
        config: MasterConfig,
        listener: tokio::net::TcpListener,
        registry: Arc<dyn Registry>,
    ) -> Result<MasterHandle, MasterError> {
        let local_addr = listener.local_addr().map_err(MasterError::Listener)?;
        let address = config
            .advertise_address
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let master_info = pb::MasterInfo {
            id: uuid::Uuid::new_v4().to_string(),
            address: address.clone(),
            version: VERSION.into(),
            hostname: config.hostname.clone(),
        };
        let logger = config.logger.new(slog::o!("component" => "master"));
        let metrics = Arc::new(metrics::MasterMetrics::new());
        let (view_tx, view_rx) = watch::channel(Arc::new(pb::ClusterState {
            master_info: Some(master_info.clone()),
            ..Default::default()
        }));
        let (events_tx, _) = broadcast::channel(4096);
        let (commands_tx, commands_rx) = mpsc::channel(core::COMMAND_QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let mut core = core::MasterCore::new(
            logger.clone(),
            config.timings.clone(),
            master_info,
            registry,
            metrics.clone(),
            view_tx,
            events_tx.clone(),
        );
        core.start().await;
        let core = tokio::spawn(core.run(commands_rx, shutdown_rx.clone()));

        let grpc = tonic::service::Routes::new(
            pb::scheduler_server::SchedulerServer::new(api::scheduler::SchedulerApi {
                commands: commands_tx.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::agent_link_server::AgentLinkServer::new(api::agent_link::AgentLinkApi {
                commands: commands_tx.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::operator_server::OperatorServer::new(api::operator::OperatorApi {
                view: view_rx.clone(),
                events: events_tx,
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .into_axum_router();
        let app = grpc.merge(http::router(http::HttpState {
            view: view_rx,
            metrics,
        }));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
            // A peer whose host died must not look connected for the ~15 minutes TCP
            // retransmission takes: probe idle connections, and give up on unacked
            // writes after a minute.
            let socket = socket2::SockRef::from(&*tcp);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            let _ = socket.set_tcp_keepalive(&keepalive);
            #[cfg(target_os = "linux")]
            let _ = socket.set_tcp_user_timeout(Some(Duration::from_secs(60)));
        });
        let mut server_shutdown = shutdown_rx;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_shutdown.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(MasterError::Server)
        });
        info!(logger, "master serving"; "address" => %address);
        Ok(MasterHandle {
            local_addr,
            shutdown: shutdown_tx,
            server,
            core,
            logger,
        })
    }
}

impl MasterHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the core (ending every stream) and then the server.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.core.await;
        // Long-lived streams end when the core drops their senders; a client that
        // keeps a connection open cannot hold the shutdown for long.
        let abort = self.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .is_err()
        {
            abort.abort();
        }
        info!(self.logger, "master stopped");
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(e) => Err(MasterError::Server(std::io::Error::other(e))),
        }
    }
}
