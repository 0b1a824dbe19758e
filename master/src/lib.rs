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
pub mod replication;
mod serving;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_core::limits::MAX_MESSAGE_BYTES;
use agora_proto as pb;
use axum::serve::ListenerExt;
use slog::{Logger, info};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use crate::core::CoreTimings;
use crate::registry::Registry;
use crate::replication::storage::StorageError;
use crate::replication::transport::{GrpcTransport, RaftPeerService};
use crate::replication::{
    RaftTimings, Replica, ReplicaConfig, ReplicaHandle, ReplicaStartError, ReplicatedRegistry,
};

/// The version every master reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// gRPC metadata a follower sets on its refusals: the leader's "host:port".
pub const LEADER_METADATA_KEY: &str = "agora-leader";

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Replica(#[from] ReplicaStartError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("this master left the group: {0}")]
    RaftStopped(String),
    #[error("cannot serve on the listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("the master's server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// How a master runs.
#[derive(Clone)]
pub struct MasterConfig {
    /// Where the raft log, snapshots and hard state live; created if missing.
    pub data_dir: PathBuf,
    /// Reported to frameworks and agents.
    pub hostname: String,
    /// The address others should use for this master; defaults to the listener's.
    pub advertise_address: Option<String>,
    pub timings: CoreTimings,
    /// This master's raft id (not 0); 1 for a master on its own.
    pub raft_id: u64,
    /// Every master of the group (raft id -> "host:port"), this one included. Empty:
    /// a group of one at this master's address.
    pub peers: BTreeMap<u64, String>,
    /// Wait to be added to an existing group instead of bootstrapping one.
    pub join: bool,
    pub raft_timings: RaftTimings,
    pub logger: Logger,
}

impl MasterConfig {
    /// Mesos' defaults for everything timed; a group of one.
    pub fn new(data_dir: PathBuf, logger: Logger) -> Self {
        Self {
            data_dir,
            hostname: "localhost".into(),
            advertise_address: None,
            timings: CoreTimings::default(),
            raft_id: 1,
            peers: BTreeMap::new(),
            join: false,
            raft_timings: RaftTimings::default(),
            logger,
        }
    }
}

pub struct Master;

/// A running master.
pub struct MasterHandle {
    local_addr: SocketAddr,
    /// Flipped to true to stop the supervisor (and its core) and the server.
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), MasterError>>,
    supervisor: JoinHandle<()>,
    replica: Replica,
    gate: serving::LeaderGate,
    /// Set once `wait` has seen the server task end.
    server_finished: bool,
    /// Set once `wait` has seen the raft task end.
    raft_finished: bool,
    logger: Logger,
}

impl Master {
    /// Opens the raft storage in `config.data_dir`, joins or bootstraps the group, and
    /// serves on `listener`; the core runs whenever this master leads.
    pub async fn start(
        config: MasterConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<MasterHandle, MasterError> {
        let local_addr = listener.local_addr().map_err(MasterError::Listener)?;
        let address = config
            .advertise_address
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let logger = config.logger.new(slog::o!("component" => "master"));
        let mut peers = config.peers.clone();
        if peers.is_empty() {
            peers.insert(config.raft_id, address.clone());
        }
        let transport = GrpcTransport::new(config.raft_id, logger.clone());
        let replica = replication::node::start(
            ReplicaConfig {
                id: config.raft_id,
                initial_members: peers,
                join: config.join,
                data_dir: config.data_dir.join("raft"),
                timings: config.raft_timings.clone(),
                logger: logger.clone(),
            },
            transport,
        )
        .await?;
        let registry: Arc<dyn Registry> = Arc::new(ReplicatedRegistry {
            replica: replica.handle.clone(),
        });

        let master_info = pb::MasterInfo {
            id: uuid::Uuid::new_v4().to_string(),
            address: address.clone(),
            version: VERSION.into(),
            hostname: config.hostname.clone(),
        };
        let metrics = Arc::new(metrics::MasterMetrics::new());
        let (view_tx, view_rx) = watch::channel(Arc::new(crate::core::ClusterView::empty(
            master_info.clone(),
        )));
        let (group_tx, group_rx) = watch::channel(pb::MasterGroup::default());
        let (events_tx, _) = broadcast::channel(4096);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let (supervisor, gate) = serving::CoreSupervisor::new(
            logger.clone(),
            config.timings.clone(),
            master_info,
            registry,
            metrics.clone(),
            view_tx,
            events_tx.clone(),
            replica.handle.clone(),
            group_tx,
        );
        let supervisor = tokio::spawn(supervisor.run(shutdown_rx.clone()));

        let grpc = tonic::service::Routes::new(
            pb::scheduler_server::SchedulerServer::new(api::scheduler::SchedulerApi {
                gate: gate.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::agent_link_server::AgentLinkServer::new(api::agent_link::AgentLinkApi {
                gate: gate.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::operator_server::OperatorServer::new(api::operator::OperatorApi {
                view: view_rx.clone(),
                group: group_rx.clone(),
                events: events_tx,
                gate: gate.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::state_store_server::StateStoreServer::new(api::state_store::StateStoreApi {
                replica: replica.handle.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            RaftPeerService {
                replica: replica.handle.clone(),
                logger: logger.clone(),
            }
            .into_server(),
        )
        .into_axum_router();
        let app = grpc.merge(http::router(http::HttpState {
            view: view_rx,
            group: group_rx,
            metrics,
            gate: gate.clone(),
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
        // slog prints key-values last first: the address leads, which tools look for.
        info!(logger, "master serving"; "raft_id" => config.raft_id, "address" => %address);
        Ok(MasterHandle {
            local_addr,
            shutdown: shutdown_tx,
            server,
            supervisor,
            replica,
            gate,
            server_finished: false,
            raft_finished: false,
            logger,
        })
    }
}

impl MasterHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves once this master leads and its core serves frameworks and agents. A
    /// master alone leads within moments of starting; in a group, only one will.
    pub async fn until_leading(&self) {
        self.gate.until_serving().await;
    }

    /// This master's raft node (for membership changes and tests).
    pub fn replica(&self) -> &ReplicaHandle {
        &self.replica.handle
    }

    /// Stops the core (ending every stream), the raft node, and then the server.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.supervisor.await;
        self.replica.handle.shutdown().await;
        // `wait` may have seen either task finish already; a finished JoinHandle must
        // not be polled again.
        if !self.raft_finished {
            let _ = self.replica.task.await;
        }
        if !self.server_finished {
            // Long-lived streams end when the core drops their senders; a client that
            // keeps a connection open cannot hold the shutdown for long.
            let abort = self.server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), self.server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        info!(self.logger, "master stopped");
    }

    /// Waits until the master stops by itself: the server failed, or the raft node
    /// stopped (its storage failed, or it was removed from the group).
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        if self.server_finished || self.raft_finished {
            return Err(MasterError::RaftStopped(
                "the master already stopped".into(),
            ));
        }
        tokio::select! {
            server = &mut self.server => {
                self.server_finished = true;
                match server {
                Ok(result) => result,
                Err(e) => Err(MasterError::Server(std::io::Error::other(e))),
            }},
            raft = &mut self.replica.task => {
                self.raft_finished = true;
                match raft {
                Ok(Ok(())) => Err(MasterError::RaftStopped(
                    self.replica.handle.leadership().borrow().stopped.clone().unwrap_or_default(),
                )),
                Ok(Err(e)) => Err(MasterError::Storage(e)),
                Err(e) => Err(MasterError::RaftStopped(e.to_string())),
            }},
        }
    }
}
