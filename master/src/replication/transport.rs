//! How raft messages reach peers.
//!
//! - [`GrpcTransport`]: one sender task per peer that batches queued messages into a
//!   `RaftPeer.Deliver` call; [`RaftPeerService`] is the receiving side.
//! - [`InMemoryNetwork`]: peers in one process, with partitions and message loss for
//!   tests.
//!
//! Raft tolerates loss, duplication and reordering, so every transport drops rather
//! than waits: a slow or dead peer never stalls the node.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto as pb;
use dashmap::DashMap;
use protobuf::Message as _;
use raft::prelude::Message;
use slog::{Logger, debug, warn};
use tokio::sync::mpsc;

use super::node::ReplicaHandle;

/// Sends raft messages to peers. Sending never blocks the node: a message that cannot
/// be delivered is dropped, which raft tolerates (it retries by itself).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);
    /// A member's address changed or a member joined (`Some`) or left (`None`).
    fn set_peer(&self, id: u64, address: Option<String>);
}

/// How many messages may wait for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Most messages in one `Deliver` call (the service's limit).
pub const MAX_BATCH_MESSAGES: usize = 4096;
/// The raft peer service accepts larger messages than the client APIs: a snapshot
/// carries the whole state store.
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// A `Deliver` call that takes longer than this is abandoned (raft resends).
const DELIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft over gRPC: one queue and one sender task per peer.
pub struct GrpcTransport {
    self_id: u64,
    /// Peer id -> its queue. Invariant: one entry per current member but us.
    peers: DashMap<u64, PeerQueue>,
    logger: Logger,
}

struct PeerQueue {
    address: String,
    queue: mpsc::Sender<Message>,
}

impl GrpcTransport {
    pub fn new(self_id: u64, logger: Logger) -> Arc<Self> {
        Arc::new(Self {
            self_id,
            peers: DashMap::new(),
            logger: logger.new(slog::o!("component" => "raft-transport")),
        })
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let Some(peer) = self.peers.get(&message.to) else {
                debug!(self.logger, "no address for raft peer; message dropped"; "to" => message.to);
                continue;
            };
            // Full: the peer is slow or down; raft will resend.
            let _ = peer.queue.try_send(message);
        }
    }

    fn set_peer(&self, id: u64, address: Option<String>) {
        if id == self.self_id {
            return;
        }
        match address {
            None => {
                // Dropping the queue's sender ends the peer's task.
                self.peers.remove(&id);
            }
            Some(address) => {
                if self.peers.get(&id).is_some_and(|p| p.address == address) {
                    return;
                }
                let (queue, messages) = mpsc::channel(PEER_QUEUE);
                tokio::spawn(deliver_to_peer(
                    self.self_id,
                    id,
                    address.clone(),
                    messages,
                    self.logger.clone(),
                ));
                self.peers.insert(id, PeerQueue { address, queue });
            }
        }
    }
}

/// Drains one peer's queue into `Deliver` calls, in order, one call at a time.
async fn deliver_to_peer(
    from: u64,
    to: u64,
    address: String,
    mut messages: mpsc::Receiver<Message>,
    logger: Logger,
) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5)),
        Err(e) => {
            warn!(logger, "raft peer address is not usable"; "peer" => to, "address" => &address, "error" => %e);
            return;
        }
    };
    let mut client = pb::raft_peer_client::RaftPeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let mut failures = 0u64;
    while let Some(first) = messages.recv().await {
        let mut batch = vec![first.write_to_bytes().unwrap_or_default()];
        let mut bytes = batch[0].len();
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_PEER_MESSAGE_BYTES / 2 {
            let Ok(message) = messages.try_recv() else {
                break;
            };
            let encoded = message.write_to_bytes().unwrap_or_default();
            bytes += encoded.len();
            batch.push(encoded);
        }
        let request = pb::RaftBatch {
            from,
            to,
            messages: batch,
        };
        match tokio::time::timeout(DELIVER_TIMEOUT, client.deliver(request)).await {
            Ok(Ok(_)) => failures = 0,
            Ok(Err(status)) => {
                failures += 1;
                // Log the first failure of a streak, then every hundredth.
                if failures % 100 == 1 {
                    warn!(logger, "raft messages to a peer failed"; "peer" => to,
                        "address" => &address, "error" => %status.message(), "streak" => failures);
                }
            }
            Err(_) => {
                failures += 1;
                if failures % 100 == 1 {
                    warn!(logger, "raft messages to a peer timed out"; "peer" => to, "address" => &address);
                }
            }
        }
    }
}

/// The receiving side of [`GrpcTransport`]: checks who is talking and hands the
/// decoded messages to the node.
pub struct RaftPeerService {
    pub replica: ReplicaHandle,
    pub logger: Logger,
}

impl RaftPeerService {
    pub fn into_server(self) -> pb::raft_peer_server::RaftPeerServer<Self> {
        pb::raft_peer_server::RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    /// Decodes and checks a batch; any bad message rejects the whole batch.
    fn decode(&self, batch: pb::RaftBatch) -> Result<Vec<Message>, tonic::Status> {
        let self_id = self.replica.id();
        if batch.from == 0 || batch.from == self_id {
            return Err(tonic::Status::invalid_argument(format!(
                "raft batch from id {} refused: not a peer of master {self_id}",
                batch.from
            )));
        }
        if batch.to != self_id {
            return Err(tonic::Status::invalid_argument(format!(
                "raft batch for id {} reached master {self_id}",
                batch.to
            )));
        }
        if batch.messages.len() > MAX_BATCH_MESSAGES {
            return Err(tonic::Status::invalid_argument(format!(
                "raft batch of {} messages; at most {MAX_BATCH_MESSAGES}",
                batch.messages.len()
            )));
        }
        let mut messages = Vec::with_capacity(batch.messages.len());
        for (i, bytes) in batch.messages.iter().enumerate() {
            let mut message = Message::default();
            message.merge_from_bytes(bytes).map_err(|e| {
                tonic::Status::invalid_argument(format!(
                    "raft message {i} from master {} does not decode: {e}",
                    batch.from
                ))
            })?;
            if message.from != batch.from || message.to != self_id {
                return Err(tonic::Status::invalid_argument(format!(
                    "raft message {i} claims to be from {} to {}, inside a batch from {} to {self_id}",
                    message.from, message.to, batch.from
                )));
            }
            messages.push(message);
        }
        Ok(messages)
    }
}

#[tonic::async_trait]
impl pb::raft_peer_server::RaftPeer for RaftPeerService {
    async fn deliver(
        &self,
        request: tonic::Request<pb::RaftBatch>,
    ) -> Result<tonic::Response<pb::RaftBatchAck>, tonic::Status> {
        let messages = self.decode(request.into_inner()).inspect_err(|status| {
            warn!(self.logger, "refused raft messages"; "error" => status.message());
        })?;
        self.replica.step(messages)?;
        Ok(tonic::Response::new(pb::RaftBatchAck {}))
    }
}

/// Peers in one process, connected through a network the test controls.
#[derive(Clone, Default)]
pub struct InMemoryNetwork {
    inner: Arc<Mutex<NetworkState>>,
}

#[derive(Default)]
struct NetworkState {
    /// Registered nodes by raft id.
    nodes: HashMap<u64, ReplicaHandle>,
    /// Pairs (from, to) whose messages are dropped.
    cut: BTreeSet<(u64, u64)>,
    /// Drop one message in `drop_one_in` (0 = none), chosen by a seeded generator.
    drop_one_in: u64,
    rng: u64,
    delivered: u64,
    dropped: u64,
}

impl InMemoryNetwork {
    pub fn new(seed: u64) -> Self {
        let network = Self::default();
        if let Ok(mut state) = network.inner.lock() {
            state.rng = seed | 1;
        }
        network
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetworkState) -> R) -> R {
        let mut state = match self.inner.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state)
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: u64) -> Arc<dyn Transport> {
        Arc::new(InMemoryTransport {
            id,
            network: self.clone(),
        })
    }

    /// Connects a started node so messages for `id` reach it.
    pub fn register(&self, id: u64, handle: ReplicaHandle) {
        self.with(|s| s.nodes.insert(id, handle));
    }

    /// Detaches a node (as if its process died).
    pub fn unregister(&self, id: u64) {
        self.with(|s| s.nodes.remove(&id));
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&self, id: u64, all: &[u64]) {
        self.with(|s| {
            for other in all {
                if *other != id {
                    s.cut.insert((id, *other));
                    s.cut.insert((*other, id));
                }
            }
        });
    }

    /// Splits the nodes into groups that only hear each other.
    pub fn partition(&self, groups: &[&[u64]]) {
        self.with(|s| {
            s.cut.clear();
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in a.iter() {
                            for y in b.iter() {
                                s.cut.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        });
    }

    pub fn heal(&self) {
        self.with(|s| s.cut.clear());
    }

    /// Drops one message in `n` at random (0 = lose nothing).
    pub fn set_loss(&self, n: u64) {
        self.with(|s| s.drop_one_in = n);
    }

    /// (delivered, dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        self.with(|s| (s.delivered, s.dropped))
    }
}

impl NetworkState {
    fn next_random(&mut self) -> u64 {
        // xorshift64: deterministic for a given seed.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

struct InMemoryTransport {
    id: u64,
    network: InMemoryNetwork,
}

impl Transport for InMemoryTransport {
    fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut by_target: HashMap<u64, (ReplicaHandle, Vec<Message>)> = HashMap::new();
        self.network.with(|s| {
            for message in messages {
                let to = message.to;
                let lost = s.cut.contains(&(self.id, to))
                    || (s.drop_one_in > 0 && s.next_random() % s.drop_one_in == 0);
                match s.nodes.get(&to) {
                    Some(handle) if !lost => {
                        s.delivered += 1;
                        by_target
                            .entry(to)
                            .or_insert_with(|| (handle.clone(), Vec::new()))
                            .1
                            .push(message);
                    }
                    _ => s.dropped += 1,
                }
            }
        });
        for (_, (handle, messages)) in by_target {
            let _ = handle.step(messages);
        }
    }

    fn set_peer(&self, _id: u64, _address: Option<String>) {}
}
