//! [`StateStore`]: the client for the masters' replicated key-value store, so a
//! framework keeps its state (and elects its own leader, see
//! [`LeaderElection`](crate::LeaderElection)) without a ZooKeeper of its own.
//!
//! The store lives in a namespace, usually the framework's name. Values carry a
//! `version` (the raft index of the write that produced them), which doubles as a
//! compare-and-set token. Every acknowledged write is committed by a majority of
//! masters; every read sees every write acknowledged before it.
//!
//! # Finding the leader
//! Only the leading master serves. The client tries the master that answered last,
//! then the configured masters in turn, and follows the `agora-leader` hint a
//! follower gives. Between full rounds of failures it backs off (tokio time, so tests
//! can pause it), until the configured deadline.
//!
//! # Batches
//! [`StateStore::batch`] applies up to `agora_core::limits::MAX_STORE_BATCH_OPS`
//! puts, deletes, compare-and-sets and compare-and-deletes, each on a different key,
//! in one round trip and one raft entry, all or nothing: if one compare-and-set finds
//! another version, nothing is written and [`BatchOutcome::Conflict`] names the key.
//! Every entry a batch writes gets the same version.
//!
//! # Fencing
//! A framework whose leader was deposed (its lease expired or passed to a standby)
//! may still have writes in flight. [`StateStore::fenced`] gives a client whose every
//! put, delete, compare-and-set and batch carries a [`Fence`]: the lease, holder and
//! epoch the writer believes it holds, typically
//! [`LeaderElection::fence`](crate::LeaderElection::fence). The master applies such a
//! write only if, at the moment it applies it, that lease is held by that holder at
//! that epoch; otherwise the write fails with [`StateStoreError::Fenced`] and changes
//! nothing. Lease acquisitions and releases are never fenced: holding the lease is
//! what they decide.
//!
//! # Retries and writes of unknown outcome
//! A write that fails after the master proposed it (the leader lost its leadership,
//! the connection dropped, no answer in time) may or may not have been applied.
//! Reads, `put`, `delete` and batches of only puts and deletes are retried anyway:
//! applying them twice leaves the same state. (So a retried fenced write can report
//! [`StateStoreError::Fenced`] although its first attempt applied, before the lease
//! was lost.) Compare-and-set, compare-and-delete, batches holding either, and lease
//! writes are not retried: they fail with [`StateStoreError::Ambiguous`], and the
//! caller re-reads to learn what happened.
//!
//! ```no_run
//! use agora_sdk::{CasOutcome, StateStore, StateStoreError};
//!
//! /// Adds one to the counter under `key`, however many instances race to do so.
//! async fn increment(store: &StateStore, key: &str) -> Result<u64, StateStoreError> {
//!     loop {
//!         let current = store.get(key).await?;
//!         let version = current.as_ref().map_or(0, |entry| entry.version);
//!         let count: u64 = current
//!             .and_then(|entry| String::from_utf8(entry.value).ok()?.parse().ok())
//!             .unwrap_or(0);
//!         match store.compare_and_set(key, version, (count + 1).to_string()).await {
//!             Ok(CasOutcome::Applied(_)) => return Ok(count + 1),
//!             // Someone else won the race: read again.
//!             Ok(CasOutcome::Conflict(_)) => continue,
//!             // Maybe applied: a real framework would tag the value to recognise its
//!             // own write; here, give up and let the caller decide.
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! # async fn example() -> Result<(), StateStoreError> {
//! let masters = vec!["10.0.0.1:5050".to_string(), "10.0.0.2:5050".to_string()];
//! let store = StateStore::connect(masters, "cron")?;
//! increment(&store, "runs/nightly").await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agora_core::limits::{self, MAX_MESSAGE_BYTES};
use agora_proto as pb;
use agora_proto::state_store_client::StateStoreClient;
use agora_proto::state_store_write::Op;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::config::master_uri;
use crate::error::DriverError;

/// gRPC metadata a master sets on a write's failure when the write may or may not
/// have been applied (value `unknown`).
pub const WRITE_OUTCOME_METADATA_KEY: &str = "agora-write-outcome";
/// How a master words the same fact; recognised too, so a master that reports it
/// without the metadata is still understood.
const OUTCOME_UNKNOWN_PHRASE: &str = "may or may not have been applied";

/// Why a state-store call failed. Every variant that stems from a master keeps the
/// master's own message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateStoreError {
    /// The configuration cannot work (no masters, a bad address or namespace, ...).
    #[error("invalid state store configuration: {0}")]
    Config(String),

    /// The master refused the request as malformed (a key too long, a ttl out of
    /// range, ...). Nothing was written.
    #[error("invalid state store request: {0}")]
    Invalid(String),

    /// The namespace is full (keys, bytes or leases). Nothing was written.
    #[error("state store limit reached: {0}")]
    LimitExceeded(String),

    /// The master refused the write because of the namespace's current contents.
    /// Nothing was written.
    #[error("the master refused the write: {0}")]
    Refused(String),

    /// The write may or may not have been applied (leadership changed before it
    /// committed, the connection dropped, no answer in time). It was not retried
    /// because applying it twice could differ from applying it once: read the key or
    /// lease to learn the outcome.
    #[error("the write to master {master} may or may not have been applied: {message}")]
    Ambiguous { master: String, message: String },

    /// No leading master answered before the deadline.
    #[error(
        "no leading master answered within {waited:?} ({attempts} attempts); last error: {last}"
    )]
    Unavailable {
        attempts: u32,
        waited: Duration,
        last: String,
    },

    /// The master answered with another gRPC error status.
    #[error("master answered {code:?}: {message}")]
    Rejected { code: tonic::Code, message: String },

    /// The master's answer breaks the protocol (a successful put without its entry,
    /// list pages out of order, ...).
    #[error("protocol violation by the master: {0}")]
    Protocol(String),

    /// A leader-election campaign task ended abnormally (it panicked).
    #[error("the leader-election campaign ended abnormally: {0}")]
    CampaignAborted(String),

    /// The write carried `fence`, and when the master applied it the lease was no
    /// longer held by that holder at that epoch: the writer has been deposed. Nothing
    /// was written. `current` is the lease now, `None` when nobody holds it.
    #[error("{}", fenced_message(.fence, .current.as_ref()))]
    Fenced {
        fence: Fence,
        current: Option<Lease>,
    },
}

fn fenced_message(fence: &Fence, current: Option<&Lease>) -> String {
    let now = match current {
        None => "nobody holds it now".to_string(),
        Some(lease) => format!("it is held by '{}' at epoch {}", lease.holder, lease.epoch),
    };
    format!(
        "the write was fenced out: lease '{}' is no longer held by '{}' at epoch {} ({now})",
        fence.lease, fence.holder, fence.epoch
    )
}

impl StateStoreError {
    /// Whether a write that failed so may nevertheless have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, StateStoreError::Ambiguous { .. })
    }

    /// Whether the write was refused because its fence no longer holds.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StateStoreError::Fenced { .. })
    }
}

/// A stored value and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The raft index of the write that produced this value; only grows. The token
    /// to pass to [`StateStore::compare_and_set`].
    pub version: u64,
    /// The raft index of the write that created the key (kept across updates,
    /// renewed after a delete).
    pub create_version: u64,
}

impl From<pb::StoreEntry> for Entry {
    fn from(entry: pb::StoreEntry) -> Self {
        Entry {
            key: entry.key,
            value: entry.value,
            version: entry.version,
            create_version: entry.create_version,
        }
    }
}

/// A held lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Seconds since the epoch, on the leading master's clock.
    pub expires_at: f64,
    /// Grows by one every time the lease changes hands: a fencing token.
    pub epoch: u64,
}

impl From<pb::StoreLease> for Lease {
    fn from(lease: pb::StoreLease) -> Self {
        Lease {
            name: lease.name,
            holder: lease.holder,
            expires_at: lease.expires_at,
            epoch: lease.epoch,
        }
    }
}

/// How a compare-and-set ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written; the new entry.
    Applied(Entry),
    /// The key's version was not the expected one; its current entry (`None`: the
    /// key does not exist). Nothing was written.
    Conflict(Option<Entry>),
}

/// How a compare-and-delete ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The key is gone.
    Deleted,
    /// The key's version was not the expected one; its current entry. Nothing was
    /// deleted.
    Conflict(Option<Entry>),
}

/// One operation of a [`StateStore::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Writes `value` under `key` whatever was there.
    Put { key: String, value: Vec<u8> },
    /// Deletes `key` if it exists.
    Delete { key: String },
    /// Writes `value` under `key` if its version is `expected_version` (0: the key
    /// must not exist); otherwise the whole batch is a conflict.
    CompareAndSet {
        key: String,
        expected_version: u64,
        value: Vec<u8>,
    },
    /// Deletes `key` if its version is `expected_version`; otherwise the whole batch
    /// is a conflict.
    CompareAndDelete { key: String, expected_version: u64 },
}

impl BatchOp {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        BatchOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        BatchOp::Delete { key: key.into() }
    }

    pub fn compare_and_set(
        key: impl Into<String>,
        expected_version: u64,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        BatchOp::CompareAndSet {
            key: key.into(),
            expected_version,
            value: value.into(),
        }
    }

    pub fn compare_and_delete(key: impl Into<String>, expected_version: u64) -> Self {
        BatchOp::CompareAndDelete {
            key: key.into(),
            expected_version,
        }
    }

    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Put { key, .. }
            | BatchOp::Delete { key }
            | BatchOp::CompareAndSet { key, .. }
            | BatchOp::CompareAndDelete { key, .. } => key,
        }
    }

    /// Whether applying the op depends on the key's version, so that applying it
    /// twice could differ from applying it once.
    fn is_conditional(&self) -> bool {
        matches!(
            self,
            BatchOp::CompareAndSet { .. } | BatchOp::CompareAndDelete { .. }
        )
    }

    /// Bytes of key and value, as the batch limit counts them.
    fn size(&self) -> usize {
        match self {
            BatchOp::Put { key, value } | BatchOp::CompareAndSet { key, value, .. } => {
                key.len() + value.len()
            }
            BatchOp::Delete { key } | BatchOp::CompareAndDelete { key, .. } => key.len(),
        }
    }

    fn into_proto(self) -> pb::state_store_write::BatchOp {
        use pb::state_store_write::{CompareAndSet, Delete, Put, batch_op};
        let op = match self {
            BatchOp::Put { key, value } => batch_op::Op::Put(Put { key, value }),
            BatchOp::Delete { key } => batch_op::Op::Delete(Delete { key }),
            BatchOp::CompareAndSet {
                key,
                expected_version,
                value,
            } => batch_op::Op::CompareAndSet(CompareAndSet {
                key,
                expected_version,
                value,
                delete: false,
            }),
            BatchOp::CompareAndDelete {
                key,
                expected_version,
            } => batch_op::Op::CompareAndSet(CompareAndSet {
                key,
                expected_version,
                value: Vec::new(),
                delete: true,
            }),
        };
        pb::state_store_write::BatchOp { op: Some(op) }
    }
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every op was applied, at one version. One item per op, in the batch's order:
    /// the new entry of a put or compare-and-set, `None` for a delete.
    Applied(Vec<Option<Entry>>),
    /// The compare-and-set (or compare-and-delete) of `key` expected another version;
    /// `current` is the key's entry (`None`: it does not exist). Nothing was applied.
    /// When several conflict, this is the first in the batch's order.
    Conflict { key: String, current: Option<Entry> },
}

/// The lease a fenced write must find held: by `holder`, at `epoch`, unexpired.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The lease's name, in the store's namespace.
    pub lease: String,
    pub holder: String,
    /// The lease's epoch when `holder` was granted it (see [`Lease::epoch`]); at
    /// least 1.
    pub epoch: u64,
}

impl Fence {
    pub fn new(lease: impl Into<String>, holder: impl Into<String>, epoch: u64) -> Self {
        Fence {
            lease: lease.into(),
            holder: holder.into(),
            epoch,
        }
    }
}

impl From<&Lease> for Fence {
    /// The fence of a lease as granted: its holder at its epoch.
    fn from(lease: &Lease) -> Self {
        Fence::new(lease.name.clone(), lease.holder.clone(), lease.epoch)
    }
}

impl From<Fence> for pb::state_store_write::Fence {
    fn from(fence: Fence) -> Self {
        pb::state_store_write::Fence {
            lease: fence.lease,
            holder: fence.holder,
            epoch: fence.epoch,
        }
    }
}

/// How a lease acquisition (or renewal) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// The holder holds the lease until `expires_at`.
    Granted(Lease),
    /// Someone else holds it; their lease.
    HeldByOther(Lease),
}

/// Where the store is and how patiently to reach it.
#[derive(Debug, Clone)]
pub struct StateStoreConfig {
    /// Masters to try, as `host:port` (an `http://` prefix is accepted). Not empty.
    pub masters: Vec<String>,
    /// The namespace every call works in: 1 to 128 bytes of `[A-Za-z0-9._/-]`
    /// (`agora_core::limits::store_namespace`).
    pub namespace: String,
    /// How long opening a connection to a master may take.
    pub connect_timeout: Duration,
    /// How long one attempt (one master) may take to answer.
    pub request_timeout: Duration,
    /// How long one call may take in all, retries and failovers included.
    pub deadline: Duration,
    /// First pause after every master failed once; doubled up to `backoff_max`.
    /// Not zero, and not above `backoff_max`.
    pub backoff_min: Duration,
    /// Longest pause between rounds.
    pub backoff_max: Duration,
}

impl StateStoreConfig {
    /// Defaults that ride out a master failover: 2 s to connect, 10 s per attempt,
    /// 30 s per call, pauses from 50 ms to 1 s.
    pub fn new(masters: Vec<String>, namespace: impl Into<String>) -> Self {
        StateStoreConfig {
            masters,
            namespace: namespace.into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), StateStoreError> {
        if self.masters.is_empty() {
            return Err(StateStoreError::Config("no master addresses given".into()));
        }
        for master in &self.masters {
            master_uri(master).map_err(config_error)?;
        }
        limits::store_namespace("namespace", &self.namespace)
            .map_err(|e| StateStoreError::Config(e.to_string()))?;
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(StateStoreError::Config(format!(
                "backoff_min ({:?}) must be above zero and at most backoff_max ({:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        if self.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.deadline.is_zero()
        {
            return Err(StateStoreError::Config(
                "connect_timeout, request_timeout and deadline must be above zero".into(),
            ));
        }
        Ok(())
    }
}

fn config_error(error: DriverError) -> StateStoreError {
    match error {
        DriverError::Config(message) => StateStoreError::Config(message),
        other => StateStoreError::Config(other.to_string()),
    }
}

/// A client for one namespace of the state store. Cheap to clone; clones share
/// connections and the knowledge of who leads.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
    /// Carried by every put, delete, compare-and-set and batch of this client (see
    /// [`StateStore::fenced`]).
    fence: Option<Fence>,
}

struct Inner {
    /// Validated by the constructors.
    config: StateStoreConfig,
    /// Connections by master address (as configured or as hinted). Bounded: hinted
    /// addresses beyond `config.masters.len() + MAX_EXTRA_CHANNELS` are forgotten.
    channels: Mutex<HashMap<String, Channel>>,
    /// The master that answered last, tried first by the next call.
    leader: Mutex<Option<String>>,
}

/// Connections kept to addresses outside the configured list (leader hints).
const MAX_EXTRA_CHANNELS: usize = 8;

/// Whether a failed call may be sent again although it may already have applied.
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Reads, and writes whose second application changes nothing.
    Always,
    /// Writes whose second application could differ from the first.
    OnlyIfNotApplied,
}

/// What one failed attempt tells about the next.
enum Failure {
    /// A follower named the leader; nothing was applied.
    Redirect(String),
    /// Nothing was applied; another master (or a later try) may succeed.
    NotApplied(String),
    /// The request may have been applied.
    OutcomeUnknown(String),
    /// Retrying cannot help.
    Final(StateStoreError),
}

impl StateStore {
    /// A client for `namespace` with [`StateStoreConfig::new`]'s defaults. Nothing is
    /// dialed until the first call.
    pub fn connect(
        masters: Vec<String>,
        namespace: impl Into<String>,
    ) -> Result<Self, StateStoreError> {
        Self::with_config(StateStoreConfig::new(masters, namespace))
    }

    /// A client with a configuration of your own. Nothing is dialed until the first
    /// call.
    pub fn with_config(config: StateStoreConfig) -> Result<Self, StateStoreError> {
        Self::with_channels(config, Vec::new())
    }

    /// A client that reaches the given masters through channels you built (TLS,
    /// custom connectors, in-memory transports in tests). Each address should be
    /// one of `config.masters`; other masters, and leaders named in hints, are dialed
    /// as usual.
    pub fn with_channels(
        config: StateStoreConfig,
        channels: Vec<(String, Channel)>,
    ) -> Result<Self, StateStoreError> {
        config.validate()?;
        Ok(StateStore {
            inner: Arc::new(Inner {
                config,
                channels: Mutex::new(channels.into_iter().collect()),
                leader: Mutex::new(None),
            }),
            fence: None,
        })
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.inner.config.namespace
    }

    /// A client (sharing this one's connections) whose every put, delete,
    /// compare-and-set and batch carries `fence`, in place of any fence this one
    /// has: such a write applies only while `fence.holder` holds lease `fence.lease`
    /// of this namespace at `fence.epoch`, and otherwise fails with
    /// [`StateStoreError::Fenced`]. Reads and lease writes are not fenced.
    pub fn fenced(&self, fence: Fence) -> StateStore {
        StateStore {
            inner: Arc::clone(&self.inner),
            fence: Some(fence),
        }
    }

    /// The fence this client's writes carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The entry under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StateStoreError> {
        let request = pb::StoreGetRequest {
            namespace: self.namespace().to_string(),
            key: key.to_string(),
        };
        let response = self
            .call(Retry::Always, |mut client| {
                let request = request.clone();
                async move { client.get(request).await }
            })
            .await?;
        Ok(response.entry.map(Entry::from))
    }

    /// Writes `value` under `key` whatever was there; the new entry.
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<Entry, StateStoreError> {
        let op = Op::Put(pb::state_store_write::Put {
            key: key.to_string(),
            value: value.into(),
        });
        let result = self.write(Retry::Always, op).await?;
        result
            .entry
            .map(Entry::from)
            .ok_or_else(|| StateStoreError::Protocol("a put's result carries no entry".into()))
    }

    /// Deletes `key`; whether it existed. After a retried attempt this reports what
    /// the retry found, so `false` can also mean "deleted by the first attempt".
    pub async fn delete(&self, key: &str) -> Result<bool, StateStoreError> {
        let op = Op::Delete(pb::state_store_write::Delete {
            key: key.to_string(),
        });
        Ok(self.write(Retry::Always, op).await?.existed)
    }

    /// Writes `value` under `key` only if its current version is `expected_version`
    /// (0: only if the key does not exist).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome, StateStoreError> {
        let result = self
            .compare_and_write(key, expected_version, value.into(), false)
            .await?;
        if !result.succeeded {
            return Ok(CasOutcome::Conflict(result.current.map(Entry::from)));
        }
        result
            .entry
            .map(Entry::from)
            .map(CasOutcome::Applied)
            .ok_or_else(|| {
                StateStoreError::Protocol("a successful compare-and-set carries no entry".into())
            })
    }

    /// Deletes `key` only if its current version is `expected_version`.
    pub async fn compare_and_delete(
        &self,
        key: &str,
        expected_version: u64,
    ) -> Result<DeleteOutcome, StateStoreError> {
        let result = self
            .compare_and_write(key, expected_version, Vec::new(), true)
            .await?;
        Ok(if result.succeeded {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::Conflict(result.current.map(Entry::from))
        })
    }

    async fn compare_and_write(
        &self,
        key: &str,
        expected_version: u64,
        value: Vec<u8>,
        delete: bool,
    ) -> Result<pb::StateStoreWriteResult, StateStoreError> {
        let op = Op::CompareAndSet(pb::state_store_write::CompareAndSet {
            key: key.to_string(),
            expected_version,
            value,
            delete,
        });
        self.write(Retry::OnlyIfNotApplied, op).await
    }

    /// Applies `ops` all or nothing, in one write: either every op applies (at one
    /// version) or, if a compare-and-set or compare-and-delete expects another
    /// version than its key has, none does and the outcome names that key. Each op
    /// must name a different key; at most `agora_core::limits::MAX_STORE_BATCH_OPS`
    /// ops and `MAX_STORE_BATCH_BYTES` of keys and values (else
    /// [`StateStoreError::Invalid`], naming the field). A namespace without room for
    /// the batch refuses all of it ([`StateStoreError::LimitExceeded`]).
    ///
    /// A batch of only puts and deletes is retried after a failure of unknown
    /// outcome; one holding a compare-and-set or compare-and-delete is not
    /// ([`StateStoreError::Ambiguous`]).
    pub async fn batch(
        &self,
        ops: impl IntoIterator<Item = BatchOp>,
    ) -> Result<BatchOutcome, StateStoreError> {
        let ops: Vec<BatchOp> = ops.into_iter().collect();
        // The master checks everything; these two keep an oversized batch from
        // failing in the transport instead, with a less helpful error.
        limits::count("batch.ops", ops.len(), limits::MAX_STORE_BATCH_OPS)
            .map_err(|e| StateStoreError::Invalid(e.to_string()))?;
        let bytes = ops.iter().map(BatchOp::size).fold(0, usize::saturating_add);
        limits::bytes(
            "batch.ops (keys and values)",
            bytes,
            limits::MAX_STORE_BATCH_BYTES,
        )
        .map_err(|e| StateStoreError::Invalid(e.to_string()))?;
        let retry = if ops.iter().any(BatchOp::is_conditional) {
            Retry::OnlyIfNotApplied
        } else {
            Retry::Always
        };
        let count = ops.len();
        let op = Op::Batch(pb::state_store_write::Batch {
            ops: ops.into_iter().map(BatchOp::into_proto).collect(),
        });
        let mut write = self.new_write(op);
        let result = self.send_write(retry, &write).await?;
        if !result.succeeded {
            if result.conflict_key.is_empty() {
                return Err(StateStoreError::Protocol(
                    "a batch that did not apply names no conflicting key".into(),
                ));
            }
            return Ok(BatchOutcome::Conflict {
                key: result.conflict_key,
                current: result.current.map(Entry::from),
            });
        }
        if result.batch.len() != count {
            return Err(StateStoreError::Protocol(format!(
                "a batch of {count} ops came back with {} results",
                result.batch.len()
            )));
        }
        // The master does not send the values back: they are the ops' own, taken
        // back from the request rather than copied.
        let Some(Op::Batch(sent)) = write.op.as_mut() else {
            return Err(StateStoreError::Protocol(
                "the batch request lost its ops".into(),
            ));
        };
        sent.ops
            .iter_mut()
            .zip(result.batch)
            .map(|(op, applied)| written_entry(op, applied))
            .collect::<Result<Vec<_>, _>>()
            .map(BatchOutcome::Applied)
    }

    /// Applies many unconditional puts and deletes, more than one batch may hold:
    /// each key once (the last op of a key wins, as if they applied one after the
    /// other), in atomic batches within the batch limits, all sent at once. The
    /// whole is not atomic: after an error some batches may have applied; every op
    /// is idempotent, so writing them all again is safe. A compare-and-set or
    /// compare-and-delete is refused ([`StateStoreError::Invalid`]): use
    /// [`StateStore::batch`].
    pub async fn write_all(
        &self,
        ops: impl IntoIterator<Item = BatchOp>,
    ) -> Result<(), StateStoreError> {
        let mut last: std::collections::BTreeMap<String, BatchOp> = Default::default();
        for op in ops {
            if op.is_conditional() {
                return Err(StateStoreError::Invalid(format!(
                    "write_all takes puts and deletes only; {} is conditional",
                    op.key()
                )));
            }
            last.insert(op.key().to_string(), op);
        }
        let mut batches: Vec<Vec<BatchOp>> = Vec::new();
        let mut bytes = 0;
        for op in last.into_values() {
            let size = op.size();
            let full = batches.last().is_none_or(|batch| {
                batch.len() == limits::MAX_STORE_BATCH_OPS
                    || bytes + size > limits::MAX_STORE_BATCH_BYTES
            });
            if full {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(batch) = batches.last_mut() {
                batch.push(op);
            }
        }
        let mut calls = tokio::task::JoinSet::new();
        for batch in batches {
            let store = self.clone();
            calls.spawn(async move { store.batch(batch).await });
        }
        let mut result = Ok(());
        while let Some(done) = calls.join_next().await {
            let outcome = match done {
                Ok(Ok(BatchOutcome::Applied(_))) => Ok(()),
                Ok(Ok(BatchOutcome::Conflict { key, .. })) => Err(StateStoreError::Protocol(
                    format!("a batch of unconditional writes conflicted on {key}"),
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(StateStoreError::Protocol(format!(
                    "a state-store write task failed: {e}"
                ))),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    /// Every entry whose key starts with `prefix`, in key order. Large results are
    /// fetched page by page; each page is consistent, the whole list need not be (a
    /// write between two pages shows in the later one only).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StateStoreError> {
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            let start_after = entries.last().map(|e| e.key.clone()).unwrap_or_default();
            let request = pb::StoreListRequest {
                namespace: self.namespace().to_string(),
                prefix: prefix.to_string(),
                start_after: start_after.clone(),
                // The master also stops a page early rather than outgrow a message.
                limit: u32::try_from(limits::MAX_STORE_LIST).unwrap_or(u32::MAX),
                keys_only: false,
            };
            let page = self
                .call(Retry::Always, |mut client| {
                    let request = request.clone();
                    async move { client.list(request).await }
                })
                .await?;
            let mut previous = start_after;
            for entry in &page.entries {
                let in_order = previous.is_empty() || entry.key > previous;
                if !in_order || !entry.key.starts_with(prefix) {
                    return Err(StateStoreError::Protocol(format!(
                        "list page entry '{}' is out of order or outside prefix '{prefix}'",
                        entry.key
                    )));
                }
                previous.clone_from(&entry.key);
            }
            if page.more && page.entries.is_empty() {
                return Err(StateStoreError::Protocol(
                    "an empty list page claims more entries follow".into(),
                ));
            }
            entries.extend(page.entries.into_iter().map(Entry::from));
            if !page.more {
                return Ok(entries);
            }
        }
    }

    /// Grants `name` to `holder` for `ttl` if it is free, expired or already held by
    /// `holder` (a renewal); otherwise reports who holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StateStoreError> {
        let op = Op::AcquireLease(pb::state_store_write::AcquireLease {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl_seconds: ttl.as_secs_f64(),
        });
        let result = self.write(Retry::OnlyIfNotApplied, op).await?;
        let lease = result.lease.map(Lease::from).ok_or_else(|| {
            StateStoreError::Protocol("a lease acquisition's result carries no lease".into())
        })?;
        Ok(if result.succeeded {
            LeaseOutcome::Granted(lease)
        } else {
            LeaseOutcome::HeldByOther(lease)
        })
    }

    /// Gives up `name` if `holder` holds it; whether it did.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, StateStoreError> {
        let op = Op::ReleaseLease(pb::state_store_write::ReleaseLease {
            name: name.to_string(),
            holder: holder.to_string(),
        });
        Ok(self.write(Retry::OnlyIfNotApplied, op).await?.succeeded)
    }

    /// The lease `name` if someone holds it now.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, StateStoreError> {
        let request = pb::StoreGetLeaseRequest {
            namespace: self.namespace().to_string(),
            name: name.to_string(),
        };
        let response = self
            .call(Retry::Always, |mut client| {
                let request = request.clone();
                async move { client.get_lease(request).await }
            })
            .await?;
        Ok(response.lease.map(Lease::from))
    }

    async fn write(
        &self,
        retry: Retry,
        op: Op,
    ) -> Result<pb::StateStoreWriteResult, StateStoreError> {
        let write = self.new_write(op);
        self.send_write(retry, &write).await
    }

    /// A write of `op` in this namespace, with this client's fence unless `op` is a
    /// lease write.
    fn new_write(&self, op: Op) -> pb::StateStoreWrite {
        let fence = match op {
            Op::AcquireLease(_) | Op::ReleaseLease(_) => None,
            _ => self.fence.clone().map(pb::state_store_write::Fence::from),
        };
        pb::StateStoreWrite {
            namespace: self.namespace().to_string(),
            op: Some(op),
            fence,
        }
    }

    async fn send_write(
        &self,
        retry: Retry,
        write: &pb::StateStoreWrite,
    ) -> Result<pb::StateStoreWriteResult, StateStoreError> {
        let result = self
            .call(retry, |mut client| {
                let write = write.clone();
                async move { client.write(write).await }
            })
            .await?;
        // A master reports refusals as statuses; a result that carries one anyway
        // still must not read as success.
        if !result.error.is_empty() {
            return Err(StateStoreError::Refused(result.error));
        }
        if result.fenced {
            let Some(fence) = write.fence.clone() else {
                return Err(StateStoreError::Protocol(
                    "an unfenced write came back fenced out".into(),
                ));
            };
            return Err(StateStoreError::Fenced {
                fence: Fence::new(fence.lease, fence.holder, fence.epoch),
                current: result.lease.map(Lease::from),
            });
        }
        Ok(result)
    }

    /// Sends one request to the leader, finding it and retrying as `retry` allows,
    /// until the configured deadline.
    async fn call<T, F, Fut>(&self, retry: Retry, mut attempt: F) -> Result<T, StateStoreError>
    where
        F: FnMut(StateStoreClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let config = &self.inner.config;
        let masters = &config.masters;
        let started = Instant::now();
        let deadline = started + config.deadline;
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        let mut preferred = lock(&self.inner.leader).clone();
        let mut next_master = 0;
        // Failures since the last pause: pause only once every master had its turn.
        let mut failures_in_round = 0;
        // Redirects followed since the last pause; bounded so that masters pointing
        // at each other cannot spin the client.
        let mut redirects = 0;
        let redirect_limit = masters.len() + 2;
        let mut attempts = 0;
        let mut last_error = String::new();
        loop {
            let target = match preferred.take() {
                Some(target) => target,
                None => {
                    let target = masters.get(next_master % masters.len().max(1)).cloned();
                    next_master += 1;
                    target.ok_or_else(|| StateStoreError::Config("no masters".into()))?
                }
            };
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if attempts > 0 && remaining.is_zero() {
                return Err(StateStoreError::Unavailable {
                    attempts,
                    waited: now - started,
                    last: last_error,
                });
            }
            attempts += 1;
            let per_attempt = config.request_timeout.min(remaining);
            let failure = match self.client(&target) {
                Err(e) => Failure::NotApplied(e.to_string()),
                Ok(client) => match tokio::time::timeout(per_attempt, attempt(client)).await {
                    Ok(Ok(response)) => {
                        *lock(&self.inner.leader) = Some(target);
                        return Ok(response.into_inner());
                    }
                    Ok(Err(status)) => classify(&status),
                    Err(_) => Failure::OutcomeUnknown(format!("no answer within {per_attempt:?}")),
                },
            };
            let last = match failure {
                Failure::Final(error) => return Err(error),
                Failure::Redirect(leader) if redirects < redirect_limit => {
                    redirects += 1;
                    last_error = format!("{target}: not the leader, redirected to {leader}");
                    preferred = Some(leader);
                    continue;
                }
                Failure::OutcomeUnknown(message) if retry == Retry::OnlyIfNotApplied => {
                    self.forget_leader(&target);
                    return Err(StateStoreError::Ambiguous {
                        master: target,
                        message,
                    });
                }
                Failure::Redirect(leader) => format!("redirected once too often, to {leader}"),
                Failure::NotApplied(message) | Failure::OutcomeUnknown(message) => message,
            };
            self.forget_leader(&target);
            last_error = format!("{target}: {last}");
            failures_in_round += 1;
            if failures_in_round >= masters.len() {
                failures_in_round = 0;
                redirects = 0;
                let pause = backoff.next_delay();
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            }
        }
    }

    /// A client on the connection to `address`, made on first use.
    fn client(&self, address: &str) -> Result<StateStoreClient<Channel>, StateStoreError> {
        let config = &self.inner.config;
        let mut channels = lock(&self.inner.channels);
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let uri = master_uri(address).map_err(config_error)?;
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|e| StateStoreError::Config(format!("master '{address}': {e}")))?
                    .connect_timeout(config.connect_timeout);
                let channel = endpoint.connect_lazy();
                if channels.len() >= config.masters.len() + MAX_EXTRA_CHANNELS {
                    channels.retain(|known, _| config.masters.contains(known));
                }
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(StateStoreClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn forget_leader(&self, address: &str) {
        let mut leader = lock(&self.inner.leader);
        if leader.as_deref() == Some(address) {
            *leader = None;
        }
    }
}

/// The entry an applied batch op wrote (`None` for a delete), its value moved out of
/// the sent op.
fn written_entry(
    op: &mut pb::state_store_write::BatchOp,
    applied: pb::state_store_write_result::BatchOpResult,
) -> Result<Option<Entry>, StateStoreError> {
    use pb::state_store_write::batch_op::Op as Sent;
    let (key, value) = match op.op.as_mut() {
        Some(Sent::Put(put)) => (&put.key, &mut put.value),
        Some(Sent::CompareAndSet(cas)) if !cas.delete => (&cas.key, &mut cas.value),
        Some(Sent::Delete(_) | Sent::CompareAndSet(_)) | None => return Ok(None),
    };
    match applied.entry {
        Some(entry) if entry.key == *key => Ok(Some(Entry {
            value: std::mem::take(value),
            ..Entry::from(entry)
        })),
        _ => Err(StateStoreError::Protocol(format!(
            "the batch result for key '{key}' carries no entry of that key"
        ))),
    }
}

/// A poisoned lock only means another call panicked mid-update of a cache; the cache
/// is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a failed attempt's status says about retrying.
fn classify(status: &tonic::Status) -> Failure {
    use std::error::Error as _;
    let message = status.message().to_string();
    // Statuses made on this side (not sent by a master) carry their transport error
    // as a source. A failure to connect means the request never left.
    if let Some(source) = status.source() {
        let message = error_chain(source);
        return if caused_by_connect_error(source) {
            Failure::NotApplied(message)
        } else {
            Failure::OutcomeUnknown(message)
        };
    }
    if outcome_unknown(status) {
        return Failure::OutcomeUnknown(message);
    }
    match status.code() {
        tonic::Code::Unavailable => match DriverError::from_status(status).leader_hint() {
            Some(leader) => Failure::Redirect(leader.to_string()),
            None => Failure::NotApplied(message),
        },
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
            Failure::OutcomeUnknown(message)
        }
        tonic::Code::InvalidArgument => Failure::Final(StateStoreError::Invalid(message)),
        tonic::Code::ResourceExhausted => Failure::Final(StateStoreError::LimitExceeded(message)),
        tonic::Code::FailedPrecondition => Failure::Final(StateStoreError::Refused(message)),
        code => Failure::Final(StateStoreError::Rejected { code, message }),
    }
}

/// Whether the master said the write may or may not have been applied.
fn outcome_unknown(status: &tonic::Status) -> bool {
    status.metadata().get(WRITE_OUTCOME_METADATA_KEY).is_some()
        || status.message().contains(OUTCOME_UNKNOWN_PHRASE)
}

/// An error and its causes on one line: a transport error alone says only
/// "transport error" or "tcp connect error".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let cause_text = error.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        cause = error.source();
    }
    text
}

fn caused_by_connect_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_they_say_about_the_write() {
        let mut redirect = tonic::Status::unavailable("this master is not the leader");
        redirect
            .metadata_mut()
            .insert(crate::LEADER_METADATA_KEY, "10.0.0.2:5050".parse().unwrap());
        assert!(matches!(classify(&redirect), Failure::Redirect(l) if l == "10.0.0.2:5050"));

        let electing = tonic::Status::unavailable("this master is not the leader");
        assert!(matches!(classify(&electing), Failure::NotApplied(_)));

        let lost = tonic::Status::unavailable(
            "leadership changed before the write committed; it may or may not have been applied",
        );
        assert!(matches!(classify(&lost), Failure::OutcomeUnknown(_)));

        let mut marked = tonic::Status::unavailable("the replica stopped: disk failed");
        marked
            .metadata_mut()
            .insert(WRITE_OUTCOME_METADATA_KEY, "unknown".parse().unwrap());
        assert!(matches!(classify(&marked), Failure::OutcomeUnknown(_)));

        let timed_out = tonic::Status::deadline_exceeded("slow");
        assert!(matches!(classify(&timed_out), Failure::OutcomeUnknown(_)));

        let full = tonic::Status::resource_exhausted("namespace is over its limit");
        assert!(matches!(
            classify(&full),
            Failure::Final(StateStoreError::LimitExceeded(m)) if m == "namespace is over its limit"
        ));
        assert!(matches!(
            classify(&tonic::Status::invalid_argument("key too long")),
            Failure::Final(StateStoreError::Invalid(_))
        ));
        assert!(matches!(
            classify(&tonic::Status::permission_denied("no")),
            Failure::Final(StateStoreError::Rejected {
                code: tonic::Code::PermissionDenied,
                ..
            })
        ));
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let config = |masters: &[&str], namespace: &str| {
            StateStoreConfig::new(masters.iter().map(|m| m.to_string()).collect(), namespace)
        };
        assert!(config(&["127.0.0.1:5050"], "apps").validate().is_ok());
        assert!(
            config(&["127.0.0.1:5050"], "team/apps-v1.2_x")
                .validate()
                .is_ok()
        );
        for (masters, namespace) in [
            (&[][..], "apps"),
            (&["not a host:port"][..], "apps"),
            (&["127.0.0.1:5050"][..], ""),
            (&["127.0.0.1:5050"][..], "has space"),
            (&["127.0.0.1:5050"][..], &"n".repeat(129)),
        ] {
            assert!(
                matches!(
                    config(masters, namespace).validate(),
                    Err(StateStoreError::Config(_))
                ),
                "{masters:?} {namespace:?} accepted"
            );
        }
        let mut c = config(&["127.0.0.1:5050"], "apps");
        c.backoff_min = Duration::ZERO;
        assert!(matches!(c.validate(), Err(StateStoreError::Config(_))));
        let mut c = config(&["127.0.0.1:5050"], "apps");
        c.deadline = Duration::ZERO;
        assert!(matches!(c.validate(), Err(StateStoreError::Config(_))));
    }
}
