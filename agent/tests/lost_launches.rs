//! What an executor is sent when it (re-)subscribes, checked with a fake executor
//! that the test speaks for by hand: the agent starts a shell that hands the test
//! its token and waits, and the test subscribes, breaks streams and re-subscribes
//! as an executor would.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto as pb;
use agora_proto::executor_api_client::ExecutorApiClient;
use agora_proto::executor_event::Event;
use agora_proto::task_status::Reason;
use common::*;
use tonic::Streaming;

/// An executor that writes its token to `token` in its sandbox and exits once the
/// test creates `stop` there.
fn fake_executor_config(master: std::net::SocketAddr, work_dir: &Path) -> agora_agent::AgentConfig {
    let mut config = config(master, work_dir);
    config.executor_command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cd \"$AGORA_SANDBOX\" && printf %s \"$AGORA_EXECUTOR_TOKEN\" > token.new && \
         mv token.new token && while [ ! -e stop ]; do sleep 0.05; done"
            .into(),
    ];
    config
}

/// The sandbox and token of the (only) run of `executor_id`, once it started.
async fn started_executor(work_dir: &Path, executor_id: &str) -> (PathBuf, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(sandbox) = sandboxes(work_dir, "fw", executor_id).first()
            && let Ok(token) = std::fs::read_to_string(sandbox.join("token"))
        {
            return (sandbox.clone(), token);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "executor '{executor_id}' did not start in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_checkpointed(work_dir: &Path, executor_id: &str, task_id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !task_checkpointed(work_dir, executor_id, task_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task '{task_id}' was not checkpointed in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct FakeExecutor {
    client: ExecutorApiClient<tonic::transport::Channel>,
    executor_id: String,
    token: String,
}

impl FakeExecutor {
    async fn connect(agent: &agora_agent::AgentHandle, executor_id: &str, token: String) -> Self {
        let client = ExecutorApiClient::connect(format!("http://{}", agent.local_addr()))
            .await
            .expect("the executor API answers");
        Self {
            client,
            executor_id: executor_id.into(),
            token,
        }
    }

    /// Subscribes saying it knows `known`; returns the event stream after
    /// SUBSCRIBED.
    async fn subscribe(&mut self, known: &[pb::TaskInfo]) -> Streaming<pb::ExecutorEvent> {
        let mut events = self
            .client
            .subscribe(pb::ExecutorSubscribe {
                framework_id: Some(pb::FrameworkId { value: "fw".into() }),
                executor_id: Some(pb::ExecutorId {
                    value: self.executor_id.clone(),
                }),
                token: self.token.clone(),
                unacknowledged_tasks: known.to_vec(),
                unacknowledged_updates: Vec::new(),
            })
            .await
            .expect("the agent takes the subscription")
            .into_inner();
        let first = next_event(&mut events).await;
        assert!(matches!(first, Event::Subscribed(_)), "{first:?}");
        events
    }

    async fn update(&mut self, task_id: &str, state: pb::TaskState) {
        self.client
            .update(pb::ExecutorUpdate {
                framework_id: Some(pb::FrameworkId { value: "fw".into() }),
                executor_id: Some(pb::ExecutorId {
                    value: self.executor_id.clone(),
                }),
                token: self.token.clone(),
                status: Some(pb::TaskStatus {
                    task_id: Some(pb::TaskId {
                        value: task_id.into(),
                    }),
                    state: state as i32,
                    uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ..Default::default()
                }),
            })
            .await
            .expect("the agent takes the update");
    }
}

async fn next_event(events: &mut Streaming<pb::ExecutorEvent>) -> Event {
    tokio::time::timeout(WAIT, events.message())
        .await
        .expect("no event in time")
        .expect("the event stream failed")
        .expect("the event stream ended")
        .event
        .expect("an empty event")
}

fn launched_ids(event: &Event) -> Vec<String> {
    let tasks = match event {
        Event::Launch(launch) => launch.task.iter().cloned().collect(),
        Event::LaunchGroup(group) => group
            .task_group
            .as_ref()
            .map(|g| g.tasks.clone())
            .unwrap_or_default(),
        other => panic!("expected a launch, got {other:?}"),
    };
    tasks
        .iter()
        .map(|t| t.task_id.clone().unwrap_or_default().value)
        .collect()
}

/// The next update not of `done` (tasks whose end was seen already: the agent
/// sends such an update again when it restarted before it had the
/// acknowledgement), acknowledged.
async fn next_new_update(link: &mut Attach, done: &[&str]) -> pb::TaskStatus {
    loop {
        let update = link.next_update().await;
        link.ack(&update).await;
        let status = update.status.expect("an update has a status");
        let task_id = status.task_id.clone().unwrap_or_default().value;
        if !done.contains(&task_id.as_str()) {
            return status;
        }
    }
}

#[tokio::test]
async fn a_launch_lost_with_a_broken_stream_is_sent_again_on_resubscription() {
    let dir = TempDir::new("lost-launch");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(fake_executor_config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    link.run_task(framework("fw"), shell_task("t1", "true"))
        .await;
    let (sandbox, token) = started_executor(dir.path(), "t1").await;
    let mut executor = FakeExecutor::connect(&agent, "t1", token).await;

    // The LAUNCH leaves on a stream that breaks before the executor takes it in.
    let mut events = executor.subscribe(&[]).await;
    assert_eq!(launched_ids(&next_event(&mut events).await), ["t1"]);
    drop(events);

    // Re-subscribing without the task: the agent launches it again instead of
    // leaving it STAGING for good.
    let mut events = executor.subscribe(&[]).await;
    let relaunch = next_event(&mut events).await;
    assert_eq!(launched_ids(&relaunch), ["t1"]);
    executor.update("t1", pb::TaskState::TaskRunning).await;
    let running = link.ack_until(pb::TaskState::TaskRunning).await;
    assert_eq!(state_name(running.state), "TASK_RUNNING");
    drop(events);

    // Once the executor reported on the task, a re-subscription that does not name
    // it launches nothing: the next event is the kill.
    let mut events = executor.subscribe(&[]).await;
    link.kill_task("fw", "t1", Some(0.5)).await;
    let next = next_event(&mut events).await;
    assert!(matches!(next, Event::Kill(_)), "{next:?}");
    executor.update("t1", pb::TaskState::TaskKilled).await;
    assert_eq!(
        states(&link.updates_until_terminal().await),
        ["TASK_KILLED"]
    );
    std::fs::write(sandbox.join("stop"), b"").unwrap();
    let exited = link.executor_exited().await;
    assert_eq!(exited.executor_id.unwrap().value, "t1");
    agent.shutdown().await;
}

#[tokio::test]
async fn queued_groups_reach_the_executor_apart_and_a_kill_takes_only_its_group() {
    let dir = TempDir::new("queued-groups");
    let mut master = FakeMaster::start().await;
    let agent = start_agent(fake_executor_config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    let mut fw = framework("fw");
    fw.capabilities.push(pb::framework_info::Capability {
        r#type: pb::framework_info::capability::Type::PartitionAware as i32,
    });
    link.run_task_group(
        fw.clone(),
        group_executor("pod"),
        vec![shell_task("a1", "true"), shell_task("a2", "true")],
    )
    .await;
    link.run_task_group(
        fw.clone(),
        group_executor("pod"),
        vec![shell_task("b1", "true")],
    )
    .await;
    link.run_task_group(
        fw.clone(),
        group_executor("pod"),
        vec![shell_task("c1", "true"), shell_task("c2", "true")],
    )
    .await;
    let (sandbox, token) = started_executor(dir.path(), "pod").await;
    until_checkpointed(dir.path(), "pod", "c2").await;

    // A kill before the executor subscribed ends the task's own group only.
    link.kill_task("fw", "c1", Some(0.5)).await;
    let mut killed = Vec::new();
    while killed.len() < 2 {
        let update = link.next_update().await;
        link.ack(&update).await;
        let status = update.status.unwrap();
        assert_eq!(state_name(status.state), "TASK_KILLED", "{status:?}");
        assert_eq!(status.reason, Reason::TaskKilledDuringLaunch as i32);
        killed.push(status.task_id.unwrap().value);
    }
    killed.sort();
    assert_eq!(killed, ["c1", "c2"]);

    // The agent restarts before the executor subscribes: which group each task is
    // of survives in the checkpoints.
    agent.shutdown().await;
    drop(link);
    let agent = start_agent(fake_executor_config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;

    // The groups queued for it arrive as one LAUNCH_GROUP each.
    let mut executor = FakeExecutor::connect(&agent, "pod", token).await;
    let mut events = executor.subscribe(&[]).await;
    let first = next_event(&mut events).await;
    assert!(matches!(first, Event::LaunchGroup(_)), "{first:?}");
    assert_eq!(launched_ids(&first), ["a1", "a2"]);
    let second = next_event(&mut events).await;
    assert!(matches!(second, Event::LaunchGroup(_)), "{second:?}");
    assert_eq!(launched_ids(&second), ["b1"]);
    drop(events);

    // Re-subscribing with part of a group: the rest cannot be launched alone (that
    // would split the group), so it is dropped (lost, for a framework that is not
    // partition-aware), as Mesos does; the group it never got is sent again.
    let a1 = shell_task("a1", "true");
    let mut events = executor.subscribe(&[a1]).await;
    let again = next_event(&mut events).await;
    assert_eq!(launched_ids(&again), ["b1"]);
    let status = next_new_update(&mut link, &["c1", "c2"]).await;
    assert_eq!(status.task_id.unwrap().value, "a2");
    assert_eq!(
        state_name(status.state),
        "TASK_DROPPED",
        "{}",
        status.message
    );
    assert_eq!(status.reason, Reason::ExecutorUnregistered as i32);
    assert!(
        status.message.contains("never reached"),
        "{}",
        status.message
    );

    // The executor goes away: what is left of its tasks fails.
    std::fs::write(sandbox.join("stop"), b"").unwrap();
    let mut failed = Vec::new();
    while failed.len() < 2 {
        let status = next_new_update(&mut link, &["c1", "c2"]).await;
        assert_eq!(state_name(status.state), "TASK_FAILED", "{status:?}");
        failed.push(status.task_id.unwrap().value);
    }
    failed.sort();
    assert_eq!(failed, ["a1", "b1"]);
    agent.shutdown().await;
}
