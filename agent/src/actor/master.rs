//! The actor's side of the master link: what to register with, what a
//! (dis)connection changes, and everything the master sends.

use agora_core::limits;
use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::agent_message::Message as ToMaster;
use agora_proto::master_message::Message as FromMaster;
use agora_proto::task_status::Reason;
use prost::Message as _;
use slog::{debug, info, warn};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::custom_executors::NewExecutorRun;
use super::{AgentActor, Effect, Executor, Framework, LinkState, Phase, Task, is_partition_aware};
use crate::containerizer::ContainerId;
use crate::journal::DiskOp;
use crate::meta;
use crate::status_updates::{Acknowledged, StreamKey};

/// Pulls an id's string out of an optional id message and validates it.
fn checked_id<'a>(field: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    limits::id(field, value).map_err(|e| e.to_string())?;
    Ok(value.unwrap_or_default())
}

/// What the master needs of a task on re-registration: identity, placement and
/// resources. Data, commands and environments are left out so that an agent with
/// many large tasks still fits in one message.
fn report_task_info(info: &pb::TaskInfo) -> pb::TaskInfo {
    pb::TaskInfo {
        name: info.name.clone(),
        task_id: info.task_id.clone(),
        agent_id: info.agent_id.clone(),
        resources: info.resources.clone(),
        executor: info.executor.as_ref().map(|e| pb::ExecutorInfo {
            r#type: e.r#type,
            executor_id: e.executor_id.clone(),
            framework_id: e.framework_id.clone(),
            name: e.name.clone(),
            ..Default::default()
        }),
        kill_policy: info.kill_policy,
        ..Default::default()
    }
}

impl AgentActor {
    /// `Register` for a new agent, `Reregister` (with every task) for a known one.
    pub(super) fn registration_message(&self) -> pb::AgentMessage {
        let version = env!("CARGO_PKG_VERSION").to_string();
        let message = if self.agent_id.is_some() {
            let mut tasks: Vec<pb::TaskReport> = self
                .tasks
                .iter()
                .map(|(key, task)| pb::TaskReport {
                    framework_id: Some(pb::FrameworkId {
                        value: key.framework_id.clone(),
                    }),
                    task: Some(report_task_info(&task.info)),
                    state: task.state,
                    latest_status: task.latest_status.clone().map(|mut s| {
                        s.data.clear();
                        s
                    }),
                })
                .collect();
            tasks.truncate(limits::MAX_REREGISTER_TASKS);
            ToMaster::Reregister(pb::agent_message::Reregister {
                agent_info: Some(self.agent_info()),
                version,
                tasks,
                frameworks: self.frameworks.values().map(|f| f.info.clone()).collect(),
            })
        } else {
            ToMaster::Register(pb::agent_message::Register {
                agent_info: Some(self.agent_info()),
                version,
            })
        };
        pb::AgentMessage {
            message: Some(message),
        }
    }

    pub(super) fn registered(
        &mut self,
        agent_id: String,
        outbound: mpsc::Sender<pb::AgentMessage>,
    ) {
        if self.agent_id.as_deref() != Some(agent_id.as_str()) {
            if let Some(old) = &self.agent_id {
                warn!(self.logger, "the master assigned a new agent id"; "old" => old, "new" => &agent_id);
            }
            // A failure is logged with the batch's warnings; a restart would then
            // register anew.
            self.checkpoint(DiskOp::WriteFile {
                path: meta::agent_id_path(&self.settings.work_dir),
                bytes: agent_id.as_bytes().to_vec(),
            });
            self.agent_id = Some(agent_id.clone());
        }
        info!(self.logger, "registered with the master"; "agent_id" => &agent_id);
        self.outbound = Some(outbound);
        self.metrics.registrations.inc();
        self.metrics.master_connected.set(1);
        self.link_state.send_replace(LinkState {
            agent_id: Some(agent_id),
            registered: true,
        });
        let heads = self.updates.connected(Instant::now());
        self.forward(heads);
    }

    pub(super) fn disconnected(&mut self) {
        self.outbound = None;
        self.updates.disconnected();
        self.metrics.master_connected.set(0);
        self.link_state.send_modify(|s| s.registered = false);
    }

    /// The master refused us. If it refused our id, the master has written this agent
    /// off (its tasks were declared lost), so running them on would let a task id run
    /// twice: kill everything, forget the id and register as a new agent.
    pub(super) fn refused(&mut self, reason: &str, while_registering: bool) {
        warn!(self.logger, "the master refused this agent"; "reason" => reason);
        if !(while_registering && self.agent_id.is_some()) {
            return;
        }
        warn!(
            self.logger,
            "forgetting the agent id and every task; registering as a new agent"
        );
        for (container_id, executor) in self.executors.drain() {
            if let Some(timer) = executor.timer {
                timer.abort();
            }
            let containerizer = self.containerizer.clone();
            let logger = self.logger.clone();
            tokio::spawn(async move {
                if let Err(e) = containerizer.destroy(&container_id).await {
                    warn!(logger, "could not destroy container"; "container" => %container_id, "error" => %e);
                }
            });
        }
        self.metrics.executors.set(0);
        self.executor_runs.clear();
        let keys: Vec<StreamKey> = self.tasks.keys().cloned().collect();
        for key in &keys {
            self.updates.remove(key);
        }
        self.tasks.clear();
        self.frameworks.clear();
        self.remove_meta(&meta::frameworks_meta_dir(&self.settings.work_dir));
        self.checkpoint(DiskOp::RemoveFile {
            path: meta::agent_id_path(&self.settings.work_dir),
        });
        self.agent_id = None;
        self.link_state.send_replace(LinkState::default());
    }

    pub(super) fn master_message(&mut self, message: FromMaster) {
        match message {
            FromMaster::RunTask(run) => self.run_task(run.framework_info, run.task),
            FromMaster::RunTaskGroup(run) => self.run_task_group(run),
            FromMaster::KillTask(kill) => self.kill_task(kill),
            FromMaster::ShutdownFramework(shutdown) => {
                match checked_id(
                    "shutdown_framework.framework_id",
                    shutdown.framework_id.as_ref().map(|f| f.value.as_str()),
                ) {
                    Ok(fid) => self.shutdown_framework(fid),
                    Err(e) => self.invalid("ShutdownFramework", &e),
                }
            }
            FromMaster::Acknowledge(ack) => self.acknowledge(ack),
            FromMaster::FrameworkMessage(message) => self.framework_message(message),
            // Handled by the master link itself.
            FromMaster::Registered(_)
            | FromMaster::Ping(_)
            | FromMaster::Refused(_)
            | FromMaster::Error(_) => {}
        }
    }

    /// Records (and checkpoints) what the master says about a framework. The
    /// checkpoint is only rewritten when the info changed: every launch carries it.
    fn remember_framework(&mut self, framework_id: &str, info: &pb::FrameworkInfo) {
        if self
            .frameworks
            .get(framework_id)
            .is_some_and(|f| f.info == *info)
        {
            return;
        }
        self.checkpoint(DiskOp::WriteFile {
            path: meta::framework_meta_dir(&self.settings.work_dir, framework_id)
                .join(meta::FRAMEWORK_INFO_FILE),
            bytes: info.encode_to_vec(),
        });
        self.frameworks
            .entry(framework_id.to_string())
            .and_modify(|f| f.info = info.clone())
            .or_insert_with(|| Framework {
                info: info.clone(),
                shutting_down: false,
            });
    }

    fn run_task(&mut self, framework_info: Option<pb::FrameworkInfo>, task: Option<pb::TaskInfo>) {
        let (Some(framework_info), Some(task)) = (framework_info, task) else {
            return self.invalid("RunTask", "framework_info and task are required");
        };
        if let Err(e) = limits::framework_info(&framework_info) {
            return self.invalid("RunTask", &e.to_string());
        }
        let framework_id = match checked_id(
            "framework_info.id",
            framework_info.id.as_ref().map(|f| f.value.as_str()),
        ) {
            Ok(id) => id.to_string(),
            Err(e) => return self.invalid("RunTask", &e),
        };
        let task_id = match checked_id(
            "task.task_id",
            task.task_id.as_ref().map(|t| t.value.as_str()),
        ) {
            Ok(id) => id.to_string(),
            Err(e) => return self.invalid("RunTask", &e),
        };
        let key = StreamKey::new(&framework_id, &task_id);
        if self.tasks.contains_key(&key) {
            warn!(self.logger, "ignoring a second launch of a task this agent already has";
                "framework_id" => &framework_id, "task_id" => &task_id);
            return;
        }
        if self
            .frameworks
            .get(&framework_id)
            .is_some_and(|f| f.shutting_down)
        {
            warn!(self.logger, "ignoring a launch for a framework that is shutting down";
                "framework_id" => &framework_id, "task_id" => &task_id);
            return;
        }
        self.remember_framework(&framework_id, &framework_info);
        self.metrics.tasks_launched.inc();
        info!(self.logger, "launching task"; "framework_id" => &framework_id, "task_id" => &task_id);

        let refusal = if let Err(e) = limits::task_info(&task) {
            Some((TaskState::TaskError, Reason::TaskInvalid, e.to_string()))
        } else if let Some(executor) = &task.executor {
            self.check_custom_executor(&framework_id, executor).err()
        } else if self
            .executor_runs
            .contains_key(&(framework_id.clone(), task_id.clone()))
        {
            Some((
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                format!("executor '{task_id}' of an earlier task with this id is still running"),
            ))
        } else {
            None
        };
        if let Some((state, reason, message)) = refusal {
            let executor_id = task
                .executor
                .as_ref()
                .and_then(|e| e.executor_id.as_ref())
                .map_or(task_id.clone(), |e| e.value.clone());
            self.tasks
                .insert(key.clone(), Task::new(task, &framework_id, &executor_id));
            self.agent_status(&key, state, reason, &message);
            return;
        }
        if task.executor.is_some() {
            return self.launch_on_custom_executor(task, key);
        }
        self.launch_command_executor(task, key);
    }

    /// Starts the built-in command executor for `task`; its executor id is the task id.
    fn launch_command_executor(&mut self, task: pb::TaskInfo, key: StreamKey) {
        let StreamKey {
            framework_id,
            task_id,
        } = key;
        let info = self.command_executor_info(&framework_id, &task_id, &task);
        let resources = task.resources.clone();
        self.start_executor_run(NewExecutorRun {
            framework_id,
            executor_id: task_id.clone(),
            info,
            tasks: vec![(task_id, task)],
            group: None,
            command: self.settings.executor_command.clone(),
            env: Vec::new(),
            resources,
        });
    }

    /// The ExecutorInfo of a command executor: the agent's built-in executor with
    /// the task's container and resources, named after the task's command.
    fn command_executor_info(
        &self,
        framework_id: &str,
        executor_id: &str,
        task: &pb::TaskInfo,
    ) -> pb::ExecutorInfo {
        let shown = task
            .command
            .as_ref()
            .map(|c| {
                if c.shell {
                    format!("sh -c '{}'", c.value)
                } else {
                    c.value.clone()
                }
            })
            .unwrap_or_default();
        pb::ExecutorInfo {
            r#type: pb::executor_info::Type::Unknown as i32,
            executor_id: Some(pb::ExecutorId {
                value: executor_id.to_string(),
            }),
            framework_id: Some(pb::FrameworkId {
                value: framework_id.to_string(),
            }),
            command: Some(self.builtin_executor_command()),
            container: task.container.clone(),
            resources: task.resources.clone(),
            name: super::truncate(
                &format!("Command Executor (Task: {executor_id}) (Command: {shown})"),
                255,
            ),
        }
    }

    pub(super) fn executor_env(
        &self,
        framework_id: &str,
        executor_id: &str,
        token: &str,
        sandbox: &std::path::Path,
    ) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        use crate::command_executor::env as names;
        let s = &self.settings;
        let text = |name: &str, value: &str| (name.into(), value.into());
        vec![
            text(names::AGENT_ENDPOINT, &s.executor_endpoint),
            text(names::FRAMEWORK_ID, framework_id),
            text(names::EXECUTOR_ID, executor_id),
            text(names::EXECUTOR_TOKEN, token),
            (names::SANDBOX.into(), sandbox.as_os_str().to_owned()),
            (names::MESOS_SANDBOX.into(), sandbox.as_os_str().to_owned()),
            text(
                names::RECOVERY_TIMEOUT_SECONDS,
                &s.recovery_timeout.as_secs_f64().to_string(),
            ),
            text(
                names::DEFAULT_KILL_GRACE_SECONDS,
                &s.default_kill_grace.as_secs_f64().to_string(),
            ),
        ]
        .into_iter()
        .chain(crate::sandbox::output::policy_env(s.container_log))
        .collect()
    }

    fn run_task_group(&mut self, run: pb::master_message::RunTaskGroup) {
        let Some(framework_info) = run.framework_info else {
            return self.invalid("RunTaskGroup", "framework_info is required");
        };
        if let Err(e) = limits::framework_info(&framework_info) {
            return self.invalid("RunTaskGroup", &e.to_string());
        }
        let framework_id = match checked_id(
            "framework_info.id",
            framework_info.id.as_ref().map(|f| f.value.as_str()),
        ) {
            Ok(id) => id.to_string(),
            Err(e) => return self.invalid("RunTaskGroup", &e),
        };
        let tasks = run.task_group.map(|g| g.tasks).unwrap_or_default();
        if let Err(e) = limits::count("task_group.tasks", tasks.len(), limits::MAX_TASK_GROUP) {
            return self.invalid("RunTaskGroup", &e.to_string());
        }
        if self
            .frameworks
            .get(&framework_id)
            .is_some_and(|f| f.shutting_down)
        {
            warn!(self.logger, "ignoring a task group for a framework that is shutting down";
                "framework_id" => &framework_id);
            return;
        }
        self.remember_framework(&framework_id, &framework_info);
        let mut group = Vec::with_capacity(tasks.len());
        for task in tasks {
            match checked_id(
                "task.task_id",
                task.task_id.as_ref().map(|t| t.value.as_str()),
            ) {
                Ok(task_id) => group.push((task_id.to_string(), task)),
                // Without an id nothing can be reported for it; the rest of the group
                // is refused for its sake (it is not whole).
                Err(e) => self.invalid("RunTaskGroup", &e),
            }
        }
        if group.len() != group.capacity() {
            let executor_id = run
                .executor
                .and_then(|e| e.executor_id)
                .map(|e| e.value)
                .unwrap_or_default();
            for (task_id, task) in group {
                let key = StreamKey::new(&framework_id, &task_id);
                if self.tasks.contains_key(&key) {
                    continue;
                }
                self.tasks
                    .insert(key.clone(), Task::new(task, &framework_id, &executor_id));
                self.agent_status(
                    &key,
                    TaskState::TaskError,
                    Reason::TaskGroupInvalid,
                    "invalid task group: one of its tasks has no valid task id",
                );
            }
            return;
        }
        self.launch_task_group(&framework_id, run.executor, group);
    }

    fn kill_task(&mut self, kill: pb::master_message::KillTask) {
        let ids = checked_id(
            "kill_task.framework_id",
            kill.framework_id.as_ref().map(|f| f.value.as_str()),
        )
        .and_then(|fid| {
            checked_id(
                "kill_task.task_id",
                kill.task_id.as_ref().map(|t| t.value.as_str()),
            )
            .map(|tid| StreamKey::new(fid, tid))
        });
        let key = match ids {
            Ok(key) => key,
            Err(e) => return self.invalid("KillTask", &e),
        };
        if let Some(policy) = &kill.kill_policy
            && let Some(grace) = policy.grace_period_seconds
            && let Err(e) = limits::seconds("kill_task.kill_policy.grace_period_seconds", grace)
        {
            return self.invalid("KillTask", &e.to_string());
        }
        let Some(task) = self.tasks.get_mut(&key) else {
            // As Mesos: a kill for a task this agent never launched (its RunTask was
            // lost) answers TASK_LOST (TASK_DROPPED if partition-aware) so the master
            // stops waiting for it.
            let partition_aware = self
                .frameworks
                .get(&key.framework_id)
                .is_some_and(|f| is_partition_aware(&f.info));
            let state = if partition_aware {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            let info = pb::TaskInfo {
                task_id: kill.task_id.clone(),
                ..Default::default()
            };
            self.tasks.insert(
                key.clone(),
                Task::new(info, &key.framework_id, &key.task_id),
            );
            self.agent_status(
                &key,
                state,
                Reason::TaskUnknown,
                "the agent does not know this task",
            );
            return;
        };
        if task.is_terminal() {
            debug!(self.logger, "ignoring a kill for a terminal task"; "task_id" => &key.task_id);
            return;
        }
        task.kill_requested = true;
        if kill.kill_policy.is_some() {
            task.kill_policy = kill.kill_policy;
        }
        let executor = task
            .container
            .clone()
            .and_then(|c| self.executors.get_mut(&c).map(|e| (c, e)));
        let Some((container_id, executor)) = executor else {
            self.agent_status(
                &key,
                TaskState::TaskKilled,
                Reason::Unspecified,
                "killed; the task had no executor",
            );
            return;
        };
        match executor.phase {
            Phase::Subscribed => {
                info!(self.logger, "asking the executor to kill the task"; "task_id" => &key.task_id);
                let event = pb::executor_event::Event::Kill(pb::executor_event::Kill {
                    task_id: kill.task_id,
                    kill_policy: kill.kill_policy,
                });
                // A broken stream is fine: the executor re-subscribes and the kill is
                // sent again then.
                let events = executor.events.clone();
                self.emit_event(events, event);
            }
            // It will re-subscribe (or time out); the kill is delivered then.
            Phase::Recovering => {}
            Phase::Launching | Phase::Started => {
                info!(self.logger, "killing a task whose executor has not subscribed"; "task_id" => &key.task_id);
                // The rest of a task group goes with it: a group lives and dies together.
                for key in self.task_and_its_group(&key) {
                    if self.tasks.get(&key).is_some_and(|t| !t.is_terminal()) {
                        self.agent_status(
                            &key,
                            TaskState::TaskKilled,
                            Reason::TaskKilledDuringLaunch,
                            "killed before the executor started the task",
                        );
                    }
                }
                self.stop_executor_if_idle(&container_id);
            }
        }
    }

    fn shutdown_framework(&mut self, framework_id: &str) {
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            debug!(self.logger, "ignoring the shutdown of an unknown framework"; "framework_id" => framework_id);
            return;
        };
        info!(self.logger, "shutting down framework"; "framework_id" => framework_id);
        framework.shutting_down = true;
        let containers: Vec<ContainerId> = self
            .executors
            .iter()
            .filter(|(_, e)| e.framework_id == framework_id)
            .map(|(c, _)| c.clone())
            .collect();
        for container_id in containers {
            self.shutdown_executor(&container_id);
        }
        self.forget_framework_if_unused(framework_id);
    }

    fn acknowledge(&mut self, ack: pb::master_message::Acknowledge) {
        let key = match checked_id(
            "acknowledge.framework_id",
            ack.framework_id.as_ref().map(|f| f.value.as_str()),
        )
        .and_then(|fid| {
            checked_id(
                "acknowledge.task_id",
                ack.task_id.as_ref().map(|t| t.value.as_str()),
            )
            .map(|tid| StreamKey::new(fid, tid))
        }) {
            Ok(key) => key,
            Err(e) => return self.invalid("Acknowledge", &e),
        };
        if ack.uuid.is_empty() || ack.uuid.len() > limits::MAX_UUID_BYTES {
            return self.invalid("Acknowledge", "uuid must be 1 to 16 bytes");
        }
        match self.updates.acknowledge(&key, &ack.uuid, Instant::now()) {
            Ok(Acknowledged::Ignored) => {
                debug!(self.logger, "ignoring an acknowledgement that matches no pending update";
                    "task_id" => &key.task_id);
            }
            Ok(Acknowledged::Next { next }) => {
                self.metrics.status_update_acks.inc();
                self.forward(next.into_iter().map(|u| *u).collect());
            }
            Ok(Acknowledged::Finished) => {
                self.metrics.status_update_acks.inc();
                self.task_finished(&key);
            }
            Err(e) => warn!(self.logger, "could not record an acknowledgement"; "error" => %e),
        }
    }

    fn framework_message(&mut self, message: pb::master_message::FrameworkMessage) {
        let ids = checked_id(
            "framework_message.framework_id",
            message.framework_id.as_ref().map(|f| f.value.as_str()),
        )
        .and_then(|fid| {
            checked_id(
                "framework_message.executor_id",
                message.executor_id.as_ref().map(|e| e.value.as_str()),
            )
            .map(|eid| (fid.to_string(), eid.to_string()))
        });
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => return self.invalid("FrameworkMessage", &e),
        };
        if let Err(e) = limits::bytes(
            "framework_message.data",
            message.data.len(),
            limits::MAX_MESSAGE_DATA_BYTES,
        ) {
            return self.invalid("FrameworkMessage", &e.to_string());
        }
        let events = self
            .executor_runs
            .get(&ids)
            .and_then(|c| self.executors.get(c))
            .and_then(|e| e.events.clone());
        match events {
            Some(events) => {
                self.emit(Effect::Event(
                    events,
                    Box::new(pb::executor_event::Event::Message(
                        pb::executor_event::Message { data: message.data },
                    )),
                ));
            }
            None => {
                debug!(self.logger, "dropping a framework message for an executor that is not subscribed";
                "executor_id" => &ids.1)
            }
        }
    }

    pub(super) fn executor_exited_message(
        &mut self,
        executor: &Executor,
        wait_status: Option<i32>,
    ) {
        self.send_to_master(ToMaster::ExecutorExited(
            pb::agent_message::ExecutorExited {
                framework_id: Some(pb::FrameworkId {
                    value: executor.framework_id.clone(),
                }),
                executor_id: Some(pb::ExecutorId {
                    value: executor.executor_id.clone(),
                }),
                status: wait_status,
            },
        ));
    }
}
