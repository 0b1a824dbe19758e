//! The agent against a fake master, running tasks with the real `agora-executor`.

mod common;

use std::time::Duration;

use agora_proto as pb;
use agora_proto::TaskState;
use agora_proto::agent_message::Message as FromAgent;
use agora_proto::master_message::Message as ToAgent;
use agora_proto::task_status::{Reason, Source};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_command_task_reports_in_order_and_each_update_is_retried_until_acked() {
    let dir = TempDir::new("echo");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    let FromAgent::Register(register) = link.accept("agent-1", 30.0).await else {
        panic!("a new agent registers");
    };
    let info = register.agent_info.expect("agent_info");
    assert_eq!(info.hostname, "test-host");
    assert_eq!(info.endpoint, agent.local_addr().to_string());
    assert_eq!(info.attributes[0].name, "rack");
    assert!(
        info.resources.iter().any(|r| r.name == "ports"),
        "detected ports are offered"
    );
    assert_eq!(agent.wait_registered().await, "agent-1");
    assert_eq!(agent.agent_id().as_deref(), Some("agent-1"));

    link.run_task(framework("fw"), shell_task("t1", "echo hi"))
        .await;

    // STARTING is retried (same uuid) until acknowledged; RUNNING waits behind it.
    let starting = link.next_update().await;
    let status = starting.status.clone().unwrap();
    assert_eq!(state_name(status.state), "TASK_STARTING");
    assert_eq!(status.source, Source::Executor as i32);
    assert_eq!(status.uuid.len(), 16);
    assert_eq!(
        status.agent_id.as_ref().map(|a| a.value.as_str()),
        Some("agent-1")
    );
    assert_eq!(
        starting.executor_id.as_ref().map(|e| e.value.as_str()),
        Some("t1")
    );
    let retried = link.next_update().await;
    assert_eq!(
        retried.status.as_ref().unwrap().uuid,
        status.uuid,
        "the head is resent, nothing else"
    );
    link.ack(&starting).await;

    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_RUNNING", "TASK_FINISHED"]);
    let finished = statuses.last().unwrap();
    assert_eq!(finished.exit_code, Some(0));

    let sandbox = sandboxes(dir.path(), "fw", "t1");
    assert_eq!(sandbox.len(), 1);
    let stdout = std::fs::read_to_string(sandbox[0].join("stdout")).unwrap();
    assert!(stdout.contains("hi"), "stdout: {stdout}");
    assert!(sandbox[0].join("stderr").exists());

    // The executor exits after its terminal update was taken.
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "t1");
    assert_eq!(exited.status, Some(0));
    agent.shutdown().await;
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code() {
    let (dir, _master, agent, mut link) = registered_agent("exit3").await;
    link.run_task(framework("fw"), shell_task("t3", "echo oops >&2; exit 3"))
        .await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(
        states(&statuses),
        vec!["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
    );
    let failed = statuses.last().unwrap();
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "Command exited with status 3");
    let sandbox = sandboxes(dir.path(), "fw", "t3");
    let stderr = std::fs::read_to_string(sandbox[0].join("stderr")).unwrap();
    assert!(stderr.contains("oops"), "stderr: {stderr}");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_kill_terminates_the_task_and_reports_killing_then_killed() {
    let (_dir, _master, agent, mut link) = registered_agent("kill").await;
    let mut fw = framework("fw");
    fw.capabilities.push(pb::framework_info::Capability {
        r#type: pb::framework_info::capability::Type::TaskKillingState as i32,
    });
    link.run_task(fw, shell_task("sleeper", "sleep 100")).await;
    link.ack_until(TaskState::TaskRunning).await;

    link.kill_task("fw", "sleeper", None).await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_KILLING", "TASK_KILLED"]);
    assert!(
        statuses[1].message.contains("SIGTERM"),
        "SIGTERM ended it: {}",
        statuses[1].message
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_task_ignoring_sigterm_is_sigkilled_after_the_grace_period() {
    let (dir, _master, agent, mut link) = registered_agent("sigkill").await;
    let task = shell_task(
        "stubborn",
        "trap '' TERM; echo ready; while true; do sleep 0.05; done",
    );
    link.run_task(framework("fw"), task).await;
    link.ack_until(TaskState::TaskRunning).await;
    // The trap must be installed before the kill, or SIGTERM would end it.
    let sandbox = sandboxes(dir.path(), "fw", "stubborn").remove(0);
    tokio::time::timeout(WAIT, async {
        while !std::fs::read_to_string(sandbox.join("stdout"))
            .unwrap_or_default()
            .contains("ready")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the task starts");

    link.kill_task("fw", "stubborn", Some(0.3)).await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(
        states(&statuses),
        vec!["TASK_KILLED"],
        "no TASK_KILLING without the capability"
    );
    assert!(
        statuses[0].message.contains("SIGKILL"),
        "{}",
        statuses[0].message
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_missing_program_fails_with_command_not_found() {
    let (_dir, _master, agent, mut link) = registered_agent("notfound").await;
    let mut task = shell_task("missing", "");
    task.command = Some(pb::CommandInfo {
        shell: false,
        value: "/nonexistent/agora-test-program".into(),
        ..Default::default()
    });
    link.run_task(framework("fw"), task).await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_STARTING", "TASK_FAILED"]);
    let failed = statuses.last().unwrap();
    assert_eq!(failed.reason, Reason::CommandNotFound as i32);
    assert!(
        failed.message.contains("/nonexistent/agora-test-program"),
        "{}",
        failed.message
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_master_is_left() {
    let dir = TempDir::new("ping");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 0.2).await;
    link.send(ToAgent::Ping(pb::master_message::Ping { seq: 42 }))
        .await;
    assert_eq!(link.pong().await, 42);
    // No more pings: after 5 × 0.2 s the agent gives up on this master and comes
    // back with its id.
    let mut again = master.attach().await;
    let FromAgent::Reregister(reregister) = again.accept("agent-1", 30.0).await else {
        panic!("a known agent re-registers");
    };
    assert_eq!(reregister.agent_info.unwrap().id.unwrap().value, "agent-1");
    drop(link);
    agent.shutdown().await;
}

#[tokio::test]
async fn after_the_master_drops_the_stream_the_agent_reregisters_with_its_running_task() {
    let dir = TempDir::new("reregister");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-7", 30.0).await;
    link.run_task(framework("fw"), shell_task("long", "sleep 100"))
        .await;
    link.ack_until(TaskState::TaskRunning).await;
    drop(link);

    let mut link = master.attach().await;
    let FromAgent::Reregister(reregister) = link.accept("agent-7", 30.0).await else {
        panic!("the agent re-registers");
    };
    assert_eq!(reregister.agent_info.unwrap().id.unwrap().value, "agent-7");
    assert_eq!(reregister.tasks.len(), 1);
    let report = &reregister.tasks[0];
    assert_eq!(
        report
            .task
            .as_ref()
            .unwrap()
            .task_id
            .as_ref()
            .unwrap()
            .value,
        "long"
    );
    assert_eq!(report.state, TaskState::TaskRunning as i32);
    assert_eq!(
        report.latest_status.as_ref().unwrap().state,
        TaskState::TaskRunning as i32
    );
    assert_eq!(reregister.frameworks[0].id.as_ref().unwrap().value, "fw");

    link.kill_task("fw", "long", Some(0.5)).await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_KILLED"]);
    agent.shutdown().await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_id_and_reattaches_to_its_executor() {
    let dir = TempDir::new("restart");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let addr = agent.local_addr();
    let mut link = master.attach().await;
    link.accept("agent-9", 30.0).await;
    link.run_task(framework("fw"), shell_task("survivor", "sleep 100"))
        .await;
    let running = link.ack_until(TaskState::TaskRunning).await;
    agent.shutdown().await;
    drop(link);

    // Same work dir, same port: the executor (still running) finds the new agent.
    let agent = restart_agent(addr, config(master.addr, dir.path())).await;
    assert_eq!(
        agent.agent_id().as_deref(),
        Some("agent-9"),
        "the id was persisted"
    );
    let mut link = master.attach().await;
    let FromAgent::Reregister(reregister) = link.accept("agent-9", 30.0).await else {
        panic!("the restarted agent re-registers");
    };
    assert_eq!(reregister.tasks.len(), 1);
    assert_eq!(reregister.tasks[0].state, TaskState::TaskRunning as i32);

    // Only a reattached executor can turn a kill into TASK_KILLED from the executor.
    link.kill_task("fw", "survivor", Some(0.5)).await;
    let statuses = link.updates_until_terminal().await;
    let (killed, before) = statuses.split_last().unwrap();
    assert_eq!(state_name(killed.state), "TASK_KILLED");
    assert_eq!(killed.source, Source::Executor as i32);
    // The agent may have stopped before it handled the ack of TASK_RUNNING; then that
    // same update is delivered again (at least once), and nothing else.
    for status in before {
        assert_eq!(
            status.uuid, running.uuid,
            "only the unacknowledged update is resent"
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn an_executor_that_never_subscribes_times_out() {
    let dir = TempDir::new("regtimeout");
    let mut master = FakeMaster::start().await;
    let mut config = config(master.addr, dir.path());
    config.executor_command = vec!["/bin/sleep".into(), "100".into()];
    config.executor_registration_timeout = Duration::from_millis(300);
    let agent = start_agent(config).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.run_task(framework("fw"), shell_task("t", "true"))
        .await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_FAILED"]);
    assert_eq!(
        statuses[0].reason,
        Reason::ExecutorRegistrationTimeout as i32
    );
    assert_eq!(statuses[0].source, Source::Agent as i32);
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "t");
    agent.shutdown().await;
}

#[tokio::test]
async fn an_executor_that_dies_fails_its_task() {
    let dir = TempDir::new("executordies");
    let mut master = FakeMaster::start().await;
    let mut config = config(master.addr, dir.path());
    config.executor_command = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
    let agent = start_agent(config).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.run_task(framework("fw"), shell_task("t", "true"))
        .await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_FAILED"]);
    assert_eq!(statuses[0].reason, Reason::ExecutorTerminated as i32);
    assert!(
        statuses[0].message.contains("exited with status 7"),
        "{}",
        statuses[0].message
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn unsupported_launches_fail_and_malformed_messages_are_survived() {
    let (dir, _master, agent, mut link) = registered_agent("unsupported").await;

    // Garbage first: none of it may take the agent down.
    link.send(ToAgent::RunTask(pb::master_message::RunTask {
        framework_info: None,
        task: None,
    }))
    .await;
    link.run_task(framework("../escape"), shell_task("t", "true"))
        .await;
    link.kill_task("fw", "a/b", None).await;
    link.send(ToAgent::Acknowledge(pb::master_message::Acknowledge {
        framework_id: Some(pb::FrameworkId { value: "fw".into() }),
        task_id: Some(pb::TaskId {
            value: "nope".into(),
        }),
        uuid: vec![7; 16],
    }))
    .await;
    link.send(ToAgent::Error(pb::master_message::Error {
        message: "your last message was bad".into(),
    }))
    .await;
    assert!(
        !dir.path()
            .join("frameworks")
            .join("..")
            .join("escape")
            .exists()
    );

    let mut task = shell_task("custom", "");
    task.command = None;
    task.executor = Some(pb::ExecutorInfo {
        executor_id: Some(pb::ExecutorId {
            value: "my-exec".into(),
        }),
        command: Some(pb::CommandInfo {
            shell: true,
            value: "./my-executor".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    link.run_task(framework("fw"), task).await;
    // A custom executor whose command cannot run: its task fails with the reason.
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_FAILED"]);
    assert_eq!(
        statuses[0].reason(),
        pb::task_status::Reason::ExecutorTerminated
    );
    assert!(
        statuses[0].message.contains("exited with status 127"),
        "{:?}",
        statuses[0]
    );

    link.send(ToAgent::RunTaskGroup(pb::master_message::RunTaskGroup {
        framework_info: Some(framework("fw")),
        executor: None,
        task_group: Some(pb::TaskGroupInfo {
            tasks: vec![shell_task("g1", "true")],
        }),
    }))
    .await;
    // A group needs its executor's id: every task of it is refused.
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_ERROR"]);
    assert_eq!(statuses[0].reason, Reason::TaskGroupInvalid as i32);
    assert!(
        statuses[0].message.contains("executor.executor_id"),
        "{statuses:?}"
    );

    // A kill for a task the agent never saw answers TASK_LOST (the framework itself is
    // forgotten by now: it has nothing left on this agent).
    link.kill_task("fw", "never-launched", None).await;
    let statuses = link.updates_until_terminal().await;
    assert_eq!(states(&statuses), vec!["TASK_LOST"]);

    link.send(ToAgent::Ping(pb::master_message::Ping { seq: 1 }))
        .await;
    assert_eq!(link.pong().await, 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn executor_calls_need_a_known_executor_and_its_token() {
    let (_dir, _master, agent, mut link) = registered_agent("token").await;
    link.run_task(framework("fw"), shell_task("guarded", "sleep 100"))
        .await;
    link.ack_until(TaskState::TaskRunning).await;

    let mut client = pb::executor_api_client::ExecutorApiClient::connect(format!(
        "http://{}",
        agent.local_addr()
    ))
    .await
    .unwrap();
    let ids = |eid: &str| {
        (
            Some(pb::FrameworkId { value: "fw".into() }),
            Some(pb::ExecutorId { value: eid.into() }),
        )
    };
    let (framework_id, executor_id) = ids("guarded");
    let update = pb::ExecutorUpdate {
        framework_id,
        executor_id,
        token: "not-the-token".into(),
        status: Some(pb::TaskStatus {
            task_id: Some(pb::TaskId {
                value: "guarded".into(),
            }),
            state: TaskState::TaskFinished as i32,
            uuid: vec![1; 16],
            ..Default::default()
        }),
    };
    let refused = client.update(update.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let (framework_id, executor_id) = ids("nobody");
    let refused = client
        .subscribe(pb::ExecutorSubscribe {
            framework_id,
            executor_id,
            token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let (framework_id, _) = ids("");
    let refused = client
        .update(pb::ExecutorUpdate {
            framework_id,
            executor_id: None,
            ..update
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    link.kill_task("fw", "guarded", Some(0.5)).await;
    assert_eq!(
        states(&link.updates_until_terminal().await),
        vec!["TASK_KILLED"]
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_share_the_agent_port() {
    let (_dir, _master, agent, _link) = registered_agent("http").await;
    agent.wait_registered().await;

    let get = |path: &'static str| {
        let addr = agent.local_addr();
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let metrics = get("/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("agora_agent_master_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agora_agent_registrations_total 1"),
        "{metrics}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let dir = TempDir::new("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = config("127.0.0.1:1".parse().unwrap(), dir.path());
    config.resources = Some("cpus:many".into());
    let Err(err) = agora_agent::Agent::start(config, listener).await else {
        panic!("bad resources are refused");
    };
    assert!(err.to_string().contains("cpus:many"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = common::config("127.0.0.1:1".parse().unwrap(), dir.path());
    config.masters = vec!["http://127.0.0.1:5050".into()];
    let Err(err) = agora_agent::Agent::start(config, listener).await else {
        panic!("a master with a scheme is refused");
    };
    assert!(err.to_string().contains("without a scheme"), "{err}");
}

#[tokio::test]
async fn shutting_down_a_framework_kills_its_tasks_and_forgets_it() {
    let (dir, _master, agent, mut link) = registered_agent("shutdown").await;
    link.run_task(framework("fw"), shell_task("doomed", "sleep 100"))
        .await;
    link.ack_until(TaskState::TaskRunning).await;
    let meta = dir.path().join("meta").join("frameworks").join("fw");
    assert!(
        meta.join("framework.info").exists(),
        "the framework is checkpointed"
    );

    link.send(ToAgent::ShutdownFramework(
        pb::master_message::ShutdownFramework {
            framework_id: Some(pb::FrameworkId { value: "fw".into() }),
        },
    ))
    .await;
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "doomed");
    assert_eq!(
        exited.status,
        Some(0),
        "the executor exits by itself once its task is killed"
    );
    // The executor reported the kill before it exited.
    let killed = link.next_update().await.status.unwrap();
    assert_eq!(state_name(killed.state), "TASK_KILLED");
    tokio::time::timeout(WAIT, async {
        while meta.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the framework's checkpoints are removed");
    agent.shutdown().await;
}

/// The status-update log of the (only) run of a command task.
fn task_log(work_dir: &std::path::Path, framework_id: &str, task_id: &str) -> std::path::PathBuf {
    let runs = work_dir
        .join("meta/frameworks")
        .join(framework_id)
        .join("executors")
        .join(task_id)
        .join("runs");
    let run = std::fs::read_dir(&runs)
        .expect("the run is checkpointed")
        .next()
        .expect("one run")
        .expect("readable")
        .path();
    run.join("tasks").join(task_id).join("task.updates")
}

#[tokio::test]
async fn finished_tasks_leave_no_checkpoints_and_the_agent_keeps_going() {
    let (dir, _master, agent, mut link) = registered_agent("cleanup").await;
    let meta = dir.path().join("meta").join("frameworks").join("fw");
    for task in ["first", "second"] {
        link.run_task(framework("fw"), shell_task(task, "true"))
            .await;
        let mut statuses: Vec<pb::TaskStatus> = Vec::new();
        while statuses
            .last()
            .is_none_or(|s| s.state != TaskState::TaskFinished as i32)
        {
            let update = link.next_update().await;
            let status = update.status.clone().unwrap();
            // Forwarded only once its record is on disk.
            let log = std::fs::read(task_log(dir.path(), "fw", task)).unwrap();
            assert!(
                log.windows(status.uuid.len()).any(|w| w == status.uuid),
                "{} was sent before it was checkpointed",
                state_name(status.state)
            );
            link.ack(&update).await;
            // A retry that crossed the acknowledgement is no new update.
            if statuses.last().is_none_or(|s| s.uuid != status.uuid) {
                statuses.push(status);
            }
        }
        assert_eq!(
            states(&statuses),
            vec!["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
        );
        let exited = link.executor_exited().await;
        assert_eq!(exited.executor_id.unwrap().value, task);
        // The agent sends nothing before what it did earlier is on disk, so once the
        // answer to this kill (of a task it never saw) is here, the finished task's
        // checkpoints are gone.
        let ghost = format!("ghost-of-{task}");
        link.kill_task("fw", &ghost, None).await;
        let lost = link.next_update().await;
        let status = lost.status.clone().unwrap();
        assert_eq!(status.task_id.unwrap().value, ghost);
        assert_eq!(state_name(status.state), "TASK_LOST");
        assert!(!meta.exists(), "checkpoints of finished tasks are removed");
        link.ack(&lost).await;
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn a_kill_waiting_for_a_recovered_executor_keeps_its_grace_period() {
    let dir = TempDir::new("killpolicy");
    let mut master = FakeMaster::start().await;
    let mut config = config(master.addr, dir.path());
    // Far beyond the test's patience: only the kill's own grace period ends the task.
    config.default_kill_grace = Duration::from_secs(600);
    let agent = start_agent(config.clone()).await;
    let addr = agent.local_addr();
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    // Prints its session: the executor's pid (it leads the session).
    let task = shell_task(
        "stubborn",
        "trap '' TERM; cut -d' ' -f6 /proc/$$/stat; while true; do sleep 0.05; done",
    );
    link.run_task(framework("fw"), task).await;
    link.ack_until(TaskState::TaskRunning).await;
    let sandbox = sandboxes(dir.path(), "fw", "stubborn").remove(0);
    let executor: i32 = tokio::time::timeout(WAIT, async {
        loop {
            let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
            if let Some(Ok(pid)) = out.lines().next().map(|l| l.trim().parse()) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the task starts");
    agent.shutdown().await;
    drop(link);

    // Frozen, the executor cannot re-subscribe before the restarted agent has the kill.
    // SAFETY: kill only sends a signal, to the executor this test started.
    assert_eq!(unsafe { libc::kill(executor, libc::SIGSTOP) }, 0);
    let agent = restart_agent(addr, config).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.kill_task("fw", "stubborn", Some(0.3)).await;
    // Handled in order: once this one is answered, the kill above is recorded.
    link.kill_task("fw", "ghost", None).await;
    let lost = link
        .find(|m| match m {
            FromAgent::StatusUpdate(u)
                if u.status
                    .as_ref()
                    .and_then(|s| s.task_id.as_ref())
                    .is_some_and(|t| t.value == "ghost") =>
            {
                Some(u.clone())
            }
            _ => None,
        })
        .await;
    link.ack(&lost).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(executor, libc::SIGCONT) }, 0);

    // The re-subscribed executor gets the kill with the framework's 0.3 s, not the
    // 600 s default, so SIGKILL follows promptly.
    let statuses = link.updates_until_terminal().await;
    let killed = statuses.last().unwrap();
    assert_eq!(state_name(killed.state), "TASK_KILLED");
    assert!(killed.message.contains("SIGKILL"), "{}", killed.message);
    agent.shutdown().await;
}
