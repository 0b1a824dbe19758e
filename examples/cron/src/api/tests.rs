//! The API over real HTTP (127.0.0.1, an OS-chosen port) against a fake
//! controller: a task that keeps jobs, schedules and runs like the real one,
//! publishes snapshots before it answers, and records what it was asked.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::{ApiContext, ApiInfo, router};
use crate::config::CronConfig;
use crate::controller::{Command, ControllerHandle, Snapshot};
use crate::error::CronError;
use crate::state::{History, JobRun, MissedRun, RunStatus, RunTask, Trigger};

const NEXT_RUN: &str = "2030-01-01T02:00:00.000+0000";

/// What the fake controller was asked to do (beyond what the snapshot shows).
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    DeleteJob { id: String, stop: bool },
    StopRun { id: String },
}

struct Fake {
    snapshot: watch::Sender<Arc<Snapshot>>,
    asked: Mutex<Vec<Asked>>,
    runs: Mutex<u32>,
}

impl Fake {
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<T, CronError>,
    ) -> Result<T, CronError> {
        let mut next = (**self.snapshot.borrow()).clone();
        let answer = change(&mut next)?;
        self.snapshot.send_replace(Arc::new(next));
        Ok(answer)
    }

    fn handle(&self, command: Command) {
        match command {
            Command::PutJob {
                job,
                schedules,
                create,
                reply,
            } => {
                let answer = self.modify(|s| {
                    let exists = s.jobs.contains_key(&job.id);
                    if create && exists {
                        return Err(CronError::Conflict(
                            "Job with this id already exists".into(),
                        ));
                    }
                    if !create && !exists {
                        return Err(CronError::NotFound(format!(
                            "Job '{}' does not exist",
                            job.id
                        )));
                    }
                    if let Some(mut schedules) = schedules {
                        for schedule in &mut schedules {
                            schedule.next_run_at = Some(NEXT_RUN.into());
                        }
                        s.schedules.insert(job.id.clone(), schedules);
                    }
                    s.jobs.insert(job.id.clone(), Arc::new((*job).clone()));
                    Ok((*job).clone())
                });
                let _ = reply.send(answer);
            }
            Command::DeleteJob {
                id,
                stop_current_runs,
                reply,
            } => {
                self.asked.lock().unwrap().push(Asked::DeleteJob {
                    id: id.clone(),
                    stop: stop_current_runs,
                });
                let answer = self.modify(|s| {
                    let active = s.active_runs.get(&id).is_some_and(|runs| !runs.is_empty());
                    if active && !stop_current_runs && s.jobs.contains_key(&id) {
                        return Err(CronError::Conflict(
                            "There are active job runs. Override with stopCurrentJobRuns=true"
                                .into(),
                        ));
                    }
                    s.active_runs.remove(&id);
                    s.schedules.remove(&id);
                    s.history.remove(&id);
                    s.jobs
                        .remove(&id)
                        .map(|job| (*job).clone())
                        .ok_or_else(|| CronError::NotFound(format!("Job '{id}' does not exist")))
                });
                let _ = reply.send(answer);
            }
            Command::PutSchedule {
                job_id,
                mut schedule,
                create,
                reply,
            } => {
                let answer = self.modify(|s| {
                    if !s.jobs.contains_key(&job_id) {
                        return Err(CronError::NotFound(format!(
                            "Job '{job_id}' does not exist"
                        )));
                    }
                    let list = s.schedules.entry(job_id.clone()).or_default();
                    let at = list.iter().position(|x| x.id == schedule.id);
                    schedule.next_run_at = Some(NEXT_RUN.into());
                    match (at, create) {
                        (Some(_), true) => Err(CronError::Conflict(
                            "Can only create a non existing schedule".into(),
                        )),
                        (None, false) => Err(CronError::NotFound(format!(
                            "Schedule '{}' does not exist",
                            schedule.id
                        ))),
                        (None, true) => {
                            list.push(schedule.clone());
                            Ok(schedule)
                        }
                        (Some(i), false) => {
                            list[i] = schedule.clone();
                            Ok(schedule)
                        }
                    }
                });
                let _ = reply.send(answer);
            }
            Command::DeleteSchedule {
                job_id,
                schedule_id,
                reply,
            } => {
                let answer = self.modify(|s| {
                    let list = s.schedules.get_mut(&job_id).ok_or_else(|| {
                        CronError::NotFound(format!("Job '{job_id}' does not exist"))
                    })?;
                    let at = list
                        .iter()
                        .position(|x| x.id == schedule_id)
                        .ok_or_else(|| {
                            CronError::NotFound(format!("Schedule '{schedule_id}' does not exist"))
                        })?;
                    list.remove(at);
                    Ok(())
                });
                let _ = reply.send(answer);
            }
            Command::StartRun { job_id, reply } => {
                let n = {
                    let mut runs = self.runs.lock().unwrap();
                    *runs += 1;
                    *runs
                };
                let answer = self.modify(|s| {
                    if !s.jobs.contains_key(&job_id) {
                        return Err(CronError::NotFound(format!(
                            "Job '{job_id}' does not exist"
                        )));
                    }
                    let run = run(
                        &job_id,
                        &format!("20300101000000run{n}"),
                        RunStatus::Initial,
                    );
                    s.active_runs
                        .entry(job_id.clone())
                        .or_default()
                        .push(Arc::new(run.clone()));
                    Ok(run)
                });
                let _ = reply.send(answer);
            }
            Command::StopRun {
                job_id,
                run_id,
                reply,
            } => {
                self.asked
                    .lock()
                    .unwrap()
                    .push(Asked::StopRun { id: run_id.clone() });
                let answer = self.modify(|s| {
                    let active = s.active_runs.entry(job_id.clone()).or_default();
                    let at = active.iter().position(|r| r.id == run_id).ok_or_else(|| {
                        CronError::NotFound(format!("JobRun '{run_id}' does not exist"))
                    })?;
                    let mut stopped = JobRun::clone(&active.remove(at));
                    stopped.status = RunStatus::Failed;
                    stopped.completed_at = Some("2030-01-01T00:01:00.000+0000".into());
                    for task in &mut stopped.tasks {
                        task.status = "TASK_KILLED".into();
                        task.completed_at = stopped.completed_at.clone();
                    }
                    let history = s.history.entry(job_id.clone()).or_default();
                    history.failure_count += 1;
                    history.last_failure_at = stopped.completed_at.clone();
                    history.failed_finished_runs.push(Arc::new(stopped.clone()));
                    Ok(stopped)
                });
                let _ = reply.send(answer);
            }
        }
    }
}

/// A run with one task and every extra field of ours set, so that a test can
/// see them left out.
fn run(job_id: &str, id: &str, status: RunStatus) -> JobRun {
    JobRun {
        id: id.into(),
        job_id: job_id.into(),
        status,
        created_at: "2030-01-01T00:00:00.000+0000".into(),
        completed_at: None,
        tasks: vec![RunTask {
            id: format!("{job_id}_{id}.task"),
            started_at: Some("2030-01-01T00:00:01.000+0000".into()),
            completed_at: None,
            status: "TASK_RUNNING".into(),
            exit_code: Some(0),
            agent_id: Some("agent-1".into()),
        }],
        scheduled_at: "2030-01-01T00:00:00.000+0000".into(),
        trigger: Trigger::Manual,
        attempts: 1,
        retry_not_before: None,
    }
}

struct Harness {
    addr: SocketAddr,
    fake: Arc<Fake>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The error message of a JSON error body.
    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {}", self.text))
            .to_string()
    }
}

async fn start() -> Harness {
    start_as(true, None).await
}

async fn start_as(is_leader: bool, leader: Option<&str>) -> Harness {
    let (commands, mut receiver) = mpsc::channel::<Command>(16);
    let (snapshot, watch_receiver) = watch::channel(Arc::new(Snapshot {
        is_leader,
        leader: leader.map(str::to_string),
        ..Snapshot::default()
    }));
    let fake = Arc::new(Fake {
        snapshot,
        asked: Mutex::new(Vec::new()),
        runs: Mutex::new(0),
    });
    let worker = fake.clone();
    tokio::spawn(async move {
        while let Some(command) = receiver.recv().await {
            worker.handle(command);
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = CronConfig::new(vec!["127.0.0.1:5050".into()], addr);
    let ctx = ApiContext {
        controller: ControllerHandle::new(commands, watch_receiver),
        info: ApiInfo::new(&config, addr),
    };
    let app = router(ctx);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Harness { addr, fake }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

impl Harness {
    /// One HTTP/1.1 request on its own connection (`Connection: close`, so the
    /// answer ends where the stream does).
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let body = body.unwrap_or("");
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut answer = Answer {
            status,
            headers,
            text: String::new(),
        };
        let rest = &raw[split + 4..];
        let body = if answer.header("transfer-encoding") == Some("chunked") {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        answer.text = String::from_utf8(body).unwrap();
        answer
    }

    async fn json(&self, method: &str, path: &str, body: Value) -> Answer {
        self.call(method, path, Some(&body.to_string())).await
    }

    async fn create(&self, body: Value) -> Value {
        let answer = self.json("POST", "/v1/jobs", body).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json()
    }

    fn asked(&self) -> Vec<Asked> {
        self.fake.asked.lock().unwrap().clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.fake.snapshot.borrow().clone()
    }

    fn modify(&self, change: impl FnOnce(&mut Snapshot)) {
        self.fake.snapshot.send_modify(|s| {
            let mut next = (**s).clone();
            change(&mut next);
            *s = Arc::new(next);
        });
    }
}

/// The paths a 422 body names, in order.
fn paths(answer: &Answer) -> Vec<String> {
    answer.json()["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {}", answer.text))
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect()
}

fn job(id: &str) -> Value {
    json!({"id": id, "description": "a job", "run": {"cmd": "echo hi", "cpus": 0.5, "mem": 64}})
}

// The fields the `dcos-metronome` 0.3 client knows (its `metronome_pb2` models:
// JobSpec, JobSpec.RunSpec and its parts, ScheduleSpec, JobRun, JobRun.JobRunTask).
// It parses every response with protobuf's json_format, which refuses any other.
const JOB_KEYS: &[&str] = &["id", "description", "labels", "run"];
const RUN_SPEC_KEYS: &[&str] = &[
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
const PLACEMENT_KEYS: &[&str] = &["constraints"];
const CONSTRAINT_KEYS: &[&str] = &["attribute", "operator", "value"];
const ARTIFACT_KEYS: &[&str] = &["uri", "extract", "executable", "cache"];
const DOCKER_KEYS: &[&str] = &["image"];
const VOLUME_KEYS: &[&str] = &["containerPath", "hostPath", "mode"];
const RESTART_KEYS: &[&str] = &["policy", "activeDeadlineSeconds"];
const SCHEDULE_KEYS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "startingDeadlineSeconds",
    "concurrencyPolicy",
    "enabled",
    "nextRunAt",
];
const JOB_RUN_KEYS: &[&str] = &["id", "jobId", "status", "createdAt", "completedAt", "tasks"];
const TASK_KEYS: &[&str] = &["id", "startedAt", "completedAt", "status"];

fn assert_keys_within(value: &Value, allowed: &[&str]) {
    let keys: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let extra: Vec<_> = keys.iter().filter(|k| !allowed.contains(k)).collect();
    assert!(
        extra.is_empty(),
        "unknown to dcos-metronome: {extra:?} in {value}"
    );
}

fn each<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn assert_client_job(job: &Value) {
    assert_keys_within(job, JOB_KEYS);
    let run = &job["run"];
    assert_keys_within(run, RUN_SPEC_KEYS);
    assert_keys_within(&run["placement"], PLACEMENT_KEYS);
    each(&run["placement"], "constraints").for_each(|c| assert_keys_within(c, CONSTRAINT_KEYS));
    each(run, "artifacts").for_each(|a| assert_keys_within(a, ARTIFACT_KEYS));
    each(run, "volumes").for_each(|v| assert_keys_within(v, VOLUME_KEYS));
    if let Some(docker) = run.get("docker") {
        assert_keys_within(docker, DOCKER_KEYS);
    }
    assert_keys_within(&run["restart"], RESTART_KEYS);
}

fn assert_client_run(run: &Value) {
    assert_keys_within(run, JOB_RUN_KEYS);
    each(run, "tasks").for_each(|t| assert_keys_within(t, TASK_KEYS));
}

#[tokio::test]
async fn create_answers_201_with_metronome_defaults_and_get_returns_it() {
    let h = start().await;
    let created = h.create(job("prod.backup")).await;
    assert_eq!(
        created,
        json!({
            "id": "prod.backup",
            "description": "a job",
            "labels": {},
            "run": {
                "cpus": 0.5, "mem": 64.0, "disk": 0.0, "cmd": "echo hi", "env": {},
                "placement": {"constraints": []}, "artifacts": [], "maxLaunchDelay": 3600,
                "volumes": [], "restart": {"policy": "NEVER"}
            }
        })
    );
    let got = h.call("GET", "/v1/jobs/prod.backup", None).await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(got.json(), created);
    let list = h.call("GET", "/v1/jobs", None).await;
    assert_eq!(list.json(), json!([created]));
}

#[tokio::test]
async fn a_second_create_of_the_same_id_is_a_409() {
    let h = start().await;
    h.create(job("a")).await;
    let again = h.json("POST", "/v1/jobs", job("a")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.message(), "Job with this id already exists");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_in_json() {
    let h = start().await;
    for (method, path) in [
        ("POST", "/v1/jobs"),
        ("PUT", "/v1/jobs/a"),
        ("POST", "/v1/jobs/a/schedules"),
        ("PUT", "/v1/jobs/a/schedules/s"),
    ] {
        let answer = h.call(method, path, Some("{\"id\": ")).await;
        assert_eq!(answer.status, 400, "{method} {path}: {}", answer.text);
        assert_eq!(answer.message(), "Invalid JSON");
        assert_eq!(answer.json()["details"][0]["path"], "/");
    }
    assert!(h.snapshot().jobs.is_empty());
}

#[tokio::test]
async fn an_invalid_job_is_a_422_naming_the_field() {
    let h = start().await;
    let answer = h
        .json(
            "POST",
            "/v1/jobs",
            json!({"id": "a", "run": {"cmd": "x", "cpus": 0.001, "mem": "lots"}}),
        )
        .await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.json(),
        json!({
            "message": "Object is not valid",
            "details": [{"path": "/run/mem", "errors": ["error.expected.jsnumber"]}]
        })
    );
    let answer = h
        .json(
            "POST",
            "/v1/jobs",
            json!({"id": "Bad_Id", "run": {"cpus": 0.001}}),
        )
        .await;
    assert_eq!(answer.status, 422);
    assert_eq!(paths(&answer), ["/id", "/run/cpus", "/run"]);
    assert!(h.snapshot().jobs.is_empty());
}

#[tokio::test]
async fn embeds_add_active_runs_schedules_history_and_summary() {
    let h = start().await;
    let mut body = job("a");
    body["schedules"] = json!([{"id": "nightly", "cron": "0 2 * * *"}]);
    let created = h.create(body).await;
    // The created job is shown without its schedules (the client knows no such key).
    assert_client_job(&created);
    let ok = run("a", "r-ok", RunStatus::Success);
    h.modify(|s| {
        s.history.insert(
            "a".into(),
            History {
                success_count: 1,
                failure_count: 0,
                last_success_at: Some("2030-01-01T00:05:00.000+0000".into()),
                last_failure_at: None,
                successful_finished_runs: vec![Arc::new(JobRun {
                    completed_at: Some("2030-01-01T00:05:00.000+0000".into()),
                    ..ok
                })],
                failed_finished_runs: Vec::new(),
                missed: vec![MissedRun {
                    schedule_id: "nightly".into(),
                    scheduled_at: "2030-01-01T02:00:00.000+0000".into(),
                    reason: "downtime".into(),
                }],
            },
        );
    });
    let started = h.call("POST", "/v1/jobs/a/runs", None).await.json();

    let plain = h.call("GET", "/v1/jobs/a", None).await.json();
    assert_client_job(&plain);

    let all = h
        .call(
            "GET",
            "/v1/jobs/a?embed=activeRuns&embed=schedules&embed=history,historySummary",
            None,
        )
        .await
        .json();
    assert_eq!(all["activeRuns"], json!([started]));
    assert_eq!(
        all["schedules"],
        json!([{
            "id": "nightly", "cron": "0 2 * * *", "timezone": "UTC",
            "startingDeadlineSeconds": 900, "concurrencyPolicy": "ALLOW", "enabled": true,
            "nextRunAt": NEXT_RUN
        }])
    );
    assert_eq!(
        all["history"],
        json!({
            "successCount": 1, "failureCount": 0,
            "lastSuccessAt": "2030-01-01T00:05:00.000+0000", "lastFailureAt": null,
            "successfulFinishedRuns": [{
                "id": "r-ok", "createdAt": "2030-01-01T00:00:00.000+0000",
                "finishedAt": "2030-01-01T00:05:00.000+0000", "tasks": ["a_r-ok.task"],
                "scheduledAt": "2030-01-01T00:00:00.000+0000",
                "taskDetails": [{
                    "id": "a_r-ok.task", "startedAt": "2030-01-01T00:00:01.000+0000",
                    "completedAt": null, "status": "TASK_RUNNING", "exitCode": 0,
                    "agentId": "agent-1"
                }]
            }],
            "failedFinishedRuns": [],
            "missed": [{
                "scheduleId": "nightly", "scheduledAt": "2030-01-01T02:00:00.000+0000",
                "reason": "downtime"
            }]
        })
    );
    assert_eq!(
        all["historySummary"],
        json!({
            "successCount": 1, "failureCount": 0,
            "lastSuccessAt": "2030-01-01T00:05:00.000+0000", "lastFailureAt": null
        })
    );

    let listed = h
        .call("GET", "/v1/jobs?embed=historySummary", None)
        .await
        .json();
    assert_eq!(listed[0]["historySummary"], all["historySummary"]);
    assert!(listed[0].get("history").is_none());
    assert!(listed[0].get("activeRuns").is_none());

    // A job without any history yet shows zeros, not an absent key.
    h.create(job("b")).await;
    let fresh = h.call("GET", "/v1/jobs/b?embed=history", None).await.json();
    assert_eq!(fresh["history"]["successCount"], 0);
    assert_eq!(fresh["history"]["successfulFinishedRuns"], json!([]));
    assert_eq!(fresh["history"]["missed"], json!([]));

    // The client's own parameters are ignored, an unknown embed refused.
    let client = h
        .call(
            "GET",
            "/v1/jobs?activeRuns=true&schedules=true&history=false",
            None,
        )
        .await;
    assert_eq!(client.status, 200);
    client
        .json()
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_client_job);
    let bad = h.call("GET", "/v1/jobs/a?embed=tasks", None).await;
    assert_eq!(bad.status, 400);
    assert!(bad.message().contains("tasks"), "{}", bad.text);
}

#[tokio::test]
async fn schedules_can_be_created_read_replaced_and_deleted() {
    let h = start().await;
    h.create(job("a")).await;
    let base = "/v1/jobs/a/schedules";
    assert_eq!(h.call("GET", base, None).await.json(), json!([]));

    let created = h
        .json(
            "POST",
            base,
            json!({"id": "every-minute", "cron": "* * * * *", "startingDeadlineSeconds": 5}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    assert_keys_within(&created, SCHEDULE_KEYS);
    assert_eq!(created["startingDeadlineSeconds"], 5);
    assert_eq!(created["nextRunAt"], NEXT_RUN);

    let again = h
        .json(
            "POST",
            base,
            json!({"id": "every-minute", "cron": "* * * * *"}),
        )
        .await;
    assert_eq!(again.status, 409);

    let listed = h.call("GET", base, None).await.json();
    assert_eq!(listed, json!([created]));
    let one = h.call("GET", &format!("{base}/every-minute"), None).await;
    assert_eq!(one.json(), created);

    let replaced = h
        .json(
            "PUT",
            &format!("{base}/every-minute"),
            json!({"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "enabled": false}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    let replaced = replaced.json();
    assert_eq!(replaced["id"], "every-minute");
    assert_eq!(replaced["cron"], "*/5 * * * *");
    assert_eq!(replaced["timezone"], "Europe/Berlin");
    assert_eq!(replaced["enabled"], false);
    assert_eq!(h.snapshot().schedules["a"][0].timezone, "Europe/Berlin");

    let renamed = h
        .json(
            "PUT",
            &format!("{base}/every-minute"),
            json!({"id": "other", "cron": "* * * * *"}),
        )
        .await;
    assert_eq!(renamed.status, 422);
    assert_eq!(renamed.json()["details"][0]["path"], "/id");

    let invalid = h
        .json(
            "POST",
            base,
            json!({"id": "s2", "cron": "whenever", "concurrencyPolicy": "NEVER"}),
        )
        .await;
    assert_eq!(invalid.status, 422);
    assert_eq!(paths(&invalid), ["/cron", "/concurrencyPolicy"]);

    let missing = h
        .json("PUT", &format!("{base}/nope"), json!({"cron": "* * * * *"}))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.message(), "Schedule 'nope' does not exist");

    let deleted = h
        .call("DELETE", &format!("{base}/every-minute"), None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let gone = h.call("GET", &format!("{base}/every-minute"), None).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.message(), "Schedule 'every-minute' does not exist");
    let gone = h
        .call("DELETE", &format!("{base}/every-minute"), None)
        .await;
    assert_eq!(gone.status, 404);

    for path in ["/v1/jobs/nope/schedules", "/v1/jobs/nope/schedules/s"] {
        let answer = h.call("GET", path, None).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.message(), "Job 'nope' does not exist");
    }
    let answer = h
        .json(
            "POST",
            "/v1/jobs/nope/schedules",
            json!({"id": "s", "cron": "* * * * *"}),
        )
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn runs_start_list_read_and_stop() {
    let h = start().await;
    h.create(job("a")).await;
    let started = h.call("POST", "/v1/jobs/a/runs", None).await;
    assert_eq!(started.status, 201, "{}", started.text);
    let started = started.json();
    assert_eq!(
        started,
        json!({
            "id": "20300101000000run1", "jobId": "a", "status": "INITIAL",
            "createdAt": "2030-01-01T00:00:00.000+0000", "completedAt": null,
            "tasks": [{
                "id": "a_20300101000000run1.task", "startedAt": "2030-01-01T00:00:01.000+0000",
                "completedAt": null, "status": "TASK_RUNNING"
            }]
        })
    );

    let active = h.call("GET", "/v1/jobs/a/runs", None).await.json();
    assert_eq!(active, json!([started]));
    let one = h
        .call("GET", "/v1/jobs/a/runs/20300101000000run1", None)
        .await;
    assert_eq!(one.json(), started);

    let stopped = h
        .call(
            "POST",
            "/v1/jobs/a/runs/20300101000000run1/actions/stop",
            None,
        )
        .await;
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    let stopped = stopped.json();
    assert_client_run(&stopped);
    assert_eq!(stopped["status"], "FAILED");
    assert_eq!(stopped["tasks"][0]["status"], "TASK_KILLED");
    assert_eq!(
        h.asked(),
        [Asked::StopRun {
            id: "20300101000000run1".into()
        }]
    );

    // Finished, it is no longer active but still found, from the history.
    assert_eq!(
        h.call("GET", "/v1/jobs/a/runs", None).await.json(),
        json!([])
    );
    let finished = h
        .call("GET", "/v1/jobs/a/runs/20300101000000run1", None)
        .await;
    assert_eq!(finished.status, 200);
    assert_eq!(finished.json(), stopped);

    let unknown = h.call("GET", "/v1/jobs/a/runs/nope", None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.message(), "JobRun 'nope' does not exist");
    let unknown = h
        .call("POST", "/v1/jobs/a/runs/nope/actions/stop", None)
        .await;
    assert_eq!(unknown.status, 404);
    for (method, path) in [
        ("GET", "/v1/jobs/nope/runs"),
        ("POST", "/v1/jobs/nope/runs"),
        ("GET", "/v1/jobs/nope/runs/r"),
    ] {
        let answer = h.call(method, path, None).await;
        assert_eq!(answer.status, 404, "{method} {path}");
        assert_eq!(answer.message(), "Job 'nope' does not exist");
    }
}

#[tokio::test]
async fn delete_refuses_active_runs_unless_asked_to_stop_them() {
    let h = start().await;
    h.create(job("a")).await;
    h.call("POST", "/v1/jobs/a/runs", None).await;
    let refused = h.call("DELETE", "/v1/jobs/a", None).await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        refused.message(),
        "There are active job runs. Override with stopCurrentJobRuns=true"
    );
    let refused = h
        .call("DELETE", "/v1/jobs/a?stopCurrentJobRuns=false", None)
        .await;
    assert_eq!(refused.status, 409);
    assert!(h.snapshot().jobs.contains_key("a"));

    let deleted = h
        .call("DELETE", "/v1/jobs/a?stopCurrentJobRuns=true", None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_client_job(&deleted.json());
    assert_eq!(deleted.json()["id"], "a");
    assert!(!h.snapshot().jobs.contains_key("a"));
    assert_eq!(
        h.asked(),
        [
            Asked::DeleteJob {
                id: "a".into(),
                stop: false
            },
            Asked::DeleteJob {
                id: "a".into(),
                stop: false
            },
            Asked::DeleteJob {
                id: "a".into(),
                stop: true
            },
        ]
    );

    // Without active runs no flag is needed.
    h.create(job("b")).await;
    assert_eq!(h.call("DELETE", "/v1/jobs/b", None).await.status, 200);
    let bad_flag = h
        .call("DELETE", "/v1/jobs/b?stopCurrentJobRuns=maybe", None)
        .await;
    assert_eq!(bad_flag.status, 400);
}

#[tokio::test]
async fn put_replaces_a_job_and_keeps_its_schedules() {
    let h = start().await;
    let mut body = job("a");
    body["schedules"] = json!([{"id": "s", "cron": "* * * * *"}]);
    h.create(body).await;
    let replaced = h
        .json(
            "PUT",
            "/v1/jobs/a",
            json!({"run": {"cmd": "echo bye", "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 60}}}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    let replaced = replaced.json();
    assert_client_job(&replaced);
    assert_eq!(replaced["id"], "a");
    assert_eq!(replaced["run"]["cmd"], "echo bye");
    assert_eq!(replaced["run"]["restart"]["activeDeadlineSeconds"], 60);
    assert_eq!(h.snapshot().jobs["a"].run.cmd.as_deref(), Some("echo bye"));
    assert_eq!(h.snapshot().schedules["a"].len(), 1);

    let renamed = h.json("PUT", "/v1/jobs/a", job("b")).await;
    assert_eq!(renamed.status, 422);
    assert_eq!(renamed.json()["details"][0]["path"], "/id");
    let missing = h.json("PUT", "/v1/jobs/nope", job("nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.message(), "Job 'nope' does not exist");
}

#[tokio::test]
async fn unknown_jobs_and_paths_are_404s_in_json() {
    let h = start().await;
    for (method, path) in [("GET", "/v1/jobs/nope"), ("DELETE", "/v1/jobs/nope")] {
        let answer = h.call(method, path, None).await;
        assert_eq!(answer.status, 404, "{method} {path}");
        assert_eq!(answer.message(), "Job 'nope' does not exist");
    }
    let answer = h.call("GET", "/v1/nothing", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.message(), "Not found");
    let answer = h.call("PATCH", "/v1/jobs", None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.message(), "Method not allowed");
}

#[tokio::test]
async fn a_standby_redirects_to_the_leader_or_answers_503() {
    let h = start_as(false, Some("10.0.0.7:9000")).await;
    let answer = h.call("GET", "/v1/jobs?embed=history", None).await;
    assert_eq!(answer.status, 307);
    assert_eq!(
        answer.header("location"),
        Some("http://10.0.0.7:9000/v1/jobs?embed=history")
    );
    let answer = h.json("POST", "/v1/jobs/a/runs", json!({})).await;
    assert_eq!(answer.status, 307);
    assert_eq!(
        answer.header("location"),
        Some("http://10.0.0.7:9000/v1/jobs/a/runs")
    );
    let pong = h.call("GET", "/ping", None).await;
    assert_eq!((pong.status, pong.text.as_str()), (200, "pong"));
    let leader = h.call("GET", "/v1/leader", None).await;
    assert_eq!(leader.json(), json!({"leader": "10.0.0.7:9000"}));

    let h = start_as(false, None).await;
    let answer = h.call("GET", "/v1/jobs", None).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.message(), "Leader is unknown");
    assert_eq!(h.call("GET", "/ping", None).await.text, "pong");
    assert_eq!(h.call("GET", "/leader", None).await.status, 404);

    // Elected but still loading: itself named leader, it cannot redirect to itself.
    let h = start_as(false, None).await;
    let own = h.addr.to_string();
    h.modify(|s| s.leader = Some(own));
    assert_eq!(h.call("GET", "/v1/jobs", None).await.status, 503);
}

#[tokio::test]
async fn the_leader_answers_info_and_leader_itself() {
    let h = start().await;
    let info = h.call("GET", "/v1/info", None).await.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h.call("GET", "/info", None).await.json(), info);
    let leader = h.call("GET", "/leader", None).await.json();
    assert_eq!(leader, json!({"leader": h.addr.to_string()}));
}

#[tokio::test]
async fn default_responses_carry_only_fields_the_metronome_client_knows() {
    let h = start().await;
    let mut body = json!({
        "id": "full",
        "description": "everything the client knows",
        "labels": {"team": "ops"},
        "run": {
            "cpus": 0.1, "mem": 32, "disk": 1, "args": ["run.sh"], "user": "nobody",
            "env": {"A": "1"},
            "placement": {"constraints": [{"attribute": "rack", "operator": "EQ", "value": "r1"}]},
            "artifacts": [{"uri": "http://x/run.sh", "executable": true}],
            "maxLaunchDelay": 10,
            "docker": {"image": "busybox"},
            "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RW"}],
            "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 30}
        }
    });
    body["schedules"] = json!([{"id": "s", "cron": "0 * * * *"}]);
    let created = h.create(body).await;
    assert_client_job(&created);
    // Every nested object is present, so the check above looked at each of them.
    assert_eq!(created["run"]["docker"]["image"], "busybox");
    assert_eq!(created["run"]["volumes"][0]["mode"], "RW");

    assert_client_job(&h.call("GET", "/v1/jobs/full", None).await.json());
    h.call("GET", "/v1/jobs", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_client_job);
    h.call("GET", "/v1/jobs/full/schedules", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .for_each(|s| assert_keys_within(s, SCHEDULE_KEYS));
    assert_keys_within(
        &h.call("GET", "/v1/jobs/full/schedules/s", None)
            .await
            .json(),
        SCHEDULE_KEYS,
    );
    // The fake's runs carry every field of ours (trigger, attempts, exit code...).
    let started = h.call("POST", "/v1/jobs/full/runs", None).await.json();
    assert_client_run(&started);
    let run_id = started["id"].as_str().unwrap().to_string();
    h.call("GET", "/v1/jobs/full/runs", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_client_run);
    assert_client_run(
        &h.call("GET", &format!("/v1/jobs/full/runs/{run_id}"), None)
            .await
            .json(),
    );
    let stopped = h
        .call(
            "POST",
            &format!("/v1/jobs/full/runs/{run_id}/actions/stop"),
            None,
        )
        .await
        .json();
    assert_client_run(&stopped);
    let deleted = h.call("DELETE", "/v1/jobs/full", None).await.json();
    assert_client_job(&deleted);

    // Dependencies appear only when a job has them (the client does not know them).
    let parent = h.create(job("parent")).await;
    assert!(parent.get("dependencies").is_none());
    let mut child = job("child");
    child["dependencies"] = json!([{"id": "parent"}]);
    assert_eq!(
        h.create(child).await["dependencies"],
        json!([{"id": "parent"}])
    );
}
