//! Metronome's response shapes. Default responses carry only the fields Metronome
//! 0.x wrote (the `dcos-metronome` client parses them with protobuf's
//! `json_format`, which refuses any other): a job is `{id, description?, labels,
//! run}`, a run `{id, jobId, status, createdAt, completedAt, tasks[{id, startedAt,
//! completedAt, status}]}`. The run's other facts (trigger, scheduled instant,
//! attempts, exit codes, agents) stay out. Embeds add Metronome's keys, and the
//! history embed Agora's `missed` list.

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::Params;
use crate::controller::Snapshot;
use crate::model::{JobSpec, ScheduleSpec};
use crate::state::{History, JobRun};

/// What `embed=` asked for (`embed=a&embed=b` or `embed=a,b`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Embeds {
    pub active_runs: bool,
    pub schedules: bool,
    pub history: bool,
    pub history_summary: bool,
}

impl Embeds {
    /// Reads `embed`; any other parameter is ignored (the `dcos-metronome` client
    /// sends `activeRuns=false&schedules=false...`, which Metronome ignores too).
    pub(crate) fn from_params(params: &Params) -> Result<Self, ApiError> {
        let mut embeds = Embeds::default();
        for name in params.all("embed") {
            match name {
                "activeRuns" => embeds.active_runs = true,
                "schedules" => embeds.schedules = true,
                "history" => embeds.history = true,
                "historySummary" => embeds.history_summary = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Unknown embed '{other}'. Allowed values: activeRuns, schedules, history, historySummary"
                    )));
                }
            }
        }
        Ok(embeds)
    }
}

/// A value that cannot fail to serialise (string keys, plain data) as JSON.
fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A job as Metronome writes it: the collections it always writes present even
/// when empty (`labels: {}`, `env: {}`, `placement: {constraints: []}`, ...).
pub(crate) fn job(job: &JobSpec) -> Value {
    let mut value = to_json(job);
    if let Some(object) = value.as_object_mut() {
        object.entry("labels").or_insert_with(|| json!({}));
        if let Some(run) = object.get_mut("run").and_then(Value::as_object_mut) {
            run.entry("env").or_insert_with(|| json!({}));
            run.entry("artifacts").or_insert_with(|| json!([]));
            run.entry("volumes").or_insert_with(|| json!([]));
            run.entry("placement")
                .or_insert_with(|| json!({ "constraints": [] }));
        }
    }
    value
}

/// A job with what `embeds` asked for, from `snapshot`.
pub(crate) fn job_info(spec: &JobSpec, snapshot: &Snapshot, embeds: Embeds) -> Value {
    let mut value = job(spec);
    let Some(object) = value.as_object_mut() else {
        return value;
    };
    if embeds.active_runs {
        let runs = snapshot
            .active_runs
            .get(&spec.id)
            .map(|runs| runs.iter().map(|r| run(r)).collect())
            .unwrap_or_default();
        object.insert("activeRuns".into(), Value::Array(runs));
    }
    if embeds.schedules {
        let schedules = snapshot
            .schedules
            .get(&spec.id)
            .map(|list| list.iter().map(schedule).collect())
            .unwrap_or_default();
        object.insert("schedules".into(), Value::Array(schedules));
    }
    let empty = History::default();
    let past = snapshot.history.get(&spec.id).unwrap_or(&empty);
    if embeds.history {
        object.insert("history".into(), history(past));
    }
    if embeds.history_summary {
        object.insert("historySummary".into(), Value::Object(summary(past)));
    }
    value
}

pub(crate) fn schedule(schedule: &ScheduleSpec) -> Value {
    to_json(schedule)
}

/// A run as Metronome writes it (`completedAt: null` while it is not finished).
pub(crate) fn run(run: &JobRun) -> Value {
    json!({
        "id": run.id,
        "jobId": run.job_id,
        "status": to_json(&run.status),
        "createdAt": run.created_at,
        "completedAt": run.completed_at,
        "tasks": run
            .tasks
            .iter()
            .map(|task| json!({
                "id": task.id,
                "startedAt": task.started_at,
                "completedAt": task.completed_at,
                "status": task.status,
            }))
            .collect::<Vec<_>>(),
    })
}

fn summary(history: &History) -> Map<String, Value> {
    let mut summary = Map::new();
    summary.insert("successCount".into(), json!(history.success_count));
    summary.insert("failureCount".into(), json!(history.failure_count));
    summary.insert("lastSuccessAt".into(), json!(history.last_success_at));
    summary.insert("lastFailureAt".into(), json!(history.last_failure_at));
    summary
}

/// A finished run in the history embed: Metronome's `{id, createdAt, finishedAt,
/// tasks: [ids]}`, plus Agora's `scheduledAt` (the instant it was due) and
/// `taskDetails` (each task's start, end, state, exit code and agent).
fn finished(run: &JobRun) -> Value {
    json!({
        "id": run.id,
        "createdAt": run.created_at,
        "finishedAt": run.completed_at,
        "scheduledAt": run.scheduled_at,
        "tasks": run.tasks.iter().map(|task| task.id.as_str()).collect::<Vec<_>>(),
        "taskDetails": to_json(&run.tasks),
    })
}

/// The history embed: Metronome's, plus `missed` (instants a schedule was due and
/// no run started), always present so that a reader can count on it.
pub(crate) fn history(history: &History) -> Value {
    let mut value = summary(history);
    value.insert(
        "successfulFinishedRuns".into(),
        history
            .successful_finished_runs
            .iter()
            .map(|r| finished(r))
            .collect(),
    );
    value.insert(
        "failedFinishedRuns".into(),
        history
            .failed_finished_runs
            .iter()
            .map(|r| finished(r))
            .collect(),
    );
    value.insert("missed".into(), to_json(&history.missed));
    Value::Object(value)
}
