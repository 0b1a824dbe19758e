//! Containerizers: how the agent starts, watches and destroys executor processes.
//!
//! The agent decides *what* runs (an executor command, its environment, its sandbox)
//! and a containerizer decides *how*: [`process::ProcessContainerizer`] runs it as a
//! plain process in its own session; [`oci::OciContainerizer`] starts executors the
//! same way and lets them run their tasks as OCI runtime containers (the spec
//! carries the task's `ContainerInfo` and resources for that). Methods return boxed futures so the agent can hold
//! any containerizer as `Arc<dyn Containerizer>` (tests inject fakes the same way).

pub mod oci;
pub mod process;
mod spawn;

/// Waiting for child processes, shared with the command executor, which reaps its
/// tasks' container init processes itself.
pub(crate) use spawn::{EXIT_POLL, pidfd_open, try_wait};

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use agora_proto as pb;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Names one container: the executor run's uuid, unique on the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything needed to start one executor.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    /// Unique on the agent; names the container in later `destroy`/`recover` calls.
    pub container_id: ContainerId,
    /// Valid ids (safe as path components).
    pub framework_id: String,
    pub executor_id: String,
    /// Exists before launch; the executor's stdout and stderr go to `stdout` and
    /// `stderr` inside it, and it is the executor's working directory.
    pub sandbox: PathBuf,
    /// Program and arguments (`argv[0]` is the program itself). Never empty.
    pub command: Vec<OsString>,
    /// Variables set on top of the agent's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// The task's container request (image, volumes), for containerizers that use it.
    pub container: Option<pb::ContainerInfo>,
    /// The resources the executor and its tasks were given, for isolation.
    pub resources: Vec<pb::Resource>,
}

/// How a container ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Termination {
    /// The raw wait(2) status, when the containerizer could observe it.
    pub wait_status: Option<i32>,
    /// The exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// A sentence for humans: "exited with status 1", "killed by signal SIGKILL".
    pub message: String,
}

impl Termination {
    /// Describes a std exit status.
    #[cfg(unix)]
    pub fn from_exit_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let message = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("killed by signal {}", signal_name(sig)),
            (None, None) => "ended".to_string(),
        };
        Self {
            wait_status: Some(status.into_raw()),
            exit_code: status.code(),
            signal: status.signal(),
            message,
        }
    }
}

/// A started container: its process (if it has a single one) and a future that
/// resolves when it ends.
pub struct Launched {
    /// The executor's pid, checkpointed so a restarted agent can reattach.
    pub pid: Option<u32>,
    /// Resolves once, when the container has ended.
    pub termination: BoxFuture<'static, Termination>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerizerError {
    #[error("the {containerizer} containerizer does not support {what}")]
    Unsupported {
        containerizer: &'static str,
        what: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// See the module documentation.
pub trait Containerizer: Send + Sync + 'static {
    /// Short name, checkpointed with each executor ("process", "oci").
    fn name(&self) -> &'static str;

    /// Starts an executor. Resolves once it is started (not when it ends).
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerizerError>>;

    /// Reattaches to a container launched by an earlier agent process (the agent
    /// restarted). Resolves to its termination; an already dead one resolves at once.
    fn recover(&self, container_id: &ContainerId, pid: u32) -> BoxFuture<'static, Termination>;

    /// Kills everything in the container. Idempotent; a gone container is fine.
    fn destroy(&self, container_id: &ContainerId) -> BoxFuture<'_, Result<(), ContainerizerError>>;
}

/// `SIGTERM` for 15, else `signal 42`.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}
