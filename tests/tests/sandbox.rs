//! Sandboxes through the real binary: task output rotated by size and read back
//! with `agora logs` (also while following, across rotations), per-container usage
//! in `agora tasks --usage` and on the agent's `/metrics`, and garbage collection
//! of finished sandboxes that keeps the live ones.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use agora_proto as pb;
use agora_tests::requirements::require_runc;
use agora_tests::{
    TestFramework, eventually, http_get, kill_executor_sessions, node_bin, read_until, within,
};
use tokio::process::{Child, Command};

/// A master and agents as separate processes, in one temporary directory.
struct Processes {
    dir: tempfile::TempDir,
    master: String,
    children: Vec<Child>,
}

impl Processes {
    async fn start_master() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut master = Command::new(node_bin!())
            .args(["master", "--listen", "127.0.0.1:0", "--log-level", "info"])
            .arg("--data-dir")
            .arg(dir.path().join("master"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("agora master starts");
        let stderr = master.stderr.take().expect("piped stderr");
        let address = read_until(stderr, "master serving, address:").await;
        Self {
            dir,
            master: address,
            children: vec![master],
        }
    }

    /// Starts an agent with attribute `kind:<kind>` and `flags`; returns its work dir.
    fn start_agent(&mut self, kind: &str, flags: &[&str]) -> PathBuf {
        let work_dir = self.dir.path().join(format!("agent-{kind}"));
        let agent = Command::new(node_bin!())
            .args(["agent", "--master", &self.master, "--listen", "127.0.0.1:0"])
            .args([
                "--resources",
                "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            ])
            .args([
                "--attributes",
                &format!("kind:{kind}"),
                "--log-level",
                "error",
            ])
            .args(flags)
            .arg("--work-dir")
            .arg(&work_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("agora agent starts");
        self.children.push(agent);
        work_dir
    }

    /// Runs the CLI with `args` (and `--master`), returning (success, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = std::process::Command::new(node_bin!());
        command.args(args).args(["--master", &self.master]);
        let output = within(
            "the CLI",
            tokio::task::spawn_blocking(move || command.output().expect("the CLI runs")),
        )
        .await
        .expect("the CLI's thread");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The `host:port` the master reports for the agent of kind `kind`.
    async fn agent_endpoint(&self, kind: &str) -> String {
        let mut client =
            pb::operator_client::OperatorClient::connect(format!("http://{}", self.master))
                .await
                .expect("the master's operator API");
        let state = client
            .get_state(pb::GetStateRequest {})
            .await
            .expect("GetState")
            .into_inner();
        state
            .agents
            .iter()
            .filter_map(|a| a.agent_info.as_ref())
            .find(|info| {
                info.attributes
                    .iter()
                    .any(|a| a.name == "kind" && a.text == kind)
            })
            .map(|info| info.endpoint.clone())
            .expect("the agent is registered")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        kill_executor_sessions(self.dir.path());
    }
}

fn on(kind: &'static str) -> impl Fn(&pb::Offer) -> bool {
    move |offer| {
        offer
            .attributes
            .iter()
            .any(|a| a.name == "kind" && a.text == kind)
    }
}

/// The only run directory of executor `executor_id` under `work_dir`.
fn sandbox_of(work_dir: &Path, framework_id: &str, executor_id: &str) -> PathBuf {
    let runs = agora_agent::sandbox::executor_runs_dir(work_dir, framework_id, executor_id);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "one run in {}", runs.display());
    entries.remove(0)
}

/// `count` numbered lines as a shell loop prints them.
fn numbered(prefix: &str, count: usize) -> String {
    (0..count).map(|i| format!("{prefix} {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_rotated_and_read_back_with_agora_logs() {
    let mut cluster = Processes::start_master().await;
    // Small files so a few KiB rotate; with 2 rotated files kept the oldest go.
    let small = cluster.start_agent(
        "small",
        &[
            "--container-log-max-size",
            "1KB",
            "--container-log-max-files",
            "2",
            "--gc-disk-headroom",
            "0",
        ],
    );
    // As many rotated files as a follower could need: nothing is lost.
    cluster.start_agent(
        "roomy",
        &[
            "--container-log-max-size",
            "1KB",
            "--container-log-max-files",
            "100",
            "--gc-disk-headroom",
            "0",
        ],
    );
    let mut framework =
        TestFramework::start(&cluster.master, TestFramework::info("sandbox", 0.0)).await;
    let framework_id = framework.framework_id.value.clone();

    // 600 lines (5290 bytes): 5 full files and one of 170 bytes; 3 are kept.
    let script = "i=0; while [ $i -lt 600 ]; do echo \"line $i\"; i=$((i+1)); done; \
                  echo to-stderr >&2";
    framework
        .launch_shell_where("printer", script, on("small"))
        .await;
    let status = framework.wait_for_terminal("printer").await;
    assert_eq!(
        status.state,
        pb::TaskState::TaskFinished as i32,
        "{status:?}"
    );

    let sandbox = sandbox_of(&small, &framework_id, "printer");
    for file in ["stdout", "stdout.1", "stdout.2"] {
        let size = std::fs::metadata(sandbox.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(
            size <= 1024,
            "{file} has {size} bytes, more than the maximum"
        );
    }
    assert_eq!(
        std::fs::metadata(sandbox.join("stdout.1")).unwrap().len(),
        1024
    );
    assert!(
        !sandbox.join("stdout.3").exists(),
        "only --container-log-max-files rotated files are kept"
    );

    let expected = numbered("line", 600);
    let (ok, stdout, stderr) = cluster.cli(&["logs", "printer"]).await;
    assert!(ok, "agora logs: {stderr}");
    // What is still stored: the last 2048 + 170 bytes.
    assert_eq!(stdout, expected[expected.len() - 2218..], "{stderr}");
    assert!(stderr.contains("3072 bytes were rotated away"), "{stderr}");

    let (ok, stdout, stderr) = cluster.cli(&["logs", "printer", "--stderr"]).await;
    assert!(ok, "agora logs --stderr: {stderr}");
    assert!(stdout.contains("to-stderr\n"), "{stdout}");

    // A follower started with the task sees every line once, in order, although
    // the files rotate under it, and stops by itself once the task has ended.
    let script = "i=0; while [ $i -lt 200 ]; do echo \"follow $i\"; i=$((i+1)); \
                  if [ $((i % 50)) = 0 ]; then sleep 0.3; fi; done";
    framework
        .launch_shell_where("follower", script, on("roomy"))
        .await;
    framework
        .wait_for_state("follower", pb::TaskState::TaskRunning)
        .await;
    let (ok, stdout, stderr) = cluster.cli(&["logs", "follower", "--follow"]).await;
    assert!(ok, "agora logs --follow: {stderr}");
    assert_eq!(stdout, numbered("follow", 200), "{stderr}");
    framework.wait_for_terminal("follower").await;

    // A task the master does not know is a clear error.
    let (ok, _, stderr) = cluster.cli(&["logs", "no-such-task"]).await;
    assert!(!ok);
    assert!(stderr.contains("knows no task 'no-such-task'"), "{stderr}");

    // The agent refuses parameters that would leave the sandboxes.
    let endpoint = cluster.agent_endpoint("small").await;
    let (status, body) = http_get(
        &endpoint,
        &format!("/api/v1/logs?framework_id={framework_id}&task_id=..&offset=0"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("task_id"), "{body}");
    framework.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_usage_is_shown_by_agora_tasks_and_the_agents_metrics() {
    let mut cluster = Processes::start_master().await;
    cluster.start_agent("busy", &[]);
    let mut framework =
        TestFramework::start(&cluster.master, TestFramework::info("usage", 0.0)).await;
    framework
        .launch_shell_where("spinner", "while :; do :; done", on("busy"))
        .await;
    framework
        .wait_for_state("spinner", pb::TaskState::TaskRunning)
        .await;

    // The cpu time of a busy loop grows from 0; wait until it shows.
    let mut last = String::new();
    let mut figures = None;
    within("the spinner's usage", async {
        loop {
            let (ok, stdout, stderr) = cluster.cli(&["tasks", "--usage"]).await;
            assert!(ok, "agora tasks --usage: {stderr}");
            let header = stdout.lines().next().unwrap_or_default();
            assert!(
                header.contains("CPU-TIME") && header.contains("RSS"),
                "usage columns: {stdout}"
            );
            let row: Vec<&str> = stdout
                .lines()
                .find(|l| l.starts_with("spinner "))
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            // CPU-TIME is "1.23s", followed by RSS as "<number> <unit>".
            let usage = row.windows(3).find_map(|cells| {
                let cpu = cells[0].strip_suffix('s')?.parse::<f64>().ok()?;
                let rss = cells[1].parse::<f64>().ok()?;
                ["B", "KiB", "MiB", "GiB"]
                    .contains(&cells[2])
                    .then_some((cpu, rss))
            });
            last = stdout.clone();
            if let Some((cpu, rss)) = usage
                && cpu > 0.0
            {
                figures = Some((cpu, rss));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let (cpu, rss) = figures.unwrap_or_default();
    assert!(cpu > 0.0 && rss > 0.0, "{last}");

    let endpoint = cluster.agent_endpoint("busy").await;
    let (status, containers) = http_get(&endpoint, "/api/v1/containers").await;
    assert_eq!(status, 200);
    let containers: serde_json::Value =
        serde_json::from_str(&containers).expect("the container list is JSON");
    let spinner = containers
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["task_ids"].as_array().is_some_and(|t| t[0] == "spinner"))
        })
        .unwrap_or_else(|| panic!("the spinner's container: {containers}"));
    assert_eq!(spinner["executor_id"], "spinner");
    assert!(spinner["statistics"]["mem_rss_bytes"].as_u64() > Some(0));
    assert_eq!(spinner["statistics"]["cpus_limit"], 0.1);
    assert_eq!(
        spinner["statistics"]["mem_limit_bytes"].as_u64(),
        Some(32 * 1024 * 1024)
    );

    let (status, metrics) = http_get(&endpoint, "/metrics").await;
    assert_eq!(status, 200);
    let container_id = spinner["container_id"].as_str().unwrap_or_default();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("agora_agent_container_cpu_user_seconds{")
                && l.contains(&format!("container_id=\"{container_id}\""))
        })
        .unwrap_or_else(|| panic!("a cpu gauge for the spinner: {metrics}"));
    assert!(line.contains("executor_id=\"spinner\""), "{line}");
    assert!(
        metrics.contains("agora_agent_container_memory_rss_bytes{"),
        "{metrics}"
    );

    framework
        .handle
        .kill(
            pb::TaskId {
                value: "spinner".into(),
            },
            None,
        )
        .await
        .expect("KILL");
    framework.wait_for_terminal("spinner").await;
    framework.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sandboxes_are_collected_and_live_ones_kept() {
    let mut cluster = Processes::start_master().await;
    let work_dir = cluster.start_agent(
        "gc",
        &[
            "--gc-delay",
            "1s",
            "--disk-watch-interval",
            "100ms",
            "--gc-disk-headroom",
            "0",
        ],
    );
    let mut framework = TestFramework::start(&cluster.master, TestFramework::info("gc", 0.0)).await;
    let framework_id = framework.framework_id.value.clone();
    framework
        .launch_shell_where("long", "echo started; sleep 1000", on("gc"))
        .await;
    framework
        .wait_for_state("long", pb::TaskState::TaskRunning)
        .await;
    let live = sandbox_of(&work_dir, &framework_id, "long");

    framework
        .launch_shell_where("short", "echo done", on("gc"))
        .await;
    framework.wait_for_terminal("short").await;
    // Its sandbox (and the directories it leaves empty) go once older than the
    // delay; the live sandbox, older still, stays. (On a nearly full disk the
    // delay shrinks to nothing, so the sandbox may be gone already.)
    let finished = work_dir
        .join("frameworks")
        .join(&framework_id)
        .join("executors")
        .join("short");
    eventually("the finished sandbox to be collected", || {
        !finished.exists()
    })
    .await;
    assert!(
        live.join("stdout").exists(),
        "a live executor keeps its sandbox"
    );
    let endpoint = cluster.agent_endpoint("gc").await;
    let (_, metrics) = http_get(&endpoint, "/metrics").await;
    assert!(
        metrics.contains("agora_agent_sandboxes_collected_total 1"),
        "{metrics}"
    );
    framework.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_task_has_rotated_logs_and_cgroup_usage() {
    if require_runc().is_none() {
        return;
    }
    let mut cluster = Processes::start_master().await;
    let images = cluster.dir.path().join("images");
    let images = images.to_string_lossy().into_owned();
    cluster.start_agent(
        "oci",
        &[
            "--containerizers",
            "oci",
            "--image-store",
            &images,
            "--container-log-max-size",
            "1KB",
            "--gc-disk-headroom",
            "0",
        ],
    );
    let mut framework =
        TestFramework::start(&cluster.master, TestFramework::info("oci-usage", 0.0)).await;
    // 1490 bytes of output through the runtime's stdio, then a busy loop.
    let script = "i=0; while [ $i -lt 200 ]; do echo \"oci $i\"; i=$((i+1)); done; \
                  while :; do :; done";
    framework
        .launch_shell_where("contained", script, on("oci"))
        .await;
    framework
        .wait_for_state("contained", pb::TaskState::TaskRunning)
        .await;

    let expected = numbered("oci", 200);
    let mut logs = String::new();
    within("the container's output", async {
        while logs != expected {
            let (ok, stdout, stderr) = cluster.cli(&["logs", "contained"]).await;
            assert!(ok, "agora logs: {stderr}");
            assert!(expected.starts_with(&stdout), "{stdout}");
            logs = stdout;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    let endpoint = cluster.agent_endpoint("oci").await;
    within("the container's cpu time", async {
        loop {
            let (status, body) = http_get(&endpoint, "/api/v1/containers").await;
            assert_eq!(status, 200, "{body}");
            let containers: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let statistics = containers
                .as_array()
                .and_then(|all| all.first())
                .map(|c| c["statistics"].clone())
                .unwrap_or_else(|| panic!("one container: {body}"));
            let cpu = statistics["cpus_user_time_secs"].as_f64().unwrap_or(0.0)
                + statistics["cpus_system_time_secs"].as_f64().unwrap_or(0.0);
            if cpu > 0.0 && statistics["mem_rss_bytes"].as_u64() > Some(0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    framework
        .handle
        .kill(
            pb::TaskId {
                value: "contained".into(),
            },
            None,
        )
        .await
        .expect("KILL");
    framework.wait_for_terminal("contained").await;
    framework.stop().await;
}
