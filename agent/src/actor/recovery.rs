//! Rebuilding the actor's state from `work_dir/meta` when the agent starts: the
//! frameworks, the executor runs and their tasks with their unacknowledged status
//! updates. Live executors are reattached and given
//! `executor_reregistration_timeout` to re-subscribe; the tasks of executors that died
//! while the agent was down are failed. With `--recover=cleanup` every executor
//! found is shut down instead (see [`AgentActor::recover`]). Damage is never fatal (one
//! bad file must not keep the agent down) and never silent: an unreadable framework or
//! executor checkpoint is logged and skipped, and an executor run with an unreadable
//! task checkpoint is destroyed, its tasks failed with a reason naming the file.

use std::collections::BTreeSet;
use std::path::Path;

use agora_core::limits;
use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::task_status::Reason;
use slog::{info, warn};

use super::{AgentActor, Command, Executor, Framework, Phase, Task};
use crate::config::RecoverMode;
use crate::containerizer::{ContainerId, Termination};
use crate::meta;
use crate::procfs;
use crate::status_updates::StreamKey;

/// Names of the subdirectories of `dir` that are valid ids.
fn id_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| limits::id("checkpoint", Some(name)).is_ok())
        .collect();
    names.sort();
    names
}

impl AgentActor {
    /// See the module documentation. Runs once, before the actor handles commands.
    pub(crate) fn recover(&mut self) {
        let root = meta::frameworks_meta_dir(&self.settings.work_dir);
        for framework_id in id_dirs(&root) {
            let framework_dir = root.join(&framework_id);
            let info = meta::read_message::<pb::FrameworkInfo>(&framework_dir.join(meta::FRAMEWORK_INFO_FILE))
                .unwrap_or_else(|e| {
                    warn!(self.logger, "unreadable framework checkpoint"; "framework_id" => &framework_id, "error" => %e);
                    pb::FrameworkInfo {
                        id: Some(pb::FrameworkId {
                            value: framework_id.clone(),
                        }),
                        ..Default::default()
                    }
                });
            self.frameworks.insert(
                framework_id.clone(),
                Framework {
                    info,
                    shutting_down: false,
                },
            );
            let executors_dir = framework_dir.join("executors");
            for executor_id in id_dirs(&executors_dir) {
                let runs_dir = executors_dir.join(&executor_id).join("runs");
                for run_id in id_dirs(&runs_dir) {
                    self.recover_run(&framework_id, &executor_id, &run_id);
                }
            }
            self.forget_framework_if_unused(&framework_id);
        }
        let tasks = self.tasks.len();
        let executors = self.executors.len();
        if tasks + executors > 0 {
            info!(self.logger, "recovered from checkpoints"; "tasks" => tasks, "executors" => executors);
        }
        if self.settings.recover == RecoverMode::Cleanup {
            self.clean_up_recovered();
        }
    }

    /// `--recover=cleanup`: every executor the previous agent process left running
    /// is shut down as for a framework shutdown (told to kill its tasks when it
    /// re-subscribes, destroyed after the kill and shutdown graces if it does not
    /// exit), so each of its tasks ends TASK_KILLED. The terminal updates are
    /// checkpointed and delivered like any other once the agent is registered.
    fn clean_up_recovered(&mut self) {
        let containers: Vec<ContainerId> = self.executors.keys().cloned().collect();
        if containers.is_empty() {
            return;
        }
        warn!(self.logger, "recovery mode cleanup: shutting down every executor left running";
            "executors" => containers.len());
        for container_id in containers {
            self.shutdown_executor(&container_id);
        }
    }

    fn recover_run(&mut self, framework_id: &str, executor_id: &str, run_id: &str) {
        let run_dir =
            meta::executor_run_meta_dir(&self.settings.work_dir, framework_id, executor_id, run_id);
        let checkpoint = match meta::read_message::<meta::ExecutorCheckpoint>(
            &run_dir.join(meta::EXECUTOR_INFO_FILE),
        ) {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                warn!(self.logger, "unreadable executor checkpoint; dropping it";
                    "executor_id" => executor_id, "error" => %e);
                self.remove_meta(&run_dir);
                return;
            }
        };
        let container_id = ContainerId(run_id.to_string());
        let tasks_dir = run_dir.join("tasks");
        let mut task_ids = BTreeSet::new();
        let mut damage = Vec::new();
        for task_id in id_dirs(&tasks_dir) {
            if let Some(task) = self.recover_task(
                framework_id,
                executor_id,
                &task_id,
                &container_id,
                &tasks_dir.join(&task_id),
                &mut damage,
            ) {
                self.tasks
                    .insert(StreamKey::new(framework_id, &task_id), task);
                task_ids.insert(task_id);
            }
        }

        let forked =
            meta::read_message::<meta::ForkedPid>(&run_dir.join(meta::FORKED_PID_FILE)).ok();
        let start_time = forked.as_ref().and_then(|f| procfs::start_time(f.pid));
        // A pid is only ours if its start time matches the recorded one: pids are
        // reused, and reattaching to (and later killing) a stranger would be worse
        // than reporting the executor lost.
        let alive = forked
            .as_ref()
            .is_some_and(|f| f.start_time != 0 && start_time == Some(f.start_time));

        self.executors.insert(
            container_id.clone(),
            Executor {
                framework_id: framework_id.to_string(),
                executor_id: executor_id.to_string(),
                info: checkpoint.info.unwrap_or_default(),
                token: checkpoint.token,
                meta_dir: run_dir,
                phase: Phase::Recovering,
                events: None,
                tasks: task_ids,
                timer: None,
                shutdown_requested: false,
                destroy_when_started: false,
                launch: None,
            },
        );
        self.executor_runs.insert(
            (framework_id.to_string(), executor_id.to_string()),
            container_id.clone(),
        );
        self.metrics.executors.inc();

        if !damage.is_empty() {
            // The agent cannot tell what a task with a damaged checkpoint is, so it
            // must not run on unobserved: the whole run is destroyed and every task of
            // it ends with a reason naming the damage.
            warn!(self.logger, "damaged task checkpoint; destroying its executor";
                "executor_id" => executor_id, "damage" => damage.join("; "));
            if let Some(forked) = &forked
                && alive
            {
                drop(self.containerizer.recover(&container_id, forked.pid));
            }
            self.destroy(&container_id);
            let termination = Termination {
                message: "destroyed: its checkpoint was damaged".into(),
                ..Termination::default()
            };
            let message = format!(
                "the agent restarted and could not read its checkpoint ({}); the executor was destroyed",
                damage.join("; ")
            );
            self.executor_gone(
                &container_id,
                &termination,
                TaskState::TaskFailed,
                Reason::AgentRestarted,
                &message,
            );
            return;
        }
        match forked {
            Some(forked) if alive => {
                info!(self.logger, "reattaching to a running executor";
                    "executor_id" => executor_id, "pid" => forked.pid);
                self.watch_recovered_container(&container_id, forked.pid);
                let timer = self.schedule(
                    self.settings.executor_reregistration_timeout,
                    Command::ReregistrationTimeout {
                        container_id: container_id.clone(),
                    },
                );
                if let Some(executor) = self.executors.get_mut(&container_id) {
                    executor.timer = Some(timer);
                }
            }
            other => {
                if let Some(forked) = other
                    && start_time.is_none()
                {
                    // The executor is gone, but tasks it started may live on in its
                    // session (the kernel does not reuse a pid still naming a
                    // session): the destroy below sweeps them up.
                    drop(self.containerizer.recover(&container_id, forked.pid));
                }
                // Even when its pid now names a stranger (whose session is left
                // alone: it was never recovered), runtime containers the executor
                // started outlive it and must go.
                self.destroy(&container_id);
                info!(self.logger, "executor ended while the agent was down"; "executor_id" => executor_id);
                let termination = Termination {
                    message: "exited while the agent was down".into(),
                    ..Termination::default()
                };
                self.executor_gone(
                    &container_id,
                    &termination,
                    TaskState::TaskFailed,
                    Reason::ExecutorTerminated,
                    "Executor terminated while the agent was down",
                );
            }
        }
    }

    fn recover_task(
        &mut self,
        framework_id: &str,
        executor_id: &str,
        task_id: &str,
        container_id: &ContainerId,
        task_dir: &Path,
        damage: &mut Vec<String>,
    ) -> Option<Task> {
        let info_file = task_dir.join(meta::TASK_INFO_FILE);
        let info = match meta::read_message::<pb::TaskInfo>(&info_file) {
            Ok(info) if info.task_id.as_ref().map(|t| t.value.as_str()) == Some(task_id) => info,
            // Kept under the id its directory names, so the framework hears of the
            // task's end instead of the task silently vanishing.
            Ok(_) => {
                damage.push(format!("{} names another task", info_file.display()));
                damaged_task_info(task_id)
            }
            Err(e) => {
                damage.push(format!("{}: {e}", info_file.display()));
                damaged_task_info(task_id)
            }
        };
        let key = StreamKey::new(framework_id, task_id);
        let updates = task_dir.join(meta::TASK_UPDATES_FILE);
        let mut latest = None;
        if updates.exists() {
            match self.updates.recover(key, &updates) {
                Ok(recovered) if recovered.finished => {
                    self.remove_meta(task_dir);
                    return None;
                }
                Ok(recovered) => {
                    if recovered.torn_tail {
                        warn!(self.logger, "status update log ended in a torn record; it was cut off";
                            "task_id" => task_id);
                    }
                    latest = recovered.latest;
                }
                Err(e) => {
                    warn!(self.logger, "unreadable status update log"; "task_id" => task_id, "error" => %e);
                }
            }
        }
        let group = read_group(&task_dir.join(meta::TASK_GROUP_FILE)).unwrap_or_else(|problem| {
            damage.push(problem);
            None
        });
        let mut task = Task::new(info, framework_id, executor_id);
        task.group = group;
        task.container = Some(container_id.clone());
        task.meta_dir = Some(task_dir.to_path_buf());
        task.launched = latest.is_some();
        if let Some(status) = &latest {
            task.state = status.state;
        }
        task.latest_status = latest;
        Some(task)
    }
}

/// The group id checkpointed in `path`: `None` when there is no file (a task
/// launched alone), an error naming the file when it cannot be read or holds no
/// valid id.
fn read_group(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if limits::id("task.group", Some(&text)).is_ok() => Ok(Some(text)),
        Ok(_) => Err(format!("{} holds no valid group id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Stands in for a task whose `task.info` checkpoint is unreadable.
fn damaged_task_info(task_id: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: Some(pb::TaskId {
            value: task_id.to_string(),
        }),
        ..Default::default()
    }
}
