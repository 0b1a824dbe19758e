//! Deployments: plans from one root group to the next, and the rules that carry
//! out each action. Pure: no I/O, no clock, no async.
//!
//! - [`dependency_layers`]: apps in dependency order ([`dependencies`]).
//! - [`plan()`], [`config_changed`], [`affected_apps`], [`conflicts`], [`revert`]:
//!   the steps of a deployment, which apps it locks, and the way back
//!   ([`mod@plan`]).
//! - [`advance`], [`converge`]: what an action, or the steady state, wants done
//!   now to an app's instances — the rolling replace among them ([`progress`]).
//! - [`view()`]: a deployment as `/v2/deployments` shows it.

pub mod dependencies;
pub mod plan;
pub mod progress;
mod view;

#[cfg(test)]
mod testing;

pub use dependencies::{DependencyError, UnknownDependency, dependency_graph, dependency_layers};
pub use plan::{Action, ActionKind, Step, affected_apps, config_changed, conflicts, plan, revert};
pub use progress::{Progress, RestartStrategy, advance, converge, kill_order};
pub use view::view;
