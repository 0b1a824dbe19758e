//! Tasks that name their own executor (`TaskInfo.executor`, type CUSTOM): the
//! executor is started from its `ExecutorInfo.command` in a container of its own,
//! with the same environment the command executor gets, and every task of the same
//! framework with the same executor id goes to that one running executor. Tasks
//! sent before it subscribed are queued (LAUNCH events follow its SUBSCRIBED), as
//! are tasks for an executor that is being recovered after an agent restart.
//! Everything is checkpointed like a command executor run (the `ExecutorInfo` in
//! the run's `executor.info`, each task's `task.info` before its LAUNCH leaves), so
//! a restarted agent reattaches custom executors too.

use std::collections::BTreeSet;
use std::ffi::OsString;

use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::executor_info::Type as ExecutorType;
use agora_proto::task_status::Reason;
use prost::Message as _;
use slog::info;

use super::{AgentActor, Executor, Phase, Task};
use crate::containerizer::{ContainerId, LaunchSpec};
use crate::journal::DiskOp;
use crate::meta;
use crate::status_updates::StreamKey;

/// Why a task cannot go to the executor it names: its terminal state, reason and a
/// sentence for the framework.
pub(super) type Refusal = (TaskState, Reason, String);

/// The program and argv that start an executor: `sh -c value` for a shell
/// command, else `value` with `arguments` (whose first element is argv[0], as in
/// Mesos, and is replaced by the program itself).
fn executor_argv(command: &pb::CommandInfo) -> Vec<OsString> {
    if command.shell {
        return vec!["/bin/sh".into(), "-c".into(), command.value.clone().into()];
    }
    std::iter::once(command.value.clone())
        .chain(command.arguments.iter().skip(1).cloned())
        .map(OsString::from)
        .collect()
}

impl AgentActor {
    /// Checks the `ExecutorInfo` a task names (the task itself passed the limits).
    pub(super) fn check_custom_executor(
        &self,
        framework_id: &str,
        info: &pb::ExecutorInfo,
    ) -> Result<(), Refusal> {
        let invalid = |message: String| Err((TaskState::TaskError, Reason::TaskInvalid, message));
        match ExecutorType::try_from(info.r#type) {
            Ok(ExecutorType::Custom | ExecutorType::Unknown) => {}
            Ok(ExecutorType::Default) => {
                return invalid(
                    "executor type DEFAULT runs task groups: launch them with LAUNCH_GROUP".into(),
                );
            }
            Err(_) => return invalid(format!("executor type {} is not known", info.r#type)),
        }
        if let Some(named) = &info.framework_id
            && named.value != framework_id
        {
            return invalid(format!(
                "executor.framework_id '{}' is not the task's framework '{framework_id}'",
                named.value
            ));
        }
        let Some(command) = info.command.as_ref().filter(|c| !c.value.is_empty()) else {
            return invalid(
                "executor.command is required (with a value): it starts the executor".into(),
            );
        };
        let executor_id = info
            .executor_id
            .as_ref()
            .map(|e| e.value.clone())
            .unwrap_or_default();
        let running = self
            .executor_runs
            .get(&(framework_id.to_string(), executor_id.clone()))
            .and_then(|c| self.executors.get(c));
        if let Some(running) = running {
            // Mesos refuses a task whose ExecutorInfo differs from the running one's:
            // the task would run under an executor it did not ask for.
            if running.info.command.as_ref() != Some(command) {
                return invalid(format!(
                    "executor '{executor_id}' is already running here with a different command"
                ));
            }
            if running.info.container != info.container {
                return invalid(format!(
                    "executor '{executor_id}' is already running here with a different container"
                ));
            }
            if running.shutdown_requested {
                return Err((
                    TaskState::TaskFailed,
                    Reason::ExecutorTerminated,
                    format!("executor '{executor_id}' is shutting down"),
                ));
            }
        }
        Ok(())
    }

    /// Gives a checked task to its custom executor, starting the executor first if
    /// it does not run yet.
    pub(super) fn launch_on_custom_executor(&mut self, task: pb::TaskInfo, key: StreamKey) {
        let framework_id = key.framework_id.clone();
        let mut info = task.executor.clone().unwrap_or_default();
        info.framework_id = Some(pb::FrameworkId {
            value: framework_id.clone(),
        });
        info.r#type = ExecutorType::Custom as i32;
        let executor_id = info
            .executor_id
            .as_ref()
            .map(|e| e.value.clone())
            .unwrap_or_default();
        let run = self
            .executor_runs
            .get(&(framework_id.clone(), executor_id.clone()))
            .filter(|container_id| self.executors.contains_key(*container_id))
            .cloned();
        match run {
            Some(container_id) => self.add_task_to_executor(task, key, &container_id),
            None => self.start_custom_executor(task, key, info, executor_id),
        }
    }

    /// Queues a task on a running (or starting, or recovering) executor; it is
    /// launched at once if the executor is subscribed.
    fn add_task_to_executor(
        &mut self,
        task: pb::TaskInfo,
        key: StreamKey,
        container_id: &ContainerId,
    ) {
        let Some(executor) = self.executors.get_mut(container_id) else {
            return;
        };
        let task_meta = meta::task_meta_dir(&executor.meta_dir, &key.task_id);
        executor.tasks.insert(key.task_id.clone());
        let subscribed = executor.phase == Phase::Subscribed;
        let events = executor.events.clone();
        let executor_id = executor.executor_id.clone();
        let mut entry = Task::new(task.clone(), &key.framework_id, &executor_id);
        entry.container = Some(container_id.clone());
        entry.meta_dir = Some(task_meta.clone());
        entry.launched = subscribed;
        self.tasks.insert(key.clone(), entry);
        // The LAUNCH below waits for this to be durable, so a restarted agent knows
        // every task its executors may be running.
        self.checkpoint(DiskOp::WriteFile {
            path: task_meta.join(meta::TASK_INFO_FILE),
            bytes: task.encode_to_vec(),
        });
        info!(self.logger, "task queued on its executor";
            "task_id" => &key.task_id, "executor_id" => &executor_id, "subscribed" => subscribed);
        if subscribed {
            self.emit_event(
                events,
                pb::executor_event::Event::Launch(pb::executor_event::Launch { task: Some(task) }),
            );
        }
    }

    /// Starts a new executor run for `info` with `task` as its first task.
    fn start_custom_executor(
        &mut self,
        task: pb::TaskInfo,
        key: StreamKey,
        info: pb::ExecutorInfo,
        executor_id: String,
    ) {
        let command = info.command.clone().unwrap_or_default();
        let resources = info
            .resources
            .iter()
            .chain(task.resources.iter())
            .cloned()
            .collect();
        let framework_id = key.framework_id;
        let container_id = self.start_executor_run(NewExecutorRun {
            framework_id: framework_id.clone(),
            executor_id: executor_id.clone(),
            info,
            tasks: vec![(key.task_id, task)],
            group: None,
            command: executor_argv(&command),
            env: command
                .environment
                .iter()
                .flat_map(|e| e.variables.iter())
                .map(|v| (v.name.clone().into(), v.value.clone().into()))
                .collect(),
            resources,
        });
        info!(self.logger, "starting custom executor";
            "framework_id" => &framework_id, "executor_id" => &executor_id, "container" => %container_id);
    }

    /// Registers a new executor run with its first tasks and checkpoints it; the
    /// containerizer starts it once the checkpoints are durable (`launch_prepared`),
    /// so a restarted agent knows every executor that may be running, and every
    /// task. The tasks reach it when it subscribes. Every executor run starts here:
    /// command executors, default executors and custom ones. Returns its container
    /// id.
    pub(super) fn start_executor_run(&mut self, run: NewExecutorRun) -> ContainerId {
        let NewExecutorRun {
            framework_id,
            executor_id,
            info,
            tasks,
            group,
            command,
            mut env,
            resources,
        } = run;
        let container_id = ContainerId(uuid::Uuid::new_v4().to_string());
        let work_dir = &self.settings.work_dir;
        let sandbox = meta::sandbox_dir(work_dir, &framework_id, &executor_id, &container_id.0);
        let run_meta =
            meta::executor_run_meta_dir(work_dir, &framework_id, &executor_id, &container_id.0);
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let checkpoint = meta::ExecutorCheckpoint {
            info: Some(info.clone()),
            token: token.clone(),
            sandbox: meta::path_to_bytes(&sandbox),
            containerizer: self.containerizer.name().to_string(),
        };
        let mut files = vec![(
            run_meta.join(meta::EXECUTOR_INFO_FILE),
            checkpoint.encode_to_vec(),
        )];
        let mut task_ids = BTreeSet::new();
        for (task_id, task) in tasks {
            let task_meta = meta::task_meta_dir(&run_meta, &task_id);
            files.push((task_meta.join(meta::TASK_INFO_FILE), task.encode_to_vec()));
            if let Some(group) = &group {
                files.push((
                    task_meta.join(meta::TASK_GROUP_FILE),
                    group.clone().into_bytes(),
                ));
            }
            let mut entry = Task::new(task, &framework_id, &executor_id);
            entry.group = group.clone();
            entry.container = Some(container_id.clone());
            entry.meta_dir = Some(task_meta);
            self.tasks
                .insert(StreamKey::new(&framework_id, &task_id), entry);
            task_ids.insert(task_id);
        }
        self.checkpoint(DiskOp::Prepare {
            ticket: container_id.0.clone(),
            files,
        });

        // The agent's variables come last so an ExecutorInfo cannot override them.
        env.extend(self.executor_env(&framework_id, &executor_id, &token, &sandbox));
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            framework_id: framework_id.clone(),
            executor_id: executor_id.clone(),
            sandbox,
            command,
            env,
            container: info.container.clone(),
            resources,
        };
        let timer = self.schedule(
            self.settings.executor_registration_timeout,
            super::Command::RegistrationTimeout {
                container_id: container_id.clone(),
            },
        );
        self.executors.insert(
            container_id.clone(),
            Executor {
                framework_id: framework_id.clone(),
                executor_id: executor_id.clone(),
                info,
                token,
                meta_dir: run_meta,
                phase: Phase::Launching,
                events: None,
                tasks: task_ids,
                timer: Some(timer),
                shutdown_requested: false,
                destroy_when_started: false,
                launch: Some(spec),
            },
        );
        self.executor_runs
            .insert((framework_id, executor_id), container_id.clone());
        self.metrics.executors.inc();
        container_id
    }
}

/// What [`AgentActor::start_executor_run`] needs to start an executor run.
pub(super) struct NewExecutorRun {
    /// The framework the executor belongs to; a valid id.
    pub framework_id: String,
    /// The executor's id (a valid id): with the framework's, it names the run's
    /// sandbox and checkpoint directories, and finds the run for later tasks.
    pub executor_id: String,
    /// Checkpointed, and sent to the executor in SUBSCRIBED; its `container` is the
    /// executor's container request.
    pub info: pb::ExecutorInfo,
    /// The tasks it starts with, by their (valid, new) ids; sent when it subscribes.
    pub tasks: Vec<(String, pb::TaskInfo)>,
    /// The id of the group `tasks` form (the first task's id), or `None` when they
    /// are launched one by one (there is then exactly one).
    pub group: Option<String>,
    /// Program and arguments that start it (argv[0] is the program); not empty.
    pub command: Vec<OsString>,
    /// Variables of its own; the agent's executor variables are added after them
    /// (and so win).
    pub env: Vec<(OsString, OsString)>,
    /// What its container is given: its own resources and its first tasks'.
    pub resources: Vec<pb::Resource>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_and_argv_commands_become_argv() {
        let shell = pb::CommandInfo {
            shell: true,
            value: "exec my-executor --flag".into(),
            ..Default::default()
        };
        assert_eq!(
            executor_argv(&shell),
            vec![
                OsString::from("/bin/sh"),
                "-c".into(),
                "exec my-executor --flag".into()
            ]
        );
        let argv = pb::CommandInfo {
            shell: false,
            value: "/usr/bin/my-executor".into(),
            arguments: vec!["my-executor".into(), "--flag".into()],
            ..Default::default()
        };
        assert_eq!(
            executor_argv(&argv),
            vec![OsString::from("/usr/bin/my-executor"), "--flag".into()]
        );
    }
}
