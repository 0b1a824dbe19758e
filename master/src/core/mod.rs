//! The master's core: one actor that owns all master state.
//!
//! API handlers never touch state; they send a [`Command`] and, where they need an
//! answer, wait on a oneshot. The actor handles a batch of commands, then runs one
//! allocation if anything changed (so bursts of changes coalesce into one pass), then
//! publishes a fresh [`ClusterView`] for readers, rebuilding only what changed (see
//! `view.rs`). Timers (agent pings, framework heartbeats, failover timeouts, filter
//! expiry) are deadlines in the same loop, driven by tokio time so tests can pause it.
//!
//! The work is split by concern:
//! - `frameworks.rs`: subscribe, disconnect, failover timeout, teardown, the calls that
//!   only touch the framework (revive, suppress, decline).
//! - `agents.rs`: register, re-register, pings, unreachable.
//! - `accept.rs`: ACCEPT validation and launching.
//! - `tasks.rs`: status updates, acknowledgements, kill, reconcile, messages.
//! - `allocation.rs`: turns allocator grants into offers.
//! - `view.rs`: the published snapshot and operator events.
//! - `roles.rs`: the operator's weights, quotas and role summaries.
//! - `maintenance.rs`: draining and reactivating agents.

mod accept;
mod agents;
mod allocation;
mod frameworks;
mod maintenance;
mod reservations;
mod roles;
mod tasks;
mod view;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agora_core::Resources;
use agora_core::ids::{id_of, id_str};
use agora_proto as pb;
use slog::{Logger, info, warn};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::Status;

use crate::metrics::MasterMetrics;
use crate::offer_book::OfferBook;
use crate::registry::{Registry, RegistryOp};

pub(crate) use frameworks::SubscribeReply;
pub(crate) use maintenance::MaintenanceCommand;
pub(crate) use roles::RolesCommand;
pub(crate) use view::ClusterView;

/// Events to one framework. Bounded: a framework that does not read its stream is
/// disconnected rather than allowed to grow the master's memory.
pub(crate) type EventSender = mpsc::Sender<Result<pb::Event, Status>>;
/// Messages to one agent, bounded for the same reason.
pub(crate) type AgentSender = mpsc::Sender<Result<pb::MasterMessage, Status>>;

/// Commands waiting for the core. Bounded, so that a flood of calls or agent
/// messages waits in the senders (and, through HTTP/2 flow control, in the peers)
/// instead of growing the master's memory.
pub(crate) const COMMAND_QUEUE: usize = 65_536;
/// Capacity of each framework's and agent's outgoing queue.
pub(crate) const OUTBOUND_QUEUE: usize = 65_536;
/// Terminal tasks kept per framework for inspection (Mesos: 1000).
const COMPLETED_TASKS_PER_FRAMEWORK: usize = 1000;
/// Commands handled before the actor allocates and publishes.
const BATCH: usize = 1024;

/// Timing knobs of the core.
#[derive(Clone, Debug)]
pub struct CoreTimings {
    /// How often agents are pinged (Mesos: `--agent_ping_timeout`, 15 s).
    pub agent_ping_interval: Duration,
    /// Unanswered pings after which an agent is unreachable (Mesos: 5).
    pub max_missed_pings: u32,
    /// How long agents known from the registry have to re-register after a master
    /// start before they are marked unreachable (Mesos: 10 min).
    pub agent_reregister_timeout: Duration,
    /// How often frameworks get HEARTBEAT events (Mesos: 15 s).
    pub framework_heartbeat_interval: Duration,
    /// Filter applied to declined resources when the framework gives none (Mesos: 5 s).
    pub default_refuse: Duration,
    /// Offers not answered within this are rescinded (Mesos: unset, never).
    pub offer_timeout: Option<Duration>,
    /// Allocation passes are at least this far apart: changes arriving meanwhile are
    /// served by one pass at the end of the window (Mesos ticks every 1 s instead).
    pub allocation_coalesce: Duration,
}

impl Default for CoreTimings {
    fn default() -> Self {
        Self {
            agent_ping_interval: Duration::from_secs(15),
            max_missed_pings: 5,
            agent_reregister_timeout: Duration::from_secs(600),
            framework_heartbeat_interval: Duration::from_secs(15),
            default_refuse: Duration::from_secs(5),
            offer_timeout: None,
            allocation_coalesce: Duration::from_millis(5),
        }
    }
}

/// What API handlers ask of the core.
pub(crate) enum Command {
    Subscribe {
        request: pb::SubscribeRequest,
        reply: oneshot::Sender<Result<SubscribeReply, Status>>,
    },
    Call {
        call: pb::Call,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    /// The framework's event stream was dropped (the client went away).
    FrameworkStreamClosed {
        framework_id: String,
        stream_id: String,
    },
    /// An agent opened a stream; `first` is its first message.
    AgentAttach {
        first: pb::AgentMessage,
        sender: AgentSender,
        reply: oneshot::Sender<Result<AgentSession, Status>>,
    },
    AgentMessage {
        session: AgentSession,
        message: pb::AgentMessage,
    },
    AgentStreamClosed {
        session: AgentSession,
    },
    /// Operator: quotas, weights and roles (`roles.rs`).
    Roles(RolesCommand),
    /// Operator: draining and reactivating agents (`maintenance.rs`).
    Maintenance(MaintenanceCommand),
}

/// Identifies one agent connection: a stale stream's messages are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AgentSession {
    pub agent_id: String,
    pub epoch: u64,
}

/// A timer in the core's loop.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Remove the framework unless it re-subscribed since (`epoch` changed).
    FrameworkFailover { framework_id: String, epoch: u64 },
    /// A decline filter ends: allocate again.
    FilterExpired,
    /// Agents recovered from the registry that have not re-registered are unreachable.
    AgentReregisterDeadline,
    /// The offer, if still outstanding, is rescinded.
    OfferTimeout { offer_id: String },
    /// A draining agent's deadline: what still runs there is killed.
    DrainDeadline { agent_id: String },
    /// The coalescing window of allocation passes ended.
    Allocate,
}

/// A task the master knows.
#[derive(Clone, Debug)]
pub(crate) struct TaskEntry {
    /// As launched (agent_id set); for tasks learnt from an agent, as it reported.
    pub info: pb::TaskInfo,
    pub framework_id: String,
    pub agent_id: String,
    pub state: pb::TaskState,
    pub latest_status: Option<pb::TaskStatus>,
    /// What it holds on its agent while not terminal.
    pub resources: Resources,
    /// The role its resources are allocated to: the role of the offer it was launched
    /// from (for a task learnt from an agent, the framework's role it best fits).
    pub role: String,
    /// The uuid of the terminal update, once one arrived: its acknowledgement retires
    /// the task.
    pub terminal_uuid: Option<Vec<u8>>,
}

impl TaskEntry {
    pub fn info_task_id(&self) -> String {
        id_of(&self.info.task_id)
    }
}

/// A live framework subscription.
pub(crate) struct FrameworkConnection {
    pub sender: EventSender,
    pub stream_id: String,
}

pub(crate) struct FrameworkEntry {
    /// Always has `id` set.
    pub info: pb::FrameworkInfo,
    /// The roles it subscribed to, in its order; `*` when it named none. Not empty.
    pub roles: Vec<String>,
    pub connection: Option<FrameworkConnection>,
    /// Bumped on every (re)subscription; stale failover timers check it.
    pub epoch: u64,
    /// The key of its failover timer while one runs.
    pub failover_timer: Option<(Instant, u64)>,
    /// Roles that get no offers until REVIVE (SUPPRESS, or named at SUBSCRIBE).
    pub suppressed_roles: std::collections::BTreeSet<String>,
    /// (agent id, role) → until when, and which, declined resources of that agent are
    /// not offered again for that role. As in Mesos, a filter holds back only offers
    /// that are a subset of what was refused: resources freed since are offered at once.
    pub filters: HashMap<(String, String), (Instant, Resources)>,
    pub registered_time: f64,
    /// Seconds since the epoch when it disconnected; 0 while connected.
    pub disconnected_time: f64,
    /// Non-retired tasks by task id (terminal ones stay until acknowledged).
    pub tasks: HashMap<String, TaskEntry>,
    /// Retired tasks, newest last, at most `COMPLETED_TASKS_PER_FRAMEWORK`.
    pub completed: VecDeque<TaskEntry>,
    /// Sum of resources of its non-terminal tasks.
    pub used: Resources,
}

impl FrameworkEntry {
    pub fn id(&self) -> &str {
        id_str(&self.info.id)
    }

    pub fn is_partition_aware(&self) -> bool {
        self.has_capability(pb::framework_info::capability::Type::PartitionAware)
    }

    pub fn has_capability(&self, cap: pb::framework_info::capability::Type) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c.r#type == cap as i32)
    }
}

/// An agent connection.
pub(crate) struct AgentConnection {
    pub sender: AgentSender,
    pub epoch: u64,
}

pub(crate) struct AgentEntry {
    /// Always has `id` set.
    pub info: pb::AgentInfo,
    pub total: Resources,
    /// Sum of resources of its non-terminal tasks.
    pub used: Resources,
    pub connection: Option<AgentConnection>,
    /// False once the ping timeout passed; unreachable agents get no offers and their
    /// tasks were reported UNREACHABLE (or LOST).
    pub reachable: bool,
    /// Known from the registry but not yet re-registered since this master started:
    /// not pinged; unreachable if still so at the re-registration deadline.
    pub awaiting_reregistration: bool,
    /// Pings sent since the last pong.
    pub missed_pings: u32,
    pub registered_time: f64,
    /// (framework id, task id) of every task the master knows on this agent.
    pub tasks: HashSet<(String, String)>,
    /// Copies of tasks that run here although the framework's task of that id lives
    /// elsewhere (the agent came back after the task was relaunched): being killed,
    /// their resources charged to `used` until their terminal update.
    pub orphans: HashMap<(String, String), Resources>,
    /// Kills that could not be delivered while the agent was away, resent when it
    /// re-registers.
    pub pending_kills: HashMap<(String, String), Option<pb::KillPolicy>>,
    /// Set while it is DRAINING or DRAINED (`maintenance.rs`): no offers of it.
    pub maintenance: Option<maintenance::AgentMaintenance>,
}

impl AgentEntry {
    pub fn id(&self) -> &str {
        id_str(&self.info.id)
    }

    /// Resources neither used nor offered; none while under maintenance, so a
    /// draining or drained agent is offered nothing.
    pub fn available(&self, offers: &OfferBook) -> Resources {
        if self.maintenance.is_some() {
            return Resources::new();
        }
        let mut free = self.total.clone();
        free.sub_saturating(&self.used);
        if let Some(offered) = offers.offered_on_agent(self.id()) {
            free.sub_saturating(offered);
        }
        free
    }
}

/// The state the core owns.
pub(crate) struct MasterCore {
    pub logger: Logger,
    pub timings: CoreTimings,
    pub master_info: pb::MasterInfo,
    pub registry: Arc<dyn Registry>,
    pub metrics: Arc<MasterMetrics>,
    pub frameworks: HashMap<String, FrameworkEntry>,
    /// Ids of removed frameworks, oldest first, bounded.
    pub completed_frameworks: VecDeque<String>,
    pub agents: HashMap<String, AgentEntry>,
    /// Agents marked gone by an operator: never admitted again.
    pub gone_agents: HashSet<String>,
    pub offers: OfferBook,
    /// Sum of the totals of reachable agents, for shares.
    pub cluster_total: Resources,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    /// Next agent connection epoch.
    agent_epoch: u64,
    /// Next agent id sequence number.
    agent_seq: u64,
    ping_seq: u64,
    /// Registry writes queued by code that could not await them; applied after the
    /// current batch.
    pub deferred_registry_ops: Vec<RegistryOp>,
    /// Dynamic reservations by agent, then role: the aggregate the registry records
    /// (see `reservations.rs`). Invariant: no empty entries.
    pub reservations: HashMap<String, BTreeMap<String, Resources>>,
    /// An empty `Resources`, lent to the allocator for roles that hold nothing.
    pub nothing: Resources,
    /// When the last allocation pass ran.
    pub last_allocation: Option<Instant>,
    /// A pass is due when the coalescing window ends (a `Timer::Allocate` is set).
    pub allocation_deferred: bool,
    /// Role → weight, for roles whose weight is not the default 1 (see `roles.rs`);
    /// mirrors the registry, every weight finite and above 0.
    pub weights: BTreeMap<String, f64>,
    /// Role → its quota (see `roles.rs`); mirrors the registry.
    pub quotas: BTreeMap<String, roles::RoleQuota>,
    /// Ids of the agents whose maintenance is DRAINING (a subset of `agents`): the
    /// only ones checked for having drained after each batch.
    pub draining_agents: std::collections::BTreeSet<String>,
    /// Something changed that can produce offers.
    pub allocation_needed: bool,
    /// Something changed that readers should see.
    pub view_dirty: bool,
    /// What was last published, kept so the next publish rebuilds only what changed
    /// (see `view.rs`).
    pub view_cache: view::ViewCache,
    pub view: watch::Sender<Arc<ClusterView>>,
    pub operator_events: broadcast::Sender<pb::OperatorEvent>,
}

impl MasterCore {
    pub(crate) fn new(
        logger: Logger,
        timings: CoreTimings,
        master_info: pb::MasterInfo,
        registry: Arc<dyn Registry>,
        metrics: Arc<MasterMetrics>,
        view: watch::Sender<Arc<ClusterView>>,
        operator_events: broadcast::Sender<pb::OperatorEvent>,
    ) -> Self {
        Self {
            logger,
            timings,
            master_info,
            registry,
            metrics,
            frameworks: HashMap::new(),
            completed_frameworks: VecDeque::new(),
            agents: HashMap::new(),
            gone_agents: HashSet::new(),
            offers: OfferBook::new(),
            cluster_total: Resources::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            agent_epoch: 0,
            agent_seq: 0,
            ping_seq: 0,
            deferred_registry_ops: Vec::new(),
            reservations: HashMap::new(),
            nothing: Resources::new(),
            last_allocation: None,
            allocation_deferred: false,
            weights: BTreeMap::new(),
            quotas: BTreeMap::new(),
            draining_agents: Default::default(),
            allocation_needed: false,
            view_dirty: true,
            view_cache: view::ViewCache::default(),
            view,
            operator_events,
        }
    }

    /// Loads the registry and publishes the first view; done before the master
    /// serves anyone, so no reader sees an empty cluster that is not.
    pub(crate) async fn start(&mut self) -> Result<(), crate::registry::RegistryError> {
        self.recover().await?;
        self.view_cache.compare_all();
        self.publish_view();
        Ok(())
    }

    /// Runs until `shutdown` resolves or every command sender is gone.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ping = tokio::time::interval(self.timings.agent_ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.timings.framework_heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick of an interval fires at once; skip it.
        ping.tick().await;
        heartbeat.tick().await;
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    self.handle_and_track(command).await;
                    for _ in 1..BATCH {
                        match commands.try_recv() {
                            Ok(command) => self.handle_and_track(command).await,
                            Err(_) => break,
                        }
                    }
                }
                _ = ping.tick() => {
                    self.view_cache.compare_all();
                    self.ping_agents().await
                }
                _ = heartbeat.tick() => {
                    self.view_cache.compare_all();
                    self.heartbeat_frameworks()
                }
                _ = sleep_until_opt(next_timer) => self.fire_timers().await,
                _ = shutdown.changed() => break,
            }
            self.progress_drains();
            if !self.deferred_registry_ops.is_empty() {
                self.flush_deferred_registry_ops().await;
            }
            self.maybe_allocate();
            if self.view_dirty {
                self.view_dirty = false;
                self.publish_view();
            }
        }
        info!(self.logger, "master core stopped");
    }

    /// Runs an allocation pass if something changed, unless one ran less than
    /// `allocation_coalesce` ago: then one pass runs when that window ends, serving
    /// every change that arrived meanwhile.
    fn maybe_allocate(&mut self) {
        if !self.allocation_needed || self.allocation_deferred {
            return;
        }
        let now = Instant::now();
        if let Some(last) = self.last_allocation
            && now < last + self.timings.allocation_coalesce
        {
            self.allocation_deferred = true;
            self.set_timer(last + self.timings.allocation_coalesce, Timer::Allocate);
            return;
        }
        self.allocation_needed = false;
        self.last_allocation = Some(now);
        self.allocate();
    }

    /// Handles a command; one whose effects the view does not track makes the next
    /// publish compare every agent and framework.
    async fn handle_and_track(&mut self, command: Command) {
        if !view_tracks(&command) {
            self.view_cache.compare_all();
        }
        self.handle(command).await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe { request, reply } => {
                let result = self.subscribe(request).await;
                let _ = reply.send(result);
            }
            Command::Call { call, reply } => {
                let result = self.call(call).await;
                let _ = reply.send(result);
            }
            Command::FrameworkStreamClosed {
                framework_id,
                stream_id,
            } => {
                self.framework_stream_closed(&framework_id, &stream_id)
                    .await
            }
            Command::AgentAttach {
                first,
                sender,
                reply,
            } => {
                let result = self.agent_attach(first, sender).await;
                let _ = reply.send(result);
            }
            Command::AgentMessage { session, message } => {
                self.agent_message(session, message).await
            }
            Command::AgentStreamClosed { session } => self.agent_stream_closed(&session),
            Command::Roles(command) => self.roles_command(command).await,
            Command::Maintenance(command) => self.maintenance_command(command).await,
        }
    }

    /// Routes a framework call after checking that the caller is the live subscription.
    async fn call(&mut self, call: pb::Call) -> Result<(), Status> {
        let framework_id = id_of(&call.framework_id);
        let subscribed = self.frameworks.get(&framework_id).is_some_and(|f| {
            f.connection
                .as_ref()
                .is_some_and(|c| c.stream_id == call.stream_id)
        });
        if !subscribed {
            self.metrics.invalid_calls.inc();
            return Err(Status::permission_denied(format!(
                "framework '{framework_id}' has no live subscription with stream id '{}': \
                 SUBSCRIBE first and echo the framework id and stream id from SUBSCRIBED",
                call.stream_id
            )));
        }
        let Some(kind) = call.call else {
            self.metrics.invalid_calls.inc();
            return Err(Status::invalid_argument("the call names no operation"));
        };
        self.metrics.calls.inc();
        use pb::call::Call as C;
        match kind {
            C::Teardown(_) => self.teardown(&framework_id).await,
            C::Accept(accept) => self.accept(&framework_id, accept),
            C::Decline(decline) => self.decline(&framework_id, decline),
            C::Revive(revive) => self.revive(&framework_id, &revive.roles),
            C::Suppress(suppress) => self.suppress(&framework_id, &suppress.roles),
            C::Kill(kill) => self.kill(&framework_id, kill),
            C::Acknowledge(ack) => self.acknowledge(&framework_id, ack),
            C::AcknowledgeMany(many) => self.acknowledge_many(&framework_id, many),
            C::Reconcile(reconcile) => self.reconcile(&framework_id, reconcile),
            C::Message(message) => self.framework_message(&framework_id, message),
        }
    }

    /// Schedules `timer` at `at`.
    fn set_timer(&mut self, at: Instant, timer: Timer) -> (Instant, u64) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
        (at, self.timer_seq)
    }

    /// Starts (or restarts) a framework's failover timeout. A framework has at most one
    /// such timer, however often it reconnects.
    pub(crate) fn start_failover_timer(&mut self, framework_id: &str, after: Duration) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let epoch = fw.epoch;
        if let Some(previous) = fw.failover_timer.take() {
            self.timers.remove(&previous);
        }
        let key = self.set_timer(
            Instant::now() + after,
            Timer::FrameworkFailover {
                framework_id: framework_id.to_string(),
                epoch,
            },
        );
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.failover_timer = Some(key);
        }
    }

    /// Cancels a framework's failover timeout, if one runs.
    pub(crate) fn cancel_failover_timer(&mut self, framework_id: &str) {
        if let Some(key) = self
            .frameworks
            .get_mut(framework_id)
            .and_then(|fw| fw.failover_timer.take())
        {
            self.timers.remove(&key);
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if !matches!(
                timer,
                Timer::Allocate | Timer::FilterExpired | Timer::OfferTimeout { .. }
            ) {
                self.view_cache.compare_all();
            }
            match timer {
                Timer::FrameworkFailover {
                    framework_id,
                    epoch,
                } => self.failover_timeout_expired(&framework_id, epoch).await,
                Timer::FilterExpired => self.allocation_needed = true,
                Timer::AgentReregisterDeadline => self.reregister_deadline_passed().await,
                Timer::OfferTimeout { offer_id } => self.rescind_offer(&offer_id),
                Timer::DrainDeadline { agent_id } => self.drain_deadline_passed(&agent_id),
                Timer::Allocate => self.allocation_deferred = false,
            }
        }
    }

    /// Sends an event to a framework if it is connected. A full queue disconnects it:
    /// it will re-subscribe and reconcile.
    /// Returns whether the event was queued for the framework.
    pub(crate) fn send_event(&mut self, framework_id: &str, event: pb::event::Event) -> bool {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return false;
        };
        let Some(conn) = &fw.connection else {
            return false;
        };
        let event = pb::Event { event: Some(event) };
        match conn.sender.try_send(Ok(event)) {
            Ok(()) => true,
            Err(e) => {
                warn!(self.logger, "framework event queue unusable; disconnecting it";
                    "framework_id" => framework_id, "error" => %e);
                self.view_cache.compare_all();
                let stream_id = conn.stream_id.clone();
                // Handled as if the client had gone away.
                self.framework_disconnected_now(framework_id, &stream_id);
                false
            }
        }
    }

    /// Sends a message to an agent if it is connected.
    pub(crate) fn send_to_agent(
        &mut self,
        agent_id: &str,
        message: pb::master_message::Message,
    ) -> bool {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return false;
        };
        let Some(conn) = &agent.connection else {
            return false;
        };
        let message = pb::MasterMessage {
            message: Some(message),
        };
        match conn.sender.try_send(Ok(message)) {
            Ok(()) => true,
            Err(e) => {
                warn!(self.logger, "agent queue unusable; dropping its connection";
                    "agent_id" => agent_id, "error" => %e);
                self.view_cache.compare_all();
                agent.connection = None;
                self.rescind_agent_offers(agent_id);
                self.allocation_needed = true;
                false
            }
        }
    }

    fn heartbeat_frameworks(&mut self) {
        let ids: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.connection.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.send_event(&id, pb::event::Event::Heartbeat(pb::event::Heartbeat {}));
        }
    }

    /// Remembers a removed framework id (bounded).
    fn remember_completed_framework(&mut self, framework_id: &str) {
        self.completed_frameworks
            .push_back(framework_id.to_string());
        while self.completed_frameworks.len() > crate::registry::REMOVED_FRAMEWORKS_KEPT {
            self.completed_frameworks.pop_front();
        }
    }

    pub(crate) fn is_completed_framework(&self, framework_id: &str) -> bool {
        self.completed_frameworks.iter().any(|f| f == framework_id)
    }

    /// The state to report to a framework: frameworks that are not partition-aware
    /// get TASK_LOST instead of DROPPED, UNREACHABLE, GONE or UNKNOWN (Mesos' rule).
    pub(crate) fn visible_state(&self, framework_id: &str, state: pb::TaskState) -> pb::TaskState {
        let partition_aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(|f| f.is_partition_aware());
        if partition_aware {
            state
        } else {
            pb::TaskState::TaskLost
        }
    }

    /// Recomputes the cluster total over reachable agents.
    pub(crate) fn recompute_cluster_total(&mut self) {
        let mut total = Resources::new();
        for agent in self.agents.values().filter(|a| a.reachable) {
            total.add(&agent.total);
        }
        self.cluster_total = total;
    }
}

/// Whether the view tracks every change `command` can make to agent and framework
/// summaries: the frequent calls and agent messages, whose changes to tasks and
/// offers `tasks.rs` and the offer book record. Anything else (registrations,
/// disconnections, teardown, RESERVE, operator commands) is compared in full at
/// the next publish.
fn view_tracks(command: &Command) -> bool {
    use pb::agent_message::Message as FromAgent;
    use pb::call::Call as C;
    match command {
        Command::Call { call, .. } => match &call.call {
            Some(C::Accept(accept)) => accept
                .operations
                .iter()
                .all(|op| matches!(op.operation, Some(pb::operation::Operation::Launch(_)))),
            Some(
                C::Decline(_)
                | C::Acknowledge(_)
                | C::AcknowledgeMany(_)
                | C::Kill(_)
                | C::Reconcile(_)
                | C::Message(_)
                | C::Revive(_)
                | C::Suppress(_),
            ) => true,
            Some(C::Teardown(_)) | None => false,
        },
        Command::AgentMessage { message, .. } => matches!(
            message.message,
            Some(FromAgent::StatusUpdate(_) | FromAgent::Pong(_) | FromAgent::FrameworkMessage(_))
        ),
        _ => false,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A status the master itself generates (no uuid: it needs no acknowledgement).
pub(crate) fn master_status(
    task_id: &str,
    agent_id: &str,
    state: pb::TaskState,
    reason: pb::task_status::Reason,
    message: impl Into<String>,
) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: Some(pb::TaskId {
            value: task_id.to_string(),
        }),
        state: state as i32,
        message: message.into(),
        source: pb::task_status::Source::Master as i32,
        reason: reason as i32,
        agent_id: if agent_id.is_empty() {
            None
        } else {
            Some(pb::AgentId {
                value: agent_id.to_string(),
            })
        },
        timestamp: agora_core::time::now_secs(),
        ..Default::default()
    }
}
