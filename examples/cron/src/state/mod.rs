//! Runs, their history, and how all of it is kept in the masters' state store.

pub mod run;
pub mod store;

pub use run::{History, JobRun, MissedRun, RunStatus, RunTask, Trigger};
