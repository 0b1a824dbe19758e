//! The task's process: started from its `CommandInfo` in its own process group (so
//! a kill reaches everything it spawned, and nothing else), with the sandbox as its
//! working directory and its output appended to the sandbox's `stdout`/`stderr`.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use agora_proto as pb;
use agora_proto::task_status::Reason;

use super::env;
use crate::containerizer::signal_name;

/// A running task.
pub(super) struct TaskProcess {
    child: tokio::process::Child,
    /// The process group: the task's pid, as group leader.
    group: i32,
}

impl TaskProcess {
    /// Starts `command`. A failure comes with the reason to report.
    pub(super) fn spawn(
        command: &pb::CommandInfo,
        task_id: &str,
        sandbox: Option<&Path>,
    ) -> Result<Self, (Reason, String)> {
        let mut process = if command.shell {
            let mut p = tokio::process::Command::new("/bin/sh");
            p.arg("-c").arg(&command.value);
            p
        } else {
            let mut p = tokio::process::Command::new(&command.value);
            // `arguments` is argv, argv[0] included, as in Mesos.
            if let Some((argv0, rest)) = command.arguments.split_first() {
                p.arg0(argv0).args(rest);
            }
            p
        };
        process
            .env_remove(env::EXECUTOR_TOKEN)
            .env(env::TASK_ID, task_id)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(environment) = &command.environment {
            for variable in &environment.variables {
                process.env(&variable.name, &variable.value);
            }
        }
        if let Some(sandbox) = sandbox {
            let open = |name: &str| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(sandbox.join(name))
                    .map_err(|e| {
                        (
                            Reason::ContainerLaunchFailed,
                            format!("cannot open the sandbox's {name}: {e}"),
                        )
                    })
            };
            process
                .current_dir(sandbox)
                .stdout(Stdio::from(open("stdout")?))
                .stderr(Stdio::from(open("stderr")?));
        }
        let shown = if command.shell {
            "/bin/sh"
        } else {
            command.value.as_str()
        };
        let child = process.spawn().map_err(|e| {
            let reason = if e.kind() == io::ErrorKind::NotFound {
                Reason::CommandNotFound
            } else {
                Reason::ContainerLaunchFailed
            };
            (reason, format!("Failed to launch command '{shown}': {e}"))
        })?;
        let group = child.id().map(|pid| pid as i32).ok_or((
            Reason::ContainerLaunchFailed,
            "the command exited before it could be watched".to_string(),
        ))?;
        Ok(Self { child, group })
    }

    /// Waits for the task's main process to end. Cancel-safe.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Signals the task's whole process group.
    pub(super) fn signal(&self, signal: i32) {
        // SAFETY: killpg only sends a signal; a gone group yields ESRCH.
        unsafe { libc::killpg(self.group, signal) };
    }
}

/// `(exit code, message)` for a finished command, in Mesos' words.
pub(super) fn describe_exit(status: &ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("Command exited with status {code}")),
        (None, Some(signal)) => (
            None,
            format!("Command terminated with signal {}", signal_name(signal)),
        ),
        (None, None) => (None, "Command ended".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(value: &str) -> pb::CommandInfo {
        pb::CommandInfo {
            shell: true,
            value: value.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_described() {
        let mut p = TaskProcess::spawn(&shell("exit 3"), "t", None).unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(
            describe_exit(&status),
            (Some(3), "Command exited with status 3".into())
        );

        let mut p = TaskProcess::spawn(&shell("sleep 100"), "t", None).unwrap();
        p.signal(libc::SIGTERM);
        let status = p.wait().await.unwrap();
        assert_eq!(
            describe_exit(&status).1,
            "Command terminated with signal SIGTERM"
        );
    }

    #[tokio::test]
    async fn argv_and_environment_reach_the_task() {
        let dir = std::env::temp_dir().join(format!("agora-task-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let command = pb::CommandInfo {
            shell: false,
            value: "/bin/sh".into(),
            arguments: vec![
                "sh".into(),
                "-c".into(),
                "echo $0 $1 $GREETING $AGORA_TASK_ID".into(),
                "zero".into(),
                "one".into(),
            ],
            environment: Some(pb::Environment {
                variables: vec![pb::environment::Variable {
                    name: "GREETING".into(),
                    value: "hello".into(),
                }],
            }),
            ..Default::default()
        };
        let mut p = TaskProcess::spawn(&command, "task-7", Some(&dir)).unwrap();
        assert!(p.wait().await.unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout")).unwrap(),
            "zero one hello task-7\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_command_not_found() {
        let command = pb::CommandInfo {
            value: "/nonexistent/agora-program".into(),
            ..Default::default()
        };
        let Err((reason, message)) = TaskProcess::spawn(&command, "t", None) else {
            panic!("spawning a missing program fails");
        };
        assert_eq!(reason, Reason::CommandNotFound);
        assert!(message.contains("/nonexistent/agora-program"), "{message}");
    }
}
