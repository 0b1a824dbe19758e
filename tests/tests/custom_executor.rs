//! Custom executors end to end: tasks naming an `ExecutorInfo` run under the echo
//! executor example (a real process started by a real agent), share one executor
//! per executor id, exchange framework messages with the scheduler, are killed
//! through it, and fail with REASON_EXECUTOR_TERMINATED when it dies.

use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, Seen, TestFramework, eventually, node_bin, parent_pid, process_alive, read_pid,
};

/// The echo executor, as an agent would start it.
fn echo_executor(executor_id: &str) -> pb::ExecutorInfo {
    let bin = env!("CARGO_BIN_EXE_agora-echo-executor").to_string();
    let mut info = agora_echo_executor::executor_info(&[bin]);
    info.executor_id = Some(pb::ExecutorId {
        value: executor_id.into(),
    });
    info
}

/// The resources of one task (its command is replaced by the executor).
fn task_on(task_id: &str) -> agora_sdk::TaskBuilder {
    agora_sdk::TaskBuilder::new(task_id)
        .shell("unused")
        .cpus(0.1)
        .mem(16.0)
}

/// Launches `tasks` (id, command) on `executor` with the first offer, declining the
/// others; returns the agent.
async fn launch_on(
    fw: &mut TestFramework,
    executor: &pb::ExecutorInfo,
    tasks: &[(&str, String)],
) -> pb::AgentId {
    fw.launch_on_first_offer(|room| {
        tasks
            .iter()
            .map(|(id, cmd)| {
                let mut task = room.take(&task_on(id)).expect("the task fits");
                task.command = None;
                task.executor = Some(executor.clone());
                task.data = cmd.clone().into_bytes();
                task
            })
            .collect()
    })
    .await
}

fn pid_command(file: &std::path::Path) -> String {
    format!("echo $$ > {}; exec sleep 1000", file.display())
}

fn task_id(id: &str) -> pb::TaskId {
    pb::TaskId { value: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_share_their_custom_executor_which_answers_kills_and_fails_them_when_it_dies() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let dir = cluster.data_dir().to_path_buf();
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("echo", 3600.0)).await;
    let executor = echo_executor("echo-1");

    // Two tasks sent together: queued until the executor subscribes.
    let agent = launch_on(
        &mut fw,
        &executor,
        &[
            ("first", pid_command(&dir.join("first.pid"))),
            ("second", pid_command(&dir.join("second.pid"))),
        ],
    )
    .await;
    let running = fw.wait_for_state("first", pb::TaskState::TaskRunning).await;
    assert_eq!(
        running.executor_id.as_ref().map(|e| e.value.as_str()),
        Some("echo-1"),
        "{running:?}"
    );
    fw.wait_for_state("second", pb::TaskState::TaskRunning)
        .await;
    // A third one later goes straight to the subscribed executor.
    launch_on(
        &mut fw,
        &executor,
        &[("third", pid_command(&dir.join("third.pid")))],
    )
    .await;
    fw.wait_for_state("third", pb::TaskState::TaskRunning).await;

    let pids: Vec<i32> = {
        let mut pids = Vec::new();
        for name in ["first", "second", "third"] {
            pids.push(read_pid(&dir.join(format!("{name}.pid"))).await);
        }
        pids
    };
    let executor_pid = parent_pid(pids[0]).expect("the task's parent");
    for pid in &pids {
        assert_eq!(
            parent_pid(*pid),
            Some(executor_pid),
            "every task runs under the one executor"
        );
    }
    let cmdline = std::fs::read(format!("/proc/{executor_pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("agora-echo-executor"),
        "the parent is the echo executor: {}",
        String::from_utf8_lossy(&cmdline)
    );

    // A framework message round trip.
    fw.handle
        .message(
            agent.clone(),
            executor.executor_id.clone().unwrap(),
            b"ping".to_vec(),
        )
        .await
        .expect("MESSAGE");
    let reply = fw
        .wait_for("the executor's answer", |seen| match seen {
            Seen::Message(data) => Some(data.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reply, b"echo: ping");

    // A kill goes through the executor.
    fw.handle
        .kill(task_id("first"), Some(agent.clone()))
        .await
        .expect("KILL");
    let killed = fw.wait_for_terminal("first").await;
    assert_eq!(killed.state(), pb::TaskState::TaskKilled, "{killed:?}");
    assert!(!process_alive(pids[0]), "the killed task's process is gone");
    assert!(process_alive(pids[1]) && process_alive(executor_pid));

    // The executor dies: its remaining tasks fail with the reason, and their
    // processes are swept up with its container.
    // SAFETY: kill(2) on the executor this test's cluster started.
    unsafe {
        libc::kill(executor_pid, libc::SIGKILL);
    }
    for id in ["second", "third"] {
        let failed = fw.wait_for_terminal(id).await;
        assert_eq!(failed.state(), pb::TaskState::TaskFailed, "{failed:?}");
        assert_eq!(
            failed.reason(),
            pb::task_status::Reason::ExecutorTerminated,
            "{failed:?}"
        );
        assert!(failed.message.contains("Executor terminated"), "{failed:?}");
    }
    eventually("the dead executor's tasks to be killed", || {
        !process_alive(pids[1]) && !process_alive(pids[2])
    })
    .await;
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_infos_the_agent_cannot_use_are_refused_with_task_error() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw = TestFramework::start(
        &cluster.master_addr,
        TestFramework::info("bad-echo", 3600.0),
    )
    .await;

    let mut no_command = echo_executor("no-command");
    no_command.command = None;
    launch_on(&mut fw, &no_command, &[("headless", "true".into())]).await;
    let refused = fw.wait_for_terminal("headless").await;
    assert_eq!(refused.state(), pb::TaskState::TaskError, "{refused:?}");
    assert_eq!(refused.reason(), pb::task_status::Reason::TaskInvalid);
    assert!(refused.message.contains("executor.command"), "{refused:?}");

    let mut stranger = echo_executor("stranger");
    stranger.framework_id = Some(pb::FrameworkId {
        value: "someone-else".into(),
    });
    launch_on(&mut fw, &stranger, &[("borrowed", "true".into())]).await;
    let refused = fw.wait_for_terminal("borrowed").await;
    assert_eq!(refused.state(), pb::TaskState::TaskError, "{refused:?}");
    assert!(refused.message.contains("someone-else"), "{refused:?}");

    let mut group_type = echo_executor("group");
    group_type.r#type = pb::executor_info::Type::Default as i32;
    launch_on(&mut fw, &group_type, &[("grouped", "true".into())]).await;
    let refused = fw.wait_for_terminal("grouped").await;
    assert_eq!(refused.state(), pb::TaskState::TaskError, "{refused:?}");
    assert!(refused.message.contains("LAUNCH_GROUP"), "{refused:?}");

    // A task whose data is no command fails in the executor, which keeps serving.
    let executor = echo_executor("echo-2");
    launch_on(&mut fw, &executor, &[("empty", String::new())]).await;
    let failed = fw.wait_for_terminal("empty").await;
    assert_eq!(failed.state(), pb::TaskState::TaskFailed, "{failed:?}");
    assert!(failed.message.contains("no command"), "{failed:?}");
    launch_on(&mut fw, &executor, &[("fine", "exit 0".into())]).await;
    let finished = fw.wait_for_terminal("fine").await;
    assert_eq!(
        finished.state(),
        pb::TaskState::TaskFinished,
        "{finished:?}"
    );
    fw.stop().await;
    cluster.shutdown().await;
}
