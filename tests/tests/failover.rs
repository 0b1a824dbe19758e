//! Frameworks that go away and come back, and agents that die.

use std::process::Stdio;

use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, Seen, TestFramework, eventually, node_bin, parent_pid, process_alive, read_pid,
    within,
};

/// Asserts that a framework with this id can no longer subscribe.
async fn assert_refused(master: &str, mut info: pb::FrameworkInfo, framework_id: pb::FrameworkId) {
    info.id = Some(framework_id);
    let mut client = pb::scheduler_client::SchedulerClient::connect(format!("http://{master}"))
        .await
        .expect("connect");
    let refused = client
        .subscribe(pb::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        })
        .await
        .expect_err("a removed framework cannot subscribe again");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_back_within_its_failover_timeout_keeps_its_tasks() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let info = TestFramework::info("comeback", 3600.0);
    let mut first = TestFramework::start(&cluster.master_addr, info.clone()).await;
    let agent = first.launch_shell("long", "sleep 1000").await;
    first
        .wait_for_state("long", pb::TaskState::TaskRunning)
        .await;
    let framework_id = first.framework_id.clone();
    first.stop().await;

    let mut again = info;
    again.id = Some(framework_id.clone());
    let mut second = TestFramework::start(&cluster.master_addr, again).await;
    assert_eq!(
        second.framework_id, framework_id,
        "the master kept the framework id"
    );
    second
        .handle
        .reconcile(vec![(
            pb::TaskId {
                value: "long".into(),
            },
            Some(agent.clone()),
        )])
        .await
        .expect("RECONCILE");
    let status = second
        .wait_for("the task's state", |seen| match seen {
            Seen::Update(s) if s.task_id.as_ref().is_some_and(|t| t.value == "long") => {
                Some(s.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(
        status.state(),
        pb::TaskState::TaskRunning,
        "the task survived the disconnection: {status:?}"
    );
    let state = cluster.state().await;
    let fw = state
        .frameworks
        .iter()
        .find(|f| f.framework_info.as_ref().and_then(|i| i.id.as_ref()) == Some(&framework_id))
        .expect("the framework is still registered");
    assert!(fw.connected);
    assert_eq!(fw.active_tasks, 1);

    second
        .handle
        .kill(
            pb::TaskId {
                value: "long".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL");
    second.wait_for_terminal("long").await;
    second.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_away_past_its_failover_timeout_has_its_tasks_killed() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let pid_file = cluster.data_dir().join("task.pid");
    let info = TestFramework::info("goner", 0.5);
    let mut fw = TestFramework::start(&cluster.master_addr, info.clone()).await;
    fw.launch_shell(
        "doomed",
        &format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
    )
    .await;
    fw.wait_for_state("doomed", pb::TaskState::TaskRunning)
        .await;
    let pid = read_pid(&pid_file).await;
    assert!(process_alive(pid));
    let framework_id = fw.framework_id.clone();

    let mut events = cluster.operator_events().await;
    fw.stop().await;
    within("the framework's removal", async {
        loop {
            let event = events
                .message()
                .await
                .expect("operator stream")
                .expect("an event");
            if let Some(pb::operator_event::Event::FrameworkRemoved(removed)) = event.event
                && removed.framework_id.as_ref() == Some(&framework_id)
            {
                break;
            }
        }
    })
    .await;
    eventually("the task's process to be killed", || !process_alive(pid)).await;

    // The id is gone for good.
    assert_refused(&cluster.master_addr, info, framework_id).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_makes_its_tasks_unreachable() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(0).start().await;
    let work_dir = cluster.data_dir().join("agent-process");
    let mut agent = std::process::Command::new(node_bin!())
        .args([
            "agent",
            "--master",
            &cluster.master_addr,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--work-dir")
        .arg(&work_dir)
        .args([
            "--resources",
            "cpus:2;mem:2048;disk:1000;ports:[31000-31010]",
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent process starts");

    let pid_file = cluster.data_dir().join("orphan.pid");
    let mut fw = TestFramework::start(
        &cluster.master_addr,
        TestFramework::info("partitioned", 3600.0),
    )
    .await;
    fw.launch_shell(
        "orphan",
        &format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
    )
    .await;
    fw.wait_for_state("orphan", pb::TaskState::TaskRunning)
        .await;
    let task_pid = read_pid(&pid_file).await;
    let executor_pid = parent_pid(task_pid);

    agent.kill().expect("SIGKILL the agent");
    let _ = agent.wait();
    let status = fw
        .wait_for_state("orphan", pb::TaskState::TaskUnreachable)
        .await;
    assert_eq!(
        status.reason(),
        pb::task_status::Reason::AgentUnreachable,
        "{status:?}"
    );
    assert!(status.message.contains("unreachable"), "{status:?}");
    // The task outlived its agent, as it must: it runs in its executor's session.
    assert!(
        process_alive(task_pid),
        "the task survived the agent's death"
    );

    for pid in [Some(task_pid), executor_pid].into_iter().flatten() {
        // SAFETY: plain kill(2) on pids this test created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_with_a_task_relaunched_elsewhere_has_its_copy_killed() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(2).start().await;
    let first_agent = cluster.agents[0].0.clone();
    // Not partition-aware: the task is reported LOST, and the id can be reused.
    let mut info = TestFramework::info("relauncher", 3600.0);
    info.capabilities.clear();
    let mut fw = TestFramework::start(&cluster.master_addr, info).await;
    let first_pid_file = cluster.data_dir().join("first.pid");
    fw.launch_shell_where(
        "twin",
        &format!("echo $$ > {}; exec sleep 1000", first_pid_file.display()),
        |offer| {
            offer
                .agent_id
                .as_ref()
                .is_some_and(|a| a.value == first_agent)
        },
    )
    .await;
    fw.wait_for_state("twin", pb::TaskState::TaskRunning).await;
    let first_pid = read_pid(&first_pid_file).await;

    let work_dir = cluster.stop_agent(0).await;
    let lost = fw.wait_for_state("twin", pb::TaskState::TaskLost).await;
    assert_eq!(lost.reason(), pb::task_status::Reason::AgentUnreachable);
    let second_pid_file = cluster.data_dir().join("second.pid");
    fw.launch_shell(
        "twin",
        &format!("echo $$ > {}; exec sleep 1000", second_pid_file.display()),
    )
    .await;
    fw.wait_for_state("twin", pb::TaskState::TaskRunning).await;
    let second_pid = read_pid(&second_pid_file).await;

    cluster.restart_agent(work_dir).await;
    eventually("the returning agent's copy to be killed", || {
        !process_alive(first_pid)
    })
    .await;
    assert!(
        process_alive(second_pid),
        "the relaunched task keeps running"
    );
    let state = cluster.state().await;
    let twin = state
        .tasks
        .iter()
        .find(|t| t.task_id.as_ref().is_some_and(|id| id.value == "twin"))
        .expect("the task is known");
    assert_eq!(twin.state(), pb::TaskState::TaskRunning);
    assert_ne!(
        twin.agent_id.as_ref().map(|a| a.value.as_str()),
        Some(first_agent.as_str())
    );
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_kills_the_frameworks_tasks_and_forgets_it() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let pid_file = cluster.data_dir().join("torn.pid");
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("torn", 3600.0)).await;
    fw.launch_shell(
        "victim",
        &format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
    )
    .await;
    fw.wait_for_state("victim", pb::TaskState::TaskRunning)
        .await;
    let pid = read_pid(&pid_file).await;
    let framework_id = fw.framework_id.clone();
    fw.handle.teardown().await.expect("TEARDOWN");
    eventually("the task's process to be killed", || !process_alive(pid)).await;
    let state = cluster.state().await;
    assert!(
        state
            .frameworks
            .iter()
            .all(|f| f.framework_info.as_ref().and_then(|i| i.id.as_ref()) != Some(&framework_id)),
        "the framework is gone"
    );
    assert!(state.tasks.is_empty(), "{:?}", state.tasks);
    assert!(
        state
            .agents
            .iter()
            .all(|a| agora_core::Resources::from_proto(&a.used).is_ok_and(|r| r.is_empty())),
        "its resources are free"
    );
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_timeout_keeps_running_across_a_master_restart() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let pid_file = cluster.data_dir().join("restart.pid");
    let info = TestFramework::info("outlasting", 2.0);
    let mut fw = TestFramework::start(&cluster.master_addr, info.clone()).await;
    fw.launch_shell(
        "kept",
        &format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
    )
    .await;
    fw.wait_for_state("kept", pb::TaskState::TaskRunning).await;
    let pid = read_pid(&pid_file).await;
    let framework_id = fw.framework_id.clone();
    fw.stop().await;

    let disconnected_at = |state: &pb::ClusterState| {
        state
            .frameworks
            .iter()
            .find(|f| f.framework_info.as_ref().and_then(|i| i.id.as_ref()) == Some(&framework_id))
            .map(|f| f.disconnected_time)
    };
    let mut before = None;
    within("the master to see the framework go", async {
        while before.is_none_or(|t| t == 0.0) {
            before = disconnected_at(&cluster.state().await);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    cluster.restart_master().await;
    // The new master knows when the framework left: its timeout did not restart.
    let after = disconnected_at(&cluster.state().await);
    assert_eq!(after, before, "the disconnection time survived the restart");
    // And when it runs out, the framework's task is killed.
    eventually("the task to be killed after the failover timeout", || {
        !process_alive(pid)
    })
    .await;
    // The task died because the framework was removed, which the registry keeps.
    assert_refused(&cluster.master_addr, info, framework_id).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_a_master_restart_and_frameworks_reconcile_them() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("steady", 3600.0)).await;
    let agent = fw.launch_shell("steady", "sleep 1000").await;
    fw.wait_for_state("steady", pb::TaskState::TaskRunning)
        .await;

    cluster.restart_master().await;
    // The SDK driver reconnects and re-subscribes with its id by itself.
    fw.wait_for("re-subscription", |seen| {
        matches!(seen, Seen::Subscribed(_)).then_some(())
    })
    .await;
    // Until the agent has re-registered the master says nothing about its tasks
    // (Mesos' rule); a framework reconciles once it is back.
    within("the agent to re-register", async {
        while !cluster
            .state()
            .await
            .agents
            .iter()
            .any(|a| a.status == "ACTIVE")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    fw.handle
        .reconcile(vec![(
            pb::TaskId {
                value: "steady".into(),
            },
            Some(agent.clone()),
        )])
        .await
        .expect("RECONCILE");
    let status = fw
        .wait_for("a reconciliation answer", |seen| match seen {
            Seen::Update(s) if s.reason() == pb::task_status::Reason::Reconciliation => {
                Some(s.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(status.state(), pb::TaskState::TaskRunning, "{status:?}");
    fw.handle
        .kill(
            pb::TaskId {
                value: "steady".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL");
    fw.wait_for_terminal("steady").await;
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_do_not_return_after_a_master_restart_become_unreachable() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let agent_id = cluster.agents[0].0.clone();
    cluster.stop_agent(0).await;
    cluster.restart_master().await;
    let status_of = |state: &pb::ClusterState| {
        state
            .agents
            .iter()
            .find(|a| {
                a.agent_info
                    .as_ref()
                    .and_then(|i| i.id.as_ref())
                    .is_some_and(|i| i.value == agent_id)
            })
            .map(|a| a.status.clone())
    };
    assert_eq!(
        status_of(&cluster.state().await).as_deref(),
        Some("DISCONNECTED"),
        "known from the registry, awaiting re-registration"
    );
    within("the re-registration deadline", async {
        while status_of(&cluster.state().await).as_deref() != Some("UNREACHABLE") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    cluster.shutdown().await;
}
