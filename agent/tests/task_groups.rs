//! Task groups (LAUNCH_GROUP) and health checks against a fake master, with the real
//! `agora-executor` as the default executor.

mod common;

use std::collections::BTreeMap;

use agora_proto as pb;
use agora_proto::agent_message::Message as FromAgent;
use agora_proto::task_status::Reason;
use common::*;

/// Acknowledges every update until each of `task_ids` had a terminal one; returns
/// every update by task, in order.
async fn until_all_terminal(
    link: &mut Attach,
    task_ids: &[&str],
) -> BTreeMap<String, Vec<pb::TaskStatus>> {
    let mut seen: BTreeMap<String, Vec<pb::TaskStatus>> = BTreeMap::new();
    let done = |seen: &BTreeMap<String, Vec<pb::TaskStatus>>| {
        task_ids.iter().all(|id| {
            seen.get(*id).is_some_and(|s| {
                s.iter()
                    .any(|s| agora_core::task_state::is_terminal_raw(s.state))
            })
        })
    };
    while !done(&seen) {
        let update = link.next_update().await;
        link.ack(&update).await;
        let status = update.status.expect("status");
        let task_id = status.task_id.clone().unwrap_or_default().value;
        seen.entry(task_id).or_default().push(status);
    }
    seen
}

fn terminal(seen: &BTreeMap<String, Vec<pb::TaskStatus>>, task_id: &str) -> pb::TaskStatus {
    seen[task_id]
        .iter()
        .find(|s| agora_core::task_state::is_terminal_raw(s.state))
        .cloned()
        .expect("a terminal update")
}

#[tokio::test]
async fn a_failing_task_takes_its_group_down_and_the_group_shares_a_sandbox() {
    let (dir, _master, agent, mut link) = registered_agent("group-fail").await;
    // The failing task waits for the other to have written into the shared sandbox.
    link.run_task_group(
        framework("fw"),
        group_executor("pod"),
        vec![
            shell_task(
                "server",
                "echo $AGORA_TASK_ID > server.mark; exec sleep 600",
            ),
            shell_task(
                "doomed",
                "while [ ! -e server.mark ]; do sleep 0.01; done; exit 3",
            ),
        ],
    )
    .await;
    let seen = until_all_terminal(&mut link, &["server", "doomed"]).await;
    let doomed = terminal(&seen, "doomed");
    assert_eq!(state_name(doomed.state), "TASK_FAILED", "{doomed:?}");
    assert_eq!(doomed.exit_code, Some(3));
    let server = terminal(&seen, "server");
    assert_eq!(state_name(server.state), "TASK_KILLED", "{server:?}");
    assert!(
        server.message.contains("doomed"),
        "the kill names the task that ended: {server:?}"
    );
    for id in ["server", "doomed"] {
        assert!(
            states(&seen[id]).starts_with(&["TASK_STARTING", "TASK_RUNNING"]),
            "{id}: {:?}",
            states(&seen[id])
        );
        assert_eq!(
            seen[id][0].executor_id.as_ref().map(|e| e.value.as_str()),
            Some("pod")
        );
    }

    // One executor run, one sandbox, both tasks in it.
    let sandbox = sandboxes(dir.path(), "fw", "pod");
    assert_eq!(sandbox.len(), 1);
    assert_eq!(
        std::fs::read_to_string(sandbox[0].join("server.mark")).unwrap(),
        "server\n"
    );
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "pod");
    assert_eq!(exited.status, Some(0));
    agent.shutdown().await;
}

#[tokio::test]
async fn a_group_of_finishing_tasks_finishes_and_its_executor_exits() {
    let (_dir, _master, agent, mut link) = registered_agent("group-ok").await;
    link.run_task_group(
        framework("fw"),
        group_executor("batch"),
        vec![shell_task("a", "true"), shell_task("b", "echo b")],
    )
    .await;
    let seen = until_all_terminal(&mut link, &["a", "b"]).await;
    for id in ["a", "b"] {
        assert_eq!(
            states(&seen[id]),
            vec!["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"],
            "{id}"
        );
    }
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "batch");
    assert_eq!(exited.status, Some(0));
    agent.shutdown().await;
}

#[tokio::test]
async fn killing_one_task_of_a_group_kills_the_group() {
    let (_dir, _master, agent, mut link) = registered_agent("group-kill").await;
    link.run_task_group(
        framework("fw"),
        group_executor("pair"),
        vec![
            shell_task("left", "sleep 600"),
            shell_task("right", "sleep 600"),
        ],
    )
    .await;
    // Both running (acknowledged) before the kill.
    let mut running = std::collections::BTreeSet::new();
    while running.len() < 2 {
        let update = link.next_update().await;
        link.ack(&update).await;
        let status = update.status.unwrap();
        assert!(!agora_core::task_state::is_terminal_raw(status.state));
        if status.state == pb::TaskState::TaskRunning as i32 {
            running.insert(status.task_id.unwrap().value);
        }
    }
    link.kill_task("fw", "left", Some(0.5)).await;
    let seen = until_all_terminal(&mut link, &["left", "right"]).await;
    assert_eq!(state_name(terminal(&seen, "left").state), "TASK_KILLED");
    let right = terminal(&seen, "right");
    assert_eq!(state_name(right.state), "TASK_KILLED");
    assert!(right.message.contains("left"), "{right:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn an_invalid_group_is_refused_whole() {
    let (_dir, _master, agent, mut link) = registered_agent("group-invalid").await;
    let mut bad = shell_task("bad", "true");
    bad.executor = Some(group_executor("other"));
    bad.command = None;
    link.run_task_group(
        framework("fw"),
        group_executor("g"),
        vec![shell_task("fine", "true"), bad],
    )
    .await;
    let seen = until_all_terminal(&mut link, &["fine", "bad"]).await;
    for id in ["fine", "bad"] {
        let status = terminal(&seen, id);
        assert_eq!(states(&seen[id]), vec!["TASK_ERROR"], "{id}");
        assert_eq!(status.reason, Reason::TaskGroupInvalid as i32);
        assert!(status.message.contains("'bad'"), "{status:?}");
    }
    // A health check with a negative interval: refused before the task starts, with
    // a message naming the field.
    let mut unhealthy = shell_task("bad-check", "sleep 600");
    unhealthy.health_check = Some(pb::HealthCheck {
        r#type: pb::health_check::Type::Tcp as i32,
        interval_seconds: -1.0,
        tcp: Some(pb::health_check::Tcp { port: 1 }),
        ..Default::default()
    });
    link.run_task(framework("fw"), unhealthy).await;
    let statuses = link.updates_until_terminal().await;
    let last = statuses.last().unwrap();
    assert_eq!(state_name(last.state), "TASK_ERROR", "{statuses:?}");
    assert_eq!(last.reason, Reason::TaskInvalid as i32);
    assert!(
        last.message.contains("health_check.interval_seconds"),
        "{last:?}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_restarted_agent_reattaches_to_a_task_group() {
    let dir = TempDir::new("group-restart");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let addr = agent.local_addr();
    let mut link = master.attach().await;
    link.accept("agent-3", 30.0).await;
    link.run_task_group(
        framework("fw"),
        group_executor("durable"),
        vec![shell_task("x", "sleep 600"), shell_task("y", "sleep 600")],
    )
    .await;
    let mut running = std::collections::BTreeSet::new();
    while running.len() < 2 {
        let update = link.next_update().await;
        link.ack(&update).await;
        let status = update.status.unwrap();
        if status.state == pb::TaskState::TaskRunning as i32 {
            running.insert(status.task_id.unwrap().value);
        }
    }
    agent.shutdown().await;
    drop(link);

    let agent = restart_agent(addr, config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    let FromAgent::Reregister(reregister) = link.accept("agent-3", 30.0).await else {
        panic!("the restarted agent re-registers");
    };
    let mut reported: Vec<String> = reregister
        .tasks
        .iter()
        .map(|t| t.task.as_ref().unwrap().task_id.clone().unwrap().value)
        .collect();
    reported.sort();
    assert_eq!(reported, ["x", "y"]);
    // Only the reattached executor can report the kill of both (the group dies
    // together) as TASK_KILLED from the executor.
    link.kill_task("fw", "x", Some(0.5)).await;
    let seen = until_all_terminal(&mut link, &["x", "y"]).await;
    for id in ["x", "y"] {
        let status = terminal(&seen, id);
        assert_eq!(state_name(status.state), "TASK_KILLED", "{status:?}");
        assert_eq!(
            status.source,
            pb::task_status::Source::Executor as i32,
            "{status:?}"
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn a_task_failing_its_command_health_check_is_killed_unhealthy() {
    let (_dir, _master, agent, mut link) = registered_agent("health-cmd").await;
    // Healthy while `ok` exists in the sandbox; the task removes it after the first
    // healthy report was seen by the check (it writes `seen`).
    let mut task = shell_task(
        "flaky",
        "touch ok; while [ ! -e seen ]; do sleep 0.01; done; rm ok; exec sleep 600",
    );
    task.health_check = Some(pb::HealthCheck {
        r#type: pb::health_check::Type::Command as i32,
        delay_seconds: 0.01,
        interval_seconds: 0.05,
        // Failures before the first success are not counted for a minute: the task
        // is given time to create `ok`.
        grace_period_seconds: 60.0,
        consecutive_failures: 2,
        command: Some(pb::CommandInfo {
            shell: true,
            value: "test -e ok && touch seen".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    link.run_task(framework("fw"), task).await;
    let statuses = link.updates_until_terminal().await;
    let health: Vec<Option<bool>> = statuses
        .iter()
        .filter(|s| s.reason == Reason::TaskHealthCheckStatusUpdated as i32)
        .filter(|s| s.state == pb::TaskState::TaskRunning as i32)
        .map(|s| s.healthy)
        .collect();
    assert_eq!(health, [Some(true), Some(false)], "{statuses:?}");
    let killed = statuses.last().unwrap();
    assert_eq!(state_name(killed.state), "TASK_KILLED", "{killed:?}");
    assert_eq!(killed.healthy, Some(false));
    assert!(killed.message.contains("health check"), "{killed:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn two_groups_on_one_executor_live_and_die_apart() {
    let dir = TempDir::new("two-groups");
    let mut master = FakeMaster::start().await;
    let mut config = config(master.addr, dir.path());
    // The executor subscribes only once the test says so, so both groups are queued
    // for it before it does.
    config.executor_command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "while [ ! -e \"$AGORA_SANDBOX/go\" ]; do sleep 0.01; done; exec \"$0\"".into(),
        executor_command().remove(0),
    ];
    let agent = start_agent(config).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.run_task_group(
        framework("fw"),
        group_executor("pod"),
        vec![
            shell_task("steady-1", "exec sleep 600"),
            shell_task("steady-2", "exec sleep 600"),
        ],
    )
    .await;
    link.run_task_group(
        framework("fw"),
        group_executor("pod"),
        vec![
            shell_task("buddy", "touch buddy.mark; exec sleep 600"),
            shell_task(
                "doomed",
                "while [ ! -e buddy.mark ]; do sleep 0.01; done; exit 3",
            ),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(task_checkpointed(dir.path(), "pod", "doomed")
        && sandboxes(dir.path(), "fw", "pod").len() == 1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not take both groups in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sandbox = sandboxes(dir.path(), "fw", "pod").remove(0);
    std::fs::write(sandbox.join("go"), b"").unwrap();

    // The failure takes down its own group only.
    let before = until_all_terminal(&mut link, &["doomed", "buddy"]).await;
    let doomed = terminal(&before, "doomed");
    assert_eq!(state_name(doomed.state), "TASK_FAILED", "{doomed:?}");
    let buddy = terminal(&before, "buddy");
    assert_eq!(state_name(buddy.state), "TASK_KILLED", "{buddy:?}");
    assert!(buddy.message.contains("doomed"), "{buddy:?}");

    // The other group runs on until it is killed itself: its tasks' ends name
    // their own group, not the failure of the other.
    link.kill_task("fw", "steady-1", Some(0.5)).await;
    let seen = until_all_terminal(&mut link, &["steady-1", "steady-2"]).await;
    for id in ["steady-1", "steady-2"] {
        let status = terminal(&seen, id);
        assert_eq!(state_name(status.state), "TASK_KILLED", "{id}: {status:?}");
        assert!(!status.message.contains("doomed"), "{id}: {status:?}");
        // Its updates up to the kill came while the other group ended.
        let mut all = before.get(id).cloned().unwrap_or_default();
        all.extend(seen[id].iter().cloned());
        assert_eq!(
            states(&all),
            ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"],
            "{id} ran until its own group was killed"
        );
    }
    assert!(
        terminal(&seen, "steady-2").message.contains("steady-1"),
        "{seen:?}"
    );
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "pod");
    agent.shutdown().await;
}
