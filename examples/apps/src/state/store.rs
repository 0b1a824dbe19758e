//! [`AppsStore`]: how the apps framework keeps its state in the masters' state store
//! (namespace = the framework's name), so a restarted or standby instance resumes
//! exactly where the last leader stopped.
//!
//! Keys:
//! - `framework-id` — the id the master gave us; re-used on every subscription so
//!   the tasks stay ours across restarts.
//! - `apps<app id>` — the current definition of every app (`apps/prod/web`).
//! - `groups<group id>` — explicitly created groups (their dependencies).
//! - `versions<app id>/<millis>` — every stored version of an app, up to `max_versions`.
//! - `instances/<instance id>` — every instance: its app, version, goal and the
//!   incarnation and agent of its current task. Written before the task is launched,
//!   so a launch is never forgotten; task states are not stored (the master's
//!   reconciliation tells them again after a restart).
//! - `deployments/<id>` — every running deployment: its steps and, for a rollback,
//!   the definitions it replaced.
//! - `backoff<app id>` — an app's launch backoff after failures (next delay, no
//!   launch before, last failure; wall-clock times), so a crash-looping app stays
//!   delayed across a restart or a failover.
//!
//! Writes go out in batches; every value is JSON.

use std::collections::BTreeMap;

use agora_sdk::{BatchOp, StateStore};
use serde::{Deserialize, Serialize};

use crate::error::AppsError;
use crate::model::{AppDefinition, GroupDefinition, PathId, RootGroup, Timestamp};
use crate::state::Instance;

pub const FRAMEWORK_ID_KEY: &str = "framework-id";
const APPS_PREFIX: &str = "apps";
const GROUPS_PREFIX: &str = "groups";
const VERSIONS_PREFIX: &str = "versions";
const INSTANCES_PREFIX: &str = "instances/";
const DEPLOYMENTS_PREFIX: &str = "deployments/";
const BACKOFF_PREFIX: &str = "backoff";

pub fn app_key(id: &PathId) -> String {
    format!("{APPS_PREFIX}{id}")
}

pub fn group_key(id: &PathId) -> String {
    format!("{GROUPS_PREFIX}{id}")
}

pub fn version_key(id: &PathId, version: Timestamp) -> String {
    format!("{VERSIONS_PREFIX}{id}/{:013}", version.millis())
}

pub fn instance_key(instance_id: &str) -> String {
    format!("{INSTANCES_PREFIX}{instance_id}")
}

pub fn deployment_key(id: &str) -> String {
    format!("{DEPLOYMENTS_PREFIX}{id}")
}

pub fn backoff_key(id: &PathId) -> String {
    format!("{BACKOFF_PREFIX}{id}")
}

/// An app's launch backoff as stored: in wall-clock time, which the next leader
/// (another process, perhaps another machine) reads against its own clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredBackoff {
    /// The delay the next failure imposes.
    pub next_delay_seconds: f64,
    /// No launch of the app before this instant.
    pub not_before: Timestamp,
    /// When the last failure happened.
    pub last_failure: Timestamp,
    /// The tasks whose end was counted most recently (at most
    /// [`COUNTED_TASKS_KEPT`], newest last): the master reports their end again to
    /// the next leader, which must not count it twice.
    #[serde(default)]
    pub counted_tasks: Vec<String>,
}

/// Task ids a [`StoredBackoff`] remembers as counted.
pub const COUNTED_TASKS_KEPT: usize = 16;

/// A running deployment as stored: enough to resume it, show it, and roll it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDeployment {
    pub id: String,
    pub version: Timestamp,
    pub steps: Vec<crate::deployment::Step>,
    /// Index of the step being run (0-based).
    pub current_step: usize,
    /// Apps restarted even without a change.
    #[serde(default)]
    pub restart: Vec<PathId>,
    /// What the affected apps were before (None: the app did not exist).
    pub original: BTreeMap<PathId, Option<AppDefinition>>,
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Write {
    fn into_op(self) -> BatchOp {
        match self {
            Write::Put(key, value) => BatchOp::put(key, value),
            Write::Delete(key) => BatchOp::delete(key),
        }
    }

    /// A put of `value` as JSON.
    pub fn json(key: String, value: &impl Serialize) -> Result<Write, AppsError> {
        match serde_json::to_vec(value) {
            Ok(bytes) => Ok(Write::Put(key, bytes)),
            Err(e) => Err(AppsError::Store(format!("cannot encode {key}: {e}"))),
        }
    }
}

/// Everything loaded at the start of a leadership.
#[derive(Debug, Default)]
pub struct LoadedState {
    pub framework_id: Option<String>,
    pub root: RootGroup,
    pub versions: BTreeMap<PathId, Vec<Timestamp>>,
    pub instances: Vec<Instance>,
    pub deployments: Vec<StoredDeployment>,
    pub backoff: BTreeMap<PathId, StoredBackoff>,
    /// Entries that could not be read (corrupt or from an incompatible version),
    /// with why: logged and skipped rather than refusing to start.
    pub unreadable: Vec<(String, String)>,
}

/// The apps framework's view of its state-store namespace.
#[derive(Clone)]
pub struct AppsStore {
    store: StateStore,
}

fn store_error(e: agora_sdk::StateStoreError) -> AppsError {
    AppsError::Store(e.to_string())
}

impl AppsStore {
    pub fn new(store: StateStore) -> Self {
        AppsStore { store }
    }

    pub fn inner(&self) -> &StateStore {
        &self.store
    }

    /// Reads everything.
    pub async fn load(&self) -> Result<LoadedState, AppsError> {
        let mut state = LoadedState {
            framework_id: self
                .store
                .get(FRAMEWORK_ID_KEY)
                .await
                .map_err(store_error)?
                .and_then(|entry| String::from_utf8(entry.value).ok()),
            ..LoadedState::default()
        };
        for entry in self.store.list(APPS_PREFIX).await.map_err(store_error)? {
            // `apps` is also a prefix of nothing else we store, but be strict.
            if !entry.key.starts_with("apps/") {
                continue;
            }
            match serde_json::from_slice::<AppDefinition>(&entry.value) {
                Ok(app) => {
                    state.root.apps.insert(app.id.clone(), app);
                }
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list(GROUPS_PREFIX).await.map_err(store_error)? {
            if !entry.key.starts_with("groups/") {
                continue;
            }
            match serde_json::from_slice::<GroupDefinition>(&entry.value) {
                Ok(group) => {
                    state.root.groups.insert(group.id.clone(), group);
                }
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self
            .store
            .list(VERSIONS_PREFIX)
            .await
            .map_err(store_error)?
        {
            let Some((app, millis)) = entry
                .key
                .strip_prefix(VERSIONS_PREFIX)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            match (PathId::parse(app), millis.parse::<i64>()) {
                (Ok(app), Ok(millis)) => state
                    .versions
                    .entry(app)
                    .or_default()
                    .push(Timestamp::from_millis(millis)),
                _ => state
                    .unreadable
                    .push((entry.key.clone(), "not an app version key".into())),
            }
        }
        for entry in self
            .store
            .list(INSTANCES_PREFIX)
            .await
            .map_err(store_error)?
        {
            match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) => state.instances.push(instance),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self
            .store
            .list(DEPLOYMENTS_PREFIX)
            .await
            .map_err(store_error)?
        {
            match serde_json::from_slice::<StoredDeployment>(&entry.value) {
                Ok(deployment) => state.deployments.push(deployment),
                Err(e) => state.unreadable.push((entry.key, e.to_string())),
            }
        }
        for entry in self.store.list(BACKOFF_PREFIX).await.map_err(store_error)? {
            let Some(app) = entry.key.strip_prefix(BACKOFF_PREFIX) else {
                continue;
            };
            let parsed = PathId::parse(app).and_then(|app| {
                serde_json::from_slice::<StoredBackoff>(&entry.value)
                    .map(|backoff| (app, backoff))
                    .map_err(|e| e.to_string())
            });
            match parsed {
                Ok((app, backoff)) => {
                    state.backoff.insert(app, backoff);
                }
                Err(e) => state.unreadable.push((entry.key, e)),
            }
        }
        state.deployments.sort_by_key(|d| d.version);
        state.root.version = state.root.apps.values().filter_map(|a| a.version).max();
        Ok(state)
    }

    /// An old version of an app.
    pub async fn version(
        &self,
        app: &PathId,
        version: Timestamp,
    ) -> Result<Option<AppDefinition>, AppsError> {
        let Some(entry) = self
            .store
            .get(&version_key(app, version))
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&entry.value)
            .map(Some)
            .map_err(|e| AppsError::Store(format!("version {version} of {app} is unreadable: {e}")))
    }

    /// Applies `writes` (the last write of a key wins): up to 1,000 of them in
    /// one atomic batch (all or nothing), more in several batches at once. With a
    /// fenced store, nothing is written once this instance no longer holds the
    /// leadership.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), AppsError> {
        self.store
            .write_all(writes.into_iter().map(Write::into_op))
            .await
            .map_err(store_error)
    }
}
