//! The agent's actor: the one owner of its state (frameworks, executors, tasks, the
//! status-update streams). Everything that changes state arrives as a [`Command`] on
//! one channel — from the master link, the executor API, container watchers and
//! timers — and is handled to completion before the next, so no lock guards any of
//! it. Handlers never await and never touch the disk: slow work (launching,
//! destroying, waiting for a container) runs in spawned tasks that report back with
//! another command, checkpoints go to the [`Journal`] as ops, and every output
//! (a message to the master, an event or an answer to an executor) is an [`Effect`]
//! the journal releases once what was checkpointed before it is durable.
//!
//! - [`master`]: registration and what the master sends (run, kill, ack, ...).
//! - [`custom_executors`]: tasks that name their own executor.
//! - [`executors`]: the executor API and the life of executor containers.
//! - [`recovery`]: rebuilding the state from checkpoints when the agent starts.
//! - [`task_groups`]: LAUNCH_GROUP under the default executor.

mod custom_executors;
mod executors;
mod master;
mod recovery;
mod task_groups;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_core::task_state::is_terminal_raw;
use agora_proto as pb;
use agora_proto::agent_message::Message as ToMaster;
use agora_proto::task_status::{Reason, Source};
use slog::{Logger, debug, error, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::Status;

use crate::containerizer::{ContainerId, Containerizer, LaunchSpec};
use crate::journal::{BatchOutcome, Completion, DiskOp, DiskStore, Journal};
use crate::meta;
use crate::metrics::Metrics;
use crate::status_updates::{Accepted, StatusUpdateError, StatusUpdateManager, StreamKey};

/// Events for one subscribed executor.
pub(crate) type EventSender = mpsc::Sender<Result<pb::ExecutorEvent, Status>>;
pub(crate) type EventReceiver = mpsc::Receiver<Result<pb::ExecutorEvent, Status>>;

/// Events queued per executor before a slow executor loses some (it re-subscribes or
/// resends its updates, so nothing essential is lost for good).
const EXECUTOR_EVENT_QUEUE: usize = 1024;

/// Everything the actor can be asked to do.
pub(crate) enum Command {
    /// The master link is about to (re)register: what should it send first?
    Registration {
        reply: oneshot::Sender<pb::AgentMessage>,
    },
    /// A master accepted the (re)registration; `outbound` reaches it.
    Registered {
        agent_id: String,
        outbound: mpsc::Sender<pb::AgentMessage>,
    },
    /// The master connection ended.
    Disconnected,
    /// The master refused this agent. `while_registering`: it refused the
    /// registration itself (so the id it was given is no good).
    Refused {
        reason: String,
        while_registering: bool,
    },
    FromMaster(Box<pb::master_message::Message>),
    Subscribe {
        request: pb::ExecutorSubscribe,
        reply: oneshot::Sender<Result<EventReceiver, Status>>,
    },
    Update {
        request: pb::ExecutorUpdate,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Message {
        request: pb::ExecutorMessage,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    /// A containerizer finished launching (or failed to): the executor's pid and
    /// start time, when it has a single process.
    ContainerLaunched {
        container_id: ContainerId,
        result: Result<Option<meta::ForkedPid>, String>,
    },
    ContainerExited {
        container_id: ContainerId,
        termination: crate::containerizer::Termination,
    },
    RegistrationTimeout {
        container_id: ContainerId,
    },
    ReregistrationTimeout {
        container_id: ContainerId,
    },
    ShutdownGraceExpired {
        container_id: ContainerId,
    },
}

/// An output of the actor. Each waits in the [`Journal`] until every checkpoint op
/// issued before it is durable, and they leave in the order they were made.
pub(crate) enum Effect {
    /// For the master, on whatever link is attached when it leaves.
    ToMaster(Box<ToMaster>),
    /// For one executor's event stream (the one it had when the event was made).
    Event(EventSender, Box<pb::executor_event::Event>),
    /// An answer to whoever asked the actor (an executor call, the master link).
    Reply(Box<dyn FnOnce() + Send>),
}

/// What the handle and the master link can observe of the registration.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LinkState {
    /// The agent's id: persisted or assigned; `None` before the first registration.
    pub agent_id: Option<String>,
    /// True while attached to a master that accepted the registration.
    pub registered: bool,
}

/// The parts of [`crate::AgentConfig`] the actor uses, resolved at start.
pub(crate) struct Settings {
    /// Root of `meta/` (checkpoints) and `frameworks/` (sandboxes).
    pub work_dir: PathBuf,
    /// Reported to the master in `AgentInfo`.
    pub hostname: String,
    /// `advertise_ip:port`, reported to the master.
    pub endpoint: String,
    /// What executors dial: `http://advertise_ip:port`.
    pub executor_endpoint: String,
    /// Detected resources with the operator's overrides applied (valid).
    pub resources: Vec<pb::Resource>,
    /// Parsed and within limits.
    pub attributes: Vec<pb::Attribute>,
    /// Starts the command executor; not empty.
    pub executor_command: Vec<OsString>,
    /// The rest mirror the [`crate::AgentConfig`] fields of the same names.
    pub status_update_retry_min: Duration,
    pub status_update_retry_max: Duration,
    pub executor_registration_timeout: Duration,
    pub executor_reregistration_timeout: Duration,
    pub default_kill_grace: Duration,
    pub executor_shutdown_grace: Duration,
    pub recovery_timeout: Duration,
    pub recover: crate::config::RecoverMode,
    /// Rotation of task output, passed to executors in their environment.
    pub container_log: crate::sandbox::RotationPolicy,
}

/// A framework with tasks or executors on this agent.
struct Framework {
    /// As last sent with a launch (checkpointed in `framework.info`).
    info: pb::FrameworkInfo,
    /// The master asked to shut it down: its executors are being stopped, and it is
    /// forgotten (with its update streams) once they are all gone.
    shutting_down: bool,
}

/// A task the agent knows: from its launch until its terminal update is acknowledged.
struct Task {
    /// As launched; minimal (just the id) for a kill of a task never seen.
    info: pb::TaskInfo,
    /// Equal to the framework id of its key in `AgentActor::tasks`.
    framework_id: String,
    /// Its executor's id (the task id for command tasks).
    executor_id: String,
    /// The task group it was launched in, named by the group's first task id
    /// (checkpointed in `task.group`); `None` for a task launched alone. The tasks
    /// of one group reach their executor in one LAUNCH_GROUP and live and die
    /// together; two groups on one executor stay apart.
    group: Option<String>,
    /// The executor run it belongs to; `None` for a launch refused before any
    /// executor existed.
    container: Option<ContainerId>,
    /// Newest state accepted for it (TASK_STAGING before the first update).
    state: i32,
    /// The status that set `state`; `None` while TASK_STAGING.
    latest_status: Option<pb::TaskStatus>,
    /// Sent to its executor in a LAUNCH or LAUNCH_GROUP event. Not proof that it
    /// arrived: an executor that re-subscribes without naming the task in
    /// `unacknowledged_tasks`, and that sent no update for it, never got it, and
    /// it is sent again (or, when the rest of its group did arrive, it is lost).
    launched: bool,
    /// A kill (or executor shutdown) was requested.
    kill_requested: bool,
    /// The kill policy of the latest kill that named one, resent with the kill to
    /// an executor that re-subscribes before the task ended; `None`: the task's own.
    kill_policy: Option<pb::KillPolicy>,
    /// Checkpoint directory (task.info, task.updates); `None` when there is none.
    meta_dir: Option<PathBuf>,
}

impl Task {
    fn new(info: pb::TaskInfo, framework_id: &str, executor_id: &str) -> Self {
        Self {
            info,
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
            group: None,
            container: None,
            state: pb::TaskState::TaskStaging as i32,
            latest_status: None,
            launched: false,
            kill_requested: false,
            kill_policy: None,
            meta_dir: None,
        }
    }

    fn is_terminal(&self) -> bool {
        is_terminal_raw(self.state)
    }

    /// What its group is known by: the group's id, or its own id when alone.
    fn group_key<'a>(&'a self, task_id: &'a str) -> &'a str {
        self.group.as_deref().unwrap_or(task_id)
    }
}

/// Where an executor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its checkpoints are being written, then the containerizer starts it.
    Launching,
    /// Its process runs; it has not subscribed yet.
    Started,
    /// It subscribed (its event stream may have broken since; it re-subscribes).
    Subscribed,
    /// Found running after an agent restart; waiting for it to re-subscribe.
    Recovering,
}

/// One executor run (one container).
struct Executor {
    framework_id: String,
    executor_id: String,
    /// Sent to it in SUBSCRIBED.
    info: pb::ExecutorInfo,
    /// The secret it must present on every call.
    token: String,
    /// Checkpoint directory of this run.
    meta_dir: PathBuf,
    /// See [`Phase`]; `events` is `Some` only once `Subscribed`.
    phase: Phase,
    /// Its event stream, once subscribed (replaced when it re-subscribes).
    events: Option<EventSender>,
    /// Ids of its tasks that the agent still tracks.
    tasks: BTreeSet<String>,
    /// The pending registration / re-registration / shutdown timer.
    timer: Option<AbortHandle>,
    /// Asked to shut down (framework shutdown); its container is destroyed if it does
    /// not exit in time.
    shutdown_requested: bool,
    /// Destroy it as soon as the containerizer reports it started (it was killed
    /// while launching); not started at all if its checkpoints are not written yet.
    destroy_when_started: bool,
    /// What to start once its checkpoints are durable; `None` once started (or for
    /// a recovered executor).
    launch: Option<LaunchSpec>,
}

/// See the module documentation.
pub(crate) struct AgentActor {
    /// Fixed for the agent's life.
    settings: Arc<Settings>,
    /// Launches, recovers and destroys executor containers.
    containerizer: Arc<dyn Containerizer>,
    logger: Logger,
    /// Shared with the `/metrics` route.
    metrics: Arc<Metrics>,
    /// Our own command channel, handed to timers and container watchers.
    commands: mpsc::Sender<Command>,
    /// Published to the [`crate::AgentHandle`]; updated on (de)registration.
    link_state: watch::Sender<LinkState>,
    /// Persisted in `meta/agent_id`; `None` until a master assigns one.
    agent_id: Option<String>,
    /// Reaches the master; `None` while not registered.
    outbound: Option<mpsc::Sender<pb::AgentMessage>>,
    /// Frameworks with tasks or executors here, by id.
    frameworks: HashMap<String, Framework>,
    /// Live executor runs (launching, running, recovering), by container.
    executors: HashMap<ContainerId, Executor>,
    /// (framework id, executor id) → its current run. Invariant: every value is a key
    /// of `executors`.
    executor_runs: HashMap<(String, String), ContainerId>,
    /// Every task until its terminal update is acknowledged. Invariant: a task with
    /// a status has a stream in `updates` until then.
    tasks: HashMap<StreamKey, Task>,
    /// The status-update streams of `tasks`.
    updates: StatusUpdateManager,
    /// Writes the checkpoints in batches and holds back the effects that depend on
    /// them.
    journal: Journal<Effect>,
}

impl AgentActor {
    pub(crate) fn new(
        settings: Arc<Settings>,
        containerizer: Arc<dyn Containerizer>,
        agent_id: Option<String>,
        commands: mpsc::Sender<Command>,
        link_state: watch::Sender<LinkState>,
        metrics: Arc<Metrics>,
        logger: Logger,
    ) -> Self {
        let updates = StatusUpdateManager::new(
            settings.status_update_retry_min,
            settings.status_update_retry_max,
        );
        link_state.send_replace(LinkState {
            agent_id: agent_id.clone(),
            registered: false,
        });
        let journal = Journal::new(DiskStore::new(meta::staging_dir(&settings.work_dir)));
        Self {
            settings,
            containerizer,
            logger,
            metrics,
            commands,
            link_state,
            agent_id,
            outbound: None,
            frameworks: HashMap::new(),
            executors: HashMap::new(),
            executor_runs: HashMap::new(),
            tasks: HashMap::new(),
            updates,
            journal,
        }
    }

    /// Handles commands until `shutdown` fires (or a checkpoint cannot be written).
    /// Executors keep running afterwards; their event streams end and they wait for
    /// the agent to come back.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut failed = false;
        while !failed {
            if *shutdown.borrow_and_update() {
                break;
            }
            let retry_at = self.updates.next_retry();
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                completion = self.journal.completion() => {
                    failed = !self.batch_written(completion, true);
                }
                () = sleep_until(retry_at) => {
                    let due = self.updates.due(Instant::now());
                    self.forward(due);
                }
            }
            // Ops gathered while the previous batch was written go out together.
            self.checkpoint_updates();
            self.journal.ship();
        }
        // Leave the checkpoints as complete as the state, for the next agent.
        while !failed {
            self.checkpoint_updates();
            if self.journal.is_idle() {
                break;
            }
            self.journal.ship();
            let completion = self.journal.completion().await;
            failed = !self.batch_written(completion, false);
        }
        for executor in self.executors.values() {
            if let Some(timer) = &executor.timer {
                timer.abort();
            }
        }
        debug!(self.logger, "agent actor stopped");
    }

    /// A batch of checkpoints was written: releases the effects waiting for it and
    /// goes on with the launches it prepared (starting them only if `start`). False
    /// if it could not be made durable: the agent must stop.
    fn batch_written(&mut self, completion: Completion, start: bool) -> bool {
        let (outcome, released) = self.journal.complete(completion);
        for effect in released {
            self.release(effect);
        }
        let BatchOutcome {
            prepared,
            warnings,
            fatal,
            ops,
            took,
        } = outcome;
        self.metrics.checkpoint_batches.inc();
        self.metrics.checkpoint_ops.inc_by(ops as u64);
        self.metrics.checkpoint_seconds.inc_by(took.as_secs_f64());
        for warning in warnings {
            warn!(self.logger, "could not update a checkpoint"; "error" => warning);
        }
        if let Some(fatal) = fatal {
            error!(self.logger, "stopping the agent: a checkpoint cannot be made durable, so nothing \
                that depends on it may be sent; a restarted agent recovers from the disk";
                "error" => fatal);
            return false;
        }
        for (ticket, result) in prepared {
            self.launch_prepared(&ContainerId(ticket), result, start);
        }
        true
    }

    /// Emits `effect` now, or once what it depends on is durable.
    fn emit(&mut self, effect: Effect) {
        self.checkpoint_updates();
        if let Some(effect) = self.journal.after_durable(effect) {
            self.release(effect);
        }
    }

    fn release(&self, effect: Effect) {
        match effect {
            Effect::ToMaster(message) => self.send_to_master_now(*message),
            Effect::Event(events, event) => {
                // A full or closed stream is fine: the executor re-subscribes, and
                // what matters is sent again then.
                let _ = events.try_send(Ok(pb::ExecutorEvent {
                    event: Some(*event),
                }));
            }
            Effect::Reply(reply) => reply(),
        }
    }

    /// Emits an event for an executor, if it has a stream.
    fn emit_event(&mut self, events: Option<EventSender>, event: pb::executor_event::Event) {
        if let Some(events) = events {
            self.emit(Effect::Event(events, Box::new(event)));
        }
    }

    /// Answers a caller once what the answer depends on is durable.
    fn reply<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, answer: T) {
        self.emit(Effect::Reply(Box::new(move || {
            let _ = reply.send(answer);
        })));
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Registration { reply } => {
                let message = self.registration_message();
                self.reply(reply, message);
            }
            Command::Registered { agent_id, outbound } => self.registered(agent_id, outbound),
            Command::Disconnected => self.disconnected(),
            Command::Refused {
                reason,
                while_registering,
            } => self.refused(&reason, while_registering),
            Command::FromMaster(message) => self.master_message(*message),
            Command::Subscribe { request, reply } => {
                let answer = self.executor_subscribe(request);
                self.reply(reply, answer);
            }
            Command::Update { request, reply } => {
                let answer = self.executor_update(request);
                self.reply(reply, answer);
            }
            Command::Message { request, reply } => {
                let answer = self.executor_message(request);
                self.reply(reply, answer);
            }
            Command::ContainerLaunched {
                container_id,
                result,
            } => self.container_launched(&container_id, result),
            Command::ContainerExited {
                container_id,
                termination,
            } => self.container_exited(&container_id, &termination),
            Command::RegistrationTimeout { container_id } => {
                self.registration_timeout(&container_id)
            }
            Command::ReregistrationTimeout { container_id } => {
                self.reregistration_timeout(&container_id)
            }
            Command::ShutdownGraceExpired { container_id } => {
                self.shutdown_grace_expired(&container_id)
            }
        }
    }

    /// Sends to the master once what the message depends on is durable.
    fn send_to_master(&mut self, message: ToMaster) {
        self.emit(Effect::ToMaster(Box::new(message)));
    }

    /// Sends to the master if attached. Messages are dropped otherwise (or when the
    /// link is congested): status updates are resent on reconnect and by retries,
    /// and everything else is at-most-once by protocol, as in Mesos.
    fn send_to_master_now(&self, message: ToMaster) {
        let Some(outbound) = &self.outbound else {
            return;
        };
        if let Err(e) = outbound.try_send(pb::AgentMessage {
            message: Some(message),
        }) {
            debug!(self.logger, "message to the master dropped"; "reason" => %e);
        }
    }

    fn forward(&mut self, updates: Vec<pb::StatusUpdate>) {
        for update in updates {
            self.metrics.status_updates_sent.inc();
            self.send_to_master(ToMaster::StatusUpdate(update));
        }
    }

    /// Checkpoints and queues a status for `key` (the task must be known), and sends
    /// it on if it is the head of its stream. Duplicates are accepted silently.
    fn accept_status(
        &mut self,
        key: &StreamKey,
        status: pb::TaskStatus,
    ) -> Result<(), StatusUpdateError> {
        let Some(task) = self.tasks.get(key) else {
            return Err(StatusUpdateError::Incomplete);
        };
        let checkpoint = task
            .meta_dir
            .as_ref()
            .map(|dir| dir.join(meta::TASK_UPDATES_FILE));
        let update = pb::StatusUpdate {
            framework_id: Some(pb::FrameworkId {
                value: key.framework_id.clone(),
            }),
            executor_id: Some(pb::ExecutorId {
                value: task.executor_id.clone(),
            }),
            status: Some(status.clone()),
            latest_state: status.state,
        };
        let accepted = self
            .updates
            .update(update, checkpoint.as_deref(), Instant::now())?;
        if accepted == Accepted::Duplicate {
            return Ok(());
        }
        self.metrics.status_updates.inc();
        if let Some(task) = self.tasks.get_mut(key) {
            task.state = status.state;
            task.latest_status = Some(status);
        }
        if let Accepted::Forward(update) = accepted {
            self.forward(vec![*update]);
        }
        Ok(())
    }

    /// Adds a checkpoint op to the journal, after the status-update records
    /// accepted before it.
    fn checkpoint(&mut self, op: DiskOp) {
        self.checkpoint_updates();
        self.journal.push(op);
    }

    /// Hands the records the status-update manager accepted to the journal. Every
    /// op and every effect goes through here first (see [`Self::checkpoint`],
    /// [`Self::emit`]), so records keep their place in the order of things and
    /// nothing that depends on one is released before it is durable.
    fn checkpoint_updates(&mut self) {
        for write in self.updates.take_writes() {
            self.journal.push(DiskOp::Append {
                log: write.path,
                record: write.record,
                create: write.create,
            });
        }
    }

    /// A status the agent itself generates for a task it knows.
    fn agent_status(
        &mut self,
        key: &StreamKey,
        state: pb::TaskState,
        reason: Reason,
        message: &str,
    ) {
        let Some(task) = self.tasks.get(key) else {
            return;
        };
        let status = pb::TaskStatus {
            task_id: Some(pb::TaskId {
                value: key.task_id.clone(),
            }),
            state: state as i32,
            message: truncate(message, agora_core::limits::MAX_STATUS_MESSAGE_BYTES),
            source: Source::Agent as i32,
            reason: reason as i32,
            agent_id: self.agent_id_proto(),
            executor_id: Some(pb::ExecutorId {
                value: task.executor_id.clone(),
            }),
            timestamp: agora_core::time::now_secs(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            ..Default::default()
        };
        debug!(self.logger, "agent status update";
            "task_id" => &key.task_id, "state" => state.as_str_name(), "message" => message);
        if let Err(e) = self.accept_status(key, status) {
            warn!(self.logger, "could not record a status update"; "task_id" => &key.task_id, "error" => %e);
        }
    }

    fn agent_id_proto(&self) -> Option<pb::AgentId> {
        self.agent_id
            .as_ref()
            .map(|id| pb::AgentId { value: id.clone() })
    }

    fn agent_info(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            id: self.agent_id_proto(),
            hostname: self.settings.hostname.clone(),
            resources: self.settings.resources.clone(),
            attributes: self.settings.attributes.clone(),
            endpoint: self.settings.endpoint.clone(),
        }
    }

    /// Runs `command` after `delay` (a timer the actor can abort).
    fn schedule(&self, delay: Duration, command: Command) -> AbortHandle {
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = commands.send(command).await;
        })
        .abort_handle()
    }

    /// Kills everything in a container, in the background.
    fn destroy(&self, container_id: &ContainerId) {
        let containerizer = self.containerizer.clone();
        let logger = self.logger.clone();
        let container_id = container_id.clone();
        tokio::spawn(async move {
            if let Err(e) = containerizer.destroy(&container_id).await {
                warn!(logger, "could not destroy container"; "container" => %container_id, "error" => %e);
            }
        });
    }

    /// The terminal update of `key` was acknowledged: forget the task and whatever
    /// only it kept alive (its checkpoints, a finished executor run, the framework).
    fn task_finished(&mut self, key: &StreamKey) {
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        if let Some(dir) = &task.meta_dir {
            self.remove_meta(dir);
        }
        if let Some(container_id) = &task.container {
            if let Some(executor) = self.executors.get_mut(container_id) {
                executor.tasks.remove(&key.task_id);
            } else {
                self.forget_run_if_unused(&task.framework_id, &task.executor_id, container_id);
            }
        }
        self.forget_framework_if_unused(&key.framework_id);
    }

    /// Removes an exited executor run's checkpoints once no tracked task needs them.
    fn forget_run_if_unused(
        &mut self,
        framework_id: &str,
        executor_id: &str,
        container_id: &ContainerId,
    ) {
        let in_use = self.executors.contains_key(container_id)
            || self
                .tasks
                .values()
                .any(|t| t.container.as_ref() == Some(container_id));
        if !in_use {
            let dir = meta::executor_run_meta_dir(
                &self.settings.work_dir,
                framework_id,
                executor_id,
                &container_id.0,
            );
            self.remove_meta(&dir);
        }
    }

    /// Forgets a framework without executors: one shutting down together with its
    /// tasks and update streams, any other once it has no tasks left.
    fn forget_framework_if_unused(&mut self, framework_id: &str) {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        if self
            .executors
            .values()
            .any(|e| e.framework_id == framework_id)
        {
            return;
        }
        if framework.shutting_down {
            self.tasks.retain(|k, _| k.framework_id != framework_id);
            self.updates.remove_framework(framework_id);
        } else if self.tasks.keys().any(|k| k.framework_id == framework_id) {
            return;
        }
        self.frameworks.remove(framework_id);
        self.remove_meta(&meta::framework_meta_dir(
            &self.settings.work_dir,
            framework_id,
        ));
        debug!(self.logger, "framework forgotten"; "framework_id" => framework_id);
    }

    /// Removes a checkpoint directory (and the parents it leaves empty).
    fn remove_meta(&mut self, dir: &std::path::Path) {
        self.checkpoint(DiskOp::RemoveTree {
            dir: dir.to_path_buf(),
            stop_at: meta::frameworks_meta_dir(&self.settings.work_dir),
        });
    }

    fn invalid(&self, what: &str, reason: &str) {
        self.metrics.invalid_messages.inc();
        warn!(self.logger, "invalid message ignored"; "what" => what, "reason" => reason);
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Partition-aware frameworks hear TASK_DROPPED/TASK_GONE where others hear
/// TASK_LOST, as in Mesos.
fn is_partition_aware(info: &pb::FrameworkInfo) -> bool {
    has_capability(info, pb::framework_info::capability::Type::PartitionAware)
}

fn has_capability(info: &pb::FrameworkInfo, wanted: pb::framework_info::capability::Type) -> bool {
    info.capabilities.iter().any(|c| c.r#type == wanted as i32)
}
