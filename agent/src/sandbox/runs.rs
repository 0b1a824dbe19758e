//! The executor runs the agent's disk tells about: the checkpointed ones (`meta/`,
//! kept while the agent tracks the run) and the sandboxes (`frameworks/`, kept until
//! garbage-collected). Read from the disk rather than asked of the actor so the
//! HTTP routes and the garbage collector never wait behind it; the checkpoints are
//! only ever replaced atomically, so a read sees a whole file or none.

use std::path::{Path, PathBuf};

use agora_proto as pb;

use crate::meta;
use crate::procfs;

/// An executor run with checkpoints under `meta/`: one the agent still tracks.
#[derive(Clone, Debug)]
pub(crate) struct CheckpointedRun {
    pub framework_id: String,
    pub executor_id: String,
    /// The run's uuid: its container id.
    pub container_id: String,
    /// `None` if `executor.info` is missing or unreadable (a launch in progress).
    pub checkpoint: Option<meta::ExecutorCheckpoint>,
    /// `None` until the executor was started.
    pub forked: Option<meta::ForkedPid>,
    /// The run's tasks, with their `task.info` when readable.
    pub tasks: Vec<(String, Option<pb::TaskInfo>)>,
}

impl CheckpointedRun {
    /// The executor's pid while its process lives (the start time tells it from a
    /// later process that got the same pid).
    pub fn live_pid(&self) -> Option<u32> {
        let forked = self.forked.as_ref()?;
        let started = procfs::start_time(forked.pid)?;
        (forked.start_time == 0 || forked.start_time == started).then_some(forked.pid)
    }
}

/// A sandbox directory: `frameworks/<fid>/executors/<eid>/runs/<run>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SandboxDir {
    pub framework_id: String,
    pub executor_id: String,
    pub container_id: String,
    pub dir: PathBuf,
}

/// Subdirectories of `dir` whose names are valid ids, as (name, path). Symbolic
/// links are skipped: nothing found here may lead outside the work dir.
fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            agora_core::limits::id("id", Some(&name)).ok()?;
            Some((name, e.path()))
        })
        .collect()
}

/// Every `<root>/<fid>/executors/<eid>/runs/<run>` directory.
fn run_dirs(root: &Path) -> Vec<SandboxDir> {
    let mut runs = Vec::new();
    for (framework_id, framework_dir) in subdirs(root) {
        for (executor_id, executor_dir) in subdirs(&framework_dir.join("executors")) {
            for (container_id, dir) in subdirs(&executor_dir.join("runs")) {
                runs.push(SandboxDir {
                    framework_id: framework_id.clone(),
                    executor_id: executor_id.clone(),
                    container_id,
                    dir,
                });
            }
        }
    }
    runs
}

/// Every sandbox under `work_dir/frameworks`.
pub(crate) fn sandboxes(work_dir: &Path) -> Vec<SandboxDir> {
    run_dirs(&work_dir.join("frameworks"))
}

/// Every executor run checkpointed under `work_dir/meta`.
pub(crate) fn checkpointed_runs(work_dir: &Path) -> Vec<CheckpointedRun> {
    run_dirs(&meta::frameworks_meta_dir(work_dir))
        .into_iter()
        .map(|run| {
            let tasks = subdirs(&run.dir.join("tasks"))
                .into_iter()
                .map(|(task_id, dir)| {
                    let info = meta::read_message(&dir.join(meta::TASK_INFO_FILE)).ok();
                    (task_id, info)
                })
                .collect();
            CheckpointedRun {
                checkpoint: meta::read_message(&run.dir.join(meta::EXECUTOR_INFO_FILE)).ok(),
                forked: meta::read_message(&run.dir.join(meta::FORKED_PID_FILE)).ok(),
                framework_id: run.framework_id,
                executor_id: run.executor_id,
                container_id: run.container_id,
                tasks,
            }
        })
        .collect()
}

/// Whether the agent still tracks this run (its checkpoint directory exists): such
/// a run may be live, and its sandbox is never collected.
pub(crate) fn is_checkpointed(work_dir: &Path, sandbox: &SandboxDir) -> bool {
    meta::executor_run_meta_dir(
        work_dir,
        &sandbox.framework_id,
        &sandbox.executor_id,
        &sandbox.container_id,
    )
    .exists()
}
