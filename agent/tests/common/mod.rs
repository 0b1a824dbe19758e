//! A fake master (a tonic `AgentLink` server the test drives by hand) and helpers to
//! start agents against it. Every wait is bounded so a broken agent fails a test
//! instead of hanging it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{Agent, AgentConfig, AgentHandle};
use agora_proto as pb;
use agora_proto::agent_link_server::{AgentLink, AgentLinkServer};
use agora_proto::agent_message::Message as FromAgent;
use agora_proto::master_message::Message as ToAgent;
use slog::Drain;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn logger() -> slog::Logger {
    if std::env::var_os("AGORA_TEST_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        slog::Logger::root(drain, slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

/// A fresh directory under the system temp dir, removed by [`TempDir`]'s drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "agora-agent-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One agent stream as the fake master sees it.
pub struct Attach {
    pub inbound: Streaming<pb::AgentMessage>,
    pub outbound: mpsc::Sender<Result<pb::MasterMessage, Status>>,
    /// Messages passed over while looking for something else, oldest first.
    pub skipped: Vec<FromAgent>,
}

impl Attach {
    /// The next message from the agent.
    pub async fn recv(&mut self) -> FromAgent {
        let message = tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("the agent sent nothing in time")
            .expect("the agent stream failed")
            .expect("the agent closed the stream");
        message.message.expect("an empty message from the agent")
    }

    pub async fn send(&self, message: ToAgent) {
        self.outbound
            .send(Ok(pb::MasterMessage {
                message: Some(message),
            }))
            .await
            .expect("the agent stream is gone");
    }

    /// Expects `Register` (or `Reregister`) and accepts it with `agent_id`.
    pub async fn accept(&mut self, agent_id: &str, ping_interval_seconds: f64) -> FromAgent {
        let first = self.recv().await;
        assert!(
            matches!(first, FromAgent::Register(_) | FromAgent::Reregister(_)),
            "the first message registers, got {first:?}"
        );
        self.send(ToAgent::Registered(pb::master_message::Registered {
            agent_id: Some(pb::AgentId {
                value: agent_id.into(),
            }),
            master_info: None,
            ping_interval_seconds,
        }))
        .await;
        first
    }

    /// The first message (skipped earlier or new) that `pick` accepts; messages it
    /// passes over are kept for later searches.
    pub async fn find<T>(&mut self, pick: impl Fn(&FromAgent) -> Option<T>) -> T {
        if let Some(i) = self.skipped.iter().position(|m| pick(m).is_some()) {
            let message = self.skipped.remove(i);
            return pick(&message).expect("picked");
        }
        loop {
            let message = self.recv().await;
            if let Some(found) = pick(&message) {
                return found;
            }
            self.skipped.push(message);
        }
    }

    /// The next status update, passing over other messages (pongs, executor exits).
    pub async fn next_update(&mut self) -> pb::StatusUpdate {
        self.find(|m| match m {
            FromAgent::StatusUpdate(update) => Some(update.clone()),
            _ => None,
        })
        .await
    }

    pub async fn executor_exited(&mut self) -> pb::agent_message::ExecutorExited {
        self.find(|m| match m {
            FromAgent::ExecutorExited(exited) => Some(exited.clone()),
            _ => None,
        })
        .await
    }

    pub async fn pong(&mut self) -> u64 {
        self.find(|m| match m {
            FromAgent::Pong(pong) => Some(pong.seq),
            _ => None,
        })
        .await
    }

    pub async fn ack(&self, update: &pb::StatusUpdate) {
        let status = update.status.as_ref().expect("an update has a status");
        self.send(ToAgent::Acknowledge(pb::master_message::Acknowledge {
            framework_id: update.framework_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        }))
        .await;
    }

    /// Acknowledges every update until (and including) a terminal one; returns them.
    pub async fn updates_until_terminal(&mut self) -> Vec<pb::TaskStatus> {
        let mut seen = Vec::new();
        loop {
            let update = self.next_update().await;
            self.ack(&update).await;
            let status = update.status.expect("status");
            let terminal = agora_core::task_state::is_terminal_raw(status.state);
            seen.push(status);
            if terminal {
                return seen;
            }
        }
    }

    /// Acknowledges updates until one in `state` arrives; returns it.
    pub async fn ack_until(&mut self, state: pb::TaskState) -> pb::TaskStatus {
        loop {
            let update = self.next_update().await;
            self.ack(&update).await;
            let status = update.status.expect("status");
            if status.state == state as i32 {
                return status;
            }
            assert!(
                !agora_core::task_state::is_terminal_raw(status.state),
                "reached {} while waiting for {}",
                state_name(status.state),
                state.as_str_name()
            );
        }
    }

    pub async fn run_task(&self, framework: pb::FrameworkInfo, task: pb::TaskInfo) {
        self.send(ToAgent::RunTask(pb::master_message::RunTask {
            framework_info: Some(framework),
            task: Some(task),
        }))
        .await;
    }

    pub async fn run_task_group(
        &self,
        framework: pb::FrameworkInfo,
        executor: pb::ExecutorInfo,
        tasks: Vec<pb::TaskInfo>,
    ) {
        self.send(ToAgent::RunTaskGroup(pb::master_message::RunTaskGroup {
            framework_info: Some(framework),
            executor: Some(executor),
            task_group: Some(pb::TaskGroupInfo { tasks }),
        }))
        .await;
    }

    pub async fn kill_task(&self, framework_id: &str, task_id: &str, grace: Option<f64>) {
        self.send(ToAgent::KillTask(pb::master_message::KillTask {
            framework_id: Some(pb::FrameworkId {
                value: framework_id.into(),
            }),
            task_id: Some(pb::TaskId {
                value: task_id.into(),
            }),
            kill_policy: grace.map(|g| pb::KillPolicy {
                grace_period_seconds: Some(g),
            }),
        }))
        .await;
    }
}

pub fn state_name(state: i32) -> &'static str {
    pb::TaskState::try_from(state).map_or("INVALID", |s| s.as_str_name())
}

pub fn states(statuses: &[pb::TaskStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| state_name(s.state)).collect()
}

struct FakeMasterService {
    attaches: mpsc::Sender<Attach>,
}

#[tonic::async_trait]
impl AgentLink for FakeMasterService {
    type AttachStream = ReceiverStream<Result<pb::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (outbound, receiver) = mpsc::channel(1024);
        let attach = Attach {
            inbound: request.into_inner(),
            outbound,
            skipped: Vec::new(),
        };
        self.attaches
            .send(attach)
            .await
            .map_err(|_| Status::unavailable("the test is over"))?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// A master the test plays by hand: each agent connection arrives as an [`Attach`].
pub struct FakeMaster {
    pub addr: SocketAddr,
    attaches: mpsc::Receiver<Attach>,
}

impl FakeMaster {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (attaches, receiver) = mpsc::channel(16);
        let service = AgentLinkServer::new(FakeMasterService { attaches });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        FakeMaster {
            addr,
            attaches: receiver,
        }
    }

    /// The next agent connection.
    pub async fn attach(&mut self) -> Attach {
        tokio::time::timeout(WAIT, self.attaches.recv())
            .await
            .expect("no agent connected in time")
            .expect("the fake master stopped")
    }
}

pub fn executor_command() -> Vec<std::ffi::OsString> {
    vec![env!("CARGO_BIN_EXE_agora-executor").into()]
}

/// A configuration for tests: fast retries, short timeouts, the real executor.
pub fn config(master: SocketAddr, work_dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(
        vec![master.to_string()],
        work_dir.to_path_buf(),
        executor_command(),
        logger(),
    );
    config.hostname = "test-host".into();
    config.resources = Some("cpus:2;mem:1024;disk:1024".into());
    config.attributes = "rack:r1".into();
    config.status_update_retry_min = Duration::from_millis(300);
    config.status_update_retry_max = Duration::from_secs(1);
    config.registration_backoff_max = Duration::from_millis(500);
    config.executor_registration_timeout = Duration::from_secs(20);
    config.executor_reregistration_timeout = Duration::from_secs(20);
    config.default_kill_grace = Duration::from_secs(2);
    config.recovery_timeout = Duration::from_secs(30);
    config
}

/// Starts an agent with the test [`config`] on a fresh work dir named after `name`
/// and accepts its registration as `agent-1`; returns the work dir, the fake master,
/// the agent and its stream, each to be kept as long as the test needs it.
pub async fn registered_agent(name: &str) -> (TempDir, FakeMaster, AgentHandle, Attach) {
    let dir = TempDir::new(name);
    let mut master = FakeMaster::start().await;
    let agent = start_agent(config(master.addr, dir.path())).await;
    let mut link = master.attach().await;
    link.accept("agent-1", 30.0).await;
    (dir, master, agent, link)
}

/// Whether the agent has checkpointed `task_id` of `executor_id` of framework `fw`
/// (so it has handled its launch).
pub fn task_checkpointed(work_dir: &Path, executor_id: &str, task_id: &str) -> bool {
    let runs = work_dir
        .join("meta/frameworks/fw/executors")
        .join(executor_id)
        .join("runs");
    std::fs::read_dir(runs).is_ok_and(|runs| {
        runs.filter_map(Result::ok).any(|run| {
            run.path()
                .join("tasks")
                .join(task_id)
                .join("task.info")
                .exists()
        })
    })
}

pub async fn start_agent(config: AgentConfig) -> AgentHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Agent::start(config, listener)
        .await
        .expect("the agent starts")
}

/// Starts an agent again on `addr`, the port of one that was shut down, as a restarted
/// agent process would: with that agent's work dir in `config` it recovers its state,
/// and its executors find it where they left it.
pub async fn restart_agent(addr: SocketAddr, config: AgentConfig) -> AgentHandle {
    let listener = TcpListener::bind(addr)
        .await
        .expect("the stopped agent's port is free");
    Agent::start(config, listener)
        .await
        .expect("the restarted agent starts")
}

pub fn framework(id: &str) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        id: Some(pb::FrameworkId { value: id.into() }),
        name: "test".into(),
        user: "nobody".into(),
        ..Default::default()
    }
}

/// The default executor's info for a task group run by executor `executor_id`.
pub fn group_executor(executor_id: &str) -> pb::ExecutorInfo {
    pb::ExecutorInfo {
        r#type: pb::executor_info::Type::Default as i32,
        executor_id: Some(pb::ExecutorId {
            value: executor_id.into(),
        }),
        ..Default::default()
    }
}

pub fn shell_task(id: &str, command: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        name: id.into(),
        task_id: Some(pb::TaskId { value: id.into() }),
        command: Some(pb::CommandInfo {
            shell: true,
            value: command.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sandboxes (one per run) of an executor.
pub fn sandboxes(work_dir: &Path, framework_id: &str, executor_id: &str) -> Vec<PathBuf> {
    let runs = agora_agent::sandbox::executor_runs_dir(work_dir, framework_id, executor_id);
    std::fs::read_dir(runs)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}
