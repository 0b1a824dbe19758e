//! Agora apps: long-running services on an Agora cluster, driven through Marathon's
//! REST API (`/v2/apps`, `/v2/groups`, `/v2/deployments`, ...), built only on
//! `agora-sdk`.
//!
//! Every change to the desired state is a deployment: a plan of steps from the old
//! root group to the new, each step's actions run together, each action (start,
//! scale, restart, stop an app) followed to its end. Between deployments the
//! controller keeps every app's instances running: relaunches with backoff, moves
//! instances off unreachable agents, kills surplus. All of it — definitions and
//! their versions, deployments, instances — lives in the masters' state store, so a
//! restarted or standby apps instance continues where the last one stopped.
//!
//! # Layout
//! - [`config`]: the settings, [`AppsConfig`].
//! - [`model`]: Marathon's JSON — [`model::AppDefinition`], groups, ids, versions,
//!   validation (422 bodies), and the `TaskInfo` an instance is launched with.
//! - [`placement`]: constraints and the choice of offer for each instance (pure).
//! - [`deployment`]: deployment plans and the rolling-replace rule (pure).
//! - [`state`]: instances and their layout in the state store.
//! - [`controller`]: the single owner of the state; the API's [`controller::ControllerHandle`].
//! - [`api`]: the REST endpoints, one file per endpoint family, and the HTTP error mapping.
//! - [`events`]: the event bus behind `/v2/events`.
//! - [`error`]: every failure, [`AppsError`].
//! - [`server`]: [`AppsServer`]: leader election, driver, controller and HTTP wired together.

pub mod api;
pub mod config;
pub mod controller;
pub mod deployment;
pub mod error;
pub mod events;
pub mod model;
pub mod placement;
pub mod server;
pub mod state;

pub use config::AppsConfig;
pub use error::AppsError;
pub use server::AppsServer;

/// Waits until a watched flag equals `value` (or its sender is gone). Returns
/// nothing, so no borrow of the channel is held across the caller's awaits.
pub(crate) async fn until(flag: &mut tokio::sync::watch::Receiver<bool>, value: bool) {
    let _ = flag.wait_for(|current| *current == value).await;
}
