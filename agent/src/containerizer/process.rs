//! The `process` containerizer: each executor is a plain process started in a new
//! session (setsid, by posix_spawn: see `spawn`), so it is no child of the agent's
//! session, survives SIGKILL of the agent and can be reattached by a restarted
//! agent. Everything the executor
//! starts stays in that session (tasks get their own process groups inside it), so
//! destroying a container means killing every process of the session.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slog::{Logger, debug};

use super::spawn::{SpawnRequest, pidfd_open, spawn_session_leader, wait_for_child};
use super::{
    BoxFuture, ContainerId, Containerizer, ContainerizerError, LaunchSpec, Launched, Termination,
};
use crate::procfs;

/// How often a reattached executor is checked when pidfds are unavailable.
const LIVENESS_POLL: Duration = Duration::from_secs(1);

/// See the module documentation.
pub struct ProcessContainerizer {
    /// Session id (the executor's pid, as session leader) of every container launched
    /// or recovered and not yet destroyed.
    sessions: Arc<Mutex<HashMap<ContainerId, i32>>>,
    /// For launch and destroy diagnostics.
    logger: Logger,
}

impl ProcessContainerizer {
    pub fn new(logger: Logger) -> Self {
        Self {
            sessions: Arc::new(Mutex::new(HashMap::new())),
            logger,
        }
    }

    fn remember(&self, id: &ContainerId, session: i32) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), session);
    }

    fn forget(&self, id: &ContainerId) -> Option<i32> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    async fn spawn(&self, spec: LaunchSpec) -> Result<Launched, ContainerizerError> {
        if let Some(container) = &spec.container {
            let wants_image = container.image.as_ref().is_some_and(|i| !i.name.is_empty());
            if wants_image || container.r#type == agora_proto::container_info::Type::Docker as i32 {
                return Err(ContainerizerError::Unsupported {
                    containerizer: "process",
                    what: "container images (use the oci containerizer)".into(),
                });
            }
        }
        let container_id = spec.container_id.clone();
        let executor_id = spec.executor_id.clone();
        // Opening files and spawning block; the async workers have better things to do.
        let pid = tokio::task::spawn_blocking(move || start_executor(&spec))
            .await
            .map_err(|e| ContainerizerError::Io {
                context: "launching the executor".into(),
                source: io::Error::other(e),
            })??;
        self.remember(&container_id, pid as i32);
        debug!(self.logger, "executor started";
            "container" => %container_id, "pid" => pid, "executor_id" => &executor_id);
        Ok(Launched {
            pid: Some(pid),
            termination: Box::pin(wait_for_child(pid)),
        })
    }
}

/// Opens the sandbox's `stdout` and `stderr` and starts the executor in its own
/// session; returns its pid.
fn start_executor(spec: &LaunchSpec) -> Result<u32, ContainerizerError> {
    let Some(program) = spec.command.first() else {
        return Err(ContainerizerError::Io {
            context: "launching the executor".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty executor command"),
        });
    };
    let open = |name: &str| {
        let path = spec.sandbox.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ContainerizerError::Io {
                context: format!("opening {}", path.display()),
                source,
            })
    };
    let (stdout, stderr) = (open("stdout")?, open("stderr")?);
    let request = SpawnRequest {
        program,
        argv: &spec.command,
        env: &spec.env,
        cwd: &spec.sandbox,
        stdout: &stdout,
        stderr: &stderr,
    };
    spawn_session_leader(&request).map_err(|source| ContainerizerError::Io {
        context: format!("starting executor {}", program.to_string_lossy()),
        source,
    })
}

impl Containerizer for ProcessContainerizer {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerizerError>> {
        Box::pin(self.spawn(spec))
    }

    fn recover(&self, container_id: &ContainerId, pid: u32) -> BoxFuture<'static, Termination> {
        self.remember(container_id, pid as i32);
        Box::pin(wait_for_foreign_process(pid))
    }

    fn destroy(&self, container_id: &ContainerId) -> BoxFuture<'_, Result<(), ContainerizerError>> {
        let session = self.forget(container_id);
        let logger = self.logger.clone();
        let container_id = container_id.clone();
        Box::pin(async move {
            if let Some(session) = session {
                // Scanning /proc blocks; keep it off the async workers.
                let killed = tokio::task::spawn_blocking(move || kill_session(session))
                    .await
                    .map_err(|e| ContainerizerError::Io {
                        context: format!("destroying container {container_id}"),
                        source: io::Error::other(e),
                    })?;
                debug!(logger, "container destroyed"; "container" => %container_id, "processes" => killed);
            }
            Ok(())
        })
    }
}

/// SIGKILLs every process of `session`, repeating while new ones show up (a process
/// may fork between the scan and the kill). Returns how many were signalled.
fn kill_session(session: i32) -> usize {
    // SAFETY: getsid(0) has no preconditions.
    let own_session = unsafe { libc::getsid(0) };
    if session <= 1 || session == own_session {
        return 0;
    }
    let mut killed = 0;
    // SAFETY: kill/killpg only send signals; a gone process yields ESRCH.
    unsafe { libc::killpg(session, libc::SIGKILL) };
    for _ in 0..5 {
        let members = procfs::session_members(session);
        if members.is_empty() {
            break;
        }
        for pid in members {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    killed
}

/// Waits for a process that is not our child (so waitpid cannot be used): with a
/// pidfd where the kernel has them, else by polling.
async fn wait_for_foreign_process(pid: u32) -> Termination {
    let ended = || Termination {
        message: "exited while the agent was not watching (status unknown)".into(),
        ..Termination::default()
    };
    match pidfd_open(pid as libc::pid_t) {
        Ok(Some(pidfd)) => {
            let _ = pidfd.readable().await;
            return ended();
        }
        Ok(None) => {}
        Err(_) => return ended(),
    }
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            return ended();
        }
        tokio::time::sleep(LIVENESS_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> LaunchSpec {
        LaunchSpec {
            container_id: ContainerId(uuid::Uuid::new_v4().to_string()),
            framework_id: "fw".into(),
            executor_id: "ex".into(),
            sandbox: dir.to_path_buf(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("AGORA_TEST_VALUE".into(), "from-env".into())],
            container: None,
            resources: Vec::new(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-process-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn logger() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[tokio::test]
    async fn runs_in_its_own_session_with_output_in_the_sandbox() {
        let dir = temp_dir();
        let c = ProcessContainerizer::new(logger());
        // Prints its session id and pid: they are equal for a session leader.
        let launched = c
            .launch(spec(
                &dir,
                "echo $AGORA_TEST_VALUE; cut -d' ' -f6 /proc/$$/stat; echo $$; echo err >&2; exit 7",
            ))
            .await
            .unwrap();
        let termination = launched.termination.await;
        assert_eq!(termination.exit_code, Some(7));
        assert_eq!(termination.message, "exited with status 7");
        let out = std::fs::read_to_string(dir.join("stdout")).unwrap();
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines[0], "from-env");
        assert_eq!(lines[1], lines[2], "the executor leads its own session");
        assert_eq!(
            std::fs::read_to_string(dir.join("stderr")).unwrap(),
            "err\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn destroy_kills_the_whole_session() {
        let dir = temp_dir();
        let c = ProcessContainerizer::new(logger());
        // A grandchild the executor leaves behind stays in the session.
        let s = spec(&dir, "(sleep 100 &) ; exec sleep 100");
        let id = s.container_id.clone();
        let launched = c.launch(s).await.unwrap();
        let pid = launched.pid.unwrap() as i32;
        // Wait until the background sleep exists in the session.
        for _ in 0..200 {
            if procfs::session_members(pid).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(procfs::session_members(pid).len() >= 2);
        c.destroy(&id).await.unwrap();
        let termination = launched.termination.await;
        assert_eq!(termination.signal, Some(libc::SIGKILL));
        for _ in 0..200 {
            if procfs::session_members(pid).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(procfs::session_members(pid).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn recover_watches_a_process_that_is_not_our_child() {
        let c = ProcessContainerizer::new(logger());
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        let id = ContainerId("recovered".into());
        let waiting = tokio::spawn(c.recover(&id, pid));
        child.kill().unwrap();
        child.wait().unwrap();
        let termination = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the exit is noticed")
            .unwrap();
        assert_eq!(termination.exit_code, None);
    }
}
