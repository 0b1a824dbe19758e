//! The raft node: one task owns the `RawNode` and everything raft-rs asks of it.
//!
//! The loop ticks, steps messages from peers, turns proposals and reads into raft
//! calls, and after each batch runs the ready loop in raft-rs' order (see
//! [`RaftNode::on_ready`]): send, install a snapshot, apply committed entries,
//! append, persist the hard state, send the persisted messages, advance, then the
//! light ready. Committed entries are applied in one place,
//! [`RaftNode::apply_committed`]; stepping raft never touches the state machine.
//!
//! Disk writes run on the blocking pool while the loop waits for them, so the log
//! is durable before any message that acknowledges it leaves this master. A failed
//! write stops the node for good: a master that cannot persist must not vote or
//! lead, and the rest of the group carries on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_proto as pb;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use slog::{Logger, error, info, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::state_machine::ReplicatedState;
use super::storage::{DiskStorage, StorageError};
use super::transport::Transport;

/// How often raft ticks and how many ticks make an election or heartbeat timeout.
#[derive(Clone, Debug)]
pub struct RaftTimings {
    pub tick: Duration,
    /// Followers start an election after this many ticks without a leader (raft-rs
    /// randomises it between 1× and 2×).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
    /// A proposal or read that has not completed after this long fails.
    pub request_timeout: Duration,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct ReplicaConfig {
    /// This master's raft id (not 0).
    pub id: u64,
    /// The initial members (raft id -> "host:port"), this master included. A fresh
    /// data directory bootstraps a group of exactly these voters unless `join` is set;
    /// afterwards membership comes from the log, and these only supply addresses the
    /// log has not recorded.
    pub initial_members: BTreeMap<u64, String>,
    /// Start with an empty log and wait to be added (`agora master add`) rather than
    /// bootstrapping a group.
    pub join: bool,
    pub data_dir: PathBuf,
    pub timings: RaftTimings,
    pub logger: Logger,
}

impl ReplicaConfig {
    /// A group of one: this master alone, bootstrapped on first start.
    pub fn single(address: String, data_dir: PathBuf, logger: Logger) -> Self {
        Self {
            id: 1,
            initial_members: BTreeMap::from([(1, address)]),
            join: false,
            data_dir,
            timings: RaftTimings::default(),
            logger,
        }
    }
}

/// Who leads, as this master sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leadership {
    pub term: u64,
    /// 0 when unknown.
    pub leader_id: u64,
    pub leader_address: Option<String>,
    /// This master leads and has applied every entry committed before its term, so
    /// its state machine is up to date and it may serve.
    pub serving: bool,
    /// Set when the node stopped (its storage failed, it was removed, or shutdown).
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaError {
    #[error("this master is not the leader")]
    NotLeader { leader_address: Option<String> },
    #[error("this master leads but has not caught up with its log yet; retry shortly")]
    NotReady,
    #[error("leadership changed before the write committed; it may or may not have been applied")]
    LeadershipLost,
    #[error("the request did not complete within {0:?}; a write may or may not have been applied")]
    Timeout(Duration),
    #[error("the replica stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<ReplicaError> for tonic::Status {
    fn from(e: ReplicaError) -> Self {
        let mut status = match &e {
            ReplicaError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            ReplicaError::Timeout(_) => tonic::Status::deadline_exceeded(e.to_string()),
            _ => tonic::Status::unavailable(e.to_string()),
        };
        if let ReplicaError::NotLeader {
            leader_address: Some(address),
        } = &e
            && let Ok(value) = address.parse()
        {
            status
                .metadata_mut()
                .insert(crate::LEADER_METADATA_KEY, value);
        }
        status
    }
}

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaStartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("the latest snapshot's data is unusable: {0}")]
    Snapshot(#[from] super::state_machine::SnapshotError),
    #[error("invalid replica configuration: {0}")]
    Config(String),
}

/// A membership change.
#[derive(Clone, Debug)]
pub enum MemberChange {
    Add { id: u64, address: String },
    Remove { id: u64 },
}

type Respond<T> = oneshot::Sender<Result<T, ReplicaError>>;

enum NodeCommand {
    Propose {
        /// Boxed: a command can be large, and most queued items are small messages.
        command: Box<pb::replicated_command::Command>,
        /// The time the entry carries; `None` = now on the leader.
        time: Option<f64>,
        respond: Respond<pb::CommandResult>,
    },
    /// Resolves once the state machine reflects every write committed before it.
    ReadIndex {
        respond: Respond<()>,
    },
    ChangeMembers {
        change: MemberChange,
        respond: Respond<()>,
    },
    Step(Vec<Message>),
    Status {
        respond: oneshot::Sender<pb::MasterGroup>,
    },
    Shutdown,
}

/// How many commands may queue for the node before callers wait (proposals) or
/// messages are dropped (raft retries them).
const NODE_QUEUE: usize = 16_384;
/// How many queued commands the node takes before it runs a ready.
const BATCH: usize = 1024;

/// A cheap, cloneable handle on the running node.
#[derive(Clone)]
pub struct ReplicaHandle {
    id: u64,
    commands: mpsc::Sender<NodeCommand>,
    leadership: watch::Receiver<Leadership>,
    /// Written only by the node as it applies committed entries.
    state: Arc<RwLock<ReplicatedState>>,
}

impl ReplicaHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(Respond<T>) -> NodeCommand,
    ) -> Result<T, ReplicaError> {
        let (respond, response) = oneshot::channel();
        self.commands
            .send(make(respond))
            .await
            .map_err(|_| self.stopped())?;
        response.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> ReplicaError {
        ReplicaError::Stopped(
            self.leadership
                .borrow()
                .stopped
                .clone()
                .unwrap_or_else(|| "the raft node is not running".into()),
        )
    }

    /// Proposes a command and waits until it is committed by a majority and applied
    /// here; returns what applying it produced.
    pub async fn propose(
        &self,
        command: pb::replicated_command::Command,
    ) -> Result<pb::CommandResult, ReplicaError> {
        self.propose_at(command, None).await
    }

    /// Like [`ReplicaHandle::propose`], with the time the entry carries chosen by the
    /// caller (one the caller has already shown to others), if any.
    pub async fn propose_at(
        &self,
        command: pb::replicated_command::Command,
        time: Option<f64>,
    ) -> Result<pb::CommandResult, ReplicaError> {
        self.request(|respond| NodeCommand::Propose {
            command: Box::new(command),
            time,
            respond,
        })
        .await
    }

    /// Runs `read` on a linearizable view of the state (raft read index): it sees
    /// every write acknowledged before the call. Fails on a follower.
    pub async fn read<R>(
        &self,
        read: impl FnOnce(&ReplicatedState) -> R,
    ) -> Result<R, ReplicaError> {
        self.request(|respond| NodeCommand::ReadIndex { respond })
            .await?;
        Ok(read(&*self.state_guard()?))
    }

    /// Runs `read` on this master's state as applied so far, leader or not: possibly
    /// stale, never torn. For views, not for decisions.
    pub fn read_local<R>(
        &self,
        read: impl FnOnce(&ReplicatedState) -> R,
    ) -> Result<R, ReplicaError> {
        Ok(read(&*self.state_guard()?))
    }

    fn state_guard(&self) -> Result<std::sync::RwLockReadGuard<'_, ReplicatedState>, ReplicaError> {
        self.state
            .read()
            .map_err(|_| ReplicaError::Stopped("the state machine lock is poisoned".into()))
    }

    /// Adds or removes a master; resolves once the change is applied here.
    pub async fn change_members(&self, change: MemberChange) -> Result<(), ReplicaError> {
        self.request(|respond| NodeCommand::ChangeMembers { change, respond })
            .await
    }

    /// Hands messages from peers to the node. Never waits: when the node is this far
    /// behind, dropping is what raft expects of a lossy network.
    pub fn step(&self, messages: Vec<Message>) -> Result<(), ReplicaError> {
        match self.commands.try_send(NodeCommand::Step(messages)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.stopped()),
        }
    }

    /// The group as this master sees it.
    pub async fn group(&self) -> Result<pb::MasterGroup, ReplicaError> {
        let (respond, response) = oneshot::channel();
        self.commands
            .send(NodeCommand::Status { respond })
            .await
            .map_err(|_| self.stopped())?;
        response.await.map_err(|_| self.stopped())
    }

    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// The error a follower answers with: not the leader, and who is.
    pub fn not_leader(&self) -> ReplicaError {
        ReplicaError::NotLeader {
            leader_address: self.leadership.borrow().leader_address.clone(),
        }
    }

    /// Stops the node (it finishes the ready in hand first).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(NodeCommand::Shutdown).await;
    }
}

/// A running node: its handle and its task (which ends with the reason it stopped).
pub struct Replica {
    pub handle: ReplicaHandle,
    /// The node's storage, for fault injection
    /// ([`DiskStorage::inject_write_failures`]).
    pub storage: DiskStorage,
    pub task: JoinHandle<Result<(), StorageError>>,
}

/// Opens the storage in `config.data_dir`, restores the state machine from the
/// latest snapshot, and starts the node. `transport` carries messages to peers;
/// messages from peers come in through [`ReplicaHandle::step`].
pub async fn start(
    config: ReplicaConfig,
    transport: Arc<dyn Transport>,
) -> Result<Replica, ReplicaStartError> {
    if config.id == 0 {
        return Err(ReplicaStartError::Config(
            "the raft id must not be 0".into(),
        ));
    }
    if !config.join && !config.initial_members.contains_key(&config.id) {
        return Err(ReplicaStartError::Config(format!(
            "raft id {} is not among the initial members {:?}; pass --join to join an existing group",
            config.id,
            config.initial_members.keys().collect::<Vec<_>>()
        )));
    }
    let logger = config.logger.new(slog::o!("component" => "raft"));
    let dir = config.data_dir.clone();
    let open_logger = logger.clone();
    let voters: Vec<u64> = config.initial_members.keys().copied().collect();
    let join = config.join;
    let storage = tokio::task::spawn_blocking(move || -> Result<DiskStorage, StorageError> {
        let storage = DiskStorage::open(&dir, &open_logger)?;
        if !storage.is_initialized() && !join {
            storage.initialize(&voters)?;
        }
        Ok(storage)
    })
    .await
    .map_err(|e| ReplicaStartError::Config(format!("storage open panicked: {e}")))??;

    let snapshot = storage.latest_snapshot();
    let snapshot_index = snapshot.get_metadata().index;
    let state = ReplicatedState::restore(snapshot.get_data())?;
    let initial_state = raft::Storage::initial_state(&storage)?;
    let conf_state = if snapshot_index > 0 && initial_state.conf_state == ConfState::default() {
        snapshot.get_metadata().get_conf_state().clone()
    } else {
        initial_state.conf_state.clone()
    };

    let raft_config = raft::Config {
        id: config.id,
        election_tick: config.timings.election_ticks,
        heartbeat_tick: config.timings.heartbeat_ticks,
        applied: snapshot_index,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        // A leader that cannot hear a majority steps down instead of serving stale
        // reads; pre-vote keeps a healed minority from disrupting the group.
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_config.validate()?;
    let mut raw = RawNode::new(&raft_config, storage.clone(), &logger)?;
    if conf_state.voters == [config.id] && conf_state.learners.is_empty() {
        // A group of one need not wait out an election timeout to lead.
        raw.campaign()?;
    }

    let mut addresses = config.initial_members.clone();
    addresses.extend(state.members.clone());
    for (id, address) in &addresses {
        if *id != config.id {
            transport.set_peer(*id, Some(address.clone()));
        }
    }

    let (commands_tx, commands_rx) = mpsc::channel(NODE_QUEUE);
    let (leadership_tx, leadership_rx) = watch::channel(Leadership::default());
    let state = Arc::new(RwLock::new(state));
    let handle = ReplicaHandle {
        id: config.id,
        commands: commands_tx,
        leadership: leadership_rx,
        state: state.clone(),
    };
    info!(logger, "raft node starting";
        "id" => config.id, "snapshot_index" => snapshot_index,
        "commit" => initial_state.hard_state.commit, "term" => initial_state.hard_state.term,
        "voters" => ?conf_state.voters);
    let node = RaftNode {
        id: config.id,
        raw,
        storage,
        state,
        transport,
        addresses,
        conf_state,
        applied: snapshot_index,
        last_snapshot_index: snapshot_index,
        leader_start_index: u64::MAX,
        proposals: HashMap::new(),
        membership_changes: HashMap::new(),
        reads_awaiting_index: HashMap::new(),
        reads_awaiting_apply: Vec::new(),
        incarnation: incarnation(),
        next_sequence: 0,
        leadership: leadership_tx,
        timings: config.timings,
        logger,
    };
    let storage = node.storage.clone();
    let task = tokio::spawn(node.run(commands_rx));
    Ok(Replica {
        handle,
        storage,
        task,
    })
}

/// A random base for proposal sequence numbers, so an entry proposed by an earlier
/// run of this master is never mistaken for one of this run's.
fn incarnation() -> u64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    high & 0xffff_ffff_0000_0000
}

struct Waiting<T> {
    respond: Respond<T>,
    deadline: Instant,
}

/// Context carried by a conf change entry: who proposed it (to answer them) and the
/// new member's address (so every replica learns it from the log).
#[derive(Clone, PartialEq, prost::Message)]
struct MemberChangeContext {
    #[prost(uint64, tag = "1")]
    proposer: u64,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(string, tag = "3")]
    address: String,
}

struct RaftNode {
    id: u64,
    raw: RawNode<DiskStorage>,
    /// The same storage `raw` reads; written only from this task (on the blocking
    /// pool, awaited), so raft never sees a half-written log.
    storage: DiskStorage,
    /// The state machine; written only in `apply_committed`.
    state: Arc<RwLock<ReplicatedState>>,
    transport: Arc<dyn Transport>,
    /// raft id -> address of every member we know of: the configured ones, overlaid
    /// by what the log recorded.
    addresses: BTreeMap<u64, String>,
    /// The membership as of `applied`.
    conf_state: ConfState,
    /// Index of the last entry applied to `state`.
    applied: u64,
    /// Index of the latest snapshot on disk.
    last_snapshot_index: u64,
    /// While leading: the index of the first entry of this term; the node serves
    /// once it has applied it. `u64::MAX` while not leading.
    leader_start_index: u64,
    /// Proposals of this run waiting for their entry to apply, by sequence.
    proposals: HashMap<u64, Waiting<pb::CommandResult>>,
    membership_changes: HashMap<u64, Waiting<()>>,
    /// Reads waiting for raft to confirm the read index, by request context.
    reads_awaiting_index: HashMap<u64, Waiting<()>>,
    /// Reads whose index is known, waiting for `applied` to reach it.
    reads_awaiting_apply: Vec<(u64, Waiting<()>)>,
    /// High bits: random per run; low bits: `next_sequence`.
    incarnation: u64,
    next_sequence: u64,
    leadership: watch::Sender<Leadership>,
    timings: RaftTimings,
    logger: Logger,
}

/// Why the loop stopped.
enum Stop {
    Shutdown,
    Removed,
    Storage(StorageError),
}

impl RaftNode {
    async fn run(mut self, mut commands: mpsc::Receiver<NodeCommand>) -> Result<(), StorageError> {
        let mut ticker = tokio::time::interval(self.timings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_leadership();
        let stop = loop {
            let mut shutdown = false;
            tokio::select! {
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.expire_requests();
                }
                command = commands.recv() => {
                    let Some(command) = command else { break Stop::Shutdown };
                    shutdown |= self.handle(command);
                    let mut taken = 1;
                    while taken < BATCH {
                        let Ok(command) = commands.try_recv() else { break };
                        shutdown |= self.handle(command);
                        taken += 1;
                    }
                }
            }
            if shutdown {
                break Stop::Shutdown;
            }
            if let Err(stop) = self.on_ready().await {
                break stop;
            }
            self.after_ready();
        };
        let (reason, result) = match stop {
            Stop::Shutdown => ("shut down".to_string(), Ok(())),
            Stop::Removed => ("removed from the master group".to_string(), Ok(())),
            Stop::Storage(e) => {
                error!(self.logger, "raft storage failed; this master stops taking part in the group"; "error" => %e);
                (format!("raft storage failed: {e}"), Err(e))
            }
        };
        self.fail_all(|| ReplicaError::Stopped(reason.clone()));
        self.leadership.send_modify(|l| {
            l.serving = false;
            l.stopped = Some(reason.clone());
        });
        info!(self.logger, "raft node stopped"; "reason" => &reason);
        result
    }

    /// Turns one command into raft calls. Returns true on shutdown.
    fn handle(&mut self, command: NodeCommand) -> bool {
        let deadline = Instant::now() + self.timings.request_timeout;
        match command {
            NodeCommand::Propose {
                command,
                time,
                respond,
            } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = respond.send(Err(self.not_leader()));
                    return false;
                }
                let sequence = self.incarnation | self.next_sequence;
                self.next_sequence = (self.next_sequence + 1) & 0xffff_ffff;
                let data = pb::ReplicatedCommand {
                    proposer: self.id,
                    sequence,
                    time: time.unwrap_or_else(agora_core::time::now_secs),
                    command: Some(*command),
                }
                .encode_to_vec();
                if data.len() > agora_core::limits::MAX_MESSAGE_BYTES {
                    let _ = respond.send(Err(ReplicaError::Invalid(format!(
                        "the command is {} bytes; at most {} fit in one raft entry",
                        data.len(),
                        agora_core::limits::MAX_MESSAGE_BYTES
                    ))));
                    return false;
                }
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        self.proposals
                            .insert(sequence, Waiting { respond, deadline });
                    }
                    Err(e) => {
                        warn!(self.logger, "proposal dropped"; "error" => %e);
                        let _ = respond.send(Err(self.not_leader()));
                    }
                }
            }
            NodeCommand::ReadIndex { respond } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = respond.send(Err(self.not_leader()));
                } else if self.applied < self.leader_start_index {
                    // raft-rs silently drops a read index before the leader has
                    // committed an entry of its term.
                    let _ = respond.send(Err(ReplicaError::NotReady));
                } else {
                    let context = self.incarnation | self.next_sequence;
                    self.next_sequence = (self.next_sequence + 1) & 0xffff_ffff;
                    self.raw.read_index(context.to_be_bytes().to_vec());
                    self.reads_awaiting_index
                        .insert(context, Waiting { respond, deadline });
                }
            }
            NodeCommand::ChangeMembers { change, respond } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = respond.send(Err(self.not_leader()));
                    return false;
                }
                let sequence = self.incarnation | self.next_sequence;
                self.next_sequence = (self.next_sequence + 1) & 0xffff_ffff;
                let mut cc = ConfChange::default();
                let mut context = MemberChangeContext {
                    proposer: self.id,
                    sequence,
                    address: String::new(),
                };
                match change {
                    MemberChange::Add { id, address } => {
                        cc.set_change_type(ConfChangeType::AddNode);
                        cc.node_id = id;
                        context.address = address;
                    }
                    MemberChange::Remove { id } => {
                        cc.set_change_type(ConfChangeType::RemoveNode);
                        cc.node_id = id;
                    }
                }
                match self.raw.propose_conf_change(context.encode_to_vec(), cc) {
                    Ok(()) => {
                        self.membership_changes
                            .insert(sequence, Waiting { respond, deadline });
                    }
                    Err(e) => {
                        let _ = respond.send(Err(ReplicaError::Invalid(format!(
                            "the membership change was refused: {e}"
                        ))));
                    }
                }
            }
            NodeCommand::Step(messages) => {
                for message in messages {
                    if let Err(e) = self.raw.step(message) {
                        // Stale or unexpected messages are normal on a lossy network.
                        slog::debug!(self.logger, "raft message not stepped"; "error" => %e);
                    }
                }
            }
            NodeCommand::Status { respond } => {
                let _ = respond.send(self.group());
            }
            NodeCommand::Shutdown => return true,
        }
        false
    }

    fn not_leader(&self) -> ReplicaError {
        ReplicaError::NotLeader {
            leader_address: self.addresses.get(&self.raw.raft.leader_id).cloned(),
        }
    }

    /// The ready loop, in raft-rs' order.
    async fn on_ready(&mut self) -> Result<(), Stop> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. A leader may send before it persists (raft's parallel append).
        self.transport.send(ready.take_messages());
        // 2. A snapshot from the leader replaces the log and the state machine.
        if *ready.snapshot() != Snapshot::default() {
            self.install_snapshot(ready.snapshot().clone()).await?;
        }
        // 3. Apply what is committed (and was persisted in an earlier ready).
        self.take_read_states(ready.take_read_states());
        self.apply_committed(ready.take_committed_entries()).await?;
        // 4-5. Append the new entries and persist the hard state, in one trip to disk.
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() || hard_state.is_some() {
            self.blocking(move |storage| {
                if !entries.is_empty() {
                    storage.append(&entries)?;
                }
                if let Some(hs) = hard_state {
                    storage.set_hard_state(hs)?;
                }
                Ok(())
            })
            .await?;
        }
        // 6. Messages that must wait for the disk (votes, append responses).
        self.transport.send(ready.take_persisted_messages());
        // 7. Advance, then the light ready. Its commit index is not persisted on its
        // own: raft recomputes commit from the log after a restart, and anything it
        // lost is simply applied again on top of the last snapshot.
        let mut light = self.raw.advance(ready);
        self.transport.send(light.take_messages());
        self.apply_committed(light.take_committed_entries()).await?;
        self.raw.advance_apply();
        self.maybe_snapshot().await?;
        Ok(())
    }

    /// Runs a storage write on the blocking pool and waits for it.
    async fn blocking(
        &self,
        write: impl FnOnce(&DiskStorage) -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(), Stop> {
        let storage = self.storage.clone();
        match tokio::task::spawn_blocking(move || write(&storage)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Stop::Storage(e)),
            Err(e) => Err(Stop::Storage(StorageError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(format!("storage write panicked: {e}")),
            })),
        }
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), Stop> {
        let metadata = snapshot.get_metadata().clone();
        let restored = match ReplicatedState::restore(snapshot.get_data()) {
            Ok(state) => state,
            Err(e) => {
                // A leader sent a snapshot we cannot read: refusing it keeps our
                // state intact, and the leader will retry (or the operator looks).
                error!(self.logger, "ignoring an unreadable snapshot from the leader";
                    "index" => metadata.index, "error" => %e);
                return Ok(());
            }
        };
        self.blocking(move |storage| storage.apply_snapshot(snapshot))
            .await?;
        for (id, address) in &restored.members {
            if *id != self.id {
                self.transport.set_peer(*id, Some(address.clone()));
            }
            self.addresses.insert(*id, address.clone());
        }
        if let Ok(mut state) = self.state.write() {
            *state = restored;
        }
        self.conf_state = metadata.get_conf_state().clone();
        self.applied = metadata.index;
        self.last_snapshot_index = metadata.index;
        info!(self.logger, "installed a snapshot from the leader"; "index" => metadata.index);
        Ok(())
    }

    fn take_read_states(&mut self, read_states: Vec<raft::ReadState>) {
        for read in read_states {
            let Ok(context) = <[u8; 8]>::try_from(read.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(waiting) = self
                .reads_awaiting_index
                .remove(&u64::from_be_bytes(context))
            {
                self.reads_awaiting_apply.push((read.index, waiting));
            }
        }
    }

    /// The one place committed entries change the state machine.
    async fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), Stop> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry),
                EntryType::EntryConfChange => self.apply_conf_change(&entry).await?,
                EntryType::EntryConfChangeV2 => {
                    warn!(self.logger, "ignoring a joint membership change (not proposed by Agora)";
                        "index" => entry.index);
                }
            }
            self.applied = entry.index;
        }
        self.release_reads();
        Ok(())
    }

    fn apply_normal(&mut self, entry: &Entry) {
        if entry.data.is_empty() {
            // The entry a new leader appends to commit its term.
            return;
        }
        let (origin, result) = match self.state.write() {
            Ok(mut state) => state.apply_entry_data(entry.index, &entry.data),
            Err(_) => return,
        };
        if let Some((proposer, sequence)) = origin
            && proposer == self.id
            && let Some(waiting) = self.proposals.remove(&sequence)
        {
            let _ = waiting.respond.send(Ok(result));
        }
    }

    async fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Stop> {
        let mut cc = ConfChange::default();
        if let Err(e) = cc.merge_from_bytes(&entry.data) {
            error!(self.logger, "a membership change in the log does not decode; skipping it";
                "index" => entry.index, "error" => %e);
            return Ok(());
        }
        // raft-rs keeps `propose_conf_change`'s context on the entry, not in the change.
        let context = MemberChangeContext::decode(entry.get_context()).unwrap_or_default();
        let conf_state = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(e) => {
                warn!(self.logger, "membership change not applied"; "error" => %e);
                self.answer_member_change(&context, Err(ReplicaError::Invalid(e.to_string())));
                return Ok(());
            }
        };
        let node_id = cc.node_id;
        let removed_self = match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(mut state) = self.state.write() {
                    state.set_member(node_id, context.address.clone());
                }
                self.addresses.insert(node_id, context.address.clone());
                if node_id != self.id {
                    self.transport
                        .set_peer(node_id, Some(context.address.clone()));
                }
                info!(self.logger, "master added to the group"; "id" => node_id, "address" => &context.address);
                false
            }
            ConfChangeType::RemoveNode => {
                if let Ok(mut state) = self.state.write() {
                    state.remove_member(node_id);
                }
                if node_id != self.id {
                    self.transport.set_peer(node_id, None);
                }
                info!(self.logger, "master removed from the group"; "id" => node_id);
                node_id == self.id
            }
        };
        let stored = conf_state.clone();
        self.blocking(move |storage| storage.set_conf_state(stored))
            .await?;
        self.conf_state = conf_state;
        self.answer_member_change(&context, Ok(()));
        if removed_self {
            return Err(Stop::Removed);
        }
        Ok(())
    }

    fn answer_member_change(
        &mut self,
        context: &MemberChangeContext,
        result: Result<(), ReplicaError>,
    ) {
        if context.proposer == self.id
            && let Some(waiting) = self.membership_changes.remove(&context.sequence)
        {
            let _ = waiting.respond.send(result);
        }
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_awaiting_apply)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_awaiting_apply = waiting;
        for (_, read) in ready {
            let _ = read.respond.send(Ok(()));
        }
    }

    /// Snapshots the state machine and compacts the log once enough has been applied
    /// since the last snapshot.
    async fn maybe_snapshot(&mut self) -> Result<(), Stop> {
        if self.applied < self.last_snapshot_index + self.timings.snapshot_every {
            return Ok(());
        }
        let data = match self.state.read() {
            Ok(state) => state.snapshot(),
            Err(_) => return Ok(()),
        };
        let (index, conf_state) = (self.applied, self.conf_state.clone());
        self.blocking(move |storage| storage.create_snapshot(index, conf_state, data))
            .await?;
        self.last_snapshot_index = index;
        info!(self.logger, "snapshot taken; log compacted"; "index" => index);
        Ok(())
    }

    /// Tracks leadership changes: a deposed leader fails what it was waiting for.
    fn after_ready(&mut self) {
        let leading = self.raw.raft.state == StateRole::Leader;
        if leading && self.leader_start_index == u64::MAX {
            self.leader_start_index = self.raw.raft.raft_log.last_index();
            info!(self.logger, "leading"; "term" => self.raw.raft.term);
        } else if !leading && self.leader_start_index != u64::MAX {
            self.leader_start_index = u64::MAX;
            info!(self.logger, "no longer leading"; "term" => self.raw.raft.term,
                "leader" => self.raw.raft.leader_id);
            self.fail_all(|| ReplicaError::LeadershipLost);
        }
        self.publish_leadership();
    }

    fn publish_leadership(&mut self) {
        let raft = &self.raw.raft;
        let leader_id = raft.leader_id;
        let next = Leadership {
            term: raft.term,
            leader_id,
            leader_address: self.addresses.get(&leader_id).cloned(),
            serving: raft.state == StateRole::Leader && self.applied >= self.leader_start_index,
            stopped: None,
        };
        self.leadership.send_if_modified(|current| {
            if *current != next {
                *current = next;
                true
            } else {
                false
            }
        });
    }

    fn fail_all(&mut self, error: impl Fn() -> ReplicaError) {
        for (_, waiting) in self.proposals.drain() {
            let _ = waiting.respond.send(Err(error()));
        }
        for (_, waiting) in self.membership_changes.drain() {
            let _ = waiting.respond.send(Err(error()));
        }
        for (_, waiting) in self.reads_awaiting_index.drain() {
            let _ = waiting.respond.send(Err(error()));
        }
        for (_, waiting) in self.reads_awaiting_apply.drain(..) {
            let _ = waiting.respond.send(Err(error()));
        }
    }

    fn expire_requests(&mut self) {
        let now = Instant::now();
        let timeout = self.timings.request_timeout;
        fn expire<T>(map: &mut HashMap<u64, Waiting<T>>, now: Instant, timeout: Duration) {
            let expired: Vec<u64> = map
                .iter()
                .filter(|(_, waiting)| waiting.deadline <= now)
                .map(|(key, _)| *key)
                .collect();
            for key in expired {
                if let Some(waiting) = map.remove(&key) {
                    let _ = waiting.respond.send(Err(ReplicaError::Timeout(timeout)));
                }
            }
        }
        expire(&mut self.proposals, now, timeout);
        expire(&mut self.membership_changes, now, timeout);
        expire(&mut self.reads_awaiting_index, now, timeout);
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_awaiting_apply)
            .into_iter()
            .partition(|(_, waiting)| waiting.deadline <= now);
        self.reads_awaiting_apply = kept;
        for (_, waiting) in expired {
            let _ = waiting.respond.send(Err(ReplicaError::Timeout(timeout)));
        }
    }

    /// The group as this master sees it.
    fn group(&self) -> pb::MasterGroup {
        let raft = &self.raw.raft;
        let leading = raft.state == StateRole::Leader;
        let mut ids: Vec<u64> = self.conf_state.voters.clone();
        ids.extend(self.conf_state.learners.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let members = ids
            .into_iter()
            .map(|id| {
                let role = if id == self.id {
                    role_name(raft.state)
                } else if id == raft.leader_id {
                    "LEADER"
                } else if self.conf_state.learners.contains(&id) {
                    "LEARNER"
                } else if leading {
                    "FOLLOWER"
                } else {
                    "UNKNOWN"
                };
                pb::master_group::Member {
                    id,
                    address: self.addresses.get(&id).cloned().unwrap_or_default(),
                    role: role.into(),
                    matched: if leading {
                        raft.prs().get(id).map_or(0, |p| p.matched)
                    } else {
                        0
                    },
                }
            })
            .collect();
        pb::MasterGroup {
            self_id: self.id,
            leader_id: raft.leader_id,
            leader_address: self
                .addresses
                .get(&raft.leader_id)
                .cloned()
                .unwrap_or_default(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            members,
        }
    }
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "LEADER",
        StateRole::Follower => "FOLLOWER",
        StateRole::Candidate | StateRole::PreCandidate => "CANDIDATE",
    }
}
