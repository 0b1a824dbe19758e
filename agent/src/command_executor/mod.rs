//! The built-in executor, Agora's `mesos-executor` and Mesos' default executor in
//! one: a separate process (the `agora-executor` binary, or `agora executor`) that
//! subscribes to its agent and runs the tasks it is given — the one task of a
//! LAUNCH (the command executor) or the tasks of a LAUNCH_GROUP (the default
//! executor), all in the executor's sandbox.
//!
//! For each task it reports TASK_STARTING, fetches its URIs into the sandbox
//! (`fetcher`; a failure is TASK_FAILED), starts the command in its own process
//! group and reports TASK_RUNNING; when the command ends it reports TASK_FINISHED
//! (exit 0) or TASK_FAILED with the exit code. On KILL it reports TASK_KILLING (if
//! the framework understands it), sends SIGTERM to the group and SIGKILL after the
//! grace period, and reports TASK_KILLED. The tasks of one group live and die
//! together, as under Mesos' default executor: when one fails or is killed, the
//! others are killed. A task with a health check gets a checker ([`health`]) whose
//! changes are TASK_RUNNING updates with `healthy` set; when it spends its failure
//! budget the task is killed and its TASK_KILLED carries healthy=false.
//!
//! Every update gets a fresh uuid and is kept until the agent acknowledges it:
//! resent periodically and on re-subscription. When the agent goes away (it
//! restarts) the executor keeps its tasks running and re-subscribes with backoff for
//! up to the recovery timeout; after that it kills them and exits. It exits once
//! every task's terminal update is acknowledged.
//!
//! - [`env`](mod@env): the variables the agent sets for executors.
//! - `tasks`: the per-task state and waiting for any task's process.
//! - `fetcher`: the task's URIs, downloaded into the sandbox before it starts.
//! - `health`: health checks (policy, probes).
//! - `task_process`: starting, signalling and describing a task's process.

pub mod env;
mod fetcher;
mod health;
mod task_process;
mod tasks;

use std::time::Duration;

use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::executor_api_client::ExecutorApiClient;
use agora_proto::executor_event::Event;
use agora_proto::task_status::{Reason, Source};
use slog::{Logger, debug, error, info, warn};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

pub use env::{EnvError, ExecutorEnv};
use health::{HealthChange, HealthPolicy, TaskProbe};
use task_process::{TaskProcess, describe_exit};
use tasks::{AbortOnDrop, LaunchedTask, TaskSet};

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

/// Runs the executor from the environment an agent set; returns the exit code for
/// the process (0 after every terminal update was delivered).
pub async fn run_from_env(logger: Logger) -> i32 {
    match ExecutorEnv::from_env() {
        Ok(env) => run(env, logger).await,
        Err(e) => {
            error!(logger, "cannot start the command executor"; "error" => %e);
            2
        }
    }
}

/// Runs the executor with an explicit environment (in-process harnesses).
pub async fn run(env: ExecutorEnv, logger: Logger) -> i32 {
    CommandExecutor::new(env, logger).run().await
}

/// How one subscription ended.
enum SessionEnd {
    /// Every terminal update was acknowledged (or nothing is left to do).
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

/// A health checker's report: the task it checks and the change.
type HealthReport = (String, HealthChange);

/// What the executor does next, as decided by the `select!` in its loops (handled
/// after the select so that the handlers may borrow the executor freely).
enum Wakeup {
    Exited(String, std::io::Result<std::process::ExitStatus>),
    Escalate,
    Health(HealthReport),
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
    /// Every task launched here.
    tasks: TaskSet,
    /// Number of the next launch (see [`LaunchedTask::group`]).
    next_group: u32,
    /// Updates sent and not yet acknowledged, oldest first.
    unacked: Vec<pb::TaskStatus>,
    /// The agent asked us to shut down.
    shutting_down: bool,
    /// Handed (cloned) to every health checker.
    health_sender: mpsc::UnboundedSender<HealthReport>,
    /// Changes of health from the checkers, in the order they happened.
    health_receiver: mpsc::UnboundedReceiver<HealthReport>,
}

impl CommandExecutor {
    fn new(env: ExecutorEnv, logger: Logger) -> Self {
        let (health_sender, health_receiver) = mpsc::unbounded_channel();
        Self {
            env,
            logger,
            client: None,
            framework_info: None,
            agent_id: None,
            tasks: TaskSet::default(),
            next_group: 0,
            unacked: Vec::new(),
            shutting_down: false,
            health_sender,
            health_receiver,
        }
    }

    async fn run(mut self) -> i32 {
        info!(self.logger, "executor starting";
            "executor_id" => &self.env.common.executor_id, "agent" => &self.env.common.agent_endpoint);
        let mut deadline = Instant::now() + self.env.common.recovery_timeout;
        loop {
            let events = match self.subscribe(deadline).await {
                Ok(events) => events,
                Err(reason) => {
                    error!(self.logger, "giving up on the agent; killing the tasks"; "reason" => &reason);
                    self.tasks.signal_all(libc::SIGKILL);
                    return 1;
                }
            };
            match self.serve(events).await {
                SessionEnd::Finished => {
                    info!(self.logger, "executor done");
                    return 0;
                }
                SessionEnd::Disconnected => {
                    warn!(self.logger, "lost the agent; re-subscribing";
                        "recovery_timeout" => ?self.env.common.recovery_timeout);
                    self.client = None;
                    deadline = Instant::now() + self.env.common.recovery_timeout;
                }
            }
        }
    }

    /// Every task's terminal update was acknowledged (with at least one task, or
    /// after a shutdown).
    fn finished(&self) -> bool {
        let delivered = self.tasks.all_terminal()
            && !self
                .unacked
                .iter()
                .any(|s| agora_core::task_state::is_terminal_raw(s.state));
        delivered && (!self.tasks.is_empty() || self.shutting_down)
    }

    /// Waits for the next thing the tasks need handled (a process ended, a kill
    /// escalates, a health check changed).
    async fn next_wakeup(&mut self) -> Wakeup {
        let escalate_at = self.tasks.next_escalation();
        tokio::select! {
            (task_id, status) = self.tasks.wait_any() => Wakeup::Exited(task_id, status),
            () = sleep_until(escalate_at) => Wakeup::Escalate,
            Some(report) = self.health_receiver.recv() => Wakeup::Health(report),
        }
    }

    async fn handle(&mut self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::Exited(task_id, status) => self.task_exited(&task_id, status).await,
            Wakeup::Escalate => self.escalate(),
            Wakeup::Health((task_id, change)) => self.health_changed(&task_id, change).await,
        }
    }

    /// Subscribes, retrying transient failures with backoff until `deadline`; the
    /// tasks are watched meanwhile so their ends are recorded even while
    /// disconnected.
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
                        let wakeup = tokio::select! {
                            () = tokio::time::sleep_until(wake) => break,
                            wakeup = self.next_wakeup() => wakeup,
                        };
                        self.handle(wakeup).await;
                    }
                }
            }
        }
    }

    async fn try_subscribe(
        &mut self,
    ) -> Result<tonic::Streaming<pb::ExecutorEvent>, SubscribeError> {
        let endpoint = Endpoint::from_shared(self.env.common.agent_endpoint.clone())
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
                value: self.env.common.framework_id.clone(),
            }),
            executor_id: Some(pb::ExecutorId {
                value: self.env.common.executor_id.clone(),
            }),
            token: self.env.common.token.clone(),
            unacknowledged_tasks: self.tasks.iter().map(|(_, t)| t.info.clone()).collect(),
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
                wakeup = self.next_wakeup() => self.handle(wakeup).await,
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
            Some(Event::Launch(launch)) => match launch.task {
                Some(task) => self.launch(vec![task], false).await,
                None => warn!(self.logger, "ignoring a LAUNCH without a task"),
            },
            Some(Event::LaunchGroup(group)) => {
                let tasks = group.task_group.map(|g| g.tasks).unwrap_or_default();
                if tasks.is_empty() {
                    warn!(self.logger, "ignoring a LAUNCH_GROUP without tasks");
                } else {
                    self.launch(tasks, true).await;
                }
            }
            Some(Event::Kill(kill)) => match kill.task_id.map(|t| t.value) {
                // An empty id means "every task" inside `kill`; a KILL naming no task
                // must not be read that way.
                Some(task_id) if !task_id.is_empty() => {
                    self.kill(&task_id, kill.kill_policy, None).await
                }
                _ => warn!(self.logger, "ignoring a KILL that names no task"),
            },
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

    /// Launches `tasks`: the one task of a LAUNCH, or a group that starts whole or
    /// not at all and then lives and dies together.
    async fn launch(&mut self, tasks: Vec<pb::TaskInfo>, as_group: bool) {
        if !as_group && !self.tasks.is_empty() {
            let task_id = task_id_of(&tasks[0]);
            if !self.tasks.contains(&task_id) {
                warn!(self.logger, "the command executor runs one task; refusing another";
                    "task_id" => task_id);
            }
            return;
        }
        let group = self.next_group;
        self.next_group += 1;
        let mut ids = Vec::new();
        for task in tasks {
            let task_id = task_id_of(&task);
            if task_id.is_empty() || self.tasks.contains(&task_id) {
                // Relaunched on re-subscription, or nameless: nothing to do.
                continue;
            }
            info!(self.logger, "launching task"; "task_id" => &task_id, "group" => group);
            self.tasks
                .insert(task_id.clone(), LaunchedTask::new(task, group));
            ids.push(task_id);
        }
        if self.shutting_down {
            for task_id in &ids {
                let status = status(
                    TaskState::TaskKilled,
                    Reason::Unspecified,
                    "killed before it started",
                );
                self.send(task_id, status).await;
            }
            return;
        }
        // Every task is checked before any starts.
        let mut problems = Vec::new();
        for task_id in &ids {
            if let Err(problem) = self.health_probe(task_id, None).map(drop) {
                problems.push((task_id.clone(), problem));
            } else if self
                .tasks
                .get(task_id)
                .is_some_and(|t| t.info.command.is_none())
            {
                problems.push((task_id.clone(), "the task has no command".to_string()));
            }
        }
        if let Some((first, _)) = problems.first() {
            let cause = format!("not started: task '{first}' of its group is invalid");
            for (task_id, problem) in &problems {
                let status = status(TaskState::TaskFailed, Reason::TaskInvalid, problem);
                self.send(task_id, status).await;
            }
            self.group_ended(group, &cause).await;
            return;
        }
        for task_id in &ids {
            if let Err((reason, message)) = self.start(task_id).await {
                warn!(self.logger, "cannot start the command"; "task_id" => task_id, "error" => &message);
                self.send(task_id, status(TaskState::TaskFailed, reason, &message))
                    .await;
                let cause = format!("task '{task_id}' of its group could not be started");
                self.group_ended(group, &cause).await;
                return;
            }
        }
    }

    /// The task's health checker, if it has a health check (checked, not started).
    /// COMMAND checks run as `checks` builds them (where the task runs), or as plain
    /// processes like the task's command when `None`.
    fn health_probe(
        &self,
        task_id: &str,
        checks: Option<task_process::CheckCommands>,
    ) -> Result<Option<(HealthPolicy, TaskProbe)>, String> {
        let Some(task) = self.tasks.get(task_id) else {
            return Ok(None);
        };
        let Some(check) = &task.info.health_check else {
            return Ok(None);
        };
        let policy = HealthPolicy::from_proto(check)?;
        let checks = checks.unwrap_or_else(|| task_process::CheckCommands::Process {
            task: task.info.command.clone().unwrap_or_default(),
            task_id: task_id.to_string(),
            sandbox: self.env.common.sandbox.clone(),
        });
        let probe = TaskProbe::from_proto(check, move |check| checks.command(check))?;
        Ok(Some((policy, probe)))
    }

    /// Starts one task's process (and its health checker) and reports it running.
    async fn start(&mut self, task_id: &str) -> Result<(), (Reason, String)> {
        let Some(info) = self
            .tasks
            .get(task_id)
            .filter(|t| t.info.command.is_some())
            .map(|t| t.info.clone())
        else {
            return Err((Reason::TaskInvalid, "the task has no command".into()));
        };
        // Checked before the task starts; rebuilt below to run where it runs.
        let checker = self
            .health_probe(task_id, None)
            .map_err(|e| (Reason::TaskInvalid, e))?;
        self.send(
            task_id,
            status(TaskState::TaskStarting, Reason::Unspecified, ""),
        )
        .await;
        // As Mesos' fetcher: after TASK_STARTING, before the command. Events wait
        // meanwhile; each download is bounded by the fetcher's timeout.
        let uris = info.command.as_ref().map_or(&[][..], |c| &c.uris[..]);
        let logger = self.logger.new(slog::o!("task_id" => task_id.to_string()));
        fetcher::fetch_all(uris, self.env.common.sandbox.as_deref(), &logger)
            .await
            .map_err(|e| (Reason::ContainerLaunchFailed, e.to_string()))?;
        let process = TaskProcess::launch(&info, &self.env).await?;
        let checker = match checker {
            // Checked above already: the same check cannot fail now.
            Some(_) => self
                .health_probe(task_id, Some(process.check_commands()))
                .ok()
                .flatten(),
            None => None,
        };
        let health = checker.map(|(policy, probe)| {
            let sender = self.health_sender.clone();
            let id = task_id.to_string();
            AbortOnDrop(tokio::spawn(health::run_checker(
                policy,
                probe,
                move |change| sender.send((id.clone(), change)).is_ok(),
            )))
        });
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.process = Some(process);
            task.health = health;
        }
        self.send(
            task_id,
            status(TaskState::TaskRunning, Reason::Unspecified, ""),
        )
        .await;
        Ok(())
    }

    /// Kills the live tasks of `group` because one of them ended (or could not
    /// start): the group lives and dies together.
    async fn group_ended(&mut self, group: u32, cause: &str) {
        for task_id in self.tasks.live_in_group(group) {
            self.kill(&task_id, None, Some(cause)).await;
        }
    }

    /// Kills a task (every live task for an empty id): SIGTERM now, SIGKILL after
    /// the grace period. `cause` says why when the executor kills it on its own.
    async fn kill(&mut self, task_id: &str, policy: Option<pb::KillPolicy>, cause: Option<&str>) {
        if task_id.is_empty() {
            for task_id in self.tasks.live() {
                Box::pin(self.kill(&task_id, policy, cause)).await;
            }
            return;
        }
        let default_grace = self.env.default_kill_grace;
        let Some(task) = self.tasks.get_mut(task_id) else {
            warn!(self.logger, "ignoring a kill for a task this executor does not run";
                "task_id" => task_id);
            return;
        };
        if task.terminal_sent {
            return;
        }
        let grace = policy
            .and_then(|p| p.grace_period_seconds)
            .or_else(|| {
                task.info
                    .kill_policy
                    .as_ref()
                    .and_then(|p| p.grace_period_seconds)
            })
            .filter(|g| g.is_finite() && *g >= 0.0 && *g <= agora_core::limits::MAX_TIMEOUT_SECONDS)
            .map_or(default_grace, Duration::from_secs_f64);
        if task.kill_cause.is_none() && !task.killing {
            task.kill_cause = cause.map(str::to_string);
        }
        // A task being killed is not checked any more.
        task.health = None;
        let Some(process) = &task.process else {
            let message = cause.unwrap_or("killed before it started").to_string();
            self.send(
                task_id,
                status(TaskState::TaskKilled, Reason::Unspecified, &message),
            )
            .await;
            return;
        };
        let escalate_at = Instant::now() + grace;
        if task.killing {
            // A second kill may only shorten the grace.
            task.escalate_at = task.escalate_at.map(|at| at.min(escalate_at));
            return;
        }
        info!(self.logger, "killing the task"; "task_id" => task_id, "grace" => ?grace);
        process.signal(libc::SIGTERM);
        task.killing = true;
        task.escalate_at = Some(escalate_at);
        let killing_state = self.framework_info.as_ref().is_some_and(|f| {
            f.capabilities
                .iter()
                .any(|c| c.r#type == pb::framework_info::capability::Type::TaskKillingState as i32)
        });
        if killing_state {
            self.send(
                task_id,
                status(TaskState::TaskKilling, Reason::Unspecified, ""),
            )
            .await;
        }
    }

    async fn shutdown(&mut self, grace_seconds: f64) {
        info!(self.logger, "shutting down");
        self.shutting_down = true;
        let policy = pb::KillPolicy {
            grace_period_seconds: Some(grace_seconds),
        };
        for task_id in self.tasks.live() {
            self.kill(&task_id, Some(policy), None).await;
        }
    }

    fn escalate(&mut self) {
        for task_id in self.tasks.escalate_due(Instant::now()) {
            warn!(self.logger, "the task outlived its kill grace period; sent SIGKILL";
                "task_id" => task_id);
        }
    }

    async fn task_exited(
        &mut self,
        task_id: &str,
        exit: std::io::Result<std::process::ExitStatus>,
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let Some(process) = task.process.take() else {
            return;
        };
        task.escalate_at = None;
        task.health = None;
        let (exit_code, how) = match &exit {
            Ok(exit) => describe_exit(exit),
            Err(e) => (None, format!("cannot wait for the command: {e}")),
        };
        info!(self.logger, "task ended"; "task_id" => task_id, "how" => &how);
        let group = task.group;
        let mut update = if task.killing {
            // Whatever else is left in its group goes too.
            process.signal(libc::SIGKILL);
            if let Some(finding) = &task.killed_by_health {
                let mut update = status(
                    TaskState::TaskKilled,
                    Reason::TaskHealthCheckStatusUpdated,
                    &format!("killed after failing its health check ({finding}); {how}"),
                );
                update.healthy = Some(false);
                update
            } else if let Some(cause) = &task.kill_cause {
                status(
                    TaskState::TaskKilled,
                    Reason::Unspecified,
                    &format!("{cause}; {how}"),
                )
            } else {
                status(TaskState::TaskKilled, Reason::Unspecified, &how)
            }
        } else if exit_code == Some(0) {
            status(TaskState::TaskFinished, Reason::Unspecified, &how)
        } else if let Some((reason, limitation)) = process.limitation() {
            status(
                TaskState::TaskFailed,
                reason,
                &format!("{limitation}; {how}"),
            )
        } else {
            status(TaskState::TaskFailed, Reason::Unspecified, &how)
        };
        update.exit_code = exit_code;
        let state = update.state();
        self.send(task_id, update).await;
        if state != TaskState::TaskFinished {
            let cause = format!(
                "killed because task '{task_id}' of its group ended {}",
                state.as_str_name()
            );
            self.group_ended(group, &cause).await;
        }
    }

    /// A health checker saw a change: the framework hears it in a TASK_RUNNING, and
    /// a spent failure budget kills the task.
    async fn health_changed(&mut self, task_id: &str, change: HealthChange) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.terminal_sent || task.killing || task.process.is_none() {
            return;
        }
        info!(self.logger, "task health changed"; "task_id" => task_id,
            "healthy" => change.healthy, "consecutive_failures" => change.consecutive_failures);
        // Only a change is news: the kill that follows failures already reported
        // unhealthy shows in the terminal update.
        if task.healthy != Some(change.healthy) {
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.healthy = Some(change.healthy);
            }
            let mut update = status(
                TaskState::TaskRunning,
                Reason::TaskHealthCheckStatusUpdated,
                &change.message,
            );
            update.healthy = Some(change.healthy);
            self.send(task_id, update).await;
        }
        if change.kill {
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.killed_by_health = Some(change.message);
            }
            warn!(self.logger, "killing the task: its health check failed too often"; "task_id" => task_id);
            self.kill(task_id, None, None).await;
        }
    }

    /// Completes an update of `task_id` (ids, uuid, time), keeps it until
    /// acknowledged and sends it. Nothing follows a task's terminal update.
    async fn send(&mut self, task_id: &str, mut status: pb::TaskStatus) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.terminal_sent {
            return;
        }
        status.task_id = task.info.task_id.clone();
        status.source = Source::Executor as i32;
        status.agent_id = self.agent_id.clone();
        status.executor_id = Some(pb::ExecutorId {
            value: self.env.common.executor_id.clone(),
        });
        status.timestamp = agora_core::time::now_secs();
        status.uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
        debug!(self.logger, "status update"; "task_id" => task_id,
            "state" => agora_core::task_state::short_name(status.state));
        task.terminal_sent = agora_core::task_state::is_terminal_raw(status.state);
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
                value: self.env.common.framework_id.clone(),
            }),
            executor_id: Some(pb::ExecutorId {
                value: self.env.common.executor_id.clone(),
            }),
            token: self.env.common.token.clone(),
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

/// The parts of an update the executor decides; [`CommandExecutor::send`] fills in
/// the rest.
fn status(state: TaskState, reason: Reason, message: &str) -> pb::TaskStatus {
    pb::TaskStatus {
        state: state as i32,
        reason: reason as i32,
        message: crate::actor::truncate(message, agora_core::limits::MAX_STATUS_MESSAGE_BYTES),
        ..Default::default()
    }
}

fn task_id_of(task: &pb::TaskInfo) -> String {
    task.task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default()
}

/// Errors that retrying cannot fix.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::PermissionDenied
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
