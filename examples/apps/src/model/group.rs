//! [`RootGroup`]: the whole desired state, every app and group, at one version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AppDefinition, PathId, Timestamp};

/// A group's own settings; its apps and subgroups are found by id prefix in
/// [`RootGroup`]. Groups implied by an app id exist without a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDefinition {
    pub id: PathId,
    /// Groups or apps (absolute ids) deployed before everything in this group.
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub version: Timestamp,
}

/// Every app and explicitly created group, flat and keyed by id. The apps framework
/// stores it as the target of the current deployments; a deployment is the step
/// from one root to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootGroup {
    /// Invariant: every key equals its app's `id`; no app id is also a group id.
    pub apps: BTreeMap<PathId, AppDefinition>,
    /// Invariant: every key equals its group's `id`; never the root.
    pub groups: BTreeMap<PathId, GroupDefinition>,
    /// The version of the last change (None before the first).
    pub version: Option<Timestamp>,
}
