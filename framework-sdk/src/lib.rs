//! The Agora framework SDK: write a scheduler for an Agora cluster in an afternoon.
//!
//! A framework implements [`Scheduler`]: async callbacks the driver calls as the
//! master sends events (offers, task updates, ...). A [`SchedulerDriver`] connects it
//! to the cluster: it finds the leading master among those it is given (following a
//! follower's `agora-leader` hint), subscribes, watches heartbeats, reconnects with
//! exponential backoff and re-subscribes with the framework id it was assigned, so
//! the framework keeps its tasks across master failovers. Callbacks answer through the
//! [`SchedulerHandle`] they are given: accept or decline offers, kill, reconcile...
//! Task updates are acknowledged by the driver once `update` returns.
//!
//! To place tasks, wrap each offer in an [`OfferResources`] and take
//! [`TaskBuilder`]s from it: it builds the `TaskInfo`, checks the task fits, and
//! subtracts what it used so the next task gets only what is left.
//!
//! ```no_run
//! use agora_sdk::{proto, DriverConfig, OfferResources, Scheduler, SchedulerDriver,
//!     SchedulerHandle, TaskBuilder};
//!
//! struct Sleeper {
//!     launched: bool,
//! }
//!
//! impl Scheduler for Sleeper {
//!     async fn offers(&mut self, driver: &SchedulerHandle, offers: Vec<proto::Offer>) {
//!         for offer in offers {
//!             let Ok(mut room) = OfferResources::new(&offer) else { continue };
//!             let task = TaskBuilder::new("sleep-1").shell("sleep 10").cpus(0.1).mem(32.0);
//!             match room.take(&task) {
//!                 Ok(info) if !self.launched => {
//!                     self.launched = driver.launch(room.offer_id().clone(), vec![info], None).await.is_ok();
//!                 }
//!                 _ => {
//!                     let _ = driver.decline(vec![room.offer_id().clone()], None).await;
//!                 }
//!             }
//!         }
//!     }
//!
//!     async fn update(&mut self, driver: &SchedulerHandle, status: proto::TaskStatus) {
//!         if agora_sdk::is_terminal(status.state()) {
//!             driver.stop();
//!         }
//!     }
//! }
//!
//! # async fn example() -> Result<(), agora_sdk::DriverError> {
//! let info = proto::FrameworkInfo { name: "sleeper".into(), ..Default::default() };
//! let config = DriverConfig::new(vec!["127.0.0.1:5050".into()], info, agora_sdk::stderr_logger(false));
//! SchedulerDriver::new(config)?.run(&mut Sleeper { launched: false }).await
//! # }
//! ```
//!
//! # Layout
//! - [`scheduler`]: the [`Scheduler`] trait, one async callback per event type.
//! - [`channel_scheduler`]: [`ChannelScheduler`], a `Scheduler` that hands every
//!   event to a channel, for frameworks built as an actor.
//! - [`driver`]: [`SchedulerDriver`]: leader search, subscription, heartbeat
//!   monitoring, reconnection with backoff, event dispatch, auto-acknowledgement.
//! - [`handle`]: [`SchedulerHandle`]: the calls (ACCEPT, DECLINE, KILL, ...).
//! - [`config`]: [`DriverConfig`] and its defaults.
//! - [`error`]: [`DriverError`], and how a master's gRPC status maps onto it.
//! - [`offer`]: [`OfferResources`] and [`TaskBuilder`]: packing tasks into offers.
//! - [`logging`]: ready-made slog loggers.
//! - [`executor`]: custom executors: the [`Executor`] trait and the
//!   [`ExecutorDriver`] that connects one to the agent that started it.
//! - [`state_store`]: [`StateStore`], the client for the masters' replicated
//!   key-value store (versions, compare-and-set, atomic batches, prefix listing,
//!   leases and writes fenced by a lease).
//! - [`leader_election`]: [`LeaderElection`], one leader among a framework's
//!   instances, built on a state-store lease.
//! - `backoff`: the reconnection delays (internal).

mod backoff;
pub mod channel_scheduler;
pub mod config;
pub mod driver;
pub mod error;
pub mod executor;
pub mod handle;
pub mod leader_election;
pub mod logging;
pub mod offer;
pub mod scheduler;
pub mod state_store;

/// Longest timeout, delay or grace period (seconds) the master and agents accept in a
/// task: frameworks validate their own users' numbers against it.
pub use agora_core::limits::MAX_TIMEOUT_SECONDS;
pub use agora_core::task_state::is_terminal;
pub use agora_core::{RangeSet, ResourceError, Resources};
pub use agora_proto as proto;
pub use channel_scheduler::{ChannelScheduler, DriverEvent};
pub use config::DriverConfig;
pub use driver::SchedulerDriver;
pub use error::{DriverError, LEADER_METADATA_KEY, leader_hint};
pub use executor::{Executor, ExecutorDriver, ExecutorError, ExecutorHandle};
pub use handle::SchedulerHandle;
pub use leader_election::{LeaderElection, advertised_address, advertised_host};
pub use logging::{discard_logger, stderr_logger};
pub use offer::{OfferError, OfferResources, TaskBuilder};
pub use scheduler::Scheduler;
pub use slog;
pub use state_store::{
    BatchOp, BatchOutcome, CasOutcome, DeleteOutcome, Entry, Fence, Lease, LeaseOutcome,
    StateStore, StateStoreConfig, StateStoreError,
};
