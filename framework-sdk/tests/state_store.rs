//! The state-store client and leader election against a fake master: a tonic
//! `StateStore` server in the test (a map behind a lock) that can also play a
//! follower (UNAVAILABLE with an `agora-leader` hint), cap list pages, and answer a
//! write it applied as if leadership had changed before it committed.
//!
//! Client tests serve it on 127.0.0.1:0 in real time; they assert nothing about
//! timing. Leader-election tests are timed, so they run under paused tokio time and
//! reach the fake over an in-memory duplex: real sockets would let the paused clock
//! jump past request timeouts while bytes are in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use agora_proto as pb;
use agora_proto::state_store_server::{StateStore as StateStoreService, StateStoreServer};
use agora_proto::state_store_write::{Op, batch_op};
use agora_proto::state_store_write_result::BatchOpResult;
use agora_sdk::state_store::WRITE_OUTCOME_METADATA_KEY;
use agora_sdk::{
    BatchOp, BatchOutcome, CasOutcome, DeleteOutcome, Entry, Fence, LEADER_METADATA_KEY,
    LeaderElection, LeaseOutcome, StateStore, StateStoreConfig, StateStoreError,
};
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Bound on every wait, so a broken client fails the test instead of hanging it.
/// Virtual time under a paused clock, so it must outlast several lease ttls.
const PATIENCE: Duration = Duration::from_secs(120);
/// Where the fake's lease clock starts, in seconds since the epoch.
const CLOCK_BASE: f64 = 1_700_000_000.0;

/// How the fake answers.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    Leader,
    /// Refuses every request with UNAVAILABLE and this leader address as a hint.
    Follower {
        leader: String,
    },
}

/// How the fake reports a write whose outcome it pretends not to know.
#[derive(Clone, Copy, Debug, PartialEq)]
enum UnknownOutcome {
    /// The message a master sends when leadership changed mid-write.
    Message,
    /// Only the metadata marker, with an unrelated message.
    Metadata,
}

/// A lease as the fake keeps it; released leases stay, expired, to keep the epoch.
#[derive(Clone, Debug)]
struct FakeLease {
    lease: pb::StoreLease,
    /// When the lease runs out, on the tokio clock.
    expires: Instant,
}

#[derive(Debug)]
struct FakeState {
    role: Role,
    entries: BTreeMap<String, pb::StoreEntry>,
    leases: HashMap<String, FakeLease>,
    /// The last write's "raft index".
    index: u64,
    /// Largest list page the fake returns, whatever the client asks.
    page_cap: usize,
    /// The next writes are applied and then answered as of unknown outcome.
    unknown_outcomes: Vec<UnknownOutcome>,
    /// Lease acquisitions by these holders are refused as if no leader were known
    /// (nothing applied).
    unavailable_for: Vec<String>,
    /// Requests received, by kind ("get", "list", "write", "get_lease").
    requests: HashMap<&'static str, u32>,
    /// Lease acquisitions received, by holder.
    acquisitions: HashMap<String, u32>,
    /// Every grant: holder and when it expires.
    grants: Vec<(String, Instant)>,
    /// The fence of every write received, in order (`None`: unfenced).
    fences: Vec<Option<pb::state_store_write::Fence>>,
}

impl FakeState {
    fn count(&self, kind: &str) -> u32 {
        self.requests.get(kind).copied().unwrap_or(0)
    }

    fn acquisitions(&self, holder: &str) -> u32 {
        self.acquisitions.get(holder).copied().unwrap_or(0)
    }

    fn lease_holder(&self, name: &str) -> Option<String> {
        self.leases
            .get(name)
            .filter(|l| l.expires > Instant::now())
            .map(|l| l.lease.holder.clone())
    }
}

/// The tonic service; the test keeps the other end of `state`.
#[derive(Clone)]
struct Fake {
    state: Arc<watch::Sender<FakeState>>,
    /// Origin of the fake's lease clock.
    started: Instant,
}

impl Fake {
    fn new(role: Role) -> Fake {
        let state = FakeState {
            role,
            entries: BTreeMap::new(),
            leases: HashMap::new(),
            index: 0,
            page_cap: 1000,
            unknown_outcomes: Vec::new(),
            unavailable_for: Vec::new(),
            requests: HashMap::new(),
            acquisitions: HashMap::new(),
            grants: Vec::new(),
            fences: Vec::new(),
        };
        Fake {
            state: Arc::new(watch::Sender::new(state)),
            started: Instant::now(),
        }
    }

    fn now_secs(&self, at: Instant) -> f64 {
        CLOCK_BASE + (at - self.started).as_secs_f64()
    }

    /// Counts the request; refuses it when following.
    fn admit(&self, kind: &'static str) -> Result<(), Status> {
        let mut refusal = None;
        self.state.send_modify(|state| {
            *state.requests.entry(kind).or_default() += 1;
            if let Role::Follower { leader } = &state.role {
                let mut status = Status::unavailable("this master is not the leader");
                if let Ok(value) = leader.parse() {
                    status.metadata_mut().insert(LEADER_METADATA_KEY, value);
                }
                refusal = Some(status);
            }
        });
        refusal.map_or(Ok(()), Err)
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        let mut result = None;
        self.state.send_modify(|state| result = Some(f(state)));
        result.expect("send_modify runs the closure")
    }

    async fn wait_until(&self, what: &str, condition: impl FnMut(&FakeState) -> bool) {
        let mut receiver = self.state.subscribe();
        tokio::time::timeout(PATIENCE, receiver.wait_for(condition))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
            .expect("fake gone");
    }

    fn apply(&self, state: &mut FakeState, op: Op) -> Result<pb::StateStoreWriteResult, Status> {
        state.index += 1;
        let index = state.index;
        let now = Instant::now();
        let put = |state: &mut FakeState, key: String, value: Vec<u8>| {
            let create_version = state
                .entries
                .get(&key)
                .map_or(index, |existing| existing.create_version);
            let entry = pb::StoreEntry {
                key: key.clone(),
                value,
                version: index,
                create_version,
            };
            state.entries.insert(key, entry.clone());
            entry
        };
        Ok(match op {
            Op::Put(p) => pb::StateStoreWriteResult {
                entry: Some(put(state, p.key, p.value)),
                succeeded: true,
                ..Default::default()
            },
            Op::Delete(d) => pb::StateStoreWriteResult {
                succeeded: true,
                existed: state.entries.remove(&d.key).is_some(),
                ..Default::default()
            },
            Op::CompareAndSet(cas) => {
                let current = state.entries.get(&cas.key).cloned();
                let version = current.as_ref().map_or(0, |e| e.version);
                if version != cas.expected_version {
                    pb::StateStoreWriteResult {
                        current,
                        ..Default::default()
                    }
                } else if cas.delete {
                    state.entries.remove(&cas.key);
                    pb::StateStoreWriteResult {
                        succeeded: true,
                        existed: current.is_some(),
                        ..Default::default()
                    }
                } else {
                    pb::StateStoreWriteResult {
                        entry: Some(put(state, cas.key, cas.value)),
                        succeeded: true,
                        ..Default::default()
                    }
                }
            }
            Op::AcquireLease(acquire) => {
                if !(1.0..=3600.0).contains(&acquire.ttl_seconds) {
                    return Err(Status::invalid_argument(
                        "acquire_lease.ttl_seconds must be within 1..=3600",
                    ));
                }
                let ttl = Duration::from_secs_f64(acquire.ttl_seconds);
                let previous = state.leases.get(&acquire.name).cloned();
                if let Some(held) = &previous
                    && held.expires > now
                    && held.lease.holder != acquire.holder
                {
                    return Ok(pb::StateStoreWriteResult {
                        lease: Some(held.lease.clone()),
                        ..Default::default()
                    });
                }
                let epoch = match &previous {
                    Some(held) if held.expires > now => held.lease.epoch,
                    Some(held) => held.lease.epoch + 1,
                    None => 1,
                };
                let lease = pb::StoreLease {
                    name: acquire.name.clone(),
                    holder: acquire.holder.clone(),
                    expires_at: self.now_secs(now + ttl),
                    epoch,
                };
                state.leases.insert(
                    acquire.name,
                    FakeLease {
                        lease: lease.clone(),
                        expires: now + ttl,
                    },
                );
                state.grants.push((acquire.holder, now + ttl));
                pb::StateStoreWriteResult {
                    lease: Some(lease),
                    succeeded: true,
                    ..Default::default()
                }
            }
            Op::Batch(batch) => {
                for op in &batch.ops {
                    if let Some(batch_op::Op::CompareAndSet(cas)) = &op.op {
                        let current = state.entries.get(&cas.key).cloned();
                        if current.as_ref().map_or(0, |e| e.version) != cas.expected_version {
                            return Ok(pb::StateStoreWriteResult {
                                conflict_key: cas.key.clone(),
                                current,
                                ..Default::default()
                            });
                        }
                    }
                }
                let mut results = Vec::new();
                for op in batch.ops {
                    let written = match op.op {
                        Some(batch_op::Op::Put(p)) => Some((p.key, p.value)),
                        Some(batch_op::Op::CompareAndSet(cas)) if !cas.delete => {
                            Some((cas.key, cas.value))
                        }
                        Some(batch_op::Op::Delete(pb::state_store_write::Delete { key }))
                        | Some(batch_op::Op::CompareAndSet(
                            pb::state_store_write::CompareAndSet { key, .. },
                        )) => {
                            results.push(BatchOpResult {
                                entry: None,
                                existed: state.entries.remove(&key).is_some(),
                            });
                            None
                        }
                        None => return Err(Status::invalid_argument("batch op is required")),
                    };
                    if let Some((key, value)) = written {
                        // Like a master, leave out the value the client sent.
                        let entry = pb::StoreEntry {
                            value: Vec::new(),
                            ..put(state, key, value)
                        };
                        results.push(BatchOpResult {
                            entry: Some(entry),
                            existed: false,
                        });
                    }
                }
                pb::StateStoreWriteResult {
                    succeeded: true,
                    batch: results,
                    ..Default::default()
                }
            }
            Op::ReleaseLease(release) => {
                let held = state
                    .leases
                    .get_mut(&release.name)
                    .filter(|held| held.expires > now && held.lease.holder == release.holder);
                let released = held.is_some();
                if let Some(held) = held {
                    held.expires = now;
                    held.lease.expires_at = self.now_secs(now);
                }
                pb::StateStoreWriteResult {
                    succeeded: released,
                    ..Default::default()
                }
            }
        })
    }
}

#[tonic::async_trait]
impl StateStoreService for Fake {
    async fn get(
        &self,
        request: Request<pb::StoreGetRequest>,
    ) -> Result<Response<pb::StoreGetResponse>, Status> {
        self.admit("get")?;
        let key = request.into_inner().key;
        let entry = self.with(|state| state.entries.get(&key).cloned());
        Ok(Response::new(pb::StoreGetResponse { entry }))
    }

    async fn list(
        &self,
        request: Request<pb::StoreListRequest>,
    ) -> Result<Response<pb::StoreListResponse>, Status> {
        self.admit("list")?;
        let request = request.into_inner();
        let page = self.with(|state| {
            let limit = match request.limit {
                0 => 1000,
                n => n as usize,
            }
            .min(state.page_cap);
            let mut matching = state
                .entries
                .values()
                .filter(|e| e.key.starts_with(&request.prefix) && e.key > request.start_after);
            let entries: Vec<_> = matching.by_ref().take(limit).cloned().collect();
            let more = matching.next().is_some();
            pb::StoreListResponse { entries, more }
        });
        Ok(Response::new(page))
    }

    async fn write(
        &self,
        request: Request<pb::StateStoreWrite>,
    ) -> Result<Response<pb::StateStoreWriteResult>, Status> {
        self.admit("write")?;
        let write = request.into_inner();
        let fence = write.fence;
        let op = write
            .op
            .ok_or_else(|| Status::invalid_argument("op is required"))?;
        self.with(|state| {
            state.fences.push(fence.clone());
            if let Some(fence) = fence {
                let now = Instant::now();
                let lease = state
                    .leases
                    .get(&fence.lease)
                    .filter(|held| held.expires > now)
                    .map(|held| held.lease.clone());
                let holds = lease
                    .as_ref()
                    .is_some_and(|l| l.holder == fence.holder && l.epoch == fence.epoch);
                if !holds {
                    return Ok(Response::new(pb::StateStoreWriteResult {
                        fenced: true,
                        lease,
                        ..Default::default()
                    }));
                }
            }
            if let Op::AcquireLease(acquire) = &op {
                *state
                    .acquisitions
                    .entry(acquire.holder.clone())
                    .or_default() += 1;
                if state.unavailable_for.contains(&acquire.holder) {
                    return Err(Status::unavailable("this master is not the leader"));
                }
            }
            let result = self.apply(state, op)?;
            if state.unknown_outcomes.is_empty() {
                return Ok(Response::new(result));
            }
            Err(match state.unknown_outcomes.remove(0) {
                UnknownOutcome::Message => Status::unavailable(
                    "leadership changed before the write committed; it may or may not have been applied",
                ),
                UnknownOutcome::Metadata => {
                    let mut status = Status::unavailable("the replica stopped: disk failed");
                    status
                        .metadata_mut()
                        .insert(WRITE_OUTCOME_METADATA_KEY, "unknown".parse().expect("ascii"));
                    status
                }
            })
        })
    }

    async fn get_lease(
        &self,
        request: Request<pb::StoreGetLeaseRequest>,
    ) -> Result<Response<pb::StoreGetLeaseResponse>, Status> {
        self.admit("get_lease")?;
        let name = request.into_inner().name;
        let lease = self.with(|state| {
            state
                .leases
                .get(&name)
                .filter(|l| l.expires > Instant::now())
                .map(|l| l.lease.clone())
        });
        Ok(Response::new(pb::StoreGetLeaseResponse { lease }))
    }
}

/// A fake served on 127.0.0.1:0; returns it and its address.
async fn serve_tcp(role: Role) -> (Fake, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let fake = Fake::new(role);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StateStoreServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (fake, address)
}

/// An address where nothing listens, and its socket: bound but not listening, it
/// refuses connections, and while it is held no other test can listen there.
fn dead_address() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    let address = socket.local_addr().expect("address").to_string();
    (socket, address)
}

/// Dials the fake over an in-memory duplex: each connection attempt hands the
/// server its end.
#[derive(Clone)]
struct DuplexConnector(mpsc::UnboundedSender<DuplexStream>);

impl tonic::codegen::Service<Uri> for DuplexConnector {
    type Response = TokioIo<DuplexStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(64 * 1024);
        std::future::ready(
            self.0
                .send(server)
                .map(|()| TokioIo::new(client))
                .map_err(|_| std::io::Error::other("the fake master is gone")),
        )
    }
}

/// A leading fake reached in memory, and a client for namespace "apps" on it.
fn serve_in_memory() -> (Fake, StateStore) {
    let fake = Fake::new(Role::Leader);
    let (connections, incoming) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StateStoreServer::new(fake.clone()))
            .serve_with_incoming(
                UnboundedReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
            ),
    );
    let address = "in-memory.test:5050".to_string();
    let channel: Channel = Endpoint::from_static("http://in-memory.test:5050")
        .connect_with_connector_lazy(DuplexConnector(connections));
    let config = StateStoreConfig::new(vec![address.clone()], "apps");
    let store = StateStore::with_channels(config, vec![(address, channel)]).expect("valid config");
    (fake, store)
}

fn client(masters: &[&str]) -> StateStore {
    StateStore::connect(masters.iter().map(|m| m.to_string()).collect(), "apps")
        .expect("valid config")
}

#[tokio::test]
async fn the_client_follows_the_leader_hint_and_then_goes_straight_to_the_leader() {
    let (leader, leader_address) = serve_tcp(Role::Leader).await;
    let (follower, follower_address) = serve_tcp(Role::Follower {
        leader: leader_address,
    })
    .await;
    let store = client(&[&follower_address]);

    let entry = store.put("config", b"v1".to_vec()).await.expect("put");
    assert_eq!(entry.key, "config");
    assert_eq!(entry.value, b"v1");
    assert_eq!(follower.with(|s| s.count("write")), 1);
    assert_eq!(leader.with(|s| s.count("write")), 1);

    let read = store.get("config").await.expect("get");
    assert_eq!(read, Some(entry));
    assert_eq!(
        follower.with(|s| s.requests.values().sum::<u32>()),
        1,
        "the second call should have gone to the remembered leader"
    );
    assert_eq!(leader.with(|s| s.count("get")), 1);
}

#[tokio::test]
async fn a_master_that_cannot_be_reached_is_skipped_even_for_compare_and_set() {
    let (_held, dead) = dead_address();
    let (leader, leader_address) = serve_tcp(Role::Leader).await;
    let store = client(&[&dead, &leader_address]);

    // The refused connection proves the request never left, so even a write that
    // must not be repeated moves on to the next master.
    let outcome = store
        .compare_and_set("job/1", 0, b"queued".to_vec())
        .await
        .expect("compare-and-set");
    assert!(matches!(outcome, CasOutcome::Applied(ref e) if e.value == b"queued"));
    assert_eq!(leader.with(|s| s.count("write")), 1);
}

#[tokio::test]
async fn compare_and_set_applies_only_on_the_expected_version() {
    let (_leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);

    let CasOutcome::Applied(first) = store.compare_and_set("k", 0, b"a".to_vec()).await.unwrap()
    else {
        panic!("creating a missing key with expected version 0 must apply");
    };
    assert_eq!(first.create_version, first.version);

    // Version 0 means "must not exist": the key exists now.
    assert_eq!(
        store.compare_and_set("k", 0, b"b".to_vec()).await.unwrap(),
        CasOutcome::Conflict(Some(first.clone()))
    );

    let CasOutcome::Applied(second) = store
        .compare_and_set("k", first.version, b"b".to_vec())
        .await
        .unwrap()
    else {
        panic!("the current version must apply");
    };
    assert!(second.version > first.version);
    assert_eq!(second.create_version, first.create_version);
    assert_eq!(second.value, b"b");

    // A stale token loses and learns the current entry.
    assert_eq!(
        store
            .compare_and_set("k", first.version, b"c".to_vec())
            .await
            .unwrap(),
        CasOutcome::Conflict(Some(second.clone()))
    );
    assert_eq!(
        store.compare_and_delete("k", first.version).await.unwrap(),
        DeleteOutcome::Conflict(Some(second.clone()))
    );
    assert_eq!(store.get("k").await.unwrap(), Some(second.clone()));

    assert_eq!(
        store.compare_and_delete("k", second.version).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(
        store.compare_and_set("k", 7, b"d".to_vec()).await.unwrap(),
        CasOutcome::Conflict(None)
    );
    assert!(!store.delete("k").await.unwrap());
}

#[tokio::test]
async fn list_pages_through_every_entry_under_the_prefix_in_order() {
    let (leader, address) = serve_tcp(Role::Leader).await;
    leader.with(|s| s.page_cap = 3);
    let store = client(&[&address]);
    // Written out of order; the fake keeps them sorted, as the master does.
    for i in (0..10).rev() {
        store
            .put(&format!("jobs/{i:02}"), vec![i as u8])
            .await
            .unwrap();
    }
    store.put("jobz", b"outside".to_vec()).await.unwrap();
    store.put("apps/x", b"outside".to_vec()).await.unwrap();

    let listed = store.list("jobs/").await.expect("list");
    let keys: Vec<_> = listed.iter().map(|e| e.key.as_str()).collect();
    let expected: Vec<_> = (0..10).map(|i| format!("jobs/{i:02}")).collect();
    assert_eq!(keys, expected);
    assert!(listed.iter().enumerate().all(|(i, e)| e.value == [i as u8]));
    assert_eq!(
        leader.with(|s| s.count("list")),
        4,
        "10 entries in pages of 3 take 4 requests"
    );

    assert_eq!(store.list("nothing/").await.unwrap(), Vec::new());
    assert_eq!(store.list("").await.unwrap().len(), 12);
}

#[tokio::test]
async fn a_write_of_unknown_outcome_is_reported_as_ambiguous_and_never_resent() {
    for flavour in [UnknownOutcome::Message, UnknownOutcome::Metadata] {
        let (leader, address) = serve_tcp(Role::Leader).await;
        let store = client(&[&address]);

        leader.with(|s| s.unknown_outcomes.push(flavour));
        let error = store
            .compare_and_set("leader", 0, b"me".to_vec())
            .await
            .expect_err("the outcome is unknown");
        assert!(error.is_ambiguous(), "{flavour:?}: got {error:?}");
        assert_eq!(leader.with(|s| s.count("write")), 1, "{flavour:?}: resent");
        // It had in fact been applied: resending it would have reported a conflict
        // for the caller's own write.
        assert_eq!(
            store.get("leader").await.unwrap().map(|e| e.value),
            Some(b"me".to_vec())
        );

        leader.with(|s| s.unknown_outcomes.push(flavour));
        let error = store
            .acquire_lease("lock", "a", Duration::from_secs(10))
            .await
            .expect_err("the outcome is unknown");
        assert!(matches!(error, StateStoreError::Ambiguous { .. }));
        assert_eq!(leader.with(|s| s.count("write")), 2, "{flavour:?}: resent");

        // A put is resent: a second application leaves the same value.
        leader.with(|s| s.unknown_outcomes.push(flavour));
        let entry = store.put("config", b"v2".to_vec()).await.expect("put");
        assert_eq!(entry.value, b"v2");
        assert_eq!(leader.with(|s| s.count("write")), 4);
    }
}

#[tokio::test]
async fn leases_are_granted_renewed_refused_and_released() {
    let (_leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);
    let ttl = Duration::from_secs(30);

    let LeaseOutcome::Granted(first) = store.acquire_lease("lock", "a", ttl).await.unwrap() else {
        panic!("a free lease must be granted");
    };
    assert_eq!(first.holder, "a");
    let LeaseOutcome::Granted(renewed) = store.acquire_lease("lock", "a", ttl).await.unwrap()
    else {
        panic!("the holder must be able to renew");
    };
    assert_eq!(
        renewed.epoch, first.epoch,
        "a renewal keeps the fencing token"
    );
    assert!(renewed.expires_at >= first.expires_at);

    assert_eq!(
        store.acquire_lease("lock", "b", ttl).await.unwrap(),
        LeaseOutcome::HeldByOther(renewed.clone())
    );
    assert_eq!(store.lease("lock").await.unwrap(), Some(renewed.clone()));
    assert!(!store.release_lease("lock", "b").await.unwrap());
    assert!(store.release_lease("lock", "a").await.unwrap());
    assert_eq!(store.lease("lock").await.unwrap(), None);

    let LeaseOutcome::Granted(taken) = store.acquire_lease("lock", "b", ttl).await.unwrap() else {
        panic!("a released lease must be granted");
    };
    assert!(taken.epoch > renewed.epoch, "a new holder gets a new token");

    let error = store
        .acquire_lease("lock", "b", Duration::from_secs(7200))
        .await
        .expect_err("the ttl is out of range");
    assert!(matches!(error, StateStoreError::Invalid(ref m) if m.contains("ttl")));
}

#[tokio::test(start_paused = true)]
async fn a_call_gives_up_at_its_deadline_when_no_master_leads() {
    let (_held, dead) = dead_address();
    let mut config = StateStoreConfig::new(vec![dead], "apps");
    config.deadline = Duration::from_secs(5);
    let store = StateStore::with_config(config).unwrap();
    let started = Instant::now();
    let error = store.get("k").await.expect_err("nothing listens");
    assert!(
        matches!(error, StateStoreError::Unavailable { attempts, .. } if attempts > 1),
        "{error:?}"
    );
    assert!(started.elapsed() <= Duration::from_secs(6));
}

#[tokio::test]
async fn masters_pointing_at_each_other_do_not_spin_the_client() {
    let (first, first_address) = serve_tcp(Role::Leader).await;
    let (second, second_address) = serve_tcp(Role::Follower {
        leader: first_address.clone(),
    })
    .await;
    first.with(|s| {
        s.role = Role::Follower {
            leader: second_address.clone(),
        }
    });
    let mut config = StateStoreConfig::new(vec![first_address], "apps");
    config.deadline = Duration::from_millis(300);
    let store = StateStore::with_config(config).unwrap();
    let error = store.get("k").await.expect_err("nobody leads");
    assert!(
        matches!(error, StateStoreError::Unavailable { .. }),
        "{error:?}"
    );
    let requests = first.with(|s| s.count("get")) + second.with(|s| s.count("get"));
    // Redirects are bounded per round and rounds are paced by the backoff: a few
    // rounds in 300 ms, not thousands of requests.
    assert!(requests < 100, "{requests} requests");
}

#[test]
fn bad_configurations_are_refused_before_anything_is_dialed() {
    assert!(matches!(
        StateStore::connect(vec![], "apps"),
        Err(StateStoreError::Config(_))
    ));
    assert!(matches!(
        StateStore::connect(vec!["127.0.0.1:5050".into()], "bad namespace"),
        Err(StateStoreError::Config(_))
    ));
}

// ---------------------------------------------------------------- batches and fences

#[tokio::test]
async fn a_batch_hands_back_every_entry_with_its_value_or_names_the_conflict() {
    let (leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);
    let app = store.put("app/web", b"v1".to_vec()).await.unwrap();
    store.put("old", b"x".to_vec()).await.unwrap();

    let outcome = store
        .batch([
            BatchOp::put("instance/1", b"one".to_vec()),
            BatchOp::delete("old"),
            BatchOp::compare_and_set("app/web", app.version, b"v2".to_vec()),
            BatchOp::compare_and_delete("gone", 0),
        ])
        .await
        .unwrap();
    let BatchOutcome::Applied(entries) = outcome else {
        panic!("the versions match: {outcome:?}");
    };
    let version = leader.with(|s| s.index);
    let entry = |key: &str, value: &[u8], create_version: u64| Entry {
        key: key.into(),
        value: value.to_vec(),
        version,
        create_version,
    };
    assert_eq!(
        entries,
        [
            Some(entry("instance/1", b"one", version)),
            None,
            Some(entry("app/web", b"v2", app.create_version)),
            None,
        ]
    );
    assert_eq!(leader.with(|s| s.count("write")), 3);

    let stale = store
        .batch(vec![
            BatchOp::put("instance/2", b"two".to_vec()),
            BatchOp::compare_and_set("app/web", app.version, b"v3".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        stale,
        BatchOutcome::Conflict {
            key: "app/web".into(),
            current: store.get("app/web").await.unwrap(),
        }
    );
    assert_eq!(store.get("instance/2").await.unwrap(), None);
}

#[tokio::test]
async fn a_batch_of_puts_and_deletes_is_resent_but_one_with_a_compare_and_set_is_not() {
    let (leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);

    leader.with(|s| s.unknown_outcomes.push(UnknownOutcome::Message));
    let outcome = store
        .batch([BatchOp::put("a", b"1".to_vec()), BatchOp::delete("b")])
        .await
        .expect("resent after the unknown outcome");
    assert!(matches!(outcome, BatchOutcome::Applied(ref e) if e.len() == 2));
    assert_eq!(leader.with(|s| s.count("write")), 2);

    for conditional in [
        BatchOp::compare_and_set("c", 0, b"3".to_vec()),
        BatchOp::compare_and_delete("a", 1),
    ] {
        leader.with(|s| s.unknown_outcomes.push(UnknownOutcome::Metadata));
        let before = leader.with(|s| s.count("write"));
        let error = store
            .batch([BatchOp::put("d", b"4".to_vec()), conditional.clone()])
            .await
            .expect_err("the outcome is unknown");
        assert!(error.is_ambiguous(), "{conditional:?}: {error:?}");
        assert_eq!(
            leader.with(|s| s.count("write")),
            before + 1,
            "{conditional:?}: resent"
        );
    }
}

#[tokio::test]
async fn an_oversized_batch_is_refused_before_it_is_sent() {
    let (leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);
    let too_many =
        (0..=agora_core::limits::MAX_STORE_BATCH_OPS).map(|i| BatchOp::delete(format!("k{i}")));
    let error = store.batch(too_many).await.expect_err("too many ops");
    assert!(
        matches!(&error, StateStoreError::Invalid(m) if m.starts_with("batch.ops:")),
        "{error:?}"
    );
    let value = vec![0u8; agora_core::limits::MAX_STORE_VALUE_BYTES];
    let too_big = (0..=agora_core::limits::MAX_STORE_BATCH_BYTES / value.len())
        .map(|i| BatchOp::put(format!("k{i}"), value.clone()));
    let error = store.batch(too_big).await.expect_err("too many bytes");
    assert!(
        matches!(&error, StateStoreError::Invalid(m) if m.starts_with("batch.ops (keys and values):")),
        "{error:?}"
    );
    assert_eq!(leader.with(|s| s.count("write")), 0);
}

#[tokio::test]
async fn a_fenced_client_fences_every_key_write_but_not_lease_writes() {
    let (leader, address) = serve_tcp(Role::Leader).await;
    let store = client(&[&address]);
    let LeaseOutcome::Granted(lease) = store
        .acquire_lease("leader", "a", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("a free lease is granted");
    };
    let fence = Fence::from(&lease);
    assert_eq!(fence, Fence::new("leader", "a", lease.epoch));
    let fenced = store.fenced(fence.clone());
    assert_eq!(fenced.fence(), Some(&fence));
    assert_eq!(store.fence(), None, "the original client stays unfenced");

    let written = fenced.put("k", b"1".to_vec()).await.unwrap();
    fenced
        .compare_and_set("k", written.version, b"2".to_vec())
        .await
        .unwrap();
    fenced
        .batch([BatchOp::put("j", b"3".to_vec())])
        .await
        .unwrap();
    fenced.delete("j").await.unwrap();
    fenced
        .acquire_lease("leader", "a", Duration::from_secs(30))
        .await
        .unwrap();
    fenced.release_lease("leader", "a").await.unwrap();
    store.put("unfenced", b"4".to_vec()).await.unwrap();
    let sent = leader.with(|s| s.fences.clone());
    let expected = Some(pb::state_store_write::Fence {
        lease: "leader".into(),
        holder: "a".into(),
        epoch: lease.epoch,
    });
    assert_eq!(
        sent[1..],
        [
            expected.clone(),
            expected.clone(),
            expected.clone(),
            expected,
            None,
            None,
            None
        ]
    );

    // The lease is released and someone else takes it: the fenced client is out,
    // and learns who holds the lease.
    let LeaseOutcome::Granted(taken) = store
        .acquire_lease("leader", "b", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("a released lease is granted");
    };
    for error in [
        fenced.put("k", b"late".to_vec()).await.unwrap_err(),
        fenced.batch([BatchOp::delete("k")]).await.unwrap_err(),
    ] {
        assert!(error.is_fenced(), "{error:?}");
        assert_eq!(
            error,
            StateStoreError::Fenced {
                fence: fence.clone(),
                current: Some(taken.clone()),
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("fenced out") && message.contains("'b'"),
            "{message}"
        );
    }
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"2");
}

// ---------------------------------------------------------------- leader election

const TTL: Duration = Duration::from_secs(3);

async fn wait_leading(election: &LeaderElection, leading: bool) {
    let mut leadership = election.leadership();
    tokio::time::timeout(PATIENCE, leadership.wait_for(|l| *l == leading))
        .await
        .unwrap_or_else(|_| panic!("leadership never became {leading}"))
        .expect("campaign gone");
}

#[tokio::test(start_paused = true)]
async fn a_standby_waits_while_the_leader_renews_and_takes_over_when_it_resigns() {
    let (fake, store) = serve_in_memory();
    let a = LeaderElection::campaign(store.clone(), "scheduler", "a", TTL);
    wait_leading(&a, true).await;

    let b = LeaderElection::campaign(store.clone(), "scheduler", "b", TTL);
    // Several rounds of b's retries and a's renewals, each ttl/3 apart, spanning
    // more than one ttl: a's lease would have expired without its renewals.
    fake.wait_until("b tried five times", |s| s.acquisitions("b") >= 5)
        .await;
    assert!(a.is_leader());
    assert!(!b.is_leader());
    assert!(fake.with(|s| s.acquisitions("a")) >= 5, "a did not renew");
    assert_eq!(fake.with(|s| s.lease_holder("scheduler")), Some("a".into()));

    let a_leadership = a.leadership();
    a.resign().await.expect("resign");
    assert!(!*a_leadership.borrow());
    wait_leading(&b, true).await;
    assert_eq!(
        store.lease("scheduler").await.unwrap().map(|l| l.holder),
        Some("b".into())
    );
    b.resign().await.expect("resign");
    assert_eq!(store.lease("scheduler").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_steps_down_before_its_lease_expires() {
    let (fake, store) = serve_in_memory();
    let a = LeaderElection::campaign(store.clone(), "scheduler", "a", TTL);
    wait_leading(&a, true).await;
    let b = LeaderElection::campaign(store.clone(), "scheduler", "b", TTL);

    // From now on no renewal of a's reaches a leader (nothing is applied).
    fake.with(|s| s.unavailable_for.push("a".into()));
    wait_leading(&a, false).await;
    let stepped_down = Instant::now();
    let a_expires = fake.with(|s| {
        s.grants
            .iter()
            .rev()
            .find(|(holder, _)| holder == "a")
            .map(|(_, expires)| *expires)
            .expect("a was granted the lease")
    });
    assert!(
        stepped_down < a_expires,
        "a stepped down {:?} after its lease expired",
        stepped_down - a_expires
    );

    wait_leading(&b, true).await;
    assert!(!a.is_leader());
    drop(a);
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_finds_its_lease_taken_steps_down_and_dropping_releases() {
    let (fake, store) = serve_in_memory();
    let a = LeaderElection::campaign(store.clone(), "scheduler", "a", TTL);
    wait_leading(&a, true).await;

    fake.with(|s| {
        let held = s.leases.get_mut("scheduler").expect("a holds the lease");
        held.lease.holder = "intruder".into();
        held.expires = Instant::now() + Duration::from_secs(3600);
    });
    wait_leading(&a, false).await;
    fake.with(|s| s.leases.remove("scheduler"));
    wait_leading(&a, true).await;

    drop(a);
    fake.wait_until("the dropped election released its lease", |s| {
        s.lease_holder("scheduler").is_none()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_campaign_the_master_refuses_as_invalid_ends_with_that_error() {
    let (_fake, store) = serve_in_memory();
    let election = LeaderElection::campaign(store, "scheduler", "a", Duration::from_secs(7200));
    // The campaign's end closes its leadership channel.
    let mut leadership = election.leadership();
    tokio::time::timeout(PATIENCE, async {
        while leadership.changed().await.is_ok() {}
    })
    .await
    .expect("the campaign ends by itself");
    assert!(election.is_finished());
    assert!(!election.is_leader());
    let error = election
        .resign()
        .await
        .expect_err("the ttl is out of range");
    assert!(matches!(error, StateStoreError::Invalid(_)), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn the_leaders_fence_is_its_lease_and_epoch_and_fences_out_a_deposed_leader() {
    let (_fake, store) = serve_in_memory();
    let a = LeaderElection::campaign(store.clone(), "scheduler", "a", TTL);
    wait_leading(&a, true).await;
    let lease = store.lease("scheduler").await.unwrap().expect("a holds it");
    let a_fence = a.fence().expect("a leads");
    assert_eq!(a_fence, Fence::new("scheduler", "a", lease.epoch));
    let a_writes = store.fenced(a_fence.clone());
    a_writes.put("owner", b"a".to_vec()).await.expect("a leads");

    let b = LeaderElection::campaign(store.clone(), "scheduler", "b", TTL);
    assert_eq!(b.fence(), None, "a standby has no fence");
    a.resign().await.expect("resign");
    wait_leading(&b, true).await;
    let b_fence = b.fence().expect("b leads");
    assert_eq!(
        (b_fence.holder.as_str(), b_fence.lease.as_str()),
        ("b", "scheduler")
    );
    assert!(b_fence.epoch > a_fence.epoch);

    // The deposed leader's late write is refused; the new leader's applies.
    let error = a_writes
        .put("owner", b"a again".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StateStoreError::Fenced { current: Some(l), .. } if l.holder == "b"),
        "{error:?}"
    );
    store
        .fenced(b_fence)
        .put("owner", b"b".to_vec())
        .await
        .expect("b leads");
    assert_eq!(store.get("owner").await.unwrap().unwrap().value, b"b");
    b.resign().await.expect("resign");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_granted_at_another_epoch_is_a_new_leadership_with_a_new_fence() {
    let (fake, store) = serve_in_memory();
    let a = LeaderElection::campaign(store.clone(), "scheduler", "a", TTL);
    wait_leading(&a, true).await;
    let first = a.fence().expect("a leads");

    let mut leadership = a.leadership();
    leadership.borrow_and_update();
    // The lease changed hands and came back to a in between two renewals.
    fake.with(|s| {
        s.leases
            .get_mut("scheduler")
            .expect("a holds the lease")
            .lease
            .epoch += 5
    });
    tokio::time::timeout(PATIENCE, leadership.changed())
        .await
        .expect("a renews")
        .expect("campaign gone");
    assert!(a.is_leader());
    assert_eq!(
        a.fence(),
        Some(Fence {
            epoch: first.epoch + 5,
            ..first
        })
    );
    drop(a);
}
