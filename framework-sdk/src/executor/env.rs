//! The environment an agent gives the executors it starts. The names are the
//! agent's (its `command_executor::env` module sets them); they are repeated here so
//! that an executor depends on the SDK only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::ExecutorError;

/// `http://host:port` of the agent's executor API.
pub const AGENT_ENDPOINT: &str = "AGORA_AGENT_ENDPOINT";
/// The executor's framework id.
pub const FRAMEWORK_ID: &str = "AGORA_FRAMEWORK_ID";
/// The executor's id, as named by its `ExecutorInfo`.
pub const EXECUTOR_ID: &str = "AGORA_EXECUTOR_ID";
/// The secret every executor call carries. Executors must not pass it on to tasks.
pub const EXECUTOR_TOKEN: &str = "AGORA_EXECUTOR_TOKEN";
/// The executor's sandbox directory (also its working directory).
pub const SANDBOX: &str = "AGORA_SANDBOX";
/// Mesos' name for the sandbox.
pub const MESOS_SANDBOX: &str = "MESOS_SANDBOX";
/// How long to keep trying to reach a restarting agent (Mesos: 15 min).
pub const RECOVERY_TIMEOUT_SECONDS: &str = "AGORA_RECOVERY_TIMEOUT_SECONDS";

/// Mesos' default recovery timeout.
const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What an executor learns from the environment its agent set.
#[derive(Clone, Debug)]
pub struct ExecutorEnv {
    /// `http(s)://host:port`, checked to carry a scheme.
    pub agent_endpoint: String,
    /// Not empty.
    pub framework_id: String,
    /// Not empty.
    pub executor_id: String,
    /// Not empty; sent with every call.
    pub token: String,
    /// `None` when the agent named none.
    pub sandbox: Option<PathBuf>,
    /// How long the driver keeps re-subscribing while the agent is away.
    pub recovery_timeout: Duration,
}

impl ExecutorEnv {
    /// Reads this process' environment.
    pub fn from_env() -> Result<Self, ExecutorError> {
        Self::from_vars(std::env::vars_os())
    }

    /// Reads the given variables (later ones win, as in a process environment).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ExecutorError> {
        let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        let get = |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let text = |name: &'static str| -> Result<String, ExecutorError> {
            let value = get(name).ok_or(ExecutorError::MissingEnv(name))?;
            let value = value.into_string().map_err(|_| ExecutorError::InvalidEnv {
                name,
                reason: "not valid UTF-8".into(),
            })?;
            if value.is_empty() {
                return Err(ExecutorError::MissingEnv(name));
            }
            Ok(value)
        };
        let agent_endpoint = text(AGENT_ENDPOINT)?;
        if !(agent_endpoint.starts_with("http://") || agent_endpoint.starts_with("https://")) {
            return Err(ExecutorError::InvalidEnv {
                name: AGENT_ENDPOINT,
                reason: format!("'{agent_endpoint}' must start with http:// or https://"),
            });
        }
        let recovery_timeout = match get(RECOVERY_TIMEOUT_SECONDS) {
            None => DEFAULT_RECOVERY_TIMEOUT,
            Some(value) => {
                let value = value.to_string_lossy().trim().to_string();
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| {
                        s.is_finite() && *s >= 0.0 && *s <= agora_core::limits::MAX_TIMEOUT_SECONDS
                    })
                    .map(Duration::from_secs_f64)
                    .ok_or(ExecutorError::InvalidEnv {
                        name: RECOVERY_TIMEOUT_SECONDS,
                        reason: format!("'{value}' is not a number of seconds"),
                    })?
            }
        };
        Ok(Self {
            agent_endpoint,
            framework_id: text(FRAMEWORK_ID)?,
            executor_id: text(EXECUTOR_ID)?,
            token: text(EXECUTOR_TOKEN)?,
            sandbox: get(SANDBOX)
                .or_else(|| get(MESOS_SANDBOX))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            recovery_timeout,
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
    fn reads_what_the_agent_sets() {
        let env = ExecutorEnv::from_vars(vars(&[
            (AGENT_ENDPOINT, "http://127.0.0.1:5051"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "secret"),
            (SANDBOX, "/sandbox"),
            (RECOVERY_TIMEOUT_SECONDS, "2.5"),
        ]))
        .unwrap();
        assert_eq!(env.executor_id, "ex");
        assert_eq!(env.sandbox, Some(PathBuf::from("/sandbox")));
        assert_eq!(env.recovery_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let err = ExecutorEnv::from_vars(vars(&[(AGENT_ENDPOINT, "http://x:1")])).unwrap_err();
        assert!(err.to_string().contains(FRAMEWORK_ID), "{err}");
        let err = ExecutorEnv::from_vars(vars(&[(AGENT_ENDPOINT, "x:1")])).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = ExecutorEnv::from_vars(vars(&[
            (AGENT_ENDPOINT, "http://x:1"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "t"),
            (RECOVERY_TIMEOUT_SECONDS, "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains(RECOVERY_TIMEOUT_SECONDS), "{err}");
    }
}
