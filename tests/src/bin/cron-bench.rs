//! `cron-bench`: how fast the cron framework runs jobs that all come due at the
//! same instant, through its Metronome API. Prints figures; asserts nothing about
//! timing (it fails only if runs go missing, fail, double or time out).
//!
//! ```text
//! cargo run --release -p agora-tests --bin cron-bench -- --agents 20 --jobs 10000
//! ```
//!
//! What it does, all in this process:
//! 1. Starts one master and `--agents` (20) [`SimAgent`]s of `--agent-resources`
//!    with `finish_tasks`: the real agent protocol over gRPC on loopback, no
//!    processes — a launched task reports TASK_RUNNING and then TASK_FINISHED at
//!    once, so what is measured is the framework and the master, not `true`.
//! 2. Starts a cron instance ([`agora_cron::CronServer`]) on 127.0.0.1:0.
//! 3. Picks an instant T, whole seconds, `--lead-secs` (60) ahead, and POSTs
//!    `--jobs` (10,000) jobs to `/v1/jobs`, `--clients` (16) at a time, each
//!    (`cmd` `true`, cpus 0.01, mem 32) with one inline schedule due exactly at T:
//!    the six-field cron `S M H D Mo *` in UTC (`--cron-fields 5`: the five-field
//!    `M H D Mo *`, T then on a whole minute).
//! 4. From T on, measures:
//!    - T → launched: every 1 ms it sums the agents' launch counters; each launch
//!      is stamped with the poll that first saw it (±1 ms). That is the moment the
//!      agent has the task and reports it RUNNING; it costs nothing the framework
//!      would notice and needs no clock but this process's.
//!    - T → RUNNING as the framework recorded it: each run's task `startedAt` from
//!      one `GET /v1/jobs?embed=history` after everything is done (a single listing
//!      instead of 10,000 run GETs while the runs happen; the cron instance is in
//!      this process, so its clock is ours). If the listing shows finished runs
//!      without task times (Metronome's own history form lists task ids only), it
//!      says so and uses `finishedAt`/`completedAt` instead, an upper bound.
//!    - T → all done: the latest run `completedAt`/`finishedAt` in that listing,
//!      and, as a cross-check from outside, when polling `embed=historySummary`
//!      (every 200 ms, only once every agent has seen every task acknowledged)
//!      first shows every job with one finished run. jobs/s = jobs / (T → all done).
//!
//!    Each job must have exactly one successful run; the agents must see no
//!    duplicate launch.
//! 5. Unless `--manual-runs 0`: the `sbatch` analogue — POSTs one run to
//!    `/v1/jobs/{id}/runs` of every job, `--clients` at a time, and prints the time
//!    from the first POST until the listing shows every job with a second
//!    successful run (polled every 200 ms), and jobs/s.
//!
//! Flags: `--agents N --jobs N --clients N --lead-secs N --cron-fields 5|6
//! --manual-runs 0|1 --agent-resources R --timeout-secs N`.
//!
//! The peer, Slurm on this machine: `tests/slurm/run-slurm-bench.sh`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use agora_tests::{SimAgent, SimAgentConfig, SimCounters};
use chrono::{DateTime, Datelike, Timelike, Utc};

use tokio::sync::Semaphore;

const RUN_AS_AGORA: &str = "AGORA_CRON_BENCH_RUN_AS_AGORA";
const SETUP_DEADLINE: Duration = Duration::from_secs(120);
/// How often the agents' launch counters are summed: the resolution of T → launched.
const LAUNCH_POLL: Duration = Duration::from_millis(1);
/// How often the API is asked whether everything is done.
const DONE_POLL: Duration = Duration::from_millis(200);
/// The longest any one request may take (a 10,000-job listing included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    agents: usize,
    jobs: usize,
    clients: usize,
    lead: Duration,
    cron_fields: u8,
    manual_runs: bool,
    agent_resources: String,
    timeout: Duration,
}

const USAGE: &str = "usage: cron-bench [--agents N] [--jobs N] [--clients N] [--lead-secs N] \
                     [--cron-fields 5|6] [--manual-runs 0|1] [--agent-resources R] [--timeout-secs N]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            agents: 20,
            jobs: 10_000,
            clients: 16,
            lead: Duration::from_secs(60),
            cron_fields: 6,
            manual_runs: true,
            agent_resources: "cpus:1000;mem:1000000;disk:1000000".into(),
            timeout: Duration::from_secs(600),
        };
        while let Some((flag, value)) = agora_tests::bench::next_flag(&mut args, USAGE)? {
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|e| format!("{flag} {value}: {e}\n{USAGE}"))
            };
            match flag.as_str() {
                "--agents" => options.agents = number()?.max(1),
                "--jobs" => options.jobs = number()?.max(1),
                "--clients" => options.clients = number()?.max(1),
                "--lead-secs" => options.lead = Duration::from_secs(number()? as u64),
                "--cron-fields" => match number()? {
                    5 => options.cron_fields = 5,
                    6 => options.cron_fields = 6,
                    _ => return Err(format!("--cron-fields is 5 or 6\n{USAGE}")),
                },
                "--manual-runs" => options.manual_runs = number()? != 0,
                "--agent-resources" => options.agent_resources = value,
                "--timeout-secs" => options.timeout = Duration::from_secs(number()? as u64),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    agora_tests::bench::main("cron-bench", RUN_AS_AGORA, Options::parse, run)
}

/// One HTTP/1.1 request on a fresh connection: (status, body). A server that
/// accepts but never answers is an error after [`REQUEST_TIMEOUT`], not a hang.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        agora_tests::http_exchange(addr, method, path, body),
    )
    .await
    .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn get_json(addr: &str, path: &str) -> Result<serde_json::Value, String> {
    let (status, body) = request(addr, "GET", path, "").await?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn summary(values: &mut [Duration]) -> String {
    format!(
        "p50 {}, p99 {}, max {} (n = {})",
        ms(percentile(values, 0.5)),
        ms(percentile(values, 0.99)),
        ms(percentile(values, 1.0)),
        values.len()
    )
}

/// The cron expression due exactly at `at` (and then not again for a year).
fn cron_at(at: DateTime<Utc>, fields: u8) -> String {
    let (minute, hour, day, month) = (at.minute(), at.hour(), at.day(), at.month());
    if fields == 5 {
        format!("{minute} {hour} {day} {month} *")
    } else {
        format!("{} {minute} {hour} {day} {month} *", at.second())
    }
}

fn job_json(id: &str, cron: &str) -> String {
    serde_json::json!({
        "id": id,
        "description": "cron-bench",
        "run": { "cmd": "true", "cpus": 0.01, "mem": 32, "disk": 0 },
        "schedules": [{
            "id": "at-t",
            "cron": cron,
            "timezone": "UTC",
            "concurrencyPolicy": "ALLOW",
            "enabled": true,
        }],
    })
    .to_string()
}

fn job_id(n: usize) -> String {
    format!("bench-{n:05}")
}

/// Sums one counter over every agent.
fn total(agents: &[SimAgent], counter: impl Fn(&SimCounters) -> u64) -> u64 {
    agents.iter().map(|a| counter(a.counters())).sum()
}

/// The instant of a wall-clock time on this process's monotonic clock.
fn instant_of(at: DateTime<Utc>) -> Instant {
    let at = SystemTime::from(at);
    let now_wall = SystemTime::now();
    let now = Instant::now();
    match at.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

/// Stamps launches on the agents as they happen: every [`LAUNCH_POLL`] sums the
/// counters and records, for each launch new since the last poll, its delay after
/// `due` (zero if before it; those are counted apart as early).
fn watch_launches(
    agents: Arc<Vec<SimAgent>>,
    from: u64,
    expected: u64,
    due: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Duration>, u64)> {
    tokio::spawn(async move {
        let mut seen = from;
        let mut delays = Vec::with_capacity(expected as usize);
        let mut early = 0;
        let mut tick = tokio::time::interval(LAUNCH_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while seen < from + expected && !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = Instant::now();
            let launched = total(&agents, |c| SimCounters::get(&c.launched));
            for _ in seen..launched {
                match now.checked_duration_since(due) {
                    Some(delay) => delays.push(delay),
                    None => early += 1,
                }
            }
            seen = seen.max(launched);
        }
        (delays, early)
    })
}

/// Finished runs of every job in `GET /v1/jobs?embed=history`.
struct History {
    /// Per job: (success count, failure count).
    counts: HashMap<String, (u64, u64)>,
    /// Per finished successful run: when its task started, if the listing says.
    started: Vec<DateTime<Utc>>,
    /// Per finished run: when it finished.
    finished: Vec<DateTime<Utc>>,
}

fn timestamp(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn history(addr: &str) -> Result<History, String> {
    let jobs = get_json(addr, "/v1/jobs?embed=history").await?;
    let jobs = jobs
        .as_array()
        .ok_or("GET /v1/jobs?embed=history: not a list")?;
    let mut out = History {
        counts: HashMap::new(),
        started: Vec::new(),
        finished: Vec::new(),
    };
    for job in jobs {
        let Some(id) = job["id"].as_str() else {
            continue;
        };
        let history = &job["history"];
        out.counts.insert(
            id.to_string(),
            (
                history["successCount"].as_u64().unwrap_or(0),
                history["failureCount"].as_u64().unwrap_or(0),
            ),
        );
        for run in history["successfulFinishedRuns"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(t) =
                timestamp(&run["completedAt"]).or_else(|| timestamp(&run["finishedAt"]))
            {
                out.finished.push(t);
            }
            // Agora's history lists the tasks themselves in `taskDetails`
            // (Metronome's `tasks` holds only their ids).
            let tasks = if run["taskDetails"].is_array() {
                &run["taskDetails"]
            } else {
                &run["tasks"]
            };
            let first_start = tasks
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|task| timestamp(&task["startedAt"]))
                .min();
            if let Some(t) = first_start {
                out.started.push(t);
            }
        }
    }
    Ok(out)
}

/// How many jobs show at least `runs` finished runs (successful or not), from the
/// cheap `embed=historySummary` listing.
async fn jobs_with_finished_runs(addr: &str, runs: u64) -> Result<usize, String> {
    let jobs = get_json(addr, "/v1/jobs?embed=historySummary").await?;
    Ok(jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|job| {
            let summary = if job["historySummary"].is_object() {
                &job["historySummary"]
            } else {
                &job["history"]
            };
            summary["successCount"].as_u64().unwrap_or(0)
                + summary["failureCount"].as_u64().unwrap_or(0)
                >= runs
        })
        .count())
}

/// Polls until every job shows `runs` finished runs; the time since `since`.
async fn until_all_finished(
    addr: &str,
    jobs: usize,
    runs: u64,
    since: Instant,
    timeout: Duration,
) -> Result<Duration, String> {
    loop {
        let done = jobs_with_finished_runs(addr, runs).await?;
        if done >= jobs {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            return Err(format!(
                "only {done} of {jobs} jobs show {runs} finished run(s) after {timeout:?}"
            ));
        }
        tokio::time::sleep(DONE_POLL).await;
    }
}

/// POSTs `bodies` to `path(n)`, `clients` at a time; each must answer `expect`.
/// Returns each request's own duration.
async fn post_all(
    addr: &str,
    clients: usize,
    requests: Vec<(String, String)>,
    expect: u16,
) -> Result<Vec<Duration>, String> {
    let gate = Arc::new(Semaphore::new(clients));
    let mut posts = tokio::task::JoinSet::new();
    for (path, body) in requests {
        let gate = gate.clone();
        let addr = addr.to_string();
        posts.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let sent = Instant::now();
            let (status, answer) = request(&addr, "POST", &path, &body).await?;
            if status != expect {
                return Err(format!("POST {path}: {status} {answer}"));
            }
            Ok::<Duration, String>(sent.elapsed())
        });
    }
    let mut times = Vec::new();
    while let Some(done) = posts.join_next().await {
        times.push(done.map_err(|e| e.to_string())??);
    }
    Ok(times)
}

/// Waits until the cron instance answers `/v1/jobs` (it leads and has loaded its state).
async fn until_ready(addr: &str) -> Result<(), String> {
    let setup = Instant::now();
    loop {
        let answer = request(addr, "GET", "/v1/jobs", "").await;
        match answer {
            Ok((200, _)) => return Ok(()),
            Ok(_) | Err(_) if setup.elapsed() < SETUP_DEADLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok((status, body)) => {
                return Err(format!("the cron API never became ready: {status} {body}"));
            }
            Err(e) => return Err(format!("the cron API never became ready: {e}")),
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    println!(
        "cron-bench: {} agents ({}), {} jobs due at one instant, {} clients",
        options.agents, options.agent_resources, options.jobs, options.clients
    );
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("a port for the master: {e}"))?;
    let quiet = slog::Logger::root(slog::Discard, slog::o!());
    let config = agora_master::MasterConfig::new(dir.path().join("master"), quiet.clone());
    let master = agora_master::Master::start(config, listener)
        .await
        .map_err(|e| format!("the master does not start: {e}"))?;
    tokio::time::timeout(SETUP_DEADLINE, master.until_leading())
        .await
        .map_err(|_| "the master never led".to_string())?;
    let master_addr = master.local_addr().to_string();

    let mut agents = Vec::new();
    for n in 0..options.agents {
        let mut config = SimAgentConfig::new(vec![master_addr.clone()], &options.agent_resources)
            .map_err(|e| e.to_string())?;
        config.hostname = format!("sim-{n:03}");
        config.finish_tasks = true;
        agents.push(SimAgent::start(config).map_err(|e| e.to_string())?);
    }
    for agent in &agents {
        tokio::time::timeout(SETUP_DEADLINE, agent.wait_registrations(1))
            .await
            .map_err(|_| "the agents did not all register".to_string())?;
    }
    let agents = Arc::new(agents);

    let cron_config = agora_cron::CronConfig::new(
        vec![master_addr.clone()],
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    );
    let cron = agora_cron::CronServer::start(cron_config, quiet.clone())
        .await
        .map_err(|e| format!("the cron framework does not start: {e}"))?;
    let addr = cron.local_addr().to_string();
    until_ready(&addr).await?;

    // 1. Every job, one schedule, all due at T.
    let jobs = options.jobs;
    let n = jobs as u64;
    let now = Utc::now();
    let mut due = now + chrono::Duration::from_std(options.lead).map_err(|e| e.to_string())?;
    due = due.with_nanosecond(0).ok_or("no whole second")? + chrono::Duration::seconds(1);
    if options.cron_fields == 5 {
        while due.second() != 0 {
            due += chrono::Duration::seconds(1);
        }
    }
    let cron_expr = cron_at(due, options.cron_fields);
    let due_at = instant_of(due);
    println!(
        "T = {} (cron \"{cron_expr}\" UTC), {:.1} s ahead",
        due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        due_at
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    );
    let launched_before = total(&agents, |c| SimCounters::get(&c.launched));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_launches(agents.clone(), launched_before, n, due_at, stop.clone());

    let created = Instant::now();
    let posts = (0..jobs)
        .map(|i| ("/v1/jobs".to_string(), job_json(&job_id(i), &cron_expr)))
        .collect();
    let mut post_times = post_all(&addr, options.clients, posts, 201).await?;
    let creation = created.elapsed();
    println!(
        "{jobs} jobs POSTed in {:.2} s ({:.0}/s; POST {})",
        creation.as_secs_f64(),
        n as f64 / creation.as_secs_f64(),
        summary(&mut post_times)
    );
    if Instant::now() + Duration::from_millis(500) > due_at {
        stop.store(true, Ordering::Relaxed);
        return Err(format!(
            "creating the jobs took until {:.1} s before T or later: raise --lead-secs",
            due_at
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        ));
    }
    let launched_early = total(&agents, |c| SimCounters::get(&c.launched)) - launched_before;
    if launched_early > 0 {
        println!("warning: {launched_early} tasks launched before T");
    }

    // 2. T → launched, and T → all done.
    tokio::time::sleep_until(due_at.into()).await;
    let launches = tokio::time::timeout(options.timeout, watcher);
    let (mut launch_delays, early) = match launches.await {
        Ok(joined) => joined.map_err(|e| e.to_string())?,
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            let launched = total(&agents, |c| SimCounters::get(&c.launched)) - launched_before;
            return Err(format!(
                "only {launched} of {jobs} tasks launched {:?} after T",
                options.timeout
            ));
        }
    };
    let all_launched = due_at.elapsed();
    // Every task's RUNNING and FINISHED acknowledged: the framework has both.
    let acked_target = total(&agents, |c| SimCounters::get(&c.launched)) * 2;
    while total(&agents, |c| SimCounters::get(&c.acknowledged)) < acked_target {
        if due_at.elapsed() > options.timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_acked = due_at.elapsed();
    let all_done_polled = until_all_finished(&addr, jobs, 1, due_at, options.timeout).await?;

    let listing = history(&addr).await?;
    let mut wrong = Vec::new();
    for i in 0..jobs {
        let id = job_id(i);
        match listing.counts.get(&id) {
            Some((1, 0)) => {}
            other => wrong.push(format!("{id}: {other:?}")),
        }
    }
    let to_delay = |t: &DateTime<Utc>| (*t - due).to_std().unwrap_or(Duration::ZERO);
    let mut running: Vec<Duration> = listing.started.iter().map(to_delay).collect();
    let mut finished: Vec<Duration> = listing.finished.iter().map(to_delay).collect();
    let duplicates = total(&agents, |c| SimCounters::get(&c.duplicate_launches));

    println!(
        "T → launched on the agents: {}{}",
        summary(&mut launch_delays),
        if early > 0 {
            format!(", {early} before T")
        } else {
            String::new()
        }
    );
    if running.is_empty() {
        println!(
            "T → RUNNING (task startedAt): not in the history listing; T → finished run instead: {}",
            summary(&mut finished)
        );
    } else {
        println!(
            "T → RUNNING (task startedAt in the history): {}",
            summary(&mut running)
        );
        println!("T → run finished (completedAt): {}", summary(&mut finished));
    }
    let last_finished = percentile(&mut finished, 1.0);
    let all_done = if finished.len() == jobs {
        last_finished
    } else {
        all_done_polled
    };
    println!(
        "T → all launched {:.2} s, all acknowledged {:.2} s, all done {:.2} s \
         (latest completedAt; the API's listing showed it at {:.2} s, polled every {} ms): \
         {:.0} jobs/s; duplicate launches: {duplicates}",
        all_launched.as_secs_f64(),
        all_acked.as_secs_f64(),
        all_done.as_secs_f64(),
        all_done_polled.as_secs_f64(),
        DONE_POLL.as_millis(),
        n as f64 / all_done.as_secs_f64().max(f64::EPSILON),
    );
    if !wrong.is_empty() {
        return Err(format!(
            "{} jobs without exactly one successful run (successCount, failureCount), e.g. {}",
            wrong.len(),
            wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    if duplicates > 0 {
        return Err(format!("{duplicates} duplicate launches"));
    }

    // 3. The sbatch analogue: one run of every job, asked for now.
    if options.manual_runs {
        let started = Instant::now();
        let posts = (0..jobs)
            .map(|i| (format!("/v1/jobs/{}/runs", job_id(i)), String::new()))
            .collect();
        let mut post_times = post_all(&addr, options.clients, posts, 201).await?;
        let posted = started.elapsed();
        let done = until_all_finished(&addr, jobs, 2, started, options.timeout).await?;
        println!(
            "manual runs: {jobs} POST /v1/jobs/{{id}}/runs in {:.2} s (POST {}); first POST → all done {:.2} s \
             (polled every {} ms): {:.0} jobs/s",
            posted.as_secs_f64(),
            summary(&mut post_times),
            done.as_secs_f64(),
            DONE_POLL.as_millis(),
            n as f64 / done.as_secs_f64().max(f64::EPSILON),
        );
    }

    cron.shutdown().await;
    if let Ok(agents) = Arc::try_unwrap(agents) {
        for agent in agents {
            agent.stop().await;
        }
    }
    master.shutdown().await;
    Ok(())
}
