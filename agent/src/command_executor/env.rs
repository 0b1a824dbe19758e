//! The environment an agent gives its executors, and its parsing. The agent writes
//! these variables (see `actor::master`), the command executor reads them. The part
//! every executor reads (endpoint, ids, token, sandbox, recovery timeout) is
//! `agora_core::executor_env`, shared with the SDK's executor driver; this module adds
//! what only the built-in executor uses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use agora_core::executor_env::{
    AGENT_ENDPOINT, EXECUTOR_ID, EXECUTOR_TOKEN, EnvError, EnvVars, FRAMEWORK_ID, MESOS_SANDBOX,
    RECOVERY_TIMEOUT_SECONDS, SANDBOX,
};

/// SIGTERM → SIGKILL grace when a kill names none (Mesos command executor: 3 s).
pub const DEFAULT_KILL_GRACE_SECONDS: &str = "AGORA_DEFAULT_KILL_GRACE_SECONDS";
/// Set for the task process: its task id.
pub const TASK_ID: &str = "AGORA_TASK_ID";
/// The agent's id of this executor run (its container id); runtime containers of
/// its tasks are named `agora-<this>-<task index>`.
pub const CONTAINER_ID: &str = "AGORA_CONTAINER_ID";
/// `process` or `oci`: how tasks that name no image and no container type run.
pub const DEFAULT_CONTAINERIZER: &str = "AGORA_DEFAULT_CONTAINERIZER";
/// The OCI runtime binary (absolute path); set only when the agent has the `oci`
/// containerizer, and then tasks may run as containers.
pub const OCI_RUNTIME: &str = "AGORA_OCI_RUNTIME";
/// The runtime's state directory (`--root`).
pub const OCI_STATE_ROOT: &str = "AGORA_OCI_STATE_ROOT";
/// The agent's image store directory.
pub const IMAGE_STORE: &str = "AGORA_IMAGE_STORE";
/// `:`-separated host directories that volumes may be taken from (besides the
/// sandbox); empty = none.
pub const ALLOWED_VOLUME_PATHS: &str = "AGORA_ALLOWED_VOLUME_PATHS";
/// The pids limit of every container.
pub const CONTAINER_PIDS_LIMIT: &str = "AGORA_CONTAINER_PIDS_LIMIT";
/// Set for tasks: their assigned ports, comma-separated (`PORT0`.. one each).
pub const PORTS: &str = "PORTS";

const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Containers' pids limit when the agent names none.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// What the built-in executor learns from its environment.
#[derive(Clone, Debug)]
pub struct ExecutorEnv {
    /// What every executor reads: the agent to talk to, ids, token, sandbox.
    pub common: agora_core::executor_env::ExecutorEnv,
    /// Kill grace when neither the kill nor the task names one.
    pub default_kill_grace: Duration,
    /// How tasks may be containerized.
    pub containers: ContainerEnv,
}

/// What the agent's containerizer lets tasks use.
#[derive(Clone, Debug, Default)]
pub struct ContainerEnv {
    /// The executor run's container id; `None` when the agent did not say (then
    /// tasks cannot run under the OCI runtime).
    pub container_id: Option<String>,
    /// Tasks that name no image and no container type run under the OCI runtime.
    pub default_oci: bool,
    /// Set when the agent has the `oci` containerizer.
    pub oci: Option<OciEnv>,
}

/// The `oci` containerizer's settings, as the agent passed them.
#[derive(Clone, Debug)]
pub struct OciEnv {
    /// The runtime binary.
    pub runtime: PathBuf,
    /// Its `--root`.
    pub state_root: PathBuf,
    /// The image store directory.
    pub image_store: PathBuf,
    /// Host directories volumes may come from (besides the sandbox).
    pub allowed_volume_paths: Vec<PathBuf>,
    /// Pids limit of each container; at least 1.
    pub pids_limit: u64,
}

impl ExecutorEnv {
    /// Reads this process' environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(std::env::vars_os())
    }

    /// Reads the given variables (for executors run in-process by test harnesses).
    pub fn from_vars<K: Into<OsString>, V: Into<OsString>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, EnvError> {
        let vars = EnvVars::new(vars);
        Ok(Self {
            common: agora_core::executor_env::ExecutorEnv::read(&vars)?,
            default_kill_grace: vars.seconds(DEFAULT_KILL_GRACE_SECONDS, DEFAULT_KILL_GRACE)?,
            containers: container_env(&vars)?,
        })
    }
}

/// The container settings among `vars`.
fn container_env(vars: &EnvVars) -> Result<ContainerEnv, EnvError> {
    let default_oci = match vars.get(DEFAULT_CONTAINERIZER) {
        None => false,
        Some(value) => match value.to_string_lossy().as_ref() {
            "" | "process" => false,
            "oci" => true,
            other => {
                return Err(EnvError::Invalid {
                    name: DEFAULT_CONTAINERIZER,
                    reason: format!("'{other}' is neither 'process' nor 'oci'"),
                });
            }
        },
    };
    let oci = match vars.path(OCI_RUNTIME) {
        None => None,
        Some(runtime) => {
            let state_root = vars
                .path(OCI_STATE_ROOT)
                .ok_or(EnvError::Missing(OCI_STATE_ROOT))?;
            let image_store = vars
                .path(IMAGE_STORE)
                .ok_or(EnvError::Missing(IMAGE_STORE))?;
            let allowed_volume_paths = vars
                .get(ALLOWED_VOLUME_PATHS)
                .map(|v| {
                    std::env::split_paths(v)
                        .filter(|p| !p.as_os_str().is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let pids_limit = match vars.get(CONTAINER_PIDS_LIMIT) {
                None => DEFAULT_PIDS_LIMIT,
                Some(v) => v
                    .to_string_lossy()
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(EnvError::Invalid {
                        name: CONTAINER_PIDS_LIMIT,
                        reason: format!("'{}' is not a positive number", v.to_string_lossy()),
                    })?,
            };
            Some(OciEnv {
                runtime,
                state_root,
                image_store,
                allowed_volume_paths,
                pids_limit,
            })
        }
    };
    if default_oci && oci.is_none() {
        return Err(EnvError::Missing(OCI_RUNTIME));
    }
    Ok(ContainerEnv {
        container_id: vars
            .get(CONTAINER_ID)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned()),
        default_oci,
        oci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: [(&str, &str); 4] = [
        (AGENT_ENDPOINT, "http://127.0.0.1:5051"),
        (FRAMEWORK_ID, "fw"),
        (EXECUTOR_ID, "ex"),
        (EXECUTOR_TOKEN, "secret"),
    ];

    #[test]
    fn reads_the_agents_variables() {
        let mut vars = COMMON.to_vec();
        vars.extend([
            (MESOS_SANDBOX, "/sandbox"),
            (DEFAULT_KILL_GRACE_SECONDS, "0.5"),
        ]);
        let env = ExecutorEnv::from_vars(vars).unwrap();
        assert_eq!(env.common.sandbox, Some(PathBuf::from("/sandbox")));
        assert_eq!(env.default_kill_grace, Duration::from_millis(500));
        assert_eq!(
            env.common.recovery_timeout,
            agora_core::executor_env::DEFAULT_RECOVERY_TIMEOUT
        );
    }

    #[test]
    fn container_settings_are_read() {
        let env = ExecutorEnv::from_vars(COMMON).unwrap();
        assert!(env.containers.oci.is_none() && !env.containers.default_oci);
        let mut with_oci = COMMON.to_vec();
        with_oci.extend([
            (CONTAINER_ID, "c1"),
            (DEFAULT_CONTAINERIZER, "oci"),
            (OCI_RUNTIME, "/usr/sbin/runc"),
            (OCI_STATE_ROOT, "/work/runc"),
            (IMAGE_STORE, "/images"),
            (ALLOWED_VOLUME_PATHS, "/data:/srv"),
        ]);
        let env = ExecutorEnv::from_vars(with_oci.clone()).unwrap();
        let oci = env.containers.oci.unwrap();
        assert!(env.containers.default_oci);
        assert_eq!(env.containers.container_id.as_deref(), Some("c1"));
        assert_eq!(
            oci.allowed_volume_paths,
            vec![PathBuf::from("/data"), PathBuf::from("/srv")]
        );
        assert_eq!(oci.pids_limit, DEFAULT_PIDS_LIMIT);
        let mut bad = with_oci;
        bad.push((CONTAINER_PIDS_LIMIT, "0"));
        let err = ExecutorEnv::from_vars(bad).unwrap_err();
        assert!(err.to_string().contains(CONTAINER_PIDS_LIMIT), "{err}");
        let mut no_runtime = COMMON.to_vec();
        no_runtime.push((DEFAULT_CONTAINERIZER, "oci"));
        let err = ExecutorEnv::from_vars(no_runtime).unwrap_err();
        assert!(err.to_string().contains(OCI_RUNTIME), "{err}");
    }

    #[test]
    fn missing_or_bad_values_are_named() {
        let err = ExecutorEnv::from_vars([(AGENT_ENDPOINT, "http://x:1")]).unwrap_err();
        assert!(err.to_string().contains(FRAMEWORK_ID), "{err}");
        let mut bad_grace = COMMON.to_vec();
        bad_grace.push((DEFAULT_KILL_GRACE_SECONDS, "soon"));
        let err = ExecutorEnv::from_vars(bad_grace).unwrap_err();
        assert!(
            err.to_string().contains(DEFAULT_KILL_GRACE_SECONDS),
            "{err}"
        );
    }
}
