//! The status-update manager: reliable, ordered delivery of task status updates to the
//! master, as Mesos' `TaskStatusUpdateManager` does it.
//!
//! Each task has one stream. An update is checkpointed to the task's log (when the
//! task has one) before anything else happens to it, then queued: the manager does
//! no I/O itself but hands out each record as a [`LogWrite`]
//! ([`StatusUpdateManager::take_writes`]), and its caller makes the records durable
//! before it acts on anything the manager returned (sends, acknowledges). Only the head of a
//! stream is in flight: it is sent when it becomes the head, resent when the agent
//! (re)connects, and retried while connected after `retry_min`, doubling up to
//! `retry_max`, until the master forwards the framework's acknowledgement of its uuid.
//! The ack pops the head and sends the next. Duplicates (a uuid seen before) and acks
//! that do not match the head are ignored. Once the terminal update is acknowledged
//! the stream is finished and forgotten.
//!
//! The manager owns no timer: the agent's actor asks [`StatusUpdateManager::next_retry`]
//! when to wake up and calls [`StatusUpdateManager::due`] then, so the logic is
//! testable with paused tokio time and needs no task of its own.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto as pb;
use prost::Message;
use tokio::time::Instant;

use crate::checkpoint::{MAX_RECORD_BYTES, RecordLog};
use crate::meta::UpdateRecord;

/// Identifies one task's stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub framework_id: String,
    pub task_id: String,
}

impl StreamKey {
    pub fn new(framework_id: impl Into<String>, task_id: impl Into<String>) -> Self {
        Self {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
        }
    }
}

/// Why an update was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum StatusUpdateError {
    #[error("a status update needs a framework id, a status and a task id")]
    Incomplete,
    #[error("a status update needs a uuid, which the framework acknowledges")]
    MissingUuid,
    #[error("task {task_id} already reached a terminal state; later updates are refused")]
    Terminated { task_id: String },
    #[error(
        "task {task_id} has {MAX_PENDING_PER_STREAM} updates awaiting acknowledgement; \
         later ones are refused until the framework acknowledges"
    )]
    Backlogged { task_id: String },
    #[error("cannot checkpoint the status update of task {task_id}: {source}")]
    Checkpoint {
        task_id: String,
        source: std::io::Error,
    },
}

/// Updates one task may have waiting for acknowledgement: an executor that reports
/// faster than its framework acknowledges is refused (and retries) rather than
/// growing the agent's memory and disk without bound.
pub const MAX_PENDING_PER_STREAM: usize = 1000;

/// What became of an update handed to [`StatusUpdateManager::update`].
#[derive(Debug, PartialEq)]
pub enum Accepted {
    /// Its uuid was seen before; nothing changed.
    Duplicate,
    /// Checkpointed and queued behind the update in flight.
    Queued,
    /// Checkpointed and now the head: send it to the master.
    Forward(Box<pb::StatusUpdate>),
}

/// What became of an acknowledgement.
#[derive(Debug, PartialEq)]
pub enum Acknowledged {
    /// No stream for the task, or the uuid is not the head's: ignored.
    Ignored,
    /// The head was popped; `next` is the new head to send, if any (and if connected).
    Next { next: Option<Box<pb::StatusUpdate>> },
    /// The terminal update was acknowledged: the stream is finished and forgotten.
    Finished,
}

/// A stream read back from its log after an agent restart.
#[derive(Debug)]
pub struct Recovered {
    /// The terminal update was already acknowledged: nothing is left to deliver.
    pub finished: bool,
    /// The newest status the log holds (delivered or not).
    pub latest: Option<pb::TaskStatus>,
    /// Updates still waiting for an acknowledgement.
    pub pending: usize,
    /// The log ended in a torn or corrupt frame that was cut off.
    pub torn_tail: bool,
}

/// A record for a stream's log, to be made durable by the caller.
#[derive(Debug, PartialEq)]
pub struct LogWrite {
    /// The log (`task.updates`).
    pub path: PathBuf,
    /// An encoded [`UpdateRecord`], at most [`MAX_RECORD_BYTES`].
    pub record: Vec<u8>,
    /// The log's first record: the file is created (replacing any old one).
    pub create: bool,
}

/// When the head of a stream is due again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    /// The wait that led to `at`; the next one is twice as long, up to `retry_max`.
    backoff: Duration,
    /// Tells this retry's entry in [`Retries::index`] from others due at `at`.
    slot: u64,
}

/// Every scheduled retry, earliest first, so that finding the next one (which the
/// actor does on every turn) and the due ones does not visit every stream.
#[derive(Debug, Default)]
struct Retries {
    /// `(at, slot)` of each stream's [`Retry`] → the stream. Invariant: holds exactly
    /// the `retry` of every stream that has one.
    index: BTreeMap<(Instant, u64), StreamKey>,
    /// The slot the next retry gets.
    next_slot: u64,
}

impl Retries {
    /// Replaces `key`'s retry (`current`) with one at `at` after waiting `backoff`,
    /// or with none.
    fn set(
        &mut self,
        key: &StreamKey,
        current: &mut Option<Retry>,
        next: Option<(Instant, Duration)>,
    ) {
        self.unset(current);
        if let Some((at, backoff)) = next {
            self.next_slot += 1;
            let slot = self.next_slot;
            self.index.insert((at, slot), key.clone());
            *current = Some(Retry { at, backoff, slot });
        }
    }

    fn unset(&mut self, current: &mut Option<Retry>) {
        if let Some(old) = current.take() {
            self.index.remove(&(old.at, old.slot));
        }
    }
}

#[derive(Debug, Default)]
struct UpdateStream {
    /// Accepted, not yet acknowledged updates, oldest first; the front is in flight.
    pending: VecDeque<pb::StatusUpdate>,
    /// Every uuid accepted on this stream, to drop duplicates.
    seen: HashSet<Vec<u8>>,
    /// The newest status accepted (what re-registration reports).
    latest: Option<pb::TaskStatus>,
    /// A terminal update was accepted; nothing may follow it.
    terminal_received: bool,
    /// The checkpoint; `None` for streams of tasks that never had a sandbox (e.g. a
    /// launch refused up front), which cannot be recovered after a restart anyway.
    log: Option<PathBuf>,
    /// A record was written to `log` (or it was recovered): later ones append.
    log_exists: bool,
    /// Set while connected and something is pending.
    retry: Option<Retry>,
}

impl UpdateStream {
    fn latest_state(&self) -> i32 {
        self.latest.as_ref().map_or(0, |s| s.state)
    }

    fn head_to_send(&self) -> Option<pb::StatusUpdate> {
        let mut head = self.pending.front()?.clone();
        head.latest_state = self.latest_state();
        Some(head)
    }

    /// The write that checkpoints `record`, if the stream has a log.
    fn record(
        &mut self,
        record: &UpdateRecord,
        task_id: &str,
    ) -> Result<Option<LogWrite>, StatusUpdateError> {
        let Some(path) = &self.log else {
            return Ok(None);
        };
        let record = record.encode_to_vec();
        if record.len() > MAX_RECORD_BYTES {
            return Err(StatusUpdateError::Checkpoint {
                task_id: task_id.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("a record of {} bytes is too large", record.len()),
                ),
            });
        }
        let create = !self.log_exists;
        self.log_exists = true;
        Ok(Some(LogWrite {
            path: path.clone(),
            record,
            create,
        }))
    }

    /// Applies one record, as `update`/`acknowledge` did when it was written.
    /// Returns true when the record finished the stream.
    fn replay(&mut self, record: UpdateRecord) -> bool {
        if let Some(update) = record.update {
            let Some(status) = &update.status else {
                return false;
            };
            if self.seen.insert(status.uuid.clone()) {
                self.terminal_received |= agora_core::task_state::is_terminal_raw(status.state);
                self.latest = Some(status.clone());
                self.pending.push_back(update);
            }
            false
        } else {
            let head_matches = self
                .pending
                .front()
                .and_then(|u| u.status.as_ref())
                .is_some_and(|s| s.uuid == record.ack);
            if !head_matches {
                return false;
            }
            let popped = self.pending.pop_front();
            popped
                .and_then(|u| u.status)
                .is_some_and(|s| agora_core::task_state::is_terminal_raw(s.state))
        }
    }
}

/// All streams of the agent. See the module documentation.
#[derive(Debug)]
pub struct StatusUpdateManager {
    streams: HashMap<StreamKey, UpdateStream>,
    /// First retry interval (Mesos: 10 s).
    retry_min: Duration,
    /// Longest retry interval (Mesos: 10 min); `>= retry_min`.
    retry_max: Duration,
    /// Whether a master is attached; no update is sent or retried while not.
    connected: bool,
    /// Records accepted and not yet taken by [`Self::take_writes`], in order.
    writes: Vec<LogWrite>,
    /// The streams' retries by time.
    retries: Retries,
}

impl StatusUpdateManager {
    pub fn new(retry_min: Duration, retry_max: Duration) -> Self {
        Self {
            streams: HashMap::new(),
            retry_min,
            retry_max: retry_max.max(retry_min),
            connected: false,
            writes: Vec::new(),
            retries: Retries::default(),
        }
    }

    /// The records to checkpoint since the last call, in order. The caller makes
    /// them durable before it sends or acknowledges anything returned meanwhile.
    pub fn take_writes(&mut self) -> Vec<LogWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Accepts an update: queues it, and its record for `checkpoint` (the task's log,
    /// created with the stream's first record) in [`Self::take_writes`].
    /// `update.status.uuid` must be set.
    pub fn update(
        &mut self,
        update: pb::StatusUpdate,
        checkpoint: Option<&Path>,
        now: Instant,
    ) -> Result<Accepted, StatusUpdateError> {
        let (Some(framework_id), Some(status)) = (&update.framework_id, &update.status) else {
            return Err(StatusUpdateError::Incomplete);
        };
        let Some(task_id) = &status.task_id else {
            return Err(StatusUpdateError::Incomplete);
        };
        if status.uuid.is_empty() {
            return Err(StatusUpdateError::MissingUuid);
        }
        let key = StreamKey::new(&framework_id.value, &task_id.value);
        if !self.streams.contains_key(&key) {
            self.streams.insert(
                key.clone(),
                UpdateStream {
                    log: checkpoint.map(Path::to_path_buf),
                    ..UpdateStream::default()
                },
            );
        }
        let connected = self.connected;
        let retry_min = self.retry_min;
        let Some(stream) = self.streams.get_mut(&key) else {
            return Err(StatusUpdateError::Incomplete);
        };
        let status = status.clone();
        if stream.seen.contains(&status.uuid) {
            return Ok(Accepted::Duplicate);
        }
        if stream.terminal_received {
            return Err(StatusUpdateError::Terminated {
                task_id: key.task_id,
            });
        }
        if stream.pending.len() >= MAX_PENDING_PER_STREAM {
            return Err(StatusUpdateError::Backlogged {
                task_id: key.task_id,
            });
        }
        let record = UpdateRecord {
            update: Some(update.clone()),
            ack: Vec::new(),
        };
        let write = stream.record(&record, &key.task_id)?;
        self.writes.extend(write);
        stream.seen.insert(status.uuid.clone());
        stream.terminal_received = agora_core::task_state::is_terminal_raw(status.state);
        stream.latest = Some(status);
        stream.pending.push_back(update);
        if stream.pending.len() == 1 && connected {
            self.retries
                .set(&key, &mut stream.retry, Some((now + retry_min, retry_min)));
            return Ok(Accepted::Forward(Box::new(
                stream.head_to_send().unwrap_or_default(),
            )));
        }
        Ok(Accepted::Queued)
    }

    /// Handles the framework's acknowledgement of `uuid` on `key`'s stream.
    pub fn acknowledge(
        &mut self,
        key: &StreamKey,
        uuid: &[u8],
        now: Instant,
    ) -> Result<Acknowledged, StatusUpdateError> {
        let connected = self.connected;
        let retry_min = self.retry_min;
        let Some(stream) = self.streams.get_mut(key) else {
            return Ok(Acknowledged::Ignored);
        };
        let head_matches = stream
            .pending
            .front()
            .and_then(|u| u.status.as_ref())
            .is_some_and(|s| s.uuid == uuid);
        if !head_matches {
            return Ok(Acknowledged::Ignored);
        }
        let record = UpdateRecord {
            update: None,
            ack: uuid.to_vec(),
        };
        let write = stream.record(&record, &key.task_id)?;
        self.writes.extend(write);
        let finished = stream
            .pending
            .pop_front()
            .and_then(|u| u.status)
            .is_some_and(|s| agora_core::task_state::is_terminal_raw(s.state));
        if finished {
            self.retries.unset(&mut stream.retry);
            self.streams.remove(key);
            return Ok(Acknowledged::Finished);
        }
        let next = if connected {
            stream.head_to_send().map(Box::new)
        } else {
            None
        };
        let retry = next.is_some().then_some((now + retry_min, retry_min));
        self.retries.set(key, &mut stream.retry, retry);
        Ok(Acknowledged::Next { next })
    }

    /// A master is attached: returns every head, to send right away, and starts
    /// their retry timers.
    pub fn connected(&mut self, now: Instant) -> Vec<pb::StatusUpdate> {
        self.connected = true;
        let mut keys: Vec<&StreamKey> = self.streams.keys().collect();
        keys.sort();
        let keys: Vec<StreamKey> = keys.into_iter().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            if let Some(stream) = self.streams.get_mut(&key)
                && let Some(head) = stream.head_to_send()
            {
                let retry = Some((now + self.retry_min, self.retry_min));
                self.retries.set(&key, &mut stream.retry, retry);
                out.push(head);
            }
        }
        out
    }

    /// The master is gone: nothing is retried until [`Self::connected`].
    pub fn disconnected(&mut self) {
        self.connected = false;
        for stream in self.streams.values_mut() {
            stream.retry = None;
        }
        self.retries.index.clear();
    }

    /// When the earliest retry is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.index.keys().next().map(|(at, _)| *at)
    }

    /// Heads whose retry is due at `now`, to resend; each waits twice as long next.
    pub fn due(&mut self, now: Instant) -> Vec<pb::StatusUpdate> {
        let due: Vec<StreamKey> = self
            .retries
            .index
            .range(..=(now, u64::MAX))
            .map(|(_, key)| key.clone())
            .collect();
        let mut out = Vec::new();
        for key in due {
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            let Some(retry) = stream.retry else { continue };
            let backoff = (retry.backoff * 2).min(self.retry_max);
            self.retries
                .set(&key, &mut stream.retry, Some((now + backoff, backoff)));
            if let Some(head) = stream.head_to_send() {
                out.push(head);
            }
        }
        out
    }

    /// Rebuilds a stream from its log after a restart (cutting off a torn tail). A
    /// finished stream is not kept.
    pub fn recover(&mut self, key: StreamKey, log_path: &Path) -> std::io::Result<Recovered> {
        let (_, contents) = RecordLog::open(log_path)?;
        let mut stream = UpdateStream::default();
        let mut finished = false;
        for bytes in &contents.records {
            // A record that decodes wrongly despite its checksum was written by
            // something else; ending the replay there is the safe reading.
            let Ok(record) = UpdateRecord::decode(bytes.as_slice()) else {
                break;
            };
            finished |= stream.replay(record);
        }
        let recovered = Recovered {
            finished,
            latest: stream.latest.clone(),
            pending: stream.pending.len(),
            torn_tail: contents.torn_tail,
        };
        if !finished {
            stream.log = Some(log_path.to_path_buf());
            stream.log_exists = true;
            self.streams.insert(key, stream);
        }
        Ok(recovered)
    }

    /// Forgets a stream (its task is gone for another reason).
    pub fn remove(&mut self, key: &StreamKey) {
        if let Some(mut stream) = self.streams.remove(key) {
            self.retries.unset(&mut stream.retry);
        }
    }

    /// Forgets every stream of a framework (it was shut down).
    pub fn remove_framework(&mut self, framework_id: &str) {
        let retries = &mut self.retries;
        self.streams.retain(|k, stream| {
            let keep = k.framework_id != framework_id;
            if !keep {
                retries.unset(&mut stream.retry);
            }
            keep
        });
    }

    pub fn contains(&self, key: &StreamKey) -> bool {
        self.streams.contains_key(key)
    }

    /// Updates of `key` not yet acknowledged, oldest first.
    pub fn pending(&self, key: &StreamKey) -> Vec<&pb::StatusUpdate> {
        self.streams
            .get(key)
            .map(|s| s.pending.iter().collect())
            .unwrap_or_default()
    }

    /// Number of updates waiting for acknowledgement, over all streams.
    pub fn pending_total(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::TaskState;

    fn update(task: &str, state: TaskState, uuid: u8) -> pb::StatusUpdate {
        pb::StatusUpdate {
            framework_id: Some(pb::FrameworkId { value: "fw".into() }),
            executor_id: Some(pb::ExecutorId { value: task.into() }),
            status: Some(pb::TaskStatus {
                task_id: Some(pb::TaskId { value: task.into() }),
                state: state as i32,
                uuid: vec![uuid; 16],
                ..Default::default()
            }),
            latest_state: 0,
        }
    }

    fn uuid_of(u: &pb::StatusUpdate) -> Vec<u8> {
        u.status
            .as_ref()
            .map(|s| s.uuid.clone())
            .unwrap_or_default()
    }

    fn key(task: &str) -> StreamKey {
        StreamKey::new("fw", task)
    }

    fn manager() -> StatusUpdateManager {
        StatusUpdateManager::new(Duration::from_secs(10), Duration::from_secs(60))
    }

    /// Does what the agent's journal does with the manager's records.
    fn write_out(m: &mut StatusUpdateManager) {
        for w in m.take_writes() {
            let mut log = if w.create {
                RecordLog::create(&w.path).unwrap()
            } else {
                RecordLog::open_for_append(&w.path).unwrap()
            };
            log.append(&w.record).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_accepted_update_and_ack_yields_one_record_for_its_log() {
        let mut m = manager();
        let now = Instant::now();
        m.connected(now);
        let path = std::path::PathBuf::from("/nonexistent/task.updates");
        m.update(update("t", TaskState::TaskStarting, 1), Some(&path), now)
            .unwrap();
        m.update(update("t", TaskState::TaskStarting, 1), Some(&path), now)
            .unwrap();
        m.update(update("t", TaskState::TaskRunning, 2), Some(&path), now)
            .unwrap();
        m.acknowledge(&key("t"), &[9; 16], now).unwrap();
        m.acknowledge(&key("t"), &[1; 16], now).unwrap();
        // A stream without a log checkpoints nothing.
        m.update(update("u", TaskState::TaskFailed, 3), None, now)
            .unwrap();
        let writes = m.take_writes();
        let records: Vec<(bool, UpdateRecord)> = writes
            .iter()
            .map(|w| {
                assert_eq!(w.path, path);
                (w.create, UpdateRecord::decode(w.record.as_slice()).unwrap())
            })
            .collect();
        assert_eq!(
            records.len(),
            3,
            "one per update and ack; none for the duplicate"
        );
        assert!(records[0].0 && !records[1].0 && !records[2].0);
        assert_eq!(uuid_of(records[0].1.update.as_ref().unwrap()), vec![1; 16]);
        assert_eq!(uuid_of(records[1].1.update.as_ref().unwrap()), vec![2; 16]);
        assert_eq!(records[2].1.ack, vec![1; 16]);
        assert!(m.take_writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_retry_is_found_among_many_streams_and_forgotten_with_them() {
        let mut m = manager();
        m.connected(Instant::now());
        for (i, task) in ["a", "b", "c"].into_iter().enumerate() {
            m.update(
                update(task, TaskState::TaskRunning, i as u8),
                None,
                Instant::now(),
            )
            .unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let start = Instant::now() - Duration::from_secs(3);
        assert_eq!(m.next_retry(), Some(start + Duration::from_secs(10)));
        // "a" is due first; resent, it waits 20 s and "b" becomes the earliest.
        tokio::time::advance(Duration::from_secs(7)).await;
        let resent = m.due(Instant::now());
        assert_eq!(
            resent.iter().map(uuid_of).collect::<Vec<_>>(),
            vec![vec![0; 16]]
        );
        assert_eq!(m.next_retry(), Some(start + Duration::from_secs(11)));
        m.remove(&key("b"));
        assert_eq!(m.next_retry(), Some(start + Duration::from_secs(12)));
        m.acknowledge(&key("c"), &[2; 16], Instant::now()).unwrap();
        assert_eq!(m.next_retry(), Some(start + Duration::from_secs(30)));
        m.remove_framework("fw");
        assert_eq!(m.next_retry(), None);
        assert!(m.due(Instant::now() + Duration::from_secs(3600)).is_empty());
    }

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-sum-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_head_is_in_flight_and_acks_release_the_next_in_order() {
        let mut m = manager();
        let now = Instant::now();
        m.connected(now);
        let Accepted::Forward(first) = m
            .update(update("t", TaskState::TaskStarting, 1), None, now)
            .unwrap()
        else {
            panic!("the first update is forwarded");
        };
        assert_eq!(uuid_of(&first), vec![1; 16]);
        assert_eq!(
            m.update(update("t", TaskState::TaskRunning, 2), None, now)
                .unwrap(),
            Accepted::Queued
        );
        assert_eq!(
            m.update(update("t", TaskState::TaskFinished, 3), None, now)
                .unwrap(),
            Accepted::Queued
        );
        // The head in flight carries the newest state the agent knows.
        assert_eq!(first.latest_state, TaskState::TaskStarting as i32);
        assert_eq!(m.pending(&key("t")).len(), 3);

        // An ack for anything but the head changes nothing.
        assert_eq!(
            m.acknowledge(&key("t"), &[2; 16], now).unwrap(),
            Acknowledged::Ignored
        );
        let Acknowledged::Next { next: Some(second) } =
            m.acknowledge(&key("t"), &[1; 16], now).unwrap()
        else {
            panic!("the second update follows the first ack");
        };
        assert_eq!(uuid_of(&second), vec![2; 16]);
        assert_eq!(second.latest_state, TaskState::TaskFinished as i32);
        let Acknowledged::Next { next: Some(third) } =
            m.acknowledge(&key("t"), &[2; 16], now).unwrap()
        else {
            panic!("the third update follows the second ack");
        };
        assert_eq!(uuid_of(&third), vec![3; 16]);
        assert_eq!(
            m.acknowledge(&key("t"), &[3; 16], now).unwrap(),
            Acknowledged::Finished
        );
        assert!(!m.contains(&key("t")));
        // Late duplicate acks are harmless.
        assert_eq!(
            m.acknowledge(&key("t"), &[3; 16], now).unwrap(),
            Acknowledged::Ignored
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_refuses_updates_beyond_its_backlog_limit() {
        let mut m = manager();
        let now = Instant::now();
        m.connected(now);
        for i in 0..MAX_PENDING_PER_STREAM {
            let mut u = update("t", TaskState::TaskRunning, 0);
            if let Some(s) = u.status.as_mut() {
                s.uuid = uuid::Uuid::from_u128(i as u128 + 1).as_bytes().to_vec();
            }
            m.update(u, None, now).unwrap();
        }
        let refused = m.update(update("t", TaskState::TaskRunning, 0xee), None, now);
        assert!(matches!(refused, Err(StatusUpdateError::Backlogged { .. })));
        assert_eq!(m.pending(&key("t")).len(), MAX_PENDING_PER_STREAM);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_are_ignored_and_nothing_follows_a_terminal_update() {
        let mut m = manager();
        let now = Instant::now();
        m.connected(now);
        assert!(matches!(
            m.update(update("t", TaskState::TaskRunning, 1), None, now)
                .unwrap(),
            Accepted::Forward(_)
        ));
        assert_eq!(
            m.update(update("t", TaskState::TaskRunning, 1), None, now)
                .unwrap(),
            Accepted::Duplicate
        );
        assert_eq!(
            m.update(update("t", TaskState::TaskFailed, 2), None, now)
                .unwrap(),
            Accepted::Queued
        );
        assert_eq!(
            m.update(update("t", TaskState::TaskFailed, 2), None, now)
                .unwrap(),
            Accepted::Duplicate
        );
        assert!(matches!(
            m.update(update("t", TaskState::TaskRunning, 3), None, now),
            Err(StatusUpdateError::Terminated { .. })
        ));
        assert_eq!(m.pending(&key("t")).len(), 2);
        let mut no_uuid = update("t", TaskState::TaskRunning, 4);
        if let Some(s) = no_uuid.status.as_mut() {
            s.uuid.clear();
        }
        assert!(matches!(
            m.update(no_uuid, None, now),
            Err(StatusUpdateError::MissingUuid)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_from_min_doubling_to_max_and_only_while_connected() {
        let mut m = manager();
        // Disconnected: accepted, not sent, no retry.
        let start = Instant::now();
        assert_eq!(
            m.update(update("t", TaskState::TaskRunning, 1), None, start)
                .unwrap(),
            Accepted::Queued
        );
        assert_eq!(m.next_retry(), None);

        // Connecting sends the head at once.
        let sent = m.connected(Instant::now());
        assert_eq!(sent.len(), 1);
        let mut waits = Vec::new();
        let mut last = Instant::now();
        for _ in 0..6 {
            let at = m
                .next_retry()
                .expect("a retry is scheduled while connected");
            tokio::time::advance(at - Instant::now()).await;
            assert!(
                m.due(Instant::now() - Duration::from_millis(1)).is_empty(),
                "not early"
            );
            let resent = m.due(Instant::now());
            assert_eq!(resent.len(), 1);
            assert_eq!(uuid_of(&resent[0]), vec![1; 16]);
            waits.push((Instant::now() - last).as_secs());
            last = Instant::now();
        }
        assert_eq!(waits, vec![10, 20, 40, 60, 60, 60]);

        m.disconnected();
        assert_eq!(m.next_retry(), None);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(m.due(Instant::now()).is_empty());

        // Reconnecting resends immediately and restarts the backoff.
        assert_eq!(m.connected(Instant::now()).len(), 1);
        assert_eq!(
            m.next_retry(),
            Some(Instant::now() + Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_are_independent() {
        let mut m = manager();
        let now = Instant::now();
        m.connected(now);
        assert!(matches!(
            m.update(update("a", TaskState::TaskRunning, 1), None, now)
                .unwrap(),
            Accepted::Forward(_)
        ));
        assert!(matches!(
            m.update(update("b", TaskState::TaskRunning, 2), None, now)
                .unwrap(),
            Accepted::Forward(_)
        ));
        assert_eq!(m.pending_total(), 2);
        m.remove_framework("fw");
        assert_eq!(m.pending_total(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_replays_the_log_and_tolerates_a_torn_tail() {
        let dir = temp_dir();
        let path = dir.join("task.updates");
        let now = Instant::now();
        {
            let mut m = manager();
            m.connected(now);
            m.update(update("t", TaskState::TaskStarting, 1), Some(&path), now)
                .unwrap();
            m.update(update("t", TaskState::TaskRunning, 2), Some(&path), now)
                .unwrap();
            m.acknowledge(&key("t"), &[1; 16], now).unwrap();
            m.update(update("t", TaskState::TaskFinished, 3), Some(&path), now)
                .unwrap();
            write_out(&mut m);
        }
        // The agent died while writing the third update.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();

        let mut m = manager();
        let recovered = m.recover(key("t"), &path).unwrap();
        assert!(!recovered.finished);
        assert!(recovered.torn_tail);
        assert_eq!(recovered.pending, 1);
        assert_eq!(
            recovered.latest.map(|s| s.state),
            Some(TaskState::TaskRunning as i32)
        );
        // The recovered stream resends its head on connect and dedupes old uuids.
        let sent = m.connected(now);
        assert_eq!(
            sent.iter().map(uuid_of).collect::<Vec<_>>(),
            vec![vec![2; 16]]
        );
        assert_eq!(
            m.update(update("t", TaskState::TaskStarting, 1), None, now)
                .unwrap(),
            Accepted::Duplicate
        );
        // The executor resends the lost terminal update; it is appended after the cut.
        assert_eq!(
            m.update(update("t", TaskState::TaskFinished, 3), None, now)
                .unwrap(),
            Accepted::Queued
        );
        m.acknowledge(&key("t"), &[2; 16], now).unwrap();
        assert_eq!(
            m.acknowledge(&key("t"), &[3; 16], now).unwrap(),
            Acknowledged::Finished
        );
        let writes = m.take_writes();
        assert!(writes.iter().all(|w| !w.create && w.path == path));
        for w in writes {
            RecordLog::open_for_append(&w.path)
                .unwrap()
                .append(&w.record)
                .unwrap();
        }

        // Read again, the log shows a finished stream.
        let mut m = manager();
        assert!(m.recover(key("t"), &path).unwrap().finished);
        assert!(!m.contains(&key("t")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
