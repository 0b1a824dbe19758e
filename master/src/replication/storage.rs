//! Durable raft storage: the log, hard state, conf state and latest snapshot of one
//! master, in checksummed files under its data directory.
//!
//! We keep our own small log format rather than pull in a storage engine: raft needs
//! only "append a batch (maybe overwriting a suffix), fsync, compact a prefix", and
//! every byte we read back is verified.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/hardstate                  HardState + ConfState, replaced atomically
//! <dir>/snapshot                   latest raft Snapshot (metadata + state machine data)
//! <dir>/log-<seq, 20 digits>.seg   log segments, appended to; seq counts up from 1
//! <dir>/*.tmp                      half-written replacements; deleted on open
//! ```
//!
//! `hardstate` and `snapshot` are replaced atomically: write `<name>.tmp`, fsync it,
//! rename it over `<name>`, fsync the directory. New segments are created the same
//! way, so a segment on disk always has a complete header.
//!
//! # Formats (all integers little endian, every checksum CRC-32/IEEE)
//!
//! `hardstate` and `snapshot`:
//! `[magic 8][version u32][body_len u64][body][crc32 u32 of everything before it]`,
//! magic `AGORAHST` / `AGORASNP`.
//! - hardstate body: `[hard_state_len u32][HardState protobuf][ConfState protobuf]`
//! - snapshot body: `[first_live_segment u64][Snapshot protobuf]`. Segments numbered
//!   below `first_live_segment` hold only entries the snapshot replaced; whoever sees
//!   one (a crash interrupted their deletion) deletes it.
//!
//! Segment: header `[magic "AGORALOG"][version u32][seq u64][crc32 u32 of the 20
//! bytes before]`, then records `[payload_len u32][payload_crc u32][header_crc u32 of
//! the 8 bytes before][payload]`. The header has its own checksum so that a damaged
//! length is told apart from a record cut short by a crash. A payload is one `append`
//! call's batch: `[count u32]` then `count × [entry_len u32][Entry protobuf]`, indexes
//! consecutive.
//!
//! # Semantics
//!
//! - Replay: a batch whose first index is at or below the last index so far replaces
//!   the suffix from that index (raft overwrote conflicting entries); a batch that
//!   would leave a gap means the log is corrupt.
//! - `append` writes one record and fsyncs before returning: the node calls it once
//!   per ready, so that is the group commit.
//! - Raft reads only the in-memory copy. Writes go to disk first; memory is updated
//!   only once the disk holds the change, so memory never claims more than the disk
//!   has. A failed write is rolled back where it can be (a partly written record is
//!   cut off); where it cannot, the storage refuses all later writes (a master that
//!   cannot persist must stop, and restarting reads back what really is on disk).
//! - Effective state on open: the snapshot may be newer than `hardstate` (the node
//!   does not persist every commit index, and a snapshot from the leader is installed
//!   by writing the snapshot file alone). When the snapshot index is above the stored
//!   commit, the snapshot wins: commit becomes its index, the conf state its conf
//!   state, and the term is raised to its term. Memory applies the same rule at
//!   runtime, so reopening yields exactly what was in memory.
//! - Compaction (`create_snapshot`) writes the snapshot file, then deletes the leading
//!   segments whose entries are all covered by it. A segment straddling the snapshot
//!   index is kept, and if every segment is covered the next append starts a new one.
//! - Open recovers one thing silently (with a warning): the last record of the last
//!   segment cut short or failing its checksum, i.e. an append that crashed before it
//!   was acknowledged. The file is truncated there. Everything else that fails a check
//!   is [`StorageError::Corrupt`], naming the file: this master then refuses to start
//!   rather than serve a log it cannot trust. (A damaged last record that *was*
//!   acknowledged and committed is still caught: the stored commit index would point
//!   past the end of the log.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use slog::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed (or was made to fail by fault injection). Memory still
    /// matches what is durably on disk; see the module doc for when later writes are
    /// refused as well.
    #[error("raft storage {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file failed its checks on open; `path` names it. Never repaired silently.
    #[error(
        "raft storage {path} is corrupt ({reason}); refusing to start rather than serve wrong data"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// A raft-level refusal (a compacted index, an out-of-date snapshot) or an
    /// encoding failure.
    #[error("raft storage: {0}")]
    Raft(#[from] raft::Error),
    /// The caller asked for something the storage cannot do without breaking its
    /// invariants (initialising twice, a gap in appended entries, a snapshot of an
    /// index the log does not hold). Nothing was written.
    #[error("raft storage {path}: rejected: {reason}")]
    Rejected { path: PathBuf, reason: String },
}

const FORMAT_VERSION: u32 = 1;
const SEGMENT_MAGIC: [u8; 8] = *b"AGORALOG";
const HARD_STATE_MAGIC: [u8; 8] = *b"AGORAHST";
const SNAPSHOT_MAGIC: [u8; 8] = *b"AGORASNP";
const HARD_STATE_FILE: &str = "hardstate";
const SNAPSHOT_FILE: &str = "snapshot";
const TMP_SUFFIX: &str = ".tmp";
const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".seg";
/// magic + version + seq + crc.
const SEGMENT_HEADER_LEN: u64 = 8 + 4 + 8 + 4;
/// payload_len + payload_crc + header_crc.
const RECORD_HEADER_LEN: usize = 4 + 4 + 4;
/// magic + version + body_len (the trailing crc is separate).
const SMALL_FILE_HEAD_LEN: usize = 8 + 4 + 8;
/// Segments are rolled at about this size, so that compaction can delete whole files
/// even while the log keeps growing past every snapshot.
const DEFAULT_SEGMENT_ROLL_BYTES: u64 = 16 << 20;
/// The first segment of a log that has never been compacted.
const FIRST_SEGMENT_SEQ: u64 = 1;

/// The raft log, hard state, conf state and latest snapshot of one master, on disk.
/// Cloning shares the same storage (raft-rs' `RawNode` owns one clone, the node's
/// persistence code another).
#[derive(Clone)]
pub struct DiskStorage {
    /// The files and the writer's bookkeeping. Every write holds this lock from its
    /// first disk operation until memory is updated, so writes are serialised and
    /// memory is updated in disk order.
    disk: Arc<Mutex<DiskLog>>,
    /// What raft reads: always equal to what reopening the directory would produce
    /// from the writes acknowledged so far. Readers never wait for an fsync.
    state: Arc<RwLock<LogState>>,
}

/// The in-memory copy of the durable raft state.
#[derive(Default)]
struct LogState {
    /// Effective hard state (see the module doc: raised to the snapshot if newer).
    hard_state: HardState,
    /// Effective conf state.
    conf_state: ConfState,
    /// The latest snapshot; index 0 means none. Entries up to its index are gone.
    snapshot: Snapshot,
    /// The log after the snapshot: `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl LogState {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index().saturating_add(1)
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    /// Position of `index` in `entries`, if the log holds it.
    fn position(&self, index: u64) -> Option<usize> {
        let offset = index.checked_sub(self.first_index())?;
        let position = usize::try_from(offset).ok()?;
        (position < self.entries.len()).then_some(position)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot_term());
        }
        let position = self.position(index)?;
        self.entries.get(position).map(|entry| entry.term)
    }

    /// Replaces entries from `batch`'s first index on with `batch`. The caller has
    /// checked that the batch is consecutive, starts after the snapshot and leaves no
    /// gap.
    fn splice(&mut self, batch: &[Entry]) {
        let Some(first) = batch.first() else { return };
        let keep = first.index.saturating_sub(self.first_index());
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        self.entries.extend_from_slice(batch);
    }

    /// Installs `snapshot` as the latest one: drops the entries it covers and, if it
    /// is ahead of the stored commit, lets it decide commit, term and conf state. The
    /// same rule runs on open, so memory matches what a restart would read.
    fn adopt_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        let drop = index
            .saturating_sub(self.snapshot_index())
            .min(self.entries.len() as u64);
        self.entries
            .drain(..usize::try_from(drop).unwrap_or(self.entries.len()));
        self.snapshot = snapshot;
        self.reconcile_with_snapshot();
        // An installed snapshot may be beyond our log, or contradict it: then the log
        // after it is not ours to keep.
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
    }

    /// The open-time rule: a snapshot newer than the stored commit decides commit,
    /// term and conf state.
    fn reconcile_with_snapshot(&mut self) {
        let meta = self.snapshot.get_metadata();
        if meta.index == 0 || meta.index <= self.hard_state.commit {
            return;
        }
        let (index, term, conf_state) = (meta.index, meta.term, meta.get_conf_state().clone());
        self.hard_state.commit = index;
        if term > self.hard_state.term {
            // The vote belonged to an older term.
            self.hard_state.term = term;
            self.hard_state.vote = 0;
        }
        self.conf_state = conf_state;
    }
}

/// The writer's side: the directory and the segments in it.
struct DiskLog {
    /// The data directory (exists; holds only files this module writes, plus any a
    /// person put there, which are ignored).
    dir: PathBuf,
    logger: slog::Logger,
    /// The live segments, in sequence order, consecutive seqs. The last one is the
    /// one appended to while `active` is set.
    segments: Vec<SegmentMeta>,
    /// An open handle on `segments.last()`, positioned for appending. `None` means the
    /// next append starts a new segment (none yet, or the last one is full or was
    /// made obsolete by a snapshot).
    active: Option<File>,
    /// The seq the next new segment gets: above every segment ever created here, and
    /// equal to the `first_live_segment` recorded by a snapshot that dropped them all.
    next_seq: u64,
    /// Whether anything was ever stored here (see [`DiskStorage::is_initialized`]).
    initialized: bool,
    /// Fault injection: while set, every write fails before touching disk or memory.
    inject_failures: bool,
    /// Set when a write failed in a way that leaves the disk state unknown to us (an
    /// fsync of a renamed file failed, a partial record could not be cut off). Every
    /// later write fails with this reason; reopening reads what is really there.
    poisoned: Option<String>,
    /// Roll to a new segment before an append once the active one has this many bytes.
    segment_roll_bytes: u64,
}

/// One live segment file.
struct SegmentMeta {
    seq: u64,
    path: PathBuf,
    /// Bytes of valid data (header + whole records); the file is exactly this long.
    len: u64,
    /// The highest index any record in it wrote, if it has records. Later overwrites
    /// in other segments may have superseded some of them, so this is an upper bound
    /// of what is live in it, which is what deletion needs.
    max_index: Option<u64>,
}

impl DiskStorage {
    /// Opens (creating if needed) the storage in `dir` and reads it back, verifying
    /// every checksum. See the module doc for what is recovered and what is refused.
    pub fn open(dir: &Path, logger: &slog::Logger) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let listing = list_dir(dir)?;

        let hard_state_path = dir.join(HARD_STATE_FILE);
        let stored_hard_state = read_if_exists(&hard_state_path)?
            .map(|bytes| decode_hard_state_file(&hard_state_path, &bytes))
            .transpose()?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let stored_snapshot = read_if_exists(&snapshot_path)?
            .map(|bytes| decode_snapshot_file(&snapshot_path, &bytes))
            .transpose()?;
        let first_live_seq = stored_snapshot
            .as_ref()
            .map_or(FIRST_SEGMENT_SEQ, |(_, first_live)| *first_live);

        let (obsolete, live): (Vec<_>, Vec<_>) = listing
            .segments
            .into_iter()
            .partition(|(seq, _)| *seq < first_live_seq);
        for (expected, (seq, path)) in (first_live_seq..).zip(&live) {
            if *seq != expected {
                return Err(corrupt(
                    path,
                    format!(
                        "segment {} is missing (the live segments must be numbered \
                         consecutively from {first_live_seq})",
                        segment_file_name(expected)
                    ),
                ));
            }
        }

        let mut replay = Replay::default();
        let mut segments = Vec::with_capacity(live.len());
        let mut torn_tail = None;
        for (position, (seq, path)) in live.iter().enumerate() {
            let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
            let is_last = position + 1 == live.len();
            let (meta, torn) = replay.segment(path, *seq, &bytes, is_last)?;
            if let Some(torn) = torn {
                torn_tail = Some((path.clone(), meta.len, torn));
            }
            segments.push(meta);
        }

        let snapshot = stored_snapshot
            .map(|(snapshot, _)| snapshot)
            .unwrap_or_default();
        let first_segment_path = live.first().map(|(_, path)| path.as_path());
        let entries = replay.into_entries_after(&snapshot, &snapshot_path, first_segment_path)?;
        let initialized = stored_hard_state.is_some()
            || snapshot.get_metadata().index > 0
            || segments.iter().any(|segment| segment.max_index.is_some());
        let (hard_state, conf_state) = stored_hard_state.unwrap_or_default();
        let mut state = LogState {
            hard_state,
            conf_state,
            snapshot,
            entries,
        };
        state.reconcile_with_snapshot();
        if state.hard_state.commit > state.last_index() {
            return Err(corrupt(
                &hard_state_path,
                format!(
                    "the commit index {} is beyond the last log index {}: committed \
                     entries are missing",
                    state.hard_state.commit,
                    state.last_index()
                ),
            ));
        }

        // Everything checked out; now repair what a crash may have left behind.
        if let Some((path, valid_len, reason)) = torn_tail {
            truncate_file(&path, valid_len)?;
            warn!(logger, "recovered the raft log after an interrupted append: \
                the unacknowledged last record was dropped";
                "file" => %path.display(), "kept_bytes" => valid_len, "reason" => reason);
        }
        for (_, path) in &obsolete {
            match fs::remove_file(path) {
                Ok(()) => info!(logger, "removed a log segment made obsolete by the snapshot";
                    "file" => %path.display()),
                Err(e) => warn!(logger, "cannot remove an obsolete log segment (ignored)";
                    "file" => %path.display(), "error" => %e),
            }
        }
        for path in &listing.tmp_files {
            if let Err(e) = fs::remove_file(path) {
                warn!(logger, "cannot remove a leftover temporary file (ignored)";
                    "file" => %path.display(), "error" => %e);
            }
        }

        let active = match segments.last() {
            Some(last) => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(|e| io_error(&last.path, e))?,
            ),
            None => None,
        };
        let next_seq = segments
            .last()
            .map_or(first_live_seq, |last| last.seq + 1)
            .max(first_live_seq)
            .max(FIRST_SEGMENT_SEQ);
        info!(logger, "raft storage opened";
            "dir" => %dir.display(),
            "snapshot_index" => state.snapshot_index(),
            "first_index" => state.first_index(),
            "last_index" => state.last_index(),
            "commit" => state.hard_state.commit,
            "term" => state.hard_state.term,
            "segments" => segments.len());

        Ok(Self {
            disk: Arc::new(Mutex::new(DiskLog {
                dir: dir.to_path_buf(),
                logger: logger.clone(),
                segments,
                active,
                next_seq,
                initialized,
                inject_failures: false,
                poisoned: None,
                segment_roll_bytes: DEFAULT_SEGMENT_ROLL_BYTES,
            })),
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// Whether this storage has ever been initialised (holds a conf state, hard state,
    /// entries or a snapshot). A fresh directory is not.
    pub fn is_initialized(&self) -> bool {
        self.lock_disk().initialized
    }

    /// Bootstraps a fresh group: the given voters, nothing in the log.
    pub fn initialize(&self, voters: &[u64]) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        if disk.initialized {
            return Err(disk.rejected("already initialised; a group is bootstrapped once".into()));
        }
        if voters.is_empty() || voters.contains(&0) {
            return Err(disk.rejected(format!(
                "a group needs at least one voter and raft ids are not 0 (got {voters:?})"
            )));
        }
        let conf_state = ConfState::from((voters.to_vec(), vec![]));
        let hard_state = self.read_state().hard_state.clone();
        disk.write_hard_state(&hard_state, &conf_state)?;
        self.write_state().conf_state = conf_state;
        Ok(())
    }

    /// Appends entries (truncating any conflicting suffix); durable on return.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        if let Some((previous, next)) = entries
            .iter()
            .zip(entries.iter().skip(1))
            .find(|(previous, next)| next.index != previous.index.saturating_add(1))
        {
            return Err(disk.rejected(format!(
                "appended entries are not consecutive: {} followed by {}",
                previous.index, next.index
            )));
        }
        {
            let state = self.read_state();
            if first.index < state.first_index() {
                return Err(raft::Error::Store(raft::StorageError::Compacted).into());
            }
            if first.index > state.last_index().saturating_add(1) {
                return Err(disk.rejected(format!(
                    "appending from index {} would leave a gap after the last index {}",
                    first.index,
                    state.last_index()
                )));
            }
        }
        let payload = encode_batch(entries)?;
        disk.append_record(&payload, last.index)?;
        self.write_state().splice(entries);
        disk.initialized = true;
        Ok(())
    }

    /// Durable on return.
    pub fn set_hard_state(&self, hs: HardState) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let conf_state = {
            let state = self.read_state();
            disk.check_commit(hs.commit, state.last_index())?;
            state.conf_state.clone()
        };
        disk.write_hard_state(&hs, &conf_state)?;
        self.write_state().hard_state = hs;
        Ok(())
    }

    /// Updates only the commit index of the hard state; durable on return.
    pub fn set_commit(&self, commit: u64) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let (mut hard_state, conf_state) = {
            let state = self.read_state();
            disk.check_commit(commit, state.last_index())?;
            (state.hard_state.clone(), state.conf_state.clone())
        };
        hard_state.commit = commit;
        disk.write_hard_state(&hard_state, &conf_state)?;
        self.write_state().hard_state = hard_state;
        Ok(())
    }

    /// Durable on return.
    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let hard_state = self.read_state().hard_state.clone();
        disk.write_hard_state(&hard_state, &cs)?;
        self.write_state().conf_state = cs;
        Ok(())
    }

    /// Installs a snapshot received from the leader; replaces the log. Durable on return.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let index = snapshot.get_metadata().index;
        if index == 0 || index < self.read_state().first_index() {
            return Err(raft::Error::Store(raft::StorageError::SnapshotOutOfDate).into());
        }
        // Every existing segment is superseded: the next append starts a fresh one,
        // numbered `next_seq`, and anything below that is dead once the file is in.
        let first_live_seq = disk.next_seq;
        disk.write_snapshot(&snapshot, first_live_seq)?;
        {
            let mut state = self.write_state();
            state.entries.clear();
            state.adopt_snapshot(snapshot);
        }
        disk.initialized = true;
        disk.active = None;
        let superseded = std::mem::take(&mut disk.segments);
        disk.delete_segments(superseded);
        Ok(())
    }

    /// Records a snapshot of the state machine at `index` (applied, so committed) and
    /// compacts the log before it. Durable on return.
    pub fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut disk = self.lock_disk();
        disk.check_writable()?;
        let term = {
            let state = self.read_state();
            if index < state.snapshot_index() {
                return Err(raft::Error::Store(raft::StorageError::SnapshotOutOfDate).into());
            }
            if index == state.snapshot_index() {
                // Nothing new to cover: the stored snapshot already is this state.
                return Ok(());
            }
            match state.term_of(index) {
                Some(term) => term,
                None => {
                    return Err(disk.rejected(format!(
                        "cannot snapshot at index {index}: the log ends at {}",
                        state.last_index()
                    )));
                }
            }
        };
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);

        // Segments from the first one holding an entry past `index` stay; the ones
        // before it only hold entries the snapshot covers.
        let keep_from = disk
            .segments
            .iter()
            .position(|segment| segment.max_index.is_some_and(|max| max > index));
        let first_live_seq = match keep_from {
            Some(position) => disk.segments.get(position).map_or(disk.next_seq, |s| s.seq),
            None => disk.next_seq,
        };
        disk.write_snapshot(&snapshot, first_live_seq)?;
        self.write_state().adopt_snapshot(snapshot);
        disk.initialized = true;
        let covered = match keep_from {
            Some(position) => disk.segments.drain(..position).collect(),
            None => {
                disk.active = None;
                std::mem::take(&mut disk.segments)
            }
        };
        disk.delete_segments(covered);
        Ok(())
    }

    /// The latest snapshot (for restoring the state machine on start).
    pub fn latest_snapshot(&self) -> Snapshot {
        self.read_state().snapshot.clone()
    }

    /// Makes every later write fail as if the disk were full (fault injection).
    pub fn inject_write_failures(&self, fail: bool) {
        self.lock_disk().inject_failures = fail;
    }

    #[cfg(test)]
    fn set_segment_roll_bytes(&self, bytes: u64) {
        self.lock_disk().segment_roll_bytes = bytes;
    }

    // Lock poisoning is recovered from: the sections under these locks do their
    // fallible work (disk I/O) before touching memory, and the memory updates
    // themselves cannot panic, so a panic elsewhere cannot leave half an update.
    fn lock_disk(&self) -> MutexGuard<'_, DiskLog> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DiskLog {
    fn check_writable(&self) -> Result<(), StorageError> {
        if self.inject_failures {
            return Err(io_error(
                &self.dir,
                io::Error::new(io::ErrorKind::StorageFull, "injected write failure"),
            ));
        }
        if let Some(reason) = &self.poisoned {
            return Err(io_error(
                &self.dir,
                io::Error::other(format!(
                    "refusing to write after an earlier write left the disk in an unknown \
                     state ({reason}); restart to recover"
                )),
            ));
        }
        Ok(())
    }

    fn rejected(&self, reason: String) -> StorageError {
        StorageError::Rejected {
            path: self.dir.clone(),
            reason,
        }
    }

    /// A commit index past the log would make the next open fail (committed entries
    /// missing), so it is refused here, where the bug is.
    fn check_commit(&self, commit: u64, last_index: u64) -> Result<(), StorageError> {
        if commit > last_index {
            return Err(self.rejected(format!(
                "commit index {commit} is beyond the last log index {last_index}"
            )));
        }
        Ok(())
    }

    fn poison(&mut self, what: String) {
        warn!(self.logger, "raft storage write failed; refusing further writes"; "failure" => &what);
        self.poisoned = Some(what);
    }

    fn write_hard_state(&mut self, hs: &HardState, cs: &ConfState) -> Result<(), StorageError> {
        let hard_state = hs.write_to_bytes().map_err(raft::Error::CodecError)?;
        let conf_state = cs.write_to_bytes().map_err(raft::Error::CodecError)?;
        let hard_state_len = u32::try_from(hard_state.len())
            .map_err(|_| self.rejected("hard state too large".into()))?;
        let mut body = Vec::with_capacity(4 + hard_state.len() + conf_state.len());
        body.extend_from_slice(&hard_state_len.to_le_bytes());
        body.extend_from_slice(&hard_state);
        body.extend_from_slice(&conf_state);
        self.replace_file(HARD_STATE_FILE, &encode_small_file(HARD_STATE_MAGIC, &body))?;
        self.initialized = true;
        Ok(())
    }

    fn write_snapshot(
        &mut self,
        snapshot: &Snapshot,
        first_live_seq: u64,
    ) -> Result<(), StorageError> {
        let encoded = snapshot.write_to_bytes().map_err(raft::Error::CodecError)?;
        let mut body = Vec::with_capacity(8 + encoded.len());
        body.extend_from_slice(&first_live_seq.to_le_bytes());
        body.extend_from_slice(&encoded);
        self.replace_file(SNAPSHOT_FILE, &encode_small_file(SNAPSHOT_MAGIC, &body))
    }

    /// Atomically replaces `dir/name` with `contents`: tmp file, fsync, rename, fsync
    /// the directory. Fails cleanly (old file intact) up to the rename; a failure after
    /// it poisons the storage, since the new file is visible but maybe not durable.
    fn replace_file(&mut self, name: &str, contents: &[u8]) -> Result<(), StorageError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path, e));
        }
        if let Err(e) = sync_dir(&self.dir) {
            self.poison(format!(
                "fsync of {} after replacing {name} failed: {e}",
                self.dir.display()
            ));
            return Err(io_error(&self.dir, e));
        }
        Ok(())
    }

    /// Writes one record to the active segment (starting a new one if needed) and
    /// fsyncs it. On failure the partial record is cut off again.
    fn append_record(&mut self, payload: &[u8], last_index: u64) -> Result<(), StorageError> {
        let record = encode_record(payload).ok_or_else(|| {
            self.rejected(format!(
                "a batch of {} bytes is too large for one record",
                payload.len()
            ))
        })?;
        let needs_new_segment = match (&self.active, self.segments.last()) {
            (Some(_), Some(segment)) => segment.len >= self.segment_roll_bytes,
            _ => true,
        };
        if needs_new_segment {
            self.active = None;
            self.create_segment()?;
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Err(io_error(
                &self.dir,
                io::Error::other("no active log segment after creating one"),
            ));
        };
        if let Err(e) = file.write_all(&record).and_then(|()| file.sync_data()) {
            let path = segment.path.clone();
            let rollback = file.set_len(segment.len).and_then(|()| file.sync_data());
            if let Err(rollback) = rollback {
                self.poison(format!(
                    "cannot cut a failed append off {}: {rollback}",
                    path.display()
                ));
            }
            return Err(io_error(&path, e));
        }
        segment.len += record.len() as u64;
        segment.max_index = Some(
            segment
                .max_index
                .map_or(last_index, |max| max.max(last_index)),
        );
        Ok(())
    }

    /// Creates segment `next_seq` (header only) the atomic way and makes it active.
    fn create_segment(&mut self) -> Result<(), StorageError> {
        let seq = self.next_seq;
        let path = self.dir.join(segment_file_name(seq));
        let tmp = self
            .dir
            .join(format!("{}{TMP_SUFFIX}", segment_file_name(seq)));
        let _ = fs::remove_file(&tmp);
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(&segment_header(seq))?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                Ok(file)
            });
        let file = match created {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_error(&path, e));
            }
        };
        if let Err(e) = sync_dir(&self.dir) {
            self.poison(format!(
                "fsync of {} after creating {} failed: {e}",
                self.dir.display(),
                path.display()
            ));
            return Err(io_error(&self.dir, e));
        }
        self.segments.push(SegmentMeta {
            seq,
            path,
            len: SEGMENT_HEADER_LEN,
            max_index: None,
        });
        self.active = Some(file);
        self.next_seq = seq + 1;
        Ok(())
    }

    /// Deletes segments a durable snapshot has made obsolete. Failures only warn: the
    /// snapshot file marks them dead, so the next open deletes them instead.
    fn delete_segments(&self, segments: Vec<SegmentMeta>) {
        if segments.is_empty() {
            return;
        }
        for segment in &segments {
            if let Err(e) = fs::remove_file(&segment.path) {
                warn!(self.logger, "cannot delete a compacted log segment (retried on next start)";
                    "file" => %segment.path.display(), "error" => %e);
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!(self.logger, "cannot fsync the raft directory after compaction";
                "dir" => %self.dir.display(), "error" => %e);
        }
    }
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        let state = self.read_state();
        Ok(raft::RaftState::new(
            state.hard_state.clone(),
            state.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let state = self.read_state();
        if low < state.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > state.last_index().saturating_add(1) {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let start = usize::try_from(low - state.first_index());
        let end = usize::try_from(high - state.first_index());
        let mut entries = match (start, end) {
            (Ok(start), Ok(end)) => state
                .entries
                .get(start..end)
                .map(<[Entry]>::to_vec)
                .ok_or(raft::Error::Store(raft::StorageError::Unavailable))?,
            _ => return Err(raft::Error::Store(raft::StorageError::Unavailable)),
        };
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let state = self.read_state();
        if let Some(term) = state.term_of(idx) {
            return Ok(term);
        }
        if idx < state.first_index() {
            Err(raft::Error::Store(raft::StorageError::Compacted))
        } else {
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read_state().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read_state().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let state = self.read_state();
        let index = state.snapshot_index();
        // Raft asks only when a follower needs entries we compacted, so a stored
        // snapshot exists; "none yet" or "too old" both mean: ask again later.
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(state.snapshot.clone())
    }
}

/// The log as replayed from the segments, before the snapshot is taken into account.
#[derive(Default)]
struct Replay {
    /// Consecutive entries (possibly starting at or before the snapshot index).
    entries: Vec<Entry>,
}

impl Replay {
    /// Verifies and replays one segment. Returns its metadata (with `len` the length
    /// of its valid prefix) and, for a torn last record of the last segment, why it
    /// was dropped.
    fn segment(
        &mut self,
        path: &Path,
        seq: u64,
        bytes: &[u8],
        is_last: bool,
    ) -> Result<(SegmentMeta, Option<String>), StorageError> {
        let mut reader = ByteReader::new(bytes);
        check_segment_header(path, seq, &mut reader)?;
        let mut offset = SEGMENT_HEADER_LEN;
        let mut max_index = None;
        let mut torn = None;
        while !reader.is_empty() {
            match read_record(&mut reader) {
                RecordRead::Record(payload) => {
                    let batch = decode_batch(payload).map_err(|reason| {
                        corrupt(path, format!("record at offset {offset}: {reason}"))
                    })?;
                    let last = self.apply(batch).map_err(|reason| {
                        corrupt(path, format!("record at offset {offset}: {reason}"))
                    })?;
                    max_index = Some(max_index.map_or(last, |max: u64| max.max(last)));
                    offset += (RECORD_HEADER_LEN + payload.len()) as u64;
                }
                RecordRead::Torn(reason) if is_last => {
                    torn = Some(format!("{reason} at offset {offset}"));
                    break;
                }
                RecordRead::Torn(reason) => {
                    return Err(corrupt(
                        path,
                        format!("{reason} at offset {offset}, and this is not the last segment"),
                    ));
                }
                RecordRead::Corrupt(reason) => {
                    return Err(corrupt(path, format!("{reason} at offset {offset}")));
                }
            }
        }
        let meta = SegmentMeta {
            seq,
            path: path.to_path_buf(),
            len: offset,
            max_index,
        };
        Ok((meta, torn))
    }

    /// Applies one batch with raft's overwrite semantics; returns its last index.
    fn apply(&mut self, batch: Vec<Entry>) -> Result<u64, String> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Err("empty batch".into());
        };
        let (first, last) = (first.index, last.index);
        match (self.entries.first(), self.entries.last()) {
            (Some(head), Some(tail)) => {
                if first > tail.index.saturating_add(1) {
                    return Err(format!(
                        "entries jump from index {} to {first}: entries are missing",
                        tail.index
                    ));
                }
                let keep = first.saturating_sub(head.index);
                self.entries
                    .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            }
            _ => self.entries.clear(),
        }
        self.entries.extend(batch);
        Ok(last)
    }

    /// The entries after the snapshot, once checked against it.
    fn into_entries_after(
        self,
        snapshot: &Snapshot,
        snapshot_path: &Path,
        first_segment: Option<&Path>,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.entries;
        let (Some(first), Some(path)) = (entries.first().map(|e| e.index), first_segment) else {
            return Ok(Vec::new());
        };
        let meta = snapshot.get_metadata();
        if first > meta.index.saturating_add(1) {
            return Err(corrupt(
                path,
                format!(
                    "the log starts at index {first} but the snapshot covers only up to {}: \
                     entries are missing",
                    meta.index
                ),
            ));
        }
        let covered = meta.index.saturating_add(1) - first;
        let covered = usize::try_from(covered)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        if meta.index > 0
            && let Some(at_snapshot) = covered.checked_sub(1).and_then(|i| entries.get(i))
            && at_snapshot.index == meta.index
            && at_snapshot.term != meta.term
        {
            return Err(corrupt(
                snapshot_path,
                format!(
                    "the snapshot is at index {} term {}, but the log has that index at term {}",
                    meta.index, meta.term, at_snapshot.term
                ),
            ));
        }
        entries.drain(..covered);
        Ok(entries)
    }
}

enum RecordRead<'a> {
    Record(&'a [u8]),
    /// Looks like an append cut short by a crash (only acceptable at the very end).
    Torn(&'static str),
    /// Damaged data that a crash cannot explain.
    Corrupt(&'static str),
}

fn read_record<'a>(reader: &mut ByteReader<'a>) -> RecordRead<'a> {
    let rest = reader.rest;
    let Some(header) = reader.take(RECORD_HEADER_LEN) else {
        return RecordRead::Torn("incomplete record header");
    };
    let mut fields = ByteReader::new(header);
    let (Some(payload_len), Some(payload_crc), Some(header_crc)) =
        (fields.u32(), fields.u32(), fields.u32())
    else {
        return RecordRead::Torn("incomplete record header");
    };
    if crc32fast::hash(header.get(..8).unwrap_or_default()) != header_crc {
        // A file extended by a crash before its data landed reads as zeros.
        if rest.iter().all(|byte| *byte == 0) {
            return RecordRead::Torn("zero-filled tail");
        }
        return RecordRead::Corrupt("record header checksum mismatch");
    }
    let Some(payload) = usize::try_from(payload_len)
        .ok()
        .and_then(|len| reader.take(len))
    else {
        return RecordRead::Torn("record extends past the end of the file");
    };
    if crc32fast::hash(payload) != payload_crc {
        if reader.is_empty() {
            return RecordRead::Torn("last record fails its checksum");
        }
        return RecordRead::Corrupt("record checksum mismatch");
    }
    RecordRead::Record(payload)
}

fn check_segment_header(
    path: &Path,
    seq: u64,
    reader: &mut ByteReader<'_>,
) -> Result<(), StorageError> {
    let Some(header) = reader.take(SMALL_FILE_HEAD_LEN) else {
        return Err(corrupt(path, "shorter than a segment header".into()));
    };
    let Some(crc) = reader.u32() else {
        return Err(corrupt(path, "shorter than a segment header".into()));
    };
    let mut fields = ByteReader::new(header);
    if fields.array::<8>() != Some(SEGMENT_MAGIC) {
        return Err(corrupt(path, "not a log segment (bad magic)".into()));
    }
    let version = fields.u32();
    if version != Some(FORMAT_VERSION) {
        return Err(corrupt(
            path,
            format!("unsupported format version {version:?} (this build reads {FORMAT_VERSION})"),
        ));
    }
    if crc32fast::hash(header) != crc {
        return Err(corrupt(path, "segment header checksum mismatch".into()));
    }
    let stored_seq = fields.u64();
    if stored_seq != Some(seq) {
        return Err(corrupt(
            path,
            format!("header says segment {stored_seq:?} but the file name says {seq}"),
        ));
    }
    Ok(())
}

fn segment_header(seq: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    header.extend_from_slice(&SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// `None` if the payload does not fit a u32 length.
fn encode_record(payload: &[u8]) -> Option<Vec<u8>> {
    let payload_len = u32::try_from(payload.len()).ok()?;
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    record.extend_from_slice(&payload_len.to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&record);
    record.extend_from_slice(&header_crc.to_le_bytes());
    record.extend_from_slice(payload);
    Some(record)
}

fn encode_batch(entries: &[Entry]) -> Result<Vec<u8>, StorageError> {
    let too_large = || raft::Error::ConfigInvalid("a log batch too large to store".into());
    let mut payload = Vec::new();
    let count = u32::try_from(entries.len()).map_err(|_| too_large())?;
    payload.extend_from_slice(&count.to_le_bytes());
    for entry in entries {
        let encoded = entry.write_to_bytes().map_err(raft::Error::CodecError)?;
        let len = u32::try_from(encoded.len()).map_err(|_| too_large())?;
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(&encoded);
    }
    Ok(payload)
}

fn decode_batch(payload: &[u8]) -> Result<Vec<Entry>, String> {
    let mut reader = ByteReader::new(payload);
    let count = reader.u32().ok_or("batch shorter than its entry count")?;
    if count == 0 {
        return Err("empty batch".into());
    }
    let mut entries: Vec<Entry> = Vec::new();
    for n in 0..count {
        let bytes = reader
            .u32()
            .and_then(|len| reader.take(usize::try_from(len).ok()?))
            .ok_or_else(|| format!("batch ends inside entry {n} of {count}"))?;
        let mut entry = Entry::default();
        entry
            .merge_from_bytes(bytes)
            .map_err(|e| format!("entry {n} does not decode: {e}"))?;
        let expected = match entries.last() {
            Some(previous) => previous.index.saturating_add(1),
            None if entry.index == 0 => return Err("entry index 0".into()),
            None => entry.index,
        };
        if entry.index != expected {
            return Err(format!(
                "entries in a batch are not consecutive ({} where {expected} was due)",
                entry.index
            ));
        }
        entries.push(entry);
    }
    if !reader.is_empty() {
        return Err("bytes after the last entry of the batch".into());
    }
    Ok(entries)
}

fn encode_small_file(magic: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(SMALL_FILE_HEAD_LEN + body.len() + 4);
    contents.extend_from_slice(&magic);
    contents.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    contents.extend_from_slice(&(body.len() as u64).to_le_bytes());
    contents.extend_from_slice(body);
    let crc = crc32fast::hash(&contents);
    contents.extend_from_slice(&crc.to_le_bytes());
    contents
}

/// Verifies a `hardstate`/`snapshot` file and returns its body.
fn decode_small_file<'a>(
    path: &Path,
    magic: [u8; 8],
    bytes: &'a [u8],
) -> Result<&'a [u8], StorageError> {
    let mut reader = ByteReader::new(bytes);
    if reader.array::<8>() != Some(magic) {
        return Err(corrupt(path, "bad magic".into()));
    }
    let version = reader.u32();
    if version != Some(FORMAT_VERSION) {
        return Err(corrupt(
            path,
            format!("unsupported format version {version:?} (this build reads {FORMAT_VERSION})"),
        ));
    }
    let body_len = reader.u64();
    let expected_len = body_len
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| len.checked_add(SMALL_FILE_HEAD_LEN + 4));
    if expected_len != Some(bytes.len()) {
        return Err(corrupt(
            path,
            format!(
                "file is {} bytes but its header announces a {body_len:?}-byte body",
                bytes.len()
            ),
        ));
    }
    let (Some(body), Some(crc)) = (
        reader.take(reader.rest.len().saturating_sub(4)),
        reader.u32(),
    ) else {
        return Err(corrupt(path, "truncated".into()));
    };
    let covered = bytes
        .get(..bytes.len().saturating_sub(4))
        .unwrap_or_default();
    if crc32fast::hash(covered) != crc {
        return Err(corrupt(path, "checksum mismatch".into()));
    }
    Ok(body)
}

fn decode_hard_state_file(
    path: &Path,
    bytes: &[u8],
) -> Result<(HardState, ConfState), StorageError> {
    let body = decode_small_file(path, HARD_STATE_MAGIC, bytes)?;
    let mut reader = ByteReader::new(body);
    let hard_state_bytes = reader
        .u32()
        .and_then(|len| reader.take(usize::try_from(len).ok()?))
        .ok_or_else(|| corrupt(path, "hard state length out of range".into()))?;
    let mut hard_state = HardState::default();
    hard_state
        .merge_from_bytes(hard_state_bytes)
        .map_err(|e| corrupt(path, format!("hard state does not decode: {e}")))?;
    let mut conf_state = ConfState::default();
    conf_state
        .merge_from_bytes(reader.rest)
        .map_err(|e| corrupt(path, format!("conf state does not decode: {e}")))?;
    Ok((hard_state, conf_state))
}

fn decode_snapshot_file(path: &Path, bytes: &[u8]) -> Result<(Snapshot, u64), StorageError> {
    let body = decode_small_file(path, SNAPSHOT_MAGIC, bytes)?;
    let mut reader = ByteReader::new(body);
    let first_live_seq = reader
        .u64()
        .ok_or_else(|| corrupt(path, "missing the first live segment number".into()))?;
    let mut snapshot = Snapshot::default();
    snapshot
        .merge_from_bytes(reader.rest)
        .map_err(|e| corrupt(path, format!("snapshot does not decode: {e}")))?;
    if snapshot.get_metadata().index == 0 {
        return Err(corrupt(path, "snapshot at index 0".into()));
    }
    Ok((snapshot, first_live_seq))
}

/// What the directory holds, by name.
struct DirListing {
    /// `log-<seq>.seg` files, sorted by seq.
    segments: Vec<(u64, PathBuf)>,
    /// Leftovers of interrupted atomic replacements.
    tmp_files: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<DirListing, StorageError> {
    let mut listing = DirListing {
        segments: Vec::new(),
        tmp_files: Vec::new(),
    };
    for item in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let item = item.map_err(|e| io_error(dir, e))?;
        let path = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(target) = name.strip_suffix(TMP_SUFFIX) {
            // Only our own leftovers: a replacement of hardstate, snapshot or a segment.
            if target == HARD_STATE_FILE
                || target == SNAPSHOT_FILE
                || (target.starts_with(SEGMENT_PREFIX) && target.ends_with(SEGMENT_SUFFIX))
            {
                listing.tmp_files.push(path);
            }
        } else if let Some(number) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|rest| rest.strip_suffix(SEGMENT_SUFFIX))
        {
            let seq = number
                .parse::<u64>()
                .ok()
                .filter(|_| number.len() == 20)
                .ok_or_else(|| {
                    corrupt(&path, "a log segment name without a valid number".into())
                })?;
            listing.segments.push((seq, path));
        }
    }
    listing.segments.sort_by_key(|(seq, _)| *seq);
    Ok(listing)
}

fn segment_file_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

fn truncate_file(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads little-endian fields off a byte slice without ever panicking.
struct ByteReader<'a> {
    /// What has not been read yet.
    rest: &'a [u8],
}

impl<'a> ByteReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use raft::Storage as _;
    use raft::prelude::SnapshotMetadata;

    use super::*;

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn open(dir: &Path) -> DiskStorage {
        DiskStorage::open(dir, &logger()).expect("open storage")
    }

    fn open_err(dir: &Path) -> StorageError {
        match DiskStorage::open(dir, &logger()) {
            Ok(_) => panic!("open of {} should have failed", dir.display()),
            Err(e) => e,
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("entry {index} of term {term}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn batch(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes.map(|index| entry(index, term)).collect()
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn all_entries(storage: &DiskStorage) -> Vec<Entry> {
        let first = storage.first_index().expect("first index");
        let last = storage.last_index().expect("last index");
        storage
            .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
            .expect("entries")
    }

    fn terms(storage: &DiskStorage) -> Vec<(u64, u64)> {
        all_entries(storage)
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    fn raft_state(storage: &DiskStorage) -> (HardState, ConfState) {
        let state = storage.initial_state().expect("initial state");
        (state.hard_state, state.conf_state)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read dir")
            .map(|item| item.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
            .collect();
        files.sort();
        files
    }

    fn dir_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fs::read_dir(dir)
            .expect("read dir")
            .map(|item| {
                let path = item.expect("dir entry").path();
                let bytes = fs::read(&path).expect("read file");
                (path, bytes)
            })
            .collect()
    }

    fn flip_byte(path: &Path, offset: usize) {
        let mut bytes = fs::read(path).expect("read file");
        let byte = bytes.get_mut(offset).expect("offset inside the file");
        *byte ^= 0x40;
        fs::write(path, bytes).expect("write file");
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).expect("metadata").len()
    }

    fn assert_corrupt(error: StorageError, expected_path: &Path) -> String {
        match error {
            StorageError::Corrupt { path, reason } => {
                assert_eq!(
                    path, expected_path,
                    "corruption blamed on the wrong file ({reason})"
                );
                reason
            }
            other => panic!(
                "expected Corrupt for {}, got {other}",
                expected_path.display()
            ),
        }
    }

    fn leader_snapshot(index: u64, term: u64, voters: Vec<u64>, data: &[u8]) -> Snapshot {
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(ConfState::from((voters, vec![])));
        let mut snapshot = Snapshot {
            data: data.to_vec().into(),
            ..Default::default()
        };
        snapshot.set_metadata(meta);
        snapshot
    }

    #[test]
    fn reopen_restores_entries_hard_state_and_conf_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        assert!(!storage.is_initialized());
        assert_eq!(storage.first_index().ok(), Some(1));
        assert_eq!(storage.last_index().ok(), Some(0));
        drop(storage);
        // Opening alone stores nothing.
        let storage = open(dir.path());
        assert!(!storage.is_initialized());

        storage.initialize(&[1, 2, 3]).expect("initialize");
        assert!(storage.is_initialized());
        assert!(matches!(
            storage.initialize(&[1, 2, 3]),
            Err(StorageError::Rejected { .. })
        ));
        storage.append(&batch(1..=3, 1)).expect("append");
        storage.append(&batch(4..=5, 2)).expect("append");
        storage
            .set_hard_state(hard_state(2, 1, 3))
            .expect("hard state");
        storage.set_commit(4).expect("commit");
        let conf_state = ConfState::from((vec![1, 2, 3, 4], vec![5]));
        storage
            .set_conf_state(conf_state.clone())
            .expect("conf state");
        let written = all_entries(&storage);
        assert_eq!(written.len(), 5);
        drop(storage);

        let storage = open(dir.path());
        assert!(storage.is_initialized());
        let (hs, cs) = raft_state(&storage);
        assert_eq!(hs, hard_state(2, 1, 4));
        assert_eq!(cs, conf_state);
        assert_eq!(all_entries(&storage), written);
        assert_eq!(storage.term(5).ok(), Some(2));
        assert_eq!(storage.term(3).ok(), Some(1));
        assert_eq!(storage.term(0).ok(), Some(0));
        assert!(matches!(
            storage.term(6),
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        ));
        // A size limit still returns at least one entry.
        let limited = storage
            .entries(1, 6, 1, raft::GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn conflicting_append_truncates_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        // Every append in its own segment: the overwrite reaches into older files.
        storage.set_segment_roll_bytes(1);
        storage.append(&batch(1..=5, 1)).expect("append");
        storage.append(&batch(6..=8, 1)).expect("append");
        storage.append(&batch(4..=5, 2)).expect("append");
        let expected = vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)];
        assert_eq!(terms(&storage), expected);
        assert_eq!(segment_files(dir.path()).len(), 3);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(terms(&storage), expected);
        assert_eq!(storage.last_index().ok(), Some(5));
        storage
            .append(&batch(6..=6, 3))
            .expect("append after reopen");
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(
            terms(&storage),
            vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]
        );
        // A gap or a non-consecutive batch is refused and changes nothing.
        assert!(matches!(
            storage.append(&batch(9..=9, 3)),
            Err(StorageError::Rejected { .. })
        ));
        assert!(matches!(
            storage.append(&[entry(7, 3), entry(9, 3)]),
            Err(StorageError::Rejected { .. })
        ));
        assert_eq!(storage.last_index().ok(), Some(6));
    }

    #[test]
    fn compaction_deletes_covered_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.set_segment_roll_bytes(1);
        storage.initialize(&[1]).expect("initialize");
        for index in 1..=10 {
            storage.append(&[entry(index, 1)]).expect("append");
        }
        storage
            .set_hard_state(hard_state(1, 1, 8))
            .expect("hard state");
        assert_eq!(segment_files(dir.path()).len(), 10);

        let conf_state = ConfState::from((vec![1], vec![]));
        storage
            .create_snapshot(6, conf_state.clone(), b"state at 6".to_vec())
            .expect("snapshot");
        assert_eq!(storage.first_index().ok(), Some(7));
        assert_eq!(storage.term(6).ok(), Some(1));
        assert!(matches!(
            storage.term(5),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        assert!(matches!(
            storage.entries(6, 8, None, raft::GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
        // Segments holding only entries 1..=6 are gone.
        assert_eq!(segment_files(dir.path()).len(), 4);
        let kept = all_entries(&storage);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(storage.first_index().ok(), Some(7));
        assert_eq!(storage.last_index().ok(), Some(10));
        assert_eq!(all_entries(&storage), kept);
        assert_eq!(storage.latest_snapshot().get_data(), b"state at 6");
        let served = storage.snapshot(0, 2).expect("snapshot for a follower");
        assert_eq!(served.get_metadata().index, 6);
        assert_eq!(served.get_metadata().get_conf_state(), &conf_state);
        assert!(matches!(
            storage.snapshot(7, 2),
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert_eq!(raft_state(&storage).0, hard_state(1, 1, 8));

        // Covering the whole log (past the stored commit) deletes every segment and
        // raises the commit, durably.
        storage
            .create_snapshot(10, conf_state.clone(), b"state at 10".to_vec())
            .expect("snapshot");
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(raft_state(&storage).0.commit, 10);
        assert!(matches!(
            storage.create_snapshot(9, conf_state.clone(), Vec::new()),
            Err(StorageError::Raft(raft::Error::Store(
                raft::StorageError::SnapshotOutOfDate
            )))
        ));
        storage
            .append(&[entry(11, 2)])
            .expect("append after compaction");
        assert_eq!(segment_files(dir.path()).len(), 1);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(storage.first_index().ok(), Some(11));
        assert_eq!(terms(&storage), vec![(11, 2)]);
        assert_eq!(storage.term(10).ok(), Some(1));
        assert_eq!(raft_state(&storage).0, hard_state(1, 1, 10));
        assert_eq!(storage.latest_snapshot().get_data(), b"state at 10");
    }

    #[test]
    fn compaction_keeps_a_straddling_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.append(&batch(1..=10, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 0, 10))
            .expect("hard state");
        storage
            .create_snapshot(5, ConfState::from((vec![1], vec![])), b"five".to_vec())
            .expect("snapshot");
        assert_eq!(segment_files(dir.path()).len(), 1);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(storage.first_index().ok(), Some(6));
        assert_eq!(
            terms(&storage),
            (6..=10).map(|index| (index, 1)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn snapshot_from_the_leader_replaces_the_log_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.initialize(&[1, 2, 3]).expect("initialize");
        storage.append(&batch(1..=5, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 3, 3))
            .expect("hard state");
        let old_segments = segment_files(dir.path());
        assert_eq!(old_segments.len(), 1);
        let old_segment_bytes = fs::read(&old_segments[0]).expect("read segment");

        storage
            .apply_snapshot(leader_snapshot(20, 4, vec![1, 2], b"leader state"))
            .expect("apply snapshot");
        assert_eq!(storage.first_index().ok(), Some(21));
        assert_eq!(storage.last_index().ok(), Some(20));
        assert_eq!(storage.term(20).ok(), Some(4));
        let (hs, cs) = raft_state(&storage);
        assert_eq!(hs, hard_state(4, 0, 20));
        assert_eq!(cs, ConfState::from((vec![1, 2], vec![])));
        assert!(segment_files(dir.path()).is_empty());
        assert!(matches!(
            storage.apply_snapshot(leader_snapshot(15, 3, vec![1], b"old")),
            Err(StorageError::Raft(raft::Error::Store(
                raft::StorageError::SnapshotOutOfDate
            )))
        ));
        storage.append(&batch(21..=22, 4)).expect("append");
        storage
            .set_hard_state(hard_state(4, 0, 21))
            .expect("hard state");
        drop(storage);

        // A crash between writing the snapshot and deleting the old log would leave
        // the old segment behind: it must neither come back nor block the start.
        fs::write(&old_segments[0], old_segment_bytes).expect("restore old segment");
        let storage = open(dir.path());
        assert!(!old_segments[0].exists());
        assert_eq!(storage.first_index().ok(), Some(21));
        assert_eq!(terms(&storage), vec![(21, 4), (22, 4)]);
        let (hs, cs) = raft_state(&storage);
        assert_eq!(hs, hard_state(4, 0, 21));
        assert_eq!(cs, ConfState::from((vec![1, 2], vec![])));
        assert_eq!(storage.latest_snapshot().get_data(), b"leader state");
    }

    #[test]
    fn snapshot_newer_than_the_hard_state_file_wins_on_open() {
        // The node installs a leader's snapshot and crashes before it persists the
        // next hard state: the snapshot decides commit, term and conf state.
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.initialize(&[1, 2, 3]).expect("initialize");
        storage
            .set_hard_state(hard_state(2, 3, 0))
            .expect("hard state");
        storage
            .apply_snapshot(leader_snapshot(7, 3, vec![1, 2, 3, 4], b"s"))
            .expect("apply snapshot");
        let in_memory = raft_state(&storage);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(raft_state(&storage), in_memory);
        assert_eq!(in_memory.0, hard_state(3, 0, 7));
        assert_eq!(in_memory.1.voters, vec![1, 2, 3, 4]);
    }

    #[test]
    fn torn_last_record_is_dropped_and_the_file_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.append(&batch(1..=2, 1)).expect("append");
        storage.append(&batch(3..=4, 1)).expect("append");
        let segment = segment_files(dir.path()).remove(0);
        let two_records = file_len(&segment);
        storage.append(&batch(5..=6, 1)).expect("append");
        let three_records = file_len(&segment);
        drop(storage);

        // The crash cut the third record short.
        let file = OpenOptions::new().write(true).open(&segment).expect("open");
        file.set_len(three_records - 3).expect("truncate");
        drop(file);
        let storage = open(dir.path());
        assert_eq!(storage.last_index().ok(), Some(4));
        assert_eq!(file_len(&segment), two_records);
        storage
            .append(&batch(5..=6, 2))
            .expect("append after recovery");
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(
            terms(&storage),
            vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]
        );
        let full = file_len(&segment);
        drop(storage);

        // The crash extended the file but its data never landed (zeros).
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        file.write_all(&[0; 100]).expect("extend");
        drop(file);
        let storage = open(dir.path());
        assert_eq!(storage.last_index().ok(), Some(6));
        assert_eq!(file_len(&segment), full);
    }

    #[test]
    fn damaged_record_in_the_middle_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.append(&batch(1..=2, 1)).expect("append");
        storage.append(&batch(3..=4, 1)).expect("append");
        storage.append(&batch(5..=6, 1)).expect("append");
        drop(storage);
        let segment = segment_files(dir.path()).remove(0);
        let first_payload = SEGMENT_HEADER_LEN as usize + RECORD_HEADER_LEN + 2;

        flip_byte(&segment, first_payload);
        let reason = assert_corrupt(open_err(dir.path()), &segment);
        assert!(reason.contains("checksum"), "{reason}");
        flip_byte(&segment, first_payload);
        assert_eq!(open(dir.path()).last_index().ok(), Some(6));

        // A damaged length is not mistaken for a torn tail.
        let first_length = SEGMENT_HEADER_LEN as usize + 1;
        flip_byte(&segment, first_length);
        assert_corrupt(open_err(dir.path()), &segment);
        flip_byte(&segment, first_length);

        flip_byte(&segment, 0);
        let reason = assert_corrupt(open_err(dir.path()), &segment);
        assert!(reason.contains("magic"), "{reason}");
    }

    #[test]
    fn corrupt_hard_state_file_refuses_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.initialize(&[1]).expect("initialize");
        storage.append(&batch(1..=2, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 1, 2))
            .expect("hard state");
        drop(storage);
        let path = dir.path().join(HARD_STATE_FILE);
        let good = fs::read(&path).expect("read");

        flip_byte(&path, good.len() / 2);
        assert_corrupt(open_err(dir.path()), &path);
        fs::write(&path, good.get(..good.len() - 1).unwrap_or_default()).expect("write");
        assert_corrupt(open_err(dir.path()), &path);
        fs::write(&path, b"").expect("write");
        assert_corrupt(open_err(dir.path()), &path);
        fs::write(&path, &good).expect("write");
        assert_eq!(raft_state(&open(dir.path())).0, hard_state(1, 1, 2));
    }

    #[test]
    fn corrupt_snapshot_file_refuses_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.append(&batch(1..=4, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 0, 4))
            .expect("hard state");
        storage
            .create_snapshot(3, ConfState::from((vec![1], vec![])), vec![7; 64])
            .expect("snapshot");
        drop(storage);
        let path = dir.path().join(SNAPSHOT_FILE);
        let len = fs::read(&path).expect("read").len();

        flip_byte(&path, len - 10);
        let reason = assert_corrupt(open_err(dir.path()), &path);
        assert!(reason.contains("checksum"), "{reason}");
    }

    #[test]
    fn missing_log_pieces_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.set_segment_roll_bytes(1);
        storage.append(&batch(1..=2, 1)).expect("append");
        storage.append(&batch(3..=4, 1)).expect("append");
        storage.append(&batch(5..=6, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 0, 6))
            .expect("hard state");
        drop(storage);
        let segments = segment_files(dir.path());

        // A committed, acknowledged last record that fails its checks is not a torn
        // tail: the commit index shows entries are missing.
        let last = &segments[2];
        let bytes = fs::read(last).expect("read");
        fs::write(last, bytes.get(..bytes.len() - 1).unwrap_or_default()).expect("write");
        let reason = assert_corrupt(open_err(dir.path()), &dir.path().join(HARD_STATE_FILE));
        assert!(reason.contains("commit"), "{reason}");
        fs::write(last, &bytes).expect("write");

        fs::remove_file(&segments[1]).expect("remove");
        let reason = assert_corrupt(open_err(dir.path()), &segments[2]);
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn injected_write_failures_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.initialize(&[1, 2, 3]).expect("initialize");
        storage.append(&batch(1..=3, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 1, 2))
            .expect("hard state");
        let files_before = dir_contents(dir.path());
        let state_before = (raft_state(&storage), all_entries(&storage));

        storage.inject_write_failures(true);
        let failures = [
            storage.append(&batch(4..=4, 1)),
            storage.set_hard_state(hard_state(2, 2, 3)),
            storage.set_commit(3),
            storage.set_conf_state(ConfState::from((vec![1], vec![]))),
            storage.create_snapshot(2, ConfState::from((vec![1, 2, 3], vec![])), vec![1]),
            storage.apply_snapshot(leader_snapshot(9, 2, vec![1], b"x")),
        ];
        for failure in failures {
            match failure {
                Err(StorageError::Io { source, .. }) => {
                    assert_eq!(source.kind(), io::ErrorKind::StorageFull);
                    assert!(source.to_string().contains("injected write failure"));
                }
                other => panic!("expected an injected I/O failure, got {other:?}"),
            }
        }
        assert_eq!((raft_state(&storage), all_entries(&storage)), state_before);
        assert_eq!(storage.latest_snapshot(), Snapshot::default());
        assert_eq!(dir_contents(dir.path()), files_before);

        storage.inject_write_failures(false);
        storage
            .append(&batch(4..=4, 1))
            .expect("append once the disk has room");
        drop(storage);
        let storage = open(dir.path());
        assert_eq!(storage.last_index().ok(), Some(4));
        assert_eq!(raft_state(&storage).0, hard_state(1, 1, 2));
    }

    /// Runs raft-rs' ready loop for a single-voter node until it is idle; returns the
    /// data of the normal entries applied.
    fn drive(node: &mut raft::RawNode<DiskStorage>, storage: &DiskStorage) -> Vec<Vec<u8>> {
        let mut applied = Vec::new();
        let mut record = |entries: Vec<Entry>| {
            for entry in entries {
                if entry.entry_type == raft::prelude::EntryType::EntryNormal
                    && !entry.data.is_empty()
                {
                    applied.push(entry.data.to_vec());
                }
            }
        };
        while node.has_ready() {
            let mut ready = node.ready();
            if *ready.snapshot() != Snapshot::default() {
                storage
                    .apply_snapshot(ready.snapshot().clone())
                    .expect("apply snapshot");
            }
            record(ready.take_committed_entries());
            storage.append(ready.entries()).expect("append");
            if let Some(hs) = ready.hs() {
                storage.set_hard_state(hs.clone()).expect("hard state");
            }
            let mut light = node.advance(ready);
            if let Some(commit) = light.commit_index() {
                storage.set_commit(commit).expect("commit");
            }
            record(light.take_committed_entries());
            node.advance_apply();
        }
        applied
    }

    fn raft_config(applied: u64) -> raft::Config {
        raft::Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 3,
            applied,
            ..Default::default()
        }
    }

    #[test]
    fn raft_runs_on_the_storage_across_compaction_and_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.initialize(&[1]).expect("initialize");
        let mut node =
            raft::RawNode::new(&raft_config(0), storage.clone(), &logger()).expect("raw node");
        node.campaign().expect("campaign");
        drive(&mut node, &storage);
        node.propose(vec![], b"a".to_vec()).expect("propose");
        node.propose(vec![], b"b".to_vec()).expect("propose");
        assert_eq!(
            drive(&mut node, &storage),
            vec![b"a".to_vec(), b"b".to_vec()]
        );

        let applied = node.raft.raft_log.applied;
        storage
            .create_snapshot(applied, ConfState::from((vec![1], vec![])), b"ab".to_vec())
            .expect("snapshot");
        node.propose(vec![], b"c".to_vec()).expect("propose");
        assert_eq!(drive(&mut node, &storage), vec![b"c".to_vec()]);
        let term = node.raft.term;
        let last = storage.last_index().expect("last index");
        drop(node);
        drop(storage);

        let storage = open(dir.path());
        assert_eq!(storage.first_index().ok(), Some(applied + 1));
        assert_eq!(storage.last_index().ok(), Some(last));
        let mut node = raft::RawNode::new(&raft_config(applied), storage.clone(), &logger())
            .expect("raw node after restart");
        node.campaign().expect("campaign");
        // Re-applies what came after the snapshot, then serves a new proposal.
        let replayed = drive(&mut node, &storage);
        assert_eq!(replayed, vec![b"c".to_vec()]);
        node.propose(vec![], b"d".to_vec()).expect("propose");
        assert_eq!(drive(&mut node, &storage), vec![b"d".to_vec()]);
        assert!(node.raft.term > term);
        assert_eq!(storage.latest_snapshot().get_data(), b"ab");
    }
}
