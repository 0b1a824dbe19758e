//! [`JobRun`]: one run of a job, from the moment it is due to its outcome.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Metronome's run states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Recorded, not launched yet (waiting for an offer, or for its parents).
    Initial,
    /// Its task is launched and not running yet.
    Starting,
    /// Its task runs.
    Active,
    Success,
    Failed,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failed)
    }
}

/// Why a run exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Trigger {
    /// A schedule came due at `scheduledAt`.
    Schedule { schedule_id: String },
    /// `POST /v1/jobs/{id}/runs`.
    Manual,
    /// Every job it depends on succeeded.
    Dependencies,
}

/// One task of a run (a retried run has several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    pub id: String,
    /// RFC 3339; None until RUNNING.
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// `TASK_RUNNING`, `TASK_FINISHED`, ...
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// A run. Its id is derived from (job, trigger, instant), so the same due instant
/// always names the same run: recording it twice is recording it once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub id: String,
    pub job_id: String,
    pub status: RunStatus,
    /// RFC 3339: when the run was recorded.
    pub created_at: String,
    pub completed_at: Option<String>,
    pub tasks: Vec<RunTask>,
    /// RFC 3339: the instant it was due (the schedule's instant; creation for others).
    pub scheduled_at: String,
    pub trigger: Trigger,
    /// Tasks launched so far (retries included).
    pub attempts: u32,
    /// RFC 3339: no new attempt before this instant (an ON_FAILURE retry backing
    /// off), kept so that a new leader waits it out too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<String>,
}

impl JobRun {
    /// Its instant, when that is still to come after `now`: a run recorded early
    /// (before its schedule's instant) that must not launch yet.
    pub fn due_later_than(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.scheduled_at)
            .ok()
            .map(|at| at.with_timezone(&Utc))
            .filter(|at| *at > now && self.status == RunStatus::Initial)
    }
}

/// What `embed=history` shows of a job: counters and the last finished runs
/// (shared with the controller, see `Snapshot`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub success_count: u64,
    pub failure_count: u64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub successful_finished_runs: Vec<Arc<JobRun>>,
    pub failed_finished_runs: Vec<Arc<JobRun>>,
    /// Instants a schedule was due but no run started (downtime beyond
    /// startingDeadlineSeconds, FORBID while a run was active): never silently lost.
    pub missed: Vec<MissedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissedRun {
    pub schedule_id: String,
    pub scheduled_at: String,
    pub reason: String,
}
