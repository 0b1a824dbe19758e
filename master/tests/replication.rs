//! The raft group in one process, over a network the tests partition: leader
//! isolation, one history after healing, a linearizability check of concurrent
//! compare-and-set across partitions and leader changes, snapshot catch-up, restarts,
//! and a failing disk. Time is tokio's paused clock, so elections and timeouts run in
//! virtual time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_master::replication::node::{self, Replica};
use agora_master::replication::transport::InMemoryNetwork;
use agora_master::replication::{RaftTimings, ReplicaConfig, ReplicaError, ReplicaHandle};
use agora_proto as pb;
use pb::state_store_write::{CompareAndSet, Op, Put};

const NAMESPACE: &str = "test";

fn logger() -> slog::Logger {
    use slog::Drain;
    if std::env::var_os("AGORA_TEST_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::CompactFormat::new(decorator).build().fuse();
        slog::Logger::root(std::sync::Mutex::new(drain).fuse(), slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

/// A group of in-process replicas on an [`InMemoryNetwork`].
struct Group {
    network: InMemoryNetwork,
    ids: Vec<u64>,
    dirs: BTreeMap<u64, PathBuf>,
    replicas: BTreeMap<u64, Replica>,
    timings: RaftTimings,
    _root: tempfile::TempDir,
}

impl Group {
    async fn start(n: u64, seed: u64, timings: RaftTimings) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let ids: Vec<u64> = (1..=n).collect();
        let dirs = ids
            .iter()
            .map(|id| (*id, root.path().join(format!("node-{id}"))))
            .collect();
        let mut group = Self {
            network: InMemoryNetwork::new(seed),
            ids,
            dirs,
            replicas: BTreeMap::new(),
            timings,
            _root: root,
        };
        for id in group.ids.clone() {
            group.start_node(id).await;
        }
        group
    }

    async fn start_node(&mut self, id: u64) {
        let config = ReplicaConfig {
            id,
            initial_members: self
                .ids
                .iter()
                .map(|i| (*i, format!("node-{i}:5050")))
                .collect(),
            join: false,
            data_dir: self.dirs[&id].clone(),
            timings: self.timings.clone(),
            logger: logger(),
        };
        let replica = node::start(config, self.network.transport(id))
            .await
            .expect("replica starts");
        self.network.register(id, replica.handle.clone());
        self.replicas.insert(id, replica);
    }

    async fn stop_node(&mut self, id: u64) {
        self.network.unregister(id);
        if let Some(replica) = self.replicas.remove(&id) {
            replica.handle.shutdown().await;
            let _ = replica.task.await;
        }
    }

    fn handle(&self, id: u64) -> ReplicaHandle {
        self.replicas[&id].handle.clone()
    }

    /// Waits (in virtual time) until exactly one running node serves as leader.
    async fn leader(&self) -> u64 {
        for _ in 0..2_000 {
            let serving: Vec<u64> = self
                .replicas
                .iter()
                .filter(|(_, r)| r.handle.leadership().borrow().serving)
                .map(|(id, _)| *id)
                .collect();
            if let [leader] = serving.as_slice() {
                return *leader;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no single leader emerged");
    }

    /// Waits until every running node has applied the same index as `id`'s commit.
    async fn converged(&self) {
        for _ in 0..5_000 {
            let mut applied = Vec::new();
            for replica in self.replicas.values() {
                if let Ok(group) = replica.handle.group().await {
                    applied.push((group.applied_index, group.commit_index));
                }
            }
            let first = applied[0].0;
            if applied.len() == self.replicas.len()
                && applied.iter().all(|(a, c)| *a == first && *c == first)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("replicas did not converge");
    }

    /// Every running node's state machine, as snapshot bytes.
    fn states(&self) -> Vec<(u64, Vec<u8>)> {
        self.replicas
            .iter()
            .map(|(id, r)| {
                (
                    *id,
                    r.handle.read_local(|s| s.snapshot()).expect("readable"),
                )
            })
            .collect()
    }

    async fn shutdown(mut self) {
        for id in self.ids.clone() {
            self.stop_node(id).await;
        }
    }
}

fn put(key: &str, value: &str) -> pb::replicated_command::Command {
    pb::replicated_command::Command::StateStore(pb::StateStoreWrite {
        namespace: NAMESPACE.into(),
        op: Some(Op::Put(Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        })),
        fence: None,
    })
}

fn cas(key: &str, expected_version: u64, value: Vec<u8>) -> pb::replicated_command::Command {
    pb::replicated_command::Command::StateStore(pb::StateStoreWrite {
        namespace: NAMESPACE.into(),
        op: Some(Op::CompareAndSet(CompareAndSet {
            key: key.into(),
            expected_version,
            value,
            delete: false,
        })),
        fence: None,
    })
}

fn store_result(result: pb::CommandResult) -> pb::StateStoreWriteResult {
    match result.result {
        Some(pb::command_result::Result::StateStore(r)) => r,
        other => panic!("expected a state-store result, got {other:?}"),
    }
}

async fn get(handle: &ReplicaHandle, key: &str) -> Result<Option<pb::StoreEntry>, ReplicaError> {
    handle.read(|s| s.store.get(NAMESPACE, key)).await
}

fn fast() -> RaftTimings {
    RaftTimings {
        tick: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_every: 10_000,
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_steps_down_and_the_majority_keeps_one_history() {
    let group = Group::start(3, 7, fast()).await;
    let old = group.leader().await;
    let result = group.handle(old).propose(put("k", "before")).await;
    assert!(store_result(result.expect("write commits")).succeeded);

    group.network.isolate(old, &group.ids);
    // The cut-off leader cannot commit: its write fails (it is deposed or times out)
    // and is never applied anywhere.
    let stranded = group.handle(old).propose(put("k", "stranded")).await;
    assert!(
        matches!(
            stranded,
            Err(ReplicaError::LeadershipLost
                | ReplicaError::Timeout(_)
                | ReplicaError::NotLeader { .. })
        ),
        "an isolated leader acknowledged a write: {stranded:?}"
    );
    // It steps down (check quorum) and refuses new writes.
    for _ in 0..1000 {
        if !group.handle(old).leadership().borrow().serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!group.handle(old).leadership().borrow().serving);
    assert!(matches!(
        group.handle(old).propose(put("k", "refused")).await,
        Err(ReplicaError::NotLeader { .. })
    ));
    assert!(
        get(&group.handle(old), "k").await.is_err(),
        "a deposed leader served a read"
    );

    // The majority elects a new leader and keeps writing.
    let new = loop {
        let leader = group.leader().await;
        if leader != old {
            break leader;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let after = group.handle(new).propose(put("k", "after")).await;
    assert!(store_result(after.expect("majority commits")).succeeded);

    group.network.heal();
    group.converged().await;
    let states = group.states();
    assert!(
        states.windows(2).all(|w| w[0].1 == w[1].1),
        "replicas disagree after healing"
    );
    for id in group.ids.clone() {
        let value = group
            .handle(id)
            .read_local(|s| s.store.get(NAMESPACE, "k"))
            .expect("readable")
            .expect("k exists");
        assert_eq!(
            value.value, b"after",
            "replica {id} holds a value that never committed"
        );
    }
    group.shutdown().await;
}

/// One operation of the history the linearizability checker sees.
#[derive(Clone, Debug)]
enum Operation {
    Read,
    Cas { expected: u64, value: u64 },
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// A read saw this (version, value), or nothing.
    Read(Option<(u64, u64)>),
    /// The CAS applied and produced this version.
    Applied(u64),
    /// The CAS failed; the current (version, value) was this.
    Conflict(Option<(u64, u64)>),
    /// No answer (leadership lost, timeout): it may or may not have applied.
    Unknown,
}

#[derive(Clone, Debug)]
struct Event {
    operation: Operation,
    outcome: Outcome,
    invoked: u64,
    /// `u64::MAX` for an unknown outcome: it may take effect at any later time.
    returned: u64,
}

fn value_id(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("test values are numbers")
}

fn entry_pair(entry: Option<pb::StoreEntry>) -> Option<(u64, u64)> {
    entry.map(|e| (e.version, value_id(&e.value)))
}

/// Checks a history of one register against its sequential specification by
/// searching for a linearization (Wing & Gong, with Lowe's memoisation).
struct Checker {
    events: Vec<Event>,
    /// The version each written value got, where anyone observed it.
    versions: HashMap<u64, u64>,
    seen: std::collections::HashSet<(u128, Option<u64>)>,
}

impl Checker {
    fn new(events: Vec<Event>) -> Self {
        assert!(events.len() <= 128, "history too long for the checker");
        let mut versions = HashMap::new();
        for event in &events {
            match (&event.operation, &event.outcome) {
                (Operation::Cas { value, .. }, Outcome::Applied(version)) => {
                    versions.insert(*value, *version);
                }
                (_, Outcome::Read(Some((v, x)))) | (_, Outcome::Conflict(Some((v, x)))) => {
                    versions.insert(*x, *v);
                }
                _ => {}
            }
        }
        Self {
            events,
            versions,
            seen: Default::default(),
        }
    }

    fn observed(&self, current: Option<u64>) -> Option<(u64, u64)> {
        current.map(|value| {
            (
                self.versions.get(&value).copied().unwrap_or(u64::MAX),
                value,
            )
        })
    }

    /// Applies `event` to the register holding `current`; the possible next states.
    fn step(&self, current: Option<u64>, event: &Event) -> Vec<Option<u64>> {
        let current_version =
            current.map_or(0, |v| self.versions.get(&v).copied().unwrap_or(u64::MAX));
        match (&event.operation, &event.outcome) {
            (Operation::Read, Outcome::Read(seen)) => {
                if *seen == self.observed(current) {
                    vec![current]
                } else {
                    vec![]
                }
            }
            (Operation::Cas { expected, value }, Outcome::Applied(_)) => {
                if current_version == *expected {
                    vec![Some(*value)]
                } else {
                    vec![]
                }
            }
            (Operation::Cas { expected, .. }, Outcome::Conflict(seen)) => {
                if current_version != *expected && *seen == self.observed(current) {
                    vec![current]
                } else {
                    vec![]
                }
            }
            (Operation::Cas { expected, value }, Outcome::Unknown) => {
                // Either it never took effect, or it did.
                let mut next = vec![current];
                if current_version == *expected {
                    next.push(Some(*value));
                }
                next
            }
            _ => vec![],
        }
    }

    fn linearizable(&mut self) -> bool {
        self.search(0, None)
    }

    fn search(&mut self, done: u128, current: Option<u64>) -> bool {
        let n = self.events.len();
        let all = if n == 128 {
            u128::MAX
        } else {
            (1u128 << n) - 1
        };
        if done == all {
            return true;
        }
        if !self.seen.insert((done, current)) {
            return false;
        }
        // The earliest response among pending operations bounds which may go next.
        let horizon = (0..n)
            .filter(|i| done & (1 << i) == 0)
            .map(|i| self.events[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if done & (1 << i) != 0 || self.events[i].invoked > horizon {
                continue;
            }
            let event = self.events[i].clone();
            for next in self.step(current, &event) {
                if self.search(done | (1 << i), next) {
                    return true;
                }
            }
        }
        false
    }
}

#[test]
fn the_checker_rejects_a_stale_read() {
    // CAS 0 -> a completes, then a read (that starts afterwards) still sees nothing.
    let events = vec![
        Event {
            operation: Operation::Cas {
                expected: 0,
                value: 1,
            },
            outcome: Outcome::Applied(5),
            invoked: 0,
            returned: 1,
        },
        Event {
            operation: Operation::Read,
            outcome: Outcome::Read(None),
            invoked: 2,
            returned: 3,
        },
    ];
    assert!(!Checker::new(events.clone()).linearizable());
    let mut overlapping = events;
    overlapping[1].invoked = 0;
    assert!(Checker::new(overlapping).linearizable());
}

#[tokio::test(start_paused = true)]
async fn concurrent_compare_and_set_is_linearizable_across_partitions() {
    let group = Arc::new(Group::start(3, 42, fast()).await);
    group.leader().await;
    let clock = Arc::new(AtomicU64::new(0));
    let next_value = Arc::new(AtomicU64::new(1));
    let history = Arc::new(std::sync::Mutex::new(Vec::new()));

    // The nemesis: isolates a node, partitions, heals, on a fixed virtual schedule.
    let nemesis = {
        let group = group.clone();
        tokio::spawn(async move {
            let plans: [&[&[u64]]; 5] = [
                &[&[1], &[2, 3]],
                &[&[2], &[1, 3]],
                &[&[1, 2, 3]],
                &[&[3], &[1, 2]],
                &[&[1, 2, 3]],
            ];
            for plan in plans.iter().cycle().take(8) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                group.network.partition(plan);
            }
            group.network.heal();
        })
    };

    let mut clients = Vec::new();
    for client in 0..3u64 {
        let group = group.clone();
        let clock = clock.clone();
        let next_value = next_value.clone();
        let history = history.clone();
        clients.push(tokio::spawn(async move {
            let mut recorded = 0;
            let mut last_version = 0;
            let mut target = 1 + client;
            let mut attempts = 0;
            while recorded < 20 && attempts < 2_000 {
                attempts += 1;
                // Spread the operations over the nemesis' schedule.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let handle = group.handle(target);
                let operation = if attempts % 3 == 0 {
                    Operation::Read
                } else {
                    Operation::Cas {
                        expected: last_version,
                        value: next_value.fetch_add(1, Ordering::SeqCst),
                    }
                };
                let invoked = clock.fetch_add(1, Ordering::SeqCst);
                let outcome = match &operation {
                    Operation::Read => match get(&handle, "x").await {
                        Ok(entry) => Outcome::Read(entry_pair(entry)),
                        Err(e) => {
                            target = retarget(&e, target);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                    Operation::Cas { expected, value } => {
                        match handle
                            .propose(cas("x", *expected, value.to_string().into_bytes()))
                            .await
                        {
                            Ok(result) => {
                                let r = store_result(result);
                                if r.succeeded {
                                    Outcome::Applied(
                                        r.entry.expect("applied CAS has an entry").version,
                                    )
                                } else {
                                    Outcome::Conflict(entry_pair(r.current))
                                }
                            }
                            // Refused before it was proposed: it never happened.
                            Err(e @ (ReplicaError::NotLeader { .. } | ReplicaError::NotReady)) => {
                                target = retarget(&e, target);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Err(_) => Outcome::Unknown,
                        }
                    }
                };
                let returned = if outcome == Outcome::Unknown {
                    u64::MAX
                } else {
                    clock.fetch_add(1, Ordering::SeqCst)
                };
                match &outcome {
                    Outcome::Read(Some((v, _)))
                    | Outcome::Applied(v)
                    | Outcome::Conflict(Some((v, _))) => last_version = *v,
                    Outcome::Read(None) | Outcome::Conflict(None) => last_version = 0,
                    Outcome::Unknown => target = target % 3 + 1,
                }
                history.lock().expect("history").push(Event {
                    operation,
                    outcome,
                    invoked,
                    returned,
                });
                recorded += 1;
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    nemesis.await.expect("nemesis");

    let events = history.lock().expect("history").clone();
    let applied = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Applied(_)))
        .count();
    let unknown = events
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    eprintln!(
        "history: {} events, {applied} applied, {unknown} unknown, network {:?}",
        events.len(),
        group.network.counts()
    );
    assert_eq!(events.len(), 60, "every client recorded its operations");
    assert!(
        applied >= 5,
        "too few writes succeeded to mean anything: {applied}"
    );
    assert!(
        Checker::new(events.clone()).linearizable(),
        "history is not linearizable ({applied} applied, {unknown} unknown): {events:#?}"
    );

    group.converged().await;
    let states = group.states();
    assert!(
        states.windows(2).all(|w| w[0].1 == w[1].1),
        "replicas disagree"
    );
    match Arc::try_unwrap(group) {
        Ok(group) => group.shutdown().await,
        Err(_) => panic!("group still shared"),
    }
}

/// Where to send the next request after `error` from `target`.
fn retarget(error: &ReplicaError, target: u64) -> u64 {
    match error {
        ReplicaError::NotLeader {
            leader_address: Some(address),
        } => address
            .strip_prefix("node-")
            .and_then(|rest| rest.split(':').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or(target % 3 + 1),
        _ => target % 3 + 1,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lagging_replica_catches_up_from_a_snapshot_and_restarts_keep_everything() {
    let timings = RaftTimings {
        snapshot_every: 20,
        ..fast()
    };
    let mut group = Group::start(3, 11, timings).await;
    let leader = group.leader().await;
    let lagging = group
        .ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    group.network.isolate(lagging, &group.ids);
    for i in 0..100 {
        let result = group
            .handle(leader)
            .propose(put(&format!("key-{i}"), "v"))
            .await;
        assert!(store_result(result.expect("majority commits")).succeeded);
    }
    group.network.heal();
    group.converged().await;
    let states = group.states();
    assert!(
        states.windows(2).all(|w| w[0].1 == w[1].1),
        "the lagging replica did not catch up"
    );
    let keys = group
        .handle(lagging)
        .read_local(|s| s.store.namespace(NAMESPACE).map_or(0, |n| n.key_count()))
        .expect("readable");
    assert_eq!(keys, 100);

    // Stop everyone and start again from the same directories: nothing is lost.
    let before = group.states()[0].1.clone();
    for id in group.ids.clone() {
        group.stop_node(id).await;
    }
    for id in group.ids.clone() {
        group.start_node(id).await;
    }
    let leader = group.leader().await;
    let entry = get(&group.handle(leader), "key-99")
        .await
        .expect("leader reads");
    assert!(
        entry.is_some(),
        "an acknowledged write was lost across a restart"
    );
    group.converged().await;
    for (id, state) in group.states() {
        assert_eq!(state, before, "replica {id} came back different");
    }
    group.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_replica_whose_disk_fails_stops_and_the_majority_keeps_serving() {
    let group = Group::start(3, 5, fast()).await;
    let leader = group.leader().await;
    let failing = group
        .ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    group.replicas[&failing].storage.inject_write_failures(true);
    // The next write reaches the failing follower, which cannot persist it and stops.
    for i in 0..10 {
        let result = group
            .handle(leader)
            .propose(put(&format!("k{i}"), "v"))
            .await;
        assert!(store_result(result.expect("the majority commits")).succeeded);
    }
    let mut leadership = group.handle(failing).leadership();
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        leadership.wait_for(|l| l.stopped.is_some()),
    )
    .await
    .expect("the failing replica stops")
    .expect("watch open")
    .clone();
    assert!(
        stopped
            .stopped
            .as_deref()
            .is_some_and(|r| r.contains("storage")),
        "stopped for the wrong reason: {stopped:?}"
    );
    // Its callers get a clear error, not a hang.
    assert!(matches!(
        group.handle(failing).propose(put("x", "y")).await,
        Err(ReplicaError::Stopped(_))
    ));
    let result = group.handle(leader).propose(put("after", "v")).await;
    assert!(store_result(result.expect("two of three still commit")).succeeded);
    drop(group);
}
