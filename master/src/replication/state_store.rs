//! The per-framework state store: a small key-value store with versions,
//! compare-and-set, prefix listing and leases, replicated through the raft log.
//!
//! Data lives in namespaces. A write ([`pb::StateStoreWrite`]) is applied at the raft
//! index and with the time of the entry that carries it, so every replica that applies
//! the same log holds the same store:
//! - an entry's `version` is the raft index of the write that produced it, and
//!   `create_version` the index of the write that created the key; both only grow;
//! - a lease expires `ttl_seconds` after the time of the write that granted or renewed
//!   it, and "expired" is judged against the write's time, never a local clock.
//!
//! # Batches
//! A batch is a list of puts, deletes and compare-and-sets (with `delete`: compare-
//! and-deletes) applied all-or-nothing at the raft index of its entry. Every op names a
//! different key, so every compare-and-set compares against the store as it was
//! before the batch, and the room a batch needs is judged on the namespace as the
//! whole batch leaves it. If a compare-and-set finds another version, the result
//! names that key (`conflict_key`, with `current`) and nothing is applied; if the
//! namespace has no room, the batch is refused. Either way the store is unchanged.
//!
//! # Fences
//! Any write may carry a fence (a lease name, holder and epoch). It is applied only
//! if that lease of the write's namespace is held, at the write's time, by that holder
//! at that epoch; otherwise the result has `fenced` set (with the lease as it is, if
//! anyone holds it) and nothing changes. Like lease expiry, this is judged against the
//! time stamped into the entry by the leader that proposed it, so every replica
//! reaches the same verdict. A framework's leader fences its writes with its own
//! lease: once deposed, its writes are refused instead of overwriting its successor's.
//!
//! Limits (`agora_core::limits`, as written in `state_store.proto`) are checked twice:
//! [`StateStore::validate_write`] refuses a malformed write before it is proposed, and
//! [`StateStore::apply_write`] re-checks everything, including the limits that depend
//! on the state (bytes, keys and leases per namespace). A refused write sets `error` in
//! its result and changes nothing.
//!
//! # Lease epochs
//! An epoch is a fencing token: it grows by one every time a lease changes hands. A
//! lease that is released (or evicted after it expired, to make room) is forgotten, so
//! a lease created afresh starts at the raft index of the write that creates it. Every
//! earlier epoch of that name is smaller: an epoch starts at some index `i` and grows by
//! at most one per later write, each at a larger index. Fencing tokens therefore never
//! go backwards, without keeping a record of every lease name ever used.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use agora_core::limits::{self, LimitError};
use agora_proto as pb;
use pb::state_store_write::{self as w, Op, batch_op};
use pb::state_store_write_result::BatchOpResult;

/// Every namespace's keys and leases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateStore {
    /// Namespace name -> content. Every name passes `limits::store_namespace`, and every
    /// namespace holds at least one entry or lease (empty ones are removed, so the
    /// snapshot of two equal stores is the same).
    namespaces: BTreeMap<String, Namespace>,
}

/// One namespace's keys and leases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// Key -> entry. Each entry's `key` is its map key and passes `limits::store_key`;
    /// its value passes `limits::store_value`; `1 <= create_version <= version`. At most
    /// `limits::MAX_STORE_KEYS` entries.
    entries: BTreeMap<String, pb::StoreEntry>,
    /// Lease name -> lease. Each lease's `name` is its map key; name and holder pass
    /// `limits::lease_name`; `epoch >= 1`; `expires_at` is finite. Expired leases stay
    /// (free) until someone acquires them or a new lease needs their room. At most
    /// `limits::MAX_STORE_LEASES`.
    leases: BTreeMap<String, pb::StoreLease>,
    /// Sum of `key.len() + value.len()` over `entries`; at most
    /// `limits::MAX_STORE_NAMESPACE_BYTES`. Kept up to date by every change.
    bytes: usize,
}

impl Namespace {
    /// Entries in key order.
    pub fn entries(&self) -> impl Iterator<Item = &pb::StoreEntry> {
        self.entries.values()
    }
    /// Leases (held and expired) in name order.
    pub fn leases(&self) -> impl Iterator<Item = &pb::StoreLease> {
        self.leases.values()
    }
    /// Bytes of keys plus values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn key_count(&self) -> usize {
        self.entries.len()
    }
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.leases.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// The request is malformed (a bad namespace, key, value, ttl, ...).
    #[error("{0}")]
    Invalid(String),
    /// The write is well-formed but the namespace has no room for it.
    #[error("{0}")]
    LimitExceeded(String),
    /// A snapshot breaks the store's invariants.
    #[error("state store snapshot is corrupt: {0}")]
    Corrupt(String),
}

impl From<LimitError> for StoreError {
    fn from(e: LimitError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

fn corrupt(e: LimitError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn entry_bytes(entry: &pb::StoreEntry) -> usize {
    entry.key.len() + entry.value.len()
}

fn is_live(lease: &pb::StoreLease, now: f64) -> bool {
    now < lease.expires_at
}

/// What one batch op does to its key: writes this value, or (`None`) deletes it.
/// `None` for an op that carries no operation (refused by validation).
fn batch_change(op: &w::BatchOp) -> Option<(&str, Option<&[u8]>)> {
    match op.op.as_ref()? {
        batch_op::Op::Put(put) => Some((&put.key, Some(&put.value))),
        batch_op::Op::Delete(delete) => Some((&delete.key, None)),
        batch_op::Op::CompareAndSet(cas) => {
            Some((&cas.key, (!cas.delete).then_some(cas.value.as_slice())))
        }
    }
}

fn succeeded() -> pb::StateStoreWriteResult {
    pb::StateStoreWriteResult {
        succeeded: true,
        ..Default::default()
    }
}

impl StateStore {
    /// Cheap checks a write must pass before it is proposed (the apply re-checks them
    /// and the limits that depend on state).
    pub fn validate_write(write: &pb::StateStoreWrite) -> Result<(), StoreError> {
        limits::store_namespace("namespace", &write.namespace)?;
        if let Some(fence) = &write.fence {
            limits::lease_name("fence.lease", &fence.lease)?;
            limits::lease_name("fence.holder", &fence.holder)?;
            if fence.epoch == 0 {
                return Err(LimitError::new("fence.epoch", "must be above 0").into());
            }
        }
        match &write.op {
            None => {
                return Err(StoreError::Invalid(
                    "the write carries no operation (put, delete, compare_and_set, \
                     acquire_lease, release_lease or batch)"
                        .into(),
                ));
            }
            Some(Op::Batch(batch)) => Self::validate_batch(batch)?,
            Some(Op::Put(put)) => {
                limits::store_key("put.key", &put.key)?;
                limits::store_value("put.value", &put.value)?;
            }
            Some(Op::Delete(delete)) => limits::store_key("delete.key", &delete.key)?,
            Some(Op::CompareAndSet(cas)) => {
                limits::store_key("compare_and_set.key", &cas.key)?;
                limits::store_value("compare_and_set.value", &cas.value)?;
            }
            Some(Op::AcquireLease(acquire)) => {
                limits::lease_name("acquire_lease.name", &acquire.name)?;
                limits::lease_name("acquire_lease.holder", &acquire.holder)?;
                limits::lease_ttl("acquire_lease.ttl_seconds", acquire.ttl_seconds)?;
            }
            Some(Op::ReleaseLease(release)) => {
                limits::lease_name("release_lease.name", &release.name)?;
                limits::lease_name("release_lease.holder", &release.holder)?;
            }
        }
        Ok(())
    }

    /// A batch holds 1 to `MAX_STORE_BATCH_OPS` well-formed ops on distinct keys,
    /// with at most `MAX_STORE_BATCH_BYTES` of keys and values.
    fn validate_batch(batch: &w::Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Err(LimitError::new("batch.ops", "must not be empty").into());
        }
        limits::count("batch.ops", batch.ops.len(), limits::MAX_STORE_BATCH_OPS)?;
        // Key -> the op that names it first. Only looked up, never iterated.
        let mut first_op: HashMap<&str, usize> = HashMap::with_capacity(batch.ops.len());
        let mut bytes = 0usize;
        for (i, op) in batch.ops.iter().enumerate() {
            let (field, key) = match &op.op {
                None => {
                    return Err(LimitError::new(
                        format!("batch.ops[{i}]"),
                        "carries no operation (put, delete or compare_and_set)",
                    )
                    .into());
                }
                Some(batch_op::Op::Put(put)) => {
                    limits::store_value(&format!("batch.ops[{i}].put.value"), &put.value)?;
                    (format!("batch.ops[{i}].put.key"), &put.key)
                }
                Some(batch_op::Op::Delete(delete)) => {
                    (format!("batch.ops[{i}].delete.key"), &delete.key)
                }
                Some(batch_op::Op::CompareAndSet(cas)) => {
                    limits::store_value(
                        &format!("batch.ops[{i}].compare_and_set.value"),
                        &cas.value,
                    )?;
                    (format!("batch.ops[{i}].compare_and_set.key"), &cas.key)
                }
            };
            limits::store_key(&field, key)?;
            if let Some(first) = first_op.insert(key, i) {
                return Err(LimitError::new(
                    field,
                    format!(
                        "names the key of batch.ops[{first}] again; a batch writes each \
                         key at most once"
                    ),
                )
                .into());
            }
            bytes = bytes.saturating_add(
                batch_change(op).map_or(0, |(key, value)| key.len() + value.map_or(0, <[u8]>::len)),
            );
        }
        limits::bytes(
            "batch.ops (keys and values)",
            bytes,
            limits::MAX_STORE_BATCH_BYTES,
        )?;
        Ok(())
    }

    /// Applies a committed write at raft `index`, stamped with `time` (seconds since
    /// the epoch, from the entry). Deterministic; a refused write comes back with
    /// `error` set and leaves the store unchanged.
    pub fn apply_write(
        &mut self,
        index: u64,
        time: f64,
        write: &pb::StateStoreWrite,
    ) -> pb::StateStoreWriteResult {
        self.try_apply_write(index, time, write)
            .unwrap_or_else(|e| pb::StateStoreWriteResult {
                error: e.to_string(),
                ..Default::default()
            })
    }

    fn try_apply_write(
        &mut self,
        index: u64,
        time: f64,
        write: &pb::StateStoreWrite,
    ) -> Result<pb::StateStoreWriteResult, StoreError> {
        Self::validate_write(write)?;
        // Version 0 means "absent" to compare-and-set, so no write may produce it.
        if index == 0 {
            return Err(StoreError::Invalid(
                "a write needs a raft index above 0".into(),
            ));
        }
        if !(time.is_finite() && time >= 0.0) {
            return Err(StoreError::Invalid(format!(
                "the write's time {time} is not seconds since the epoch"
            )));
        }
        let namespace = write.namespace.as_str();
        if let Some(fence) = &write.fence
            && let Some(fenced) = self.fenced_out(namespace, fence, time)
        {
            return Ok(fenced);
        }
        match &write.op {
            // validate_write refused a write without an op.
            None => Err(StoreError::Invalid("the write carries no operation".into())),
            Some(Op::Put(put)) => {
                let entry = self.set(namespace, &put.key, &put.value, index)?;
                Ok(pb::StateStoreWriteResult {
                    entry: Some(entry),
                    ..succeeded()
                })
            }
            Some(Op::Delete(delete)) => {
                let existed = self.remove(namespace, &delete.key).is_some();
                Ok(pb::StateStoreWriteResult {
                    existed,
                    ..succeeded()
                })
            }
            Some(Op::CompareAndSet(cas)) => {
                let current = self.get_ref(namespace, &cas.key);
                let current_version = current.map_or(0, |e| e.version);
                if current_version != cas.expected_version {
                    return Ok(pb::StateStoreWriteResult {
                        succeeded: false,
                        current: current.cloned(),
                        ..Default::default()
                    });
                }
                if cas.delete {
                    let existed = self.remove(namespace, &cas.key).is_some();
                    Ok(pb::StateStoreWriteResult {
                        existed,
                        ..succeeded()
                    })
                } else {
                    let entry = self.set(namespace, &cas.key, &cas.value, index)?;
                    Ok(pb::StateStoreWriteResult {
                        entry: Some(entry),
                        ..succeeded()
                    })
                }
            }
            Some(Op::AcquireLease(acquire)) => self.acquire_lease(namespace, acquire, index, time),
            Some(Op::ReleaseLease(release)) => Ok(self.release_lease(namespace, release, time)),
            Some(Op::Batch(batch)) => self.apply_batch(namespace, batch, index),
        }
    }

    /// The result of a write whose fence does not hold at `time`, or `None` if it
    /// holds: the lease is live and held by the fence's holder at the fence's epoch.
    fn fenced_out(
        &self,
        namespace: &str,
        fence: &w::Fence,
        time: f64,
    ) -> Option<pb::StateStoreWriteResult> {
        let lease = self.lease(namespace, &fence.lease, time);
        let holds = lease
            .as_ref()
            .is_some_and(|lease| lease.holder == fence.holder && lease.epoch == fence.epoch);
        (!holds).then(|| pb::StateStoreWriteResult {
            fenced: true,
            lease,
            ..Default::default()
        })
    }

    /// Applies a validated batch all-or-nothing: every check (compare-and-sets,
    /// versions, room) runs before the first change, and nothing after it can fail.
    fn apply_batch(
        &mut self,
        namespace: &str,
        batch: &w::Batch,
        index: u64,
    ) -> Result<pb::StateStoreWriteResult, StoreError> {
        let current = self.namespaces.get(namespace);
        let entry_of = |key: &str| current.and_then(|n| n.entries.get(key));
        // Keys are distinct, so the state before the batch is what each one compares to.
        for op in &batch.ops {
            if let Some(batch_op::Op::CompareAndSet(cas)) = &op.op {
                let entry = entry_of(&cas.key);
                if entry.map_or(0, |e| e.version) != cas.expected_version {
                    return Ok(pb::StateStoreWriteResult {
                        succeeded: false,
                        conflict_key: cas.key.clone(),
                        current: entry.cloned(),
                        ..Default::default()
                    });
                }
            }
        }
        let mut changes = Vec::with_capacity(batch.ops.len());
        let mut bytes = current.map_or(0, |n| n.bytes);
        let mut keys = current.map_or(0, |n| n.entries.len());
        for op in &batch.ops {
            let Some((key, value)) = batch_change(op) else {
                return Err(StoreError::Invalid(
                    "a batch op carries no operation".into(),
                ));
            };
            if let Some(existing) = entry_of(key) {
                if value.is_some() && existing.version >= index {
                    // Raft applies in index order; anything else would make versions go back.
                    return Err(StoreError::Invalid(format!(
                        "write at index {index} is not after the version {} of key '{key}'",
                        existing.version
                    )));
                }
                bytes = bytes.saturating_sub(entry_bytes(existing));
                keys = keys.saturating_sub(1);
            }
            if let Some(value) = value {
                bytes = bytes.saturating_add(key.len() + value.len());
                keys += 1;
            }
            changes.push((key, value));
        }
        // The namespace as the whole batch leaves it: a batch that deletes as much as
        // it adds fits in a full namespace, whatever the order of its ops.
        if bytes > limits::MAX_STORE_NAMESPACE_BYTES {
            return Err(StoreError::LimitExceeded(format!(
                "namespace '{namespace}' would hold {bytes} bytes of keys and values after \
                 the batch, over the limit of {}",
                limits::MAX_STORE_NAMESPACE_BYTES
            )));
        }
        if keys > limits::MAX_STORE_KEYS {
            return Err(StoreError::LimitExceeded(format!(
                "namespace '{namespace}' would hold {keys} keys after the batch, over the \
                 limit of {}",
                limits::MAX_STORE_KEYS
            )));
        }
        let target = self.namespaces.entry(namespace.to_string()).or_default();
        let results = changes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => {
                    let create_version = target
                        .entries
                        .get(key)
                        .map_or(index, |existing| existing.create_version);
                    let entry = pb::StoreEntry {
                        key: key.to_string(),
                        value: value.to_vec(),
                        version: index,
                        create_version,
                    };
                    target.entries.insert(key.to_string(), entry);
                    BatchOpResult {
                        // The value is the op's own; not sent back.
                        entry: Some(pb::StoreEntry {
                            key: key.to_string(),
                            value: Vec::new(),
                            version: index,
                            create_version,
                        }),
                        existed: false,
                    }
                }
                None => BatchOpResult {
                    entry: None,
                    existed: target.entries.remove(key).is_some(),
                },
            })
            .collect();
        target.bytes = bytes;
        self.drop_if_empty(namespace);
        Ok(pb::StateStoreWriteResult {
            batch: results,
            ..succeeded()
        })
    }

    /// Writes `key` = `value` at `index`, or refuses (changing nothing) when the
    /// namespace has no room.
    fn set(
        &mut self,
        namespace: &str,
        key: &str,
        value: &[u8],
        index: u64,
    ) -> Result<pb::StoreEntry, StoreError> {
        let current = self.namespaces.get(namespace);
        let existing = current.and_then(|n| n.entries.get(key));
        if let Some(existing) = existing
            && existing.version >= index
        {
            // Raft applies in index order; anything else would make versions go back.
            return Err(StoreError::Invalid(format!(
                "write at index {index} is not after the key's version {}",
                existing.version
            )));
        }
        let namespace_bytes = current.map_or(0, |n| n.bytes);
        let bytes = namespace_bytes
            .saturating_sub(existing.map_or(0, entry_bytes))
            .saturating_add(key.len() + value.len());
        if bytes > limits::MAX_STORE_NAMESPACE_BYTES {
            return Err(StoreError::LimitExceeded(format!(
                "namespace '{namespace}' would hold {bytes} bytes of keys and values, over \
                 the limit of {}",
                limits::MAX_STORE_NAMESPACE_BYTES
            )));
        }
        let keys = current.map_or(0, |n| n.entries.len());
        if existing.is_none() && keys >= limits::MAX_STORE_KEYS {
            return Err(StoreError::LimitExceeded(format!(
                "namespace '{namespace}' already holds {} keys",
                limits::MAX_STORE_KEYS
            )));
        }
        let entry = pb::StoreEntry {
            key: key.to_string(),
            value: value.to_vec(),
            version: index,
            create_version: existing.map_or(index, |e| e.create_version),
        };
        let target = self.namespaces.entry(namespace.to_string()).or_default();
        target.bytes = bytes;
        target.entries.insert(key.to_string(), entry.clone());
        Ok(entry)
    }

    /// Removes `key`; drops the namespace if that emptied it.
    fn remove(&mut self, namespace: &str, key: &str) -> Option<pb::StoreEntry> {
        let target = self.namespaces.get_mut(namespace)?;
        let removed = target.entries.remove(key)?;
        target.bytes = target.bytes.saturating_sub(entry_bytes(&removed));
        self.drop_if_empty(namespace);
        Some(removed)
    }

    fn drop_if_empty(&mut self, namespace: &str) {
        if self
            .namespaces
            .get(namespace)
            .is_some_and(Namespace::is_empty)
        {
            self.namespaces.remove(namespace);
        }
    }

    fn acquire_lease(
        &mut self,
        namespace: &str,
        acquire: &pb::state_store_write::AcquireLease,
        index: u64,
        time: f64,
    ) -> Result<pb::StateStoreWriteResult, StoreError> {
        let current = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.leases.get(&acquire.name));
        let epoch = match current {
            Some(lease) if lease.holder != acquire.holder && is_live(lease, time) => {
                return Ok(pb::StateStoreWriteResult {
                    succeeded: false,
                    lease: Some(lease.clone()),
                    ..Default::default()
                });
            }
            // A renewal (even of a lapsed lease nobody took meanwhile) keeps the epoch.
            Some(lease) if lease.holder == acquire.holder => lease.epoch,
            Some(lease) => lease.epoch.saturating_add(1),
            None => {
                self.make_room_for_lease(namespace, time)?;
                index
            }
        };
        let lease = pb::StoreLease {
            name: acquire.name.clone(),
            holder: acquire.holder.clone(),
            expires_at: time + acquire.ttl_seconds,
            epoch,
        };
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .leases
            .insert(acquire.name.clone(), lease.clone());
        Ok(pb::StateStoreWriteResult {
            lease: Some(lease),
            ..succeeded()
        })
    }

    /// Ensures the namespace can take one more lease, evicting leases expired at `time`
    /// if it is full. Refuses, changing nothing, when even that leaves no room.
    fn make_room_for_lease(&mut self, namespace: &str, time: f64) -> Result<(), StoreError> {
        let Some(target) = self.namespaces.get_mut(namespace) else {
            return Ok(());
        };
        if target.leases.len() < limits::MAX_STORE_LEASES {
            return Ok(());
        }
        let expired = target
            .leases
            .values()
            .filter(|lease| !is_live(lease, time))
            .count();
        if target.leases.len() - expired >= limits::MAX_STORE_LEASES {
            return Err(StoreError::LimitExceeded(format!(
                "namespace '{namespace}' already holds {} leases",
                limits::MAX_STORE_LEASES
            )));
        }
        target.leases.retain(|_, lease| is_live(lease, time));
        Ok(())
    }

    fn release_lease(
        &mut self,
        namespace: &str,
        release: &pb::state_store_write::ReleaseLease,
        time: f64,
    ) -> pb::StateStoreWriteResult {
        let Some(target) = self.namespaces.get_mut(namespace) else {
            return pb::StateStoreWriteResult::default();
        };
        match target.leases.get(&release.name) {
            Some(lease) if lease.holder == release.holder => {
                target.leases.remove(&release.name);
                self.drop_if_empty(namespace);
                succeeded()
            }
            // Only the holder may release; the caller learns who holds it now.
            Some(lease) => pb::StateStoreWriteResult {
                succeeded: false,
                lease: is_live(lease, time).then(|| lease.clone()),
                ..Default::default()
            },
            None => pb::StateStoreWriteResult::default(),
        }
    }

    fn get_ref(&self, namespace: &str, key: &str) -> Option<&pb::StoreEntry> {
        self.namespaces.get(namespace)?.entries.get(key)
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<pb::StoreEntry> {
        self.get_ref(namespace, key).cloned()
    }

    /// One page of the keys under `request.prefix`, in key order. A page holds at most
    /// `limit` entries (0 or more than `limits::MAX_STORE_LIST` mean that maximum) and
    /// stops early, with `more`, once it carries `limits::MAX_STORE_LIST_BYTES`.
    pub fn list(
        &self,
        request: &pb::StoreListRequest,
    ) -> Result<pb::StoreListResponse, StoreError> {
        limits::store_namespace("namespace", &request.namespace)?;
        limits::bytes("prefix", request.prefix.len(), limits::MAX_STORE_KEY_LEN)?;
        limits::bytes(
            "start_after",
            request.start_after.len(),
            limits::MAX_STORE_KEY_LEN,
        )?;
        let Some(namespace) = self.namespaces.get(&request.namespace) else {
            return Ok(pb::StoreListResponse::default());
        };
        let limit = match request.limit as usize {
            0 => limits::MAX_STORE_LIST,
            n => n.min(limits::MAX_STORE_LIST),
        };
        let (prefix, start_after) = (request.prefix.as_str(), request.start_after.as_str());
        let lower = if start_after >= prefix {
            Bound::Excluded(start_after)
        } else {
            Bound::Included(prefix)
        };
        let mut matching = namespace
            .entries
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(_, entry)| entry)
            .take_while(|entry| entry.key.starts_with(prefix))
            .peekable();
        let mut entries = Vec::new();
        let mut page_bytes = 0usize;
        while let Some(entry) = matching.peek() {
            let size = if request.keys_only {
                entry.key.len()
            } else {
                entry_bytes(entry)
            };
            if entries.len() >= limit
                || (!entries.is_empty() && page_bytes + size > limits::MAX_STORE_LIST_BYTES)
            {
                break;
            }
            page_bytes += size;
            entries.push(pb::StoreEntry {
                key: entry.key.clone(),
                value: if request.keys_only {
                    Vec::new()
                } else {
                    entry.value.clone()
                },
                version: entry.version,
                create_version: entry.create_version,
            });
            matching.next();
        }
        Ok(pb::StoreListResponse {
            entries,
            more: matching.peek().is_some(),
        })
    }

    /// The lease if it is held at `now` (seconds since the epoch); `None` when it is
    /// free or expired.
    pub fn lease(&self, namespace: &str, name: &str, now: f64) -> Option<pb::StoreLease> {
        self.namespaces
            .get(namespace)?
            .leases
            .get(name)
            .filter(|lease| is_live(lease, now))
            .cloned()
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// Namespaces in name order.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Namespace)> {
        self.namespaces.iter().map(|(name, ns)| (name.as_str(), ns))
    }

    /// The whole store, namespaces, keys and leases each in order.
    pub fn snapshot(&self) -> pb::StateStoreSnapshot {
        pb::StateStoreSnapshot {
            namespaces: self
                .namespaces
                .iter()
                .map(|(name, ns)| pb::state_store_snapshot::Namespace {
                    name: name.clone(),
                    entries: ns.entries.values().cloned().collect(),
                    leases: ns.leases.values().cloned().collect(),
                })
                .collect(),
        }
    }

    /// Rebuilds a store from a snapshot, checking every invariant: a snapshot that
    /// breaks one (a duplicate, a bad name, data over a limit) is corrupt. Empty
    /// namespaces are dropped.
    pub fn from_snapshot(snapshot: pb::StateStoreSnapshot) -> Result<Self, StoreError> {
        let mut namespaces = BTreeMap::new();
        for ns in snapshot.namespaces {
            limits::store_namespace("namespace", &ns.name).map_err(corrupt)?;
            if namespaces.contains_key(&ns.name) {
                return Err(StoreError::Corrupt(format!(
                    "namespace '{}' appears twice",
                    ns.name
                )));
            }
            let restored = Self::restore_namespace(&ns.name, ns.entries, ns.leases)?;
            if !restored.is_empty() {
                namespaces.insert(ns.name, restored);
            }
        }
        Ok(Self { namespaces })
    }

    fn restore_namespace(
        name: &str,
        entries: Vec<pb::StoreEntry>,
        leases: Vec<pb::StoreLease>,
    ) -> Result<Namespace, StoreError> {
        let mut ns = Namespace::default();
        limits::count("entries", entries.len(), limits::MAX_STORE_KEYS).map_err(corrupt)?;
        limits::count("leases", leases.len(), limits::MAX_STORE_LEASES).map_err(corrupt)?;
        for entry in entries {
            limits::store_key("entry.key", &entry.key).map_err(corrupt)?;
            limits::store_value("entry.value", &entry.value).map_err(corrupt)?;
            if entry.create_version == 0 || entry.create_version > entry.version {
                return Err(StoreError::Corrupt(format!(
                    "key '{}' in '{name}' has version {} and create_version {}",
                    entry.key, entry.version, entry.create_version
                )));
            }
            ns.bytes += entry_bytes(&entry);
            if ns.entries.insert(entry.key.clone(), entry).is_some() {
                return Err(StoreError::Corrupt(format!(
                    "a key appears twice in '{name}'"
                )));
            }
        }
        if ns.bytes > limits::MAX_STORE_NAMESPACE_BYTES {
            return Err(StoreError::Corrupt(format!(
                "namespace '{name}' holds {} bytes, over the limit of {}",
                ns.bytes,
                limits::MAX_STORE_NAMESPACE_BYTES
            )));
        }
        for lease in leases {
            limits::lease_name("lease.name", &lease.name).map_err(corrupt)?;
            limits::lease_name("lease.holder", &lease.holder).map_err(corrupt)?;
            if lease.epoch == 0 || !lease.expires_at.is_finite() {
                return Err(StoreError::Corrupt(format!(
                    "lease '{}' in '{name}' has epoch {} and expiry {}",
                    lease.name, lease.epoch, lease.expires_at
                )));
            }
            if ns.leases.insert(lease.name.clone(), lease).is_some() {
                return Err(StoreError::Corrupt(format!(
                    "a lease appears twice in '{name}'"
                )));
            }
        }
        Ok(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::state_store_write as w;

    const NS: &str = "apps";

    fn write(op: Op) -> pb::StateStoreWrite {
        pb::StateStoreWrite {
            namespace: NS.into(),
            op: Some(op),
            fence: None,
        }
    }

    fn put(key: &str, value: &[u8]) -> pb::StateStoreWrite {
        write(Op::Put(w::Put {
            key: key.into(),
            value: value.to_vec(),
        }))
    }

    fn delete(key: &str) -> pb::StateStoreWrite {
        write(Op::Delete(w::Delete { key: key.into() }))
    }

    fn cas(key: &str, expected_version: u64, value: &[u8], delete: bool) -> pb::StateStoreWrite {
        write(Op::CompareAndSet(w::CompareAndSet {
            key: key.into(),
            expected_version,
            value: value.to_vec(),
            delete,
        }))
    }

    fn acquire(name: &str, holder: &str, ttl_seconds: f64) -> pb::StateStoreWrite {
        write(Op::AcquireLease(w::AcquireLease {
            name: name.into(),
            holder: holder.into(),
            ttl_seconds,
        }))
    }

    fn release(name: &str, holder: &str) -> pb::StateStoreWrite {
        write(Op::ReleaseLease(w::ReleaseLease {
            name: name.into(),
            holder: holder.into(),
        }))
    }

    fn batch_put(key: &str, value: &[u8]) -> w::BatchOp {
        w::BatchOp {
            op: Some(batch_op::Op::Put(w::Put {
                key: key.into(),
                value: value.to_vec(),
            })),
        }
    }

    fn batch_delete(key: &str) -> w::BatchOp {
        w::BatchOp {
            op: Some(batch_op::Op::Delete(w::Delete { key: key.into() })),
        }
    }

    fn batch_cas(key: &str, expected_version: u64, value: &[u8], delete: bool) -> w::BatchOp {
        w::BatchOp {
            op: Some(batch_op::Op::CompareAndSet(w::CompareAndSet {
                key: key.into(),
                expected_version,
                value: value.to_vec(),
                delete,
            })),
        }
    }

    fn batch(ops: Vec<w::BatchOp>) -> pb::StateStoreWrite {
        write(Op::Batch(w::Batch { ops }))
    }

    fn fenced(
        write: pb::StateStoreWrite,
        lease: &str,
        holder: &str,
        epoch: u64,
    ) -> pb::StateStoreWrite {
        pb::StateStoreWrite {
            fence: Some(w::Fence {
                lease: lease.into(),
                holder: holder.into(),
                epoch,
            }),
            ..write
        }
    }

    /// Applies a write whose fence must not hold, and checks it changed nothing.
    /// Returns the lease the result reports.
    fn fenced_out(
        store: &mut StateStore,
        index: u64,
        time: f64,
        write: &pb::StateStoreWrite,
    ) -> Option<pb::StoreLease> {
        let before = store.clone();
        let result = store.apply_write(index, time, write);
        assert_eq!(result.error, "", "write {write:?} was refused");
        assert!(
            result.fenced,
            "write {write:?} was not fenced out: {result:?}"
        );
        assert!(!result.succeeded && result.entry.is_none() && result.batch.is_empty());
        assert_eq!(*store, before, "a fenced-out write changed the store");
        result.lease
    }

    /// Applies a write that must not be refused.
    fn ok(
        store: &mut StateStore,
        index: u64,
        time: f64,
        write: &pb::StateStoreWrite,
    ) -> pb::StateStoreWriteResult {
        let result = store.apply_write(index, time, write);
        assert_eq!(result.error, "", "write {write:?} was refused");
        result
    }

    /// Applies a write that must be refused, and checks it changed nothing.
    fn refused(
        store: &mut StateStore,
        index: u64,
        time: f64,
        write: &pb::StateStoreWrite,
    ) -> String {
        let before = store.clone();
        let result = store.apply_write(index, time, write);
        assert!(!result.error.is_empty(), "write {write:?} was accepted");
        assert!(!result.succeeded && result.entry.is_none() && result.lease.is_none());
        assert_eq!(*store, before, "a refused write changed the store");
        result.error
    }

    #[test]
    fn put_versions_are_raft_indexes() {
        let mut store = StateStore::default();
        let first = ok(&mut store, 5, 1.0, &put("k", b"one"));
        assert!(first.succeeded);
        let entry = first.entry.unwrap();
        assert_eq!((entry.version, entry.create_version), (5, 5));
        assert_eq!(entry.value, b"one");

        let second = ok(&mut store, 9, 2.0, &put("k", b"two")).entry.unwrap();
        assert_eq!((second.version, second.create_version), (9, 5));
        assert_eq!(store.get(NS, "k"), Some(second));
        assert_eq!(store.get(NS, "missing"), None);
        assert_eq!(store.get("other", "k"), None);
        assert_eq!(store.namespace(NS).unwrap().bytes(), 1 + 3);
    }

    #[test]
    fn a_key_never_goes_back_in_version() {
        let mut store = StateStore::default();
        ok(&mut store, 5, 1.0, &put("k", b"v"));
        let error = refused(&mut store, 5, 1.0, &put("k", b"w"));
        assert!(error.contains("not after"), "{error}");
    }

    #[test]
    fn delete_reports_existence_and_drops_empty_namespaces() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("a", b"x"));
        ok(&mut store, 2, 1.0, &put("b", b"yy"));
        let gone = ok(&mut store, 3, 1.0, &delete("a"));
        assert!(gone.succeeded && gone.existed && gone.entry.is_none());
        assert_eq!(store.namespace(NS).unwrap().bytes(), 3);
        let again = ok(&mut store, 4, 1.0, &delete("a"));
        assert!(again.succeeded && !again.existed);
        ok(&mut store, 5, 1.0, &delete("b"));
        assert!(store.namespace(NS).is_none());
        assert_eq!(store, StateStore::default());
        // A delete in a namespace that does not exist does not create it.
        ok(&mut store, 6, 1.0, &delete("zzz"));
        assert_eq!(store, StateStore::default());
    }

    #[test]
    fn compare_and_set() {
        let mut store = StateStore::default();
        // 0 = must not exist.
        let created = ok(&mut store, 3, 1.0, &cas("k", 0, b"v1", false));
        assert!(created.succeeded);
        assert_eq!(created.entry.as_ref().unwrap().version, 3);

        let conflict = ok(&mut store, 4, 1.0, &cas("k", 0, b"other", false));
        assert!(!conflict.succeeded && conflict.entry.is_none());
        assert_eq!(conflict.current, created.entry);

        let stale = ok(&mut store, 5, 1.0, &cas("k", 2, b"other", false));
        assert!(!stale.succeeded);
        assert_eq!(store.get(NS, "k").unwrap().value, b"v1");

        let updated = ok(&mut store, 6, 1.0, &cas("k", 3, b"v2", false));
        assert!(updated.succeeded);
        let entry = updated.entry.unwrap();
        assert_eq!((entry.version, entry.create_version), (6, 3));

        let wrong_delete = ok(&mut store, 7, 1.0, &cas("k", 3, b"", true));
        assert!(!wrong_delete.succeeded && store.get(NS, "k").is_some());
        let deleted = ok(&mut store, 8, 1.0, &cas("k", 6, b"", true));
        assert!(deleted.succeeded && deleted.existed && deleted.entry.is_none());
        assert!(store.get(NS, "k").is_none());

        let missing = ok(&mut store, 9, 1.0, &cas("k", 6, b"v", false));
        assert!(!missing.succeeded && missing.current.is_none());
    }

    #[test]
    fn malformed_writes_are_refused_before_and_at_apply() {
        let long_key = "k".repeat(limits::MAX_STORE_KEY_LEN + 1);
        let big_value = vec![0u8; limits::MAX_STORE_VALUE_BYTES + 1];
        let bad = [
            pb::StateStoreWrite {
                namespace: "no spaces".into(),
                ..put("k", b"v")
            },
            pb::StateStoreWrite {
                namespace: String::new(),
                ..put("k", b"v")
            },
            pb::StateStoreWrite {
                namespace: NS.into(),
                op: None,
                fence: None,
            },
            put("", b"v"),
            put(&long_key, b"v"),
            put("k", &big_value),
            cas("k", 0, &big_value, false),
            delete(""),
            acquire("l", "h", 0.5),
            acquire("l", "h", 3601.0),
            acquire("l", "h", f64::NAN),
            acquire("", "h", 10.0),
            acquire("l", "", 10.0),
            release("l", &"h".repeat(257)),
        ];
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("k", b"v"));
        for (i, write) in bad.iter().enumerate() {
            assert!(StateStore::validate_write(write).is_err(), "{write:?}");
            refused(&mut store, 10 + i as u64, 1.0, write);
        }
        // The apply also refuses what only the entry can get wrong.
        refused(&mut store, 0, 1.0, &put("k2", b"v"));
        refused(&mut store, 50, f64::NAN, &put("k2", b"v"));
        refused(&mut store, 51, -1.0, &acquire("l", "h", 10.0));
    }

    #[test]
    fn namespace_byte_limit() {
        let mut store = StateStore::default();
        let value = vec![7u8; limits::MAX_STORE_VALUE_BYTES];
        let full = limits::MAX_STORE_NAMESPACE_BYTES / (limits::MAX_STORE_VALUE_BYTES + 4);
        for i in 0..full {
            ok(
                &mut store,
                i as u64 + 1,
                1.0,
                &put(&format!("{i:04}"), &value),
            );
        }
        let index = full as u64 + 1;
        let error = refused(&mut store, index, 1.0, &put("next", &value));
        assert!(error.contains("bytes"), "{error}");
        // Replacing a value with one of the same size still fits; a smaller one too.
        ok(&mut store, index + 1, 1.0, &put("0000", &value));
        ok(&mut store, index + 2, 1.0, &put("0001", b"small"));
        let ns = store.namespace(NS).unwrap();
        assert!(ns.bytes() <= limits::MAX_STORE_NAMESPACE_BYTES);
        assert_eq!(
            ns.bytes(),
            ns.entries()
                .map(|e| e.key.len() + e.value.len())
                .sum::<usize>()
        );
        // Other namespaces have their own budget.
        let other = pb::StateStoreWrite {
            namespace: "cron".into(),
            ..put("next", &value)
        };
        ok(&mut store, index + 3, 1.0, &other);
    }

    #[test]
    fn namespace_key_limit() {
        let mut store = StateStore::default();
        for i in 0..limits::MAX_STORE_KEYS {
            ok(&mut store, i as u64 + 1, 1.0, &put(&format!("k{i}"), b""));
        }
        let index = limits::MAX_STORE_KEYS as u64 + 1;
        let error = refused(&mut store, index, 1.0, &put("one-more", b""));
        assert!(error.contains("keys"), "{error}");
        refused(&mut store, index, 1.0, &cas("one-more", 0, b"", false));
        // Updating an existing key is not a new key.
        ok(&mut store, index, 1.0, &put("k0", b"x"));
        ok(&mut store, index + 1, 1.0, &delete("k1"));
        ok(&mut store, index + 2, 1.0, &put("one-more", b""));
    }

    #[test]
    fn lease_grant_contention_renewal_and_expiry() {
        let mut store = StateStore::default();
        let granted = ok(&mut store, 10, 100.0, &acquire("leader", "a", 30.0));
        assert!(granted.succeeded);
        let lease = granted.lease.unwrap();
        assert_eq!(
            (lease.holder.as_str(), lease.expires_at, lease.epoch),
            ("a", 130.0, 10)
        );
        assert_eq!(store.lease(NS, "leader", 129.9), Some(lease.clone()));

        // Another holder cannot take a live lease, and learns who holds it.
        let contended = ok(&mut store, 11, 120.0, &acquire("leader", "b", 30.0));
        assert!(!contended.succeeded);
        assert_eq!(contended.lease, Some(lease.clone()));

        // The holder renews: same epoch, later expiry.
        let renewed = ok(&mut store, 12, 125.0, &acquire("leader", "a", 30.0))
            .lease
            .unwrap();
        assert_eq!((renewed.epoch, renewed.expires_at), (10, 155.0));

        // Expiry is judged by the time of the write (and of the read).
        assert_eq!(store.lease(NS, "leader", 155.0), None);
        assert!(store.lease(NS, "leader", 154.0).is_some());
        let at_expiry = ok(&mut store, 13, 155.0, &acquire("leader", "b", 5.0));
        assert!(at_expiry.succeeded);
        let taken = at_expiry.lease.unwrap();
        assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 11));

        // The old holder coming back after b's lease lapsed changes hands again.
        let back = ok(&mut store, 14, 170.0, &acquire("leader", "a", 5.0))
            .lease
            .unwrap();
        assert_eq!((back.holder.as_str(), back.epoch), ("a", 12));
        // Renewing a lapsed lease nobody took keeps the epoch.
        let lapsed = ok(&mut store, 15, 200.0, &acquire("leader", "a", 5.0))
            .lease
            .unwrap();
        assert_eq!(lapsed.epoch, 12);
    }

    #[test]
    fn lease_release_only_by_holder_and_epochs_never_go_back() {
        let mut store = StateStore::default();
        ok(&mut store, 3, 10.0, &acquire("l", "a", 60.0));
        let denied = ok(&mut store, 4, 11.0, &release("l", "b"));
        assert!(!denied.succeeded);
        assert_eq!(denied.lease.unwrap().holder, "a");
        assert!(store.lease(NS, "l", 11.0).is_some());

        let released = ok(&mut store, 5, 12.0, &release("l", "a"));
        assert!(released.succeeded && released.lease.is_none());
        assert_eq!(store.lease(NS, "l", 12.0), None);
        // The namespace held only that lease.
        assert!(store.namespace(NS).is_none());

        let nothing = ok(&mut store, 6, 12.0, &release("l", "a"));
        assert!(!nothing.succeeded);

        let again = ok(&mut store, 7, 13.0, &acquire("l", "b", 60.0))
            .lease
            .unwrap();
        assert!(again.epoch > 3, "epoch went back to {}", again.epoch);
    }

    #[test]
    fn lease_limit_evicts_only_expired_leases() {
        let mut store = StateStore::default();
        for i in 0..limits::MAX_STORE_LEASES {
            let ttl = if i == 0 { 1.0 } else { 100.0 };
            ok(
                &mut store,
                i as u64 + 1,
                0.0,
                &acquire(&format!("l{i}"), "h", ttl),
            );
        }
        let index = limits::MAX_STORE_LEASES as u64 + 1;
        // At time 0.5 every lease is live: no room.
        let error = refused(&mut store, index, 0.5, &acquire("new", "h", 10.0));
        assert!(error.contains("leases"), "{error}");
        // At time 1 the first has expired and makes room.
        ok(&mut store, index, 1.0, &acquire("new", "h", 10.0));
        let ns = store.namespace(NS).unwrap();
        assert_eq!(ns.lease_count(), limits::MAX_STORE_LEASES);
        assert!(store.lease(NS, "l0", 1.0).is_none());
        assert!(store.lease(NS, "new", 1.0).is_some());
        // Renewing an existing lease needs no room.
        ok(&mut store, index + 1, 1.0, &acquire("l1", "h", 10.0));
    }

    #[test]
    fn list_pages_by_prefix() {
        let mut store = StateStore::default();
        for (i, key) in ["a", "job/1", "job/2", "job/3", "jobs", "z"]
            .iter()
            .enumerate()
        {
            ok(&mut store, i as u64 + 1, 1.0, &put(key, key.as_bytes()));
        }
        let request = |prefix: &str, start_after: &str, limit: u32| pb::StoreListRequest {
            namespace: NS.into(),
            prefix: prefix.into(),
            start_after: start_after.into(),
            limit,
            keys_only: false,
        };
        let keys = |response: &pb::StoreListResponse| -> Vec<String> {
            response.entries.iter().map(|e| e.key.clone()).collect()
        };

        let all = store.list(&request("", "", 0)).unwrap();
        assert_eq!(keys(&all).len(), 6);
        assert!(!all.more);

        let first = store.list(&request("job/", "", 2)).unwrap();
        assert_eq!(keys(&first), ["job/1", "job/2"]);
        assert!(first.more);
        assert_eq!(first.entries[0].value, b"job/1");
        let second = store.list(&request("job/", "job/2", 2)).unwrap();
        assert_eq!(keys(&second), ["job/3"]);
        assert!(!second.more);

        // start_after before the prefix starts at the prefix.
        let early = store.list(&request("job", "a", 10)).unwrap();
        assert_eq!(keys(&early), ["job/1", "job/2", "job/3", "jobs"]);

        let keys_only = store
            .list(&pb::StoreListRequest {
                keys_only: true,
                ..request("", "", 0)
            })
            .unwrap();
        assert!(
            keys_only
                .entries
                .iter()
                .all(|e| e.value.is_empty() && e.version > 0)
        );

        let unknown = store
            .list(&pb::StoreListRequest {
                namespace: "nobody".into(),
                ..request("", "", 0)
            })
            .unwrap();
        assert!(unknown.entries.is_empty() && !unknown.more);
        assert!(matches!(
            store.list(&pb::StoreListRequest {
                namespace: "bad name".into(),
                ..request("", "", 0)
            }),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn list_limits_pages_by_count_and_bytes() {
        let mut store = StateStore::default();
        for i in 0..limits::MAX_STORE_LIST + 5 {
            ok(
                &mut store,
                i as u64 + 1,
                1.0,
                &put(&format!("k{i:05}"), b""),
            );
        }
        let request = pb::StoreListRequest {
            namespace: NS.into(),
            limit: 5000,
            ..Default::default()
        };
        let page = store.list(&request).unwrap();
        assert_eq!(page.entries.len(), limits::MAX_STORE_LIST);
        assert!(page.more);

        let mut big = StateStore::default();
        let value = vec![1u8; limits::MAX_STORE_VALUE_BYTES];
        for i in 0..12 {
            ok(&mut big, i + 1, 1.0, &put(&format!("k{i:02}"), &value));
        }
        let page = big.list(&request).unwrap();
        let bytes: usize = page
            .entries
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum();
        assert!(bytes <= limits::MAX_STORE_LIST_BYTES, "{bytes}");
        assert!(page.more && page.entries.len() < 12);
        // keys_only pages are not cut by the values they leave out.
        let keys = big
            .list(&pb::StoreListRequest {
                keys_only: true,
                ..request.clone()
            })
            .unwrap();
        assert_eq!(keys.entries.len(), 12);
        assert!(!keys.more);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("a", b"1"));
        ok(&mut store, 2, 1.0, &put("b", b"22"));
        ok(&mut store, 3, 1.0, &acquire("l", "h", 10.0));
        ok(
            &mut store,
            4,
            1.0,
            &pb::StateStoreWrite {
                namespace: "cron".into(),
                ..put("x", b"y")
            },
        );
        let restored = StateStore::from_snapshot(store.snapshot()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.namespace(NS).unwrap().bytes(), 2 + 3);
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let entry = |key: &str, version: u64, create_version: u64| pb::StoreEntry {
            key: key.into(),
            value: b"v".to_vec(),
            version,
            create_version,
        };
        let lease = |name: &str, epoch: u64| pb::StoreLease {
            name: name.into(),
            holder: "h".into(),
            expires_at: 10.0,
            epoch,
        };
        let namespace = |name: &str, entries: Vec<pb::StoreEntry>, leases: Vec<pb::StoreLease>| {
            pb::state_store_snapshot::Namespace {
                name: name.into(),
                entries,
                leases,
            }
        };
        let snapshot = |namespaces| pb::StateStoreSnapshot { namespaces };
        let big = pb::StoreEntry {
            value: vec![0; limits::MAX_STORE_VALUE_BYTES + 1],
            ..entry("big", 1, 1)
        };
        let bad = [
            snapshot(vec![
                namespace("a", vec![entry("k", 1, 1)], vec![]),
                namespace("a", vec![entry("j", 1, 1)], vec![]),
            ]),
            snapshot(vec![namespace(
                "a",
                vec![entry("k", 1, 1), entry("k", 2, 2)],
                vec![],
            )]),
            snapshot(vec![namespace("a", vec![entry("k", 1, 2)], vec![])]),
            snapshot(vec![namespace("a", vec![entry("k", 0, 0)], vec![])]),
            snapshot(vec![namespace("a", vec![entry("", 1, 1)], vec![])]),
            snapshot(vec![namespace("a", vec![big], vec![])]),
            snapshot(vec![namespace("bad name", vec![entry("k", 1, 1)], vec![])]),
            snapshot(vec![namespace(
                "a",
                vec![],
                vec![lease("l", 1), lease("l", 2)],
            )]),
            snapshot(vec![namespace("a", vec![], vec![lease("l", 0)])]),
            snapshot(vec![namespace(
                "a",
                vec![],
                vec![pb::StoreLease {
                    expires_at: f64::INFINITY,
                    ..lease("l", 1)
                }],
            )]),
        ];
        for snapshot in bad {
            assert!(
                matches!(
                    StateStore::from_snapshot(snapshot.clone()),
                    Err(StoreError::Corrupt(_))
                ),
                "{snapshot:?}"
            );
        }
        // Too many bytes in one namespace, from entries each within the value limit.
        let value = vec![0u8; limits::MAX_STORE_VALUE_BYTES];
        let entries = (0..65)
            .map(|i| pb::StoreEntry {
                value: value.clone(),
                ..entry(&format!("k{i}"), 1, 1)
            })
            .collect();
        let over = StateStore::from_snapshot(snapshot(vec![namespace("a", entries, vec![])]));
        assert!(matches!(over, Err(StoreError::Corrupt(reason)) if reason.contains("bytes")));

        // An empty namespace is harmless and dropped.
        let empty =
            StateStore::from_snapshot(snapshot(vec![namespace("a", vec![], vec![])])).unwrap();
        assert_eq!(empty, StateStore::default());
    }

    #[test]
    fn a_batch_applies_every_op_at_its_index() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("replace", b"old"));
        ok(&mut store, 2, 1.0, &put("remove", b"gone"));
        ok(&mut store, 3, 1.0, &put("swap", b"v3"));
        ok(&mut store, 4, 1.0, &put("cas-delete", b"x"));
        let result = ok(
            &mut store,
            10,
            2.0,
            &batch(vec![
                batch_put("new", b"fresh"),
                batch_put("replace", b"newer"),
                batch_delete("remove"),
                batch_delete("never-was"),
                batch_cas("swap", 3, b"v10", false),
                batch_cas("created", 0, b"c", false),
                batch_cas("cas-delete", 4, b"", true),
            ]),
        );
        assert!(result.succeeded && !result.fenced && result.conflict_key.is_empty());
        let summary: Vec<_> = result
            .batch
            .iter()
            .map(|r| {
                let entry = r.entry.as_ref();
                (
                    entry.map(|e| (e.key.as_str(), e.version, e.create_version, e.value.len())),
                    r.existed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some(("new", 10, 10, 0)), false),
                (Some(("replace", 10, 1, 0)), false),
                (None, true),
                (None, false),
                (Some(("swap", 10, 3, 0)), false),
                (Some(("created", 10, 10, 0)), false),
                (None, true),
            ]
        );
        let contents: Vec<_> = store
            .namespace(NS)
            .unwrap()
            .entries()
            .map(|e| (e.key.as_str(), e.value.as_slice(), e.version))
            .collect();
        assert_eq!(
            contents,
            [
                ("created", &b"c"[..], 10),
                ("new", b"fresh", 10),
                ("replace", b"newer", 10),
                ("swap", b"v10", 10),
            ]
        );
        let ns = store.namespace(NS).unwrap();
        assert_eq!(
            ns.bytes(),
            ns.entries()
                .map(|e| e.key.len() + e.value.len())
                .sum::<usize>()
        );
        // A batch that deletes everything leaves no namespace behind.
        ok(
            &mut store,
            11,
            2.0,
            &batch(
                ["created", "new", "replace", "swap"]
                    .into_iter()
                    .map(batch_delete)
                    .collect(),
            ),
        );
        assert_eq!(store, StateStore::default());
    }

    #[test]
    fn a_batch_with_one_stale_compare_and_set_applies_nothing_and_names_the_key() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("a", b"1"));
        let b = ok(&mut store, 2, 1.0, &put("b", b"2")).entry.unwrap();
        let conflicts = [
            // The stale one comes after ops that would apply.
            (
                vec![
                    batch_put("c", b"3"),
                    batch_delete("a"),
                    batch_cas("b", 1, b"x", false),
                ],
                "b",
                Some(b.clone()),
            ),
            // "Must not exist", but it does.
            (
                vec![batch_cas("b", 0, b"x", false), batch_put("d", b"4")],
                "b",
                Some(b.clone()),
            ),
            // A compare-and-delete of a key that is gone.
            (
                vec![batch_put("e", b"5"), batch_cas("missing", 2, b"", true)],
                "missing",
                None,
            ),
            // The first conflict, in op order, is the one reported.
            (
                vec![batch_cas("a", 7, b"", false), batch_cas("b", 7, b"", false)],
                "a",
                store.get(NS, "a"),
            ),
        ];
        for (index, (ops, key, current)) in (3..).zip(conflicts) {
            let before = store.clone();
            let result = ok(&mut store, index, 1.0, &batch(ops));
            assert!(!result.succeeded && result.batch.is_empty() && !result.fenced);
            assert_eq!(result.conflict_key, key);
            assert_eq!(result.current, current);
            assert_eq!(store, before, "a conflicting batch changed the store");
        }
        // With the right versions the same kind of batch applies.
        let applied = ok(
            &mut store,
            10,
            1.0,
            &batch(vec![batch_put("c", b"3"), batch_cas("b", 2, b"x", false)]),
        );
        assert!(applied.succeeded);
        assert_eq!(store.get(NS, "b").unwrap().value, b"x");
    }

    #[test]
    fn malformed_batches_are_refused_and_name_the_field() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &put("k", b"v"));
        let too_many: Vec<_> = (0..=limits::MAX_STORE_BATCH_OPS)
            .map(|i| batch_put(&format!("k{i}"), b""))
            .collect();
        let value = vec![0u8; limits::MAX_STORE_VALUE_BYTES];
        let too_big: Vec<_> = (0..limits::MAX_STORE_BATCH_BYTES / value.len() + 1)
            .map(|i| batch_put(&format!("k{i}"), &value))
            .collect();
        let cases = [
            (vec![], "batch.ops:"),
            (too_many, "batch.ops:"),
            (too_big, "batch.ops (keys and values):"),
            (
                vec![batch_put("a", b""), w::BatchOp { op: None }],
                "batch.ops[1]:",
            ),
            (
                vec![batch_put("a", b""), batch_put("", b"")],
                "batch.ops[1].put.key:",
            ),
            (
                vec![batch_put("a", b""), batch_put("b", b""), batch_delete("a")],
                "batch.ops[2].delete.key:",
            ),
            (
                vec![batch_cas(
                    "a",
                    0,
                    &vec![0; limits::MAX_STORE_VALUE_BYTES + 1],
                    false,
                )],
                "batch.ops[0].compare_and_set.value:",
            ),
            (
                vec![batch_cas(
                    &"k".repeat(limits::MAX_STORE_KEY_LEN + 1),
                    0,
                    b"",
                    true,
                )],
                "batch.ops[0].compare_and_set.key:",
            ),
        ];
        for (i, (ops, field)) in cases.into_iter().enumerate() {
            let write = batch(ops);
            let error = StateStore::validate_write(&write).unwrap_err().to_string();
            assert!(error.starts_with(field), "{field}: {error}");
            let refusal = refused(&mut store, 10 + i as u64, 1.0, &write);
            assert!(refusal.starts_with(field), "{field}: {refusal}");
        }
        // Exactly at the limits is fine.
        let most: Vec<_> = (0..limits::MAX_STORE_BATCH_OPS)
            .map(|i| batch_put(&format!("k{i}"), b""))
            .collect();
        assert_eq!(
            ok(&mut store, 100, 1.0, &batch(most)).batch.len(),
            limits::MAX_STORE_BATCH_OPS
        );
        let biggest: Vec<_> = (0..limits::MAX_STORE_BATCH_BYTES / value.len())
            .map(|i| batch_put(&format!("{i}"), &value[..value.len() - 2]))
            .collect();
        ok(&mut store, 101, 1.0, &batch(biggest));
    }

    #[test]
    fn a_batch_needs_room_after_all_its_ops_or_applies_nothing() {
        let mut store = StateStore::default();
        let value = vec![7u8; limits::MAX_STORE_VALUE_BYTES];
        // Room for one more value, not two.
        let filled = limits::MAX_STORE_NAMESPACE_BYTES / (value.len() + 4) - 1;
        for i in 0..filled {
            ok(
                &mut store,
                i as u64 + 1,
                1.0,
                &put(&format!("{i:04}"), &value),
            );
        }
        let mut index = filled as u64 + 1;
        let error = refused(
            &mut store,
            index,
            1.0,
            &batch(vec![batch_put("a", &value), batch_put("b", &value)]),
        );
        assert!(
            error.contains("bytes") && error.contains("limit"),
            "{error}"
        );
        // Deleting in the same batch makes room, wherever the delete comes.
        ok(
            &mut store,
            index,
            1.0,
            &batch(vec![
                batch_put("a", &value),
                batch_put("b", &value),
                batch_delete("0000"),
            ]),
        );
        index += 1;

        let mut store = StateStore::default();
        for chunk in 0..limits::MAX_STORE_KEYS / limits::MAX_STORE_BATCH_OPS {
            let ops = (0..limits::MAX_STORE_BATCH_OPS)
                .map(|i| {
                    batch_put(
                        &format!("k{}", chunk * limits::MAX_STORE_BATCH_OPS + i),
                        b"",
                    )
                })
                .collect();
            ok(&mut store, index, 1.0, &batch(ops));
            index += 1;
        }
        assert_eq!(
            store.namespace(NS).unwrap().key_count(),
            limits::MAX_STORE_KEYS
        );
        let error = refused(
            &mut store,
            index,
            1.0,
            &batch(vec![batch_put("k0", b"update"), batch_put("new", b"")]),
        );
        assert!(error.contains("keys") && error.contains("limit"), "{error}");
        ok(
            &mut store,
            index,
            1.0,
            &batch(vec![
                batch_put("new", b""),
                batch_cas("k1", index - 1, b"", true),
            ]),
        );
        assert_eq!(
            store.namespace(NS).unwrap().key_count(),
            limits::MAX_STORE_KEYS
        );
    }

    #[test]
    fn a_batch_never_moves_a_version_back() {
        let mut store = StateStore::default();
        ok(&mut store, 5, 1.0, &put("k", b"v"));
        let error = refused(
            &mut store,
            5,
            1.0,
            &batch(vec![batch_put("other", b""), batch_put("k", b"w")]),
        );
        assert!(error.contains("not after"), "{error}");
    }

    #[test]
    fn fenced_writes_apply_only_while_the_holder_keeps_the_lease_at_that_epoch() {
        let mut store = StateStore::default();
        let lease = ok(&mut store, 10, 100.0, &acquire("leader", "a", 30.0))
            .lease
            .unwrap();
        assert_eq!(lease.epoch, 10);

        // While a holds it at epoch 10, a's fenced writes of every kind apply.
        let written = ok(
            &mut store,
            11,
            110.0,
            &fenced(put("k", b"1"), "leader", "a", 10),
        );
        assert!(written.succeeded && !written.fenced);
        let swapped = ok(
            &mut store,
            12,
            111.0,
            &fenced(cas("k", 11, b"2", false), "leader", "a", 10),
        );
        assert!(swapped.succeeded);
        let batched = ok(
            &mut store,
            13,
            112.0,
            &fenced(
                batch(vec![batch_put("j", b"3"), batch_delete("k")]),
                "leader",
                "a",
                10,
            ),
        );
        assert!(batched.succeeded && batched.batch.len() == 2);
        assert!(store.get(NS, "k").is_none());

        // Another holder, another epoch, an unknown lease: refused, and told who holds it.
        let held = fenced_out(
            &mut store,
            14,
            113.0,
            &fenced(put("k", b"x"), "leader", "b", 10),
        );
        assert_eq!(held, Some(lease.clone()));
        let stale = fenced_out(
            &mut store,
            15,
            113.0,
            &fenced(delete("j"), "leader", "a", 9),
        );
        assert_eq!(stale, Some(lease.clone()));
        assert_eq!(
            fenced_out(
                &mut store,
                16,
                113.0,
                &fenced(put("k", b"x"), "other", "a", 10)
            ),
            None
        );
        // Leases belong to a namespace: the same fence does not hold in another one.
        let elsewhere = pb::StateStoreWrite {
            namespace: "cron".into(),
            ..fenced(put("k", b"x"), "leader", "a", 10)
        };
        fenced_out(&mut store, 17, 113.0, &elsewhere);
        // The fence is checked before the compare-and-set: a fenced-out writer learns
        // that it lost the lease, not a version it could act on.
        let result = store.apply_write(
            18,
            113.0,
            &fenced(cas("j", 1, b"", true), "leader", "b", 10),
        );
        assert!(result.fenced && result.current.is_none());

        // Expiry is judged at the write's time, the leader's clock stamped into the entry.
        assert_eq!(
            fenced_out(
                &mut store,
                19,
                130.0,
                &fenced(put("k", b"late"), "leader", "a", 10)
            ),
            None,
            "the lease expired at 130"
        );
        ok(
            &mut store,
            20,
            129.9,
            &fenced(put("k", b"just in time"), "leader", "a", 10),
        );

        // Another instance takes over: the deposed holder's writes are refused, even
        // batches of plain puts, and the new holder's apply.
        let taken = ok(&mut store, 21, 131.0, &acquire("leader", "b", 30.0))
            .lease
            .unwrap();
        assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 11));
        let deposed = fenced_out(
            &mut store,
            22,
            132.0,
            &fenced(batch(vec![batch_put("k", b"deposed")]), "leader", "a", 10),
        );
        assert_eq!(deposed, Some(taken.clone()));
        ok(
            &mut store,
            23,
            132.0,
            &fenced(put("k", b"b was here"), "leader", "b", 11),
        );
        assert_eq!(store.get(NS, "k").unwrap().value, b"b was here");

        // Even the same holder coming back after a release holds a new epoch.
        ok(&mut store, 24, 133.0, &release("leader", "b"));
        let again = ok(&mut store, 25, 134.0, &acquire("leader", "b", 30.0))
            .lease
            .unwrap();
        assert_eq!(again.epoch, 25);
        fenced_out(
            &mut store,
            26,
            135.0,
            &fenced(put("k", b"old"), "leader", "b", 11),
        );
        ok(
            &mut store,
            27,
            135.0,
            &fenced(put("k", b"new"), "leader", "b", 25),
        );
    }

    #[test]
    fn malformed_fences_are_refused_and_name_the_field() {
        let mut store = StateStore::default();
        ok(&mut store, 1, 1.0, &acquire("leader", "a", 30.0));
        for (i, (fence, field)) in [
            (fenced(put("k", b""), "", "a", 1), "fence.lease:"),
            (fenced(put("k", b""), "leader", "", 1), "fence.holder:"),
            (
                fenced(put("k", b""), "leader", &"h".repeat(257), 1),
                "fence.holder:",
            ),
            (fenced(put("k", b""), "leader", "a", 0), "fence.epoch:"),
        ]
        .into_iter()
        .enumerate()
        {
            let error = refused(&mut store, 10 + i as u64, 1.0, &fence);
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }
}
