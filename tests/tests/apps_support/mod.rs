//! What the apps tests share: `agora dev`, `agora apps` and `agora agent` processes
//! and the addresses they print, the `agora app` CLI, and polling the apps API and
//! the master's state until they show what a scenario expects.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use agora_tests::{WAIT, http_get, node_bin, read_until, within};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// How often a poll looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Where the processes' logs go: the terminal with AGORA_TEST_LOG set, else nowhere.
pub fn log_sink() -> (Stdio, &'static str) {
    if std::env::var_os("AGORA_TEST_LOG").is_some() {
        (Stdio::inherit(), "info")
    } else {
        (Stdio::null(), "error")
    }
}

/// A running `agora dev` and the addresses its banner names.
pub struct Dev {
    pub child: Child,
    /// The master's `host:port`.
    pub master: String,
    /// The apps API's `host:port`; `None` with `--no-apps`.
    pub apps: Option<String>,
    /// The cron API's `host:port`; `None` with `--no-cron`.
    pub cron: Option<String>,
}

/// The `host:port` of the first `http://` URL in `line`.
fn address_in(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("http://")?;
    let address: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    (!address.is_empty()).then_some(address)
}

/// Starts `agora dev` on OS-chosen ports (the cron instance's too) under `data_dir`
/// with `extra` flags, and reads its banner.
pub async fn start_dev(data_dir: &Path, extra: &[&str]) -> Dev {
    let (logs, level) = log_sink();
    let mut child = Command::new(node_bin!())
        .args([
            "dev",
            "--port",
            "0",
            "--agent-port",
            "0",
            "--cron-port",
            "0",
            "--log-level",
            level,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .expect("agora dev starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let (mut master, mut apps, mut cron) = (None, None, None);
    within("agora dev's banner", async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("readable output")
                .expect("agora dev ended before its banner");
            if line.contains("web UI") {
                master = address_in(&line);
            } else if line.contains("apps API") {
                apps = address_in(&line);
            } else if line.contains("cron API") {
                cron = address_in(&line);
            } else if line.starts_with("Ctrl-C stops") {
                break;
            }
        }
    })
    .await;
    // The rest is read so agora dev never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Some(apps) = &apps {
        wait_leading(apps).await;
    }
    Dev {
        child,
        master: master.expect("the banner names the master"),
        apps,
        cron,
    }
}

/// Starts `agora apps` against `master` on an OS-chosen port; returns it and the
/// `host:port` it prints.
pub async fn start_apps(master: &str) -> (Child, String) {
    let (child, address) = start_apps_standby(master).await;
    wait_leading(&address).await;
    (child, address)
}

/// Starts `agora apps` against `master` and returns once it listens, leading or not
/// (a second instance stands by while another leads).
pub async fn start_apps_standby(master: &str) -> (Child, String) {
    start_apps_listening(master, &["--listen", "127.0.0.1:0"]).await
}

/// [`start_apps_standby`] with `listen` (`--listen` and `--advertise` flags) instead
/// of `--listen 127.0.0.1:0`.
pub async fn start_apps_listening(master: &str, listen: &[&str]) -> (Child, String) {
    let (logs, level) = log_sink();
    let mut child = Command::new(node_bin!())
        .args(["apps", "--master", master])
        .args(listen)
        // A restarted instance takes over once the killed one's lease lapses.
        .args(["--leader-lease", "2s", "--log-level", level])
        .stdout(Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .expect("agora apps starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let address = read_until(stdout, "apps listening on").await;
    (child, address)
}

/// Waits for the apps API at `apps` to serve (503 until an instance leads: at start,
/// and while a killed leader's lease lapses).
pub async fn wait_leading(apps: &str) {
    poll(&format!("the apps API at {apps} to serve"), || async {
        get_json(apps, "/v2/apps").await.map(|_| ())
    })
    .await
}

/// Starts `agora agent` against `master`, reporting `hostname`, offering the ports
/// `ports` (agents of one machine need ranges of their own).
pub fn start_agent(master: &str, hostname: &str, work_dir: &Path, ports: &str) -> Child {
    let (logs, level) = log_sink();
    Command::new(node_bin!())
        .args(["agent", "--master", master, "--listen", "127.0.0.1:0"])
        .args(["--hostname", hostname, "--log-level", level])
        .args([
            "--resources",
            &format!("cpus:2;mem:2048;disk:1000;ports:[{ports}]"),
        ])
        .arg("--work-dir")
        .arg(work_dir)
        .stdout(Stdio::null())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .expect("agora agent starts")
}

/// Sends `signal` to a process this test started.
pub fn signal(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a process this test started.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }
}

/// SIGTERMs `child` and asserts it exits cleanly.
pub async fn stop(mut child: Child, what: &str) {
    signal(&child, libc::SIGTERM);
    let status = within(&format!("{what} to stop"), child.wait())
        .await
        .expect("exit status");
    assert!(
        status.success(),
        "{what} exits cleanly on SIGTERM: {status:?}"
    );
}

/// SIGKILLs `child` and reaps it.
pub async fn kill(mut child: Child, what: &str) {
    signal(&child, libc::SIGKILL);
    within(&format!("{what} to die"), child.wait())
        .await
        .expect("exit status");
}

/// Runs the `agora` CLI with `args` (and `stdin`), as a user would.
pub async fn agora(args: &[&str], stdin: Option<&str>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(node_bin!())
            .args(&args)
            .env_remove("AGORA_APPS")
            .env_remove("AGORA_CRON")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agora binary runs");
        let mut pipe = child.stdin.take().expect("piped stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("the agora binary ends")
    })
    .await
    .expect("the CLI runs")
}

/// `agora app <args> --apps http://<apps>`, asserting it succeeds; returns stdout.
pub async fn app_cli(apps: &str, args: &[&str], stdin: Option<&str>) -> String {
    let url = format!("http://{apps}");
    let mut full = vec!["app"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--apps", &url]);
    let output = agora(&full, stdin).await;
    assert!(
        output.status.success(),
        "agora {full:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// GETs `path` from `addr` as JSON.
pub async fn get_json(addr: &str, path: &str) -> Result<Value, String> {
    let (status, body) = http_get(addr, path).await;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: not JSON ({e}): {body}"))
}

/// Polls `probe` until it returns `Ok`; fails the test after [`WAIT`] with `what` and
/// the last `Err` (what was seen instead).
pub async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The running tasks of `app_id` in the apps API (`/v2/apps/<id>/tasks`).
pub async fn running_tasks(apps: &str, app_id: &str) -> Result<Vec<Value>, String> {
    let body = get_json(apps, &format!("/v2/apps{app_id}/tasks")).await?;
    let tasks = body["tasks"]
        .as_array()
        .ok_or_else(|| format!("no tasks in {body}"))?;
    Ok(tasks
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .cloned()
        .collect())
}

/// Waits for `count` running tasks of `app_id` that `accept` (given their sorted
/// hosts) and no deployment of it; returns the tasks.
pub async fn wait_tasks(
    apps: &str,
    app_id: &str,
    count: usize,
    accept: impl Fn(&[String]) -> bool,
) -> Vec<Value> {
    poll(&format!("{count} running tasks of {app_id}"), || async {
        let tasks = running_tasks(apps, app_id).await?;
        let hosts = hosts(&tasks);
        let deployments = get_json(apps, "/v2/deployments").await?;
        let deploying = deployments.as_array().into_iter().flatten().any(|d| {
            d["affectedApps"]
                .as_array()
                .is_some_and(|a| a.iter().any(|id| id.as_str() == Some(app_id)))
        });
        if tasks.len() == count && accept(&hosts) && !deploying {
            Ok(tasks)
        } else {
            Err(format!(
                "{} tasks on {hosts:?}, deploying: {deploying}",
                tasks.len()
            ))
        }
    })
    .await
}

/// The tasks' hosts, sorted.
pub fn hosts(tasks: &[Value]) -> Vec<String> {
    let mut hosts: Vec<String> = tasks
        .iter()
        .map(|t| t["host"].as_str().unwrap_or_default().to_string())
        .collect();
    hosts.sort();
    hosts
}

/// The tasks' ids, sorted.
pub fn ids(tasks: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// The ids of the tasks the master knows as running whose id starts with `prefix`
/// (an app's tasks start with its name and a dot), sorted.
pub async fn master_running(master: &str, prefix: &str) -> Result<Vec<String>, String> {
    let state = get_json(master, "/api/v1/state").await?;
    let mut ids: Vec<String> = state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["task_id"]["value"].as_str())
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}

#[test]
fn addresses_are_read_from_urls() {
    assert_eq!(
        address_in("  web UI        http://127.0.0.1:5050/").as_deref(),
        Some("127.0.0.1:5050")
    );
    assert_eq!(
        address_in("  apps API      http://127.0.0.1:43211/v2/apps  (Marathon)").as_deref(),
        Some("127.0.0.1:43211")
    );
    assert_eq!(address_in("no url here"), None);
}
