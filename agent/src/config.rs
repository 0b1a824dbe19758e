//! The agent's settings. [`AgentConfig::new`] fills in Mesos' defaults; the CLI and
//! tests override fields afterwards.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::containerizer::oci::{OciContainerizer, OciSettings};
use crate::containerizer::process::ProcessContainerizer;
use crate::containerizer::{Containerizer, ContainerizerError};

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
    /// What to do with the executors a previous agent process left running (Mesos'
    /// `--recover`, default reconnect).
    pub recover: RecoverMode,
    /// Starts, watches and destroys executors (default: the `process` containerizer).
    /// [`AgentConfig::apply_containerizers`] replaces it according to
    /// `containerizers`.
    pub containerizer: Arc<dyn Containerizer>,
    /// `process` and/or `oci`, the first being how tasks that name no image and no
    /// container type run (Mesos' `--containerizers`). Not empty.
    pub containerizers: Vec<String>,
    /// The OCI runtime binary: a path, or a name looked up on `PATH` (`runc`).
    pub oci_runtime: PathBuf,
    /// Where images are imported to and resolved from.
    pub image_store: PathBuf,
    /// Host directories that task volumes may come from (besides the sandbox);
    /// empty = host volumes are refused.
    pub allowed_volume_paths: Vec<PathBuf>,
    /// Pids limit of every container (at least 1).
    pub container_pids_limit: u64,
    /// Rotation of every task's `stdout`/`stderr` (Mesos' logrotate container
    /// logger: 10 MiB, 5 rotated files kept), passed to executors in their
    /// environment.
    pub container_log: crate::sandbox::RotationPolicy,
    /// When the sandboxes of finished executor runs are garbage-collected (Mesos'
    /// `--gc_delay` 1 week, `--gc_disk_headroom` 0.1, `--disk_watch_interval` 1 min).
    pub gc: crate::gc::GcSettings,
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
            recover: RecoverMode::Reconnect,
            containerizer: Arc::new(ProcessContainerizer::new(logger.clone())),
            containerizers: vec!["process".into()],
            oci_runtime: PathBuf::from("runc"),
            image_store: PathBuf::from(DEFAULT_IMAGE_STORE),
            allowed_volume_paths: Vec::new(),
            container_pids_limit: crate::command_executor::env::DEFAULT_PIDS_LIMIT,
            container_log: crate::sandbox::RotationPolicy::default(),
            gc: crate::gc::GcSettings::default(),
            logger,
        }
    }

    /// Sets `containerizer` from `containerizers`: with `oci` among them, the oci
    /// containerizer (its runtime binary must exist: a missing one is an error here,
    /// at start-up, rather than a failure of every task).
    pub fn apply_containerizers(&mut self) -> Result<(), ContainerizerError> {
        let unsupported = |what: String| ContainerizerError::Unsupported {
            containerizer: "agent",
            what,
        };
        if self.containerizers.is_empty() {
            return Err(unsupported("an empty containerizer list".into()));
        }
        for name in &self.containerizers {
            if name != "process" && name != "oci" {
                return Err(unsupported(format!(
                    "containerizer '{name}' (known: process, oci)"
                )));
            }
        }
        if !self.containerizers.iter().any(|n| n == "oci") {
            return Ok(());
        }
        let settings = OciSettings {
            runtime: self.oci_runtime.clone(),
            state_root: self.work_dir.join("runc"),
            image_store: self.image_store.clone(),
            allowed_volume_paths: self.allowed_volume_paths.clone(),
            pids_limit: self.container_pids_limit,
            default_oci: self.containerizers[0] == "oci",
        };
        self.containerizer = Arc::new(OciContainerizer::new(settings, self.logger.clone())?);
        Ok(())
    }
}

/// The image store when none is configured.
pub const DEFAULT_IMAGE_STORE: &str = "/var/lib/agora/images";

/// What a restarted agent does with the executors its previous process left running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoverMode {
    /// Reattach to every live executor, re-register with the same agent id and
    /// resend what was not acknowledged (Mesos' `--recover=reconnect`).
    #[default]
    Reconnect,
    /// Shut down every executor found (its tasks end TASK_KILLED, or FAILED if it
    /// is gone), as Mesos' `--recover=cleanup` does before an incompatible upgrade.
    /// Unlike Mesos, which exits then and registers as a new agent on its next
    /// start, the agent re-registers with its id and keeps running, so the tasks'
    /// terminal updates reach their frameworks instead of waiting for the master to
    /// give up on the old agent.
    Cleanup,
}

impl std::str::FromStr for RecoverMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "reconnect" => Ok(Self::Reconnect),
            "cleanup" => Ok(Self::Cleanup),
            other => Err(format!(
                "'{other}' is not a recovery mode: use reconnect or cleanup"
            )),
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
