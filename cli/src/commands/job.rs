//! `agora job`: add, run, list, show and remove jobs, and show their history,
//! through a cron instance's Metronome REST API (`--cron`, env `AGORA_CRON`).
//!
//! `add` takes a job's JSON as Metronome does (schedules may be inlined under
//! `schedules`); what `show --json` prints can be given to `add` again. `run` prints
//! the new run's id on stdout, so a script can follow it at
//! `/v1/jobs/{id}/runs/{run}`.

use std::collections::BTreeSet;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::agent_client::encode;
use crate::rest_client::{self, Api, RestClient, count, print_json, read_input, text};
use crate::table;

/// The cron API, as messages name it.
const CRON_API: Api = Api {
    name: "the cron API",
    flag: "--cron",
    hint: "is `agora cron` or `agora dev` running? set --cron or AGORA_CRON",
    example: "http://127.0.0.1:9000",
};

/// Fields of a job's JSON that describe its state, not its definition (Metronome's
/// embeds): a job saved with `agora job show --json` is added without them.
const READ_ONLY_FIELDS: &[&str] = &["activeRuns", "history", "historySummary"];
/// The same for a schedule.
const READ_ONLY_SCHEDULE_FIELDS: &[&str] = &["nextRunAt"];
/// What `list` and `show` embed in a job.
const SUMMARY_EMBEDS: &str = "embed=activeRuns&embed=schedules&embed=historySummary";

#[derive(Args)]
pub struct JobArgs {
    /// URL of the cron API (an `agora cron` instance, or the one `agora dev` starts).
    #[arg(
        long,
        env = "AGORA_CRON",
        default_value = "http://127.0.0.1:9000",
        global = true
    )]
    pub cron: String,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Create a job from its JSON definition (a file, or - for stdin), or replace the
    /// job with that id; its `schedules`, when given, become the job's schedules.
    Add(AddArgs),
    /// Start a run of a job now; prints the run's id.
    Run(IdArgs),
    /// List jobs: schedules and next runs, active runs, last success and failure.
    List(ListArgs),
    /// Show one job: its definition, schedules, dependencies and active runs.
    Show(ShowArgs),
    /// Show a job's finished runs and the scheduled instants it missed.
    History(ShowArgs),
    /// Remove a job (refused while it has active runs, unless --stop-runs).
    Rm(RmArgs),
}

#[derive(Args)]
pub struct AddArgs {
    /// JSON of one job (Metronome's job definition), or - to read it from stdin.
    pub file: String,
}

#[derive(Args)]
pub struct IdArgs {
    /// The job's id (`backup` or `prod.backup`).
    pub id: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The job's id.
    pub id: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// The job's id.
    pub id: String,
    /// Stop the job's active runs (their tasks are killed) rather than refuse.
    #[arg(long)]
    pub stop_runs: bool,
}

pub async fn run(args: JobArgs) -> anyhow::Result<()> {
    let client = RestClient::new(CRON_API, &args.cron)?;
    match args.command {
        JobCommand::Add(add) => {
            let text = read_input(&add.file, "the job's JSON").await?;
            let definition = Definition::parse(&text, &add.file)?;
            add_job(&client, &definition).await
        }
        JobCommand::Run(run) => {
            let path = format!("{}/runs", job_path(&run.id)?);
            let reply = client.call(Method::POST, &path, None).await?;
            let started = reply.json(&CRON_API)?;
            let run_id = started
                .get("id")
                .and_then(Value::as_str)
                .context("the cron API's answer names no run id")?;
            eprintln!(
                "started run {run_id} of {} ({})",
                run.id,
                text(&started, "status")
            );
            println!("{run_id}");
            Ok(())
        }
        JobCommand::List(list) => {
            let path = format!("/v1/jobs?{SUMMARY_EMBEDS}");
            let body = client
                .call(Method::GET, &path, None)
                .await?
                .json(&CRON_API)?;
            if list.json {
                return print_json(&body);
            }
            let jobs = body
                .as_array()
                .context("the cron API's answer is not a list of jobs")?;
            print!("{}", render_list(jobs));
            Ok(())
        }
        JobCommand::Show(show) => {
            let path = format!("{}?{SUMMARY_EMBEDS}", job_path(&show.id)?);
            let job = client
                .call(Method::GET, &path, None)
                .await?
                .json(&CRON_API)?;
            if show.json {
                return print_json(&job);
            }
            let parents = parent_summaries(&client, &job).await?;
            print!("{}", render_job(&job, &parents));
            Ok(())
        }
        JobCommand::History(history) => {
            let path = format!("{}?embed=history", job_path(&history.id)?);
            let job = client
                .call(Method::GET, &path, None)
                .await?
                .json(&CRON_API)?;
            if history.json {
                return print_json(job.get("history").unwrap_or(&Value::Null));
            }
            print!("{}", render_history(&job));
            Ok(())
        }
        JobCommand::Rm(rm) => {
            let path = format!("{}?stopCurrentJobRuns={}", job_path(&rm.id)?, rm.stop_runs);
            let reply = client.send(Method::DELETE, &path, None).await?;
            if reply.status == 409 {
                anyhow::bail!(
                    "{}\n  {} has active runs: --stop-runs stops them",
                    rest_client::describe_error(&CRON_API, &reply),
                    rm.id
                );
            }
            anyhow::ensure!(
                reply.is_success(),
                "{}",
                rest_client::describe_error(&CRON_API, &reply)
            );
            eprintln!("removed {}", rm.id);
            Ok(())
        }
    }
}

/// A job's definition as `add` reads it.
#[derive(Debug)]
struct Definition {
    id: String,
    /// The job without its schedules and read-only fields.
    job: Value,
    /// The schedules it inlines; `None` when it has no `schedules` field (the job's
    /// schedules are then left as they are).
    schedules: Option<Vec<Schedule>>,
}

#[derive(Debug)]
struct Schedule {
    id: String,
    spec: Value,
}

impl Definition {
    fn parse(text: &str, source: &str) -> anyhow::Result<Self> {
        let source = if source == "-" { "stdin" } else { source };
        let mut job: Value =
            serde_json::from_str(text).with_context(|| format!("{source} does not hold JSON"))?;
        let object = job.as_object_mut().with_context(|| {
            format!("{source}: expected one job (a JSON object with an \"id\")")
        })?;
        for field in READ_ONLY_FIELDS {
            object.remove(*field);
        }
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .with_context(|| format!("{source}: the job has no \"id\""))?
            .to_string();
        let schedules = match object.remove("schedules") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                let mut schedules = Vec::new();
                let mut seen = BTreeSet::new();
                for mut spec in list {
                    let fields = spec.as_object_mut().with_context(|| {
                        format!("{source}: each of \"schedules\" must be an object")
                    })?;
                    for field in READ_ONLY_SCHEDULE_FIELDS {
                        fields.remove(*field);
                    }
                    let schedule_id = fields
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.trim().is_empty())
                        .with_context(|| format!("{source}: a schedule has no \"id\""))?
                        .to_string();
                    anyhow::ensure!(
                        seen.insert(schedule_id.clone()),
                        "{source}: schedule \"{schedule_id}\" appears twice"
                    );
                    schedules.push(Schedule {
                        id: schedule_id,
                        spec,
                    });
                }
                Some(schedules)
            }
            Some(_) => anyhow::bail!("{source}: \"schedules\" must be a list"),
        };
        Ok(Definition { id, job, schedules })
    }

    /// The body of `POST /v1/jobs`: the job with its schedules inlined.
    fn create_body(&self) -> String {
        let mut job = self.job.clone();
        if let (Some(schedules), Some(object)) = (&self.schedules, job.as_object_mut()) {
            let specs = schedules.iter().map(|s| s.spec.clone()).collect();
            object.insert("schedules".into(), Value::Array(specs));
        }
        job.to_string()
    }
}

/// Creates the job, or replaces it and brings its schedules in line with the file.
async fn add_job(client: &RestClient, definition: &Definition) -> anyhow::Result<()> {
    let id = &definition.id;
    let path = job_path(id)?;
    let exists = match client.send(Method::GET, &path, None).await? {
        reply if reply.status == 200 => true,
        reply if reply.status == 404 => false,
        reply => anyhow::bail!("{}", rest_client::describe_error(&CRON_API, &reply)),
    };
    if !exists {
        client
            .call(Method::POST, "/v1/jobs", Some(definition.create_body()))
            .await?;
        eprintln!("created job {id}");
    } else {
        client
            .call(Method::PUT, &path, Some(definition.job.to_string()))
            .await?;
        eprintln!("updated job {id}");
        if let Some(wanted) = &definition.schedules {
            sync_schedules(client, id, wanted).await?;
        }
    }
    let schedules_path = format!("{path}/schedules");
    let schedules = client
        .call(Method::GET, &schedules_path, None)
        .await?
        .json(&CRON_API)?;
    for schedule in schedules.as_array().into_iter().flatten() {
        eprintln!(
            "  schedule {}: {}, next run {}",
            text(schedule, "id"),
            describe_schedule(schedule),
            or_dash(text(schedule, "nextRunAt"))
        );
    }
    println!("{id}");
    Ok(())
}

/// Makes job `id`'s schedules exactly `wanted`: updates those that exist, creates the
/// others and removes the ones not wanted.
async fn sync_schedules(client: &RestClient, id: &str, wanted: &[Schedule]) -> anyhow::Result<()> {
    let path = format!("{}/schedules", job_path(id)?);
    let existing = client
        .call(Method::GET, &path, None)
        .await?
        .json(&CRON_API)?;
    let existing: BTreeSet<String> = existing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("id").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for schedule in wanted {
        let body = Some(schedule.spec.to_string());
        if existing.contains(&schedule.id) {
            let one = format!("{path}/{}", encode(&schedule.id));
            client.call(Method::PUT, &one, body).await?;
        } else {
            client.call(Method::POST, &path, body).await?;
        }
    }
    for gone in existing
        .iter()
        .filter(|e| !wanted.iter().any(|w| &w.id == *e))
    {
        let one = format!("{path}/{}", encode(gone));
        client.call(Method::DELETE, &one, None).await?;
        eprintln!("  removed schedule {gone}");
    }
    Ok(())
}

/// `/v1/jobs/<id>`; ids are dotted paths (`prod.backup`), never slashed.
fn job_path(id: &str) -> anyhow::Result<String> {
    let id = id.trim();
    anyhow::ensure!(
        !id.is_empty() && !id.contains('/'),
        "'{id}' is not a job id (ids are dotted: prod.backup)"
    );
    Ok(format!("/v1/jobs/{}", encode(id)))
}

fn or_dash(value: String) -> String {
    if value.is_empty() { "-".into() } else { value }
}

/// `*/2 * * * * *`, with its time zone unless UTC, its concurrency policy unless
/// ALLOW and `disabled` when it is.
fn describe_schedule(schedule: &Value) -> String {
    let mut out = text(schedule, "cron");
    let zone = text(schedule, "timezone");
    if !zone.is_empty() && zone != "UTC" {
        out.push_str(&format!(" ({zone})"));
    }
    let policy = text(schedule, "concurrencyPolicy");
    if !policy.is_empty() && policy != "ALLOW" {
        out.push_str(&format!(" {policy}"));
    }
    if schedule.get("enabled").and_then(Value::as_bool) == Some(false) {
        out.push_str(" disabled");
    }
    out
}

fn list<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn dependency_ids(job: &Value) -> Vec<String> {
    list(job, "dependencies")
        .iter()
        .filter_map(|d| d.get("id").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// The job's counters and last outcomes: `historySummary`, or read from `history`
/// by a server that embeds only that.
fn summary(job: &Value) -> Option<&Value> {
    job.get("historySummary")
        .filter(|s| s.is_object())
        .or_else(|| job.get("history").filter(|h| h.is_object()))
}

/// How a job is started: its schedules, or the jobs it runs after.
fn trigger_column(job: &Value) -> String {
    let schedules: Vec<String> = list(job, "schedules")
        .iter()
        .map(describe_schedule)
        .collect();
    if !schedules.is_empty() {
        return schedules.join("; ");
    }
    let parents = dependency_ids(job);
    if !parents.is_empty() {
        return format!("after {}", parents.join(","));
    }
    "-".into()
}

fn next_runs(job: &Value) -> String {
    let next: Vec<String> = list(job, "schedules")
        .iter()
        .filter(|s| s.get("enabled").and_then(Value::as_bool) != Some(false))
        .map(|s| text(s, "nextRunAt"))
        .filter(|n| !n.is_empty())
        .collect();
    or_dash(next.join(", "))
}

fn last(job: &Value, field: &str) -> String {
    or_dash(summary(job).map(|s| text(s, field)).unwrap_or_default())
}

/// The `agora job list` table.
fn render_list(jobs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                text(job, "id"),
                trigger_column(job),
                next_runs(job),
                list(job, "activeRuns").len().to_string(),
                last(job, "lastSuccessAt"),
                last(job, "lastFailureAt"),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "SCHEDULE",
            "NEXT RUN",
            "ACTIVE",
            "LAST SUCCESS",
            "LAST FAILURE",
        ],
        &rows,
    )
}

/// What holds a dependent job back: a parent that never succeeded, or whose last
/// run failed after its last success. Instants are compared as the API writes them
/// (RFC 3339 in one format, UTC), where text order is time order.
fn parent_state(parent: &Value) -> (bool, String) {
    let summary = summary(parent);
    let success = summary
        .map(|s| text(s, "lastSuccessAt"))
        .unwrap_or_default();
    let failure = summary
        .map(|s| text(s, "lastFailureAt"))
        .unwrap_or_default();
    let active = list(parent, "activeRuns").len();
    let running = if active > 0 {
        format!(", {active} active run(s)")
    } else {
        String::new()
    };
    if !failure.is_empty() && failure > success {
        return (
            true,
            format!("FAILED at {failure}{running}: blocks this job until it succeeds"),
        );
    }
    if success.is_empty() {
        return (true, format!("has not succeeded yet{running}"));
    }
    (false, format!("succeeded at {success}{running}"))
}

/// Each parent of `job` with its summary (`None` when it is gone).
async fn parent_summaries(
    client: &RestClient,
    job: &Value,
) -> anyhow::Result<Vec<(String, Option<Value>)>> {
    let mut parents = Vec::new();
    for id in dependency_ids(job) {
        let path = format!("{}?{SUMMARY_EMBEDS}", job_path(&id)?);
        let reply = client.send(Method::GET, &path, None).await?;
        let parent = match reply.status {
            200 => Some(reply.json(&CRON_API)?),
            404 => None,
            _ => anyhow::bail!("{}", rest_client::describe_error(&CRON_API, &reply)),
        };
        parents.push((id, parent));
    }
    Ok(parents)
}

/// The `agora job show` summary: the definition's main fields, schedules,
/// dependencies, the outcomes so far, then the active runs.
fn render_job(job: &Value, parents: &[(String, Option<Value>)]) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{label:<13} {value}\n"));
        }
    };
    let run = job.get("run").cloned().unwrap_or(Value::Null);
    line("id", text(job, "id"));
    line("description", text(job, "description"));
    line("cmd", text(&run, "cmd"));
    if let Some(args) = run.get("args").filter(|a| !a.is_null()) {
        line("args", args.to_string());
    }
    if let Some(docker) = run.get("docker") {
        line("image", text(docker, "image"));
    }
    line(
        "resources",
        format!(
            "cpus {}  mem {} MB  disk {} MB",
            text(&run, "cpus"),
            text(&run, "mem"),
            or_dash(text(&run, "disk"))
        ),
    );
    if let Some(restart) = run.get("restart") {
        let mut policy = text(restart, "policy");
        let deadline = text(restart, "activeDeadlineSeconds");
        if !deadline.is_empty() {
            policy.push_str(&format!(" (retried for {deadline} s)"));
        }
        line("restart", policy);
    }
    let constraints: Vec<String> = run
        .get("placement")
        .map(|p| list(p, "constraints"))
        .unwrap_or_default()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                text(c, "attribute"),
                text(c, "operator"),
                text(c, "value")
            )
        })
        .collect();
    line("constraints", constraints.join("; "));
    for schedule in list(job, "schedules") {
        line(
            "schedule",
            format!(
                "{}: {}, next run {} (starting deadline {} s)",
                text(schedule, "id"),
                describe_schedule(schedule),
                or_dash(text(schedule, "nextRunAt")),
                or_dash(text(schedule, "startingDeadlineSeconds"))
            ),
        );
    }
    let mut blocked = Vec::new();
    for (id, parent) in parents {
        let state = match parent {
            Some(parent) => {
                let (blocks, state) = parent_state(parent);
                if blocks {
                    blocked.push(id.clone());
                }
                state
            }
            None => {
                blocked.push(id.clone());
                "does not exist".into()
            }
        };
        line("depends on", format!("{id}: {state}"));
    }
    if !blocked.is_empty() {
        line("waiting for", blocked.join(", "));
    }
    if let Some(summary) = summary(job) {
        line(
            "outcomes",
            format!(
                "{} succeeded (last {}), {} failed (last {})",
                count(summary, "successCount"),
                or_dash(text(summary, "lastSuccessAt")),
                count(summary, "failureCount"),
                or_dash(text(summary, "lastFailureAt"))
            ),
        );
    }
    let runs = list(job, "activeRuns");
    if !runs.is_empty() {
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|run| {
                let tasks = list(run, "tasks");
                let task = tasks.last();
                vec![
                    text(run, "id"),
                    text(run, "status"),
                    text(run, "createdAt"),
                    tasks.len().to_string(),
                    or_dash(task.map(task_id).unwrap_or_default()),
                    or_dash(task.map(|t| text(t, "status")).unwrap_or_default()),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table::render(
            &["RUN", "STATUS", "CREATED", "TASKS", "TASK", "TASK STATUS"],
            &rows,
        ));
    }
    out
}

/// A task of a run: an object, or only its id (Metronome's history lists ids).
fn task_id(task: &Value) -> String {
    match task {
        Value::String(id) => id.clone(),
        task => text(task, "id"),
    }
}

/// One line of `agora job history`: a finished run or a missed instant.
struct HistoryRow {
    /// The instant it was due; runs without one sort by creation.
    instant: String,
    cells: Vec<String>,
}

fn run_row(run: &Value, outcome: &str) -> HistoryRow {
    // The history embed lists task ids in `tasks` (Metronome) and the tasks
    // themselves in `taskDetails`; active runs list them in `tasks`.
    let tasks = match list(run, "taskDetails") {
        [] => list(run, "tasks"),
        details => details,
    };
    let last = tasks.last();
    let started = tasks
        .iter()
        .map(|t| text(t, "startedAt"))
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let finished = match text(run, "completedAt") {
        done if !done.is_empty() => done,
        _ => text(run, "finishedAt"),
    };
    let scheduled = match text(run, "scheduledAt") {
        at if !at.is_empty() => at,
        _ => text(run, "createdAt"),
    };
    let mut outcome = outcome.to_string();
    if tasks.len() > 1 {
        outcome.push_str(&format!(" ({} tasks)", tasks.len()));
    }
    HistoryRow {
        instant: scheduled.clone(),
        cells: vec![
            or_dash(scheduled),
            or_dash(started),
            or_dash(finished),
            outcome,
            or_dash(last.map(|t| text(t, "exitCode")).unwrap_or_default()),
            or_dash(last.map(|t| text(t, "agentId")).unwrap_or_default()),
            or_dash(last.map(task_id).unwrap_or_default()),
        ],
    }
}

/// The `agora job history` view: counters, then every finished run and missed
/// instant in the order they were due.
fn render_history(job: &Value) -> String {
    let Some(history) = job.get("history").filter(|h| h.is_object()) else {
        return format!("{}: the cron API returned no history\n", text(job, "id"));
    };
    let mut rows: Vec<HistoryRow> = list(history, "successfulFinishedRuns")
        .iter()
        .map(|run| run_row(run, "SUCCESS"))
        .chain(
            list(history, "failedFinishedRuns")
                .iter()
                .map(|run| run_row(run, "FAILED")),
        )
        .collect();
    for missed in list(history, "missed") {
        let instant = text(missed, "scheduledAt");
        let reason = text(missed, "reason");
        let outcome = if reason.is_empty() {
            "MISSED".to_string()
        } else {
            format!("MISSED: {reason}")
        };
        let dash = || "-".to_string();
        rows.push(HistoryRow {
            instant: instant.clone(),
            cells: vec![
                or_dash(instant),
                dash(),
                dash(),
                outcome,
                dash(),
                dash(),
                dash(),
            ],
        });
    }
    rows.sort_by(|a, b| a.instant.cmp(&b.instant));
    let mut out = format!(
        "{}: {} succeeded (last {}), {} failed (last {}), {} missed\n",
        text(job, "id"),
        count(history, "successCount"),
        or_dash(text(history, "lastSuccessAt")),
        count(history, "failureCount"),
        or_dash(text(history, "lastFailureAt")),
        list(history, "missed").len()
    );
    if rows.is_empty() {
        return out;
    }
    let cells: Vec<Vec<String>> = rows.into_iter().map(|r| r.cells).collect();
    out.push('\n');
    out.push_str(&table::render(
        &[
            "SCHEDULED",
            "STARTED",
            "FINISHED",
            "OUTCOME",
            "EXIT",
            "AGENT",
            "TASK",
        ],
        &cells,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest_client::Reply;
    use serde_json::json;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: hyper::header::HeaderMap::new(),
            body: hyper::body::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn ids_become_encoded_paths() {
        assert_eq!(job_path("backup").unwrap(), "/v1/jobs/backup");
        assert_eq!(job_path(" prod.backup ").unwrap(), "/v1/jobs/prod.backup");
        assert_eq!(job_path("a b").unwrap(), "/v1/jobs/a%20b");
        assert!(job_path("").is_err());
        assert!(job_path("a/b").is_err());
    }

    #[test]
    fn definitions_lose_their_read_only_fields_and_keep_their_schedules() {
        let shown = json!({
            "id": "nightly", "run": {"cmd": "true", "cpus": 0.1, "mem": 32},
            "activeRuns": [], "historySummary": {"successCount": 1},
            "schedules": [{"id": "s", "cron": "0 2 * * *", "nextRunAt": "2024-01-02T02:00:00.000Z"}]
        });
        let definition = Definition::parse(&shown.to_string(), "nightly.json").unwrap();
        assert_eq!(definition.id, "nightly");
        assert_eq!(
            definition.job,
            json!({"id": "nightly", "run": {"cmd": "true", "cpus": 0.1, "mem": 32}})
        );
        let schedules = definition.schedules.as_ref().expect("inlined schedules");
        assert_eq!(schedules.len(), 1);
        assert_eq!(schedules[0].id, "s");
        assert_eq!(schedules[0].spec, json!({"id": "s", "cron": "0 2 * * *"}));
        let body: Value = serde_json::from_str(&definition.create_body()).unwrap();
        assert_eq!(body["schedules"], json!([{"id": "s", "cron": "0 2 * * *"}]));

        let plain = Definition::parse(r#"{"id": "x", "run": {"cmd": "true"}}"#, "-").unwrap();
        assert!(plain.schedules.is_none(), "no field: schedules untouched");
        let body: Value = serde_json::from_str(&plain.create_body()).unwrap();
        assert!(body.get("schedules").is_none());
        let cleared = Definition::parse(r#"{"id": "x", "schedules": []}"#, "-").unwrap();
        assert_eq!(cleared.schedules.map(|s| s.len()), Some(0));

        let error = Definition::parse("{\"run\": {}}", "-")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("stdin") && error.contains("\"id\""),
            "{error}"
        );
        assert!(Definition::parse("[1]", "a.json").is_err());
        assert!(Definition::parse("{not json", "a.json").is_err());
        assert!(Definition::parse(r#"{"id": "x", "schedules": {}}"#, "a.json").is_err());
        assert!(Definition::parse(r#"{"id": "x", "schedules": [{"cron": "*"}]}"#, "a").is_err());
        let twice = r#"{"id": "x", "schedules": [{"id": "s"}, {"id": "s"}]}"#;
        assert!(
            Definition::parse(twice, "a")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn the_list_shows_schedules_next_runs_and_outcomes() {
        let jobs = vec![
            json!({"id": "tick", "run": {"cmd": "true"},
                   "schedules": [{"id": "every-2s", "cron": "*/2 * * * * *", "timezone": "UTC",
                                  "enabled": true, "concurrencyPolicy": "ALLOW",
                                  "nextRunAt": "2024-01-01T00:00:02.000Z"}],
                   "activeRuns": [{"id": "r1", "status": "ACTIVE"}],
                   "historySummary": {"successCount": 3, "failureCount": 0,
                                      "lastSuccessAt": "2024-01-01T00:00:00.000Z"}}),
            json!({"id": "report", "run": {"cmd": "true"}, "dependencies": [{"id": "tick"}],
                   "schedules": [], "activeRuns": [],
                   "historySummary": {"successCount": 0, "failureCount": 1,
                                      "lastFailureAt": "2024-01-01T00:00:01.000Z"}}),
            json!({"id": "nightly", "run": {"cmd": "true"},
                   "schedules": [{"id": "s", "cron": "0 2 * * *", "timezone": "Europe/Paris",
                                  "enabled": false, "concurrencyPolicy": "FORBID",
                                  "nextRunAt": "2024-01-02T01:00:00.000Z"}]}),
        ];
        assert_eq!(
            render_list(&jobs),
            "ID       SCHEDULE                                  NEXT RUN                  ACTIVE  LAST SUCCESS              LAST FAILURE\n\
             tick     */2 * * * * *                             2024-01-01T00:00:02.000Z  1       2024-01-01T00:00:00.000Z  -\n\
             report   after tick                                -                         0       -                         2024-01-01T00:00:01.000Z\n\
             nightly  0 2 * * * (Europe/Paris) FORBID disabled  -                         0       -                         -\n"
        );
    }

    #[test]
    fn a_failed_parent_blocks_its_child_visibly() {
        let child = json!({"id": "c", "run": {"cmd": "true", "cpus": 0.1, "mem": 32},
                           "dependencies": [{"id": "a"}, {"id": "b"}, {"id": "gone"}],
                           "historySummary": {"successCount": 0, "failureCount": 0}});
        let a = json!({"id": "a", "historySummary": {
            "lastSuccessAt": "2024-01-01T00:00:05.000Z", "lastFailureAt": "2024-01-01T00:00:01.000Z"}});
        let b = json!({"id": "b", "historySummary": {
            "lastSuccessAt": "2024-01-01T00:00:01.000Z", "lastFailureAt": "2024-01-01T00:00:09.000Z"}});
        let parents = vec![
            ("a".to_string(), Some(a)),
            ("b".to_string(), Some(b)),
            ("gone".to_string(), None),
        ];
        let shown = render_job(&child, &parents);
        assert!(
            shown.contains("depends on    a: succeeded at 2024-01-01T00:00:05.000Z\n"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "depends on    b: FAILED at 2024-01-01T00:00:09.000Z: blocks this job until it succeeds\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("depends on    gone: does not exist\n"),
            "{shown}"
        );
        assert!(shown.contains("waiting for   b, gone\n"), "{shown}");
        let never = json!({"id": "n", "historySummary": {"successCount": 0}});
        assert!(parent_state(&never).0, "never succeeded: waiting");
    }

    #[test]
    fn a_job_shows_its_schedules_and_active_runs() {
        let job = json!({"id": "tick", "description": "every other second",
            "run": {"cmd": "echo hi", "cpus": 0.1, "mem": 32, "disk": 0,
                    "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 120},
                    "placement": {"constraints": [{"attribute": "rack", "operator": "EQ", "value": "r1"}]}},
            "schedules": [{"id": "every-2s", "cron": "*/2 * * * * *", "timezone": "UTC",
                           "startingDeadlineSeconds": 900, "enabled": true,
                           "nextRunAt": "2024-01-01T00:00:02.000Z"}],
            "activeRuns": [{"id": "20240101000000abc", "status": "ACTIVE",
                            "createdAt": "2024-01-01T00:00:00.000Z",
                            "tasks": [{"id": "tick_t1", "status": "TASK_FAILED"},
                                      {"id": "tick_t2", "status": "TASK_RUNNING"}]}],
            "historySummary": {"successCount": 2, "failureCount": 1,
                               "lastSuccessAt": "2024-01-01T00:00:00.000Z"}});
        let shown = render_job(&job, &[]);
        for expected in [
            "id            tick\n",
            "cmd           echo hi\n",
            "resources     cpus 0.1  mem 32 MB  disk 0 MB\n",
            "restart       ON_FAILURE (retried for 120 s)\n",
            "constraints   rack EQ r1\n",
            "schedule      every-2s: */2 * * * * *, next run 2024-01-01T00:00:02.000Z (starting deadline 900 s)\n",
            "outcomes      2 succeeded (last 2024-01-01T00:00:00.000Z), 1 failed (last -)\n",
            "20240101000000abc  ACTIVE  2024-01-01T00:00:00.000Z  2      tick_t2  TASK_RUNNING\n",
        ] {
            assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
        }
        assert!(!shown.contains("waiting for"), "{shown}");
    }

    #[test]
    fn history_interleaves_runs_and_missed_instants() {
        let job = json!({"id": "tick", "history": {
            "successCount": 2, "failureCount": 1,
            "lastSuccessAt": "2024-01-01T00:00:06.500Z", "lastFailureAt": "2024-01-01T00:00:02.400Z",
            "successfulFinishedRuns": [
                {"id": "r6", "createdAt": "2024-01-01T00:00:06.000Z", "scheduledAt": "2024-01-01T00:00:06.000Z",
                 "completedAt": "2024-01-01T00:00:06.500Z",
                 "tasks": [{"id": "t6", "startedAt": "2024-01-01T00:00:06.100Z", "status": "TASK_FINISHED",
                            "exitCode": 0, "agentId": "agent-1"}]},
                {"id": "r0", "createdAt": "2024-01-01T00:00:00.000Z", "finishedAt": "2024-01-01T00:00:00.300Z",
                 "tasks": ["t0"]}
            ],
            "failedFinishedRuns": [
                {"id": "r2", "createdAt": "2024-01-01T00:00:02.000Z", "scheduledAt": "2024-01-01T00:00:02.000Z",
                 "completedAt": "2024-01-01T00:00:02.400Z",
                 "tasks": [{"id": "t2a", "startedAt": "2024-01-01T00:00:02.100Z", "status": "TASK_FAILED", "exitCode": 3},
                           {"id": "t2b", "startedAt": "2024-01-01T00:00:02.300Z", "status": "TASK_FAILED", "exitCode": 3,
                            "agentId": "agent-2"}]}
            ],
            "missed": [{"scheduleId": "every-2s", "scheduledAt": "2024-01-01T00:00:04.000Z",
                        "reason": "startingDeadlineSeconds passed"}]
        }});
        assert_eq!(
            render_history(&job),
            "tick: 2 succeeded (last 2024-01-01T00:00:06.500Z), 1 failed (last 2024-01-01T00:00:02.400Z), 1 missed\n\
             \n\
             SCHEDULED                 STARTED                   FINISHED                  OUTCOME                                 EXIT  AGENT    TASK\n\
             2024-01-01T00:00:00.000Z  -                         2024-01-01T00:00:00.300Z  SUCCESS                                 -     -        t0\n\
             2024-01-01T00:00:02.000Z  2024-01-01T00:00:02.100Z  2024-01-01T00:00:02.400Z  FAILED (2 tasks)                        3     agent-2  t2b\n\
             2024-01-01T00:00:04.000Z  -                         -                         MISSED: startingDeadlineSeconds passed  -     -        -\n\
             2024-01-01T00:00:06.000Z  2024-01-01T00:00:06.100Z  2024-01-01T00:00:06.500Z  SUCCESS                                 0     agent-1  t6\n"
        );
        let bare = json!({"id": "x"});
        assert!(render_history(&bare).contains("no history"));
    }

    #[test]
    fn errors_name_the_cron_api() {
        let answer = reply(
            422,
            json!({"message": "Object is not valid",
                   "details": [{"path": "/dependencies", "errors": ["cycle: a -> b -> a"]}]}),
        );
        assert_eq!(
            rest_client::describe_error(&CRON_API, &answer),
            "the cron API answered 422: Object is not valid\n  /dependencies: cycle: a -> b -> a"
        );
    }
}
