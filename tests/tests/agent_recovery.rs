//! An agent process SIGKILLed while its tasks run, and started again on the same
//! work dir: with the default `--recover=reconnect` it re-registers with the same
//! id and reattaches to its executors (the built-in command executor and a custom
//! one), whose tasks keep running with the same pids; updates produced while it was
//! down are delivered; a task whose executor died meanwhile is reported FAILED with
//! the reason. With `--recover=cleanup` it shuts every executor down instead.
//!
//! Covered elsewhere: the master's view of an agent that stays dead
//! (`failover.rs`: `an_agent_killed_with_sigkill_makes_its_tasks_unreachable`) and
//! of one that comes back after its tasks were relaunched elsewhere
//! (`an_agent_back_with_a_task_relaunched_elsewhere_has_its_copy_killed`).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, TestCluster, TestFramework, eventually, fast_timings, node_bin, parent_pid,
    process_alive, read_pid, within,
};

/// A real `agora agent` process on a fixed port (executors find a restarted agent
/// at the address they were given).
struct AgentProcess {
    child: Child,
    port: u16,
    work_dir: PathBuf,
}

impl AgentProcess {
    /// Starts an agent on a port the OS picked once.
    fn start(cluster: &TestCluster, work_dir: PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(cluster, work_dir, port, &[])
    }

    fn start_on(cluster: &TestCluster, work_dir: PathBuf, port: u16, extra: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.data_dir().join("agent.log"))
            .expect("the agent's log file");
        let child = std::process::Command::new(node_bin!())
            .args(["agent", "--master", &cluster.master_addr])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--work-dir")
            .arg(&work_dir)
            .args([
                "--resources",
                "cpus:4;mem:4096;disk:1000;ports:[31000-31010]",
                "--status-update-retry-min",
                "200ms",
                "--status-update-retry-max",
                "2s",
                "--kill-grace",
                "1s",
                // Mesos' 2 s is too close on a machine running every test at once.
                "--executor-reregistration-timeout",
                "30s",
                "--log-level",
                "debug",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the agent process starts");
        Self {
            child,
            port,
            work_dir,
        }
    }

    /// SIGKILLs the agent and reaps it.
    fn kill(mut self) -> (PathBuf, u16) {
        self.child.kill().expect("SIGKILL the agent");
        let _ = self.child.wait();
        (self.work_dir.clone(), self.port)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of the ACTIVE agent serving on `port`, once there is one.
async fn active_agent(cluster: &TestCluster, port: u16) -> String {
    let endpoint = format!("127.0.0.1:{port}");
    within("the agent to be ACTIVE", async {
        loop {
            let state = cluster.state().await;
            let found = state.agents.iter().find_map(|a| {
                let info = a.agent_info.as_ref()?;
                (a.status == "ACTIVE" && info.endpoint == endpoint)
                    .then(|| info.id.as_ref().map(|i| i.value.clone()))
                    .flatten()
            });
            if let Some(id) = found {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The master tolerates a silent agent for 30 s, so that a restart within a test is
/// a reconnection, not a partition.
async fn patient_cluster() -> TestCluster {
    let mut timings = fast_timings();
    timings.max_missed_pings = 300;
    timings.agent_reregister_timeout = Duration::from_secs(30);
    ClusterBuilder::new(node_bin!())
        .agents(0)
        .timings(timings)
        .start()
        .await
}

/// The echo executor (see `custom_executor.rs`).
fn echo_executor() -> pb::ExecutorInfo {
    let bin = env!("CARGO_BIN_EXE_agora-echo-executor").to_string();
    agora_echo_executor::executor_info(&[bin])
}

/// What one test task is: run by the command executor or by the echo executor.
enum Runner {
    Command,
    Echo,
}

/// Launches every task with one offer of the agent.
async fn launch_all(fw: &mut TestFramework, tasks: &[(&str, Runner, String)]) {
    fw.launch_on_first_offer(|room| {
        tasks
            .iter()
            .map(|(id, runner, cmd)| {
                let builder = agora_sdk::TaskBuilder::new(*id)
                    .shell(cmd.clone())
                    .cpus(0.1)
                    .mem(16.0);
                let mut task = room.take(&builder).expect("the task fits");
                if let Runner::Echo = runner {
                    task.command = None;
                    task.executor = Some(echo_executor());
                    task.data = cmd.clone().into_bytes();
                }
                task
            })
            .collect()
    })
    .await;
}

/// Writes its pid, then runs until killed.
fn long_running(dir: &Path, name: &str) -> String {
    format!(
        "echo $$ > {}; exec sleep 1000",
        dir.join(format!("{name}.pid")).display()
    )
}

/// Writes its pid, then exits 0 once the file `<name>.go` exists.
fn until_told(dir: &Path, name: &str) -> String {
    let go = dir.join(format!("{name}.go"));
    format!(
        "echo $$ > {}; while [ ! -e {} ]; do sleep 0.05; done",
        dir.join(format!("{name}.pid")).display(),
        go.display()
    )
}

async fn pid_of(dir: &Path, name: &str) -> i32 {
    read_pid(&dir.join(format!("{name}.pid"))).await
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a process this test's agent started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_restarted_on_its_work_dir_reattaches_to_its_executors() {
    let cluster = patient_cluster().await;
    let dir = cluster.data_dir().to_path_buf();
    let agent = AgentProcess::start(&cluster, dir.join("agent"));
    let agent_id = active_agent(&cluster, agent.port).await;
    let mut fw = TestFramework::start(
        &cluster.master_addr,
        TestFramework::info("survivor", 3600.0),
    )
    .await;
    launch_all(
        &mut fw,
        &[
            ("cmd-long", Runner::Command, long_running(&dir, "cmd-long")),
            ("cmd-done", Runner::Command, until_told(&dir, "cmd-done")),
            (
                "cmd-orphan",
                Runner::Command,
                long_running(&dir, "cmd-orphan"),
            ),
            ("echo-long", Runner::Echo, long_running(&dir, "echo-long")),
            ("echo-done", Runner::Echo, until_told(&dir, "echo-done")),
        ],
    )
    .await;
    let names = [
        "cmd-long",
        "cmd-done",
        "cmd-orphan",
        "echo-long",
        "echo-done",
    ];
    for name in names {
        fw.wait_for_state(name, pb::TaskState::TaskRunning).await;
    }
    let mut pids = std::collections::HashMap::new();
    for name in names {
        pids.insert(name, pid_of(&dir, name).await);
    }
    let orphan_executor = parent_pid(pids["cmd-orphan"]).expect("the orphan's executor");
    let echo_executor_pid = parent_pid(pids["echo-long"]).expect("the echo executor");
    assert_eq!(parent_pid(pids["echo-done"]), Some(echo_executor_pid));

    let (work_dir, port) = agent.kill();
    // While the agent is down: two tasks end (their executors keep the updates),
    // and one executor dies.
    for name in ["cmd-done", "echo-done"] {
        std::fs::write(dir.join(format!("{name}.go")), b"").expect("the go file");
    }
    sigkill(orphan_executor);
    eventually("the told tasks and the orphan's executor to end", || {
        !process_alive(pids["cmd-done"])
            && !process_alive(pids["echo-done"])
            && !process_alive(orphan_executor)
    })
    .await;

    let _agent = AgentProcess::start_on(&cluster, work_dir, port, &[]);
    assert_eq!(
        active_agent(&cluster, port).await,
        agent_id,
        "the agent re-registered with its id"
    );
    for name in ["cmd-done", "echo-done"] {
        let finished = fw.wait_for_terminal(name).await;
        assert_eq!(
            finished.state(),
            pb::TaskState::TaskFinished,
            "the update made while the agent was down arrives: {finished:?}"
        );
    }
    let orphan = fw.wait_for_terminal("cmd-orphan").await;
    assert_eq!(orphan.state(), pb::TaskState::TaskFailed, "{orphan:?}");
    assert_eq!(
        orphan.reason(),
        pb::task_status::Reason::ExecutorTerminated,
        "{orphan:?}"
    );
    eventually("the orphaned task to be swept up", || {
        !process_alive(pids["cmd-orphan"])
    })
    .await;

    // The others run on, the same processes under the same executors.
    for name in ["cmd-long", "echo-long"] {
        assert!(process_alive(pids[name]), "{name} survived the agent");
    }
    assert_eq!(parent_pid(pids["echo-long"]), Some(echo_executor_pid));
    let state = cluster.state().await;
    for name in ["cmd-long", "echo-long"] {
        let task = state
            .tasks
            .iter()
            .find(|t| t.task_id.as_ref().is_some_and(|id| id.value == name))
            .unwrap_or_else(|| panic!("{name} is known to the master"));
        assert_eq!(task.state(), pb::TaskState::TaskRunning, "{task:?}");
    }
    // And the reattached executors still obey.
    let agent = pb::AgentId { value: agent_id };
    for name in ["cmd-long", "echo-long"] {
        fw.handle
            .kill(pb::TaskId { value: name.into() }, Some(agent.clone()))
            .await
            .expect("KILL");
        let killed = fw.wait_for_terminal(name).await;
        assert_eq!(killed.state(), pb::TaskState::TaskKilled, "{killed:?}");
        assert!(!process_alive(pids[name]));
    }
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_cleanup_shuts_every_executor_down() {
    let cluster = patient_cluster().await;
    let dir = cluster.data_dir().to_path_buf();
    let agent = AgentProcess::start(&cluster, dir.join("agent"));
    let agent_id = active_agent(&cluster, agent.port).await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("cleaned", 3600.0)).await;
    launch_all(
        &mut fw,
        &[
            ("cmd-long", Runner::Command, long_running(&dir, "cmd-long")),
            ("echo-long", Runner::Echo, long_running(&dir, "echo-long")),
        ],
    )
    .await;
    let mut pids = Vec::new();
    for name in ["cmd-long", "echo-long"] {
        fw.wait_for_state(name, pb::TaskState::TaskRunning).await;
        let pid = pid_of(&dir, name).await;
        pids.push((pid, parent_pid(pid).expect("its executor")));
    }

    let (work_dir, port) = agent.kill();
    let _agent = AgentProcess::start_on(&cluster, work_dir, port, &["--recover", "cleanup"]);
    assert_eq!(active_agent(&cluster, port).await, agent_id);
    for name in ["cmd-long", "echo-long"] {
        let status = fw.wait_for_terminal(name).await;
        assert_eq!(status.state(), pb::TaskState::TaskKilled, "{status:?}");
    }
    eventually("every task and executor to be gone", || {
        pids.iter()
            .all(|(task, executor)| !process_alive(*task) && !process_alive(*executor))
    })
    .await;
    fw.stop().await;
    cluster.shutdown().await;
}

#[test]
fn an_unknown_recovery_mode_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = std::process::Command::new(node_bin!())
        .args(["agent", "--recover", "sometimes", "--listen", "127.0.0.1:0"])
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .expect("the agent runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("'sometimes' is not a recovery mode"),
        "{stderr}"
    );
}
