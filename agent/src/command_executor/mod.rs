//! The built-in command executor, Agora's `mesos-executor`: a separate process per
//! task (the `agora-executor` binary, or `agora executor`) that subscribes to its
//! agent, runs the task's command and reports on it.
//!
//! On LAUNCH it reports TASK_STARTING, starts the command in its own process group
//! and reports TASK_RUNNING; when the command ends it reports TASK_FINISHED (exit 0)
//! or TASK_FAILED with the exit code. On KILL it reports TASK_KILLING (if the
//! framework understands it), sends SIGTERM to the group and SIGKILL after the grace
//! period, and reports TASK_KILLED. Every update gets a fresh uuid and is kept until
//! the agent acknowledges it: resent periodically and on re-subscription. When the
//! agent goes away (it restarts) the executor keeps the task running and re-subscribes
//! with backoff for up to the recovery timeout; after that it kills the task and
//! exits. It exits once its terminal update is acknowledged.
//!
//! - [`env`](mod@env): the variables the agent sets for executors.
//! - `task_process`: starting, signalling and describing the task's process.

pub mod env;
mod task_process;

use std::time::Duration;

use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::executor_api_client::ExecutorApiClient;
use agora_proto::executor_event::Event;
use agora_proto::task_status::{Reason, Source};
use slog::{Logger, debug, error, info, warn};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

pub use env::{EnvError, ExecutorEnv};
use task_process::{TaskProcess, describe_exit};

/// First wait between subscription attempts; doubles up to [`SUBSCRIBE_BACKOFF_MAX`].
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Kept short so a restarted agent sees its executors back well within its
/// re-registration timeout (2 s by default).
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the agent to answer one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unacknowledged updates are resent while subscribed.
const RESEND_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the command executor from the environment an agent set; returns the exit
/// code for the process (0 after a delivered terminal update).
pub async fn run_from_env(logger: Logger) -> i32 {
    match ExecutorEnv::from_env() {
        Ok(env) => run(env, logger).await,
        Err(e) => {
            error!(logger, "cannot start the command executor"; "error" => %e);
            2
        }
    }
}

/// Runs the command executor with an explicit environment (in-process harnesses).
pub async fn run(env: ExecutorEnv, logger: Logger) -> i32 {
    CommandExecutor::new(env, logger).run().await
}

/// How one subscription ended.
enum SessionEnd {
    /// The terminal update was acknowledged (or nothing is left to do).
    Finished,
    /// The event stream broke.
    Disconnected,
}

/// Why subscribing failed.
enum SubscribeError {
    /// Worth retrying (agent unreachable or restarting).
    Transient(String),
    /// The agent refused us for good.
    Refused(String),
}

struct CommandExecutor {
    /// What the agent told us (endpoint, ids, token, sandbox, timeouts).
    env: ExecutorEnv,
    logger: Logger,
    /// Connected client; `None` between subscriptions.
    client: Option<ExecutorApiClient<Channel>>,
    /// From SUBSCRIBED: decides whether TASK_KILLING is sent.
    framework_info: Option<pb::FrameworkInfo>,
    /// From SUBSCRIBED; set on every update.
    agent_id: Option<pb::AgentId>,
    /// The one task this executor runs, once launched.
    task: Option<pb::TaskInfo>,
    /// Its process while it runs.
    process: Option<TaskProcess>,
    /// Updates sent and not yet acknowledged, oldest first.
    unacked: Vec<pb::TaskStatus>,
    /// A terminal update was produced; nothing follows it.
    terminal_sent: bool,
    /// A kill is in progress (SIGTERM sent).
    killing: bool,
    /// When SIGKILL follows the SIGTERM of a kill.
    escalate_at: Option<Instant>,
    /// The agent asked us to shut down.
    shutting_down: bool,
}

impl CommandExecutor {
    fn new(env: ExecutorEnv, logger: Logger) -> Self {
        Self {
            env,
            logger,
            client: None,
            framework_info: None,
            agent_id: None,
            task: None,
            process: None,
            unacked: Vec::new(),
            terminal_sent: false,
            killing: false,
            escalate_at: None,
            shutting_down: false,
        }
    }

    async fn run(mut self) -> i32 {
        info!(self.logger, "command executor starting";
            "executor_id" => &self.env.executor_id, "agent" => &self.env.agent_endpoint);
        let mut deadline = Instant::now() + self.env.recovery_timeout;
        loop {
            let events = match self.subscribe(deadline).await {
                Ok(events) => events,
                Err(reason) => {
                    error!(self.logger, "giving up on the agent; killing the task"; "reason" => &reason);
                    if let Some(process) = &self.process {
                        process.signal(libc::SIGKILL);
                    }
                    return 1;
                }
            };
            match self.serve(events).await {
                SessionEnd::Finished => {
                    info!(self.logger, "command executor done");
                    return 0;
                }
                SessionEnd::Disconnected => {
                    warn!(self.logger, "lost the agent; re-subscribing";
                        "recovery_timeout" => ?self.env.recovery_timeout);
                    self.client = None;
                    deadline = Instant::now() + self.env.recovery_timeout;
                }
            }
        }
    }

    fn finished(&self) -> bool {
        let terminal_delivered = self.terminal_sent
            && !self
                .unacked
                .iter()
                .any(|s| agora_core::task_state::is_terminal_raw(s.state));
        terminal_delivered || (self.shutting_down && self.task.is_none())
    }

    /// Subscribes, retrying transient failures with backoff until `deadline`; the
    /// task is watched meanwhile so its end is recorded even while disconnected.
    async fn subscribe(
        &mut self,
        deadline: Instant,
    ) -> Result<tonic::Streaming<pb::ExecutorEvent>, String> {
        let mut backoff = SUBSCRIBE_BACKOFF_MIN;
        loop {
            match self.try_subscribe().await {
                Ok(events) => return Ok(events),
                Err(SubscribeError::Refused(reason)) => return Err(reason),
                Err(SubscribeError::Transient(reason)) => {
                    debug!(self.logger, "cannot subscribe yet"; "reason" => &reason);
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(format!("the agent was unreachable for too long: {reason}"));
                    }
                    let wake = (now + backoff).min(deadline);
                    backoff = (backoff * 2).min(SUBSCRIBE_BACKOFF_MAX);
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(wake) => break,
                            status = wait_for(&mut self.process) => self.task_exited(status).await,
                            () = sleep_until(self.escalate_at) => self.escalate(),
                        }
                    }
                }
            }
        }
    }

    async fn try_subscribe(
        &mut self,
    ) -> Result<tonic::Streaming<pb::ExecutorEvent>, SubscribeError> {
        let endpoint = Endpoint::from_shared(self.env.agent_endpoint.clone())
            .map_err(|e| SubscribeError::Refused(format!("invalid agent endpoint: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| SubscribeError::Transient(e.to_string()))?;
        let mut client = ExecutorApiClient::new(channel)
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES);
        let request = pb::ExecutorSubscribe {
            framework_id: Some(pb::FrameworkId {
                value: self.env.framework_id.clone(),
            }),
            executor_id: Some(pb::ExecutorId {
                value: self.env.executor_id.clone(),
            }),
            token: self.env.token.clone(),
            unacknowledged_tasks: self.task.iter().cloned().collect(),
            unacknowledged_updates: self.unacked.clone(),
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, client.subscribe(request))
            .await
            .map_err(|_| SubscribeError::Transient("no answer to subscribe".into()))?;
        match response {
            Ok(response) => {
                self.client = Some(client);
                Ok(response.into_inner())
            }
            Err(status) if is_permanent(status.code()) => Err(SubscribeError::Refused(format!(
                "the agent refused the subscription: {}",
                status.message()
            ))),
            Err(status) => Err(SubscribeError::Transient(status.message().to_string())),
        }
    }

    async fn serve(&mut self, mut events: tonic::Streaming<pb::ExecutorEvent>) -> SessionEnd {
        let mut resend =
            tokio::time::interval_at(Instant::now() + RESEND_INTERVAL, RESEND_INTERVAL);
        loop {
            if self.finished() {
                return SessionEnd::Finished;
            }
            tokio::select! {
                event = events.message() => match event {
                    Ok(Some(event)) => self.on_event(event).await,
                    Ok(None) => return SessionEnd::Disconnected,
                    Err(status) => {
                        debug!(self.logger, "event stream broke"; "error" => %status);
                        return SessionEnd::Disconnected;
                    }
                },
                status = wait_for(&mut self.process) => self.task_exited(status).await,
                () = sleep_until(self.escalate_at) => self.escalate(),
                _ = resend.tick() => self.resend().await,
            }
        }
    }

    async fn on_event(&mut self, event: pb::ExecutorEvent) {
        match event.event {
            Some(Event::Subscribed(subscribed)) => {
                self.framework_info = subscribed.framework_info;
                self.agent_id = subscribed.agent_info.and_then(|a| a.id);
                info!(self.logger, "subscribed to the agent");
            }
            Some(Event::Launch(launch)) => self.launch(launch.task).await,
            Some(Event::LaunchGroup(_)) => {
                warn!(
                    self.logger,
                    "the command executor does not run task groups; ignoring LAUNCH_GROUP"
                );
            }
            Some(Event::Kill(kill)) => self.kill(kill.task_id, kill.kill_policy).await,
            Some(Event::Acknowledged(ack)) => {
                self.unacked.retain(|s| s.uuid != ack.uuid);
            }
            Some(Event::Message(message)) => {
                info!(self.logger, "framework message received"; "bytes" => message.data.len());
            }
            Some(Event::Shutdown(shutdown)) => self.shutdown(shutdown.grace_period_seconds).await,
            Some(Event::Error(e)) => {
                warn!(self.logger, "the agent reported an error"; "message" => e.message)
            }
            Some(Event::Heartbeat(_)) | None => {}
        }
    }

    async fn launch(&mut self, task: Option<pb::TaskInfo>) {
        let Some(task) = task else {
            warn!(self.logger, "ignoring a LAUNCH without a task");
            return;
        };
        if let Some(current) = &self.task {
            if current.task_id != task.task_id {
                warn!(self.logger, "the command executor runs one task; refusing another";
                    "task_id" => task.task_id.map(|t| t.value));
            }
            return;
        }
        let task_id = task
            .task_id
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        info!(self.logger, "launching task"; "task_id" => &task_id);
        self.task = Some(task.clone());
        if self.shutting_down {
            self.send(
                TaskState::TaskKilled,
                Reason::Unspecified,
                "killed before it started",
                None,
            )
            .await;
            return;
        }
        let Some(command) = &task.command else {
            self.send(
                TaskState::TaskFailed,
                Reason::TaskInvalid,
                "the task has no command",
                None,
            )
            .await;
            return;
        };
        self.send(TaskState::TaskStarting, Reason::Unspecified, "", None)
            .await;
        match TaskProcess::spawn(command, &task_id, self.env.sandbox.as_deref()) {
            Ok(process) => {
                self.process = Some(process);
                self.send(TaskState::TaskRunning, Reason::Unspecified, "", None)
                    .await;
            }
            Err((reason, message)) => {
                warn!(self.logger, "cannot start the command"; "error" => &message);
                self.send(TaskState::TaskFailed, reason, &message, None)
                    .await;
            }
        }
    }

    async fn kill(&mut self, task_id: Option<pb::TaskId>, policy: Option<pb::KillPolicy>) {
        let Some(task) = &self.task else {
            return;
        };
        if task_id.is_some() && task_id != task.task_id {
            warn!(
                self.logger,
                "ignoring a kill for a task this executor does not run"
            );
            return;
        }
        if self.terminal_sent {
            return;
        }
        let grace = policy
            .and_then(|p| p.grace_period_seconds)
            .or_else(|| {
                task.kill_policy
                    .as_ref()
                    .and_then(|p| p.grace_period_seconds)
            })
            .filter(|g| g.is_finite() && *g >= 0.0 && *g <= agora_core::limits::MAX_TIMEOUT_SECONDS)
            .map_or(self.env.default_kill_grace, Duration::from_secs_f64);
        let Some(process) = &self.process else {
            self.send(
                TaskState::TaskKilled,
                Reason::Unspecified,
                "killed before it started",
                None,
            )
            .await;
            return;
        };
        let escalate_at = Instant::now() + grace;
        if self.killing {
            // A second kill may only shorten the grace.
            self.escalate_at = self.escalate_at.map(|at| at.min(escalate_at));
            return;
        }
        info!(self.logger, "killing the task"; "grace" => ?grace);
        process.signal(libc::SIGTERM);
        self.killing = true;
        self.escalate_at = Some(escalate_at);
        let killing_state = self.framework_info.as_ref().is_some_and(|f| {
            f.capabilities
                .iter()
                .any(|c| c.r#type == pb::framework_info::capability::Type::TaskKillingState as i32)
        });
        if killing_state {
            self.send(TaskState::TaskKilling, Reason::Unspecified, "", None)
                .await;
        }
    }

    async fn shutdown(&mut self, grace_seconds: f64) {
        info!(self.logger, "shutting down");
        self.shutting_down = true;
        if self.task.is_some() {
            let policy = pb::KillPolicy {
                grace_period_seconds: Some(grace_seconds),
            };
            self.kill(None, Some(policy)).await;
        }
    }

    fn escalate(&mut self) {
        self.escalate_at = None;
        if let Some(process) = &self.process {
            warn!(
                self.logger,
                "the task outlived its kill grace period; sending SIGKILL"
            );
            process.signal(libc::SIGKILL);
        }
    }

    async fn task_exited(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        let Some(process) = self.process.take() else {
            return;
        };
        self.escalate_at = None;
        let (exit_code, message) = match &status {
            Ok(status) => describe_exit(status),
            Err(e) => (None, format!("cannot wait for the command: {e}")),
        };
        info!(self.logger, "task ended"; "how" => &message);
        if self.killing {
            // Whatever else is left in its group goes too.
            process.signal(libc::SIGKILL);
            self.send(
                TaskState::TaskKilled,
                Reason::Unspecified,
                &message,
                exit_code,
            )
            .await;
        } else if exit_code == Some(0) {
            self.send(
                TaskState::TaskFinished,
                Reason::Unspecified,
                &message,
                exit_code,
            )
            .await;
        } else {
            self.send(
                TaskState::TaskFailed,
                Reason::Unspecified,
                &message,
                exit_code,
            )
            .await;
        }
    }

    /// Creates an update for the task, keeps it until acknowledged and sends it.
    async fn send(
        &mut self,
        state: TaskState,
        reason: Reason,
        message: &str,
        exit_code: Option<i32>,
    ) {
        let Some(task) = &self.task else {
            return;
        };
        if self.terminal_sent {
            return;
        }
        let status = pb::TaskStatus {
            task_id: task.task_id.clone(),
            state: state as i32,
            message: crate::actor::truncate(message, agora_core::limits::MAX_STATUS_MESSAGE_BYTES),
            source: Source::Executor as i32,
            reason: reason as i32,
            agent_id: self.agent_id.clone(),
            executor_id: Some(pb::ExecutorId {
                value: self.env.executor_id.clone(),
            }),
            timestamp: agora_core::time::now_secs(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            exit_code,
            ..Default::default()
        };
        debug!(self.logger, "status update"; "state" => state.as_str_name());
        self.terminal_sent = agora_core::task_state::is_terminal(state);
        self.unacked.push(status.clone());
        self.transmit(status).await;
    }

    /// Sends one update. Transient failures keep it for a later resend; a refusal
    /// drops it (resending cannot help).
    async fn transmit(&mut self, status: pb::TaskStatus) {
        let Some(client) = &mut self.client else {
            return;
        };
        let request = pb::ExecutorUpdate {
            framework_id: Some(pb::FrameworkId {
                value: self.env.framework_id.clone(),
            }),
            executor_id: Some(pb::ExecutorId {
                value: self.env.executor_id.clone(),
            }),
            token: self.env.token.clone(),
            status: Some(status.clone()),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.update(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) if is_permanent(refused.code()) => {
                error!(self.logger, "the agent refused a status update; dropping it";
                    "state" => agora_core::task_state::short_name(status.state), "error" => %refused);
                self.unacked.retain(|s| s.uuid != status.uuid);
            }
            Ok(Err(e)) => debug!(self.logger, "status update not delivered yet"; "error" => %e),
            Err(_) => debug!(self.logger, "status update timed out; it will be resent"),
        }
    }

    async fn resend(&mut self) {
        for status in self.unacked.clone() {
            self.transmit(status).await;
        }
    }
}

/// Errors that retrying cannot fix.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::PermissionDenied
    )
}

/// The task's exit, or never when there is no running task.
async fn wait_for(process: &mut Option<TaskProcess>) -> std::io::Result<std::process::ExitStatus> {
    match process {
        Some(process) => process.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
