//! What the agent checkpoints, and where: the paths under `work_dir` and the records
//! stored in them. Ids are validated (`agora_core::limits::id`: no `/`, not `.`/`..`)
//! before they reach any function here, so each id is exactly one path component.
//!
//! ```text
//! work_dir/meta/agent_id                                    the agent's id (text)
//! work_dir/meta/frameworks/<fid>/framework.info             FrameworkInfo
//! work_dir/meta/frameworks/<fid>/executors/<eid>/runs/<run>/executor.info   ExecutorCheckpoint
//! work_dir/meta/frameworks/<fid>/executors/<eid>/runs/<run>/forked.pid      ForkedPid
//! work_dir/meta/frameworks/<fid>/executors/<eid>/runs/<run>/tasks/<tid>/task.info     TaskInfo
//! work_dir/meta/frameworks/<fid>/executors/<eid>/runs/<run>/tasks/<tid>/task.updates  UpdateRecord log
//! work_dir/meta/frameworks/<fid>/executors/<eid>/runs/<run>/tasks/<tid>/task.group    its group's id (text)
//! work_dir/meta/staging/                                   files being written (emptied at start)
//! work_dir/frameworks/<fid>/executors/<eid>/runs/<run>/{stdout,stderr}   the sandbox
//! ```

use std::path::{Path, PathBuf};

use agora_proto as pb;

pub const AGENT_ID_FILE: &str = "agent_id";
pub const FRAMEWORK_INFO_FILE: &str = "framework.info";
pub const EXECUTOR_INFO_FILE: &str = "executor.info";
pub const FORKED_PID_FILE: &str = "forked.pid";
pub const TASK_INFO_FILE: &str = "task.info";
pub const TASK_UPDATES_FILE: &str = "task.updates";
/// The id of the task group a task was launched in (the group's first task id);
/// absent for a task launched alone.
pub const TASK_GROUP_FILE: &str = "task.group";

/// Everything the agent needs to reattach to an executor after a restart.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecutorCheckpoint {
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::ExecutorInfo>,
    /// The secret the executor presents on every call.
    #[prost(string, tag = "2")]
    pub token: String,
    /// The sandbox directory as raw OS bytes (paths need not be UTF-8).
    #[prost(bytes = "vec", tag = "3")]
    pub sandbox: Vec<u8>,
    /// Name of the containerizer that launched it.
    #[prost(string, tag = "4")]
    pub containerizer: String,
}

/// The executor's process, written once it was spawned. `start_time` (clock ticks
/// since boot, from /proc) tells a live executor from a recycled pid.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForkedPid {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint64, tag = "2")]
    pub start_time: u64,
}

/// One entry of a task's status-update log: an update the agent accepted, or the
/// acknowledgement of one (by uuid). Exactly one of the two is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateRecord {
    #[prost(message, optional, tag = "1")]
    pub update: Option<pb::StatusUpdate>,
    #[prost(bytes = "vec", tag = "2")]
    pub ack: Vec<u8>,
}

pub fn meta_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("meta")
}

/// Where the journal stages files before renaming them into place.
pub fn staging_dir(work_dir: &Path) -> PathBuf {
    meta_dir(work_dir).join("staging")
}

/// Empties (or creates) the staging directory: what a crashed agent left there was
/// never renamed into place, so nothing refers to it.
pub fn reset_staging(work_dir: &Path) -> std::io::Result<()> {
    let staging = staging_dir(work_dir);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&staging)
}

pub fn agent_id_path(work_dir: &Path) -> PathBuf {
    meta_dir(work_dir).join(AGENT_ID_FILE)
}

pub fn frameworks_meta_dir(work_dir: &Path) -> PathBuf {
    meta_dir(work_dir).join("frameworks")
}

pub fn framework_meta_dir(work_dir: &Path, framework_id: &str) -> PathBuf {
    frameworks_meta_dir(work_dir).join(framework_id)
}

pub fn executor_run_meta_dir(
    work_dir: &Path,
    framework_id: &str,
    executor_id: &str,
    run_id: &str,
) -> PathBuf {
    framework_meta_dir(work_dir, framework_id)
        .join("executors")
        .join(executor_id)
        .join("runs")
        .join(run_id)
}

pub fn task_meta_dir(run_meta_dir: &Path, task_id: &str) -> PathBuf {
    run_meta_dir.join("tasks").join(task_id)
}

pub fn sandbox_dir(
    work_dir: &Path,
    framework_id: &str,
    executor_id: &str,
    run_id: &str,
) -> PathBuf {
    crate::sandbox::executor_runs_dir(work_dir, framework_id, executor_id).join(run_id)
}

/// Reads a protobuf message checkpointed whole (see `journal`).
pub fn read_message<M: prost::Message + Default>(path: &Path) -> std::io::Result<M> {
    let bytes = std::fs::read(path)?;
    M::decode(bytes.as_slice()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Reads the persisted agent id, if there is a valid one.
pub fn read_agent_id(work_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(agent_id_path(work_dir)) {
        Ok(text) => {
            let id = text.trim().to_string();
            if agora_core::limits::id("agent_id", Some(&id)).is_err() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} does not hold a valid agent id",
                        agent_id_path(work_dir).display()
                    ),
                ));
            }
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree, then the parents it leaves empty up to (not including)
/// `stop_at`. Missing directories are fine.
pub fn remove_tree(dir: &Path, stop_at: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut parent = dir.parent();
    while let Some(p) = parent {
        if p == stop_at || !p.starts_with(stop_at) || std::fs::remove_dir(p).is_err() {
            break;
        }
        parent = p.parent();
    }
    Ok(())
}

#[cfg(unix)]
pub fn path_to_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}
