//! Executor sandboxes: the task output written into them, rotated by size
//! ([`rotation`], [`output`]), read back over HTTP ([`logs`]), and the executor runs
//! the disk tells about ([`runs`], for the routes and the garbage collector).

pub mod logs;
pub mod output;
pub mod rotation;
pub(crate) mod runs;

pub use output::{
    OutputPumps, TaskOutput, capture_executor_output_from_env, finish_executor_output,
    open_task_output,
};
pub use rotation::RotationPolicy;

use std::path::{Path, PathBuf};

/// Where the sandboxes of executor `executor_id` of `framework_id` live under the
/// agent's `work_dir`: one directory per run, named by the run's container id.
pub fn executor_runs_dir(work_dir: &Path, framework_id: &str, executor_id: &str) -> PathBuf {
    work_dir
        .join("frameworks")
        .join(framework_id)
        .join("executors")
        .join(executor_id)
        .join("runs")
}
