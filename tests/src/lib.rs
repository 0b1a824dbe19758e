//! The in-process cluster harness that Agora's cross-crate tests stand on.
//!
//! # Layout
//! - [`TestCluster`]: a real master and real agents on 127.0.0.1 with OS-chosen ports,
//!   talking real gRPC, launching real processes through the `agora-node` binary's
//!   command executor; everything under one temporary directory.
//! - [`TestFramework`]: a framework on the SDK whose events arrive on a channel, so a
//!   test awaits exactly the event it expects instead of sleeping.
//! - [`RawFramework`]: a framework speaking the gRPC API directly, for sending what
//!   the SDK would never send (bad input).
//! - [`http_get`]: a minimal HTTP/1.1 GET for the master's HTTP endpoints.
//! - [`images`]: a real OCI image layout of the static busybox, and tars of layouts.
//! - [`requirements`]: runc, root and busybox checks that skip a test without them
//!   (and fail it under CI).
//! - [`node_bin!`]: the path of the `agora-node` binary (the `agora` CLI under a
//!   test-only name), for starting real agent processes.
//!
//! Every wait has a generous deadline ([`WAIT`]) so that a broken feature fails the
//! test with a message instead of hanging it; no test relies on a deadline to pass.

pub mod bench;
pub mod images;
pub mod master_group;
pub mod python;
pub mod requirements;
pub mod sim_agent;

pub use master_group::{GroupFramework, MasterGroup, MasterGroupBuilder};
pub use sim_agent::{SimAgent, SimAgentConfig, SimAgentStatus, SimCounters};

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{Agent, AgentConfig, AgentHandle};
use agora_master::{CoreTimings, Master, MasterConfig, MasterHandle};
use agora_proto as pb;
use agora_sdk::{DriverConfig, Scheduler, SchedulerDriver, SchedulerHandle};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// The longest any test waits for one expected event before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// The path of the `agora-node` binary; expands in the calling test crate, where
/// Cargo defines it.
#[macro_export]
macro_rules! node_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_agora-node"))
    };
}

/// A logger for tests: silent unless AGORA_TEST_LOG is set.
pub fn logger() -> slog::Logger {
    use slog::Drain;
    if std::env::var_os("AGORA_TEST_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::CompactFormat::new(decorator).build().fuse();
        slog::Logger::root(std::sync::Mutex::new(drain).fuse(), slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

/// Reads lines of `reader` until one contains `marker`; returns the text after it,
/// up to the next whitespace, comma or slash. The rest of the output is read (and
/// dropped) in the background so the process never writes into a closed pipe.
pub async fn read_until<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    marker: &str,
) -> String {
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let found = within(&format!("a line with '{marker}'"), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("readable output")
                .unwrap_or_else(|| panic!("the process ended before printing '{marker}'"));
            if let Some((_, rest)) = line.split_once(marker) {
                let value: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '/')
                    .collect();
                break value;
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

/// Awaits `future` for at most [`WAIT`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Short timings so that timeouts happen within a test.
pub fn fast_timings() -> CoreTimings {
    CoreTimings {
        agent_ping_interval: Duration::from_millis(100),
        max_missed_pings: 3,
        agent_reregister_timeout: Duration::from_secs(2),
        framework_heartbeat_interval: Duration::from_secs(1),
        default_refuse: Duration::from_secs(5),
        offer_timeout: None,
        allocation_coalesce: Duration::from_millis(5),
    }
}

/// How to build a [`TestCluster`].
pub struct ClusterBuilder {
    agents: usize,
    agent_resources: String,
    timings: CoreTimings,
    executor: PathBuf,
}

impl ClusterBuilder {
    /// `executor` is the `agora-node` binary (see [`node_bin!`]).
    pub fn new(executor: PathBuf) -> Self {
        Self {
            agents: 2,
            agent_resources: "cpus:4;mem:4096;disk:10000;ports:[31000-32000]".into(),
            timings: fast_timings(),
            executor,
        }
    }

    pub fn agents(mut self, n: usize) -> Self {
        self.agents = n;
        self
    }

    pub fn agent_resources(mut self, resources: &str) -> Self {
        self.agent_resources = resources.into();
        self
    }

    pub fn timings(mut self, timings: CoreTimings) -> Self {
        self.timings = timings;
        self
    }

    pub async fn start(self) -> TestCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the master");
        let mut config = MasterConfig::new(dir.path().join("master"), logger());
        config.timings = self.timings;
        let master = Master::start(config.clone(), listener)
            .await
            .expect("the master starts");
        within("the master to lead", master.until_leading()).await;
        let master_addr = master.local_addr().to_string();
        let mut cluster = TestCluster {
            master_addr,
            master: Some(master),
            master_config: config,
            agents: Vec::new(),
            executor: self.executor,
            agent_resources: self.agent_resources,
            dir,
        };
        for _ in 0..self.agents {
            cluster.add_agent().await;
        }
        cluster
    }
}

/// A master and agents in this process.
pub struct TestCluster {
    /// `127.0.0.1:port` of the master.
    pub master_addr: String,
    master: Option<MasterHandle>,
    /// How the master was started, to start it again.
    master_config: MasterConfig,
    /// Running agents with their ids, in start order.
    pub agents: Vec<(String, AgentHandle)>,
    executor: PathBuf,
    agent_resources: String,
    /// Holds the master's data and the agents' work dirs; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// The configuration an agent of this cluster gets.
    pub fn agent_config(&self, work_dir: PathBuf) -> AgentConfig {
        let mut config = AgentConfig::new(
            vec![self.master_addr.clone()],
            work_dir,
            vec![self.executor.clone().into_os_string(), "executor".into()],
            logger(),
        );
        config.resources = Some(self.agent_resources.clone());
        config.attributes = format!("rack:r{}", self.agents.len() + 1);
        config.status_update_retry_min = Duration::from_millis(200);
        config.status_update_retry_max = Duration::from_secs(2);
        config.registration_backoff_max = Duration::from_millis(500);
        config.default_kill_grace = Duration::from_secs(1);
        // Executors re-subscribe to a restarted agent within a second; Mesos' 2 s
        // is too close for a machine running the whole test suite at once, and a
        // test of the timeout itself sets its own.
        config.executor_reregistration_timeout = Duration::from_secs(30);
        config
    }

    /// Starts one more agent and waits until it is registered; returns its id.
    pub async fn add_agent(&mut self) -> String {
        let work_dir = self
            .dir
            .path()
            .join(format!("agent-{}", self.agents.len() + 1));
        self.start_agent(work_dir).await
    }

    /// Stops agent `index` (its executors keep running) and returns it to be started
    /// again with [`TestCluster::restart_agent`].
    pub async fn stop_agent(&mut self, index: usize) -> std::path::PathBuf {
        let (_, agent) = self.agents.remove(index);
        agent.shutdown().await;
        self.dir.path().join(format!("agent-{}", index + 1))
    }

    /// Starts an agent on an existing work dir: it re-registers with its id.
    pub async fn restart_agent(&mut self, work_dir: std::path::PathBuf) -> String {
        self.start_agent(work_dir).await
    }

    async fn start_agent(&mut self, work_dir: std::path::PathBuf) -> String {
        let config = self.agent_config(work_dir);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the agent");
        let agent = Agent::start(config, listener)
            .await
            .expect("the agent starts");
        let id = within("agent registration", agent.wait_registered()).await;
        self.agents.push((id.clone(), agent));
        id
    }

    /// Stops the master and starts a new one on the same address and registry, as
    /// after a crash or an upgrade. Agents reconnect by themselves.
    pub async fn restart_master(&mut self) {
        if let Some(master) = self.master.take() {
            master.shutdown().await;
        }
        let listener = tokio::net::TcpListener::bind(&self.master_addr)
            .await
            .expect("the master's address is free again");
        let master = Master::start(self.master_config.clone(), listener)
            .await
            .expect("the master restarts");
        within("the restarted master to lead", master.until_leading()).await;
        self.master = Some(master);
    }

    /// The master's published state, over the operator API.
    pub async fn state(&self) -> pb::ClusterState {
        let mut client =
            pb::operator_client::OperatorClient::connect(format!("http://{}", self.master_addr))
                .await
                .expect("the operator API answers");
        client
            .get_state(pb::GetStateRequest {})
            .await
            .expect("GetState")
            .into_inner()
    }

    /// The operator event stream.
    pub async fn operator_events(&self) -> tonic::Streaming<pb::OperatorEvent> {
        let mut client =
            pb::operator_client::OperatorClient::connect(format!("http://{}", self.master_addr))
                .await
                .expect("the operator API answers");
        client
            .subscribe(pb::OperatorSubscribeRequest {})
            .await
            .expect("operator Subscribe")
            .into_inner()
    }

    /// Whether an offer is of one of this cluster's real agents.
    pub fn is_own_agent(&self, offer: &pb::Offer) -> bool {
        let agent = offer.agent_id.as_ref().map(|a| a.value.as_str());
        self.agents.iter().any(|(id, _)| Some(id.as_str()) == agent)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops agents and master.
    pub async fn shutdown(mut self) {
        for (_, agent) in self.agents.drain(..) {
            agent.shutdown().await;
        }
        if let Some(master) = self.master.take() {
            master.shutdown().await;
        }
    }
}

impl Drop for TestCluster {
    /// Executors outlive their agents by design; a test must not leave them (or
    /// their tasks) behind, so every process in the session of an executor whose
    /// sandbox lies in this cluster's directory is killed.
    fn drop(&mut self) {
        kill_executor_sessions(self.dir.path());
    }
}

/// SIGKILLs every process whose session leader is an executor working under `dir`.
pub fn kill_executor_sessions(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    let processes: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let session = rest.split_whitespace().nth(3)?.parse().ok()?;
            Some((pid, session))
        })
        .collect();
    let leaders: Vec<i32> = processes
        .iter()
        .filter(|(pid, session)| pid == session)
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| String::from_utf8_lossy(&env).contains(&needle))
        })
        .map(|(pid, _)| *pid)
        .collect();
    for (pid, session) in processes {
        if leaders.contains(&session) {
            // SAFETY: kill(2) on processes this test's cluster started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// What a [`TestFramework`] saw, in order.
#[derive(Debug, Clone)]
pub enum Seen {
    Subscribed(pb::FrameworkId),
    Offers(Vec<pb::Offer>),
    Rescinded(pb::OfferId),
    Update(pb::TaskStatus),
    Message(Vec<u8>),
    Failure(pb::event::Failure),
    Error(String),
    Disconnected,
}

/// The first event in `backlog`, then from `events`, that `pick` maps to `Some`; the
/// events passed over are kept in `backlog`, in order, for later waits.
pub(crate) async fn wait_for_seen<T>(
    events: &mut mpsc::UnboundedReceiver<Seen>,
    backlog: &mut std::collections::VecDeque<Seen>,
    what: &str,
    mut pick: impl FnMut(&Seen) -> Option<T>,
) -> T {
    if let Some((index, found)) = backlog
        .iter()
        .enumerate()
        .find_map(|(i, seen)| pick(seen).map(|found| (i, found)))
    {
        backlog.remove(index);
        return found;
    }
    within(what, async {
        loop {
            match events.recv().await {
                Some(seen) => match pick(&seen) {
                    Some(found) => break found,
                    None => backlog.push_back(seen),
                },
                None => panic!("the driver stopped while waiting for {what}"),
            }
        }
    })
    .await
}

/// Runs an SDK driver whose scheduler forwards every callback to the returned channel.
pub(crate) fn spawn_channel_driver(
    config: DriverConfig,
) -> (
    SchedulerHandle,
    mpsc::UnboundedReceiver<Seen>,
    tokio::task::JoinHandle<Result<(), agora_sdk::DriverError>>,
) {
    let driver = SchedulerDriver::new(config).expect("a valid driver configuration");
    let handle = driver.handle();
    let (tx, events) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut scheduler = ChannelScheduler { events: tx };
        driver.run(&mut scheduler).await
    });
    (handle, events, driver)
}

/// Forwards every callback to a channel.
pub(crate) struct ChannelScheduler {
    pub(crate) events: mpsc::UnboundedSender<Seen>,
}

impl Scheduler for ChannelScheduler {
    async fn subscribed(&mut self, _: &SchedulerHandle, info: pb::event::Subscribed) {
        let _ = self
            .events
            .send(Seen::Subscribed(info.framework_id.unwrap_or_default()));
    }

    async fn offers(&mut self, _: &SchedulerHandle, offers: Vec<pb::Offer>) {
        let _ = self.events.send(Seen::Offers(offers));
    }

    async fn rescinded(&mut self, _: &SchedulerHandle, offer_id: pb::OfferId) {
        let _ = self.events.send(Seen::Rescinded(offer_id));
    }

    async fn update(&mut self, _: &SchedulerHandle, status: pb::TaskStatus) {
        let _ = self.events.send(Seen::Update(status));
    }

    async fn message(&mut self, _: &SchedulerHandle, message: pb::event::Message) {
        let _ = self.events.send(Seen::Message(message.data));
    }

    async fn failure(&mut self, _: &SchedulerHandle, failure: pb::event::Failure) {
        let _ = self.events.send(Seen::Failure(failure));
    }

    async fn error(&mut self, _: &SchedulerHandle, message: String) {
        let _ = self.events.send(Seen::Error(message));
    }

    async fn disconnected(&mut self, _: &SchedulerHandle) {
        let _ = self.events.send(Seen::Disconnected);
    }
}

/// A framework on the SDK whose events the test awaits one by one.
pub struct TestFramework {
    pub handle: SchedulerHandle,
    pub framework_id: pb::FrameworkId,
    events: mpsc::UnboundedReceiver<Seen>,
    /// Events received while waiting for others, oldest first: a wait never loses
    /// an event another wait needs (e.g. offers that arrive before an update).
    backlog: std::collections::VecDeque<Seen>,
    driver: tokio::task::JoinHandle<Result<(), agora_sdk::DriverError>>,
}

impl TestFramework {
    /// A partition-aware framework named `name` with the given failover timeout.
    pub fn info(name: &str, failover_timeout: f64) -> pb::FrameworkInfo {
        pb::FrameworkInfo {
            name: name.into(),
            user: "test".into(),
            failover_timeout,
            capabilities: vec![pb::framework_info::Capability {
                r#type: pb::framework_info::capability::Type::PartitionAware as i32,
            }],
            ..Default::default()
        }
    }

    /// Subscribes and waits for SUBSCRIBED.
    pub async fn start(master: &str, info: pb::FrameworkInfo) -> Self {
        let mut config = DriverConfig::new(vec![master.to_string()], info, logger());
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let (handle, mut events, driver) = spawn_channel_driver(config);
        let framework_id = within("SUBSCRIBED", async {
            loop {
                match events.recv().await {
                    Some(Seen::Subscribed(id)) => break id,
                    Some(_) => continue,
                    None => panic!("the driver stopped before SUBSCRIBED"),
                }
            }
        })
        .await;
        Self {
            handle,
            framework_id,
            events,
            backlog: Default::default(),
            driver,
        }
    }

    /// The next event that `pick` maps to `Some`, skipping the others.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl FnMut(&Seen) -> Option<T>) -> T {
        wait_for_seen(&mut self.events, &mut self.backlog, what, pick).await
    }

    /// The next batch of offers.
    /// The next batch of offers, leaving out offers rescinded since they were made
    /// (a RESCIND always follows its offer on the stream, so it is seen by then).
    pub async fn next_offers(&mut self) -> Vec<pb::Offer> {
        loop {
            let offers = self
                .wait_for("offers", |seen| match seen {
                    Seen::Offers(offers) => Some(offers.clone()),
                    _ => None,
                })
                .await;
            // Rescinds that arrived meanwhile are in the backlog or still queued.
            while let Ok(seen) = self.events.try_recv() {
                self.backlog.push_back(seen);
            }
            let rescinded: std::collections::HashSet<pb::OfferId> = self
                .backlog
                .iter()
                .filter_map(|seen| match seen {
                    Seen::Rescinded(id) => Some(id.clone()),
                    _ => None,
                })
                .collect();
            let live: Vec<pb::Offer> = offers
                .into_iter()
                .filter(|o| o.id.as_ref().is_none_or(|id| !rescinded.contains(id)))
                .collect();
            if !live.is_empty() {
                return live;
            }
        }
    }

    /// The next update of `task_id` in `state`.
    pub async fn wait_for_state(&mut self, task_id: &str, state: pb::TaskState) -> pb::TaskStatus {
        let what = format!("{task_id} to reach {}", state.as_str_name());
        self.wait_for(&what, |seen| match seen {
            Seen::Update(s)
                if s.task_id.as_ref().map(|t| t.value.as_str()) == Some(task_id)
                    && s.state == state as i32 =>
            {
                Some(s.clone())
            }
            _ => None,
        })
        .await
    }

    /// The next terminal update of `task_id`.
    pub async fn wait_for_terminal(&mut self, task_id: &str) -> pb::TaskStatus {
        let what = format!("{task_id} to end");
        self.wait_for(&what, |seen| match seen {
            Seen::Update(s)
                if s.task_id.as_ref().map(|t| t.value.as_str()) == Some(task_id)
                    && agora_core::task_state::is_terminal_raw(s.state) =>
            {
                Some(s.clone())
            }
            _ => None,
        })
        .await
    }

    /// Launches one shell task on the first offer that fits and declines the rest.
    /// Returns the agent it was placed on.
    pub async fn launch_shell(&mut self, task_id: &str, cmd: &str) -> pb::AgentId {
        self.launch_shell_where(task_id, cmd, |_| true).await
    }

    /// Like [`TestFramework::launch_shell`], on an offer that `usable` accepts.
    pub async fn launch_shell_where(
        &mut self,
        task_id: &str,
        cmd: &str,
        usable: impl Fn(&pb::Offer) -> bool,
    ) -> pb::AgentId {
        loop {
            let offers = self.next_offers().await;
            let mut placed = None;
            for offer in offers {
                let offer_id = offer.id.clone().unwrap_or_default();
                let fits = if placed.is_some() || !usable(&offer) {
                    None
                } else {
                    agora_sdk::OfferResources::new(&offer)
                        .ok()
                        .and_then(|mut room| {
                            room.take(
                                &agora_sdk::offer::TaskBuilder::new(task_id)
                                    .shell(cmd)
                                    .cpus(0.1)
                                    .mem(32.0),
                            )
                            .ok()
                        })
                };
                match fits {
                    Some(task) => {
                        let agent = offer.agent_id.clone().unwrap_or_default();
                        self.handle
                            .accept(vec![offer_id], vec![launch(vec![task])], Some(refuse(0.0)))
                            .await
                            .expect("ACCEPT");
                        placed = Some(agent);
                    }
                    None => {
                        let _ = self.handle.decline(vec![offer_id], Some(refuse(0.0))).await;
                    }
                }
            }
            if let Some(agent) = placed {
                return agent;
            }
        }
    }

    /// Launches the tasks `tasks` takes from the resources of the first offer that
    /// comes (it panics if they do not fit) and declines the other offers of that
    /// batch. Returns the agent they were placed on.
    pub async fn launch_on_first_offer(
        &mut self,
        mut tasks: impl FnMut(&mut agora_sdk::OfferResources) -> Vec<pb::TaskInfo>,
    ) -> pb::AgentId {
        loop {
            let mut placed = None;
            for offer in self.next_offers().await {
                let offer_id = offer.id.clone().expect("offer id");
                if placed.is_some() {
                    let _ = self.handle.decline(vec![offer_id], Some(refuse(0.0))).await;
                    continue;
                }
                let mut room = agora_sdk::OfferResources::new(&offer).expect("a valid offer");
                let infos = tasks(&mut room);
                self.handle
                    .accept(vec![offer_id], vec![launch(infos)], Some(refuse(0.0)))
                    .await
                    .expect("ACCEPT");
                placed = Some(offer.agent_id.clone().unwrap_or_default());
            }
            if let Some(agent) = placed {
                return agent;
            }
        }
    }

    /// Stops the driver (the subscription closes; nothing is torn down).
    pub async fn stop(self) {
        self.handle.stop();
        let _ = self.driver.await;
    }
}

/// A LAUNCH operation.
pub fn launch(tasks: Vec<pb::TaskInfo>) -> pb::Operation {
    pb::Operation {
        operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
            task_infos: tasks,
        })),
    }
}

/// Filters with `refuse_seconds`.
pub fn refuse(seconds: f64) -> pb::Filters {
    pb::Filters {
        refuse_seconds: Some(seconds),
    }
}

/// A shell task using `cpus` and `mem` of an agent.
pub fn shell_task(task_id: &str, agent: &pb::AgentId, cmd: &str, resources: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        name: task_id.into(),
        task_id: Some(pb::TaskId {
            value: task_id.into(),
        }),
        agent_id: Some(agent.clone()),
        resources: agora_core::Resources::parse(resources)
            .expect("test resources parse")
            .to_proto(),
        command: Some(pb::CommandInfo {
            shell: true,
            value: cmd.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A framework that speaks gRPC directly, to send what the SDK never would.
pub struct RawFramework {
    pub client: pb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    pub framework_id: pb::FrameworkId,
    pub stream_id: String,
    pub events: tonic::Streaming<pb::Event>,
    /// Acknowledge updates while waiting for events (on by default).
    pub auto_acknowledge: bool,
    /// Events received while waiting for others, oldest first.
    backlog: std::collections::VecDeque<pb::event::Event>,
}

impl RawFramework {
    pub async fn subscribe(master: &str, info: pb::FrameworkInfo) -> Self {
        let mut client = pb::scheduler_client::SchedulerClient::connect(format!("http://{master}"))
            .await
            .expect("the scheduler API answers");
        let mut events = client
            .subscribe(pb::SubscribeRequest {
                framework_info: Some(info),
                suppressed_roles: vec![],
            })
            .await
            .expect("SUBSCRIBE")
            .into_inner();
        let first = within("SUBSCRIBED", events.message())
            .await
            .expect("a readable stream")
            .expect("a first event");
        let Some(pb::event::Event::Subscribed(subscribed)) = first.event else {
            panic!("the first event is not SUBSCRIBED: {first:?}");
        };
        Self {
            auto_acknowledge: true,
            backlog: Default::default(),
            client,
            framework_id: subscribed.framework_id.expect("a framework id"),
            stream_id: subscribed.stream_id,
            events,
        }
    }

    /// Sends a call as this framework.
    pub async fn call(&mut self, call: pb::call::Call) -> Result<(), tonic::Status> {
        self.client
            .call(pb::Call {
                framework_id: Some(self.framework_id.clone()),
                stream_id: self.stream_id.clone(),
                call: Some(call),
            })
            .await
            .map(|_| ())
    }

    /// The next event that `pick` maps to `Some`. Updates that carry a uuid are
    /// acknowledged on the way, as any framework must.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(pb::event::Event) -> Option<T>,
    ) -> T {
        if let Some((index, found)) = self
            .backlog
            .iter()
            .enumerate()
            .find_map(|(i, e)| pick(e.clone()).map(|found| (i, found)))
        {
            self.backlog.remove(index);
            return found;
        }
        within(what, async {
            loop {
                let event = self
                    .events
                    .message()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("the event stream failed while waiting for {what}: {e}")
                    })
                    .unwrap_or_else(|| panic!("the event stream ended while waiting for {what}"));
                if let Some(pb::event::Event::Update(update)) = &event.event
                    && self.auto_acknowledge
                    && let Some(status) = update.status.as_ref().filter(|s| !s.uuid.is_empty())
                {
                    let ack = pb::call::Acknowledge {
                        agent_id: status.agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone(),
                    };
                    self.call(pb::call::Call::Acknowledge(ack))
                        .await
                        .expect("ACKNOWLEDGE");
                }
                let Some(event) = event.event else { continue };
                match pick(event.clone()) {
                    Some(found) => break found,
                    None => self.backlog.push_back(event),
                }
            }
        })
        .await
    }

    pub async fn next_offers(&mut self) -> Vec<pb::Offer> {
        self.wait_for("offers", |e| match e {
            pb::event::Event::Offers(o) => Some(o.offers),
            _ => None,
        })
        .await
    }

    /// The next update of `task_id`.
    pub async fn next_update(&mut self, task_id: &str) -> pb::TaskStatus {
        let what = format!("an update of {task_id}");
        self.wait_for(&what, |e| match e {
            pb::event::Event::Update(u) => u
                .status
                .filter(|s| s.task_id.as_ref().map(|t| t.value.as_str()) == Some(task_id)),
            _ => None,
        })
        .await
    }

    pub async fn accept(
        &mut self,
        offer_ids: Vec<pb::OfferId>,
        tasks: Vec<pb::TaskInfo>,
    ) -> Result<(), tonic::Status> {
        self.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids,
            operations: vec![launch(tasks)],
            filters: Some(refuse(0.0)),
        }))
        .await
    }
}

/// GET `path` from `addr` over HTTP/1.1; returns the status code and body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    within("an HTTP response", http_exchange(addr, "GET", path, ""))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// One HTTP/1.1 request with a JSON body on a fresh connection: (status, body).
/// Errors are sentences (for benchmarks, which report rather than panic).
pub async fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read the answer to {method} {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` HTTP/1.1 response, joined.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The parent pid of a process.
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `condition` holds, checking every 20 ms, for at most [`WAIT`]. For
/// state outside the cluster's events (an OS process ending), where there is nothing
/// to await.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads a pid a task wrote to `path`, waiting for the file.
pub async fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    eventually("the task to write its pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap_or_default()
}
