//! The replicated state machine: what the committed raft log builds.
//!
//! [`ReplicatedState`] holds the registry, the frameworks' state store and the
//! addresses of the group's members. Applying an entry is a pure function of the
//! state, the entry's raft index and the time the proposing leader stamped on it: no
//! clock, no randomness, no iteration over hash maps. Every replica that applies the
//! same log therefore holds the same state, and a command that must be refused is
//! refused by every replica alike (`CommandResult.rejected`, or `error` in a state
//! store result), leaving the state unchanged.
//!
//! Snapshots ([`ReplicatedState::snapshot`] / [`ReplicatedState::restore`]) are a
//! [`pb::ReplicatedSnapshot`] in prost encoding; restoring validates everything, so a
//! corrupt snapshot is an error rather than a wrong state.

use std::collections::BTreeMap;

use agora_proto as pb;
use pb::command_result::Result as Outcome;
use pb::replicated_command::Command;
use prost::Message;

use super::state_store::StateStore;
use crate::registry::RegistryState;

/// The snapshot layout [`ReplicatedState::snapshot`] writes and
/// [`ReplicatedState::restore`] reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// What the committed log builds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicatedState {
    /// Agents, frameworks and the allocator's durable records, as of the last applied
    /// entry.
    pub registry: RegistryState,
    /// Every framework's namespaces, as of the last applied entry.
    pub store: StateStore,
    /// raft id -> "host:port" of every member, as the applied membership changes left
    /// it (the node calls `set_member` / `remove_member`). No id is 0.
    pub members: BTreeMap<u64, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("snapshot data is corrupt: {0}")]
pub struct SnapshotError(pub String);

fn rejected(reason: impl Into<String>) -> pb::CommandResult {
    pb::CommandResult {
        result: Some(Outcome::Rejected(reason.into())),
    }
}

impl ReplicatedState {
    /// Applies one committed command at raft `index`. Deterministic; never panics.
    pub fn apply(&mut self, index: u64, command: &pb::ReplicatedCommand) -> pb::CommandResult {
        match &command.command {
            None => rejected("the replicated command carries no command"),
            Some(Command::Registry(registry)) => {
                match self.registry.apply_command(registry, command.time) {
                    Ok(()) => pb::CommandResult {
                        result: Some(Outcome::Registry(pb::RegistryApplied {})),
                    },
                    Err(reason) => rejected(reason),
                }
            }
            Some(Command::StateStore(write)) => pb::CommandResult {
                result: Some(Outcome::StateStore(self.store.apply_write(
                    index,
                    command.time,
                    write,
                ))),
            },
        }
    }

    /// Applies the data of one committed normal entry: decodes the command and applies
    /// it. Returns who proposed it (proposer id, sequence), so the proposer can answer
    /// its waiting caller, and the result. Raft's empty no-op entries give
    /// `(None, default)`; data that does not decode gives `(None, rejected)`.
    pub fn apply_entry_data(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> (Option<(u64, u64)>, pb::CommandResult) {
        if data.is_empty() {
            return (None, pb::CommandResult::default());
        }
        match pb::ReplicatedCommand::decode(data) {
            Ok(command) => (
                Some((command.proposer, command.sequence)),
                self.apply(index, &command),
            ),
            Err(e) => (
                None,
                rejected(format!("the log entry is not a replicated command: {e}")),
            ),
        }
    }

    /// Records (or updates) a member's address.
    pub fn set_member(&mut self, id: u64, address: String) {
        self.members.insert(id, address);
    }

    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
    }

    /// The whole state as raft snapshot data.
    pub fn snapshot(&self) -> Vec<u8> {
        pb::ReplicatedSnapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            registry: self.registry.encode_to_vec(),
            state_store: Some(self.store.snapshot()),
            members: self
                .members
                .iter()
                .map(|(id, address)| (*id, address.clone()))
                .collect(),
        }
        .encode_to_vec()
    }

    /// Rebuilds the state from raft snapshot data. Empty data (raft's initial empty
    /// snapshot) is the empty state.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let snapshot = pb::ReplicatedSnapshot::decode(bytes)
            .map_err(|e| SnapshotError(format!("does not decode: {e}")))?;
        if snapshot.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError(format!(
                "format version {} (this master reads {SNAPSHOT_FORMAT_VERSION})",
                snapshot.format_version
            )));
        }
        let registry = RegistryState::decode(snapshot.registry.as_slice())
            .map_err(|e| SnapshotError(format!("the registry does not decode: {e}")))?;
        let store = StateStore::from_snapshot(snapshot.state_store.unwrap_or_default())
            .map_err(|e| SnapshotError(e.to_string()))?;
        if snapshot.members.contains_key(&0) {
            return Err(SnapshotError("a member has raft id 0".into()));
        }
        Ok(Self {
            registry,
            store,
            members: snapshot.members.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AgentStanding, RegistryOp};
    use pb::state_store_write::{self as w, Op};

    fn agent(id: &str) -> pb::AgentInfo {
        pb::AgentInfo {
            id: Some(pb::AgentId { value: id.into() }),
            hostname: "h".into(),
            ..Default::default()
        }
    }

    fn command(time: f64, command: Command) -> pb::ReplicatedCommand {
        pb::ReplicatedCommand {
            proposer: 1,
            sequence: 7,
            time,
            command: Some(command),
        }
    }

    fn registry(op: RegistryOp) -> Command {
        Command::Registry(op.to_command())
    }

    fn put(namespace: &str, key: &str, value: &[u8]) -> Command {
        Command::StateStore(pb::StateStoreWrite {
            namespace: namespace.into(),
            op: Some(Op::Put(w::Put {
                key: key.into(),
                value: value.to_vec(),
            })),
            fence: None,
        })
    }

    fn rejection(result: &pb::CommandResult) -> Option<&str> {
        match &result.result {
            Some(Outcome::Rejected(reason)) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn registry_commands_apply_at_the_entry_time() {
        let mut state = ReplicatedState::default();
        let result = state.apply(
            3,
            &command(42.0, registry(RegistryOp::AdmitAgent(agent("a1")))),
        );
        assert_eq!(
            result.result,
            Some(Outcome::Registry(pb::RegistryApplied {}))
        );
        let a = state.registry.agent("a1").unwrap();
        assert_eq!(
            (a.standing, a.since),
            (AgentStanding::Admitted as i32, 42.0)
        );

        let before = state.clone();
        let bad = registry(RegistryOp::SetWeight {
            role: "eng".into(),
            weight: -2.0,
        });
        let result = state.apply(4, &command(43.0, bad));
        assert!(rejection(&result).unwrap().contains("weight"), "{result:?}");
        assert_eq!(state, before);
    }

    #[test]
    fn store_writes_use_the_raft_index_and_report_refusals_in_the_result() {
        let mut state = ReplicatedState::default();
        let result = state.apply(9, &command(1.0, put("apps", "k", b"v")));
        let Some(Outcome::StateStore(written)) = result.result else {
            panic!("{result:?}");
        };
        assert_eq!(written.entry.unwrap().version, 9);
        let before = state.clone();
        let result = state.apply(10, &command(1.0, put("apps", "", b"v")));
        let Some(Outcome::StateStore(refused)) = result.result else {
            panic!("{result:?}");
        };
        assert!(refused.error.contains("key"), "{}", refused.error);
        assert_eq!(state, before);
    }

    #[test]
    fn a_command_without_a_command_is_rejected() {
        let mut state = ReplicatedState::default();
        let empty = pb::ReplicatedCommand {
            proposer: 1,
            sequence: 1,
            time: 1.0,
            command: None,
        };
        assert!(rejection(&state.apply(1, &empty)).is_some());
        assert_eq!(state, ReplicatedState::default());
    }

    #[test]
    fn entry_data() {
        let mut state = ReplicatedState::default();
        assert_eq!(
            state.apply_entry_data(1, &[]),
            (None, pb::CommandResult::default())
        );
        let (origin, result) = state.apply_entry_data(2, b"\xff\xff\xff not a command");
        assert_eq!(origin, None);
        assert!(
            rejection(&result)
                .unwrap()
                .contains("not a replicated command")
        );
        assert_eq!(state, ReplicatedState::default());

        let data = command(5.0, put("apps", "k", b"v")).encode_to_vec();
        let (origin, result) = state.apply_entry_data(3, &data);
        assert_eq!(origin, Some((1, 7)));
        assert!(matches!(result.result, Some(Outcome::StateStore(r)) if r.succeeded));
        assert_eq!(state.store.get("apps", "k").unwrap().version, 3);
    }

    #[test]
    fn snapshots_round_trip_and_refuse_corruption() {
        assert_eq!(
            ReplicatedState::restore(&[]).unwrap(),
            ReplicatedState::default()
        );
        let mut state = ReplicatedState::default();
        state.apply(
            1,
            &command(1.0, registry(RegistryOp::AdmitAgent(agent("a1")))),
        );
        state.apply(2, &command(2.0, put("apps", "k", b"v")));
        state.set_member(1, "10.0.0.1:5050".into());
        state.set_member(2, "10.0.0.2:5050".into());
        state.set_member(3, "10.0.0.3:5050".into());
        state.remove_member(3);
        let bytes = state.snapshot();
        let restored = ReplicatedState::restore(&bytes).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.members.len(), 2);

        assert!(ReplicatedState::restore(b"\xff\xff\xff garbage").is_err());
        let mut snapshot = pb::ReplicatedSnapshot::decode(bytes.as_slice()).unwrap();
        snapshot.format_version = 2;
        let err = ReplicatedState::restore(&snapshot.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");

        let mut snapshot = pb::ReplicatedSnapshot::decode(bytes.as_slice()).unwrap();
        snapshot.registry = b"\xff\xff\xff".to_vec();
        assert!(ReplicatedState::restore(&snapshot.encode_to_vec()).is_err());

        let mut snapshot = pb::ReplicatedSnapshot::decode(bytes.as_slice()).unwrap();
        if let Some(store) = snapshot.state_store.as_mut() {
            let ns = store.namespaces[0].clone();
            store.namespaces.push(ns);
        }
        let err = ReplicatedState::restore(&snapshot.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");

        let mut snapshot = pb::ReplicatedSnapshot::decode(bytes.as_slice()).unwrap();
        snapshot.members.insert(0, "x:1".into());
        assert!(ReplicatedState::restore(&snapshot.encode_to_vec()).is_err());
    }

    mod properties {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;
        use agora_core::limits;

        const NAMESPACES: &[&str] = &["a", "team/b"];
        const KEYS: &[&str] = &["k0", "k1", "k2", "k3"];
        const LEASES: &[&str] = &["l0", "l1"];
        const HOLDERS: &[&str] = &["h0", "h1", "h2"];

        /// What a compare-and-set expects, resolved against the model when applied.
        #[derive(Clone, Debug)]
        enum Expected {
            Absent,
            Current,
            Other(u64),
        }

        #[derive(Clone, Debug)]
        enum Step {
            Put {
                ns: usize,
                key: usize,
                value: Vec<u8>,
            },
            Delete {
                ns: usize,
                key: usize,
            },
            Cas {
                ns: usize,
                key: usize,
                expected: Expected,
                value: Vec<u8>,
                delete: bool,
            },
            Acquire {
                ns: usize,
                name: usize,
                holder: usize,
                ttl: u8,
            },
            Release {
                ns: usize,
                name: usize,
                holder: usize,
            },
            Malformed(usize),
            Registry {
                which: usize,
                n: u8,
            },
            Garbage(Vec<u8>),
            NoOp,
        }

        fn expected() -> impl Strategy<Value = Expected> {
            prop_oneof![
                Just(Expected::Absent),
                Just(Expected::Current),
                (1u64..40).prop_map(Expected::Other),
            ]
        }

        fn step() -> impl Strategy<Value = Step> {
            let ns = 0..NAMESPACES.len();
            let key = 0..KEYS.len();
            let value = proptest::collection::vec(any::<u8>(), 0..8);
            prop_oneof![
                4 => (ns.clone(), key.clone(), value.clone())
                    .prop_map(|(ns, key, value)| Step::Put { ns, key, value }),
                2 => (ns.clone(), key.clone()).prop_map(|(ns, key)| Step::Delete { ns, key }),
                4 => (ns.clone(), key, expected(), value, any::<bool>()).prop_map(
                    |(ns, key, expected, value, delete)| Step::Cas { ns, key, expected, value, delete }
                ),
                3 => (ns.clone(), 0..LEASES.len(), 0..HOLDERS.len(), 0u8..30).prop_map(
                    |(ns, name, holder, ttl)| Step::Acquire { ns, name, holder, ttl }
                ),
                2 => (ns, 0..LEASES.len(), 0..HOLDERS.len())
                    .prop_map(|(ns, name, holder)| Step::Release { ns, name, holder }),
                1 => (0usize..6).prop_map(Step::Malformed),
                2 => (0usize..7, any::<u8>()).prop_map(|(which, n)| Step::Registry { which, n }),
                1 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(Step::Garbage),
                1 => Just(Step::NoOp),
            ]
        }

        fn store_write(ns: usize, op: Op) -> Command {
            Command::StateStore(pb::StateStoreWrite {
                namespace: NAMESPACES[ns].into(),
                op: Some(op),
                fence: None,
            })
        }

        fn malformed(which: usize) -> Command {
            let put = |namespace: &str, key: &str, value: Vec<u8>| {
                Command::StateStore(pb::StateStoreWrite {
                    namespace: namespace.into(),
                    op: Some(Op::Put(w::Put {
                        key: key.into(),
                        value,
                    })),
                    fence: None,
                })
            };
            match which {
                0 => put("a", "", b"v".to_vec()),
                1 => put("no spaces", "k0", b"v".to_vec()),
                2 => put("a", "k0", vec![0; limits::MAX_STORE_VALUE_BYTES + 1]),
                3 => store_write(
                    0,
                    Op::AcquireLease(w::AcquireLease {
                        name: "l0".into(),
                        holder: String::new(),
                        ttl_seconds: 5.0,
                    }),
                ),
                4 => Command::StateStore(pb::StateStoreWrite {
                    namespace: "a".into(),
                    op: None,
                    fence: None,
                }),
                _ => Command::Registry(pb::RegistryCommand { op: None }),
            }
        }

        fn registry_step(which: usize, n: u8) -> Command {
            let id = format!("x{}", n % 4);
            let op = match which {
                0 => RegistryOp::AdmitAgent(agent(&id)),
                1 => RegistryOp::MarkAgentUnreachable {
                    agent_id: id,
                    time: 0.0,
                },
                2 => RegistryOp::PutFramework {
                    info: pb::FrameworkInfo {
                        id: Some(pb::FrameworkId { value: id }),
                        name: format!("fw{n}"),
                        ..Default::default()
                    },
                    time: 0.0,
                },
                3 => RegistryOp::FrameworkDisconnected {
                    framework_id: id,
                    time: 0.0,
                },
                4 => RegistryOp::RemoveFramework {
                    framework_id: id,
                    time: 0.0,
                },
                // n = 0 is refused (weights are positive).
                5 => RegistryOp::SetWeight {
                    role: format!("r{}", n % 3),
                    weight: f64::from(n % 4) * 0.5,
                },
                _ => RegistryOp::SetMaintenance(pb::MaintenanceRecord {
                    agent_id: id,
                    mode: if n.is_multiple_of(2) {
                        "DRAINING"
                    } else {
                        "DRAINED"
                    }
                    .into(),
                    deadline: f64::from(n),
                    since: 0.0,
                }),
            };
            registry(op)
        }

        /// Checks the store's bookkeeping against its content and the limits.
        fn check_store_invariants(store: &StateStore) -> Result<(), TestCaseError> {
            for (name, ns) in store.namespaces() {
                let bytes: usize = ns.entries().map(|e| e.key.len() + e.value.len()).sum();
                prop_assert_eq!(bytes, ns.bytes(), "namespace {}", name);
                prop_assert!(ns.bytes() <= limits::MAX_STORE_NAMESPACE_BYTES);
                prop_assert!(ns.key_count() <= limits::MAX_STORE_KEYS);
                prop_assert!(ns.lease_count() <= limits::MAX_STORE_LEASES);
                prop_assert!(
                    ns.key_count() + ns.lease_count() > 0,
                    "empty namespace {}",
                    name
                );
                for entry in ns.entries() {
                    prop_assert!(
                        entry.create_version >= 1 && entry.create_version <= entry.version
                    );
                }
            }
            Ok(())
        }

        fn was_refused(result: &pb::CommandResult) -> bool {
            match &result.result {
                Some(Outcome::Rejected(_)) => true,
                Some(Outcome::StateStore(r)) => !r.error.is_empty(),
                _ => false,
            }
        }

        fn store_result(result: &pb::CommandResult) -> Option<&pb::StateStoreWriteResult> {
            match &result.result {
                Some(Outcome::StateStore(r)) if r.error.is_empty() => Some(r),
                _ => None,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn replicas_snapshots_limits_and_compare_and_set(
                steps in proptest::collection::vec((step(), 0u8..20), 1..60)
            ) {
                let mut replica = ReplicatedState::default();
                let mut other = ReplicatedState::default();
                // (namespace, key) -> (version, value): what the store must hold.
                let mut model: HashMap<(usize, usize), (u64, Vec<u8>)> = HashMap::new();
                // (namespace, lease) -> (holder, epoch) last granted.
                let mut granted: HashMap<(usize, usize), (String, u64)> = HashMap::new();
                let mut time = 1_000.0;
                for (i, (step, dt)) in steps.into_iter().enumerate() {
                    let index = i as u64 + 1;
                    time += f64::from(dt);
                    let command = match &step {
                        Step::Put { ns, key, value } => Some(store_write(*ns, Op::Put(w::Put {
                            key: KEYS[*key].into(),
                            value: value.clone(),
                        }))),
                        Step::Delete { ns, key } => Some(store_write(*ns, Op::Delete(w::Delete {
                            key: KEYS[*key].into(),
                        }))),
                        Step::Cas { ns, key, expected, value, delete } => {
                            let current = model.get(&(*ns, *key)).map_or(0, |(v, _)| *v);
                            let expected_version = match expected {
                                Expected::Absent => 0,
                                Expected::Current => current,
                                Expected::Other(v) => *v,
                            };
                            Some(store_write(*ns, Op::CompareAndSet(w::CompareAndSet {
                                key: KEYS[*key].into(),
                                expected_version,
                                value: value.clone(),
                                delete: *delete,
                            })))
                        }
                        Step::Acquire { ns, name, holder, ttl } => Some(store_write(*ns, Op::AcquireLease(w::AcquireLease {
                            name: LEASES[*name].into(),
                            holder: HOLDERS[*holder].into(),
                            // ttl 0 is refused.
                            ttl_seconds: f64::from(*ttl),
                        }))),
                        Step::Release { ns, name, holder } => Some(store_write(*ns, Op::ReleaseLease(w::ReleaseLease {
                            name: LEASES[*name].into(),
                            holder: HOLDERS[*holder].into(),
                        }))),
                        Step::Malformed(which) => Some(malformed(*which)),
                        Step::Registry { which, n } => Some(registry_step(*which, *n)),
                        Step::Garbage(_) | Step::NoOp => None,
                    };
                    let data = match (&step, &command) {
                        (Step::Garbage(bytes), _) => {
                            // Make sure it does not happen to decode.
                            let mut bytes = bytes.clone();
                            bytes.insert(0, 0xff);
                            bytes
                        }
                        (_, Some(command)) => pb::ReplicatedCommand {
                            proposer: 3,
                            sequence: index,
                            time,
                            command: Some(command.clone()),
                        }
                        .encode_to_vec(),
                        _ => Vec::new(),
                    };

                    let before = replica.clone();
                    let (origin, result) = replica.apply_entry_data(index, &data);
                    // (b) Another replica, handed the decoded command, agrees.
                    match &command {
                        Some(command) => {
                            prop_assert_eq!(origin, Some((3, index)));
                            let direct = other.apply(index, &pb::ReplicatedCommand {
                                proposer: 3,
                                sequence: index,
                                time,
                                command: Some(command.clone()),
                            });
                            prop_assert_eq!(&direct, &result);
                        }
                        None => {
                            prop_assert_eq!(origin, None);
                            let (_, again) = other.apply_entry_data(index, &data);
                            prop_assert_eq!(&again, &result);
                            if matches!(step, Step::NoOp) {
                                prop_assert_eq!(&result, &pb::CommandResult::default());
                            } else {
                                prop_assert!(was_refused(&result));
                            }
                        }
                    }
                    prop_assert_eq!(&replica, &other);

                    // (c) Bookkeeping and limits hold; a refused write changed nothing.
                    check_store_invariants(&replica.store)?;
                    if was_refused(&result) {
                        prop_assert_eq!(&replica, &before);
                    }

                    // (d) Keys follow the model of versions; leases only move forward.
                    let written = store_result(&result);
                    match (&step, written) {
                        (Step::Put { ns, key, value }, _) => {
                            prop_assert!(written.is_some_and(|r| r.succeeded));
                            model.insert((*ns, *key), (index, value.clone()));
                        }
                        (Step::Delete { ns, key }, _) => {
                            let existed = model.remove(&(*ns, *key)).is_some();
                            prop_assert_eq!(written.map(|r| r.existed), Some(existed));
                        }
                        (Step::Cas { ns, key, value, delete, .. }, _) => {
                            let Some(Command::StateStore(pb::StateStoreWrite {
                                op: Some(Op::CompareAndSet(cas)), ..
                            })) = &command else {
                                unreachable!("a Cas step builds a compare-and-set");
                            };
                            let current = model.get(&(*ns, *key)).cloned();
                            let should = current.as_ref().map_or(0, |(v, _)| *v) == cas.expected_version;
                            let r = written.expect("a well-formed CAS is never refused here");
                            prop_assert_eq!(r.succeeded, should);
                            if !should {
                                prop_assert_eq!(
                                    r.current.as_ref().map(|e| (e.version, e.value.clone())),
                                    current
                                );
                            } else if *delete {
                                model.remove(&(*ns, *key));
                            } else {
                                model.insert((*ns, *key), (index, value.clone()));
                            }
                        }
                        (Step::Acquire { ns, name, holder, .. }, Some(r)) => {
                            let lease = r.lease.clone().expect("an acquire reports the lease");
                            if r.succeeded {
                                prop_assert_eq!(&lease.holder, HOLDERS[*holder]);
                                prop_assert!(lease.expires_at > time);
                                if let Some((previous_holder, previous_epoch)) = granted.get(&(*ns, *name)) {
                                    if previous_holder == &lease.holder {
                                        prop_assert!(lease.epoch >= *previous_epoch);
                                    } else {
                                        prop_assert!(lease.epoch > *previous_epoch);
                                    }
                                }
                                granted.insert((*ns, *name), (lease.holder.clone(), lease.epoch));
                                let held = replica.store.lease(NAMESPACES[*ns], LEASES[*name], time);
                                prop_assert_eq!(held, Some(lease));
                            } else {
                                prop_assert!(lease.holder != HOLDERS[*holder] && lease.expires_at > time);
                            }
                        }
                        (Step::Release { ns, name, holder }, Some(r)) if r.succeeded => {
                            prop_assert_eq!(
                                granted.get(&(*ns, *name)).map(|(h, _)| h.as_str()),
                                Some(HOLDERS[*holder])
                            );
                            prop_assert_eq!(replica.store.lease(NAMESPACES[*ns], LEASES[*name], time), None);
                        }
                        _ => {}
                    }
                    for (ns, namespace) in NAMESPACES.iter().enumerate() {
                        for (key, key_name) in KEYS.iter().enumerate() {
                            let stored = replica.store.get(namespace, key_name);
                            prop_assert_eq!(
                                stored.map(|e| (e.version, e.value)),
                                model.get(&(ns, key)).cloned()
                            );
                        }
                    }

                    // (a) A snapshot taken now restores to the same state.
                    match ReplicatedState::restore(&replica.snapshot()) {
                        Ok(restored) => prop_assert_eq!(&restored, &replica),
                        Err(e) => prop_assert!(false, "the snapshot does not restore: {}", e),
                    }
                }
            }
        }
    }
}
