//! The driver against a fake master: a tonic `Scheduler` server in the test, on
//! 127.0.0.1:0, that hands every subscription and call to the test body, which plays
//! the master's part event by event.

use std::sync::Arc;
use std::time::Duration;

use agora_proto as pb;
use agora_proto::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use agora_sdk::{
    DriverConfig, DriverError, LEADER_METADATA_KEY, OfferResources, Scheduler, SchedulerDriver,
    SchedulerHandle, TaskBuilder,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Generous bound on every wait, so a broken driver fails the test instead of hanging
/// it; never reached when the driver works.
const PATIENCE: Duration = Duration::from_secs(10);

type EventSender = mpsc::Sender<Result<pb::Event, Status>>;

/// One SUBSCRIBE the fake master received, and the stream to answer it on.
struct Subscription {
    request: pb::SubscribeRequest,
    events: EventSender,
}

/// How the fake master answers SUBSCRIBE.
#[derive(Clone)]
enum Role {
    Leader,
    /// Answers UNAVAILABLE with an `agora-leader` hint.
    Follower {
        leader: String,
    },
    /// Refuses the framework as invalid.
    Refuse,
}

struct FakeMaster {
    role: Role,
    subscribes: mpsc::UnboundedSender<Subscription>,
    calls: mpsc::UnboundedSender<pb::Call>,
    /// A call is handed to the test at once, but answered only with a permit.
    answers: Arc<Semaphore>,
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        match &self.role {
            Role::Follower { leader } => {
                let mut status = Status::unavailable("not the leader");
                status.metadata_mut().insert(
                    LEADER_METADATA_KEY,
                    leader.parse().map_err(|_| Status::internal("bad hint"))?,
                );
                Err(status)
            }
            Role::Refuse => Err(Status::invalid_argument("framework name is reserved")),
            Role::Leader => {
                let (events, rx) = mpsc::channel(16);
                let _ = self.subscribes.send(Subscription {
                    request: request.into_inner(),
                    events,
                });
                Ok(Response::new(ReceiverStream::new(rx)))
            }
        }
    }

    async fn call(&self, request: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let _ = self.calls.send(request.into_inner());
        let permit = self.answers.acquire().await;
        permit.map_err(|_| Status::unavailable("closed"))?.forget();
        Ok(Response::new(pb::CallResponse {}))
    }
}

/// The test's side of a fake master.
struct Master {
    addr: String,
    subscribes: mpsc::UnboundedReceiver<Subscription>,
    calls: mpsc::UnboundedReceiver<pb::Call>,
    answers: Arc<Semaphore>,
}

impl Master {
    async fn start(role: Role) -> Master {
        Self::start_answering(role, Semaphore::MAX_PERMITS).await
    }

    /// A master that answers only `answers` calls until [`Master::answer`] allows more.
    async fn start_answering(role: Role, answers: usize) -> Master {
        let answers = Arc::new(Semaphore::new(answers));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (subscribes_tx, subscribes) = mpsc::unbounded_channel();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let service = SchedulerServer::new(FakeMaster {
            role,
            subscribes: subscribes_tx,
            calls: calls_tx,
            answers: answers.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Master {
            addr,
            subscribes,
            calls,
            answers,
        }
    }

    fn answer(&self, calls: usize) {
        self.answers.add_permits(calls);
    }

    async fn next_subscribe(&mut self) -> Subscription {
        tokio::time::timeout(PATIENCE, self.subscribes.recv())
            .await
            .expect("no SUBSCRIBE reached the master")
            .expect("master gone")
    }

    async fn next_call(&mut self) -> pb::Call {
        tokio::time::timeout(PATIENCE, self.calls.recv())
            .await
            .expect("no call reached the master")
            .expect("master gone")
    }
}

fn event(event: pb::event::Event) -> Result<pb::Event, Status> {
    Ok(pb::Event { event: Some(event) })
}

fn subscribed(
    framework_id: &str,
    stream_id: &str,
    heartbeat_seconds: f64,
) -> Result<pb::Event, Status> {
    event(pb::event::Event::Subscribed(pb::event::Subscribed {
        framework_id: Some(pb::FrameworkId {
            value: framework_id.into(),
        }),
        heartbeat_interval_seconds: heartbeat_seconds,
        master_info: None,
        stream_id: stream_id.into(),
    }))
}

fn offer(id: &str) -> pb::Offer {
    pb::Offer {
        id: Some(pb::OfferId { value: id.into() }),
        agent_id: Some(pb::AgentId {
            value: "agent-1".into(),
        }),
        hostname: "host-1".into(),
        resources: agora_sdk::Resources::parse("cpus:1;mem:128")
            .unwrap()
            .to_proto(),
        ..Default::default()
    }
}

fn update(task: &str, uuid: &[u8]) -> Result<pb::Event, Status> {
    event(pb::event::Event::Update(pb::event::Update {
        status: Some(pb::TaskStatus {
            task_id: Some(pb::TaskId { value: task.into() }),
            agent_id: Some(pb::AgentId {
                value: "agent-1".into(),
            }),
            state: pb::TaskState::TaskRunning as i32,
            uuid: uuid.to_vec(),
            ..Default::default()
        }),
    }))
}

/// What the recording scheduler saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Subscribed(String),
    Offers(Vec<String>),
    Rescinded(String),
    Update(String),
    Error(String),
    Disconnected,
}

/// Records every callback; launches one task per offer; answers a rescind with a
/// reconcile (so a test can see that nothing else was sent before it).
struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
}

impl Scheduler for Recorder {
    async fn subscribed(&mut self, _driver: &SchedulerHandle, info: pb::event::Subscribed) {
        let id = info.framework_id.map(|f| f.value).unwrap_or_default();
        let _ = self.seen.send(Seen::Subscribed(id));
    }

    async fn offers(&mut self, driver: &SchedulerHandle, offers: Vec<pb::Offer>) {
        let ids = offers
            .iter()
            .filter_map(|o| o.id.clone())
            .map(|i| i.value)
            .collect();
        for offer in &offers {
            let mut room = OfferResources::new(offer).unwrap();
            let task = TaskBuilder::new("task-1")
                .shell("echo hi")
                .cpus(0.1)
                .mem(32.0);
            let info = room.take(&task).unwrap();
            driver
                .launch(room.offer_id().clone(), vec![info], None)
                .await
                .unwrap();
        }
        let _ = self.seen.send(Seen::Offers(ids));
    }

    async fn rescinded(&mut self, driver: &SchedulerHandle, offer_id: pb::OfferId) {
        driver.reconcile(Vec::new()).await.unwrap();
        let _ = self.seen.send(Seen::Rescinded(offer_id.value));
    }

    async fn update(&mut self, _driver: &SchedulerHandle, status: pb::TaskStatus) {
        let _ = self
            .seen
            .send(Seen::Update(status.task_id.unwrap_or_default().value));
    }

    async fn error(&mut self, _driver: &SchedulerHandle, message: String) {
        let _ = self.seen.send(Seen::Error(message));
    }

    async fn disconnected(&mut self, _driver: &SchedulerHandle) {
        let _ = self.seen.send(Seen::Disconnected);
    }
}

struct Running {
    handle: SchedulerHandle,
    seen: mpsc::UnboundedReceiver<Seen>,
    run: JoinHandle<Result<(), DriverError>>,
}

impl Running {
    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the scheduler saw nothing")
            .expect("driver gone")
    }

    async fn finish(self) -> Result<(), DriverError> {
        tokio::time::timeout(PATIENCE, self.run)
            .await
            .expect("run() did not return")
            .expect("run() panicked")
    }
}

/// Answers the driver's SUBSCRIBE as framework `fw-1` on stream `stream-1`, once
/// the scheduler has seen it.
async fn subscribe_as_fw1(master: &mut Master, running: &mut Running) -> Subscription {
    let sub = master.next_subscribe().await;
    sub.events
        .send(subscribed("fw-1", "stream-1", 15.0))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    sub
}

fn config(masters: Vec<String>) -> DriverConfig {
    let info = pb::FrameworkInfo {
        name: "test".into(),
        ..Default::default()
    };
    let mut config = DriverConfig::new(masters, info, agora_sdk::discard_logger());
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(50);
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(5);
    config
}

fn start(config: DriverConfig) -> Running {
    let driver = SchedulerDriver::new(config).unwrap();
    let handle = driver.handle();
    let (tx, seen) = mpsc::unbounded_channel();
    let run = tokio::spawn(async move { driver.run(&mut Recorder { seen: tx }).await });
    Running { handle, seen, run }
}

#[tokio::test]
async fn subscribes_then_offers_reach_the_scheduler_and_launches_go_out() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));

    let sub = master.next_subscribe().await;
    let info = sub.request.framework_info.clone().unwrap();
    assert_eq!(info.name, "test");
    assert_eq!(
        info.id, None,
        "a first subscription carries no framework id"
    );
    sub.events
        .send(subscribed("fw-1", "stream-1", 15.0))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(running.handle.framework_id().unwrap().value, "fw-1");

    let offers = pb::event::Offers {
        offers: vec![offer("offer-1")],
    };
    sub.events
        .send(event(pb::event::Event::Offers(offers)))
        .await
        .unwrap();
    let call = master.next_call().await;
    assert_eq!(call.framework_id.unwrap().value, "fw-1");
    assert_eq!(call.stream_id, "stream-1");
    let Some(pb::call::Call::Accept(accept)) = call.call else {
        panic!("expected ACCEPT, got {:?}", call.call);
    };
    assert_eq!(accept.offer_ids[0].value, "offer-1");
    let Some(pb::operation::Operation::Launch(launch)) = &accept.operations[0].operation else {
        panic!("expected LAUNCH");
    };
    assert_eq!(
        launch.task_infos[0].task_id.as_ref().unwrap().value,
        "task-1"
    );
    assert_eq!(
        launch.task_infos[0].agent_id.as_ref().unwrap().value,
        "agent-1"
    );
    assert_eq!(
        running.next_seen().await,
        Seen::Offers(vec!["offer-1".into()])
    );

    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn updates_with_a_uuid_are_acknowledged_after_the_callback() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let sub = subscribe_as_fw1(&mut master, &mut running).await;

    // An update without a uuid needs no acknowledgement; the first call must
    // therefore be the acknowledgement of the second update.
    sub.events.send(update("unreliable", b"")).await.unwrap();
    let uuid: Vec<u8> = (1..=16).collect();
    sub.events.send(update("reliable", &uuid)).await.unwrap();
    let call = master.next_call().await;
    assert_eq!(call.stream_id, "stream-1");
    let Some(pb::call::Call::Acknowledge(ack)) = call.call else {
        panic!("expected ACKNOWLEDGE, got {:?}", call.call);
    };
    assert_eq!(ack.uuid, uuid);
    assert_eq!(ack.task_id.unwrap().value, "reliable");
    assert_eq!(ack.agent_id.unwrap().value, "agent-1");
    // The callback ran before the acknowledgement was sent.
    assert_eq!(
        running.seen.try_recv(),
        Ok(Seen::Update("unreliable".into()))
    );
    assert_eq!(running.seen.try_recv(), Ok(Seen::Update("reliable".into())));

    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

/// While one acknowledgement waits for the master's answer, the next ones queue
/// and then go out together, in order, in one ACKNOWLEDGE_MANY.
#[tokio::test]
async fn acknowledgements_queued_behind_an_unanswered_one_go_out_together() {
    let mut master = Master::start_answering(Role::Leader, 0).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let sub = subscribe_as_fw1(&mut master, &mut running).await;

    sub.events.send(update("first", &[1; 16])).await.unwrap();
    let call = master.next_call().await;
    assert!(
        matches!(&call.call, Some(pb::call::Call::Acknowledge(ack)) if ack.uuid == [1; 16]),
        "{:?}",
        call.call
    );
    for (task, uuid) in [("second", 2), ("third", 3), ("fourth", 4)] {
        sub.events.send(update(task, &[uuid; 16])).await.unwrap();
        // One the master would refuse is left out rather than sink the batch.
        sub.events.send(update("malformed", &[9; 3])).await.unwrap();
    }
    // The driver handles events one by one, each update's acknowledgement queued
    // before the next event: once "last" (no uuid) is seen, all three are queued.
    sub.events.send(update("last", b"")).await.unwrap();
    loop {
        if running.next_seen().await == Seen::Update("last".into()) {
            break;
        }
    }
    assert!(master.calls.try_recv().is_err(), "sent before the answer");

    master.answer(2);
    let call = master.next_call().await;
    let Some(pb::call::Call::AcknowledgeMany(many)) = call.call else {
        panic!("expected ACKNOWLEDGE_MANY, got {:?}", call.call);
    };
    assert_eq!(call.stream_id, "stream-1");
    let acked: Vec<(String, u8)> = many
        .acknowledgements
        .iter()
        .map(|a| (a.task_id.clone().unwrap().value, a.uuid[0]))
        .collect();
    assert_eq!(
        acked,
        [
            ("second".to_string(), 2),
            ("third".to_string(), 3),
            ("fourth".to_string(), 4)
        ]
    );

    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn without_auto_acknowledge_nothing_is_acknowledged() {
    let mut master = Master::start(Role::Leader).await;
    let mut cfg = config(vec![master.addr.clone()]);
    cfg.auto_acknowledge = false;
    let mut running = start(cfg);
    let sub = master.next_subscribe().await;
    sub.events
        .send(subscribed("fw-1", "stream-1", 15.0))
        .await
        .unwrap();
    sub.events.send(update("t", &[7; 16])).await.unwrap();
    let rescind = pb::event::Rescind {
        offer_id: Some(pb::OfferId { value: "o".into() }),
    };
    sub.events
        .send(event(pb::event::Event::Rescind(rescind)))
        .await
        .unwrap();
    // The rescind callback reconciles: had the update been acknowledged, that call
    // would have come first.
    let call = master.next_call().await;
    assert!(
        matches!(call.call, Some(pb::call::Call::Reconcile(_))),
        "{:?}",
        call.call
    );
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(running.next_seen().await, Seen::Update("t".into()));
    assert_eq!(running.next_seen().await, Seen::Rescinded("o".into()));
    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn a_dropped_stream_means_disconnected_then_a_resubscription_with_the_framework_id() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));
    assert_eq!(
        running.handle.decline(Vec::new(), None).await,
        Err(DriverError::NotSubscribed)
    );

    let sub = subscribe_as_fw1(&mut master, &mut running).await;
    drop(sub);

    assert_eq!(running.next_seen().await, Seen::Disconnected);
    let again = master.next_subscribe().await;
    let info = again.request.framework_info.clone().unwrap();
    assert_eq!(info.id.unwrap().value, "fw-1");
    again
        .events
        .send(subscribed("fw-1", "stream-2", 15.0))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));

    // Calls now carry the new stream id.
    running.handle.revive(Vec::new()).await.unwrap();
    assert_eq!(master.next_call().await.stream_id, "stream-2");
    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn heartbeat_silence_means_a_dead_connection() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let sub = master.next_subscribe().await;
    // 5 intervals of 50 ms: a quarter second of silence ends the session. The
    // stream stays open (the sender is held), so only the heartbeat clock can.
    sub.events
        .send(subscribed("fw-1", "stream-1", 0.05))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(running.next_seen().await, Seen::Disconnected);
    let again = master.next_subscribe().await;
    assert_eq!(
        again.request.framework_info.unwrap().id.unwrap().value,
        "fw-1"
    );
    drop(sub);
    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn an_error_event_ends_run_with_an_error() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let sub = master.next_subscribe().await;
    sub.events
        .send(subscribed("fw-1", "stream-1", 15.0))
        .await
        .unwrap();
    let error = pb::event::Error {
        message: "framework fw-1 was removed".into(),
    };
    sub.events
        .send(event(pb::event::Event::Error(error)))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    assert_eq!(
        running.next_seen().await,
        Seen::Error("framework fw-1 was removed".into())
    );
    let handle = running.handle.clone();
    assert_eq!(
        running.finish().await,
        Err(DriverError::Aborted("framework fw-1 was removed".into()))
    );
    assert_eq!(
        handle.kill(pb::TaskId { value: "t".into() }, None).await,
        Err(DriverError::NotSubscribed)
    );
}

#[tokio::test]
async fn followers_redirect_to_the_leader_and_dead_masters_are_skipped() {
    let mut leader = Master::start(Role::Leader).await;
    let follower = Master::start(Role::Follower {
        leader: leader.addr.clone(),
    })
    .await;
    // A port bound but not listening refuses connections, and while it is held no
    // other test can listen there.
    let dead_socket = tokio::net::TcpSocket::new_v4().unwrap();
    dead_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = dead_socket.local_addr().unwrap().to_string();
    let mut running = start(config(vec![dead, follower.addr.clone()]));
    let sub = leader.next_subscribe().await;
    sub.events
        .send(subscribed("fw-1", "stream-1", 15.0))
        .await
        .unwrap();
    assert_eq!(running.next_seen().await, Seen::Subscribed("fw-1".into()));
    running.handle.stop();
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn teardown_is_sent_and_ends_run() {
    let mut master = Master::start(Role::Leader).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let _stream_kept_open = subscribe_as_fw1(&mut master, &mut running).await;
    running.handle.teardown().await.unwrap();
    let call = master.next_call().await;
    assert!(
        matches!(call.call, Some(pb::call::Call::Teardown(_))),
        "{:?}",
        call.call
    );
    assert_eq!(running.finish().await, Ok(()));
}

#[tokio::test]
async fn a_master_refusing_the_framework_ends_run_with_its_message() {
    let master = Master::start(Role::Refuse).await;
    let mut running = start(config(vec![master.addr.clone()]));
    let expected = DriverError::Rejected {
        code: tonic::Code::InvalidArgument,
        message: "framework name is reserved".into(),
    };
    assert_eq!(running.next_seen().await, Seen::Error(expected.to_string()));
    assert_eq!(running.finish().await, Err(expected));
}
