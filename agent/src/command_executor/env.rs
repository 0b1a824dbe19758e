//! The environment an agent gives its executors, and its parsing. The agent writes
//! these variables (see `actor::master`), the command executor (or any executor
//! written against the executor API) reads them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// `http://host:port` of the agent's executor API.
pub const AGENT_ENDPOINT: &str = "AGORA_AGENT_ENDPOINT";
pub const FRAMEWORK_ID: &str = "AGORA_FRAMEWORK_ID";
pub const EXECUTOR_ID: &str = "AGORA_EXECUTOR_ID";
/// The secret every executor call must carry. Not passed on to tasks.
pub const EXECUTOR_TOKEN: &str = "AGORA_EXECUTOR_TOKEN";
/// The executor's sandbox directory (also its working directory).
pub const SANDBOX: &str = "AGORA_SANDBOX";
/// Mesos' name for the sandbox, for tasks written against Mesos.
pub const MESOS_SANDBOX: &str = "MESOS_SANDBOX";
/// How long to keep trying to reach a restarting agent (Mesos: 15 min).
pub const RECOVERY_TIMEOUT_SECONDS: &str = "AGORA_RECOVERY_TIMEOUT_SECONDS";
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

const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Containers' pids limit when the agent names none.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Why the environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is not set; executors are started by an agent, which sets it")]
    Missing(&'static str),
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// What an executor learns from its environment.
#[derive(Clone, Debug)]
pub struct ExecutorEnv {
    /// `http(s)://host:port`, checked to carry a scheme.
    pub agent_endpoint: String,
    /// Not empty.
    pub framework_id: String,
    /// Not empty.
    pub executor_id: String,
    /// Not empty; sent with every call, never passed to the task.
    pub token: String,
    /// `None` when the agent named none; tasks then run in the current directory.
    pub sandbox: Option<PathBuf>,
    /// How long to retry subscribing while the agent is away.
    pub recovery_timeout: Duration,
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
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, EnvError> {
        let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        let get = |name: &'static str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let text = |name: &'static str| -> Result<String, EnvError> {
            let value = get(name).ok_or(EnvError::Missing(name))?;
            let value = value.into_string().map_err(|_| EnvError::Invalid {
                name,
                reason: "not valid UTF-8".into(),
            })?;
            if value.is_empty() {
                return Err(EnvError::Missing(name));
            }
            Ok(value)
        };
        let seconds = |name: &'static str, default: Duration| -> Result<Duration, EnvError> {
            let Some(value) = get(name) else {
                return Ok(default);
            };
            let value = value.to_string_lossy().trim().to_string();
            value
                .parse::<f64>()
                .ok()
                .filter(|s| {
                    s.is_finite() && *s >= 0.0 && *s <= agora_core::limits::MAX_TIMEOUT_SECONDS
                })
                .map(Duration::from_secs_f64)
                .ok_or(EnvError::Invalid {
                    name,
                    reason: format!("'{value}' is not a number of seconds"),
                })
        };
        let agent_endpoint = text(AGENT_ENDPOINT)?;
        if !(agent_endpoint.starts_with("http://") || agent_endpoint.starts_with("https://")) {
            return Err(EnvError::Invalid {
                name: AGENT_ENDPOINT,
                reason: format!("'{agent_endpoint}' must start with http:// or https://"),
            });
        }
        Ok(Self {
            agent_endpoint,
            framework_id: text(FRAMEWORK_ID)?,
            executor_id: text(EXECUTOR_ID)?,
            token: text(EXECUTOR_TOKEN)?,
            sandbox: get(SANDBOX)
                .or_else(|| get(MESOS_SANDBOX))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            recovery_timeout: seconds(RECOVERY_TIMEOUT_SECONDS, DEFAULT_RECOVERY_TIMEOUT)?,
            default_kill_grace: seconds(DEFAULT_KILL_GRACE_SECONDS, DEFAULT_KILL_GRACE)?,
            containers: container_env(&get)?,
        })
    }
}

/// The container settings among the variables `get` reads.
fn container_env(get: &dyn Fn(&'static str) -> Option<OsString>) -> Result<ContainerEnv, EnvError> {
    let path = |name: &'static str| get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let default_oci = match get(DEFAULT_CONTAINERIZER) {
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
    let oci = match path(OCI_RUNTIME) {
        None => None,
        Some(runtime) => {
            let state_root = path(OCI_STATE_ROOT).ok_or(EnvError::Missing(OCI_STATE_ROOT))?;
            let image_store = path(IMAGE_STORE).ok_or(EnvError::Missing(IMAGE_STORE))?;
            let allowed_volume_paths = get(ALLOWED_VOLUME_PATHS)
                .map(|v| {
                    std::env::split_paths(&v)
                        .filter(|p| !p.as_os_str().is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let pids_limit = match get(CONTAINER_PIDS_LIMIT) {
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
        container_id: get(CONTAINER_ID)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned()),
        default_oci,
        oci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn reads_the_agents_variables() {
        let env = ExecutorEnv::from_vars(vars(&[
            (AGENT_ENDPOINT, "http://127.0.0.1:5051"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "secret"),
            (MESOS_SANDBOX, "/sandbox"),
            (DEFAULT_KILL_GRACE_SECONDS, "0.5"),
        ]))
        .unwrap();
        assert_eq!(env.sandbox, Some(PathBuf::from("/sandbox")));
        assert_eq!(env.default_kill_grace, Duration::from_millis(500));
        assert_eq!(env.recovery_timeout, DEFAULT_RECOVERY_TIMEOUT);
    }

    #[test]
    fn container_settings_are_read() {
        let base = [
            (AGENT_ENDPOINT, "http://127.0.0.1:5051"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "secret"),
        ];
        let env = ExecutorEnv::from_vars(vars(&base)).unwrap();
        assert!(env.containers.oci.is_none() && !env.containers.default_oci);
        let mut with_oci = base.to_vec();
        with_oci.extend([
            (CONTAINER_ID, "c1"),
            (DEFAULT_CONTAINERIZER, "oci"),
            (OCI_RUNTIME, "/usr/sbin/runc"),
            (OCI_STATE_ROOT, "/work/runc"),
            (IMAGE_STORE, "/images"),
            (ALLOWED_VOLUME_PATHS, "/data:/srv"),
        ]);
        let env = ExecutorEnv::from_vars(vars(&with_oci)).unwrap();
        let oci = env.containers.oci.unwrap();
        assert!(env.containers.default_oci);
        assert_eq!(env.containers.container_id.as_deref(), Some("c1"));
        assert_eq!(
            oci.allowed_volume_paths,
            vec![PathBuf::from("/data"), PathBuf::from("/srv")]
        );
        assert_eq!(oci.pids_limit, DEFAULT_PIDS_LIMIT);
        let mut bad = with_oci.clone();
        bad.push((CONTAINER_PIDS_LIMIT, "0"));
        let err = ExecutorEnv::from_vars(vars(&bad)).unwrap_err();
        assert!(err.to_string().contains(CONTAINER_PIDS_LIMIT), "{err}");
        let mut no_runtime = base.to_vec();
        no_runtime.push((DEFAULT_CONTAINERIZER, "oci"));
        let err = ExecutorEnv::from_vars(vars(&no_runtime)).unwrap_err();
        assert!(err.to_string().contains(OCI_RUNTIME), "{err}");
    }

    #[test]
    fn missing_or_bad_values_are_named() {
        let err = ExecutorEnv::from_vars(vars(&[(AGENT_ENDPOINT, "http://x:1")])).unwrap_err();
        assert!(err.to_string().contains(FRAMEWORK_ID), "{err}");
        let err = ExecutorEnv::from_vars(vars(&[
            (AGENT_ENDPOINT, "http://x:1"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "t"),
            (RECOVERY_TIMEOUT_SECONDS, "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains(RECOVERY_TIMEOUT_SECONDS), "{err}");
        let err = ExecutorEnv::from_vars(vars(&[(AGENT_ENDPOINT, "x:1")])).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
    }
}
