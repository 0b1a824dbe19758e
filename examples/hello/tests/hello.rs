//! hello against a scripted fake master (a tonic `Scheduler` server on 127.0.0.1:0):
//! it gets three offers, must pack its tasks into them, and the master plays each
//! launched task through RUNNING to the state the test chooses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_hello::HelloOptions;
use agora_sdk::proto as pb;
use pb::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// Bound on the whole run, so a broken hello fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

type EventSender = mpsc::Sender<Result<pb::Event, Status>>;

struct FakeMaster {
    subscribes: mpsc::UnboundedSender<EventSender>,
    calls: mpsc::UnboundedSender<pb::Call>,
    /// Every call, recorded before it is answered, so the record is complete once
    /// hello has returned.
    log: Arc<Mutex<Vec<pb::Call>>>,
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (events, rx) = mpsc::channel(64);
        let _ = self.subscribes.send(events);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn call(&self, request: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let call = request.into_inner();
        self.log.lock().unwrap().push(call.clone());
        let _ = self.calls.send(call);
        Ok(Response::new(pb::CallResponse {}))
    }
}

fn event(event: pb::event::Event) -> Result<pb::Event, Status> {
    Ok(pb::Event { event: Some(event) })
}

fn offer(id: &str, resources: &str) -> pb::Offer {
    pb::Offer {
        id: Some(pb::OfferId { value: id.into() }),
        agent_id: Some(pb::AgentId {
            value: format!("agent-{id}"),
        }),
        hostname: id.into(),
        resources: agora_sdk::Resources::parse(resources).unwrap().to_proto(),
        ..Default::default()
    }
}

/// Starts a master that offers `big` (room for 2 tasks), `tiny` (room for none) and
/// `mid` (room for 1), and moves every launched task to RUNNING, then to `outcome`.
/// Returns its address and its record of calls.
async fn scripted_master(outcome: pb::TaskState) -> (String, Arc<Mutex<Vec<pb::Call>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (subscribes_tx, mut subscribes) = mpsc::unbounded_channel();
    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = SchedulerServer::new(FakeMaster {
        subscribes: subscribes_tx,
        calls: calls_tx,
        log: log.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    tokio::spawn(async move {
        let Some(events) = subscribes.recv().await else {
            return;
        };
        let subscribed = pb::event::Subscribed {
            framework_id: Some(pb::FrameworkId {
                value: "fw-hello".into(),
            }),
            heartbeat_interval_seconds: 15.0,
            master_info: None,
            stream_id: "stream-1".into(),
        };
        let _ = events
            .send(event(pb::event::Event::Subscribed(subscribed)))
            .await;
        let offers = vec![
            offer("big", "cpus:0.25;mem:64"),
            offer("tiny", "cpus:0.05;mem:16"),
            offer("mid", "cpus:0.1;mem:40"),
        ];
        let _ = events
            .send(event(pb::event::Event::Offers(pb::event::Offers {
                offers,
            })))
            .await;
        let mut uuid = 0u8;
        while let Some(call) = calls.recv().await {
            let Some(pb::call::Call::Accept(accept)) = call.call else {
                continue;
            };
            for op in accept.operations {
                let Some(pb::operation::Operation::Launch(launch)) = op.operation else {
                    continue;
                };
                for task in launch.task_infos {
                    for state in [pb::TaskState::TaskRunning, outcome] {
                        uuid += 1;
                        let status = pb::TaskStatus {
                            task_id: task.task_id.clone(),
                            agent_id: task.agent_id.clone(),
                            state: state as i32,
                            message: "scripted".into(),
                            uuid: vec![uuid; 16],
                            ..Default::default()
                        };
                        let update = pb::event::Update {
                            status: Some(status),
                        };
                        let _ = events.send(event(pb::event::Event::Update(update))).await;
                    }
                }
            }
        }
    });
    (addr, log)
}

fn options(master: String) -> HelloOptions {
    HelloOptions {
        masters: vec![master],
        tasks: 3,
        cmd: "echo hello".into(),
        ..Default::default()
    }
}

async fn run_hello(opts: HelloOptions) -> anyhow::Result<agora_hello::HelloReport> {
    tokio::time::timeout(
        PATIENCE,
        agora_hello::run(opts, agora_sdk::discard_logger()),
    )
    .await
    .expect("hello did not finish")
}

#[tokio::test]
async fn hello_packs_offers_and_succeeds_when_every_task_finishes() {
    let (addr, log) = scripted_master(pb::TaskState::TaskFinished).await;
    let report = run_hello(options(addr)).await.unwrap();
    assert_eq!(report.finished, 3);
    assert_eq!(report.accept_to_running.len(), 3);
    assert!(report.percentile(50.0).unwrap() <= report.percentile(99.0).unwrap());

    let calls: Vec<pb::call::Call> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| c.call.clone())
        .collect();
    let launched: Vec<(String, usize)> = calls
        .iter()
        .filter_map(|c| match c {
            pb::call::Call::Accept(a) => Some(a),
            _ => None,
        })
        .map(|a| {
            let tasks = a
                .operations
                .iter()
                .filter_map(|op| match &op.operation {
                    Some(pb::operation::Operation::Launch(l)) => Some(l.task_infos.len()),
                    _ => None,
                })
                .sum();
            (a.offer_ids[0].value.clone(), tasks)
        })
        .collect();
    assert_eq!(launched, [("big".to_string(), 2), ("mid".to_string(), 1)]);
    let declined: Vec<&pb::call::Decline> = calls
        .iter()
        .filter_map(|c| match c {
            pb::call::Call::Decline(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(declined.len(), 1);
    assert_eq!(declined[0].offer_ids[0].value, "tiny");
    assert_eq!(declined[0].filters.unwrap().refuse_seconds, Some(1.0));
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, pb::call::Call::Suppress(_)))
    );
    // Acknowledgements queued while one is in flight go out together.
    let acks: usize = calls
        .iter()
        .map(|c| match c {
            pb::call::Call::Acknowledge(_) => 1,
            pb::call::Call::AcknowledgeMany(many) => many.acknowledgements.len(),
            _ => 0,
        })
        .sum();
    // Every update but the last FINISHED, which arrives after the teardown.
    assert_eq!(acks, 5);
    assert!(
        matches!(calls.last(), Some(pb::call::Call::Teardown(_))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn hello_fails_naming_the_task_that_did_not_finish() {
    let (addr, _log) = scripted_master(pb::TaskState::TaskFailed).await;
    let err = run_hello(options(addr)).await.unwrap_err().to_string();
    assert!(
        err.contains("hello-0") && err.contains("TASK_FAILED"),
        "{err}"
    );
}
