//! Where a task's output goes: pipes the executor drains into the sandbox's rotated
//! `stdout`/`stderr` files ([`super::rotation`]). Every task of an executor, and the
//! executor's own output once [`capture_executor_output`] ran, share one writer per
//! file, so rotation has a single writer however many processes produce output.
//!
//! Pipes are drained by small OS threads rather than tokio tasks: the executor logs
//! synchronously to its own stderr, which is one of these pipes, and a thread
//! blocked on that write must never be the one that has to empty it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::rotation::{RotatingFile, RotationPolicy};

/// Largest file before rotation, in bytes (agent flag `--container-log-max-size`).
pub const LOG_MAX_SIZE_ENV: &str = "AGORA_CONTAINER_LOG_MAX_SIZE";
/// Rotated files kept per stream (agent flag `--container-log-max-files`).
pub const LOG_MAX_FILES_ENV: &str = "AGORA_CONTAINER_LOG_MAX_FILES";

/// Stack of a pump thread: it only moves bytes through a heap buffer.
const PUMP_STACK: usize = 64 * 1024;
const PUMP_BUFFER: usize = 32 * 1024;
/// How long [`finish_executor_output`] waits for the executor's last lines.
const FINAL_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The rotation policy the agent set in the environment of `vars` (defaults for
/// what it did not set).
pub fn policy_from_vars(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<RotationPolicy, String> {
    let mut policy = RotationPolicy::default();
    for (name, value) in vars {
        let value = value.to_string_lossy().trim().to_string();
        if name == LOG_MAX_SIZE_ENV {
            policy.max_size = value
                .parse()
                .map_err(|_| format!("{LOG_MAX_SIZE_ENV}: '{value}' is not a number of bytes"))?;
        } else if name == LOG_MAX_FILES_ENV {
            policy.max_files = value
                .parse()
                .map_err(|_| format!("{LOG_MAX_FILES_ENV}: '{value}' is not a number of files"))?;
        }
    }
    RotationPolicy::new(policy.max_size, policy.max_files)
}

/// The policy from this process' environment.
pub fn policy_from_env() -> Result<RotationPolicy, String> {
    policy_from_vars(std::env::vars_os())
}

/// The environment that gives executors `policy`.
pub fn policy_env(policy: RotationPolicy) -> Vec<(OsString, OsString)> {
    vec![
        (LOG_MAX_SIZE_ENV.into(), policy.max_size.to_string().into()),
        (
            LOG_MAX_FILES_ENV.into(),
            policy.max_files.to_string().into(),
        ),
    ]
}

type SharedWriter = Arc<Mutex<RotatingFile>>;

/// This process' writers, by file path: one per stream (see the module docs).
fn writers() -> &'static Mutex<HashMap<PathBuf, SharedWriter>> {
    static WRITERS: OnceLock<Mutex<HashMap<PathBuf, SharedWriter>>> = OnceLock::new();
    WRITERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The writer of `dir/name`, opened on first use with `policy`.
fn writer(dir: &Path, name: &str, policy: RotationPolicy) -> io::Result<SharedWriter> {
    let mut writers = writers().lock().unwrap_or_else(|e| e.into_inner());
    let path = dir.join(name);
    if let Some(writer) = writers.get(&path) {
        return Ok(writer.clone());
    }
    let writer = Arc::new(Mutex::new(RotatingFile::open(dir, name, policy)?));
    writers.insert(path, writer.clone());
    Ok(writer)
}

/// A pipe: (read end, write end), both close-on-exec (a child gets the write end
/// only as its stdout/stderr, duplicated there by the spawn).
fn pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success; we own both afterwards.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { Ok((File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

/// Copies `pipe` into `writer` until every write end is closed; resolves the
/// returned receiver then.
fn pump(
    mut pipe: File,
    writer: SharedWriter,
    what: &str,
) -> io::Result<tokio::sync::watch::Receiver<bool>> {
    let (done, done_rx) = tokio::sync::watch::channel(false);
    std::thread::Builder::new()
        .name(format!("output-{what}"))
        .stack_size(PUMP_STACK)
        .spawn(move || {
            let mut buffer = vec![0u8; PUMP_BUFFER];
            loop {
                match pipe.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                        // A failed write (full disk) drops these bytes and keeps
                        // draining, so the task never blocks on its output. It cannot
                        // be logged: the executor's own stderr may be this very pipe.
                        let _ = writer.write_all(&buffer[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(true);
        })?;
    Ok(done_rx)
}

/// A task's stdout and stderr, to hand to its process (`Stdio::from`) or to the
/// OCI runtime's `create` (`File::from`), and the pumps that store them. Drop the
/// write ends once the process has them, or the pumps never see the end.
pub struct TaskOutput {
    /// Write end of the stdout pipe.
    pub stdout: OwnedFd,
    /// Write end of the stderr pipe.
    pub stderr: OwnedFd,
    pub pumps: OutputPumps,
}

/// Tracks the pumps of one task's output.
pub struct OutputPumps {
    /// One per stream; `true` once every writer of its pipe is gone and all it
    /// carried is in the file.
    done: Vec<tokio::sync::watch::Receiver<bool>>,
}

impl OutputPumps {
    /// Resolves once everything the task wrote is stored: all its pipes' writers
    /// are gone (processes it left behind may keep them open, so callers bound the
    /// wait). Cancel-safe.
    pub async fn closed(&mut self) {
        for done in &mut self.done {
            let _ = done.wait_for(|done| *done).await;
        }
    }
}

/// Opens pipes for a task's stdout and stderr, drained into `sandbox/stdout` and
/// `sandbox/stderr` with `policy` (the policy of whoever opened a stream first in
/// this process applies).
pub fn open_task_output(
    sandbox: &Path,
    task_id: &str,
    policy: RotationPolicy,
) -> io::Result<TaskOutput> {
    let mut done = Vec::new();
    let mut ends = Vec::new();
    for name in ["stdout", "stderr"] {
        let writer = writer(sandbox, name, policy)?;
        let (read_end, write_end) = pipe()?;
        done.push(pump(read_end, writer, &format!("{task_id}-{name}"))?);
        ends.push(write_end);
    }
    let (Some(stderr), Some(stdout)) = (ends.pop(), ends.pop()) else {
        return Err(io::Error::other("the output pipes were not created"));
    };
    Ok(TaskOutput {
        stdout,
        stderr,
        pumps: OutputPumps { done },
    })
}

/// The pumps of this process' own stdout/stderr, once captured.
fn own_pumps() -> &'static Mutex<Option<OutputPumps>> {
    static OWN: OnceLock<Mutex<Option<OutputPumps>>> = OnceLock::new();
    OWN.get_or_init(|| Mutex::new(None))
}

/// Sends this process' own stdout and stderr (file descriptors 1 and 2) through
/// the sandbox's rotated writers, so the executor's log lines and its tasks' output
/// share one writer per file. Call once, before logging starts.
pub fn capture_executor_output(sandbox: &Path, policy: RotationPolicy) -> io::Result<()> {
    let mut done = Vec::new();
    for (fd, name) in [
        (libc::STDOUT_FILENO, "stdout"),
        (libc::STDERR_FILENO, "stderr"),
    ] {
        let writer = writer(sandbox, name, policy)?;
        let (read_end, write_end) = pipe()?;
        done.push(pump(read_end, writer, &format!("executor-{name}"))?);
        // SAFETY: dup2 onto a standard descriptor; the old one (the file the
        // containerizer opened) is closed atomically, and `write_end` stays ours.
        if unsafe { libc::dup2(write_end.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    *own_pumps().lock().unwrap_or_else(|e| e.into_inner()) = Some(OutputPumps { done });
    Ok(())
}

/// [`capture_executor_output`] with the sandbox and policy the agent put in the
/// environment; does nothing without a sandbox.
pub fn capture_executor_output_from_env() -> Result<(), String> {
    let Some(sandbox) = std::env::var_os(crate::command_executor::env::SANDBOX) else {
        return Ok(());
    };
    let policy = policy_from_env()?;
    capture_executor_output(Path::new(&sandbox), policy)
        .map_err(|e| format!("cannot capture the executor's output: {e}"))
}

/// Before exiting: closes this process' stdout/stderr and waits (briefly) until
/// what was written to them is stored.
pub fn finish_executor_output() {
    let Some(mut pumps) = own_pumps().lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: replaces a standard descriptor with /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let _ = tokio::time::timeout(FINAL_FLUSH_WAIT, pumps.closed()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[tokio::test]
    async fn a_task_writes_through_pipes_into_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RotationPolicy::new(100, 1).unwrap();
        let output = open_task_output(dir.path(), "t1", policy).unwrap();
        let mut pumps = output.pumps;
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 30 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2")
            .stdout(Stdio::from(output.stdout))
            .stderr(Stdio::from(output.stderr))
            .spawn()
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        pumps.closed().await;
        let chunk = super::super::rotation::read(dir.path(), "stdout", Some(0), 10_000).unwrap();
        let text = String::from_utf8(chunk.data).unwrap();
        // 30 lines of 7 or 8 bytes: 230 bytes over 3 files, and with one rotated file
        // kept the oldest 100 bytes are gone.
        assert_eq!(chunk.end, 230);
        assert_eq!(chunk.first_available, 100);
        assert!(text.ends_with("line-28\nline-29\n"), "{text}");
        assert_eq!(std::fs::read(dir.path().join("stderr")).unwrap(), b"oops\n");
        assert!(!dir.path().join("stdout.2").exists());
        for file in ["stdout", "stdout.1"] {
            assert!(std::fs::metadata(dir.path().join(file)).unwrap().len() <= 100);
        }
    }

    #[test]
    fn the_policy_comes_from_the_environment() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert_eq!(policy_from_vars(vec![]), Ok(RotationPolicy::default()));
        let policy = RotationPolicy::new(2048, 3).unwrap();
        assert_eq!(policy_from_vars(policy_env(policy)), Ok(policy));
        let err = policy_from_vars(vars(&[(LOG_MAX_SIZE_ENV, "big")])).unwrap_err();
        assert!(err.contains(LOG_MAX_SIZE_ENV), "{err}");
        assert!(policy_from_vars(vars(&[(LOG_MAX_FILES_ENV, "0")])).is_err());
    }
}
