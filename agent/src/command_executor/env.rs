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

const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

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
        })
    }
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
