//! Starting an agent and stopping it: [`Agent::start`] validates the configuration,
//! detects resources, recovers checkpoints and spawns the three long-lived tasks —
//! the actor, the master link and the server (executor gRPC API plus `/health` and
//! `/metrics` on one port) — and returns an [`AgentHandle`] to watch and stop them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::executor_api_server::ExecutorApiServer;
use axum::serve::ListenerExt;
use slog::{info, warn};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::actor::{AgentActor, LinkState, Settings};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::executor_api::ExecutorApiService;
use crate::gc::GarbageCollector;
use crate::master_link::MasterLink;
use crate::metrics::Metrics;
use crate::{http, meta, resource_detection};

/// Commands queued for the actor before senders wait.
const ACTOR_QUEUE: usize = 1024;
/// How long [`AgentHandle::shutdown`] waits for each task before aborting it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Entry point; see the module documentation.
pub struct Agent;

impl Agent {
    /// Starts an agent serving on `listener`. Returns once everything runs; the
    /// registration with a master proceeds in the background
    /// ([`AgentHandle::wait_registered`]).
    pub async fn start(
        mut config: AgentConfig,
        listener: TcpListener,
    ) -> Result<AgentHandle, AgentError> {
        // Executors run with their sandbox as working directory, so every path handed
        // to them must be absolute.
        config.work_dir = std::path::absolute(&config.work_dir).map_err(|e| {
            AgentError::Config(format!("work dir {}: {e}", config.work_dir.display()))
        })?;
        if config.masters.is_empty() {
            return Err(AgentError::Config(
                "at least one master address is needed".into(),
            ));
        }
        if let Some(bad) = config
            .masters
            .iter()
            .find(|m| m.is_empty() || m.contains("://") || m.chars().any(char::is_whitespace))
        {
            return Err(AgentError::Config(format!(
                "master address '{bad}' must be host:port, without a scheme"
            )));
        }
        if config.executor_command.is_empty() {
            return Err(AgentError::Config("the executor command is empty".into()));
        }
        if config.status_update_retry_min.is_zero() {
            return Err(AgentError::Config(
                "status_update_retry_min must be positive".into(),
            ));
        }
        config.gc.validate().map_err(AgentError::Config)?;
        let logger = config.logger.clone();
        std::fs::create_dir_all(meta::meta_dir(&config.work_dir))
            .map_err(|e| AgentError::io(format!("creating {}", config.work_dir.display()), e))?;
        meta::reset_staging(&config.work_dir).map_err(|e| {
            AgentError::io(
                format!(
                    "preparing {}",
                    meta::staging_dir(&config.work_dir).display()
                ),
                e,
            )
        })?;
        let resources = resource_detection::detect(&config.work_dir, config.resources.as_deref())?;
        let attributes = agora_core::attributes::parse(&config.attributes)?;
        let agent_id = meta::read_agent_id(&config.work_dir)
            .map_err(|e| AgentError::io("reading the persisted agent id", e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| AgentError::io("reading the listener's address", e))?;
        let endpoint = format!("{}:{}", config.advertise_ip, local_addr.port());
        info!(logger, "agent starting";
            "endpoint" => &endpoint, "resources" => %resources,
            "agent_id" => agent_id.as_deref().unwrap_or("(none yet)"),
            "work_dir" => %config.work_dir.display());

        let settings = Arc::new(Settings {
            work_dir: config.work_dir.clone(),
            hostname: config.hostname.clone(),
            executor_endpoint: format!("http://{endpoint}"),
            endpoint,
            resources: resources.to_proto(),
            attributes,
            executor_command: config.executor_command.clone(),
            status_update_retry_min: config.status_update_retry_min,
            status_update_retry_max: config.status_update_retry_max,
            executor_registration_timeout: config.executor_registration_timeout,
            executor_reregistration_timeout: config.executor_reregistration_timeout,
            default_kill_grace: config.default_kill_grace,
            executor_shutdown_grace: config.executor_shutdown_grace,
            recovery_timeout: config.recovery_timeout,
            recover: config.recover,
            container_log: config.container_log,
        });
        let metrics = Arc::new(Metrics::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (link_state, link_state_rx) = watch::channel(LinkState::default());
        let (commands, commands_rx) = mpsc::channel(ACTOR_QUEUE);

        let mut actor = AgentActor::new(
            settings,
            config.containerizer.clone(),
            agent_id,
            commands.clone(),
            link_state,
            metrics.clone(),
            logger.new(slog::o!("component" => "agent")),
        );
        actor.recover();
        let actor = tokio::spawn(actor.run(commands_rx, shutdown_rx.clone()));

        let grpc = tonic::service::Routes::new(
            ExecutorApiServer::new(ExecutorApiService {
                actor: commands.clone(),
            })
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES),
        )
        .into_axum_router()
        .merge(http::router(metrics.clone(), config.work_dir.clone()));
        let mut server_shutdown = shutdown_rx.clone();
        let server_logger = logger.clone();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            };
            // Executor calls are small request/response exchanges: with Nagle's
            // algorithm a reply written in two pieces waits for the executor's delayed
            // ACK (40 ms on Linux) before its second piece leaves.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, grpc)
                .with_graceful_shutdown(stopped)
                .await
            {
                warn!(server_logger, "the agent's server stopped"; "error" => %e);
            }
        });

        let link = MasterLink {
            masters: config.masters.clone(),
            actor: commands,
            backoff_max: config.registration_backoff_max,
            logger: logger.new(slog::o!("component" => "master_link")),
        };
        let gc = GarbageCollector::new(
            config.work_dir.clone(),
            config.gc.clone(),
            metrics,
            logger.new(slog::o!("component" => "gc")),
        );
        let gc = tokio::spawn(gc.run(shutdown_rx.clone()));
        let link = tokio::spawn(link.run(shutdown_rx));

        Ok(AgentHandle {
            local_addr,
            link_state: link_state_rx,
            shutdown,
            tasks: vec![link, actor, server, gc],
            logger,
        })
    }
}

/// A running agent.
pub struct AgentHandle {
    /// The address the agent serves on.
    local_addr: SocketAddr,
    /// Published by the actor: the agent id and whether a master accepted us.
    link_state: watch::Receiver<LinkState>,
    /// Set to true to stop every task.
    shutdown: watch::Sender<bool>,
    /// The master link, the actor, the server and the garbage collector, stopped in
    /// that order.
    tasks: Vec<JoinHandle<()>>,
    /// For shutdown diagnostics.
    logger: slog::Logger,
}

impl AgentHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The agent's id: persisted from an earlier run or assigned by a master; `None`
    /// before the first registration.
    pub fn agent_id(&self) -> Option<String> {
        self.link_state.borrow().agent_id.clone()
    }

    /// Waits until a master has accepted this agent and returns its id. Returns an
    /// empty string if the agent stops first.
    pub async fn wait_registered(&self) -> String {
        let mut state = self.link_state.clone();
        let registered = state
            .wait_for(|s| s.registered && s.agent_id.is_some())
            .await
            .map(|s| s.agent_id.clone().unwrap_or_default());
        registered.unwrap_or_default()
    }

    /// Resolves when the agent's actor has stopped by itself (a checkpoint could not
    /// be made durable), so the process can exit with an error instead of lingering.
    pub async fn stopped(&self) {
        let mut state = self.link_state.clone();
        while state.changed().await.is_ok() {}
    }

    /// Stops serving and the master link. Executors keep running: they wait for an
    /// agent to come back on this port (with the same work dir) and reattach.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
                .await
                .is_err()
            {
                warn!(
                    self.logger,
                    "an agent task did not stop in time; aborting it"
                );
                task.abort();
            }
        }
        info!(self.logger, "agent stopped");
    }
}
