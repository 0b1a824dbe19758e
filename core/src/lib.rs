//! Pure logic shared by the master, the agent and the SDK. No I/O lives here.
//!
//! # Layout
//! - [`resources`]: `Resources`, fixed-point resource arithmetic and Mesos' `cpus:4;...`
//!   syntax.
//! - [`limits`]: size and count limits on every peer-supplied field, and their checks.
//! - [`task_state`]: which task states are terminal, and their display names.
//! - [`ids`]: reading the protocol's optional id fields.
//! - [`attributes`]: agent attributes in `rack:r1;zone:a` syntax.
//! - [`executor_env`]: the environment an agent gives its executors, and its parsing.
//! - [`time`]: wall-clock timestamps as carried on the wire.

pub mod attributes;
pub mod executor_env;
pub mod ids;
pub mod limits;
pub mod resources;
pub mod task_state;
pub mod time;

pub use resources::{RangeSet, ResourceError, Resources};
