//! [`EchoExecutor`]: runs each task's `data` as a shell command in its own process
//! group, reports TASK_RUNNING (with the pid) and then TASK_FINISHED, TASK_FAILED
//! (with the exit code) or TASK_KILLED, and answers every framework message with
//! `echo: <message>`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_sdk::executor::{Executor, ExecutorHandle};
use agora_sdk::proto::{self, TaskState};

/// SIGTERM → SIGKILL grace when neither the kill nor the task names one (Mesos' 3 s).
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// A running task.
struct RunningTask {
    /// Its process group (the shell's pid): signals go to the whole group.
    process_group: i32,
    /// A kill was asked for: its end is reported TASK_KILLED.
    killing: bool,
    /// From the task's kill policy, when it names one.
    grace: Option<Duration>,
}

/// Shared with the tasks that wait for each process.
#[derive(Default)]
struct State {
    /// Tasks whose process runs, by task id.
    running: HashMap<String, RunningTask>,
    /// The agent asked us to shut down: stop once nothing runs.
    shutting_down: bool,
}

/// See the module documentation.
#[derive(Default, Clone)]
pub struct EchoExecutor {
    state: Arc<Mutex<State>>,
}

impl EchoExecutor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn status(task_id: &proto::TaskId, state: TaskState, message: String) -> proto::TaskStatus {
    proto::TaskStatus {
        task_id: Some(task_id.clone()),
        state: state as i32,
        message,
        ..Default::default()
    }
}

fn report(driver: &ExecutorHandle, status: proto::TaskStatus) {
    // Fails only once the driver has stopped, when there is no one left to tell.
    let _ = driver.send_status_update(status);
}

fn signal_group(process_group: i32, signal: i32) {
    // kill(-0) would signal this executor's own group (and -1 everything it may).
    if process_group <= 1 {
        return;
    }
    // SAFETY: kill(2) on a process group this executor created; a group that is
    // already gone just yields ESRCH.
    unsafe {
        libc::kill(-process_group, signal);
    }
}

impl Executor for EchoExecutor {
    async fn launch_task(&mut self, driver: &ExecutorHandle, task: proto::TaskInfo) {
        let Some(task_id) = task.task_id.clone() else {
            return;
        };
        if self.state().shutting_down {
            report(
                driver,
                status(
                    &task_id,
                    TaskState::TaskKilled,
                    "the executor is shutting down".into(),
                ),
            );
            return;
        }
        let command = String::from_utf8_lossy(&task.data).trim().to_string();
        if command.is_empty() {
            report(
                driver,
                status(
                    &task_id,
                    TaskState::TaskFailed,
                    "the task's data holds no command to run".into(),
                ),
            );
            return;
        }
        let mut process = tokio::process::Command::new("/bin/sh");
        process
            .arg("-c")
            .arg(&command)
            .process_group(0)
            .env("AGORA_TASK_ID", &task_id.value)
            // The executor's secret is not the task's business.
            .env_remove(agora_sdk::executor::env::EXECUTOR_TOKEN)
            .stdin(Stdio::null());
        if let Some(sandbox) = driver.sandbox() {
            process.current_dir(sandbox);
        }
        let mut child = match process.spawn() {
            Ok(child) => child,
            Err(e) => {
                report(
                    driver,
                    status(
                        &task_id,
                        TaskState::TaskFailed,
                        format!("cannot start the command: {e}"),
                    ),
                );
                return;
            }
        };
        let pid = child.id().unwrap_or_default() as i32;
        let grace = task
            .kill_policy
            .and_then(|p| p.grace_period_seconds)
            .filter(|g| g.is_finite() && *g >= 0.0 && *g < 1e6)
            .map(Duration::from_secs_f64);
        self.state().running.insert(
            task_id.value.clone(),
            RunningTask {
                process_group: pid,
                killing: false,
                grace,
            },
        );
        report(
            driver,
            status(&task_id, TaskState::TaskRunning, format!("pid {pid}")),
        );

        let state = self.state.clone();
        let driver = driver.clone();
        tokio::spawn(async move {
            let exit = child.wait().await;
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            let killing = state
                .running
                .remove(&task_id.value)
                .is_some_and(|t| t.killing);
            // Whatever the shell left in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            let (state_now, message, code) = match exit {
                Err(e) => (
                    TaskState::TaskFailed,
                    format!("cannot wait for the command: {e}"),
                    None,
                ),
                Ok(_) if killing => (TaskState::TaskKilled, "killed".to_string(), None),
                Ok(exit) if exit.success() => (
                    TaskState::TaskFinished,
                    "exited with status 0".into(),
                    Some(0),
                ),
                Ok(exit) => match exit.code() {
                    Some(code) => (
                        TaskState::TaskFailed,
                        format!("exited with status {code}"),
                        Some(code),
                    ),
                    None => (TaskState::TaskFailed, format!("ended by {exit}"), None),
                },
            };
            let mut update = status(&task_id, state_now, message);
            update.exit_code = code;
            report(&driver, update);
            if state.shutting_down && state.running.is_empty() {
                driver.stop();
            }
        });
    }

    async fn kill_task(
        &mut self,
        _: &ExecutorHandle,
        task_id: proto::TaskId,
        kill_policy: Option<proto::KillPolicy>,
    ) {
        let grace_asked = kill_policy
            .and_then(|p| p.grace_period_seconds)
            .filter(|g| g.is_finite() && *g >= 0.0 && *g < 1e6)
            .map(Duration::from_secs_f64);
        let mut state = self.state();
        let Some(task) = state.running.get_mut(&task_id.value) else {
            // Not running (never launched here, or already ended and reported).
            return;
        };
        if task.killing {
            return;
        }
        task.killing = true;
        let process_group = task.process_group;
        let grace = grace_asked.or(task.grace).unwrap_or(DEFAULT_KILL_GRACE);
        drop(state);
        signal_group(process_group, libc::SIGTERM);
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let still_running = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .running
                .contains_key(&task_id.value);
            if still_running {
                signal_group(process_group, libc::SIGKILL);
            }
        });
    }

    async fn framework_message(&mut self, driver: &ExecutorHandle, data: Vec<u8>) {
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&data);
        reply.truncate(64 * 1024);
        let _ = driver.send_framework_message(reply);
    }

    async fn shutdown(&mut self, driver: &ExecutorHandle, grace: Duration) {
        let running: Vec<String> = {
            let mut state = self.state();
            state.shutting_down = true;
            if state.running.is_empty() {
                driver.stop();
            }
            state.running.keys().cloned().collect()
        };
        let policy = proto::KillPolicy {
            grace_period_seconds: Some(grace.as_secs_f64()),
        };
        for task_id in running {
            self.kill_task(driver, proto::TaskId { value: task_id }, Some(policy))
                .await;
        }
    }
}
