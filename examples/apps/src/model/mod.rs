//! Marathon's JSON: app definitions, groups and the ids that name them, their
//! defaults, and the validation that turns bad input into Marathon's 422 body.
//!
//! Everything here is pure: parse, normalise, validate, compare. Turning an app into
//! a `TaskInfo` for an offer is in [`task_info`].

pub mod app;
mod app_validation;
pub mod group;
mod json;
pub mod normalize;
pub mod path_id;
pub mod task_info;
pub mod timestamp;
pub mod validation;

#[cfg(test)]
mod tests;

pub use app::AppDefinition;
pub use group::{GroupDefinition, GroupUpdate, RootGroup};
pub use normalize::NetworkMode;
pub use path_id::PathId;
pub use timestamp::Timestamp;
pub use validation::{ModelError, ValidationErrors, Violation};
