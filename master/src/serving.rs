//! Only the leader serves: the core runs on the leading master alone.
//!
//! [`CoreSupervisor`] watches the raft node's [`Leadership`]. When this master starts
//! serving (it leads and has applied its log) it starts a fresh `MasterCore`, which
//! loads the registry through raft and gives known agents a window to re-register;
//! when it stops leading it stops the core, which ends every framework and agent
//! stream so that they reconnect and are redirected. Soft state is never carried
//! from one leadership term to the next.
//!
//! [`LeaderGate`] is what the API services hold: the running core's command queue,
//! or the refusal a follower gives (UNAVAILABLE with the leader's address in the
//! `agora-leader` metadata).

use std::sync::Arc;
use std::time::Duration;

use agora_proto as pb;
use slog::{Logger, info, warn};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Status;

use crate::core::{self, Command, CoreTimings, MasterCore};
use crate::metrics::MasterMetrics;
use crate::registry::Registry;
use crate::replication::{Leadership, ReplicaError, ReplicaHandle};

/// The API services' way to the core, if this master serves.
#[derive(Clone)]
pub(crate) struct LeaderGate {
    /// The running core's command queue; `None` while this master does not serve.
    core: watch::Receiver<Option<mpsc::Sender<Command>>>,
    pub(crate) replica: ReplicaHandle,
}

impl LeaderGate {
    /// The core's queue, or the status a follower answers with.
    pub(crate) fn commands(&self) -> Result<mpsc::Sender<Command>, Status> {
        if let Some(commands) = self.core.borrow().as_ref() {
            return Ok(commands.clone());
        }
        Err(self.refusal().into())
    }

    /// Resolves once this master's core serves (it leads and has loaded the registry).
    pub(crate) async fn until_serving(&self) {
        let mut core = self.core.clone();
        let _ = core.wait_for(|core| core.is_some()).await;
    }

    fn refusal(&self) -> ReplicaError {
        let leadership = self.replica.leadership().borrow().clone();
        if leadership.leader_id == self.replica.id() {
            ReplicaError::NotReady
        } else {
            self.replica.not_leader()
        }
    }
}

/// What every incarnation of the core is built from.
pub(crate) struct CoreSupervisor {
    pub logger: Logger,
    pub timings: CoreTimings,
    pub master_info: pb::MasterInfo,
    pub registry: Arc<dyn Registry>,
    pub metrics: Arc<MasterMetrics>,
    pub view: watch::Sender<Arc<core::ClusterView>>,
    pub operator_events: broadcast::Sender<pb::OperatorEvent>,
    pub replica: ReplicaHandle,
    /// The group as last seen; refreshed every second and on leadership changes.
    pub group: watch::Sender<pb::MasterGroup>,
    gate: watch::Sender<Option<mpsc::Sender<Command>>>,
}

/// A running core and how to stop it.
struct RunningCore {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How often the supervisor refreshes the group view and checks on the core.
const REFRESH: Duration = Duration::from_secs(1);

impl CoreSupervisor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        logger: Logger,
        timings: CoreTimings,
        master_info: pb::MasterInfo,
        registry: Arc<dyn Registry>,
        metrics: Arc<MasterMetrics>,
        view: watch::Sender<Arc<core::ClusterView>>,
        operator_events: broadcast::Sender<pb::OperatorEvent>,
        replica: ReplicaHandle,
        group: watch::Sender<pb::MasterGroup>,
    ) -> (Self, LeaderGate) {
        let (gate, gate_rx) = watch::channel(None);
        let leader_gate = LeaderGate {
            core: gate_rx,
            replica: replica.clone(),
        };
        (
            Self {
                logger,
                timings,
                master_info,
                registry,
                metrics,
                view,
                operator_events,
                replica,
                group,
                gate,
            },
            leader_gate,
        )
    }

    /// Runs until `shutdown` flips or the raft node stops.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut leadership = self.replica.leadership();
        let mut running: Option<RunningCore> = None;
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_follower_view();
        loop {
            let current: Leadership = leadership.borrow_and_update().clone();
            if current.stopped.is_some() {
                break;
            }
            if running.as_ref().is_some_and(|core| core.task.is_finished()) {
                warn!(
                    self.logger,
                    "the master core stopped by itself; starting a new one"
                );
                self.stop(running.take()).await;
            }
            match (current.serving, running.is_some()) {
                (true, false) => running = self.start().await,
                (false, true) => {
                    info!(self.logger, "no longer leading: stopping the core";
                        "leader" => current.leader_address.as_deref().unwrap_or("unknown"));
                    self.stop(running.take()).await;
                    self.publish_follower_view();
                }
                _ => {}
            }
            if let Ok(group) = self.replica.group().await {
                self.group.send_replace(group);
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { break },
                _ = refresh.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        self.stop(running.take()).await;
    }

    /// Starts a core: it loads the registry (a linearizable read) before anyone can
    /// reach it. Returns `None` if the load failed; the next refresh tries again.
    async fn start(&self) -> Option<RunningCore> {
        let (commands_tx, commands_rx) = mpsc::channel(core::COMMAND_QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut core = MasterCore::new(
            self.logger.clone(),
            self.timings.clone(),
            self.master_info.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            self.view.clone(),
            self.operator_events.clone(),
        );
        if let Err(e) = core.start().await {
            warn!(self.logger, "cannot load the registry yet; will retry"; "error" => %e);
            return None;
        }
        info!(
            self.logger,
            "leading: the core serves frameworks and agents"
        );
        let task = tokio::spawn(core.run(commands_rx, shutdown_rx));
        self.gate.send_replace(Some(commands_tx));
        Some(RunningCore {
            shutdown: shutdown_tx,
            task,
        })
    }

    async fn stop(&self, core: Option<RunningCore>) {
        self.gate.send_replace(None);
        if let Some(core) = core {
            let _ = core.shutdown.send(true);
            let _ = core.task.await;
        }
    }

    /// What a follower shows: itself and the group, no soft state.
    fn publish_follower_view(&self) {
        self.view
            .send_replace(Arc::new(core::ClusterView::empty(self.master_info.clone())));
    }
}
