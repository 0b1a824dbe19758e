//! `apps-bench`: how fast the apps framework brings up services, through its
//! Marathon API. Prints figures; asserts nothing about timing.
//!
//! ```text
//! cargo run --release -p agora-tests --bin apps-bench -- --agents 20 --apps 1000 --instances 10
//! ```
//!
//! What it does, all in this process:
//! 1. Starts one master and `--agents` (20) [`SimAgent`]s of `--agent-resources`
//!    (room for every instance, with 20,000 ports each): the real agent protocol
//!    over gRPC on loopback, no containers — a launched task reports TASK_RUNNING at
//!    once.
//! 2. Starts an apps instance ([`agora_apps::AppsServer`]) on 127.0.0.1:0 and waits
//!    until it leads and is subscribed.
//! 3. Latency: `--latency-samples` (50) times, POSTs a one-instance app to
//!    `/v2/apps` on the otherwise idle cluster and waits on `/v2/events` for its
//!    TASK_RUNNING; prints POST→RUNNING p50/p99/max. Each app is deleted again.
//! 4. Throughput: POSTs `--apps` (1000) apps of `--instances` (10) instances each
//!    (cpus 0.01, mem 1, one port each), `--clients` (16) requests at a time, and
//!    prints the time from the first POST until every agent holds all the tasks
//!    (launched), and until `/v2/apps` shows all of them running (polled every
//!    100 ms), the POSTs' own p50/p99, and the master's duplicate launches (must be 0).
//!
//! Flags: `--agents N --apps N --instances N --clients N --latency-samples N
//! --agent-resources R --timeout-secs N`. With `--apps-url HOST:PORT` it starts
//! nothing and measures only POST→RUNNING against that apps API — `agora dev`'s, for
//! real agents and executors with the process containerizer:
//!
//! ```text
//! cargo run --release -p agora -- dev &
//! cargo run --release -p agora-tests --bin apps-bench -- --apps-url 127.0.0.1:8080 --latency-samples 100
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_tests::{SimAgent, SimAgentConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

const RUN_AS_AGORA: &str = "AGORA_APPS_BENCH_RUN_AS_AGORA";
const SETUP_DEADLINE: Duration = Duration::from_secs(120);

struct Options {
    agents: usize,
    apps: usize,
    instances: usize,
    clients: usize,
    latency_samples: usize,
    agent_resources: String,
    timeout: Duration,
    /// Measure POST→RUNNING against a running apps API (e.g. `agora dev`'s, with
    /// real agents and the process containerizer) instead of starting a cluster.
    apps_url: Option<String>,
}

const USAGE: &str = "usage: apps-bench [--agents N] [--apps N] [--instances N] [--clients N] \
                     [--latency-samples N] [--agent-resources R] [--timeout-secs N] [--apps-url HOST:PORT]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            agents: 20,
            apps: 1000,
            instances: 10,
            clients: 16,
            latency_samples: 50,
            agent_resources: "cpus:1000;mem:1000000;disk:1000000;ports:[10000-29999]".into(),
            timeout: Duration::from_secs(600),
            apps_url: None,
        };
        while let Some((flag, value)) = agora_tests::bench::next_flag(&mut args, USAGE)? {
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|e| format!("{flag} {value}: {e}\n{USAGE}"))
            };
            match flag.as_str() {
                "--agents" => options.agents = number()?,
                "--apps" => options.apps = number()?,
                "--instances" => options.instances = number()?,
                "--clients" => options.clients = number()?.max(1),
                "--latency-samples" => options.latency_samples = number()?,
                "--agent-resources" => options.agent_resources = value,
                "--apps-url" => {
                    options.apps_url = Some(
                        value
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_string(),
                    )
                }
                "--timeout-secs" => options.timeout = Duration::from_secs(number()? as u64),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    agora_tests::bench::main("apps-bench", RUN_AS_AGORA, Options::parse, run)
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    agora_tests::http_exchange(addr, method, path, body).await
}

/// The `/v2/events` stream of status updates: each TASK_RUNNING's app id, as it comes.
async fn running_events(
    addr: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!(
        "GET /v2/events?event_type=status_update_event HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("subscribe to events: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(json) = line.split_once("data:").map(|(_, rest)| rest.trim()) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            if event["taskStatus"] == "TASK_RUNNING"
                && let Some(app) = event["appId"].as_str()
                && tx.send(app.to_string()).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
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

fn app_json(id: &str, instances: usize) -> String {
    serde_json::json!({
        "id": id,
        "cmd": "sleep 3600",
        "cpus": 0.01,
        "mem": 1.0,
        "instances": instances,
    })
    .to_string()
}

/// Sum of `tasksRunning` over every app in `/v2/apps`.
async fn running_total(addr: &str) -> Result<u64, String> {
    let (status, body) = request(addr, "GET", "/v2/apps", "").await?;
    if status != 200 {
        return Err(format!("GET /v2/apps: {status} {body}"));
    }
    let apps: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET /v2/apps: {e}"))?;
    Ok(apps["apps"]
        .as_array()
        .map(|apps| apps.iter().filter_map(|a| a["tasksRunning"].as_u64()).sum())
        .unwrap_or(0))
}

/// POSTs `samples` one-instance apps one after the other and prints how long each
/// took from the POST to its TASK_RUNNING on `/v2/events`; deletes each again.
async fn post_to_running(addr: &str, samples: usize, timeout: Duration) -> Result<(), String> {
    let mut events = running_events(addr).await?;
    let mut latencies = Vec::new();
    for n in 0..samples {
        let id = format!("/latency/app-{n}");
        let sent = Instant::now();
        let (status, body) = request(addr, "POST", "/v2/apps", &app_json(&id, 1)).await?;
        if status != 201 {
            return Err(format!("POST {id}: {status} {body}"));
        }
        let wait = async {
            while let Some(app) = events.recv().await {
                if app == id {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => latencies.push(sent.elapsed()),
            _ => return Err(format!("{id} never ran")),
        }
        let (status, body) =
            request(addr, "DELETE", &format!("/v2/apps{id}?force=true"), "").await?;
        if status != 200 {
            return Err(format!("DELETE {id}: {status} {body}"));
        }
    }
    println!(
        "POST→RUNNING over {} apps: p50 {}, p99 {}, max {}",
        latencies.len(),
        ms(percentile(&mut latencies, 0.5)),
        ms(percentile(&mut latencies, 0.99)),
        ms(percentile(&mut latencies, 1.0)),
    );
    Ok(())
}

async fn run(options: Options) -> Result<(), String> {
    if let Some(addr) = &options.apps_url {
        println!("apps-bench: POST→RUNNING against the apps API at {addr}");
        return post_to_running(addr, options.latency_samples, options.timeout).await;
    }
    println!(
        "apps-bench: {} agents ({}), latency over {} one-instance apps, then {} apps × {} instances, {} clients",
        options.agents,
        options.agent_resources,
        options.latency_samples,
        options.apps,
        options.instances,
        options.clients
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
        agents.push(SimAgent::start(config).map_err(|e| e.to_string())?);
    }
    for agent in &agents {
        tokio::time::timeout(SETUP_DEADLINE, agent.wait_registrations(1))
            .await
            .map_err(|_| "the agents did not all register".to_string())?;
    }

    let apps_config = agora_apps::AppsConfig::new(
        vec![master_addr.clone()],
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    );
    let apps = agora_apps::AppsServer::start(apps_config, quiet.clone())
        .await
        .map_err(|e| format!("the apps framework does not start: {e}"))?;
    let addr = apps.local_addr().to_string();
    let setup = Instant::now();
    loop {
        let (status, body) = request(&addr, "GET", "/v2/info", "").await?;
        if status == 200 && body.contains("frameworkId") && !body.contains("\"frameworkId\":null") {
            break;
        }
        if setup.elapsed() > SETUP_DEADLINE {
            return Err(format!(
                "the apps framework never subscribed: {status} {body}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. POST → RUNNING on an idle cluster.
    post_to_running(&addr, options.latency_samples, options.timeout).await?;
    // Let the latency apps' kills finish so the agents' task counts are clean.
    let launched_before: u64 = agents
        .iter()
        .map(|a| agora_tests::SimCounters::get(&a.counters().launched))
        .sum();

    // 2. Many apps at once.
    let total = (options.apps * options.instances) as u64;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(options.clients));
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..options.apps {
        let gate = gate.clone();
        let addr = addr.clone();
        let body = app_json(&format!("/bench/app-{n:04}"), options.instances);
        posts.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let sent = Instant::now();
            let (status, answer) = request(&addr, "POST", "/v2/apps", &body).await?;
            if status != 201 {
                return Err(format!("POST: {status} {answer}"));
            }
            Ok::<Duration, String>(sent.elapsed())
        });
    }
    let mut post_times = Vec::new();
    while let Some(done) = posts.join_next().await {
        post_times.push(done.map_err(|e| e.to_string())??);
    }
    let posted = started.elapsed();
    let mut launched_at = None;
    let running_at;
    loop {
        let launched: u64 = agents
            .iter()
            .map(|a| agora_tests::SimCounters::get(&a.counters().launched))
            .sum::<u64>()
            - launched_before;
        if launched_at.is_none() && launched >= total {
            launched_at = Some(started.elapsed());
        }
        let running = running_total(&addr).await?;
        if running >= total {
            running_at = started.elapsed();
            break;
        }
        if started.elapsed() > options.timeout {
            return Err(format!(
                "only {running} of {total} instances running after {:?} ({launched} launched)",
                options.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let duplicates: u64 = agents
        .iter()
        .map(|a| agora_tests::SimCounters::get(&a.counters().duplicate_launches))
        .sum();
    println!(
        "{} apps POSTed in {:.2} s (POST p50 {}, p99 {})",
        options.apps,
        posted.as_secs_f64(),
        ms(percentile(&mut post_times, 0.5)),
        ms(percentile(&mut post_times, 0.99)),
    );
    println!(
        "{total} instances: all launched on the agents after {:.2} s, all RUNNING in /v2/apps after {:.2} s; duplicate launches: {duplicates}",
        launched_at.unwrap_or(running_at).as_secs_f64(),
        running_at.as_secs_f64(),
    );
    apps.shutdown().await;
    for agent in agents {
        agent.stop().await;
    }
    master.shutdown().await;
    Ok(())
}
