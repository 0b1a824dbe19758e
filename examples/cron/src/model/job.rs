//! [`JobSpec`] and [`ScheduleSpec`]: one Metronome job and its schedules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A job as `/v1/jobs` accepts and returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Dotted lowercase path (`prod.backup`).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub run: RunSpec,
    /// Jobs (ids) that must all have succeeded before this one runs (Chronos'
    /// parents; Metronome's `dependencies[{id}]`). Omitted when empty, for clients
    /// that do not know the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    #[serde(default = "defaults::cpus")]
    pub cpus: f64,
    #[serde(default = "defaults::mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Seconds a run may wait for resources before it is aborted (Metronome: 3600).
    #[serde(default = "defaults::max_launch_delay")]
    pub max_launch_delay: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub restart: RestartSpec,
}

mod defaults {
    pub fn cpus() -> f64 {
        1.0
    }
    pub fn mem() -> f64 {
        128.0
    }
    pub fn max_launch_delay() -> i64 {
        3600
    }
    pub fn yes() -> bool {
        true
    }
    pub fn utc() -> String {
        "UTC".to_string()
    }
    pub fn starting_deadline() -> i64 {
        900
    }
    pub fn allow() -> String {
        "ALLOW".to_string()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

/// `{attribute, operator: IS|EQ|LIKE|UNLIKE, value}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub attribute: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub uri: String,
    #[serde(default = "defaults::yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerSpec {
    pub image: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: String,
    pub host_path: String,
    /// `RO` or `RW`.
    pub mode: String,
}

/// `NEVER` (default) or `ON_FAILURE`, retried until `activeDeadlineSeconds` after
/// the run was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartSpec {
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: "NEVER".to_string(),
            active_deadline_seconds: None,
        }
    }
}

/// One schedule of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    pub id: String,
    /// Five fields (minute precision), six (with seconds first), or Chronos' ISO
    /// 8601 repeating interval `R[n]/<start>/<period>`.
    pub cron: String,
    /// IANA time zone the cron fields are read in.
    #[serde(default = "defaults::utc")]
    pub timezone: String,
    /// How late a due run may still start; later, the instant is recorded missed.
    #[serde(default = "defaults::starting_deadline")]
    pub starting_deadline_seconds: i64,
    /// `ALLOW`, `FORBID` or `REPLACE`.
    #[serde(default = "defaults::allow")]
    pub concurrency_policy: String,
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Set by the framework in responses: the next instant this schedule is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
}
