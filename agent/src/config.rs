//! The agent's settings. [`AgentConfig::new`] fills in Mesos' defaults; the CLI and
//! tests override fields afterwards.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::containerizer::Containerizer;
use crate::containerizer::process::ProcessContainerizer;

/// Settings of one agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// Masters as `host:port` (no scheme), tried in order; the agent reconnects with
    /// backoff and follows a follower's `agora-leader` hint. Not empty.
    pub masters: Vec<String>,
    /// Reported to the master; defaults to the machine's hostname.
    pub hostname: String,
    /// The address executors (and the master, for logs) use to reach this agent.
    pub advertise_ip: String,
    /// Resources in Mesos syntax (`cpus:4;mem:2048;ports:[31000-31010]`); each name
    /// given replaces what detection found, names not given are detected.
    pub resources: Option<String>,
    /// Attributes in `rack:r1;zone:a` syntax.
    pub attributes: String,
    /// Where checkpoints (`meta/`) and sandboxes (`frameworks/`) live.
    pub work_dir: PathBuf,
    /// Program and leading arguments that start the built-in command executor, e.g.
    /// `[current_exe, "executor"]` or the `agora-executor` binary. Not empty.
    pub executor_command: Vec<OsString>,
    /// First status-update retry (Mesos: 10 s).
    pub status_update_retry_min: Duration,
    /// Longest status-update retry interval (Mesos: 10 min).
    pub status_update_retry_max: Duration,
    /// Longest wait between attempts to reach a master (Mesos: 1 min).
    pub registration_backoff_max: Duration,
    /// How long a new executor may take to subscribe before it is killed (Mesos: 1 min).
    pub executor_registration_timeout: Duration,
    /// How long a running executor may take to re-subscribe after the agent restarted
    /// (Mesos: 2 s).
    pub executor_reregistration_timeout: Duration,
    /// SIGTERM → SIGKILL grace when a kill names none (Mesos command executor: 3 s).
    pub default_kill_grace: Duration,
    /// How long an executor asked to shut down may take before it is destroyed
    /// (Mesos: 5 s), on top of the kill grace.
    pub executor_shutdown_grace: Duration,
    /// How long executors keep trying to reach a restarting agent before they kill
    /// their task and exit (Mesos: 15 min).
    pub recovery_timeout: Duration,
    /// Starts, watches and destroys executors (default: the `process` containerizer).
    pub containerizer: Arc<dyn Containerizer>,
    pub logger: slog::Logger,
}

impl AgentConfig {
    /// A configuration with Mesos' defaults.
    pub fn new(
        masters: Vec<String>,
        work_dir: PathBuf,
        executor_command: Vec<OsString>,
        logger: slog::Logger,
    ) -> Self {
        Self {
            masters,
            hostname: local_hostname(),
            advertise_ip: "127.0.0.1".into(),
            resources: None,
            attributes: String::new(),
            work_dir,
            executor_command,
            status_update_retry_min: Duration::from_secs(10),
            status_update_retry_max: Duration::from_secs(600),
            registration_backoff_max: Duration::from_secs(60),
            executor_registration_timeout: Duration::from_secs(60),
            executor_reregistration_timeout: Duration::from_secs(2),
            default_kill_grace: Duration::from_secs(3),
            executor_shutdown_grace: Duration::from_secs(5),
            recovery_timeout: Duration::from_secs(15 * 60),
            containerizer: Arc::new(ProcessContainerizer::new(logger.clone())),
            logger,
        }
    }
}

/// The machine's hostname, or "localhost" if it cannot be read.
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // when the name fits, and we stop at the first NUL or the end regardless.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}
