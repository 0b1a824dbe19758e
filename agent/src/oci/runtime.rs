//! The OCI runtime binary (runc; crun and youki take the same CLI) driven through
//! its command line. Every call names the state directory (`--root`), so agents with
//! different work dirs never see each other's containers. `create` and errors go
//! through a JSON log file in the bundle, because the runtime's own stderr is the
//! container's stderr (the task's output file) and cannot be captured.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// How often a failing `delete` is tried, and the waits between tries.
const DELETE_ATTEMPTS: u32 = 8;
const DELETE_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const DELETE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest a runtime call that launches or signals a container may take. runc
/// normally answers in well under a second even on a loaded machine; one that hangs
/// (a stuck mount, a frozen cgroup) must fail the launch, not hang the executor.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run the OCI runtime {binary}: {source}")]
    Spawn { binary: String, source: io::Error },
    #[error("{operation} of container {id} failed: {message}")]
    Failed {
        operation: &'static str,
        id: String,
        /// The runtime's own error text.
        message: String,
    },
    #[error(
        "{operation} of container {id} did not finish within {seconds} s; the runtime was killed"
    )]
    TimedOut {
        operation: &'static str,
        id: String,
        seconds: u64,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(
        "no OCI runtime '{0}': not an executable file, nor found on PATH (install runc or name one with --oci-runtime)"
    )]
    NotFound(String),
}

/// Finds the runtime binary: a path is checked to be an executable file, a bare
/// name is looked up on `PATH`. Returns an absolute path where one was found.
pub fn resolve_binary(name: &Path) -> Result<PathBuf, RuntimeError> {
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.components().count() > 1 || name.is_absolute() {
        return if executable(name) {
            Ok(std::path::absolute(name).unwrap_or_else(|_| name.to_path_buf()))
        } else {
            Err(RuntimeError::NotFound(name.display().to_string()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| RuntimeError::NotFound(name.display().to_string()))
}

/// Whether this process runs as root, as the runtime needs to make containers
/// (cgroups, mounts, namespaces).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One runtime binary and its state directory.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The runtime executable.
    pub binary: PathBuf,
    /// Its `--root`: one directory per container, named by container id.
    pub state_root: PathBuf,
}

impl Runtime {
    pub fn new(binary: PathBuf, state_root: PathBuf) -> Self {
        Self { binary, state_root }
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command.arg("--root").arg(&self.state_root);
        command.kill_on_drop(false);
        command
    }

    /// Runs a runtime call to its end, killing the runtime (never the container: an
    /// init it made is re-parented to us) if it takes longer than [`CALL_TIMEOUT`].
    async fn bounded<T>(
        &self,
        operation: &'static str,
        id: &str,
        command: &mut tokio::process::Command,
        call: impl AsyncFnOnce(&mut tokio::process::Command) -> io::Result<T>,
    ) -> Result<T, RuntimeError> {
        command.kill_on_drop(true);
        match tokio::time::timeout(CALL_TIMEOUT, call(command)).await {
            Ok(result) => result.map_err(|e| self.spawn_error(e)),
            Err(_) => Err(RuntimeError::TimedOut {
                operation,
                id: id.to_string(),
                seconds: CALL_TIMEOUT.as_secs(),
            }),
        }
    }

    fn blocking_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.binary);
        command.arg("--root").arg(&self.state_root);
        command
    }

    fn spawn_error(&self, source: io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        }
    }

    /// `create`: sets the container up (namespaces, cgroup, mounts) with its init
    /// process waiting for `start`. The init inherits `stdout` and `stderr`. Returns
    /// the init's pid (on the host); once the runtime has exited, that process is
    /// re-parented to the nearest subreaper.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<u32, RuntimeError> {
        let log = bundle.join("runtime.log");
        let pid_file = bundle.join("init.pid");
        // A leftover from an earlier attempt would be mistaken for this one's.
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&pid_file);
        let mut command = self.command();
        command
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let status = self
            .bounded("create", id, &mut command, async |c| c.status().await)
            .await?;
        if !status.success() {
            return Err(RuntimeError::Failed {
                operation: "create",
                id: id.to_string(),
                message: last_error(&log).unwrap_or_else(|| format!("the runtime {status}")),
            });
        }
        let pid = std::fs::read_to_string(&pid_file).map_err(|source| RuntimeError::Io {
            context: format!("reading {}", pid_file.display()),
            source,
        })?;
        pid.trim().parse().map_err(|_| RuntimeError::Failed {
            operation: "create",
            id: id.to_string(),
            message: format!("the pid file holds '{}', not a pid", pid.trim()),
        })
    }

    /// `start`: the init process execs the task's program.
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut command = self.command();
        command.args(["start", id]).stdin(Stdio::null());
        let output = self
            .bounded("start", id, &mut command, async |c| c.output().await)
            .await?;
        checked("start", id, output)
    }

    /// `kill ID SIGNAL`, waited for.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let mut command = self.command();
        command
            .args(["kill", id, &signal.to_string()])
            .stdin(Stdio::null());
        let output = self
            .bounded("kill", id, &mut command, async |c| c.output().await)
            .await?;
        checked("kill", id, output)
    }

    /// `delete --force`: kills whatever is left in the container and removes its
    /// state and cgroup. Blocks; a container the runtime does not know is fine.
    /// Retried with backoff while it fails: a machine starting or stopping
    /// thousands of containers runs out of pids for a moment, and a container whose
    /// delete failed would otherwise be left behind.
    pub fn delete_force_blocking(&self, id: &str) -> Result<(), RuntimeError> {
        let mut backoff = DELETE_BACKOFF_MIN;
        let mut attempts = 1;
        loop {
            let result = self
                .blocking_command()
                .args(["delete", "--force", id])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| self.spawn_error(e))
                .and_then(|output| {
                    if output.status.success() || !self.state_root.join(id).exists() {
                        Ok(())
                    } else {
                        checked("delete", id, output)
                    }
                });
            if result.is_ok() || attempts >= DELETE_ATTEMPTS {
                return result;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(DELETE_BACKOFF_MAX);
            attempts += 1;
        }
    }

    /// `exec ARGS`: `[options] <id> <program> [args]` runs a program inside the
    /// container, with the container's environment and working directory.
    pub fn exec_command(&self, args: &[OsString]) -> tokio::process::Command {
        let mut command = self.command();
        command.arg("exec").args(args);
        command
    }

    /// The ids of the containers in the state directory (an absent directory has
    /// none).
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let entries = match std::fs::read_dir(&self.state_root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RuntimeError::Io {
                    context: format!("listing {}", self.state_root.display()),
                    source,
                });
            }
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
}

fn checked(operation: &'static str, id: &str, output: Output) -> Result<(), RuntimeError> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .rev()
        .find_map(|line| error_of_json_line(line).or_else(|| Some(line.trim().to_string())))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the runtime {}", output.status));
    Err(RuntimeError::Failed {
        operation,
        id: id.to_string(),
        message,
    })
}

/// The last error message in a JSON runtime log.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(error_of_json_line)
}

/// `msg` of a `{"level":"error","msg":...}` (or fatal) line.
fn error_of_json_line(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let level = value.get("level")?.as_str()?;
    if level != "error" && level != "fatal" {
        return None;
    }
    Some(value.get("msg")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_are_read_from_the_json_log() {
        let line =
            r#"{"level":"error","msg":"runc create failed: exec: \"x\": not found","time":"t"}"#;
        assert_eq!(
            error_of_json_line(line).as_deref(),
            Some("runc create failed: exec: \"x\": not found")
        );
        assert_eq!(error_of_json_line(r#"{"level":"info","msg":"hi"}"#), None);
        assert_eq!(error_of_json_line("not json"), None);
    }

    #[test]
    fn a_missing_runtime_is_named() {
        let e = resolve_binary(Path::new("/nonexistent/runc")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/runc"), "{e}");
        let e = resolve_binary(Path::new("agora-no-such-runtime")).unwrap_err();
        assert!(e.to_string().contains("--oci-runtime"), "{e}");
        assert!(resolve_binary(Path::new("sh")).unwrap().is_absolute());
    }
}
