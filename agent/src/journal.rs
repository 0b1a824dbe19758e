//! Group commit of the agent's checkpoints, and the order in which the actor's
//! outputs leave it.
//!
//! Apart from recovery, which runs before it and only reads checkpoints (and cuts
//! torn logs), the actor does not touch the disk. Every change under
//! `work_dir/meta` goes to the [`Journal`] as a
//! [`DiskOp`], and every output that depends on checkpoints (a message to the
//! master, an event or an answer to an executor, starting an executor) as an
//! *effect*. Ops issued while one batch is being written form the next batch, which
//! one blocking worker writes with one fsync per file and directory it touched,
//! however many records went into them: the group commit. An effect leaves once every
//! op issued before it is durable, and effects leave in the order they were issued.
//! So nothing is forwarded, acknowledged or answered before its record is on disk,
//! the actor never waits for the disk, and a burst of launches and updates shares
//! the waiting.
//!
//! A batch runs in three steps: (1) every file a [`DiskOp::WriteFile`] or
//! [`DiskOp::Prepare`] replaces is written and fsynced under a temporary name in the
//! staging directory; (2) every op takes effect, in order: log appends, renames into
//! place, directories created and removed, so a later op always sees what an earlier
//! one did; (3) every log written and every directory that gained an entry is
//! fsynced. A file is thus replaced atomically (old or new contents, never a mix),
//! and the staged files live outside every tree an op may remove.
//!
//! Failures: a `WriteFile`, `Prepare` or removal that fails is reported in the
//! [`BatchOutcome`] (the actor warns, or fails the launch). A status-update log that
//! cannot be written, or anything that cannot be fsynced, is fatal
//! ([`BatchOutcome::fatal`]): records that may or may not be on disk can neither be
//! acknowledged nor taken back, so the agent stops, as Mesos' agent does, and its
//! restart recovers from what the disk holds.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinHandle};

use crate::checkpoint::{self, RecordLog};
use crate::meta;

/// One change to the checkpoints.
#[derive(Debug)]
pub(crate) enum DiskOp {
    /// Appends a record to a status-update log; `create` first creates the log (and
    /// its directory), replacing any old file.
    Append {
        log: PathBuf,
        record: Vec<u8>,
        create: bool,
    },
    /// Replaces a file atomically (best effort: a failure is a warning).
    WriteFile { path: PathBuf, bytes: Vec<u8> },
    /// Replaces each of `files` atomically; the outcome is reported under
    /// `ticket` (after a failure some files may be in place).
    Prepare {
        ticket: String,
        files: Vec<(PathBuf, Vec<u8>)>,
    },
    /// Removes a directory tree, then the parents it leaves empty up to `stop_at`.
    RemoveTree { dir: PathBuf, stop_at: PathBuf },
    /// Removes a file; a missing one is fine.
    RemoveFile { path: PathBuf },
}

/// What became of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// The result of every [`DiskOp::Prepare`], by ticket, in the order issued.
    pub prepared: Vec<(String, Result<(), String>)>,
    /// Best-effort ops that failed, described for the log.
    pub warnings: Vec<String>,
    /// Something could not be made durable; the batch's effects must never leave.
    pub fatal: Option<String>,
    /// Ops in the batch.
    pub ops: usize,
    /// How long writing and syncing it took.
    pub took: Duration,
}

/// The worker's side: executes batches. Owned by the worker while a batch runs.
#[derive(Debug)]
pub(crate) struct DiskStore {
    /// Where replaced files are staged: under `meta` (so a rename never crosses file
    /// systems) but outside every tree an op removes. Exists.
    staging: PathBuf,
    /// Status-update logs opened so far, by path; dropped when their tree is removed.
    logs: HashMap<PathBuf, RecordLog>,
    /// Names the next staged file.
    staged: u64,
}

impl DiskStore {
    /// A store staging in `staging`, which must exist and hold nothing of value
    /// (leftovers of a crash are removed when the agent starts).
    pub(crate) fn new(staging: PathBuf) -> Self {
        Self {
            staging,
            logs: HashMap::new(),
            staged: 0,
        }
    }

    /// Writes one batch; see the module documentation.
    pub(crate) fn execute(&mut self, ops: Vec<DiskOp>) -> BatchOutcome {
        let started = Instant::now();
        let mut outcome = BatchOutcome {
            ops: ops.len(),
            ..BatchOutcome::default()
        };
        self.write(ops, &mut outcome);
        outcome.took = started.elapsed();
        outcome
    }

    fn write(&mut self, ops: Vec<DiskOp>, outcome: &mut BatchOutcome) {
        let mut staged: Vec<io::Result<Vec<PathBuf>>> = ops
            .iter()
            .map(|op| match op {
                DiskOp::WriteFile { bytes, .. } => self.stage(&[bytes]),
                DiskOp::Prepare { files, .. } => {
                    let contents: Vec<&Vec<u8>> = files.iter().map(|(_, bytes)| bytes).collect();
                    self.stage(&contents)
                }
                _ => Ok(Vec::new()),
            })
            .collect();

        let mut written_logs = BTreeSet::new();
        let mut new_logs = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for (op, staged) in ops.into_iter().zip(staged.iter_mut()) {
            let staged = std::mem::replace(staged, Ok(Vec::new()));
            match op {
                DiskOp::Append {
                    log,
                    record,
                    create,
                } => {
                    if let Err(e) = self.append(&log, &record, create) {
                        outcome.fatal = Some(format!(
                            "cannot write the status-update log {}: {e}",
                            log.display()
                        ));
                        break;
                    }
                    if create {
                        new_logs.insert(log.clone());
                        if let Some(parent) = log.parent() {
                            dirs.insert(parent.to_path_buf());
                        }
                    }
                    written_logs.insert(log);
                }
                DiskOp::WriteFile { path, .. } => {
                    match place(staged, std::slice::from_ref(&path)) {
                        Ok(parents) => dirs.extend(parents),
                        Err(e) => outcome
                            .warnings
                            .push(format!("cannot write {}: {e}", path.display())),
                    }
                }
                DiskOp::Prepare { ticket, files } => {
                    let targets: Vec<PathBuf> = files.into_iter().map(|(path, _)| path).collect();
                    let result = match place(staged, &targets) {
                        Ok(parents) => {
                            dirs.extend(parents);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    outcome.prepared.push((ticket, result));
                }
                DiskOp::RemoveTree { dir, stop_at } => {
                    self.logs.retain(|path, _| !path.starts_with(&dir));
                    if let Err(e) = meta::remove_tree(&dir, &stop_at) {
                        outcome
                            .warnings
                            .push(format!("cannot remove {}: {e}", dir.display()));
                    }
                }
                DiskOp::RemoveFile { path } => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => outcome
                        .warnings
                        .push(format!("cannot remove {}: {e}", path.display())),
                    _ => {}
                },
            }
        }
        // Staged for ops a fatal error kept from running.
        for tmp in staged.into_iter().flatten() {
            discard(&tmp);
        }
        if outcome.fatal.is_some() {
            return;
        }

        for path in &written_logs {
            // A log whose tree a later op removed needs no sync.
            let Some(log) = self.logs.get(path) else {
                continue;
            };
            let synced = if new_logs.contains(path) {
                log.sync_all()
            } else {
                log.sync_data()
            };
            if let Err(e) = synced {
                outcome.fatal = Some(format!(
                    "cannot make the status-update log {} durable: {e}",
                    path.display()
                ));
                return;
            }
        }
        for dir in &dirs {
            match checkpoint::sync_dir(dir) {
                // Removed by a later op of the batch: nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    outcome.fatal = Some(format!("cannot make {} durable: {e}", dir.display()));
                    return;
                }
                Ok(()) => {}
            }
        }
    }

    /// Writes and fsyncs each of `contents` to a fresh staging file; on failure the
    /// ones already written are removed.
    fn stage(&mut self, contents: &[&Vec<u8>]) -> io::Result<Vec<PathBuf>> {
        let mut written = Vec::with_capacity(contents.len());
        for bytes in contents {
            self.staged += 1;
            let tmp = self.staging.join(format!("{}.tmp", self.staged));
            let synced = checkpoint::write_synced(&tmp, bytes);
            written.push(tmp);
            if let Err(e) = synced {
                discard(&written);
                return Err(e);
            }
        }
        Ok(written)
    }

    fn append(&mut self, path: &Path, record: &[u8], create: bool) -> io::Result<()> {
        if create {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            self.logs
                .insert(path.to_path_buf(), RecordLog::create_unsynced(path)?);
        }
        let log = match self.logs.entry(path.to_path_buf()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            // Recovered when the agent started; its torn tail, if any, is cut.
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(RecordLog::open_for_append(path)?)
            }
        };
        log.write(record)
    }
}

/// Renames each staged file onto its target (creating the target's directory);
/// returns the directories that gained an entry. On failure the staged files are
/// removed (targets renamed before the failure stay in place).
fn place(staged: io::Result<Vec<PathBuf>>, targets: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let staged = staged?;
    let mut parents = Vec::with_capacity(targets.len());
    for (tmp, target) in staged.iter().zip(targets) {
        let parent = target.parent().unwrap_or(Path::new("."));
        let renamed = std::fs::create_dir_all(parent).and_then(|()| std::fs::rename(tmp, target));
        if let Err(e) = renamed {
            discard(&staged);
            return Err(e);
        }
        parents.push(parent.to_path_buf());
    }
    Ok(parents)
}

/// Removes staged files (those already renamed are gone, which is fine).
fn discard(staged: &[PathBuf]) {
    for tmp in staged {
        let _ = std::fs::remove_file(tmp);
    }
}

/// The actor's side: gathers ops into batches, hands one batch at a time to a
/// blocking worker, and holds effects back until what was written before them is
/// durable. `E` is the effect type (the actor's closures; anything in tests).
pub(crate) struct Journal<E> {
    /// Ops issued since the last batch was shipped, in order.
    open: Vec<DiskOp>,
    /// The worker's state; `None` while it travels with a batch in flight (or after
    /// the worker died).
    store: Option<DiskStore>,
    /// The batch being written: it is batch number `shipped`.
    in_flight: Option<JoinHandle<(DiskStore, BatchOutcome)>>,
    /// Number of the last batch shipped (0: none yet).
    shipped: u64,
    /// Every batch up to this number is durable. `durable <= shipped`.
    durable: u64,
    /// Effects held back, in the order issued, each with the number of the batch it
    /// waits for (non-decreasing, all above `durable`).
    outbox: VecDeque<(u64, E)>,
    /// A batch could not be made durable: nothing is written or released any more.
    failed: bool,
}

/// What [`Journal::completion`] resolves to.
pub(crate) type Completion = Result<(DiskStore, BatchOutcome), JoinError>;

impl<E> Journal<E> {
    pub(crate) fn new(store: DiskStore) -> Self {
        Self {
            open: Vec::new(),
            store: Some(store),
            in_flight: None,
            shipped: 0,
            durable: 0,
            outbox: VecDeque::new(),
            failed: false,
        }
    }

    /// Adds an op to the next batch.
    pub(crate) fn push(&mut self, op: DiskOp) {
        self.open.push(op);
    }

    /// Hands back `effect` if it may happen now (everything issued before it is
    /// durable); otherwise keeps it until [`Self::complete`] releases it.
    #[must_use]
    pub(crate) fn after_durable(&mut self, effect: E) -> Option<E> {
        if self.failed {
            return None;
        }
        if self.open.is_empty() && self.in_flight.is_none() && self.outbox.is_empty() {
            return Some(effect);
        }
        let batch = if self.open.is_empty() {
            self.shipped
        } else {
            self.shipped + 1
        };
        self.outbox.push_back((batch, effect));
        None
    }

    /// Starts writing the ops gathered so far, unless a batch is already being
    /// written (they wait for it: that is what groups them).
    pub(crate) fn ship(&mut self) {
        if self.failed || self.in_flight.is_some() || self.open.is_empty() {
            return;
        }
        let Some(mut store) = self.store.take() else {
            return;
        };
        let ops = std::mem::take(&mut self.open);
        self.shipped += 1;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let outcome = store.execute(ops);
            (store, outcome)
        }));
    }

    /// Resolves when the batch in flight is written; never without one. Cancel-safe:
    /// the batch keeps going and a later call picks it up.
    pub(crate) async fn completion(&mut self) -> Completion {
        match &mut self.in_flight {
            Some(handle) => handle.await,
            None => std::future::pending().await,
        }
    }

    /// Takes note of the batch in flight being written (as [`Self::completion`]
    /// returned) and returns its outcome with the effects that may now happen, in
    /// order. After a fatal outcome nothing is ever released again.
    pub(crate) fn complete(&mut self, completion: Completion) -> (BatchOutcome, Vec<E>) {
        self.in_flight = None;
        let outcome = match completion {
            Ok((store, outcome)) => {
                self.store = Some(store);
                outcome
            }
            Err(e) => BatchOutcome {
                fatal: Some(format!("the checkpoint writer failed: {e}")),
                ..BatchOutcome::default()
            },
        };
        if outcome.fatal.is_some() {
            self.failed = true;
            self.outbox.clear();
            return (outcome, Vec::new());
        }
        self.durable = self.shipped;
        let mut released = Vec::new();
        while let Some((batch, _)) = self.outbox.front()
            && *batch <= self.durable
        {
            if let Some((_, effect)) = self.outbox.pop_front() {
                released.push(effect);
            }
        }
        (outcome, released)
    }

    /// Nothing is waiting to be written (or nothing can be any more).
    pub(crate) fn is_idle(&self) -> bool {
        self.failed || (self.open.is_empty() && self.in_flight.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::read_records;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("staging")).unwrap();
        dir
    }

    fn journal(dir: &Path) -> Journal<&'static str> {
        Journal::new(DiskStore::new(dir.join("staging")))
    }

    fn append(dir: &Path, record: &[u8], create: bool) -> DiskOp {
        DiskOp::Append {
            log: dir.join("t/task.updates"),
            record: record.to_vec(),
            create,
        }
    }

    /// Ships, waits for the batch and completes it.
    async fn write_batch(j: &mut Journal<&'static str>) -> (BatchOutcome, Vec<&'static str>) {
        j.ship();
        let done = j.completion().await;
        j.complete(done)
    }

    #[tokio::test]
    async fn effects_wait_for_every_op_issued_before_them_and_keep_their_order() {
        let dir = temp_dir();
        let mut j = journal(&dir);
        // Nothing pending: an effect happens at once.
        assert_eq!(j.after_durable("immediate"), Some("immediate"));

        j.push(append(&dir, b"starting", true));
        assert_eq!(j.after_durable("forward starting"), None);
        j.ship();
        // Issued while batch 1 is written, after no new op: waits for batch 1 only.
        assert_eq!(j.after_durable("ack starting"), None);
        j.push(append(&dir, b"running", false));
        assert_eq!(j.after_durable("forward running"), None);
        // Not shipped while batch 1 is in flight: it will be written with batch 2.
        j.ship();

        let done = j.completion().await;
        // The record is on disk by the time its effects are released...
        let on_disk = read_records(&dir.join("t/task.updates")).unwrap().records;
        assert_eq!(on_disk, vec![b"starting".to_vec()]);
        let (outcome, released) = j.complete(done);
        assert!(outcome.fatal.is_none());
        assert_eq!(released, vec!["forward starting", "ack starting"]);
        // ... and what was issued after a later op still waits for it.
        assert!(!j.is_idle());
        assert_eq!(j.after_durable("after running"), None);

        let (_, released) = write_batch(&mut j).await;
        assert_eq!(released, vec!["forward running", "after running"]);
        let on_disk = read_records(&dir.join("t/task.updates")).unwrap().records;
        assert_eq!(on_disk, vec![b"starting".to_vec(), b"running".to_vec()]);
        assert!(j.is_idle());
        assert_eq!(j.after_durable("idle again"), Some("idle again"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn many_records_share_one_batch() {
        let dir = temp_dir();
        let mut j = journal(&dir);
        for task in 0..20 {
            j.push(DiskOp::Append {
                log: dir.join(format!("{task}/task.updates")),
                record: vec![task as u8],
                create: true,
            });
            assert_eq!(j.after_durable("ack"), None);
        }
        let (outcome, released) = write_batch(&mut j).await;
        assert!(outcome.fatal.is_none());
        assert_eq!(released.len(), 20);
        for task in 0..20u8 {
            let records = read_records(&dir.join(format!("{task}/task.updates")))
                .unwrap()
                .records;
            assert_eq!(records, vec![vec![task]]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn ops_take_effect_in_order_and_staged_files_are_cleaned_up() {
        let dir = temp_dir();
        let mut j = journal(&dir);
        let tree = dir.join("fw/run");
        // Removed, then written again in the same batch: the write survives.
        j.push(DiskOp::WriteFile {
            path: tree.join("old.info"),
            bytes: b"old".to_vec(),
        });
        j.push(DiskOp::RemoveTree {
            dir: tree.clone(),
            stop_at: dir.clone(),
        });
        j.push(DiskOp::Prepare {
            ticket: "run".into(),
            files: vec![
                (tree.join("executor.info"), b"executor".to_vec()),
                (tree.join("tasks/t/task.info"), b"task".to_vec()),
            ],
        });
        j.push(DiskOp::WriteFile {
            path: dir.join("agent_id"),
            bytes: b"id".to_vec(),
        });
        j.push(DiskOp::RemoveFile {
            path: dir.join("agent_id"),
        });
        let (outcome, _) = write_batch(&mut j).await;
        assert!(outcome.fatal.is_none() && outcome.warnings.is_empty());
        assert_eq!(outcome.prepared, vec![("run".to_string(), Ok(()))]);
        assert!(!tree.join("old.info").exists());
        assert_eq!(
            std::fs::read(tree.join("executor.info")).unwrap(),
            b"executor"
        );
        assert_eq!(
            std::fs::read(tree.join("tasks/t/task.info")).unwrap(),
            b"task"
        );
        assert!(!dir.join("agent_id").exists());
        assert_eq!(std::fs::read_dir(dir.join("staging")).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_prepare_is_reported_and_a_log_failure_is_fatal() {
        let dir = temp_dir();
        let mut j = journal(&dir);
        // A regular file where a directory is needed.
        std::fs::write(dir.join("blocker"), b"").unwrap();
        j.push(DiskOp::Prepare {
            ticket: "run".into(),
            files: vec![
                (dir.join("run/executor.info"), b"x".to_vec()),
                (dir.join("blocker/run/task.info"), b"y".to_vec()),
            ],
        });
        assert_eq!(j.after_durable("start"), None);
        let (outcome, released) = write_batch(&mut j).await;
        assert!(outcome.fatal.is_none());
        assert_eq!(outcome.prepared.len(), 1);
        assert!(outcome.prepared[0].1.is_err());
        assert_eq!(released, vec!["start"]);
        assert_eq!(std::fs::read_dir(dir.join("staging")).unwrap().count(), 0);

        j.push(DiskOp::Append {
            log: dir.join("blocker/t/task.updates"),
            record: b"lost".to_vec(),
            create: true,
        });
        assert_eq!(j.after_durable("forward"), None);
        let (outcome, released) = write_batch(&mut j).await;
        assert!(outcome.fatal.is_some());
        assert!(released.is_empty(), "nothing leaves after a fatal failure");
        // ... not even effects issued later.
        assert_eq!(j.after_durable("later"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_recovered_log_is_appended_to_after_its_records() {
        let dir = temp_dir();
        let path = dir.join("t/task.updates");
        let mut log = RecordLog::create(&path).unwrap();
        log.append(b"before the restart").unwrap();
        drop(log);
        let mut j = journal(&dir);
        j.push(append(&dir, b"after", false));
        let (outcome, _) = write_batch(&mut j).await;
        assert!(outcome.fatal.is_none());
        assert_eq!(
            read_records(&path).unwrap().records,
            vec![b"before the restart".to_vec(), b"after".to_vec()]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
