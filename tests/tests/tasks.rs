//! Task lifecycle through the real master, agent and command executor: kill, failure
//! with an exit code, reconciliation.

use agora_proto as pb;
use agora_tests::{ClusterBuilder, TestFramework, node_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_mid_run_ends_killed() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("killer", 0.0)).await;
    let agent = fw.launch_shell("sleeper", "sleep 1000").await;
    fw.wait_for_state("sleeper", pb::TaskState::TaskRunning)
        .await;
    fw.handle
        .kill(
            pb::TaskId {
                value: "sleeper".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL");
    let status = fw.wait_for_terminal("sleeper").await;
    assert_eq!(status.state(), pb::TaskState::TaskKilled, "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_ends_failed_with_its_exit_code() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("failer", 0.0)).await;
    fw.launch_shell("failing", "echo oops >&2; exit 3").await;
    let status = fw.wait_for_terminal("failing").await;
    assert_eq!(status.state(), pb::TaskState::TaskFailed, "{status:?}");
    assert_eq!(status.exit_code, Some(3), "{status:?}");
    assert!(
        status.message.contains('3'),
        "the message names the exit status: {status:?}"
    );
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_returns_the_latest_state_of_each_task() {
    let cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("reconciler", 0.0)).await;
    let agent = fw.launch_shell("running", "sleep 1000").await;
    fw.wait_for_state("running", pb::TaskState::TaskRunning)
        .await;
    fw.launch_shell("done", "true").await;
    fw.wait_for_state("done", pb::TaskState::TaskFinished).await;

    // Explicit: a running task, a finished one, and one nobody launched.
    fw.handle
        .reconcile(vec![
            (
                pb::TaskId {
                    value: "running".into(),
                },
                Some(agent.clone()),
            ),
            (
                pb::TaskId {
                    value: "done".into(),
                },
                Some(agent.clone()),
            ),
            (
                pb::TaskId {
                    value: "never".into(),
                },
                Some(agent.clone()),
            ),
        ])
        .await
        .expect("RECONCILE");
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 3 {
        let status = fw
            .wait_for("reconciliation answers", |seen| match seen {
                agora_tests::Seen::Update(s)
                    if s.reason() == pb::task_status::Reason::Reconciliation =>
                {
                    Some(s.clone())
                }
                _ => None,
            })
            .await;
        answers.insert(
            status.task_id.clone().unwrap_or_default().value,
            status.state(),
        );
    }
    assert_eq!(answers["running"], pb::TaskState::TaskRunning);
    assert_eq!(answers["done"], pb::TaskState::TaskFinished);
    // A partition-aware framework learns the agent does not run it.
    assert_eq!(answers["never"], pb::TaskState::TaskGone);

    // Implicit: every task the master still tracks for the framework. "done" may
    // still be tracked if its acknowledgement is in flight; nothing else may be.
    fw.handle.reconcile(vec![]).await.expect("RECONCILE");
    loop {
        let status = fw
            .wait_for("implicit reconciliation", |seen| match seen {
                agora_tests::Seen::Update(s)
                    if s.reason() == pb::task_status::Reason::Reconciliation =>
                {
                    Some(s.clone())
                }
                _ => None,
            })
            .await;
        assert!(
            status.uuid.is_empty(),
            "reconciliation answers need no acknowledgement"
        );
        match status.task_id.clone().unwrap_or_default().value.as_str() {
            "running" => {
                assert_eq!(status.state(), pb::TaskState::TaskRunning);
                break;
            }
            "done" => assert_eq!(status.state(), pb::TaskState::TaskFinished),
            other => panic!("implicit reconciliation reported an unexpected task {other}"),
        }
    }

    fw.handle
        .kill(
            pb::TaskId {
                value: "running".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL");
    fw.wait_for_terminal("running").await;
    fw.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_sent_while_the_agent_is_away_is_delivered_when_it_returns() {
    let mut cluster = ClusterBuilder::new(node_bin!()).agents(1).start().await;
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("patient", 3600.0)).await;
    let agent = fw.launch_shell("waiting", "sleep 1000").await;
    fw.wait_for_state("waiting", pb::TaskState::TaskRunning)
        .await;
    let work_dir = cluster.stop_agent(0).await;
    fw.handle
        .kill(
            pb::TaskId {
                value: "waiting".into(),
            },
            Some(agent),
        )
        .await
        .expect("KILL is accepted while the agent is away");
    cluster.restart_agent(work_dir).await;
    let status = fw.wait_for_terminal("waiting").await;
    assert_eq!(status.state(), pb::TaskState::TaskKilled, "{status:?}");
    fw.stop().await;
    cluster.shutdown().await;
}
