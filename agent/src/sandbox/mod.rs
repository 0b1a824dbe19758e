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
