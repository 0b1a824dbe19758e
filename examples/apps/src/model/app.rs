//! [`AppDefinition`]: one Marathon app, with Marathon's field names and defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{PathId, Timestamp};

/// An app as `/v2/apps` accepts and returns it. Deserialising fills Marathon's
/// defaults for every absent field; [`AppDefinition::validate`](super::validation)
/// checks the rest. `version` and `version_info` are set by the apps framework, never
/// taken from a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    /// Absolute and normalised once accepted (requests may give it relative to a group).
    pub id: PathId,
    /// Run as `/bin/sh -c cmd`. At most one of `cmd` and `args`; one of them, or a
    /// container image, is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wanted instances; signed so that a negative count is a 422, not a 400.
    #[serde(default = "defaults::instances")]
    pub instances: i64,
    #[serde(default = "defaults::cpus")]
    pub cpus: f64,
    #[serde(default = "defaults::mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub gpus: i64,
    #[serde(default)]
    pub executor: String,
    /// `[field, OPERATOR, value?]`, parsed by [`crate::placement`].
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub fetch: Vec<Artifact>,
    #[serde(default = "defaults::backoff_seconds")]
    pub backoff_seconds: f64,
    #[serde(default = "defaults::backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "defaults::max_launch_delay_seconds")]
    pub max_launch_delay_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    /// Apps or groups deployed before this one. Requests may name them relative to
    /// this app's group; accepted apps hold absolute ids.
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    /// Host ports; Marathon's normalisation gives an app with neither these nor
    /// port mappings one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    #[serde(default)]
    pub kill_selection: KillSelection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `[{mode: host | container | container/bridge, name?, labels?}]`; normalised
    /// to `[{mode: host}]` when absent. Agora's tasks always share their agent's
    /// network, so the mode only decides between port definitions (host) and port
    /// mappings (the others), as in Marathon.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<serde_json::Value>,
    /// Set by the framework: the instant this definition was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
}

mod defaults {
    pub fn instances() -> i64 {
        1
    }
    pub fn cpus() -> f64 {
        1.0
    }
    pub fn mem() -> f64 {
        128.0
    }
    pub fn backoff_seconds() -> f64 {
        1.0
    }
    pub fn backoff_factor() -> f64 {
        1.15
    }
    pub fn max_launch_delay_seconds() -> f64 {
        300.0
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn tcp() -> String {
        "tcp".to_string()
    }
    pub fn yes() -> bool {
        true
    }
}

/// `fetch[]`: a URI the agent's fetcher puts into the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub uri: String,
    #[serde(default = "defaults::yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `MESOS` or `DOCKER` (Marathon's default); both run on the agents' oci
    /// containerizer with an image from their store.
    #[serde(rename = "type", default = "Container::default_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerImage>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

/// The label that makes an app a daemon app: one instance on every agent that
/// matches its constraints, following agents as they join and leave; `instances`
/// is then reported, not obeyed. A label rather than a field of its own, so every
/// Marathon client reads and writes daemon apps unchanged.
pub const DAEMON_LABEL: &str = "AGORA_DAEMON";

impl AppDefinition {
    /// Whether the app runs once on every matching agent ([`DAEMON_LABEL`] = `true`).
    pub fn is_daemon(&self) -> bool {
        self.labels
            .get(DAEMON_LABEL)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

impl Container {
    fn default_type() -> String {
        "DOCKER".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerImage {
    pub image: String,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "defaults::tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default = "defaults::tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One health check; HTTP, TCP and COMMAND (and their MESOS_ forms) all run on the
/// agent, next to the task, with Marathon's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "HealthCheck::default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<HealthCommand>,
    #[serde(default = "HealthCheck::default_grace")]
    pub grace_period_seconds: f64,
    #[serde(default = "HealthCheck::default_interval")]
    pub interval_seconds: f64,
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "HealthCheck::default_failures")]
    pub max_consecutive_failures: i64,
    #[serde(default = "HealthCheck::default_delay")]
    pub delay_seconds: f64,
    #[serde(default)]
    pub ignore_http1xx: bool,
}

impl HealthCheck {
    fn default_protocol() -> String {
        "HTTP".to_string()
    }
    fn default_grace() -> f64 {
        300.0
    }
    fn default_interval() -> f64 {
        60.0
    }
    fn default_timeout() -> f64 {
        20.0
    }
    fn default_failures() -> i64 {
        3
    }
    fn default_delay() -> f64 {
        15.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCommand {
    pub value: String,
}

/// Checked by the apps framework during deployments only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "ReadinessCheck::default_name")]
    pub name: String,
    #[serde(default = "ReadinessCheck::default_protocol")]
    pub protocol: String,
    #[serde(default = "ReadinessCheck::default_path")]
    pub path: String,
    #[serde(default = "ReadinessCheck::default_port_name")]
    pub port_name: String,
    #[serde(default = "ReadinessCheck::default_interval")]
    pub interval_seconds: f64,
    #[serde(default = "ReadinessCheck::default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "ReadinessCheck::default_codes")]
    pub http_status_codes_for_ready: Vec<u16>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

impl ReadinessCheck {
    fn default_name() -> String {
        "readinessCheck".to_string()
    }
    fn default_protocol() -> String {
        "HTTP".to_string()
    }
    fn default_path() -> String {
        "/".to_string()
    }
    fn default_port_name() -> String {
        "http-api".to_string()
    }
    fn default_interval() -> f64 {
        30.0
    }
    fn default_timeout() -> f64 {
        10.0
    }
    fn default_codes() -> Vec<u16> {
        vec![200]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "defaults::one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "defaults::one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// `"disabled"`, or when an unreachable instance is replaced (`inactiveAfterSeconds`)
/// and forgotten (`expungeAfterSeconds`). Marathon's default is `{0, 0}`.
#[derive(Clone, Debug, PartialEq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled {
        inactive_after_seconds: f64,
        expunge_after_seconds: f64,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0.0,
            expunge_after_seconds: 0.0,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum UnreachableStrategyJson {
    Disabled(String),
    #[serde(rename_all = "camelCase")]
    Enabled {
        #[serde(default)]
        inactive_after_seconds: f64,
        #[serde(default)]
        expunge_after_seconds: f64,
    },
}

impl Serialize for UnreachableStrategy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            UnreachableStrategy::Disabled => {
                UnreachableStrategyJson::Disabled("disabled".to_string()).serialize(serializer)
            }
            UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => UnreachableStrategyJson::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for UnreachableStrategy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match UnreachableStrategyJson::deserialize(deserializer)? {
            UnreachableStrategyJson::Disabled(s) if s == "disabled" => {
                Ok(UnreachableStrategy::Disabled)
            }
            UnreachableStrategyJson::Disabled(other) => Err(serde::de::Error::custom(format!(
                "unreachableStrategy must be \"disabled\" or an object, not {other:?}"
            ))),
            UnreachableStrategyJson::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => Ok(UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}
