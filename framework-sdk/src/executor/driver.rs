//! [`ExecutorDriver`]: subscribes to the agent, dispatches its events to an
//! [`Executor`] and delivers status updates reliably (see the module documentation
//! of [`super`]).

use std::collections::VecDeque;
use std::time::Duration;

use agora_proto as pb;
use agora_proto::executor_api_client::ExecutorApiClient;
use agora_proto::executor_event::Event;
use slog::{Logger, debug, error, info, warn};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::handle::Call;
use super::{EnvError, Executor, ExecutorEnv, ExecutorError, ExecutorHandle};
use crate::backoff::Backoff;

/// First wait between subscription attempts; doubles up to [`SUBSCRIBE_BACKOFF_MAX`].
const SUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Short, so a restarted agent sees its executors back well within its
/// re-registration timeout (Mesos: 2 s).
const SUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the agent to answer one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unacknowledged updates are resent while subscribed.
const RESEND_INTERVAL: Duration = Duration::from_secs(10);
/// The protocol's limit on what a subscription carries back (tasks, updates), and
/// on framework messages held while the agent is away.
const MAX_PENDING: usize = 1024;

/// How one subscription ended.
enum SessionEnd {
    /// Stopped, with every update acknowledged.
    Done,
    /// The event stream broke: re-subscribe.
    Disconnected,
}

/// See the module documentation.
pub struct ExecutorDriver {
    /// What the agent set.
    env: ExecutorEnv,
    logger: Logger,
    /// Given to every callback; clones reach `calls`.
    handle: ExecutorHandle,
    /// Calls from the handles, in the order they were made.
    calls: mpsc::UnboundedReceiver<Call>,
    /// True once [`ExecutorHandle::stop`] was called.
    stop: watch::Receiver<bool>,
    /// Connected client; `None` between subscriptions.
    client: Option<ExecutorApiClient<Channel>>,
    /// Tasks received and not yet acknowledged in any update, sent back on
    /// re-subscription so a restarted agent does not launch them again.
    unacked_tasks: Vec<pb::TaskInfo>,
    /// Updates sent and not yet acknowledged, oldest first.
    unacked_updates: Vec<pb::TaskStatus>,
    /// Framework messages made while not subscribed, oldest first (at most
    /// [`MAX_PENDING`]).
    pending_messages: VecDeque<Vec<u8>>,
}

impl ExecutorDriver {
    /// A driver for the executor the agent started this process as.
    pub fn from_env(logger: Logger) -> Result<Self, ExecutorError> {
        Ok(Self::new(ExecutorEnv::from_env()?, logger))
    }

    /// A driver with an explicit environment (for in-process harnesses).
    pub fn new(env: ExecutorEnv, logger: Logger) -> Self {
        let (sender, calls) = mpsc::unbounded_channel();
        let handle = ExecutorHandle::new(env.clone(), sender);
        let stop = handle.stop_requested();
        Self {
            env,
            logger,
            handle,
            calls,
            stop,
            client: None,
            unacked_tasks: Vec::new(),
            unacked_updates: Vec::new(),
            pending_messages: VecDeque::new(),
        }
    }

    /// A handle for calls from outside the callbacks (e.g. spawned tasks).
    pub fn handle(&self) -> ExecutorHandle {
        self.handle.clone()
    }

    /// Runs `executor` until [`ExecutorHandle::stop`] was called and every update is
    /// acknowledged. Fails when the agent refuses the executor or stays unreachable
    /// for longer than the recovery timeout; the executor should then kill its tasks
    /// and exit (its agent has given up on them).
    pub async fn run<E: Executor>(mut self, executor: &mut E) -> Result<(), ExecutorError> {
        info!(self.logger, "executor starting";
            "executor_id" => &self.env.executor_id, "agent" => &self.env.agent_endpoint);
        loop {
            let deadline = Instant::now() + self.env.recovery_timeout;
            let Some(events) = self.subscribe(deadline).await? else {
                return Ok(());
            };
            match self.serve(events, executor).await {
                SessionEnd::Done => {
                    info!(self.logger, "executor driver stopped");
                    return Ok(());
                }
                SessionEnd::Disconnected => {
                    warn!(self.logger, "lost the agent; re-subscribing";
                        "recovery_timeout" => ?self.env.recovery_timeout);
                    self.client = None;
                    let handle = self.handle.clone();
                    executor.disconnected(&handle).await;
                }
            }
        }
    }

    /// Stopped, and nothing left to deliver: an update queued just before the stop
    /// (a terminal one, typically) still sits in `calls` and must go out first.
    fn done(&self) -> bool {
        *self.stop.borrow() && self.unacked_updates.is_empty() && self.calls.is_empty()
    }

    /// Subscribes, retrying what is worth retrying with backoff until `deadline`;
    /// calls made meanwhile are kept. `None`: stopped with nothing to deliver.
    async fn subscribe(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<tonic::Streaming<pb::ExecutorEvent>>, ExecutorError> {
        let mut backoff = Backoff::new(SUBSCRIBE_BACKOFF_MIN, SUBSCRIBE_BACKOFF_MAX);
        loop {
            if self.done() {
                return Ok(None);
            }
            let reason = match self.try_subscribe().await {
                Ok(events) => return Ok(Some(events)),
                Err(Ok(reason)) => reason,
                Err(Err(refused)) => return Err(refused),
            };
            debug!(self.logger, "cannot subscribe yet"; "reason" => &reason);
            let now = Instant::now();
            if now >= deadline {
                return Err(ExecutorError::AgentUnreachable {
                    timeout: self.env.recovery_timeout,
                    reason,
                });
            }
            let wake = (now + backoff.next_delay()).min(deadline);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    Some(call) = self.calls.recv() => self.keep(call),
                    changed = self.stop.changed() => {
                        if changed.is_err() || self.done() {
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// A call made while not subscribed: kept for the next subscription.
    fn keep(&mut self, call: Call) {
        match call {
            Call::Update(status) => self.unacked_updates.push(*status),
            Call::Message(data) => {
                if self.pending_messages.len() >= MAX_PENDING {
                    warn!(
                        self.logger,
                        "dropping a framework message: too many are waiting for the agent"
                    );
                    self.pending_messages.pop_front();
                }
                self.pending_messages.push_back(data);
            }
        }
    }

    /// One attempt. `Err(Ok(reason))`: worth retrying; `Err(Err(_))`: refused.
    async fn try_subscribe(
        &mut self,
    ) -> Result<tonic::Streaming<pb::ExecutorEvent>, Result<String, ExecutorError>> {
        let endpoint = Endpoint::from_shared(self.env.agent_endpoint.clone())
            .map_err(|e| {
                Err(ExecutorError::Env(EnvError::Invalid {
                    name: super::env::AGENT_ENDPOINT,
                    reason: e.to_string(),
                }))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| Ok(e.to_string()))?;
        let mut client = ExecutorApiClient::new(channel)
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES);
        let keep_from = |len: usize| len.saturating_sub(MAX_PENDING);
        let request = pb::ExecutorSubscribe {
            framework_id: Some(self.framework_id()),
            executor_id: Some(self.executor_id()),
            token: self.env.token.clone(),
            unacknowledged_tasks: self.unacked_tasks[keep_from(self.unacked_tasks.len())..]
                .to_vec(),
            unacknowledged_updates: self.unacked_updates
                [..self.unacked_updates.len().min(MAX_PENDING)]
                .to_vec(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.subscribe(request)).await {
            Err(_) => Err(Ok("no answer to subscribe".into())),
            Ok(Ok(response)) => {
                self.client = Some(client);
                Ok(response.into_inner())
            }
            Ok(Err(status)) if is_permanent(status.code()) => {
                Err(Err(ExecutorError::Refused(status.message().to_string())))
            }
            Ok(Err(status)) => Err(Ok(status.message().to_string())),
        }
    }

    async fn serve<E: Executor>(
        &mut self,
        mut events: tonic::Streaming<pb::ExecutorEvent>,
        executor: &mut E,
    ) -> SessionEnd {
        let mut resend =
            tokio::time::interval_at(Instant::now() + RESEND_INTERVAL, RESEND_INTERVAL);
        while let Some(data) = self.pending_messages.pop_front() {
            self.transmit_message(data).await;
        }
        loop {
            if self.done() {
                return SessionEnd::Done;
            }
            tokio::select! {
                event = events.message() => match event {
                    Ok(Some(event)) => self.on_event(event, executor).await,
                    Ok(None) => return SessionEnd::Disconnected,
                    Err(status) => {
                        debug!(self.logger, "event stream broke"; "error" => %status);
                        return SessionEnd::Disconnected;
                    }
                },
                Some(call) = self.calls.recv() => match call {
                    Call::Update(status) => {
                        self.unacked_updates.push((*status).clone());
                        self.transmit_update(*status).await;
                    }
                    Call::Message(data) => self.transmit_message(data).await,
                },
                _ = self.stop.changed() => {}
                _ = resend.tick() => {
                    // An agent that does not answer one update will not answer the
                    // next either: stop at the first miss so events (kills) are not
                    // held up by a timeout per pending update.
                    for status in self.unacked_updates.clone() {
                        if !self.transmit_update(status).await {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn on_event<E: Executor>(&mut self, event: pb::ExecutorEvent, executor: &mut E) {
        let handle = self.handle.clone();
        match event.event {
            Some(Event::Subscribed(subscribed)) => {
                info!(self.logger, "subscribed to the agent");
                self.handle
                    .set_agent_id(subscribed.agent_info.as_ref().and_then(|a| a.id.clone()));
                executor.subscribed(&handle, subscribed).await;
            }
            Some(Event::Launch(launch)) => {
                let Some(task) = launch.task else {
                    warn!(self.logger, "ignoring a LAUNCH without a task");
                    return;
                };
                if self.remember_task(&task) {
                    executor.launch_task(&handle, task).await;
                }
            }
            Some(Event::LaunchGroup(launch)) => {
                let Some(mut group) = launch.task_group else {
                    warn!(self.logger, "ignoring a LAUNCH_GROUP without tasks");
                    return;
                };
                group.tasks.retain(|task| self.remember_task(task));
                if !group.tasks.is_empty() {
                    executor.launch_group(&handle, group).await;
                }
            }
            Some(Event::Kill(kill)) => {
                let Some(task_id) = kill.task_id else {
                    warn!(self.logger, "ignoring a KILL without a task id");
                    return;
                };
                executor.kill_task(&handle, task_id, kill.kill_policy).await;
            }
            Some(Event::Acknowledged(ack)) => {
                self.unacked_updates.retain(|s| s.uuid != ack.uuid);
                let Some(task_id) = ack.task_id else { return };
                // The agent knows the task now: no need to tell it again.
                self.unacked_tasks
                    .retain(|t| t.task_id.as_ref() != Some(&task_id));
                executor.acknowledged(&handle, task_id, ack.uuid).await;
            }
            Some(Event::Message(message)) => {
                executor.framework_message(&handle, message.data).await
            }
            Some(Event::Shutdown(shutdown)) => {
                let grace = Some(shutdown.grace_period_seconds)
                    .filter(|g| {
                        g.is_finite() && *g >= 0.0 && *g <= agora_core::limits::MAX_TIMEOUT_SECONDS
                    })
                    .map_or(Duration::ZERO, Duration::from_secs_f64);
                info!(self.logger, "the agent asked the executor to shut down"; "grace" => ?grace);
                executor.shutdown(&handle, grace).await;
            }
            Some(Event::Error(e)) => {
                warn!(self.logger, "the agent reported an error"; "message" => &e.message);
                executor.error(&handle, e.message).await;
            }
            Some(Event::Heartbeat(_)) | None => {}
        }
    }

    /// Records a launched task; false if it is already known (a LAUNCH resent).
    fn remember_task(&mut self, task: &pb::TaskInfo) -> bool {
        if task.task_id.is_none() || self.unacked_tasks.iter().any(|t| t.task_id == task.task_id) {
            return false;
        }
        self.unacked_tasks.push(task.clone());
        true
    }

    fn framework_id(&self) -> pb::FrameworkId {
        pb::FrameworkId {
            value: self.env.framework_id.clone(),
        }
    }

    fn executor_id(&self) -> pb::ExecutorId {
        pb::ExecutorId {
            value: self.env.executor_id.clone(),
        }
    }

    /// Sends one update. A transient failure keeps it for a resend; a refusal drops
    /// it (resending cannot help). Returns whether the agent answered.
    async fn transmit_update(&mut self, status: pb::TaskStatus) -> bool {
        let request = pb::ExecutorUpdate {
            framework_id: Some(self.framework_id()),
            executor_id: Some(self.executor_id()),
            token: self.env.token.clone(),
            status: Some(status.clone()),
        };
        let Some(client) = &mut self.client else {
            return false;
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.update(request)).await {
            Ok(Ok(_)) => true,
            Ok(Err(refused)) if is_permanent(refused.code()) => {
                error!(self.logger, "the agent refused a status update; dropping it";
                    "state" => agora_core::task_state::short_name(status.state), "error" => %refused);
                self.unacked_updates.retain(|s| s.uuid != status.uuid);
                true
            }
            Ok(Err(e)) => {
                debug!(self.logger, "status update not delivered yet"; "error" => %e);
                false
            }
            Err(_) => {
                debug!(self.logger, "status update timed out; it will be resent");
                false
            }
        }
    }

    async fn transmit_message(&mut self, data: Vec<u8>) {
        let request = pb::ExecutorMessage {
            framework_id: Some(self.framework_id()),
            executor_id: Some(self.executor_id()),
            token: self.env.token.clone(),
            data,
        };
        let Some(client) = &mut self.client else {
            return;
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.message(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(self.logger, "the agent did not take a framework message"; "error" => %e)
            }
            Err(_) => warn!(self.logger, "a framework message timed out"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs no task; enough to exercise the connection logic.
    struct Idle;

    impl Executor for Idle {
        async fn launch_task(&mut self, _: &ExecutorHandle, _: pb::TaskInfo) {}
        async fn kill_task(
            &mut self,
            _: &ExecutorHandle,
            _: pb::TaskId,
            _: Option<pb::KillPolicy>,
        ) {
        }
    }

    /// An environment naming an agent port nothing listens on.
    fn env_without_agent(recovery_timeout: Duration) -> ExecutorEnv {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        ExecutorEnv {
            agent_endpoint: format!("http://127.0.0.1:{port}"),
            framework_id: "fw".into(),
            executor_id: "ex".into(),
            token: "secret".into(),
            sandbox: None,
            recovery_timeout,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_away_past_the_recovery_timeout_ends_the_driver() {
        let driver = ExecutorDriver::new(
            env_without_agent(Duration::from_secs(5)),
            crate::discard_logger(),
        );
        let err = driver.run(&mut Idle).await.unwrap_err();
        assert!(
            matches!(err, ExecutorError::AgentUnreachable { timeout, .. } if timeout == Duration::from_secs(5)),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_with_nothing_to_deliver_needs_no_agent() {
        let driver = ExecutorDriver::new(
            env_without_agent(Duration::from_secs(600)),
            crate::discard_logger(),
        );
        driver.handle().stop();
        assert_eq!(driver.run(&mut Idle).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_sent_right_before_the_stop_is_still_delivered() {
        let driver = ExecutorDriver::new(
            env_without_agent(Duration::from_secs(5)),
            crate::discard_logger(),
        );
        let handle = driver.handle();
        // What an executor does when its last task ends: report, then stop.
        handle
            .send_status_update(pb::TaskStatus {
                task_id: Some(pb::TaskId { value: "t".into() }),
                state: pb::TaskState::TaskFinished as i32,
                ..Default::default()
            })
            .unwrap();
        handle.stop();
        // The update is kept for the agent, which never comes: not a clean stop.
        let err = driver.run(&mut Idle).await.unwrap_err();
        assert!(
            matches!(err, ExecutorError::AgentUnreachable { .. }),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_updates_are_refused_before_they_are_sent() {
        let driver = ExecutorDriver::new(
            env_without_agent(Duration::from_secs(600)),
            crate::discard_logger(),
        );
        let handle = driver.handle();
        let staging = pb::TaskStatus {
            task_id: Some(pb::TaskId { value: "t".into() }),
            state: pb::TaskState::TaskStaging as i32,
            ..Default::default()
        };
        assert!(matches!(
            handle.send_status_update(staging),
            Err(ExecutorError::InvalidUpdate(_))
        ));
        let no_task = pb::TaskStatus {
            state: pb::TaskState::TaskRunning as i32,
            ..Default::default()
        };
        assert!(matches!(
            handle.send_status_update(no_task),
            Err(ExecutorError::InvalidUpdate(_))
        ));
        drop(driver);
        let fine = pb::TaskStatus {
            task_id: Some(pb::TaskId { value: "t".into() }),
            state: pb::TaskState::TaskRunning as i32,
            ..Default::default()
        };
        assert_eq!(handle.send_status_update(fine), Err(ExecutorError::Stopped));
    }
}
