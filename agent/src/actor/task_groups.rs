//! Task groups (LAUNCH_GROUP): the tasks of a group run under one default executor
//! (the agent's built-in executor, ExecutorInfo type DEFAULT, with the executor id
//! the framework chose), share its sandbox and live and die together. A group is
//! checked whole: one invalid task makes every task of the group TASK_ERROR with
//! REASON_TASK_GROUP_INVALID, as in Mesos. The executor run is checkpointed like
//! any other (its `executor.info`, each task's `task.info`) so a restarted agent
//! reattaches it; the tasks reach the executor in one LAUNCH_GROUP after it
//! subscribes. A further group for a default executor that already runs goes to it
//! in a LAUNCH_GROUP of its own: each task remembers its group (`Task::group`, the
//! group's first task id, checkpointed next to its `task.info`), so groups queued
//! together still reach the executor, and die, apart.

use std::collections::HashSet;

use agora_core::limits;
use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::executor_info::Type as ExecutorType;
use agora_proto::task_status::Reason;
use prost::Message as _;
use slog::{info, warn};

use super::custom_executors::NewExecutorRun;
use super::{AgentActor, Phase, Task};
use crate::containerizer::ContainerId;
use crate::journal::DiskOp;
use crate::meta;
use crate::status_updates::StreamKey;

/// Where a valid group goes.
enum Placement {
    /// A new executor run.
    NewExecutor,
    /// The default executor of this id that already runs (or starts, or recovers).
    Running(ContainerId),
}

impl AgentActor {
    /// Launches a group whose framework was checked and remembered. `tasks` are the
    /// group's tasks with their (valid) ids.
    pub(super) fn launch_task_group(
        &mut self,
        framework_id: &str,
        executor: Option<pb::ExecutorInfo>,
        tasks: Vec<(String, pb::TaskInfo)>,
    ) {
        // A redelivered group (the master resends nothing, but be safe): only what
        // is new matters, and a group is never split.
        if tasks
            .iter()
            .all(|(id, _)| self.tasks.contains_key(&StreamKey::new(framework_id, id)))
        {
            warn!(self.logger, "ignoring a second launch of a task group this agent already has";
                "framework_id" => framework_id);
            return;
        }
        let executor = executor.unwrap_or_default();
        let executor_id = executor
            .executor_id
            .as_ref()
            .map(|e| e.value.clone())
            .unwrap_or_default();
        let placement = match self.check_task_group(framework_id, &executor, &tasks) {
            Ok(placement) => placement,
            Err((state, reason, message)) => {
                warn!(self.logger, "refusing a task group"; "framework_id" => framework_id,
                    "executor_id" => &executor_id, "reason" => &message);
                for (task_id, task) in tasks {
                    let key = StreamKey::new(framework_id, &task_id);
                    if self.tasks.contains_key(&key) {
                        continue;
                    }
                    self.tasks
                        .insert(key.clone(), Task::new(task, framework_id, &executor_id));
                    self.agent_status(&key, state, reason, &message);
                }
                return;
            }
        };
        for _ in &tasks {
            self.metrics.tasks_launched.inc();
        }
        info!(self.logger, "launching task group"; "framework_id" => framework_id,
            "executor_id" => &executor_id, "tasks" => tasks.len());
        match placement {
            Placement::NewExecutor => {
                self.start_default_executor(framework_id, &executor_id, executor, tasks)
            }
            Placement::Running(container_id) => {
                self.add_group_to_executor(framework_id, &container_id, tasks)
            }
        }
    }

    /// Mesos' checks of a task group and its executor.
    fn check_task_group(
        &self,
        framework_id: &str,
        executor: &pb::ExecutorInfo,
        tasks: &[(String, pb::TaskInfo)],
    ) -> Result<Placement, (TaskState, Reason, String)> {
        let invalid = |message: String| {
            Err((
                TaskState::TaskError,
                Reason::TaskGroupInvalid,
                format!("invalid task group: {message}"),
            ))
        };
        if tasks.is_empty() {
            return invalid("it has no tasks".into());
        }
        let executor_id = executor.executor_id.as_ref().map(|e| e.value.as_str());
        if let Err(e) = limits::id("executor.executor_id", executor_id) {
            return invalid(e.to_string());
        }
        let executor_id = executor_id.unwrap_or_default();
        match ExecutorType::try_from(executor.r#type) {
            Ok(ExecutorType::Default | ExecutorType::Unknown) => {}
            Ok(ExecutorType::Custom) => {
                return invalid(
                    "task groups run under the agent's default executor; \
                     executor.type must be DEFAULT"
                        .into(),
                );
            }
            Err(_) => return invalid(format!("executor.type {} is not known", executor.r#type)),
        }
        if executor.command.is_some() {
            return invalid(
                "the default executor is the agent's own; leave executor.command unset".into(),
            );
        }
        if let Some(named) = &executor.framework_id
            && named.value != framework_id
        {
            return invalid(format!(
                "executor.framework_id '{}' is not the group's framework '{framework_id}'",
                named.value
            ));
        }
        if let Err(e) = limits::count(
            "executor.resources",
            executor.resources.len(),
            limits::MAX_RESOURCES,
        ) {
            return invalid(e.to_string());
        }
        let mut seen = HashSet::new();
        for (task_id, task) in tasks {
            if !seen.insert(task_id.as_str()) {
                return invalid(format!("task id '{task_id}' appears twice"));
            }
            if self
                .tasks
                .contains_key(&StreamKey::new(framework_id, task_id))
            {
                return invalid(format!("task '{task_id}' is already known to this agent"));
            }
            if task.executor.is_some() {
                return invalid(format!(
                    "task '{task_id}' names an executor; the tasks of a group run under the \
                     group's executor"
                ));
            }
            if let Err(e) = limits::task_info(task) {
                return invalid(format!("task '{task_id}': {e}"));
            }
        }
        let run = self
            .executor_runs
            .get(&(framework_id.to_string(), executor_id.to_string()));
        let Some(container_id) = run else {
            return Ok(Placement::NewExecutor);
        };
        let Some(running) = self.executors.get(container_id) else {
            return Ok(Placement::NewExecutor);
        };
        if running.info.r#type != ExecutorType::Default as i32 {
            return invalid(format!(
                "executor '{executor_id}' already runs here and is not a default executor"
            ));
        }
        if running.shutdown_requested {
            return Err((
                TaskState::TaskFailed,
                Reason::ExecutorTerminated,
                format!("executor '{executor_id}' is shutting down"),
            ));
        }
        Ok(Placement::Running(container_id.clone()))
    }

    /// The ExecutorInfo of a default executor: the framework's, with the agent's
    /// built-in executor as its command.
    fn default_executor_info(
        &self,
        framework_id: &str,
        executor_id: &str,
        given: pb::ExecutorInfo,
    ) -> pb::ExecutorInfo {
        let name = if given.name.is_empty() {
            format!("Default Executor (Executor: {executor_id})")
        } else {
            given.name
        };
        pb::ExecutorInfo {
            r#type: ExecutorType::Default as i32,
            executor_id: Some(pb::ExecutorId {
                value: executor_id.to_string(),
            }),
            framework_id: Some(pb::FrameworkId {
                value: framework_id.to_string(),
            }),
            command: Some(self.builtin_executor_command()),
            container: given.container,
            resources: given.resources,
            name: super::truncate(&name, 255),
        }
    }

    /// The agent's built-in executor as a CommandInfo (argv[0] repeated in
    /// `arguments`, as Mesos spells a non-shell command), for the ExecutorInfos of
    /// the executors the agent provides.
    pub(super) fn builtin_executor_command(&self) -> pb::CommandInfo {
        let mut argv = self
            .settings
            .executor_command
            .iter()
            .map(|a| a.to_string_lossy().into_owned());
        let value = argv.next().unwrap_or_default();
        pb::CommandInfo {
            value: value.clone(),
            arguments: std::iter::once(value).chain(argv).collect(),
            ..Default::default()
        }
    }

    /// Starts a default executor run with the group's tasks; they are sent to it in
    /// one LAUNCH_GROUP once it subscribes.
    fn start_default_executor(
        &mut self,
        framework_id: &str,
        executor_id: &str,
        given: pb::ExecutorInfo,
        tasks: Vec<(String, pb::TaskInfo)>,
    ) {
        let info = self.default_executor_info(framework_id, executor_id, given);
        let resources = info
            .resources
            .iter()
            .chain(tasks.iter().flat_map(|(_, task)| task.resources.iter()))
            .cloned()
            .collect();
        self.start_executor_run(NewExecutorRun {
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
            info,
            group: group_id(&tasks),
            tasks,
            command: self.settings.executor_command.clone(),
            env: Vec::new(),
            resources,
        });
    }

    /// Gives a group to a default executor that already runs: at once in a
    /// LAUNCH_GROUP if it is subscribed, else when it (re-)subscribes.
    fn add_group_to_executor(
        &mut self,
        framework_id: &str,
        container_id: &ContainerId,
        tasks: Vec<(String, pb::TaskInfo)>,
    ) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        let subscribed = executor.phase == Phase::Subscribed;
        let events = executor.events.clone();
        let executor_id = executor.executor_id.clone();
        let run_meta = executor.meta_dir.clone();
        executor
            .tasks
            .extend(tasks.iter().map(|(task_id, _)| task_id.clone()));
        let group_id = group_id(&tasks);
        let mut group = Vec::new();
        for (task_id, task) in tasks {
            let task_meta = meta::task_meta_dir(&run_meta, &task_id);
            let mut entry = Task::new(task.clone(), framework_id, &executor_id);
            entry.group = group_id.clone();
            entry.container = Some(container_id.clone());
            entry.meta_dir = Some(task_meta.clone());
            entry.launched = subscribed;
            self.tasks
                .insert(StreamKey::new(framework_id, &task_id), entry);
            // The LAUNCH_GROUP below waits for these to be durable.
            self.checkpoint(DiskOp::WriteFile {
                path: task_meta.join(meta::TASK_INFO_FILE),
                bytes: task.encode_to_vec(),
            });
            if let Some(group_id) = &group_id {
                self.checkpoint(DiskOp::WriteFile {
                    path: task_meta.join(meta::TASK_GROUP_FILE),
                    bytes: group_id.clone().into_bytes(),
                });
            }
            group.push(task);
        }
        if subscribed {
            self.emit_event(
                events,
                pb::executor_event::Event::LaunchGroup(pb::executor_event::LaunchGroup {
                    task_group: Some(pb::TaskGroupInfo { tasks: group }),
                }),
            );
        }
    }

    /// The task `key` and the other tasks of its group: a kill of one task of a
    /// group that has not started kills that group (and no other group of the
    /// same executor).
    pub(super) fn task_and_its_group(&self, key: &StreamKey) -> Vec<StreamKey> {
        let mut keys = vec![key.clone()];
        let Some(group) = self.tasks.get(key).and_then(|t| t.group.clone()) else {
            return keys;
        };
        let Some(executor) = self
            .tasks
            .get(key)
            .and_then(|t| t.container.as_ref())
            .and_then(|c| self.executors.get(c))
        else {
            return keys;
        };
        keys.extend(
            executor
                .tasks
                .iter()
                .filter(|t| **t != key.task_id)
                .map(|t| StreamKey::new(&executor.framework_id, t))
                .filter(|k| {
                    self.tasks
                        .get(k)
                        .is_some_and(|t| t.group.as_deref() == Some(group.as_str()))
                }),
        );
        keys
    }
}

/// The id a group of `tasks` is known by: its first task's id.
fn group_id(tasks: &[(String, pb::TaskInfo)]) -> Option<String> {
    tasks.first().map(|(task_id, _)| task_id.clone())
}
