//! The environment an agent gives every executor it starts: the variable names and
//! their parsing. The agent writes them, and both its built-in executor and the
//! SDK's executor driver read them through [`ExecutorEnv`]; settings only the
//! built-in executor uses are the agent's own (`command_executor::env`), read with
//! the same [`EnvVars`].

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::MAX_TIMEOUT_SECONDS;

/// `http://host:port` of the agent's executor API.
pub const AGENT_ENDPOINT: &str = "AGORA_AGENT_ENDPOINT";
/// The executor's framework id.
pub const FRAMEWORK_ID: &str = "AGORA_FRAMEWORK_ID";
/// The executor's id, as named by its `ExecutorInfo`.
pub const EXECUTOR_ID: &str = "AGORA_EXECUTOR_ID";
/// The secret every executor call must carry. Executors must not pass it on to tasks.
pub const EXECUTOR_TOKEN: &str = "AGORA_EXECUTOR_TOKEN";
/// The executor's sandbox directory (also its working directory).
pub const SANDBOX: &str = "AGORA_SANDBOX";
/// Mesos' name for the sandbox, for tasks written against Mesos.
pub const MESOS_SANDBOX: &str = "MESOS_SANDBOX";
/// How long to keep trying to reach a restarting agent (Mesos: 15 min).
pub const RECOVERY_TIMEOUT_SECONDS: &str = "AGORA_RECOVERY_TIMEOUT_SECONDS";

/// Mesos' default recovery timeout, for when the agent names none.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why the environment cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// A variable the agent sets is missing (or empty): the program was not started
    /// by an agent.
    #[error("{0} is not set; executors are started by an agent, which sets it")]
    Missing(&'static str),
    /// A variable the agent sets cannot be used.
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A process environment to read variables from.
#[derive(Clone, Debug, Default)]
pub struct EnvVars {
    /// In the order given; a later entry for a name wins, as in a process environment.
    vars: Vec<(OsString, OsString)>,
}

impl EnvVars {
    /// The given variables (`std::env::vars_os()` for this process').
    pub fn new<K: Into<OsString>, V: Into<OsString>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }

    /// The value of `name` as a path; `None` when unset or empty.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// The value of a variable that must be set, not empty, and UTF-8.
    pub fn text(&self, name: &'static str) -> Result<String, EnvError> {
        let value = self.get(name).ok_or(EnvError::Missing(name))?;
        let value = value.to_str().ok_or_else(|| EnvError::Invalid {
            name,
            reason: "not valid UTF-8".into(),
        })?;
        if value.is_empty() {
            return Err(EnvError::Missing(name));
        }
        Ok(value.to_string())
    }

    /// A duration given in (fractional) seconds; `default` when unset.
    pub fn seconds(&self, name: &'static str, default: Duration) -> Result<Duration, EnvError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        let value = value.to_string_lossy().trim().to_string();
        value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= MAX_TIMEOUT_SECONDS)
            .map(Duration::from_secs_f64)
            .ok_or(EnvError::Invalid {
                name,
                reason: format!("'{value}' is not a number of seconds"),
            })
    }
}

/// What every executor learns from the environment its agent set.
#[derive(Clone, Debug)]
pub struct ExecutorEnv {
    /// `http(s)://host:port`, checked to carry a scheme.
    pub agent_endpoint: String,
    /// Not empty.
    pub framework_id: String,
    /// Not empty.
    pub executor_id: String,
    /// Not empty; sent with every call, never passed to tasks.
    pub token: String,
    /// `None` when the agent named none; tasks then run in the current directory.
    pub sandbox: Option<PathBuf>,
    /// How long to keep re-subscribing while the agent is away.
    pub recovery_timeout: Duration,
}

impl ExecutorEnv {
    /// Reads this process' environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(std::env::vars_os())
    }

    /// Reads the given variables (later ones win, as in a process environment).
    pub fn from_vars<K: Into<OsString>, V: Into<OsString>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, EnvError> {
        Self::read(&EnvVars::new(vars))
    }

    /// Reads the variables in `vars`.
    pub fn read(vars: &EnvVars) -> Result<Self, EnvError> {
        let agent_endpoint = vars.text(AGENT_ENDPOINT)?;
        if !(agent_endpoint.starts_with("http://") || agent_endpoint.starts_with("https://")) {
            return Err(EnvError::Invalid {
                name: AGENT_ENDPOINT,
                reason: format!("'{agent_endpoint}' must start with http:// or https://"),
            });
        }
        Ok(Self {
            agent_endpoint,
            framework_id: vars.text(FRAMEWORK_ID)?,
            executor_id: vars.text(EXECUTOR_ID)?,
            token: vars.text(EXECUTOR_TOKEN)?,
            sandbox: vars
                .get(SANDBOX)
                .or_else(|| vars.get(MESOS_SANDBOX))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            recovery_timeout: vars.seconds(RECOVERY_TIMEOUT_SECONDS, DEFAULT_RECOVERY_TIMEOUT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_agent_sets() {
        let env = ExecutorEnv::from_vars([
            (AGENT_ENDPOINT, "http://127.0.0.1:5051"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "secret"),
            (SANDBOX, "/sandbox"),
            (RECOVERY_TIMEOUT_SECONDS, "2.5"),
        ])
        .unwrap();
        assert_eq!(env.executor_id, "ex");
        assert_eq!(env.sandbox, Some(PathBuf::from("/sandbox")));
        assert_eq!(env.recovery_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn defaults_and_mesos_names_fill_in() {
        let env = ExecutorEnv::from_vars([
            (AGENT_ENDPOINT, "https://127.0.0.1:5051"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "secret"),
            (MESOS_SANDBOX, "/mesos-sandbox"),
        ])
        .unwrap();
        assert_eq!(env.sandbox, Some(PathBuf::from("/mesos-sandbox")));
        assert_eq!(env.recovery_timeout, DEFAULT_RECOVERY_TIMEOUT);
    }

    #[test]
    fn later_variables_win() {
        let vars = EnvVars::new([(FRAMEWORK_ID, "first"), (FRAMEWORK_ID, "second")]);
        assert_eq!(vars.text(FRAMEWORK_ID), Ok("second".to_string()));
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let err = ExecutorEnv::from_vars([(AGENT_ENDPOINT, "http://x:1")]).unwrap_err();
        assert_eq!(err, EnvError::Missing(FRAMEWORK_ID));
        assert!(err.to_string().contains(FRAMEWORK_ID), "{err}");
        let err = ExecutorEnv::from_vars([(AGENT_ENDPOINT, "x:1")]).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = ExecutorEnv::from_vars([
            (AGENT_ENDPOINT, "http://x:1"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "t"),
            (RECOVERY_TIMEOUT_SECONDS, "soon"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains(RECOVERY_TIMEOUT_SECONDS), "{err}");
        let err = ExecutorEnv::from_vars([
            (AGENT_ENDPOINT, "http://x:1"),
            (FRAMEWORK_ID, "fw"),
            (EXECUTOR_ID, "ex"),
            (EXECUTOR_TOKEN, "t"),
            (RECOVERY_TIMEOUT_SECONDS, "-1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains(RECOVERY_TIMEOUT_SECONDS), "{err}");
    }
}
