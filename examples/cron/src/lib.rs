//! Agora cron: scheduled and batch jobs on an Agora cluster, driven through
//! Metronome's REST API (`/v1/jobs`), built only on `agora-sdk`.
//!
//! A job is a command (or an image) to run to completion. It runs when one of its
//! schedules comes due, when someone asks (`POST /v1/jobs/{id}/runs`), or when all
//! the jobs it depends on have succeeded. Every run is recorded in the masters'
//! state store under an id derived from (job, scheduled instant) before its task is
//! launched, so neither a restart of the cron process nor a master failover skips
//! or doubles a run.
//!
//! # Layout
//! - [`config`]: the settings, [`CronConfig`].
//! - [`model`]: Metronome's JSON — jobs, schedules, runs, history — and validation.
//! - [`schedule`]: cron expressions (five or six fields), IANA time zones with their
//!   DST rules, ISO 8601 repeating intervals; the instants a schedule is due (pure).
//! - [`dag`]: dependencies between jobs, cycles refused (pure).
//! - [`state`]: runs and their layout in the state store.
//! - [`controller`]: the single owner of the state; the API's [`controller::ControllerHandle`].
//! - [`api`]: the REST endpoints, one file per endpoint family.
//! - [`error`]: every failure, [`CronError`].
//! - [`server`]: [`CronServer`]: leader election, driver, controller and HTTP wired together.

pub mod api;
pub mod config;
pub mod controller;
pub mod dag;
pub mod error;
pub mod model;
pub mod schedule;
pub mod server;
pub mod state;

pub use config::CronConfig;
pub use error::CronError;
pub use server::CronServer;

/// Waits until a watched flag equals `value` (or its sender is gone).
pub(crate) async fn until(flag: &mut tokio::sync::watch::Receiver<bool>, value: bool) {
    let _ = flag.wait_for(|current| *current == value).await;
}
