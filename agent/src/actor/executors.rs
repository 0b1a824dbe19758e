//! The actor's side of executors: the executor API calls (subscribe, update,
//! message) and the life of each executor container (launched, exited, timed out,
//! shut down).

use std::collections::HashSet;

use agora_core::limits;
use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::agent_message::Message as ToMaster;
use agora_proto::executor_event::Event;
use agora_proto::task_status::{Reason, Source};
use prost::Message as _;
use slog::{error, info, warn};
use tokio::sync::mpsc;
use tonic::Status;

use super::{AgentActor, Command, EXECUTOR_EVENT_QUEUE, Effect, EventReceiver, Phase};
use crate::containerizer::{ContainerId, LaunchSpec, Termination};
use crate::journal::DiskOp;
use crate::meta;
use crate::procfs;
use crate::status_updates::{StatusUpdateError, StreamKey};

fn invalid_argument(e: impl ToString) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Validates the ids every executor call carries.
fn call_ids(
    framework_id: &Option<pb::FrameworkId>,
    executor_id: &Option<pb::ExecutorId>,
) -> Result<(String, String), Status> {
    let fid = framework_id.as_ref().map(|f| f.value.as_str());
    let eid = executor_id.as_ref().map(|e| e.value.as_str());
    limits::id("framework_id", fid).map_err(invalid_argument)?;
    limits::id("executor_id", eid).map_err(invalid_argument)?;
    Ok((
        fid.unwrap_or_default().to_string(),
        eid.unwrap_or_default().to_string(),
    ))
}

/// Compares secrets in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl AgentActor {
    /// Launches a container in the background; reports `ContainerLaunched`, then
    /// `ContainerExited` when it ends.
    pub(super) fn start_container(&self, spec: LaunchSpec) {
        let containerizer = self.containerizer.clone();
        let commands = self.commands.clone();
        let container_id = spec.container_id.clone();
        tokio::spawn(async move {
            // The sandbox is no checkpoint: it is made here, next to the journal's
            // writer rather than by it.
            let sandbox = spec.sandbox.clone();
            let created = tokio::task::spawn_blocking(move || std::fs::create_dir_all(&sandbox))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let launched = match created {
                Ok(()) => containerizer.launch(spec).await.map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "cannot create the sandbox {}: {e}",
                    spec.sandbox.display()
                )),
            };
            match launched {
                Ok(launched) => {
                    // Read at once: the start time tells this process from a later
                    // one with the same pid when a restarted agent reattaches.
                    let forked = launched.pid.map(|pid| meta::ForkedPid {
                        pid,
                        start_time: procfs::start_time(pid).unwrap_or(0),
                    });
                    let _ = commands
                        .send(Command::ContainerLaunched {
                            container_id: container_id.clone(),
                            result: Ok(forked),
                        })
                        .await;
                    let termination = launched.termination.await;
                    let _ = commands
                        .send(Command::ContainerExited {
                            container_id,
                            termination,
                        })
                        .await;
                }
                Err(e) => {
                    let _ = commands
                        .send(Command::ContainerLaunched {
                            container_id,
                            result: Err(e),
                        })
                        .await;
                }
            }
        });
    }

    /// The checkpoints of a launching executor were written (or could not be):
    /// starts it, unless it was killed meanwhile or the agent is stopping (`start`).
    pub(super) fn launch_prepared(
        &mut self,
        container_id: &ContainerId,
        result: Result<(), String>,
        start: bool,
    ) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        let Some(spec) = executor.launch.take() else {
            return;
        };
        match result {
            Ok(()) if executor.destroy_when_started => {
                // Its tasks were killed while the checkpoints were written.
                self.executor_gone(
                    container_id,
                    &Termination {
                        message: "never started: its tasks were killed first".into(),
                        ..Termination::default()
                    },
                    TaskState::TaskKilled,
                    Reason::TaskKilledDuringLaunch,
                    "killed before the executor started the task",
                );
            }
            Ok(()) if start => self.start_container(spec),
            // The agent is stopping; a restarted agent finds the executor never ran.
            Ok(()) => {}
            Err(e) => {
                error!(self.logger, "cannot checkpoint the executor; failing its tasks"; "container" => %container_id, "error" => &e);
                let framework_id = executor.framework_id.clone();
                let task_ids: Vec<String> = executor.tasks.iter().cloned().collect();
                let run_meta = executor.meta_dir.clone();
                // Their checkpoint directory may be half made: their failure is
                // reported without one, and the directory goes.
                for task_id in task_ids {
                    if let Some(task) = self.tasks.get_mut(&StreamKey::new(&framework_id, task_id))
                    {
                        task.meta_dir = None;
                    }
                }
                self.remove_meta(&run_meta);
                self.executor_gone(
                    container_id,
                    &Termination::default(),
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    &format!("cannot checkpoint the executor: {e}"),
                );
            }
        }
    }

    /// Watches a container found running after a restart.
    pub(super) fn watch_recovered_container(&self, container_id: &ContainerId, pid: u32) {
        let termination = self.containerizer.recover(container_id, pid);
        let commands = self.commands.clone();
        let container_id = container_id.clone();
        tokio::spawn(async move {
            let termination = termination.await;
            let _ = commands
                .send(Command::ContainerExited {
                    container_id,
                    termination,
                })
                .await;
        });
    }

    fn authenticate(
        &self,
        framework_id: &str,
        executor_id: &str,
        token: &str,
    ) -> Result<ContainerId, Status> {
        let container_id = self
            .executor_runs
            .get(&(framework_id.to_string(), executor_id.to_string()))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "executor '{executor_id}' of framework '{framework_id}' is not known to this agent"
                ))
            })?;
        let executor = self
            .executors
            .get(container_id)
            .ok_or_else(|| Status::not_found(format!("executor '{executor_id}' has ended")))?;
        if executor.token.is_empty() || !same_token(&executor.token, token) {
            self.metrics.invalid_messages.inc();
            return Err(Status::permission_denied(format!(
                "invalid token for executor '{executor_id}'"
            )));
        }
        Ok(container_id.clone())
    }

    pub(super) fn executor_subscribe(
        &mut self,
        request: pb::ExecutorSubscribe,
    ) -> Result<EventReceiver, Status> {
        let (framework_id, executor_id) = call_ids(&request.framework_id, &request.executor_id)?;
        limits::count(
            "unacknowledged_tasks",
            request.unacknowledged_tasks.len(),
            1024,
        )
        .map_err(invalid_argument)?;
        limits::count(
            "unacknowledged_updates",
            request.unacknowledged_updates.len(),
            1024,
        )
        .map_err(invalid_argument)?;
        for status in &request.unacknowledged_updates {
            limits::task_status(status).map_err(invalid_argument)?;
        }
        let container_id = self.authenticate(&framework_id, &executor_id, &request.token)?;
        let framework_info = self
            .frameworks
            .get(&framework_id)
            .map(|f| f.info.clone())
            .unwrap_or_else(|| pb::FrameworkInfo {
                id: Some(pb::FrameworkId {
                    value: framework_id.clone(),
                }),
                ..Default::default()
            });
        let partition_aware = super::is_partition_aware(&framework_info);
        let agent_info = self.agent_info();
        let grace = self.settings.default_kill_grace.as_secs_f64();
        let (events, receiver) = mpsc::channel(EXECUTOR_EVENT_QUEUE);
        let Some(executor) = self.executors.get_mut(&container_id) else {
            return Err(Status::not_found("executor has ended"));
        };
        if !executor.shutdown_requested
            && let Some(timer) = executor.timer.take()
        {
            timer.abort();
        }
        let resubscribed = executor.phase == Phase::Subscribed;
        let reattached = executor.phase == Phase::Recovering;
        executor.phase = Phase::Subscribed;
        executor.events = Some(events.clone());
        let mut to_send = vec![Event::Subscribed(pb::executor_event::Subscribed {
            executor_info: Some(executor.info.clone()),
            framework_info: Some(framework_info),
            agent_info: Some(agent_info),
        })];
        let known: HashSet<&str> = request
            .unacknowledged_tasks
            .iter()
            .filter_map(|t| t.task_id.as_ref().map(|id| id.value.as_str()))
            .collect();
        let default_executor = executor.info.r#type == pb::executor_info::Type::Default as i32;
        // Groups the executor has: it names one of their tasks, or sent an update
        // for one.
        let mut delivered_groups = HashSet::new();
        for task_id in &executor.tasks {
            if let Some(task) = self.tasks.get(&StreamKey::new(&framework_id, task_id))
                && (known.contains(task_id.as_str())
                    || task
                        .latest_status
                        .as_ref()
                        .is_some_and(|s| s.source == Source::Executor as i32))
            {
                delivered_groups.insert(task.group_key(task_id).to_string());
            }
        }
        // Unlaunched tasks go first, a default executor's as one LAUNCH_GROUP per
        // group (in the order of their first task); kills follow.
        let mut groups: Vec<(String, Vec<pb::TaskInfo>)> = Vec::new();
        let mut launches = Vec::new();
        let mut kills = Vec::new();
        let mut lost = Vec::new();
        for task_id in &executor.tasks {
            let Some(task) = self.tasks.get_mut(&StreamKey::new(&framework_id, task_id)) else {
                continue;
            };
            if known.contains(task_id.as_str()) {
                task.launched = true;
            }
            if task.is_terminal() {
                continue;
            }
            if !known.contains(task_id.as_str()) && task.latest_status.is_none() {
                // The executor never got it: a launch sent on a stream that broke
                // before it arrived, or one a restarted agent cannot tell was sent.
                // The checkpointed TaskInfo is sent again, unless the rest of its
                // group did arrive: relaunching it alone would split the group, so
                // it is lost, as Mesos reports a launch the executor never saw.
                if delivered_groups.contains(task.group_key(task_id)) {
                    lost.push((task_id.clone(), task.kill_requested));
                    continue;
                }
                task.launched = false;
            }
            if !task.launched {
                task.launched = true;
                if default_executor {
                    let group = task.group_key(task_id);
                    match groups.iter_mut().find(|(id, _)| id == group) {
                        Some((_, tasks)) => tasks.push(task.info.clone()),
                        None => groups.push((group.to_string(), vec![task.info.clone()])),
                    }
                } else {
                    launches.push(Event::Launch(pb::executor_event::Launch {
                        task: Some(task.info.clone()),
                    }));
                }
            }
            if task.kill_requested && !executor.shutdown_requested {
                // Resent with the grace period the framework asked for.
                kills.push(Event::Kill(pb::executor_event::Kill {
                    task_id: task.info.task_id.clone(),
                    kill_policy: task.kill_policy,
                }));
            }
        }
        to_send.extend(groups.into_iter().map(|(_, tasks)| {
            Event::LaunchGroup(pb::executor_event::LaunchGroup {
                task_group: Some(pb::TaskGroupInfo { tasks }),
            })
        }));
        to_send.extend(launches);
        to_send.extend(kills);
        if executor.shutdown_requested {
            to_send.push(Event::Shutdown(pb::executor_event::Shutdown {
                grace_period_seconds: grace,
            }));
        }
        for event in to_send {
            self.emit(Effect::Event(events.clone(), Box::new(event)));
        }
        info!(self.logger, "executor subscribed";
            "framework_id" => &framework_id, "executor_id" => &executor_id, "resubscribed" => resubscribed, "reattached" => reattached);
        // As Mesos: after an agent restart the reason says so.
        let lost_reason = if reattached {
            Reason::AgentRestarted
        } else {
            Reason::ExecutorUnregistered
        };
        for (task_id, kill_requested) in lost {
            let (state, reason) = if kill_requested {
                (TaskState::TaskKilled, Reason::TaskKilledDuringLaunch)
            } else if partition_aware {
                (TaskState::TaskDropped, lost_reason)
            } else {
                (TaskState::TaskLost, lost_reason)
            };
            warn!(self.logger, "the executor re-subscribed without a task of a group it has";
                "task_id" => &task_id, "state" => state.as_str_name());
            self.agent_status(
                &StreamKey::new(&framework_id, &task_id),
                state,
                reason,
                "the executor re-subscribed without this task although it has the rest of \
                 its group: the task's launch never reached it",
            );
        }
        for status in request.unacknowledged_updates {
            if let Err(e) = self.executor_status(&container_id, status) {
                warn!(self.logger, "refused an update the executor resent"; "executor_id" => &executor_id, "error" => %e);
            }
        }
        Ok(receiver)
    }

    pub(super) fn executor_update(&mut self, request: pb::ExecutorUpdate) -> Result<(), Status> {
        let (framework_id, executor_id) = call_ids(&request.framework_id, &request.executor_id)?;
        let container_id = self.authenticate(&framework_id, &executor_id, &request.token)?;
        let status = request
            .status
            .ok_or_else(|| Status::invalid_argument("status is required"))?;
        self.executor_status(&container_id, status)
    }

    /// Validates, checkpoints and forwards a status an executor sent, then
    /// acknowledges it to the executor (also when it is a duplicate).
    fn executor_status(
        &mut self,
        container_id: &ContainerId,
        mut status: pb::TaskStatus,
    ) -> Result<(), Status> {
        if let Err(e) = limits::task_status(&status) {
            self.metrics.invalid_messages.inc();
            return Err(invalid_argument(e));
        }
        if status.uuid.is_empty() {
            return Err(Status::invalid_argument(
                "status.uuid is required: the agent acknowledges it",
            ));
        }
        if status.state == TaskState::TaskStaging as i32 {
            return Err(Status::invalid_argument(
                "executors must not send TASK_STAGING",
            ));
        }
        let Some(executor) = self.executors.get(container_id) else {
            return Err(Status::not_found("executor has ended"));
        };
        let task_id = status
            .task_id
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        if !executor.tasks.contains(&task_id) {
            self.metrics.invalid_messages.inc();
            return Err(Status::not_found(format!(
                "task '{task_id}' is not a task of executor '{}'",
                executor.executor_id
            )));
        }
        let key = StreamKey::new(&executor.framework_id, &task_id);
        status.agent_id = self.agent_id_proto();
        status.executor_id = Some(pb::ExecutorId {
            value: executor.executor_id.clone(),
        });
        status.source = Source::Executor as i32;
        if !status.timestamp.is_finite() || status.timestamp <= 0.0 {
            status.timestamp = agora_core::time::now_secs();
        }
        let uuid = status.uuid.clone();
        match self.accept_status(&key, status) {
            Ok(()) => {}
            Err(e @ StatusUpdateError::Terminated { .. }) => {
                return Err(Status::failed_precondition(e.to_string()));
            }
            Err(e @ StatusUpdateError::Backlogged { .. }) => {
                return Err(Status::resource_exhausted(e.to_string()));
            }
            Err(e @ StatusUpdateError::Checkpoint { .. }) => {
                warn!(self.logger, "cannot checkpoint a status update"; "error" => %e);
                return Err(Status::unavailable(e.to_string()));
            }
            Err(e) => return Err(invalid_argument(e)),
        }
        let events = self
            .executors
            .get(container_id)
            .and_then(|e| e.events.clone());
        self.emit_event(
            events,
            Event::Acknowledged(pb::executor_event::Acknowledged {
                task_id: Some(pb::TaskId { value: task_id }),
                uuid,
            }),
        );
        Ok(())
    }

    pub(super) fn executor_message(&mut self, request: pb::ExecutorMessage) -> Result<(), Status> {
        let (framework_id, executor_id) = call_ids(&request.framework_id, &request.executor_id)?;
        limits::bytes("data", request.data.len(), limits::MAX_MESSAGE_DATA_BYTES)
            .map_err(invalid_argument)?;
        self.authenticate(&framework_id, &executor_id, &request.token)?;
        self.send_to_master(ToMaster::FrameworkMessage(
            pb::agent_message::FrameworkMessage {
                framework_id: request.framework_id,
                executor_id: request.executor_id,
                data: request.data,
            },
        ));
        Ok(())
    }

    pub(super) fn container_launched(
        &mut self,
        container_id: &ContainerId,
        result: Result<Option<meta::ForkedPid>, String>,
    ) {
        match result {
            Ok(forked) => {
                let Some(executor) = self.executors.get_mut(container_id) else {
                    return;
                };
                if executor.phase == Phase::Launching {
                    executor.phase = Phase::Started;
                }
                let destroy = executor.destroy_when_started;
                if let Some(forked) = forked {
                    // Without it a restarted agent cannot reattach (a failure is
                    // logged with the batch's warnings).
                    let path = executor.meta_dir.join(meta::FORKED_PID_FILE);
                    self.checkpoint(DiskOp::WriteFile {
                        path,
                        bytes: forked.encode_to_vec(),
                    });
                }
                if destroy {
                    self.destroy(container_id);
                }
            }
            Err(reason) => {
                warn!(self.logger, "executor launch failed"; "container" => %container_id, "error" => &reason);
                self.executor_gone(
                    container_id,
                    &Termination::default(),
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    &format!("cannot launch the executor: {reason}"),
                );
            }
        }
    }

    pub(super) fn container_exited(
        &mut self,
        container_id: &ContainerId,
        termination: &Termination,
    ) {
        if !self.executors.contains_key(container_id) {
            return;
        }
        info!(self.logger, "executor exited"; "container" => %container_id, "how" => &termination.message);
        // Sweep up whatever the executor left behind in its session.
        self.destroy(container_id);
        self.executor_gone(
            container_id,
            termination,
            TaskState::TaskFailed,
            Reason::ExecutorTerminated,
            &format!("Executor terminated: {}", termination.message),
        );
    }

    /// Forgets an executor that ended (or never started): its tasks that are not
    /// terminal get `state` (TASK_KILLED instead when a kill was asked for), the
    /// master hears ExecutorExited, and checkpoints nothing needs are removed.
    pub(super) fn executor_gone(
        &mut self,
        container_id: &ContainerId,
        termination: &Termination,
        state: TaskState,
        reason: Reason,
        message: &str,
    ) {
        let Some(executor) = self.executors.remove(container_id) else {
            return;
        };
        if let Some(timer) = &executor.timer {
            timer.abort();
        }
        let run_key = (executor.framework_id.clone(), executor.executor_id.clone());
        if self.executor_runs.get(&run_key) == Some(container_id) {
            self.executor_runs.remove(&run_key);
        }
        self.metrics.executors.dec();
        self.metrics.executor_exits.inc();
        for task_id in &executor.tasks {
            let key = StreamKey::new(&executor.framework_id, task_id);
            let Some(task) = self.tasks.get(&key) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            let state = if task.kill_requested || executor.shutdown_requested {
                TaskState::TaskKilled
            } else {
                state
            };
            self.agent_status(&key, state, reason, message);
        }
        self.executor_exited_message(&executor, termination.wait_status);
        self.forget_run_if_unused(&executor.framework_id, &executor.executor_id, container_id);
        self.forget_framework_if_unused(&executor.framework_id);
    }

    /// Fails the tasks of an executor that did not subscribe in time, and kills it.
    pub(super) fn registration_timeout(&mut self, container_id: &ContainerId) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        if !matches!(executor.phase, Phase::Launching | Phase::Started) {
            return;
        }
        executor.timer = None;
        let timeout = self.settings.executor_registration_timeout;
        warn!(self.logger, "executor did not subscribe in time; killing it";
            "container" => %container_id, "timeout" => ?timeout);
        self.fail_and_destroy(
            container_id,
            Reason::ExecutorRegistrationTimeout,
            &format!("the executor did not subscribe within {timeout:?}"),
        );
    }

    /// Fails the tasks of a recovered executor that did not re-subscribe in time.
    pub(super) fn reregistration_timeout(&mut self, container_id: &ContainerId) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        if executor.phase != Phase::Recovering {
            return;
        }
        executor.timer = None;
        let timeout = self.settings.executor_reregistration_timeout;
        warn!(self.logger, "recovered executor did not re-subscribe in time; killing it";
            "container" => %container_id, "timeout" => ?timeout);
        self.fail_and_destroy(
            container_id,
            Reason::ExecutorReregistrationTimeout,
            &format!(
                "the executor did not re-subscribe within {timeout:?} after the agent restarted"
            ),
        );
    }

    fn fail_and_destroy(&mut self, container_id: &ContainerId, reason: Reason, message: &str) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        let launching = executor.phase == Phase::Launching;
        executor.destroy_when_started = launching;
        let framework_id = executor.framework_id.clone();
        let task_ids: Vec<String> = executor.tasks.iter().cloned().collect();
        for task_id in task_ids {
            let key = StreamKey::new(&framework_id, &task_id);
            if self.tasks.get(&key).is_some_and(|t| !t.is_terminal()) {
                let state = if self.tasks.get(&key).is_some_and(|t| t.kill_requested) {
                    TaskState::TaskKilled
                } else {
                    TaskState::TaskFailed
                };
                self.agent_status(&key, state, reason, message);
            }
        }
        if !launching {
            self.destroy(container_id);
        }
    }

    pub(super) fn shutdown_grace_expired(&mut self, container_id: &ContainerId) {
        if let Some(executor) = self.executors.get_mut(container_id) {
            executor.timer = None;
            warn!(self.logger, "executor did not shut down in time; destroying it"; "container" => %container_id);
            self.destroy(container_id);
        }
    }

    /// Destroys an executor none of whose tasks is still live.
    pub(super) fn stop_executor_if_idle(&mut self, container_id: &ContainerId) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        let idle = executor.tasks.iter().all(|t| {
            self.tasks
                .get(&StreamKey::new(&executor.framework_id, t))
                .is_none_or(|t| t.is_terminal())
        });
        if !idle {
            return;
        }
        if executor.phase == Phase::Launching {
            executor.destroy_when_started = true;
        } else {
            self.destroy(container_id);
        }
    }

    /// Asks an executor to kill its tasks and exit (framework shutdown); it is
    /// destroyed if it has not exited after the kill grace plus the shutdown grace.
    pub(super) fn shutdown_executor(&mut self, container_id: &ContainerId) {
        let grace = self.settings.default_kill_grace;
        let deadline = grace + self.settings.executor_shutdown_grace;
        let timer = self.schedule(
            deadline,
            Command::ShutdownGraceExpired {
                container_id: container_id.clone(),
            },
        );
        let Some(executor) = self.executors.get_mut(container_id) else {
            timer.abort();
            return;
        };
        executor.shutdown_requested = true;
        if let Some(old) = executor.timer.replace(timer) {
            old.abort();
        }
        let framework_id = executor.framework_id.clone();
        for task_id in &executor.tasks {
            if let Some(task) = self.tasks.get_mut(&StreamKey::new(&framework_id, task_id)) {
                task.kill_requested = true;
            }
        }
        match executor.phase {
            Phase::Subscribed => {
                let events = executor.events.clone();
                self.emit_event(
                    events,
                    Event::Shutdown(pb::executor_event::Shutdown {
                        grace_period_seconds: grace.as_secs_f64(),
                    }),
                );
            }
            // Told to shut down when it re-subscribes; destroyed by the timer if not.
            Phase::Recovering => {}
            Phase::Launching | Phase::Started => {
                let task_ids: Vec<String> = executor.tasks.iter().cloned().collect();
                for task_id in task_ids {
                    let key = StreamKey::new(&framework_id, &task_id);
                    if self.tasks.get(&key).is_some_and(|t| !t.is_terminal()) {
                        self.agent_status(
                            &key,
                            TaskState::TaskKilled,
                            Reason::FrameworkRemoved,
                            "the framework was shut down before the task started",
                        );
                    }
                }
                self.stop_executor_if_idle(container_id);
            }
        }
    }
}
