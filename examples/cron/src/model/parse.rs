//! Request bodies into [`JobSpec`] and [`ScheduleSpec`]: not JSON is a 400; JSON
//! of the wrong shape, an unknown field, or a value breaking a rule is a 422 that
//! names every offending path, all of them in one answer.
//!
//! `null` members count as absent (play-json's `formatNullable`, which Metronome
//! reads with), so a client that writes `"description": null` gets the default.
//! Unknown members are refused rather than ignored, as Metronome's JSON schema
//! (`additionalProperties: false`) refuses them: a misspelt or unsupported field
//! (`timeZone`, `ucr`, `secrets`) silently dropped would run the job differently
//! from what was asked.

use serde_json::{Map, Value};

use crate::error::CronError;

use super::json::from_value;
use super::validate::Violations;
use super::{JobSpec, ScheduleSpec};

/// A job's members; `schedules` is read apart (inlined on creation).
const JOB_FIELDS: &[&str] = &[
    "id",
    "description",
    "labels",
    "run",
    "dependencies",
    "schedules",
];
const RUN_FIELDS: &[&str] = &[
    "cpus",
    "mem",
    "disk",
    "cmd",
    "args",
    "user",
    "env",
    "placement",
    "artifacts",
    "maxLaunchDelay",
    "docker",
    "volumes",
    "restart",
];
const PLACEMENT_FIELDS: &[&str] = &["constraints"];
const CONSTRAINT_FIELDS: &[&str] = &["attribute", "operator", "value"];
const ARTIFACT_FIELDS: &[&str] = &["uri", "extract", "executable", "cache"];
const DOCKER_FIELDS: &[&str] = &["image"];
const VOLUME_FIELDS: &[&str] = &["containerPath", "hostPath", "mode"];
const RESTART_FIELDS: &[&str] = &["policy", "activeDeadlineSeconds"];
const DEPENDENCY_FIELDS: &[&str] = &["id"];
/// `nextRunAt` is accepted (a schedule read back and sent again carries it) and
/// dropped: the framework computes it.
const SCHEDULE_FIELDS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "startingDeadlineSeconds",
    "concurrencyPolicy",
    "enabled",
    "nextRunAt",
];

impl JobSpec {
    /// Reads a job from a `POST /v1/jobs` body, with the schedules inlined in it
    /// (`"schedules": [...]`, `None` when absent), everything validated.
    pub fn from_json(bytes: &[u8]) -> Result<(JobSpec, Option<Vec<ScheduleSpec>>), CronError> {
        Self::read(bytes, None)
    }

    /// Reads a job from a `PUT /v1/jobs/{id}` body: an absent `id` is `id`; a
    /// different one is a 422 (a replacement never renames).
    pub fn from_json_with_id(
        bytes: &[u8],
        id: &str,
    ) -> Result<(JobSpec, Option<Vec<ScheduleSpec>>), CronError> {
        Self::read(bytes, Some(id))
    }

    fn read(
        bytes: &[u8],
        path_id: Option<&str>,
    ) -> Result<(JobSpec, Option<Vec<ScheduleSpec>>), CronError> {
        let mut document = object(bytes)?;
        let mut violations = Violations::default();
        if let Some(id) = path_id {
            take_path_id(&mut document, id, &mut violations);
        }
        let schedules = document.remove("schedules");
        let document = Value::Object(document);
        check_job_fields(&document, &mut violations);
        let job = match from_value::<JobSpec>(&document, "") {
            Ok(job) => Some(job),
            Err(shape) => {
                violations.merge(shape);
                None
            }
        };
        if let Some(job) = &job {
            job.check(&mut violations);
        }
        let schedules = match schedules {
            None => None,
            Some(Value::Array(items)) => {
                let mut read = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let prefix = format!("/schedules({i})");
                    if let Some(schedule) = schedule_at(item, &prefix, &mut violations) {
                        if read.iter().any(|s: &ScheduleSpec| s.id == schedule.id) {
                            violations.add(
                                format!("{prefix}/id"),
                                format!("schedule '{}' is given twice", schedule.id),
                            );
                        }
                        read.push(schedule);
                    }
                }
                Some(read)
            }
            Some(_) => {
                violations.add("/schedules", "error.expected.jsarray");
                None
            }
        };
        violations.into_result()?;
        match job {
            Some(job) => Ok((job, schedules)),
            // Unreachable: a job that could not be read left a violation.
            None => Err(CronError::InvalidJson("not a job".to_string())),
        }
    }
}

impl ScheduleSpec {
    /// Reads a schedule from a `POST /v1/jobs/{id}/schedules` body, validated.
    pub fn from_json(bytes: &[u8]) -> Result<ScheduleSpec, CronError> {
        Self::read(bytes, None)
    }

    /// Reads a schedule from a `PUT .../schedules/{sid}` body: an absent `id` is
    /// `id`; a different one is a 422.
    pub fn from_json_with_id(bytes: &[u8], id: &str) -> Result<ScheduleSpec, CronError> {
        Self::read(bytes, Some(id))
    }

    fn read(bytes: &[u8], path_id: Option<&str>) -> Result<ScheduleSpec, CronError> {
        let mut document = object(bytes)?;
        let mut violations = Violations::default();
        if let Some(id) = path_id {
            take_path_id(&mut document, id, &mut violations);
        }
        let schedule = schedule_at(&Value::Object(document), "", &mut violations);
        violations.into_result()?;
        schedule.ok_or_else(|| CronError::InvalidJson("not a schedule".to_string()))
    }
}

/// The body as a JSON object, `null` members removed: 400 when it is not JSON,
/// 422 when it is JSON but no object.
fn object(bytes: &[u8]) -> Result<Map<String, Value>, CronError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| CronError::InvalidJson(e.to_string()))?;
    match without_nulls(value) {
        Value::Object(map) => Ok(map),
        _ => Err(CronError::Invalid {
            message: super::validate::INVALID.to_string(),
            details: vec![("/".to_string(), vec!["error.expected.jsobject".to_string()])],
        }),
    }
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// The id in the path of a PUT: it fills in an absent `id`, and a body naming
/// another is refused.
fn take_path_id(document: &mut Map<String, Value>, id: &str, violations: &mut Violations) {
    match document.get("id") {
        None => {
            document.insert("id".to_string(), Value::String(id.to_string()));
        }
        Some(Value::String(given)) if given == id => {}
        Some(Value::String(given)) => violations.add(
            "/id",
            format!("'{given}' differs from '{id}', the id in the path"),
        ),
        // Not a string: the shape check reports it.
        Some(_) => {}
    }
}

/// One schedule found at `prefix`, shape and rules checked; `None` (with the
/// violations recorded) when it cannot be read.
fn schedule_at(value: &Value, prefix: &str, violations: &mut Violations) -> Option<ScheduleSpec> {
    unknown_fields(value, prefix, SCHEDULE_FIELDS, violations);
    match from_value::<ScheduleSpec>(value, prefix) {
        Ok(mut schedule) => {
            schedule.next_run_at = None;
            schedule.check(prefix, violations);
            Some(schedule)
        }
        Err(shape) => {
            violations.merge(shape);
            None
        }
    }
}

fn check_job_fields(job: &Value, violations: &mut Violations) {
    unknown_fields(job, "", JOB_FIELDS, violations);
    for (i, dependency) in items(job.get("dependencies")) {
        unknown_fields(
            dependency,
            &format!("/dependencies({i})"),
            DEPENDENCY_FIELDS,
            violations,
        );
    }
    let Some(run) = job.get("run") else {
        return;
    };
    unknown_fields(run, "/run", RUN_FIELDS, violations);
    if let Some(placement) = run.get("placement") {
        unknown_fields(placement, "/run/placement", PLACEMENT_FIELDS, violations);
        for (i, constraint) in items(placement.get("constraints")) {
            unknown_fields(
                constraint,
                &format!("/run/placement/constraints({i})"),
                CONSTRAINT_FIELDS,
                violations,
            );
        }
    }
    for (i, artifact) in items(run.get("artifacts")) {
        unknown_fields(
            artifact,
            &format!("/run/artifacts({i})"),
            ARTIFACT_FIELDS,
            violations,
        );
    }
    if let Some(docker) = run.get("docker") {
        unknown_fields(docker, "/run/docker", DOCKER_FIELDS, violations);
    }
    for (i, volume) in items(run.get("volumes")) {
        unknown_fields(
            volume,
            &format!("/run/volumes({i})"),
            VOLUME_FIELDS,
            violations,
        );
    }
    if let Some(restart) = run.get("restart") {
        unknown_fields(restart, "/run/restart", RESTART_FIELDS, violations);
    }
}

fn items(value: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Refuses members of the object at `path` not in `known` (a value that is no
/// object is left to the shape check).
fn unknown_fields(value: &Value, path: &str, known: &[&str], violations: &mut Violations) {
    let Some(map) = value.as_object() else {
        return;
    };
    for key in map.keys().filter(|key| !known.contains(&key.as_str())) {
        violations.add(
            format!("{path}/{key}"),
            format!("is not a known field (known: {})", known.join(", ")),
        );
    }
}
