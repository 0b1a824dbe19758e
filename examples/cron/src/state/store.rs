//! [`CronStore`]: how the cron framework keeps its state in the masters' state
//! store (namespace = the framework's name).
//!
//! Keys:
//! - `framework-id`;
//! - `jobs/<job>` — a job's spec; `schedules/<job>/<schedule>` — its schedules;
//! - `cursors/<job>/<schedule>` — the last due instant of the schedule already
//!   handled (run or recorded missed): written in the same atomic batch as the
//!   run it produced, so an instant is handled exactly once across restarts;
//! - `runs/<job>/<run>` — every run, active and finished (the finished ones are the
//!   history, pruned to `history_count` per job);
//! - `stats/<job>` — success and failure counters and instants;
//! - `missed/<job>/<schedule>/<instant ms>` — due instants that did not run, why.

use agora_sdk::{BatchOp, StateStore};
use serde::{Deserialize, Serialize};

use crate::error::CronError;
use crate::model::{JobSpec, ScheduleSpec};
use crate::state::run::{JobRun, MissedRun};

pub const FRAMEWORK_ID_KEY: &str = "framework-id";

pub fn job_key(job: &str) -> String {
    format!("jobs/{job}")
}
pub fn schedule_key(job: &str, schedule: &str) -> String {
    format!("schedules/{job}/{schedule}")
}
pub fn cursor_key(job: &str, schedule: &str) -> String {
    format!("cursors/{job}/{schedule}")
}
pub fn run_key(job: &str, run: &str) -> String {
    format!("runs/{job}/{run}")
}
pub fn stats_key(job: &str) -> String {
    format!("stats/{job}")
}
pub fn missed_key(job: &str, schedule: &str, millis: i64) -> String {
    format!("missed/{job}/{schedule}/{millis:013}")
}

/// Success and failure counters of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub success_count: u64,
    pub failure_count: u64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
}

/// A schedule's cursor: the last due instant handled, RFC 3339.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub last: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Write {
    fn into_op(self) -> BatchOp {
        match self {
            Write::Put(key, value) => BatchOp::put(key, value),
            Write::Delete(key) => BatchOp::delete(key),
        }
    }

    pub fn json(key: String, value: &impl Serialize) -> Result<Write, CronError> {
        match serde_json::to_vec(value) {
            Ok(bytes) => Ok(Write::Put(key, bytes)),
            Err(e) => Err(CronError::Store(format!("cannot encode {key}: {e}"))),
        }
    }
}

/// Everything loaded at the start of a leadership.
#[derive(Debug, Default)]
pub struct LoadedState {
    pub framework_id: Option<String>,
    pub jobs: Vec<JobSpec>,
    pub schedules: Vec<(String, ScheduleSpec)>,
    pub cursors: Vec<(String, String, Cursor)>,
    pub runs: Vec<JobRun>,
    pub stats: Vec<(String, Stats)>,
    pub missed: Vec<(String, MissedRun)>,
    /// Entries that could not be read, with why (logged, skipped).
    pub unreadable: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct CronStore {
    store: StateStore,
}

fn store_error(e: agora_sdk::StateStoreError) -> CronError {
    CronError::Store(e.to_string())
}

impl CronStore {
    pub fn new(store: StateStore) -> Self {
        CronStore { store }
    }

    pub async fn load(&self) -> Result<LoadedState, CronError> {
        let mut state = LoadedState {
            framework_id: self
                .store
                .get(FRAMEWORK_ID_KEY)
                .await
                .map_err(store_error)?
                .and_then(|entry| String::from_utf8(entry.value).ok()),
            ..LoadedState::default()
        };
        for entry in self.store.list("jobs/").await.map_err(store_error)? {
            match serde_json::from_slice(&entry.value) {
                Ok(job) => state.jobs.push(job),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list("schedules/").await.map_err(store_error)? {
            let job = entry.key.split('/').nth(1).unwrap_or_default().to_string();
            match serde_json::from_slice(&entry.value) {
                Ok(schedule) => state.schedules.push((job, schedule)),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list("cursors/").await.map_err(store_error)? {
            let mut parts = entry.key.split('/').skip(1);
            let (job, schedule) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            match serde_json::from_slice(&entry.value) {
                Ok(cursor) => state
                    .cursors
                    .push((job.to_string(), schedule.to_string(), cursor)),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list("runs/").await.map_err(store_error)? {
            match serde_json::from_slice(&entry.value) {
                Ok(run) => state.runs.push(run),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list("stats/").await.map_err(store_error)? {
            let job = entry.key.trim_start_matches("stats/").to_string();
            match serde_json::from_slice(&entry.value) {
                Ok(stats) => state.stats.push((job, stats)),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list("missed/").await.map_err(store_error)? {
            let job = entry.key.split('/').nth(1).unwrap_or_default().to_string();
            match serde_json::from_slice(&entry.value) {
                Ok(missed) => state.missed.push((job, missed)),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        Ok(state)
    }

    /// Applies `writes` (the last write of a key wins): up to 1,000 of them in one
    /// atomic batch (all or nothing), more in several batches at once; after an
    /// error some of those may have applied, and writing them all again is safe.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), CronError> {
        self.store
            .write_all(writes.into_iter().map(Write::into_op))
            .await
            .map_err(store_error)
    }
}
