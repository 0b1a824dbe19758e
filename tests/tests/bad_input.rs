//! Bad input from frameworks and agents gets a clear error, and the master keeps
//! serving everyone else. One test per case, each on its own cluster.

use agora_proto as pb;
use agora_tests::{
    ClusterBuilder, RawFramework, TestCluster, TestFramework, node_bin, shell_task, within,
};
use pb::agent_message::Message as FromAgent;
use pb::master_message::Message as ToAgent;

async fn cluster() -> TestCluster {
    ClusterBuilder::new(node_bin!()).agents(1).start().await
}

async fn framework(cluster: &TestCluster) -> RawFramework {
    RawFramework::subscribe(&cluster.master_addr, TestFramework::info("raw", 0.0)).await
}

/// After bad input, a fresh framework still gets offers and runs a task to the end.
/// The misbehaving framework, if any, tears down first: it holds offers it never
/// answers, which would otherwise (rightly) keep them from the newcomer.
async fn master_still_serves(cluster: &TestCluster, misbehaving: Option<&mut RawFramework>) {
    if let Some(fw) = misbehaving {
        fw.call(pb::call::Call::Teardown(pb::call::Teardown {}))
            .await
            .expect("TEARDOWN");
    }
    let mut fw =
        TestFramework::start(&cluster.master_addr, TestFramework::info("bystander", 0.0)).await;
    fw.launch_shell_where("fine", "true", |offer| cluster.is_own_agent(offer))
        .await;
    let status = fw.wait_for_terminal("fine").await;
    assert_eq!(status.state(), pb::TaskState::TaskFinished);
    fw.stop().await;
}

/// The next TASK_ERROR the framework receives, whatever its task.
async fn next_task_error(fw: &mut RawFramework, what: &str) -> pb::TaskStatus {
    fw.wait_for(what, |e| match e {
        pb::event::Event::Update(u) => u.status.filter(|s| s.state() == pb::TaskState::TaskError),
        _ => None,
    })
    .await
}

fn offer_parts(offer: &pb::Offer) -> (pb::OfferId, pb::AgentId) {
    (
        offer.id.clone().expect("offer id"),
        offer.agent_id.clone().expect("agent id"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_an_unknown_offer_drops_the_tasks() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let offers = fw.next_offers().await;
    let (_, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![pb::OfferId {
            value: "no-such-offer".into(),
        }],
        vec![shell_task("t1", &agent, "true", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT is answered through updates");
    let status = fw.next_update("t1").await;
    assert_eq!(status.state(), pb::TaskState::TaskDropped, "{status:?}");
    assert_eq!(status.reason(), pb::task_status::Reason::InvalidOffers);
    assert!(status.message.contains("no-such-offer"), "{status:?}");
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_can_be_used_only_once() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![offer.clone()],
        vec![shell_task("first", &agent, "true", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    fw.accept(
        vec![offer],
        vec![shell_task("second", &agent, "true", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    let status = fw.next_update("second").await;
    assert_eq!(status.state(), pb::TaskState::TaskDropped, "{status:?}");
    assert!(status.message.contains("no longer valid"), "{status:?}");
    let first = fw
        .wait_for("first to finish", |e| match e {
            pb::event::Event::Update(u) => u.status.filter(|s| {
                s.task_id.as_ref().is_some_and(|t| t.value == "first")
                    && s.state() == pb::TaskState::TaskFinished
            }),
            _ => None,
        })
        .await;
    assert_eq!(first.state(), pb::TaskState::TaskFinished);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_more_than_offered_is_a_task_error() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![offer],
        vec![shell_task("greedy", &agent, "true", "cpus:100;mem:32")],
    )
    .await
    .expect("ACCEPT");
    let status = fw.next_update("greedy").await;
    assert_eq!(status.state(), pb::TaskState::TaskError, "{status:?}");
    assert!(
        status.message.contains("more resources than offered"),
        "{status:?}"
    );
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_the_id_of_a_live_task_is_a_task_error() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![offer],
        vec![shell_task("dup", &agent, "sleep 1000", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![offer],
        vec![shell_task("dup", &agent, "true", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    let status = next_task_error(&mut fw, "the duplicate's TASK_ERROR").await;
    assert!(
        status.message.contains("already used by a live task"),
        "{status:?}"
    );
    fw.call(pb::call::Call::Kill(pb::call::Kill {
        task_id: Some(pb::TaskId {
            value: "dup".into(),
        }),
        agent_id: Some(agent),
        kill_policy: None,
    }))
    .await
    .expect("KILL");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_nan_and_absurd_resources_are_task_errors() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    let with_cpus = |id: &str, cpus: f64| {
        let mut task = shell_task(id, &agent, "true", "mem:32");
        task.resources.push(pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(cpus)),
            ..Default::default()
        });
        task
    };
    let mut no_command = shell_task("no-command", &agent, "true", "cpus:0.1;mem:32");
    no_command.command = None;
    fw.accept(
        vec![offer],
        vec![
            with_cpus("negative", -1.0),
            with_cpus("nan", f64::NAN),
            with_cpus("absurd", 1e300),
            no_command,
        ],
    )
    .await
    .expect("ACCEPT");
    for (task, expected) in [
        ("negative", "negative"),
        ("nan", "not a finite number"),
        ("absurd", "exceeds the limit"),
        ("no-command", "needs a command"),
    ] {
        let status = fw.next_update(task).await;
        assert_eq!(
            status.state(),
            pb::TaskState::TaskError,
            "{task}: {status:?}"
        );
        assert!(status.message.contains(expected), "{task}: {status:?}");
    }
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_subscribing_are_refused() {
    let cluster = cluster().await;
    let mut client =
        pb::scheduler_client::SchedulerClient::connect(format!("http://{}", cluster.master_addr))
            .await
            .expect("connect");
    let refused = client
        .call(pb::Call {
            framework_id: Some(pb::FrameworkId {
                value: "nobody".into(),
            }),
            stream_id: "none".into(),
            call: Some(pb::call::Call::Revive(pb::call::Revive { roles: vec![] })),
        })
        .await
        .expect_err("an unknown framework cannot call");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("SUBSCRIBE first"), "{refused:?}");

    // A subscribed framework with the wrong stream id is refused too.
    let mut fw = framework(&cluster).await;
    let live_stream = std::mem::replace(&mut fw.stream_id, "stale".into());
    let refused = fw
        .call(pb::call::Call::Suppress(pb::call::Suppress {
            roles: vec![],
        }))
        .await
        .expect_err("a stale stream id is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    fw.stream_id = live_stream;

    // Malformed subscriptions.
    let no_info = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect_err("SUBSCRIBE needs framework_info");
    assert_eq!(no_info.code(), tonic::Code::InvalidArgument);
    let mut nan_timeout = TestFramework::info("nan", 0.0);
    nan_timeout.failover_timeout = f64::NAN;
    let bad = client
        .subscribe(pb::SubscribeRequest {
            framework_info: Some(nan_timeout),
            suppressed_roles: vec![],
        })
        .await
        .expect_err("a NaN failover timeout is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("failover_timeout"), "{bad:?}");
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

/// A hand-driven agent connection.
struct RawAgent {
    to_master: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    from_master: tonic::Streaming<pb::MasterMessage>,
}

impl RawAgent {
    async fn attach(master: &str, first: FromAgent) -> Result<Self, tonic::Status> {
        let mut client =
            pb::agent_link_client::AgentLinkClient::connect(format!("http://{master}"))
                .await
                .expect("connect");
        let (to_master, rx) = tokio::sync::mpsc::channel(16);
        to_master
            .send(pb::AgentMessage {
                message: Some(first),
            })
            .await
            .expect("queue the first message");
        let from_master = client
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            to_master,
            from_master,
        })
    }

    async fn send(&self, message: Option<FromAgent>) {
        self.to_master
            .send(pb::AgentMessage { message })
            .await
            .expect("send to the master");
    }

    /// The next message from the master that `pick` accepts.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(ToAgent) -> Option<T>) -> T {
        let stream = &mut self.from_master;
        within(what, async {
            loop {
                let message = stream
                    .message()
                    .await
                    .expect("master stream")
                    .expect("a message");
                if let Some(found) = message.message.and_then(&mut pick) {
                    break found;
                }
            }
        })
        .await
    }

    async fn next_error(&mut self) -> String {
        self.wait_for("an error from the master", |m| match m {
            ToAgent::Error(e) => Some(e.message),
            _ => None,
        })
        .await
    }
}

fn register(resources: &str) -> FromAgent {
    FromAgent::Register(pb::agent_message::Register {
        agent_info: Some(pb::AgentInfo {
            hostname: "raw-agent".into(),
            resources: agora_core::Resources::parse(resources)
                .expect("parse")
                .to_proto(),
            ..Default::default()
        }),
        version: "test".into(),
    })
}

fn update(framework: &str, task: &str) -> FromAgent {
    FromAgent::StatusUpdate(pb::StatusUpdate {
        framework_id: Some(pb::FrameworkId {
            value: framework.into(),
        }),
        executor_id: Some(pb::ExecutorId { value: task.into() }),
        status: Some(pb::TaskStatus {
            task_id: Some(pb::TaskId { value: task.into() }),
            state: pb::TaskState::TaskRunning as i32,
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            ..Default::default()
        }),
        latest_state: pb::TaskState::TaskRunning as i32,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reporting_unknown_tasks_gets_an_error() {
    let cluster = cluster().await;
    let mut fw = framework(&cluster).await;
    let framework_id = fw.framework_id.value.clone();
    let mut agent = RawAgent::attach(&cluster.master_addr, register("cpus:1;mem:128"))
        .await
        .expect("registration");
    agent
        .wait_for("registered", |m| {
            matches!(m, ToAgent::Registered(_)).then_some(())
        })
        .await;

    // A task of a framework the master knows, that the master never launched: the
    // agent is told, and the framework hears of it to decide (e.g. kill it).
    agent.send(Some(update(&framework_id, "ghost"))).await;
    let error = agent.next_error().await;
    assert!(
        error.contains("ghost") && error.contains("does not know"),
        "{error}"
    );
    let status = fw.next_update("ghost").await;
    assert_eq!(status.state(), pb::TaskState::TaskRunning);

    // A framework nobody knows: the agent is told, and the update acknowledged so
    // it does not retry forever.
    agent.send(Some(update("no-such-framework", "lost"))).await;
    let error = agent.next_error().await;
    assert!(error.contains("unknown framework"), "{error}");
    agent
        .wait_for("an acknowledgement", |m| {
            matches!(m, ToAgent::Acknowledge(_)).then_some(())
        })
        .await;
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sending_malformed_messages_gets_errors() {
    let cluster = cluster().await;

    // Not registering first, or registering with bad resources, is refused outright.
    let not_first = RawAgent::attach(
        &cluster.master_addr,
        FromAgent::Pong(pb::agent_message::Pong { seq: 1 }),
    )
    .await
    .err()
    .expect("a stream must start with register");
    assert_eq!(
        not_first.code(),
        tonic::Code::InvalidArgument,
        "{not_first:?}"
    );
    let mut nan = register("mem:128");
    if let FromAgent::Register(r) = &mut nan
        && let Some(info) = r.agent_info.as_mut()
    {
        info.resources.push(pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(f64::NAN)),
            ..Default::default()
        });
    }
    let bad_resources = RawAgent::attach(&cluster.master_addr, nan)
        .await
        .err()
        .expect("NaN resources are refused");
    assert_eq!(bad_resources.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_resources.message().contains("finite"),
        "{bad_resources:?}"
    );

    // On a registered stream, each bad message gets an error and the stream lives on.
    let mut agent = RawAgent::attach(&cluster.master_addr, register("cpus:1;mem:128"))
        .await
        .expect("registration");
    agent
        .wait_for("registered", |m| {
            matches!(m, ToAgent::Registered(_)).then_some(())
        })
        .await;
    agent.send(None).await;
    assert!(agent.next_error().await.contains("empty message"));
    agent.send(Some(register("cpus:1;mem:128"))).await;
    assert!(agent.next_error().await.contains("already registered"));
    let mut short_uuid = update("x", "t");
    if let FromAgent::StatusUpdate(u) = &mut short_uuid
        && let Some(status) = u.status.as_mut()
    {
        status.uuid = vec![1, 2, 3];
    }
    agent.send(Some(short_uuid)).await;
    assert!(agent.next_error().await.contains("uuid"));
    let mut bad_id = update("x", "a/b");
    if let FromAgent::StatusUpdate(u) = &mut bad_id {
        u.status.as_mut().expect("status").task_id = Some(pb::TaskId {
            value: "a/b".into(),
        });
    }
    agent.send(Some(bad_id)).await;
    assert!(agent.next_error().await.contains("task_id"));
    master_still_serves(&cluster, None).await;
    cluster.shutdown().await;
}

/// A framework that acknowledges nothing by itself, running a `true` task of each
/// name on its first offer.
async fn unacknowledging_framework(cluster: &TestCluster, tasks: &[&str]) -> RawFramework {
    let mut fw = framework(cluster).await;
    fw.auto_acknowledge = false;
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    let tasks = tasks
        .iter()
        .map(|name| shell_task(name, &agent, "true", "cpus:0.1;mem:32"))
        .collect();
    fw.accept(vec![offer], tasks).await.expect("ACCEPT");
    fw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_the_id_of_a_task_whose_end_is_unacknowledged_is_a_task_error() {
    let cluster = cluster().await;
    let mut fw = unacknowledging_framework(&cluster, &["once"]).await;
    // Every update but the terminal one is acknowledged: the task has ended, but the
    // agent still holds it until the framework acknowledges that.
    loop {
        let status = fw.next_update("once").await;
        if agora_core::task_state::is_terminal_raw(status.state) {
            assert_eq!(status.state(), pb::TaskState::TaskFinished);
            break;
        }
        fw.call(pb::call::Call::Acknowledge(pb::call::Acknowledge {
            agent_id: status.agent_id,
            task_id: status.task_id,
            uuid: status.uuid,
        }))
        .await
        .expect("ACKNOWLEDGE");
    }
    let offers = fw.next_offers().await;
    let (offer, agent) = offer_parts(&offers[0]);
    fw.accept(
        vec![offer],
        vec![shell_task("once", &agent, "true", "cpus:0.1;mem:32")],
    )
    .await
    .expect("ACCEPT");
    let status = next_task_error(&mut fw, "the relaunch's TASK_ERROR").await;
    assert!(status.message.contains("not acknowledged"), "{status:?}");
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}

/// ACKNOWLEDGE_MANY: a malformed or oversized batch is refused whole; a good one
/// acknowledges each update (each task's next update comes only then); one naming
/// an unknown agent is answered NOT_FOUND while the rest still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_many_acknowledges_each_and_refuses_malformed_batches() {
    let cluster = cluster().await;
    let mut fw = unacknowledging_framework(&cluster, &["a", "b"]).await;
    let ack = |status: &pb::TaskStatus| pb::call::Acknowledge {
        agent_id: status.agent_id.clone(),
        task_id: status.task_id.clone(),
        uuid: status.uuid.clone(),
    };
    let many = |acknowledgements| {
        pb::call::Call::AcknowledgeMany(pb::call::AcknowledgeMany { acknowledgements })
    };
    let mut a = fw.next_update("a").await;
    let mut b = fw.next_update("b").await;

    let short_uuid = pb::call::Acknowledge {
        uuid: vec![1, 2, 3],
        ..ack(&a)
    };
    let refused = fw
        .call(many(vec![ack(&a), short_uuid]))
        .await
        .expect_err("a batch with a malformed acknowledgement is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("uuid"), "{refused:?}");
    let refused = fw
        .call(many(vec![ack(&a); 1025]))
        .await
        .expect_err("more than 1024 acknowledgements are refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("acknowledge_many.acknowledgements"),
        "{refused:?}"
    );

    // Each task ends only if every one of its updates is acknowledged.
    loop {
        let stranger = pb::call::Acknowledge {
            agent_id: Some(pb::AgentId {
                value: "no-such-agent".into(),
            }),
            ..ack(&a)
        };
        match fw.call(many(vec![ack(&a), stranger, ack(&b)])).await {
            Err(e) if e.code() == tonic::Code::NotFound => {
                assert!(e.message().contains("no-such-agent"), "{e:?}");
            }
            other => panic!("the unknown agent is not named: {other:?}"),
        }
        let a_ended = agora_core::task_state::is_terminal_raw(a.state);
        let b_ended = agora_core::task_state::is_terminal_raw(b.state);
        if a_ended && b_ended {
            break;
        }
        if !a_ended {
            a = fw.next_update("a").await;
        }
        if !b_ended {
            b = fw.next_update("b").await;
        }
    }
    assert_eq!(a.state(), pb::TaskState::TaskFinished);
    assert_eq!(b.state(), pb::TaskState::TaskFinished);
    master_still_serves(&cluster, Some(&mut fw)).await;
    cluster.shutdown().await;
}
