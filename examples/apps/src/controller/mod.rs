//! The controller: the one owner of the apps framework's state. It runs as a single
//! task fed by two channels — commands from the REST API and events from the
//! scheduler driver — and publishes an immutable [`Snapshot`] after every change,
//! which the API reads without waiting on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::AppsError;
use crate::events::EventBus;
use crate::model::{PathId, RootGroup, Timestamp};
use crate::state::Instance;

pub mod actor;
pub mod readiness;

pub use actor::Controller;

/// Everything the API shows, as of one moment. Cheap to clone (behind an `Arc`).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The desired state: the target of the latest deployment.
    pub root: Arc<RootGroup>,
    /// Instances per app (apps without any have no entry). Shared between
    /// snapshots: an app's list is rebuilt only when its instances change.
    pub instances: BTreeMap<PathId, Arc<Vec<Instance>>>,
    /// Running deployments, oldest first.
    pub deployments: Vec<DeploymentView>,
    /// Apps with instances waiting for a launch (the launch queue).
    pub queue: BTreeMap<PathId, QueueEntry>,
    /// The last task of each app that ended in failure.
    pub last_task_failure: BTreeMap<PathId, TaskFailure>,
    /// Apps' stored versions, oldest first (at most `max_versions` each).
    pub versions: BTreeMap<PathId, Vec<Timestamp>>,
    /// The framework id the master gave us (None before the first subscription).
    pub framework_id: Option<String>,
    /// True once this instance leads and has loaded its state.
    pub is_leader: bool,
    /// The leading apps instance's HTTP address, when known.
    pub leader: Option<String>,
}

/// A running deployment as `/v2/deployments` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: String,
    pub version: Timestamp,
    pub affected_apps: Vec<PathId>,
    pub affected_pods: Vec<String>,
    pub steps: Vec<StepView>,
    pub current_actions: Vec<CurrentAction>,
    /// 1-based, as Marathon counts.
    pub current_step: usize,
    pub total_steps: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepView {
    pub actions: Vec<ActionView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionView {
    /// `StartApplication`, `StopApplication`, `ScaleApplication`, `RestartApplication`.
    pub action: String,
    pub app: PathId,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAction {
    pub action: String,
    pub app: PathId,
    pub readiness_check_results: Vec<serde_json::Value>,
    /// Agora's addition: why the action cannot finish yet, when it is stuck
    /// (an unmet constraint, no offer big enough, failing health checks...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// One app's entry in the launch queue (`/v2/queue`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueEntry {
    /// Instances still to launch.
    pub count: u32,
    /// Seconds of backoff left before the next launch (0 = none).
    pub delay_seconds_left: f64,
    pub overdue: bool,
    /// When the app entered the queue.
    pub since: Timestamp,
    /// Offers seen and why each was not used: reason → count (Marathon's
    /// `processedOffersSummary.rejectSummaryLastOffers` reasons, such as
    /// `UnfulfilledConstraint`, `InsufficientCpus`, `InsufficientMemory`).
    pub processed_offers: u64,
    pub unused_offers: u64,
    pub rejections: BTreeMap<String, u64>,
    /// A sentence a person can act on (e.g. which constraint no agent satisfies).
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: PathId,
    pub host: String,
    pub message: String,
    pub state: String,
    pub task_id: String,
    pub timestamp: Timestamp,
    pub version: Timestamp,
}

/// A change to the desired state: runs inside the controller on the current root
/// with the new version's timestamp, and returns the new root (or why not). The
/// controller then stamps versions, checks deployment locks, persists and deploys.
pub type RootEdit = Box<dyn FnOnce(&RootGroup, Timestamp) -> Result<RootGroup, AppsError> + Send>;

/// What a deployment-creating call answers (`Marathon-Deployment-Id` and body).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRef {
    pub deployment_id: String,
    pub version: Timestamp,
}

/// What killing tasks did.
#[derive(Clone, Debug, PartialEq)]
pub enum KillOutcome {
    /// Without `scale`: these instances' tasks are being killed (and will be replaced).
    Killed(Vec<Instance>),
    /// With `scale`: the deployment that lowers `instances`.
    Scaled(DeploymentRef),
}

/// A request from the API to the controller; each carries where the answer goes.
pub enum Command {
    /// Change the desired state. `restart` names apps whose instances are all
    /// replaced even if their definition did not change (`/restart`).
    Deploy {
        edit: RootEdit,
        restart: Vec<PathId>,
        force: bool,
        reply: oneshot::Sender<Result<DeploymentRef, AppsError>>,
    },
    /// Kill tasks by id (`/v2/tasks/delete`, `DELETE /v2/apps/{id}/tasks[/{task}]`).
    KillTasks {
        task_ids: Vec<String>,
        scale: bool,
        force: bool,
        reply: oneshot::Sender<Result<KillOutcome, AppsError>>,
    },
    /// `DELETE /v2/deployments/{id}`: roll back (a new deployment to the state
    /// before it) or, with `force`, just stop it.
    CancelDeployment {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Option<DeploymentRef>, AppsError>>,
    },
    /// `DELETE /v2/queue/{app}/delay`: forget the app's backoff.
    ResetDelay {
        app: PathId,
        reply: oneshot::Sender<Result<(), AppsError>>,
    },
    /// An old version of an app (`/v2/apps/{id}/versions/{version}`).
    GetVersion {
        app: PathId,
        version: Timestamp,
        reply: oneshot::Sender<Result<crate::model::AppDefinition, AppsError>>,
    },
}

/// The API's way to the controller: cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    events: EventBus,
    /// Reads old app versions without going through the controller (a slow
    /// store read must not hold up its loop). None: ask the controller.
    versions: Option<crate::state::store::AppsStore>,
}

impl ControllerHandle {
    /// Old versions are then read from `store` by the caller's task.
    pub fn with_version_store(mut self, store: crate::state::store::AppsStore) -> Self {
        self.versions = Some(store);
        self
    }

    pub fn new(
        commands: mpsc::Sender<Command>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        events: EventBus,
    ) -> Self {
        ControllerHandle {
            commands,
            snapshot,
            events,
            versions: None,
        }
    }

    /// The latest published state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, AppsError>>) -> Command,
    ) -> Result<T, AppsError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| AppsError::Unavailable("the apps controller has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppsError::Unavailable("the apps controller has stopped".into()))?
    }

    pub async fn deploy(
        &self,
        edit: RootEdit,
        restart: Vec<PathId>,
        force: bool,
    ) -> Result<DeploymentRef, AppsError> {
        self.ask(|reply| Command::Deploy {
            edit,
            restart,
            force,
            reply,
        })
        .await
    }

    pub async fn kill_tasks(
        &self,
        task_ids: Vec<String>,
        scale: bool,
        force: bool,
    ) -> Result<KillOutcome, AppsError> {
        self.ask(|reply| Command::KillTasks {
            task_ids,
            scale,
            force,
            reply,
        })
        .await
    }

    pub async fn cancel_deployment(
        &self,
        id: String,
        force: bool,
    ) -> Result<Option<DeploymentRef>, AppsError> {
        self.ask(|reply| Command::CancelDeployment { id, force, reply })
            .await
    }

    pub async fn reset_delay(&self, app: PathId) -> Result<(), AppsError> {
        self.ask(|reply| Command::ResetDelay { app, reply }).await
    }

    pub async fn get_version(
        &self,
        app: PathId,
        version: Timestamp,
    ) -> Result<crate::model::AppDefinition, AppsError> {
        if let Some(store) = &self.versions {
            let current = self
                .snapshot()
                .root
                .apps
                .get(&app)
                .filter(|a| a.version == Some(version))
                .cloned();
            if let Some(current) = current {
                return Ok(current);
            }
            return store.version(&app, version).await?.ok_or_else(|| {
                AppsError::NotFound(format!("App '{app}' does not exist in version {version}"))
            });
        }
        self.ask(|reply| Command::GetVersion {
            app,
            version,
            reply,
        })
        .await
    }
}

impl Command {
    /// Answers the command with `error` without running it (no leader to run it).
    pub fn refuse(self, error: AppsError) {
        match self {
            Command::Deploy { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::KillTasks { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::CancelDeployment { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::ResetDelay { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::GetVersion { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}
