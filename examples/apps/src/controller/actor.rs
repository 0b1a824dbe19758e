//! [`Controller`]: the loop that owns the apps framework's state while this instance
//! leads. One input at a time — an API command, a driver event, a tick — then the
//! same reaction: drive deployments, converge idle apps, launch or decline, publish.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agora_sdk::DriverEvent;
use agora_sdk::proto as pb;
use agora_sdk::{OfferResources, SchedulerHandle};
use slog::{Logger, debug, info, warn};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::readiness::{self, Ready};
use super::{
    Command, DeploymentRef, DeploymentView, KillOutcome, QueueEntry, RootEdit, Snapshot,
    TaskFailure,
};
use crate::config::AppsConfig;
use crate::deployment::{self, ActionKind, Progress};
use crate::error::AppsError;
use crate::events::EventBus;
use crate::model::app::{UnreachableStrategy, VersionInfo};
use crate::model::{AppDefinition, PathId, RootGroup, Timestamp};
use crate::placement::{self, AgentOffer, Demand, Location, Placed, PlacementLimits};
use crate::state::store::{
    AppsStore, COUNTED_TASKS_KEPT, FRAMEWORK_ID_KEY, LoadedState, StoredBackoff, StoredDeployment,
    Write, app_key, backoff_key, deployment_key, group_key, instance_key, version_key,
};
use crate::state::{Goal, Instance};

/// How often time-driven rules are looked at: backoff expiry, unreachable instances.
const TICK: Duration = Duration::from_secs(1);
/// How long an offer we cannot use stays away while instances still wait (short:
/// another agent's resources may free up) and when nothing waits.
const REFUSE_WHILE_WAITING: f64 = 5.0;
/// Every this many ticks, every app is converged, not just the ones that changed
/// (Marathon's `--scale_apps_interval` safety net).
const FULL_SWEEP_TICKS: u32 = 30;
/// The longest backoff delay, whatever an app asks for.
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);
/// Every this many ticks, kills not yet confirmed are sent again (a kill sent
/// while disconnected, or lost in a master failover, must not leave a task behind).
const KILL_RETRY_TICKS: u64 = 10;
/// Every this many ticks, tasks still staging are reconciled explicitly (a launch
/// the master never saw comes back lost).
const STAGING_RECONCILE_TICKS: u64 = 60;
/// Every this many ticks, every task is reconciled (Marathon: 10 minutes).
const FULL_RECONCILE_TICKS: u64 = 600;
/// Largest deployment record kept with the definitions it replaces (a state-store
/// value is at most 1 MiB).
const MAX_DEPLOYMENT_RECORD: usize = 900 * 1024;
/// Commands taken together before reacting once.
const COMMANDS_PER_REACTION: usize = 64;
/// Tasks per LAUNCH operation (the master takes at most 1,024).
const TASKS_PER_OPERATION: usize = 1000;

/// The backoff of one app: how long the next failure delays the next launch.
#[derive(Clone, Debug)]
struct Backoff {
    /// The delay the next failure imposes.
    next_delay: Duration,
    /// No launch of this app before this instant.
    not_before: Instant,
    /// When the last failure happened (to forget the backoff after a quiet spell).
    last_failure: Instant,
    /// Whether the end of the delay has been acted on (offers asked for again).
    announced: bool,
    /// The tasks whose end was counted most recently, newest last (see
    /// [`StoredBackoff::counted_tasks`]).
    counted_tasks: VecDeque<String>,
}

/// A quiet spell after which an app's backoff is forgotten.
const BACKOFF_FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);

/// A delay of `seconds` (an app's figure, or a product of them), within
/// [`MAX_BACKOFF`].
fn backoff_delay(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

impl Backoff {
    /// The stored form, in wall-clock time (`now` and `wall_now` are one moment).
    fn to_stored(&self, now: Instant, wall_now: Timestamp) -> StoredBackoff {
        let ahead = self.not_before.saturating_duration_since(now);
        let ago = now.saturating_duration_since(self.last_failure);
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        StoredBackoff {
            next_delay_seconds: self.next_delay.as_secs_f64(),
            not_before: Timestamp::from_millis(wall_now.millis().saturating_add(millis(ahead))),
            last_failure: Timestamp::from_millis(wall_now.millis().saturating_sub(millis(ago))),
            counted_tasks: self.counted_tasks.iter().cloned().collect(),
        }
    }

    /// A stored backoff read against this process's clocks. Whatever the record
    /// holds (it may come from a corrupt entry or a skewed clock), the delays stay
    /// within [`MAX_BACKOFF`].
    fn from_stored(stored: &StoredBackoff, now: Instant, wall_now: Timestamp) -> Backoff {
        let millis = |m: i64| Duration::from_millis(u64::try_from(m).unwrap_or(0));
        let ahead = millis(stored.not_before.millis().saturating_sub(wall_now.millis()));
        let ago = millis(
            wall_now
                .millis()
                .saturating_sub(stored.last_failure.millis()),
        )
        .min(BACKOFF_FORGOTTEN_AFTER);
        Backoff {
            next_delay: backoff_delay(stored.next_delay_seconds),
            not_before: now + ahead.min(MAX_BACKOFF),
            last_failure: now.checked_sub(ago).unwrap_or(now),
            announced: false,
            counted_tasks: stored
                .counted_tasks
                .iter()
                .rev()
                .take(COUNTED_TASKS_KEPT)
                .rev()
                .cloned()
                .collect(),
        }
    }
}

/// A deployment being run.
struct RunningDeployment {
    stored: StoredDeployment,
    /// Why each app of the current step is not done yet.
    waiting: BTreeMap<PathId, String>,
}

/// Offer bookkeeping per app for `/v2/queue`.
#[derive(Clone, Debug, Default)]
struct QueueStats {
    since: Option<Timestamp>,
    processed_offers: u64,
    unused_offers: u64,
    rejections: BTreeMap<String, u64>,
    reason: Option<String>,
}

pub struct Controller {
    config: AppsConfig,
    logger: Logger,
    store: AppsStore,
    events: EventBus,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// The desired state (target of the newest deployment); shared with the
    /// published snapshot, replaced (never changed in place) by a deployment.
    root: Arc<RootGroup>,
    /// Stored versions per app, oldest first.
    versions: BTreeMap<PathId, Vec<Timestamp>>,
    /// Every instance, by instance id. Invariant: an instance with goal
    /// `Decommissioned` is removed (and its key deleted) once its task is terminal.
    instances: BTreeMap<String, Instance>,
    /// The ids of `instances` per app. Invariant: exactly the keys of `instances`,
    /// grouped by their `app_id` (only `insert_instance` and `forget` change both).
    by_app: HashMap<PathId, BTreeSet<String>>,
    /// Running deployments, oldest first; no two affect the same app.
    deployments: Vec<RunningDeployment>,
    backoff: HashMap<PathId, Backoff>,
    queue: HashMap<PathId, QueueStats>,
    last_failure: BTreeMap<PathId, TaskFailure>,
    framework_id: Option<String>,
    /// Set while subscribed.
    driver: Option<SchedulerHandle>,
    /// Attributes of every agent seen in an offer (for constraints on instances
    /// already running there).
    agent_attributes: HashMap<String, Arc<BTreeMap<String, String>>>,
    /// Whether we last told the master to stop sending offers.
    suppressed: bool,
    /// Something new waits for an offer since the last REVIVE: ask again, since
    /// offers declined meanwhile are filtered for a while.
    revive_needed: bool,
    /// This instance's API address, shown as the leader.
    http_address: String,
    /// Apps whose definition or instances changed since the last reaction: only
    /// they are driven and converged (every app is, now and then, on a tick).
    dirty: BTreeSet<PathId>,
    /// The last published instance lists; rebuilt per dirty app.
    published_instances: BTreeMap<PathId, Arc<Vec<Instance>>>,
    /// Answers to send once the reaction to their command is published, so a
    /// client that reads right after its change sees it.
    replies: Vec<Box<dyn FnOnce() + Send + Sync>>,
    /// Ticks until every app is converged again.
    ticks_to_full_sweep: u32,
    /// Ticks since the start of this leadership (for periodic work).
    ticks: u64,
    /// Records of forgotten instances, deleted at the end of the reaction.
    pending_deletes: Vec<Write>,
    /// Apps whose stored definition could not be read: their instances are left
    /// alone rather than stopped as if the app had been deleted.
    unreadable_apps: BTreeSet<PathId>,
    /// The framework id the master gave us is not stored yet: nothing is launched
    /// until it is, or the next leader would subscribe as a new framework.
    framework_id_unsaved: bool,
    /// Running readiness checks: instance id → (incarnation checked, task).
    readiness_checks: HashMap<String, (u32, tokio::task::JoinHandle<()>)>,
    /// Where readiness checks report (the receiver is taken by `run`).
    readiness_tx: mpsc::Sender<Ready>,
    readiness_rx: Option<mpsc::Receiver<Ready>>,
}

impl Controller {
    pub fn new(
        config: AppsConfig,
        logger: Logger,
        store: AppsStore,
        events: EventBus,
        snapshot: watch::Sender<Arc<Snapshot>>,
        loaded: LoadedState,
        http_address: String,
    ) -> Controller {
        let mut unreadable_apps = BTreeSet::new();
        for (key, why) in &loaded.unreadable {
            warn!(logger, "skipping an unreadable state-store entry"; "key" => key, "error" => why);
            if let Some(app) = key
                .strip_prefix("apps")
                .and_then(|id| PathId::parse(id).ok())
            {
                unreadable_apps.insert(app);
            }
        }
        let deployments = loaded
            .deployments
            .into_iter()
            .map(|stored| RunningDeployment {
                stored,
                waiting: BTreeMap::new(),
            })
            .collect();
        let instances: BTreeMap<String, Instance> = loaded
            .instances
            .into_iter()
            .map(|mut i| {
                // Task states are soft: the master's reconciliation tells them again.
                i.state = if i.incarnation == 0 {
                    None
                } else {
                    Some(pb::TaskState::TaskStaging as i32)
                };
                i.healthy = None;
                (i.instance_id.clone(), i)
            })
            .collect();
        let mut by_app: HashMap<PathId, BTreeSet<String>> = HashMap::new();
        for instance in instances.values() {
            by_app
                .entry(instance.app_id.clone())
                .or_default()
                .insert(instance.instance_id.clone());
        }
        let (readiness_tx, readiness_rx) = mpsc::channel(1024);
        let dirty: BTreeSet<PathId> = loaded
            .root
            .apps
            .keys()
            .cloned()
            .chain(by_app.keys().cloned())
            .collect();
        let root = Arc::new(loaded.root);
        Controller {
            dirty,
            published_instances: BTreeMap::new(),
            replies: Vec::new(),
            ticks_to_full_sweep: FULL_SWEEP_TICKS,
            ticks: 0,
            pending_deletes: Vec::new(),
            unreadable_apps,
            framework_id_unsaved: false,
            readiness_checks: HashMap::new(),
            readiness_tx,
            readiness_rx: Some(readiness_rx),
            config,
            logger,
            store,
            events,
            snapshot,
            root,
            versions: loaded.versions,
            instances,
            by_app,
            deployments,
            backoff: {
                let (now, wall_now) = (Instant::now(), Timestamp::now());
                loaded
                    .backoff
                    .iter()
                    .map(|(app, stored)| (app.clone(), Backoff::from_stored(stored, now, wall_now)))
                    .collect()
            },
            queue: HashMap::new(),
            last_failure: BTreeMap::new(),
            framework_id: loaded.framework_id,
            driver: None,
            agent_attributes: HashMap::new(),
            suppressed: false,
            revive_needed: true,
            http_address,
        }
    }

    pub fn framework_id(&self) -> Option<String> {
        self.framework_id.clone()
    }

    /// Runs until `stop` turns true or both input channels close.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut driver_events: mpsc::Receiver<DriverEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(mut readiness) = self.readiness_rx.take() else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                event = driver_events.recv() => match event {
                    Some(event) => self.on_driver_event(event).await,
                    None => break,
                },
                Some(ready) = readiness.recv() => self.on_ready(ready),
                _ = tick.tick() => self.on_tick().await,
                _ = crate::until(&mut stop, true) => break,
            }
            // Take whatever else is already waiting before reacting once for all.
            for _ in 1..COMMANDS_PER_REACTION {
                match commands.try_recv() {
                    Ok(command) => self.on_command(command).await,
                    Err(_) => break,
                }
            }
            while let Ok(event) = driver_events.try_recv() {
                self.on_driver_event(event).await;
            }
            self.react().await;
            for reply in self.replies.drain(..) {
                reply();
            }
        }
        for (_, (_, check)) in self.readiness_checks.drain() {
            check.abort();
        }
    }

    fn on_ready(&mut self, ready: Ready) {
        if let Some(instance) = self.instances.get_mut(&ready.instance_id)
            && instance.incarnation == ready.incarnation
        {
            instance.ready = true;
            self.dirty.insert(instance.app_id.clone());
        }
        if self
            .readiness_checks
            .get(&ready.instance_id)
            .is_some_and(|(incarnation, _)| *incarnation == ready.incarnation)
        {
            self.readiness_checks.remove(&ready.instance_id);
        }
    }

    /// Starts the readiness check of a running instance that is not ready yet.
    fn check_readiness(&mut self, instance_id: &str) {
        let Some(instance) = self.instances.get(instance_id) else {
            return;
        };
        if instance.ready
            || instance.goal != Goal::Running
            || self
                .readiness_checks
                .get(instance_id)
                .is_some_and(|(incarnation, _)| *incarnation == instance.incarnation)
        {
            return;
        }
        let Some(app) = self.root.apps.get(&instance.app_id) else {
            return;
        };
        let Some(check) = app.readiness_checks.first() else {
            return;
        };
        let port = app
            .port_names()
            .iter()
            .position(|name| name.as_deref() == Some(check.port_name.as_str()))
            .and_then(|index| instance.ports.get(index));
        let (Some(port), Some(host)) = (port, instance.host.as_ref()) else {
            return;
        };
        let scheme = if check.protocol.eq_ignore_ascii_case("HTTPS") {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{host}:{port}{}", check.path);
        let task = readiness::spawn(
            check,
            url,
            instance.instance_id.clone(),
            instance.incarnation,
            self.readiness_tx.clone(),
        );
        if let Some((_, old)) = self
            .readiness_checks
            .insert(instance_id.to_string(), (instance.incarnation, task))
        {
            old.abort();
        }
    }

    // ------------------------------------------------------------ reaction

    /// After any input: move deployments on, keep idle apps at their count, ask for
    /// offers when something waits, publish.
    async fn react(&mut self) {
        self.drive_deployments().await;
        self.converge_idle_apps().await;
        self.offer_interest().await;
        self.flush_deletes().await;
        self.publish();
        self.dirty.clear();
    }

    fn publish(&mut self) {
        for app in &self.dirty {
            let list: Vec<Instance> = self
                .by_app
                .get(app)
                .into_iter()
                .flatten()
                .filter_map(|id| self.instances.get(id))
                .cloned()
                .collect();
            if list.is_empty() {
                self.published_instances.remove(app);
            } else {
                self.published_instances.insert(app.clone(), Arc::new(list));
            }
        }
        let instances = self.published_instances.clone();
        let now = Instant::now();
        let mut queue = BTreeMap::new();
        let pending = self.pending_counts();
        // An app that waits no more leaves the queue: its next wait starts afresh.
        self.queue.retain(|app, _| pending.contains_key(app));
        for (app, waiting) in pending {
            let stats = self.queue.get(&app).cloned().unwrap_or_default();
            let delay = self
                .backoff
                .get(&app)
                .map(|b| b.not_before.saturating_duration_since(now).as_secs_f64())
                .unwrap_or(0.0);
            queue.insert(
                app,
                QueueEntry {
                    count: waiting,
                    delay_seconds_left: delay,
                    overdue: delay == 0.0,
                    since: stats.since.unwrap_or_else(Timestamp::now),
                    processed_offers: stats.processed_offers,
                    unused_offers: stats.unused_offers,
                    rejections: stats.rejections,
                    reason: stats.reason,
                },
            );
        }
        let deployments = self
            .deployments
            .iter()
            .map(|d| deployment_view(&d.stored, &d.waiting))
            .collect();
        let snapshot = Snapshot {
            root: Arc::clone(&self.root),
            instances,
            deployments,
            queue,
            last_task_failure: self.last_failure.clone(),
            versions: self.versions.clone(),
            framework_id: self.framework_id.clone(),
            is_leader: true,
            leader: Some(self.http_address.clone()),
        };
        self.snapshot.send_replace(Arc::new(snapshot));
    }

    // ------------------------------------------------------------ commands

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Deploy {
                edit,
                restart,
                force,
                reply,
            } => {
                let result = self.deploy(edit, restart, force).await;
                self.replies.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::KillTasks {
                task_ids,
                scale,
                force,
                reply,
            } => {
                let result = self.kill_tasks(task_ids, scale, force).await;
                self.replies.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::CancelDeployment { id, force, reply } => {
                let result = self.cancel_deployment(&id, force).await;
                self.replies.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::ResetDelay { app, reply } => {
                let result = if let Some(definition) = self.root.apps.get(&app) {
                    // Launches may start at once, and the next failure delays them
                    // from the initial backoff again; the record stays, so the tasks
                    // already counted are not counted again by a new leader.
                    let initial = backoff_delay(definition.backoff_seconds);
                    let (now, wall_now) = (Instant::now(), Timestamp::now());
                    if let Some(backoff) = self.backoff.get_mut(&app) {
                        backoff.not_before = now;
                        backoff.next_delay = initial;
                        backoff.announced = false;
                        let record =
                            Write::json(backoff_key(&app), &backoff.to_stored(now, wall_now));
                        if let Err(e) = async { self.store.write(vec![record?]).await }.await {
                            warn!(self.logger, "cannot record a reset backoff"; "app" => %app, "error" => %e);
                        }
                    }
                    self.revive_needed = true;
                    Ok(())
                } else {
                    Err(AppsError::NotFound(format!("App '{app}' does not exist")))
                };
                let _ = reply.send(result);
            }
            Command::GetVersion {
                app,
                version,
                reply,
            } => {
                let current = self
                    .root
                    .apps
                    .get(&app)
                    .filter(|a| a.version == Some(version))
                    .cloned();
                let result = match current {
                    Some(app) => Ok(app),
                    None => match self.store.version(&app, version).await {
                        Ok(Some(found)) => Ok(found),
                        Ok(None) => Err(AppsError::NotFound(format!(
                            "App '{app}' does not exist in version {version}"
                        ))),
                        Err(e) => Err(e),
                    },
                };
                let _ = reply.send(result);
            }
        }
    }

    /// A version later than every version handed out so far.
    fn next_version(&self) -> Timestamp {
        let now = Timestamp::now();
        let last = self
            .root
            .version
            .into_iter()
            .chain(self.deployments.iter().map(|d| d.stored.version))
            .max();
        match last {
            Some(last) if last >= now => Timestamp::from_millis(last.millis() + 1),
            _ => now,
        }
    }

    async fn deploy(
        &mut self,
        edit: RootEdit,
        restart: Vec<PathId>,
        force: bool,
    ) -> Result<DeploymentRef, AppsError> {
        let version = self.next_version();
        let mut target = edit(&self.root, version)?;
        // Stamp versions: a new or changed app gets this version; a scaled one keeps
        // its last config change; an untouched one keeps everything.
        for (id, app) in target.apps.iter_mut() {
            let old = self.root.apps.get(id);
            app.id = id.clone();
            match old {
                None => {
                    app.version = Some(version);
                    app.version_info = Some(VersionInfo {
                        last_scaling_at: version,
                        last_config_change_at: version,
                    });
                }
                Some(old) => {
                    app.version = old.version;
                    app.version_info = old.version_info.clone();
                    let changed = restart.contains(id) || deployment::config_changed(old, app);
                    if changed {
                        app.version = Some(version);
                        app.version_info = Some(VersionInfo {
                            last_scaling_at: version,
                            last_config_change_at: version,
                        });
                    } else if old.instances != app.instances {
                        let config_change = old
                            .version_info
                            .as_ref()
                            .map_or(version, |v| v.last_config_change_at);
                        app.version = Some(version);
                        app.version_info = Some(VersionInfo {
                            last_scaling_at: version,
                            last_config_change_at: config_change,
                        });
                    }
                }
            }
        }
        target.version = Some(version);
        target.validate()?;
        for app in target.apps.values() {
            app.validate()?;
        }
        deployment::dependency_layers(&target).map_err(|e| {
            AppsError::Invalid(crate::model::ValidationErrors::one(
                "/dependencies",
                e.to_string(),
            ))
        })?;
        let steps = deployment::plan(&self.root, &target, &restart).map_err(|e| {
            AppsError::Invalid(crate::model::ValidationErrors::one(
                "/dependencies",
                e.to_string(),
            ))
        })?;
        let affected = deployment::affected_apps(&steps);
        let conflicting: Vec<usize> = self
            .deployments
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.stored
                    .steps
                    .iter()
                    .flat_map(|s| &s.actions)
                    .any(|a| affected.contains(&a.app))
            })
            .map(|(i, _)| i)
            .collect();
        if !conflicting.is_empty() && !force {
            return Err(AppsError::Locked {
                deployments: conflicting
                    .iter()
                    .map(|&i| self.deployments[i].stored.id.clone())
                    .collect(),
            });
        }
        let deployment_id = uuid::Uuid::new_v4().to_string();
        let original: BTreeMap<PathId, Option<AppDefinition>> = affected
            .iter()
            .map(|id| (id.clone(), self.root.apps.get(id).cloned()))
            .collect();
        let mut stored = StoredDeployment {
            id: deployment_id.clone(),
            version,
            steps,
            current_step: 0,
            restart: restart.clone(),
            original,
        };
        // A value is at most 1 MiB: a deployment too big to keep the definitions it
        // replaces is still run, but cannot be rolled back.
        if serde_json::to_vec(&stored).map_or(0, |v| v.len()) > MAX_DEPLOYMENT_RECORD {
            warn!(self.logger, "deployment too big to keep what it replaces; it cannot be rolled back"; "deployment" => &deployment_id);
            stored.original.clear();
        }
        // What to write: changed apps and their versions, removed apps, groups, the
        // deployment; and the cancelled deployments' records go.
        let mut writes = Vec::new();
        for (id, app) in &target.apps {
            if self.root.apps.get(id) != Some(app) {
                writes.push(Write::json(app_key(id), app)?);
                if let Some(v) = app.version {
                    writes.push(Write::json(version_key(id, v), app)?);
                }
            }
        }
        for id in self.root.apps.keys() {
            if !target.apps.contains_key(id) {
                writes.push(Write::Delete(app_key(id)));
            }
        }
        for (id, group) in &target.groups {
            if self.root.groups.get(id) != Some(group) {
                writes.push(Write::json(group_key(id), group)?);
            }
        }
        for id in self.root.groups.keys() {
            if !target.groups.contains_key(id) {
                writes.push(Write::Delete(group_key(id)));
            }
        }
        let (pruned, kept_versions) = self.prune_versions(&target);
        writes.extend(pruned);
        let has_steps = !stored.steps.is_empty();
        if has_steps {
            writes.push(Write::json(deployment_key(&deployment_id), &stored)?);
        }
        for &i in &conflicting {
            writes.push(Write::Delete(deployment_key(
                &self.deployments[i].stored.id,
            )));
        }
        // A new definition (or none) starts without the old one's backoff.
        for id in self.backoff.keys() {
            if affected.contains(id) || !target.apps.contains_key(id) {
                writes.push(Write::Delete(backoff_key(id)));
            }
        }
        self.store.write(writes).await?;
        // Applied: change the state in memory.
        for &i in conflicting.iter().rev() {
            let cancelled = self.deployments.remove(i);
            info!(self.logger, "deployment cancelled by a forced one"; "deployment" => &cancelled.stored.id);
        }
        self.versions = kept_versions;
        for id in &affected {
            self.backoff.remove(id);
        }
        self.dirty.extend(affected.iter().cloned());
        for (id, app) in &target.apps {
            if self.root.apps.get(id) != Some(app) {
                self.dirty.insert(id.clone());
            }
        }
        self.dirty.extend(
            self.root
                .apps
                .keys()
                .filter(|id| !target.apps.contains_key(*id))
                .cloned(),
        );
        self.queue.retain(|app, _| target.apps.contains_key(app));
        self.last_failure
            .retain(|app, _| target.apps.contains_key(app));
        self.backoff.retain(|app, _| target.apps.contains_key(app));
        self.unreadable_apps
            .retain(|app| !target.apps.contains_key(app));
        self.root = Arc::new(target);
        self.events.publish(
            "deployment_info",
            serde_json::json!({ "plan": { "id": deployment_id, "version": version } }),
        );
        if has_steps {
            self.deployments.push(RunningDeployment {
                stored,
                waiting: BTreeMap::new(),
            });
        } else {
            self.events.publish(
                "deployment_success",
                serde_json::json!({ "id": deployment_id }),
            );
        }
        self.events.publish(
            "group_change_success",
            serde_json::json!({ "groupId": "/", "version": version }),
        );
        info!(self.logger, "deployment started"; "deployment" => &deployment_id, "apps" => affected.len());
        Ok(DeploymentRef {
            deployment_id,
            version,
        })
    }

    /// The versions to keep per app after `target` is stored, and the deletes of
    /// the ones beyond `max_versions` (and of every version of removed apps).
    fn prune_versions(&self, target: &RootGroup) -> (Vec<Write>, BTreeMap<PathId, Vec<Timestamp>>) {
        let mut writes = Vec::new();
        let mut kept = BTreeMap::new();
        for (id, versions) in &self.versions {
            if !target.apps.contains_key(id) {
                writes.extend(versions.iter().map(|v| Write::Delete(version_key(id, *v))));
            }
        }
        for (id, app) in &target.apps {
            let mut versions = self.versions.get(id).cloned().unwrap_or_default();
            if let Some(v) = app.version
                && !versions.contains(&v)
            {
                versions.push(v);
            }
            versions.sort();
            while versions.len() > self.config.max_versions.max(1) {
                let old = versions.remove(0);
                writes.push(Write::Delete(version_key(id, old)));
            }
            kept.insert(id.clone(), versions);
        }
        (writes, kept)
    }

    async fn kill_tasks(
        &mut self,
        task_ids: Vec<String>,
        scale: bool,
        force: bool,
    ) -> Result<KillOutcome, AppsError> {
        // Marathon ignores ids it does not know (and a stale incarnation is such an
        // id: it must not kill the instance's current task); each id counts once.
        let mut found: Vec<Instance> = Vec::new();
        for task_id in &task_ids {
            let instance = parse_task_id(task_id)
                .and_then(|(instance_id, incarnation)| {
                    self.instances
                        .get(instance_id)
                        .filter(|i| i.incarnation == incarnation)
                })
                .filter(|i| i.goal == Goal::Running);
            if let Some(instance) = instance
                && !found.iter().any(|f| f.instance_id == instance.instance_id)
            {
                found.push(instance.clone());
            }
        }
        if !scale {
            for instance in &found {
                self.kill_task_of(instance).await;
            }
            return Ok(KillOutcome::Killed(found));
        }
        let mut per_app: BTreeMap<PathId, i64> = BTreeMap::new();
        for instance in &found {
            *per_app.entry(instance.app_id.clone()).or_default() += 1;
        }
        let edit: RootEdit = Box::new(move |root: &RootGroup, _version| {
            let mut root = root.clone();
            for (app, count) in &per_app {
                if let Some(def) = root.apps.get_mut(app) {
                    def.instances = (def.instances - count).max(0);
                }
            }
            Ok(root)
        });
        let deployment = self.deploy(edit, Vec::new(), force).await?;
        let ids: Vec<String> = found.iter().map(|i| i.instance_id.clone()).collect();
        self.decommission(&ids).await;
        Ok(KillOutcome::Scaled(deployment))
    }

    async fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
    ) -> Result<Option<DeploymentRef>, AppsError> {
        let Some(index) = self.deployments.iter().position(|d| d.stored.id == id) else {
            return Err(AppsError::NotFound(format!(
                "DeploymentPlan {id} does not exist"
            )));
        };
        if force {
            self.store
                .write(vec![Write::Delete(deployment_key(id))])
                .await?;
            let cancelled = self.deployments.remove(index);
            self.events.publish(
                "deployment_failed",
                serde_json::json!({ "id": cancelled.stored.id }),
            );
            return Ok(None);
        }
        let original = self.deployments[index].stored.original.clone();
        if original.is_empty() {
            return Err(AppsError::Invalid(crate::model::ValidationErrors::one(
                "/",
                "this deployment was too big to keep the definitions it replaced: cancel it with force=true and deploy the old definitions",
            )));
        }
        let edit: RootEdit = Box::new(move |root: &RootGroup, _version| {
            let mut root = root.clone();
            for (app, before) in original {
                match before {
                    Some(before) => {
                        root.apps.insert(app, before);
                    }
                    None => {
                        root.apps.remove(&app);
                    }
                }
            }
            Ok(root)
        });
        self.deploy(edit, Vec::new(), true).await.map(Some)
    }

    // ------------------------------------------------------------ driver events

    async fn on_driver_event(&mut self, event: DriverEvent) {
        match event {
            DriverEvent::Subscribed {
                handle,
                framework_id,
            } => {
                if self.framework_id.as_deref() != Some(framework_id.as_str()) {
                    self.framework_id = Some(framework_id.clone());
                    self.framework_id_unsaved = true;
                    self.save_framework_id().await;
                }
                info!(self.logger, "subscribed"; "framework_id" => &framework_id);
                self.driver = Some(handle.clone());
                self.suppressed = false;
                self.reconcile(&handle).await;
            }
            DriverEvent::Offers(offers) => self.on_offers(offers).await,
            DriverEvent::Rescinded(_) => {}
            DriverEvent::Update(status) => self.on_update(status).await,
            DriverEvent::Disconnected => {
                self.driver = None;
            }
        }
    }

    /// Stores the framework id; until it is stored, offers are declined.
    async fn save_framework_id(&mut self) {
        let Some(id) = self.framework_id.clone() else {
            return;
        };
        match self
            .store
            .write(vec![Write::Put(
                FRAMEWORK_ID_KEY.to_string(),
                id.into_bytes(),
            )])
            .await
        {
            Ok(()) => self.framework_id_unsaved = false,
            Err(e) => {
                warn!(self.logger, "cannot store the framework id; launching nothing until it is"; "error" => %e)
            }
        }
    }

    /// Asks the master for the state of every task we launched (explicitly, so a
    /// launch the master never saw comes back as lost), then of every task it has
    /// for us (implicitly, so tasks we do not know are found and killed).
    async fn reconcile(&self, handle: &SchedulerHandle) {
        let known: Vec<(pb::TaskId, Option<pb::AgentId>)> = self
            .instances
            .values()
            .filter(|i| i.incarnation > 0)
            .map(|i| {
                (
                    pb::TaskId { value: i.task_id() },
                    i.agent_id.clone().map(|value| pb::AgentId { value }),
                )
            })
            .collect();
        for chunk in known.chunks(10_000) {
            if let Err(e) = handle.reconcile(chunk.to_vec()).await {
                warn!(self.logger, "explicit reconciliation failed"; "error" => %e);
            }
        }
        if let Err(e) = handle.reconcile(Vec::new()).await {
            warn!(self.logger, "implicit reconciliation failed"; "error" => %e);
        }
    }

    async fn on_update(&mut self, status: pb::TaskStatus) {
        let task_id = status.task_id.clone().map(|t| t.value).unwrap_or_default();
        let state = status.state();
        let terminal = ended(state);
        let Some((instance_id, incarnation)) = parse_task_id(&task_id) else {
            if !terminal {
                self.kill_raw(&task_id, status.agent_id.clone()).await;
            }
            return;
        };
        let Some(instance) = self.instances.get_mut(instance_id) else {
            // Not ours (any more): an app deleted while we were away, or an instance
            // expunged after it was unreachable.
            if !terminal {
                debug!(self.logger, "killing a task of no instance"; "task" => &task_id);
                self.kill_raw(&task_id, status.agent_id.clone()).await;
            }
            return;
        };
        if incarnation != instance.incarnation {
            if !terminal && incarnation < instance.incarnation {
                self.kill_raw(&task_id, status.agent_id.clone()).await;
            }
            return;
        }
        let now = Timestamp::now();
        self.dirty.insert(instance.app_id.clone());
        instance.state = Some(state as i32);
        if let Some(healthy) = status.healthy {
            instance.healthy = Some(healthy);
        }
        if !status.message.is_empty() {
            instance.message = status.message.clone();
        }
        if state == pb::TaskState::TaskRunning && instance.started_at.is_none() {
            instance.started_at = Some(now);
        }
        if state == pb::TaskState::TaskUnreachable {
            instance.unreachable_since.get_or_insert(now);
        } else {
            instance.unreachable_since = None;
        }
        let app_id = instance.app_id.clone();
        let instance = instance.clone();
        self.events.publish(
            "status_update_event",
            serde_json::json!({
                "slaveId": instance.agent_id,
                "taskId": task_id,
                "taskStatus": state.as_str_name(),
                "message": status.message,
                "appId": app_id,
                "host": instance.host,
                "ports": instance.ports,
                "version": instance.app_version,
            }),
        );
        if state == pb::TaskState::TaskRunning {
            self.check_readiness(&instance.instance_id);
        }
        if !terminal {
            if instance.goal == Goal::Decommissioned {
                // Still alive although killed (a kill lost on the way): again.
                self.kill_task_of(&instance).await;
            }
            return;
        }
        if let Some((_, check)) = self.readiness_checks.remove(&instance.instance_id) {
            check.abort();
        }
        if instance.goal == Goal::Decommissioned {
            self.forget(&instance.instance_id).await;
            return;
        }
        if matches!(
            state,
            pb::TaskState::TaskFailed
                | pb::TaskState::TaskError
                | pb::TaskState::TaskLost
                | pb::TaskState::TaskGone
                | pb::TaskState::TaskDropped
                | pb::TaskState::TaskFinished
        ) {
            self.last_failure.insert(
                app_id.clone(),
                TaskFailure {
                    app_id: app_id.clone(),
                    host: instance.host.clone().unwrap_or_default(),
                    message: status.message.clone(),
                    state: state.as_str_name().to_string(),
                    task_id: task_id.clone(),
                    timestamp: now,
                    version: instance.app_version,
                },
            );
        }
        // Marathon delays the next launch after a failure and after an exit (even
        // 0), not after a kill.
        let unhealthy_kill = instance.healthy == Some(false);
        if matches!(
            state,
            pb::TaskState::TaskFailed | pb::TaskState::TaskFinished | pb::TaskState::TaskError
        ) || unhealthy_kill
        {
            self.note_failure(&app_id, &task_id).await;
        }
        self.revive_needed = true;
        let daemon = self.root.apps.get(&app_id).is_some_and(|a| a.is_daemon());
        if daemon || !self.root.apps.contains_key(&app_id) {
            // A daemon instance belongs to its agent; the next offer from a
            // matching agent without one makes a new one.
            self.forget(&instance.instance_id).await;
        }
    }

    /// Delays the app's next launch, and records the delay so the next leader
    /// keeps it.
    async fn note_failure(&mut self, app_id: &PathId, task_id: &str) {
        let Some(app) = self.root.apps.get(app_id) else {
            return;
        };
        if self
            .backoff
            .get(app_id)
            .is_some_and(|b| b.counted_tasks.iter().any(|t| t == task_id))
        {
            // Its end again, as reconciliation tells a new leader: counted already.
            return;
        }
        let now = Instant::now();
        let initial = backoff_delay(app.backoff_seconds);
        let max = backoff_delay(app.max_launch_delay_seconds);
        let backoff = self.backoff.entry(app_id.clone()).or_insert(Backoff {
            next_delay: initial,
            not_before: now,
            last_failure: now,
            announced: false,
            counted_tasks: VecDeque::new(),
        });
        // A quiet spell longer than the delay plus the maximum forgets the backoff.
        if now.saturating_duration_since(backoff.last_failure) > backoff.next_delay + max {
            backoff.next_delay = initial;
        }
        backoff.not_before = now
            .checked_add(backoff.next_delay)
            .unwrap_or(now + MAX_BACKOFF);
        backoff.last_failure = now;
        backoff.announced = false;
        backoff.counted_tasks.push_back(task_id.to_string());
        if backoff.counted_tasks.len() > COUNTED_TASKS_KEPT {
            backoff.counted_tasks.pop_front();
        }
        let grown = backoff.next_delay.as_secs_f64() * app.backoff_factor.max(1.0);
        backoff.next_delay = backoff_delay(grown).min(max);
        let stored = backoff.to_stored(now, Timestamp::now());
        let record = Write::json(backoff_key(app_id), &stored);
        if let Err(e) = async { self.store.write(vec![record?]).await }.await {
            // Kept in memory all the same: only a new leader would launch early.
            warn!(self.logger, "cannot record a backoff"; "app" => %app_id, "error" => %e);
        }
    }

    async fn on_tick(&mut self) {
        self.ticks += 1;
        if self.framework_id_unsaved {
            self.save_framework_id().await;
        }
        if self.ticks.is_multiple_of(KILL_RETRY_TICKS) {
            let dying: Vec<Instance> = self
                .instances
                .values()
                .filter(|i| i.goal == Goal::Decommissioned && i.incarnation > 0)
                .cloned()
                .collect();
            for instance in dying {
                self.kill_task_of(&instance).await;
            }
        }
        if let Some(driver) = self.driver.clone() {
            if self.ticks.is_multiple_of(FULL_RECONCILE_TICKS) {
                self.reconcile(&driver).await;
            } else if self.ticks.is_multiple_of(STAGING_RECONCILE_TICKS) {
                let staging: Vec<(pb::TaskId, Option<pb::AgentId>)> = self
                    .instances
                    .values()
                    .filter(|i| {
                        i.incarnation > 0 && i.task_state() == Some(pb::TaskState::TaskStaging)
                    })
                    .map(|i| {
                        (
                            pb::TaskId { value: i.task_id() },
                            i.agent_id.clone().map(|value| pb::AgentId { value }),
                        )
                    })
                    .collect();
                for chunk in staging.chunks(10_000) {
                    if let Err(e) = driver.reconcile(chunk.to_vec()).await {
                        warn!(self.logger, "reconciliation of staging tasks failed"; "error" => %e);
                    }
                }
            }
        }
        self.ticks_to_full_sweep = self.ticks_to_full_sweep.saturating_sub(1);
        if self.ticks_to_full_sweep == 0 {
            self.ticks_to_full_sweep = FULL_SWEEP_TICKS;
            let all: Vec<PathId> = self
                .root
                .apps
                .keys()
                .chain(self.by_app.keys())
                .cloned()
                .collect();
            self.dirty.extend(all);
        }
        // A backoff that ran out lets its app's instances launch: ask for offers.
        let now_instant = Instant::now();
        let pending = self.pending_counts();
        let mut forgotten = Vec::new();
        self.backoff.retain(|app, backoff| {
            let expired = backoff.not_before <= now_instant;
            if expired && !backoff.announced {
                backoff.announced = true;
                if pending.contains_key(app) {
                    self.revive_needed = true;
                }
            }
            // Keep the delay until a quiet spell has passed.
            let keep = now_instant.saturating_duration_since(backoff.last_failure)
                < BACKOFF_FORGOTTEN_AFTER;
            if !keep {
                forgotten.push(Write::Delete(backoff_key(app)));
            }
            keep
        });
        if let Err(e) = self.store.write(forgotten).await {
            warn!(self.logger, "cannot forget backoffs in the store"; "error" => %e);
        }
        // Unreachable instances: replaced after inactiveAfterSeconds, forgotten after
        // expungeAfterSeconds.
        let now = Timestamp::now();
        let mut replace = Vec::new();
        let mut expunge = Vec::new();
        for instance in self.instances.values() {
            let Some(since) = instance.unreachable_since else {
                continue;
            };
            let app = self.root.apps.get(&instance.app_id);
            if instance.goal == Goal::Decommissioned || app.is_none() {
                // Killed (scaled down, replaced, its app deleted) while its agent is
                // away: the kill cannot be confirmed, and waiting for it would hold
                // its deployment for ever. Forgotten now; should the agent come
                // back, its task is of no instance and gets killed then.
                expunge.push(instance.instance_id.clone());
                continue;
            }
            let Some(app) = app else {
                continue;
            };
            let UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } = app.unreachable_strategy
            else {
                continue;
            };
            let away = (now.millis() - since.millis()) as f64 / 1000.0;
            if away >= expunge_after_seconds {
                expunge.push(instance.instance_id.clone());
            } else if away >= inactive_after_seconds && instance.goal == Goal::Running {
                replace.push(instance.instance_id.clone());
            }
        }
        if !replace.is_empty() {
            self.decommission(&replace).await;
        }
        for id in expunge {
            if let Some(instance) = self.instances.get(&id).cloned() {
                self.kill_task_of(&instance).await;
                self.forget(&id).await;
            }
        }
    }

    // ------------------------------------------------------------ instances

    /// Instances of `app` the controller still counts (goal Running).
    fn wanted(&self, app: &PathId) -> Vec<Instance> {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id))
            .cloned()
            .collect()
    }

    fn insert_instance(&mut self, instance: Instance) {
        self.dirty.insert(instance.app_id.clone());
        self.by_app
            .entry(instance.app_id.clone())
            .or_default()
            .insert(instance.instance_id.clone());
        self.instances
            .insert(instance.instance_id.clone(), instance);
    }

    /// Creates `count` new instances of `app` at its current version.
    fn create_instances(&mut self, app: &AppDefinition, count: u32) {
        let Some(version) = app.version else {
            return;
        };
        for _ in 0..count {
            let instance_id = format!("{}.instance-{}", app.id.safe_name(), uuid::Uuid::new_v4());
            let mut instance = new_instance(app, instance_id);
            instance.app_version = version;
            self.insert_instance(instance);
        }
        self.queue
            .entry(app.id.clone())
            .or_default()
            .since
            .get_or_insert_with(Timestamp::now);
        self.revive_needed = true;
    }

    /// Marks instances for removal and kills their tasks; instances without a live
    /// task go at once.
    async fn decommission(&mut self, ids: &[String]) {
        let mut writes = Vec::new();
        let mut kills = Vec::new();
        let mut gone = Vec::new();
        for id in ids {
            let Some(instance) = self.instances.get_mut(id) else {
                continue;
            };
            instance.goal = Goal::Decommissioned;
            self.dirty.insert(instance.app_id.clone());
            let live = instance.incarnation > 0 && !instance.task_state().is_some_and(ended);
            if live {
                if let Ok(write) = Write::json(instance_key(id), &*instance) {
                    writes.push(write);
                }
                kills.push(instance.clone());
            } else {
                gone.push(id.clone());
            }
        }
        if let Err(e) = self.store.write(writes).await {
            warn!(self.logger, "cannot record decommissioned instances"; "error" => %e);
        }
        for instance in kills {
            self.kill_task_of(&instance).await;
        }
        for id in gone {
            self.forget(&id).await;
        }
    }

    /// Drops an instance and its record.
    async fn forget(&mut self, instance_id: &str) {
        if let Some((_, check)) = self.readiness_checks.remove(instance_id) {
            check.abort();
        }
        let removed = self.instances.remove(instance_id);
        if let Some(instance) = &removed {
            self.dirty.insert(instance.app_id.clone());
        }
        if let Some(instance) = &removed
            && let Some(ids) = self.by_app.get_mut(&instance.app_id)
        {
            ids.remove(instance_id);
            if ids.is_empty() {
                self.by_app.remove(&instance.app_id);
            }
        }
        if let Some(instance) = removed
            && instance.incarnation > 0
        {
            // Written with the reaction's other deletes: a record left behind by a
            // crash is only an instance whose task reconciliation finds gone.
            self.pending_deletes
                .push(Write::Delete(instance_key(instance_id)));
        }
    }

    /// Writes the deletes collected since the last reaction, in one batch.
    async fn flush_deletes(&mut self) {
        let deletes = std::mem::take(&mut self.pending_deletes);
        if let Err(e) = self.store.write(deletes).await {
            warn!(self.logger, "cannot delete instance records"; "error" => %e);
        }
    }

    async fn kill_task_of(&self, instance: &Instance) {
        if instance.incarnation == 0 {
            return;
        }
        self.kill_raw(
            &instance.task_id(),
            instance.agent_id.clone().map(|value| pb::AgentId { value }),
        )
        .await;
    }

    async fn kill_raw(&self, task_id: &str, agent_id: Option<pb::AgentId>) {
        let Some(driver) = &self.driver else {
            return;
        };
        let id = pb::TaskId {
            value: task_id.to_string(),
        };
        if let Err(e) = driver.kill(id, agent_id).await {
            warn!(self.logger, "kill failed"; "task" => task_id, "error" => %e);
        }
    }

    /// Apps with instances waiting for a launch, and how many.
    fn pending_counts(&self) -> BTreeMap<PathId, u32> {
        let mut counts = BTreeMap::new();
        for instance in self.instances.values() {
            if needs_launch(instance) {
                *counts.entry(instance.app_id.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    // ------------------------------------------------------------ deployments

    /// The definition an app is held to now: its original while a deployment has
    /// yet to reach it, its target otherwise.
    fn effective(&self, app: &PathId) -> Option<AppDefinition> {
        for d in &self.deployments {
            let pending = d
                .stored
                .steps
                .iter()
                .skip(d.stored.current_step)
                .flat_map(|s| &s.actions)
                .any(|a| &a.app == app);
            let current = d
                .stored
                .steps
                .get(d.stored.current_step)
                .is_some_and(|s| s.actions.iter().any(|a| &a.app == app));
            if pending && !current {
                return d.stored.original.get(app).cloned().flatten();
            }
        }
        self.root.apps.get(app).cloned()
    }

    /// Apps in the current step of a running deployment.
    fn in_deployment(&self) -> BTreeSet<PathId> {
        self.deployments
            .iter()
            .filter_map(|d| d.stored.steps.get(d.stored.current_step))
            .flat_map(|s| &s.actions)
            .map(|a| a.app.clone())
            .collect()
    }

    async fn drive_deployments(&mut self) {
        let mut index = 0;
        while index < self.deployments.len() {
            let stored = &self.deployments[index].stored;
            let touched = stored
                .steps
                .get(stored.current_step)
                .is_none_or(|step| step.actions.iter().any(|a| self.dirty.contains(&a.app)));
            if !touched {
                index += 1;
                continue;
            }
            let finished = self.drive_deployment(index).await;
            if finished {
                let done = self.deployments.remove(index);
                if let Err(e) = self
                    .store
                    .write(vec![Write::Delete(deployment_key(&done.stored.id))])
                    .await
                {
                    warn!(self.logger, "cannot delete a finished deployment"; "error" => %e);
                }
                info!(self.logger, "deployment finished"; "deployment" => &done.stored.id);
                self.events.publish(
                    "deployment_success",
                    serde_json::json!({ "id": done.stored.id }),
                );
            } else {
                index += 1;
            }
        }
    }

    /// Moves one deployment on; true when it is finished.
    async fn drive_deployment(&mut self, index: usize) -> bool {
        loop {
            let stored = &self.deployments[index].stored;
            let Some(step) = stored.steps.get(stored.current_step).cloned() else {
                return true;
            };
            let mut all_done = true;
            let mut waiting = BTreeMap::new();
            for action in &step.actions {
                let app_id = &action.app;
                let instances = self.wanted(app_id);
                let target = self.root.apps.get(app_id).cloned();
                let progress = match (action.kind, target) {
                    (ActionKind::Stop, _) | (_, None) => stop_progress(&instances),
                    (kind, Some(target)) if target.is_daemon() => {
                        self.daemon_progress(kind, &target, &instances)
                    }
                    (kind, Some(target)) => deployment::advance(kind, &target, &instances),
                };
                self.apply(app_id, &progress).await;
                if !progress.done {
                    all_done = false;
                    let mut why = progress
                        .waiting_for
                        .clone()
                        .unwrap_or_else(|| "instances are starting".to_string());
                    if let Some(reason) = self.queue.get(app_id).and_then(|q| q.reason.clone()) {
                        why = format!("{why}; {reason}");
                    }
                    waiting.insert(app_id.clone(), why);
                }
            }
            let deployment = &mut self.deployments[index];
            deployment.waiting = waiting;
            if !all_done {
                return false;
            }
            deployment.stored.current_step += 1;
            let finished = deployment.stored.current_step >= deployment.stored.steps.len();
            if finished {
                return true;
            }
            let record = Write::json(deployment_key(&deployment.stored.id), &deployment.stored);
            if let Ok(record) = record
                && let Err(e) = self.store.write(vec![record]).await
            {
                warn!(self.logger, "cannot record a deployment's progress"; "error" => %e);
            }
        }
    }

    /// Daemon apps: one instance per matching agent, whatever `instances` says;
    /// a restart kills every instance of an older version (each agent gets the new
    /// one from its next offer).
    fn daemon_progress(
        &self,
        kind: ActionKind,
        target: &AppDefinition,
        instances: &[Instance],
    ) -> Progress {
        let kill: Vec<String> = instances
            .iter()
            .filter(|i| {
                i.goal == Goal::Running
                    && kind == ActionKind::Restart
                    && target
                        .version_info
                        .as_ref()
                        .is_some_and(|v| i.app_version < v.last_config_change_at)
            })
            .map(|i| i.instance_id.clone())
            .collect();
        let starting = instances
            .iter()
            .any(|i| i.goal == Goal::Running && i.task_state() != Some(pb::TaskState::TaskRunning));
        let done = kill.is_empty() && !starting;
        Progress {
            kill,
            launch: 0,
            done,
            waiting_for: (!done).then(|| "daemon instances are starting".to_string()),
        }
    }

    async fn apply(&mut self, app_id: &PathId, progress: &Progress) {
        if !progress.kill.is_empty() {
            self.decommission(&progress.kill).await;
        }
        if progress.launch > 0
            && let Some(app) = self.root.apps.get(app_id).cloned()
        {
            self.create_instances(&app, progress.launch);
        }
    }

    async fn converge_idle_apps(&mut self) {
        let busy = self.in_deployment();
        let apps: Vec<PathId> = self.dirty.iter().cloned().collect();
        for app_id in apps {
            if busy.contains(&app_id) || self.unreadable_apps.contains(&app_id) {
                continue;
            }
            let instances = self.wanted(&app_id);
            let progress = match self.effective(&app_id) {
                Some(app) if app.is_daemon() => continue,
                Some(app) => deployment::converge(&app, &instances),
                None => stop_progress(&instances),
            };
            if !progress.kill.is_empty() {
                self.decommission(&progress.kill).await;
            }
            if progress.launch > 0
                && let Some(app) = self.effective(&app_id)
            {
                self.create_instances(&app, progress.launch);
            }
        }
    }

    // ------------------------------------------------------------ offers

    /// Revives when something waits (or a daemon app may find a new agent);
    /// suppresses when nothing does.
    async fn offer_interest(&mut self) {
        let Some(driver) = self.driver.clone() else {
            return;
        };
        let wants =
            !self.pending_counts().is_empty() || self.root.apps.values().any(|a| a.is_daemon());
        let roles = vec![self.config.role.clone()];
        if wants && (self.suppressed || self.revive_needed) {
            if driver.revive(roles).await.is_ok() {
                self.suppressed = false;
                self.revive_needed = false;
            }
        } else if !wants && !self.suppressed && driver.suppress(roles).await.is_ok() {
            self.suppressed = true;
        }
    }

    async fn on_offers(&mut self, offers: Vec<pb::Offer>) {
        let Some(driver) = self.driver.clone() else {
            return;
        };
        if self.framework_id_unsaved {
            let ids: Vec<pb::OfferId> = offers.iter().filter_map(|o| o.id.clone()).collect();
            let _ = driver
                .decline(
                    ids,
                    Some(pb::Filters {
                        refuse_seconds: Some(REFUSE_WHILE_WAITING),
                    }),
                )
                .await;
            return;
        }
        let now = Instant::now();
        // Who waits, per app, not in backoff.
        let mut waiting: BTreeMap<PathId, Vec<String>> = BTreeMap::new();
        for instance in self.instances.values() {
            if needs_launch(instance) {
                let delayed = self
                    .backoff
                    .get(&instance.app_id)
                    .is_some_and(|b| b.not_before > now);
                if !delayed {
                    waiting
                        .entry(instance.app_id.clone())
                        .or_default()
                        .push(instance.instance_id.clone());
                }
            }
        }
        let mut demands = Vec::new();
        let mut demand_apps: Vec<(AppDefinition, Vec<String>)> = Vec::new();
        for (app_id, ids) in waiting {
            let Some(app) = self.effective(&app_id) else {
                continue;
            };
            match Demand::from_app(&app, ids.len() as u32) {
                Ok(demand) => {
                    demands.push(demand);
                    demand_apps.push((app, ids));
                }
                Err(e) => {
                    warn!(self.logger, "app cannot be placed"; "app" => %app_id, "error" => e)
                }
            }
        }
        for app in self.root.apps.values().filter(|a| a.is_daemon()) {
            let delayed = self
                .backoff
                .get(&app.id)
                .is_some_and(|b| b.not_before > now);
            if delayed || self.in_later_step(&app.id) {
                continue;
            }
            if let Ok(demand) = Demand::from_app(app, 0) {
                demands.push(demand);
                demand_apps.push((app.clone(), Vec::new()));
            }
        }
        let refuse = |seconds: f64| {
            Some(pb::Filters {
                refuse_seconds: Some(seconds),
            })
        };
        if demands.is_empty() {
            let ids: Vec<pb::OfferId> = offers.iter().filter_map(|o| o.id.clone()).collect();
            let _ = driver
                .decline(
                    ids,
                    refuse(self.config.decline_offer_duration.as_secs_f64()),
                )
                .await;
            return;
        }
        // Offers placement can read; the others are declined below (no task).
        let mut readable: Vec<usize> = Vec::new();
        let mut agent_offers: Vec<AgentOffer> = Vec::new();
        for (index, offer) in offers.iter().enumerate() {
            match AgentOffer::from_offer(offer) {
                Ok(agent_offer) => {
                    self.agent_attributes.insert(
                        agent_offer.agent_id.clone(),
                        Arc::clone(&agent_offer.attributes),
                    );
                    readable.push(index);
                    agent_offers.push(agent_offer);
                }
                Err(e) => warn!(self.logger, "ignoring an offer"; "error" => %e),
            }
        }
        let mut placed = Placed::new();
        for instance in self.instances.values() {
            if instance.incarnation > 0
                && instance.goal == Goal::Running
                && !instance.task_state().is_some_and(ended)
                && let (Some(agent), Some(host)) = (&instance.agent_id, &instance.host)
            {
                placed.add(
                    instance.app_id.clone(),
                    Location {
                        agent_id: agent.clone(),
                        hostname: host.clone(),
                        attributes: self
                            .agent_attributes
                            .get(agent)
                            .cloned()
                            .unwrap_or_default(),
                    },
                );
            }
        }
        let outcome =
            placement::place(&demands, &agent_offers, &placed, PlacementLimits::default());
        // Build the tasks, offer by offer, in the order placement chose.
        let mut rooms: Vec<Option<OfferResources>> =
            offers.iter().map(|o| OfferResources::new(o).ok()).collect();
        let mut tasks: Vec<Vec<pb::TaskInfo>> = vec![Vec::new(); offers.len()];
        let mut launched: Vec<Instance> = Vec::new();
        let mut next_of_demand: Vec<usize> = vec![0; demands.len()];
        let staged_at = Timestamp::now();
        for launch in &outcome.launches {
            let demand_index = &launch.demand;
            let Some(offer_index) = readable.get(launch.offer) else {
                continue;
            };
            let (app, ids) = &demand_apps[*demand_index];
            let Some(Some(room)) = rooms.get_mut(*offer_index) else {
                continue;
            };
            let offer = &offers[*offer_index];
            // Which instance: the next waiting one, or a new daemon instance.
            let instance_id = if app.is_daemon() {
                format!("{}.instance-{}", app.id.safe_name(), uuid::Uuid::new_v4())
            } else {
                let n = next_of_demand[*demand_index];
                next_of_demand[*demand_index] += 1;
                match ids.get(n) {
                    Some(id) => id.clone(),
                    None => continue,
                }
            };
            let mut instance = match self.instances.get(&instance_id) {
                Some(existing) => existing.clone(),
                None => new_instance(app, instance_id.clone()),
            };
            instance.incarnation += 1;
            instance.app_version = app.version.unwrap_or(staged_at);
            let task_id = instance.task_id();
            match crate::model::task_info::build_task(app, &task_id, room, &offer.hostname) {
                Ok((task, ports)) => {
                    instance.agent_id = offer.agent_id.as_ref().map(|a| a.value.clone());
                    instance.host = Some(offer.hostname.clone());
                    instance.ports = ports;
                    instance.state = Some(pb::TaskState::TaskStaging as i32);
                    instance.healthy = None;
                    instance.ready = app.readiness_checks.is_empty();
                    instance.staged_at = Some(staged_at);
                    instance.started_at = None;
                    instance.unreachable_since = None;
                    tasks[*offer_index].push(task);
                    launched.push(instance);
                }
                Err(e) => {
                    debug!(self.logger, "offer does not fit after all"; "app" => %app.id, "error" => %e);
                }
            }
        }
        // Record every launch before it happens: a restart then knows the task.
        let writes: Vec<Write> = launched
            .iter()
            .filter_map(|i| Write::json(instance_key(&i.instance_id), i).ok())
            .collect();
        if let Err(e) = self.store.write(writes).await {
            warn!(self.logger, "cannot record launches; declining the offers"; "error" => %e);
            let ids: Vec<pb::OfferId> = offers.iter().filter_map(|o| o.id.clone()).collect();
            let _ = driver.decline(ids, refuse(REFUSE_WHILE_WAITING)).await;
            return;
        }
        for instance in &launched {
            self.insert_instance(instance.clone());
        }
        // Queue bookkeeping: what the offers said about each waiting app.
        for (app, _) in &demand_apps {
            let stats = self.queue.entry(app.id.clone()).or_default();
            stats.processed_offers += offers.len() as u64;
            match outcome.unplaced.get(&app.id) {
                Some(rejection) => {
                    stats.unused_offers += rejection.offers_seen;
                    for (reason, count) in &rejection.counts {
                        *stats.rejections.entry(reason.to_string()).or_default() += count;
                    }
                    stats.reason = Some(rejection.reason.clone());
                }
                None => stats.reason = None,
            }
        }
        let mut declined = Vec::new();
        for (offer, tasks) in offers.iter().zip(tasks) {
            let Some(offer_id) = offer.id.clone() else {
                continue;
            };
            if tasks.is_empty() {
                declined.push(offer_id);
                continue;
            }
            let count = tasks.len();
            let task_ids: Vec<String> = tasks
                .iter()
                .filter_map(|t| t.task_id.as_ref().map(|id| id.value.clone()))
                .collect();
            let operations = tasks
                .chunks(TASKS_PER_OPERATION)
                .map(|c| c.to_vec())
                .map(|task_infos| pb::Operation {
                    operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                        task_infos,
                    })),
                })
                .collect();
            if let Err(e) = driver
                .accept(vec![offer_id], operations, refuse(REFUSE_WHILE_WAITING))
                .await
            {
                // No update will come for these tasks: count them as dropped, so
                // their instances launch again (with the next incarnation).
                warn!(self.logger, "launch failed"; "tasks" => count, "error" => %e);
                for task_id in task_ids {
                    if let Some((instance_id, incarnation)) = parse_task_id(&task_id)
                        && let Some(instance) = self.instances.get_mut(instance_id)
                        && instance.incarnation == incarnation
                    {
                        instance.state = Some(pb::TaskState::TaskDropped as i32);
                        instance.message = format!("the launch failed: {e}");
                        self.dirty.insert(instance.app_id.clone());
                        self.revive_needed = true;
                    }
                }
            }
        }
        if !declined.is_empty() {
            let _ = driver.decline(declined, refuse(REFUSE_WHILE_WAITING)).await;
        }
        for instance in &launched {
            self.events.publish(
                "instance_changed_event",
                serde_json::json!({
                    "instanceId": instance.instance_id,
                    "condition": "Staging",
                    "runSpecId": instance.app_id,
                    "agentId": instance.agent_id,
                    "host": instance.host,
                    "runSpecVersion": instance.app_version,
                }),
            );
        }
    }

    /// Whether a deployment has yet to reach this app.
    fn in_later_step(&self, app: &PathId) -> bool {
        self.deployments.iter().any(|d| {
            d.stored
                .steps
                .iter()
                .skip(d.stored.current_step + 1)
                .flat_map(|s| &s.actions)
                .any(|a| &a.app == app)
        })
    }
}

/// Whether a task state means the task runs no more: terminal, or unknown to the
/// master (what it answers for a task it never heard of, or has forgotten).
fn ended(state: pb::TaskState) -> bool {
    agora_sdk::is_terminal(state) || state == pb::TaskState::TaskUnknown
}

/// Launched never, or its task ended while it is still wanted.
fn needs_launch(instance: &Instance) -> bool {
    instance.goal == Goal::Running
        && (instance.incarnation == 0 || instance.task_state().is_some_and(ended))
}

fn new_instance(app: &AppDefinition, instance_id: String) -> Instance {
    Instance {
        instance_id,
        app_id: app.id.clone(),
        app_version: app.version.unwrap_or_else(Timestamp::now),
        goal: Goal::Running,
        incarnation: 0,
        agent_id: None,
        host: None,
        ports: Vec::new(),
        state: None,
        healthy: None,
        ready: app.readiness_checks.is_empty(),
        staged_at: None,
        started_at: None,
        unreachable_since: None,
        message: String::new(),
    }
}

/// `<instance id>._app.<incarnation>` → (instance id, incarnation).
pub fn parse_task_id(task_id: &str) -> Option<(&str, u32)> {
    let (instance, incarnation) = task_id.rsplit_once("._app.")?;
    Some((instance, incarnation.parse().ok()?))
}

/// Stopping an app: kill every instance; done when none is left.
fn stop_progress(instances: &[Instance]) -> Progress {
    let kill: Vec<String> = instances
        .iter()
        .filter(|i| i.goal == Goal::Running)
        .map(|i| i.instance_id.clone())
        .collect();
    let done = instances.is_empty();
    Progress {
        kill,
        launch: 0,
        done,
        waiting_for: (!done).then(|| format!("{} instances are being killed", instances.len())),
    }
}

fn deployment_view(
    stored: &StoredDeployment,
    waiting: &BTreeMap<PathId, String>,
) -> DeploymentView {
    deployment::view(
        &stored.id,
        stored.version,
        &stored.steps,
        stored.current_step,
        waiting,
    )
}
