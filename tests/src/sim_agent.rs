//! [`SimAgent`]: an agent that speaks the real `AgentLink` protocol but runs nothing,
//! light enough that a thousand of them share one process (one tokio task and one
//! HTTP/2 connection each).
//!
//! It does what `agent/src/master_link.rs` and the agent actor do on the wire, in
//! the same order: connect, send `register` (no id yet) or `reregister` (its id, a
//! `TaskReport` for every task it holds and the infos of their frameworks), wait for
//! `registered`, send again the oldest unacknowledged status update of every task,
//! then answer pings and the master's commands:
//! - `RunTask` → the task is RUNNING at once (an update from the "executor"), and
//!   FINISHED right after when [`SimAgentConfig::finish_tasks`] is set; a second
//!   launch of a task id it holds is counted ([`SimCounters::duplicate_launches`])
//!   and ignored, as the real agent does;
//! - `KillTask` → TASK_KILLED (TASK_DROPPED / TASK_LOST for a task it never had);
//! - `ShutdownFramework` → TASK_KILLED for each of the framework's live tasks;
//! - `Acknowledge` → the acknowledged update is forgotten and the task's next one
//!   is sent; a terminal task whose last update is acknowledged is forgotten;
//! - `Refused` → it forgets its id and tasks and registers anew (as the real agent).
//!
//! Status updates go out one at a time per task, in order, and the oldest pending
//! one is sent again until acknowledged: after [`SimAgentConfig::status_retry`],
//! then twice as long each time (as the real agent's retries).
//!
//! When the stream ends (the master died, closed it, or stopped pinging), it tries
//! the leader a follower named in the `agora-leader` metadata if there is one, and
//! otherwise the next master of its list, with jittered exponential backoff.
//!
//! What it did is observable without polling: [`SimAgent::watch`] yields a new
//! [`SimAgentStatus`] on every (re-)registration, and [`SimCounters`] counts
//! launches, updates and acknowledgements.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::ids::id_of;
use agora_proto as pb;
use agora_proto::agent_link_client::AgentLinkClient;
use agora_proto::agent_message::Message as ToMaster;
use agora_proto::master_message::Message as FromMaster;
use agora_proto::task_status::{Reason, Source};
use agora_sdk::leader_hint;
use slog::{Logger, debug};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Ping interval assumed when the master announces none or an absurd one.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Pings that may be missed before the master counts as lost (as the real agent).
const MAX_MISSED_PINGS: u32 = 5;
/// Messages queued towards the master before new ones are dropped (the retry of
/// status updates makes up for a dropped update).
const OUTBOUND_QUEUE: usize = 1024;

/// Why a [`SimAgent`] cannot start.
#[derive(Debug)]
pub enum SimAgentError {
    /// No master address was given.
    NoMasters,
    /// The resources string does not parse.
    Resources(agora_core::ResourceError),
    /// The attributes string does not parse.
    Attributes(String),
}

impl std::fmt::Display for SimAgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimAgentError::NoMasters => write!(f, "a simulated agent needs at least one master"),
            SimAgentError::Resources(e) => write!(f, "simulated agent resources: {e}"),
            SimAgentError::Attributes(e) => write!(f, "simulated agent attributes: {e}"),
        }
    }
}

impl std::error::Error for SimAgentError {}

/// How a [`SimAgent`] behaves.
#[derive(Clone)]
pub struct SimAgentConfig {
    /// `host:port` of every master, tried in turn. Not empty.
    pub masters: Vec<String>,
    /// Reported in its `AgentInfo`.
    pub hostname: String,
    /// Its total resources, as offered.
    pub resources: Vec<pb::Resource>,
    pub attributes: Vec<pb::Attribute>,
    /// Report TASK_FINISHED right after TASK_RUNNING.
    pub finish_tasks: bool,
    /// First wait after a failed attempt to reach a master; doubles up to
    /// `backoff_max`. Not zero.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An unacknowledged status update is first sent again after this long, then
    /// after twice as long each time, up to `status_retry_max` (as the real agent's
    /// status update retries). Not zero.
    pub status_retry: Duration,
    pub status_retry_max: Duration,
    /// Longest wait for a connection to a master.
    pub connect_timeout: Duration,
    /// Longest wait for the master's answer to (re)registration.
    pub reply_timeout: Duration,
    pub logger: Logger,
}

impl SimAgentConfig {
    /// An agent of `resources` (Mesos syntax, e.g. `cpus:8;mem:16384`) for these
    /// masters: backoff 100 ms → 2 s between attempts to reach a master, updates
    /// retried after 10 s and then less and less often, up to every 10 minutes (the
    /// real agent's defaults).
    pub fn new(masters: Vec<String>, resources: &str) -> Result<Self, SimAgentError> {
        let resources = agora_core::Resources::parse(resources)
            .map_err(SimAgentError::Resources)?
            .to_proto();
        Ok(Self {
            masters,
            hostname: "sim-agent".into(),
            resources,
            attributes: Vec::new(),
            finish_tasks: false,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            status_retry: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(30),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        })
    }

    /// Sets the attributes from Mesos syntax (`rack:r1;zone:a`).
    pub fn attributes(mut self, attributes: &str) -> Result<Self, SimAgentError> {
        self.attributes = agora_core::attributes::parse(attributes)
            .map_err(|e| SimAgentError::Attributes(e.to_string()))?;
        Ok(self)
    }
}

/// What a [`SimAgent`]'s registrations look like; a new value is published on
/// every change.
#[derive(Clone, Debug, Default)]
pub struct SimAgentStatus {
    /// The id the master gave it; `None` before the first registration and after a
    /// refusal.
    pub agent_id: Option<String>,
    /// How many times a master answered `registered` (registrations and
    /// re-registrations alike).
    pub registrations: u64,
    /// How many of those answered a `reregister`.
    pub reregistrations: u64,
    /// When the latest `registered` arrived.
    pub registered_at: Option<Instant>,
    /// The master it is attached to; `None` while it is not.
    pub master: Option<String>,
    /// How many times a master refused it (it then registers anew).
    pub refusals: u64,
}

/// Counters of what a [`SimAgent`] did; they only grow.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// `RunTask`s that started a task.
    pub launched: AtomicU64,
    /// `RunTask`s for a task id it already held (ignored). Must stay 0 in a correct
    /// cluster: a task id never runs twice.
    pub duplicate_launches: AtomicU64,
    /// Status updates sent (retries included).
    pub updates_sent: AtomicU64,
    /// Acknowledgements that matched a pending update.
    pub acknowledged: AtomicU64,
    /// `KillTask`s received.
    pub kills: AtomicU64,
    /// `Error` messages the master sent about this agent's messages.
    pub master_errors: AtomicU64,
}

impl SimCounters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One task as the agent holds it.
#[derive(Clone, Debug)]
pub struct SimTaskView {
    pub framework_id: String,
    pub task_id: String,
    pub state: pb::TaskState,
}

/// (framework id, task id).
type TaskKey = (String, String);

struct SimTask {
    /// What `reregister` reports: identity, placement and resources only.
    info: pb::TaskInfo,
    /// The executor the updates name (the task id, as for the command executor).
    executor_id: String,
    /// The newest state (of the newest update, sent or not).
    state: pb::TaskState,
    /// The newest update, re-reported on re-registration.
    latest_status: Option<pb::TaskStatus>,
    /// Updates not acknowledged yet, oldest first; only the oldest is on the wire.
    pending: VecDeque<pb::TaskStatus>,
    /// When the oldest pending update is due to be sent again; `None` while none
    /// is pending.
    retry_at: Option<Instant>,
    /// The wait before the next resend of the oldest pending update; doubles with
    /// every resend, back to the first value for a new update.
    retry_backoff: Duration,
}

/// What the session loop and the observers share. Locked only for short,
/// non-blocking sections.
#[derive(Default)]
struct SimState {
    /// The id the master gave; `None` before the first registration.
    agent_id: Option<String>,
    tasks: HashMap<TaskKey, SimTask>,
    /// Framework id -> its info, from `RunTask`; re-reported on re-registration.
    frameworks: HashMap<String, pb::FrameworkInfo>,
}

/// A running simulated agent; it stops when stopped or dropped.
pub struct SimAgent {
    status: watch::Receiver<SimAgentStatus>,
    state: Arc<Mutex<SimState>>,
    counters: Arc<SimCounters>,
    /// Flipped to true to stop the loop.
    shutdown: watch::Sender<bool>,
    /// The loop; `None` once [`SimAgent::stop`] has awaited it.
    task: Option<JoinHandle<()>>,
}

impl SimAgent {
    /// Starts the agent's loop; it registers as soon as a master accepts it.
    pub fn start(config: SimAgentConfig) -> Result<Self, SimAgentError> {
        if config.masters.is_empty() {
            return Err(SimAgentError::NoMasters);
        }
        let (status_tx, status) = watch::channel(SimAgentStatus::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(Mutex::new(SimState::default()));
        let counters = Arc::new(SimCounters::default());
        let runner = Runner {
            config,
            state: state.clone(),
            status: status_tx,
            counters: counters.clone(),
        };
        let task = tokio::spawn(runner.run(shutdown_rx));
        Ok(Self {
            status,
            state,
            counters,
            shutdown,
            task: Some(task),
        })
    }

    /// The latest registration status.
    pub fn status(&self) -> SimAgentStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of [`SimAgent::status`].
    pub fn watch(&self) -> watch::Receiver<SimAgentStatus> {
        self.status.clone()
    }

    /// Waits until a master has answered `registered` at least `count` times in
    /// all; returns the status then. No deadline: wrap it in one.
    pub async fn wait_registrations(&self, count: u64) -> SimAgentStatus {
        let mut status = self.status.clone();
        match status.wait_for(|s| s.registrations >= count).await {
            Ok(found) => found.clone(),
            // The loop ended (stop): report what it reached.
            Err(_) => self.status(),
        }
    }

    pub fn agent_id(&self) -> Option<String> {
        self.status.borrow().agent_id.clone()
    }

    /// The tasks it holds now.
    pub fn tasks(&self) -> Vec<SimTaskView> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .tasks
            .iter()
            .map(|((framework_id, task_id), task)| SimTaskView {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
                state: task.state,
            })
            .collect()
    }

    /// Status updates not acknowledged yet, over every task.
    pub fn pending_updates(&self) -> usize {
        self.state
            .lock()
            .map(|state| state.tasks.values().map(|t| t.pending.len()).sum())
            .unwrap_or(0)
    }

    pub fn counters(&self) -> &SimCounters {
        &self.counters
    }

    /// Stops the loop (the stream to the master closes) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// How one attempt to reach a master ended.
enum SessionEnd {
    /// A master accepted the agent and the session ran until it broke.
    Attached,
    /// A follower named the leader.
    Redirect(String),
    /// Could not connect or register.
    Failed,
}

/// The agent's loop and everything it owns.
struct Runner {
    config: SimAgentConfig,
    state: Arc<Mutex<SimState>>,
    status: watch::Sender<SimAgentStatus>,
    counters: Arc<SimCounters>,
}

impl Runner {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let masters = self.config.masters.clone();
        let backoff_min = self.config.backoff_min.max(Duration::from_millis(1));
        let backoff_max = self.config.backoff_max.max(backoff_min);
        let mut backoff = backoff_min;
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        // Redirects followed without a pause; bounded so that two masters naming
        // each other cannot spin the loop.
        let mut redirects = 0usize;
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            let master = match redirect.take() {
                Some(leader) => leader,
                None => {
                    let master = masters[next % masters.len()].clone();
                    next = next.wrapping_add(1);
                    master
                }
            };
            let end = tokio::select! {
                end = self.session(&master) => end,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match end {
                SessionEnd::Attached => {
                    backoff = backoff_min;
                    redirects = 0;
                }
                SessionEnd::Redirect(leader) if redirects <= masters.len() => {
                    debug!(self.config.logger, "following the leader hint"; "from" => &master, "leader" => &leader);
                    redirects += 1;
                    redirect = Some(leader);
                    continue;
                }
                SessionEnd::Redirect(_) | SessionEnd::Failed => redirects = 0,
            }
            let delay = jittered(backoff);
            backoff = (backoff * 2).min(backoff_max);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn session(&self, master: &str) -> SessionEnd {
        let endpoint = match Endpoint::from_shared(format!("http://{master}")) {
            Ok(endpoint) => endpoint
                .connect_timeout(self.config.connect_timeout)
                .tcp_nodelay(true),
            Err(e) => {
                debug!(self.config.logger, "invalid master address"; "master" => master, "error" => %e);
                return SessionEnd::Failed;
            }
        };
        let Ok(channel) = endpoint.connect().await else {
            return SessionEnd::Failed;
        };
        let mut client = AgentLinkClient::new(channel)
            .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES);

        let (first, reregistering) = self.registration_message();
        let (outbound, outbound_rx) = tokio::sync::mpsc::channel(OUTBOUND_QUEUE);
        let _ = outbound.try_send(first);
        let reply_timeout = self.config.reply_timeout;
        let attached = tokio::time::timeout(
            reply_timeout,
            client.attach(ReceiverStream::new(outbound_rx)),
        )
        .await;
        let mut inbound = match attached {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                if let Some(leader) = leader_hint(&status) {
                    return SessionEnd::Redirect(leader);
                }
                debug!(self.config.logger, "the master refused the connection";
                    "master" => master, "code" => ?status.code(), "message" => status.message());
                if reregistering && status.code() == tonic::Code::PermissionDenied {
                    self.refused();
                }
                return SessionEnd::Failed;
            }
            Err(_) => return SessionEnd::Failed,
        };
        let registered = match tokio::time::timeout(reply_timeout, inbound.message()).await {
            Ok(Ok(Some(pb::MasterMessage {
                message: Some(FromMaster::Registered(registered)),
            }))) => registered,
            Ok(Ok(Some(pb::MasterMessage {
                message: Some(FromMaster::Refused(_)),
            }))) => {
                self.refused();
                return SessionEnd::Failed;
            }
            Ok(Err(status)) => {
                return match leader_hint(&status) {
                    Some(leader) => SessionEnd::Redirect(leader),
                    None => SessionEnd::Failed,
                };
            }
            _ => return SessionEnd::Failed,
        };
        let Some(agent_id) = registered
            .agent_id
            .map(|id| id.value)
            .filter(|id| agora_core::limits::id("agent_id", Some(id)).is_ok())
        else {
            return SessionEnd::Failed;
        };
        if let Ok(mut state) = self.state.lock() {
            state.agent_id = Some(agent_id.clone());
        }
        self.status.send_modify(|status| {
            status.agent_id = Some(agent_id);
            status.registrations += 1;
            if reregistering {
                status.reregistrations += 1;
            }
            status.registered_at = Some(Instant::now());
            status.master = Some(master.to_string());
        });
        let ping_timeout = ping_interval(registered.ping_interval_seconds) * MAX_MISSED_PINGS;
        // As the real agent: every task's oldest unacknowledged update goes out again
        // on a new connection.
        self.send_all(&outbound, self.pending_heads(true));

        // Due resends are looked for this often (they are due per task).
        let check = self
            .config
            .status_retry
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut retry = tokio::time::interval_at(Instant::now() + check, check);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = Instant::now() + ping_timeout;
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(pb::MasterMessage { message: Some(message) })) => match message {
                        FromMaster::Ping(ping) => {
                            deadline = Instant::now() + ping_timeout;
                            let pong = ToMaster::Pong(pb::agent_message::Pong { seq: ping.seq });
                            let _ = outbound.try_send(pb::AgentMessage { message: Some(pong) });
                        }
                        FromMaster::Refused(_) => {
                            self.refused();
                            break;
                        }
                        other => {
                            let replies = self.handle(other);
                            self.send_all(&outbound, replies);
                        }
                    },
                    Ok(Some(pb::MasterMessage { message: None })) => {}
                    Ok(None) | Err(_) => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                _ = retry.tick() => {
                    let heads = self.pending_heads(false);
                    self.send_all(&outbound, heads);
                }
            }
        }
        self.status.send_modify(|status| status.master = None);
        SessionEnd::Attached
    }

    fn send_all(
        &self,
        outbound: &tokio::sync::mpsc::Sender<pb::AgentMessage>,
        messages: Vec<pb::AgentMessage>,
    ) {
        for message in messages {
            if matches!(message.message, Some(ToMaster::StatusUpdate(_))) {
                SimCounters::add(&self.counters.updates_sent);
            }
            let _ = outbound.try_send(message);
        }
    }

    /// `register` without an id, `reregister` with every task otherwise; and
    /// whether it is the latter.
    fn registration_message(&self) -> (pb::AgentMessage, bool) {
        let version = env!("CARGO_PKG_VERSION").to_string();
        let Ok(state) = self.state.lock() else {
            return (pb::AgentMessage { message: None }, false);
        };
        let agent_info = pb::AgentInfo {
            id: state.agent_id.clone().map(|value| pb::AgentId { value }),
            hostname: self.config.hostname.clone(),
            resources: self.config.resources.clone(),
            attributes: self.config.attributes.clone(),
            endpoint: String::new(),
        };
        if state.agent_id.is_none() {
            let register = ToMaster::Register(pb::agent_message::Register {
                agent_info: Some(agent_info),
                version,
            });
            return (
                pb::AgentMessage {
                    message: Some(register),
                },
                false,
            );
        }
        let tasks = state
            .tasks
            .iter()
            .map(|((framework_id, _), task)| pb::TaskReport {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id.clone(),
                }),
                task: Some(task.info.clone()),
                state: task.state as i32,
                latest_status: task.latest_status.clone(),
            })
            .collect();
        let reregister = ToMaster::Reregister(pb::agent_message::Reregister {
            agent_info: Some(agent_info),
            version,
            tasks,
            frameworks: state.frameworks.values().cloned().collect(),
        });
        (
            pb::AgentMessage {
                message: Some(reregister),
            },
            true,
        )
    }

    /// The master wrote this agent off: forget the id and every task, as the real
    /// agent does, and register anew next time.
    fn refused(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = SimState::default();
        }
        self.status.send_modify(|status| {
            status.agent_id = None;
            status.refusals += 1;
        });
    }

    /// The oldest pending update of every task (`all`: on a new connection), or of
    /// those whose resend is due; a resend doubles the wait before the next one.
    fn pending_heads(&self, all: bool) -> Vec<pb::AgentMessage> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let max = self.config.status_retry_max.max(self.config.status_retry);
        let mut messages = Vec::new();
        for (key, task) in state.tasks.iter_mut() {
            let Some(retry_at) = task.retry_at else {
                continue;
            };
            if all {
                task.retry_at = Some(now + task.retry_backoff);
            } else if retry_at <= now {
                task.retry_backoff = (task.retry_backoff * 2).min(max);
                task.retry_at = Some(now + task.retry_backoff);
            } else {
                continue;
            }
            messages.extend(head_update(key, task));
        }
        messages
    }

    /// Reacts to one message from the master; returns what to send back.
    fn handle(&self, message: FromMaster) -> Vec<pb::AgentMessage> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let state = &mut *state;
        match message {
            FromMaster::RunTask(run) => self.run_task(state, run),
            FromMaster::KillTask(kill) => {
                SimCounters::add(&self.counters.kills);
                let key = (id_of(&kill.framework_id), id_of(&kill.task_id));
                match state.tasks.get(&key).map(|t| t.state) {
                    Some(current) if agora_core::task_state::is_terminal(current) => Vec::new(),
                    Some(_) => push_status(
                        state,
                        &key,
                        pb::TaskState::TaskKilled,
                        Source::Executor,
                        Reason::Unspecified,
                        self.config.status_retry,
                    )
                    .into_iter()
                    .collect(),
                    None if key.0.is_empty() || key.1.is_empty() => Vec::new(),
                    None => {
                        // As the real agent: a kill for a task it never had ends it so
                        // the master stops waiting.
                        let partition_aware = state.frameworks.get(&key.0).is_some_and(|f| {
                            f.capabilities.iter().any(|c| {
                                c.r#type
                                    == pb::framework_info::capability::Type::PartitionAware as i32
                            })
                        });
                        let lost = if partition_aware {
                            pb::TaskState::TaskDropped
                        } else {
                            pb::TaskState::TaskLost
                        };
                        state.tasks.insert(
                            key.clone(),
                            SimTask::new(
                                pb::TaskInfo {
                                    task_id: kill.task_id.clone(),
                                    ..Default::default()
                                },
                                key.1.clone(),
                            ),
                        );
                        push_status(
                            state,
                            &key,
                            lost,
                            Source::Agent,
                            Reason::TaskUnknown,
                            self.config.status_retry,
                        )
                        .into_iter()
                        .collect()
                    }
                }
            }
            FromMaster::ShutdownFramework(shutdown) => {
                let framework_id = id_of(&shutdown.framework_id);
                let live: Vec<TaskKey> = state
                    .tasks
                    .iter()
                    .filter(|((fid, _), task)| {
                        *fid == framework_id && !agora_core::task_state::is_terminal(task.state)
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                live.iter()
                    .filter_map(|key| {
                        push_status(
                            state,
                            key,
                            pb::TaskState::TaskKilled,
                            Source::Agent,
                            Reason::FrameworkRemoved,
                            self.config.status_retry,
                        )
                    })
                    .collect()
            }
            FromMaster::Acknowledge(ack) => {
                let key = (id_of(&ack.framework_id), id_of(&ack.task_id));
                let Some(task) = state.tasks.get_mut(&key) else {
                    return Vec::new();
                };
                if task
                    .pending
                    .front()
                    .is_none_or(|head| head.uuid != ack.uuid)
                {
                    return Vec::new();
                }
                SimCounters::add(&self.counters.acknowledged);
                task.pending.pop_front();
                if task.pending.is_empty() {
                    task.retry_at = None;
                    if agora_core::task_state::is_terminal(task.state) {
                        state.tasks.remove(&key);
                    }
                    return Vec::new();
                }
                task.new_head(self.config.status_retry);
                head_update(&key, task).into_iter().collect()
            }
            FromMaster::Registered(again) => {
                if let Some(agent_id) = again.agent_id.map(|a| a.value).filter(|a| !a.is_empty()) {
                    state.agent_id = Some(agent_id);
                }
                Vec::new()
            }
            FromMaster::Error(error) => {
                SimCounters::add(&self.counters.master_errors);
                debug!(self.config.logger, "the master dropped a message"; "error" => error.message);
                Vec::new()
            }
            FromMaster::RunTaskGroup(_)
            | FromMaster::FrameworkMessage(_)
            | FromMaster::Ping(_)
            | FromMaster::Refused(_) => Vec::new(),
        }
    }

    fn run_task(
        &self,
        state: &mut SimState,
        run: pb::master_message::RunTask,
    ) -> Vec<pb::AgentMessage> {
        let (Some(framework_info), Some(task)) = (run.framework_info, run.task) else {
            return Vec::new();
        };
        let framework_id = id_of(&framework_info.id);
        let task_id = id_of(&task.task_id);
        if framework_id.is_empty() || task_id.is_empty() {
            return Vec::new();
        }
        let key = (framework_id.clone(), task_id.clone());
        if state.tasks.contains_key(&key) {
            SimCounters::add(&self.counters.duplicate_launches);
            return Vec::new();
        }
        SimCounters::add(&self.counters.launched);
        state.frameworks.insert(framework_id, framework_info);
        let info = pb::TaskInfo {
            name: task.name,
            task_id: task.task_id,
            agent_id: task.agent_id,
            resources: task.resources,
            ..Default::default()
        };
        state.tasks.insert(key.clone(), SimTask::new(info, task_id));
        let mut replies: Vec<pb::AgentMessage> = push_status(
            state,
            &key,
            pb::TaskState::TaskRunning,
            Source::Executor,
            Reason::Unspecified,
            self.config.status_retry,
        )
        .into_iter()
        .collect();
        if self.config.finish_tasks {
            replies.extend(push_status(
                state,
                &key,
                pb::TaskState::TaskFinished,
                Source::Executor,
                Reason::Unspecified,
                self.config.status_retry,
            ));
        }
        replies
    }
}

impl SimTask {
    fn new(info: pb::TaskInfo, executor_id: String) -> Self {
        Self {
            info,
            executor_id,
            state: pb::TaskState::TaskStaging,
            latest_status: None,
            pending: VecDeque::new(),
            retry_at: None,
            retry_backoff: Duration::ZERO,
        }
    }

    /// The oldest pending update is a new one, sent now: its first resend waits
    /// `first_retry`.
    fn new_head(&mut self, first_retry: Duration) {
        let first_retry = first_retry.max(Duration::from_millis(1));
        self.retry_backoff = first_retry;
        self.retry_at = Some(Instant::now() + first_retry);
    }
}

/// Records a new update of task `key`; returns the message to send when it is the
/// task's only pending update (otherwise it waits for the ones before it).
fn push_status(
    state: &mut SimState,
    key: &TaskKey,
    task_state: pb::TaskState,
    source: Source,
    reason: Reason,
    first_retry: Duration,
) -> Option<pb::AgentMessage> {
    let agent_id = state.agent_id.clone().map(|value| pb::AgentId { value });
    let task = state.tasks.get_mut(key)?;
    let status = pb::TaskStatus {
        task_id: Some(pb::TaskId {
            value: key.1.clone(),
        }),
        state: task_state as i32,
        source: source as i32,
        reason: reason as i32,
        agent_id,
        executor_id: Some(pb::ExecutorId {
            value: task.executor_id.clone(),
        }),
        timestamp: agora_core::time::now_secs(),
        uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
        ..Default::default()
    };
    task.state = task_state;
    task.latest_status = Some(status.clone());
    task.pending.push_back(status);
    if task.pending.len() > 1 {
        return None;
    }
    task.new_head(first_retry);
    head_update(key, task)
}

/// The status update carrying a task's oldest pending update.
fn head_update(key: &TaskKey, task: &SimTask) -> Option<pb::AgentMessage> {
    let status = task.pending.front()?.clone();
    let update = pb::StatusUpdate {
        framework_id: Some(pb::FrameworkId {
            value: key.0.clone(),
        }),
        executor_id: status.executor_id.clone(),
        status: Some(status),
        latest_state: task.state as i32,
    };
    Some(pb::AgentMessage {
        message: Some(ToMaster::StatusUpdate(update)),
    })
}

/// The announced ping interval, or the default when absent or absurd.
fn ping_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 {
        Duration::from_secs_f64(seconds)
    } else {
        DEFAULT_PING_INTERVAL
    }
}

/// A wait between half of `backoff` and all of it, so agents that lost the same
/// master do not all come back at the same instant.
fn jittered(backoff: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let half = backoff / 2;
    let spread = half.as_nanos() as u64;
    half + Duration::from_nanos(if spread == 0 { 0 } else { random % spread })
}
