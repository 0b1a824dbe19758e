//! [`Controller`]: the loop that owns the cron framework's state while this instance
//! leads: schedules come due, runs are recorded and launched, task updates end
//! them, retries and dependents follow.
//!
//! Exactly once: a due instant is handled by one atomic state-store batch that
//! records its run (or why it did not run) together with the schedule's cursor
//! moved past it. A run's task is recorded (status STARTING, attempt n) before it is
//! launched, and named after (job, run, attempt), so a restarted leader neither
//! forgets a launch nor launches the same attempt twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_sdk::DriverEvent;
use agora_sdk::proto as pb;
use agora_sdk::{OfferResources, SchedulerHandle, TaskBuilder};
use chrono::{DateTime, SecondsFormat, Utc};
use slog::{Logger, info, warn};
use tokio::sync::{mpsc, watch};

use super::calls::{CallLane, LaneCall};
use super::{Command, Snapshot};
use crate::config::CronConfig;
use crate::dag;
use crate::error::CronError;
use crate::model::validate::constraint_pattern;
use crate::model::{JobSpec, ScheduleSpec};
use crate::schedule::Schedule;
use crate::state::store::{
    CronStore, Cursor, FRAMEWORK_ID_KEY, LoadedState, Stats, Write, cursor_key, job_key,
    missed_key, run_key, schedule_key, stats_key,
};
use crate::state::{History, JobRun, MissedRun, RunStatus, RunTask, Trigger};

/// Longest sleep between two looks at the clock.
const TICK: Duration = Duration::from_secs(1);
/// Due instants looked at per schedule and wake-up (a longer stretch is recorded as
/// missed a chunk at a time: an outage of a year on a per-second schedule must not
/// flood memory).
const DUE_LIMIT: usize = 900;
/// Missed instants remembered per job.
const MISSED_KEPT: usize = 100;
/// How long declined offers stay away while runs wait.
const REFUSE_WHILE_WAITING: f64 = 1.0;
const REFUSE_IDLE: f64 = 120.0;
/// Longest pause between two attempts of an ON_FAILURE run.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Shortest interval between two snapshots while no command waits for one; a
/// snapshot that took longer to build stretches it to `PUBLISH_COST_FACTOR` times its
/// cost, so a storm of task updates over many jobs spends at most a fifth of the
/// loop on snapshots.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
const PUBLISH_COST_FACTOR: u32 = 4;
/// Commands taken together before reacting once.
const COMMANDS_PER_REACTION: usize = 256;
/// Operations per state-store batch (the masters take at most 1,000).
const BATCH_OPS: usize = 1000;
/// How long before its instant the run of an ALLOW schedule is recorded, and offers
/// are kept for it, so that at the instant only its launch is left: recording ten
/// thousand runs due at once takes a few hundred milliseconds of its own.
const EARLY: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// What handling one schedule's due instants writes (atomically) and then changes.
struct DuePlan {
    job_id: String,
    schedule_id: String,
    writes: Vec<Write>,
    missed: Vec<MissedRun>,
    new_run: Option<JobRun>,
    /// Active runs a REPLACE schedule stops.
    replace: Vec<Arc<JobRun>>,
    cursor: DateTime<Utc>,
}

/// One schedule, parsed, and when it is next due.
struct LiveSchedule {
    spec: ScheduleSpec,
    /// None when the expression no longer parses (kept, never due).
    parsed: Option<Schedule>,
    /// The last due instant already handled.
    cursor: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
}

impl LiveSchedule {
    /// Whether its runs are recorded ahead of their instant: only under ALLOW, as
    /// FORBID and REPLACE look at the runs active at the instant itself.
    fn records_early(&self) -> bool {
        self.spec.enabled && self.spec.concurrency_policy == "ALLOW"
    }

    /// When the controller must next look at it: at its next instant, or [`EARLY`]
    /// before it when its run is recorded early. A disabled schedule is looked at
    /// too, to move its cursor on.
    fn attention_at(&self) -> Option<DateTime<Utc>> {
        let next = self.next?;
        Some(if self.records_early() {
            next - EARLY
        } else {
            next
        })
    }

    fn new(spec: ScheduleSpec, cursor: DateTime<Utc>) -> LiveSchedule {
        let parsed = Schedule::parse(&spec.cron, &spec.timezone).ok();
        let next = parsed.as_ref().and_then(|p| p.next_after(cursor));
        LiveSchedule {
            spec,
            parsed,
            cursor,
            next,
        }
    }
}

pub struct Controller {
    config: CronConfig,
    logger: Logger,
    store: CronStore,
    snapshot: watch::Sender<Arc<Snapshot>>,
    http_address: String,
    jobs: BTreeMap<String, Arc<JobSpec>>,
    /// The jobs that depend on each job (parent id → child ids). Invariant: exactly
    /// what `jobs`' dependencies say (`index_dependencies` keeps it so).
    dependents: HashMap<String, BTreeSet<String>>,
    /// Per job, per schedule id.
    schedules: BTreeMap<String, BTreeMap<String, LiveSchedule>>,
    /// The earliest [`LiveSchedule::attention_at`] over `schedules`, once computed;
    /// every change to `schedules` resets it to `None`.
    schedules_wake: Option<Option<DateTime<Utc>>>,
    /// Every run still known, per job, by run id (finished ones are the history).
    /// Shared with the published snapshots: a run is copied when changed
    /// (`Arc::make_mut`) only while a snapshot still holds it, so a snapshot costs
    /// a handle per run rather than a copy of every run.
    runs: BTreeMap<String, BTreeMap<String, Arc<JobRun>>>,
    stats: HashMap<String, Stats>,
    missed: HashMap<String, Vec<MissedRun>>,
    /// Runs waiting before their next attempt (ON_FAILURE backoff).
    retry_at: HashMap<(String, String), DateTime<Utc>>,
    /// Runs being stopped on request: their end is a failure, never retried.
    stopping: HashSet<(String, String)>,
    /// Runs recorded ahead of their instant (see [`EARLY`]), by instant. Invariant:
    /// each is in `runs`, INITIAL, and due after the last reaction.
    early: BTreeSet<(DateTime<Utc>, String, String)>,
    /// Offers kept while early runs wait for their instant; launched on, or
    /// declined, once none waits any more.
    held_offers: Vec<pb::Offer>,
    framework_id: Option<String>,
    framework_id_unsaved: bool,
    suppressed: bool,
    revive_needed: bool,
    /// Writes that may wait for the end of the reaction (soft state).
    pending_writes: Vec<Write>,
    /// Runs asked for and not recorded yet, with where their answer goes.
    pending_manual: Vec<(
        JobRun,
        tokio::sync::oneshot::Sender<Result<JobRun, CronError>>,
    )>,
    /// When runs were last checked against their launch deadlines.
    last_overdue_check: tokio::time::Instant,
    /// When the snapshot was last published, and whether a change awaits it.
    last_publish: tokio::time::Instant,
    /// The interval between two snapshots now: `PUBLISH_EVERY`, or more after a
    /// costly snapshot.
    publish_every: Duration,
    publish_pending: bool,
    /// Answers sent once the reaction to their command is published.
    replies: Vec<Box<dyn FnOnce() + Send + Sync>>,
    /// The subscribed driver, while there is one, with the lane where DECLINE,
    /// REVIVE, SUPPRESS and KILL go, in order and unawaited.
    calls: Option<CallLane>,
    /// ACCEPT calls in flight; each answers with its tasks' ids.
    accepts: tokio::task::JoinSet<AcceptOutcome>,
}

/// How one ACCEPT went.
struct AcceptOutcome {
    /// The tasks it launched.
    task_ids: Vec<String>,
    /// Why the master refused it, or the call failed.
    error: Option<String>,
}

impl Controller {
    pub fn new(
        config: CronConfig,
        logger: Logger,
        store: CronStore,
        snapshot: watch::Sender<Arc<Snapshot>>,
        loaded: LoadedState,
        http_address: String,
    ) -> Controller {
        for (key, why) in &loaded.unreadable {
            warn!(logger, "skipping an unreadable state-store entry"; "key" => key, "error" => why);
        }
        let now = Utc::now();
        let cursors: HashMap<(String, String), DateTime<Utc>> = loaded
            .cursors
            .into_iter()
            .filter_map(|(job, schedule, cursor)| {
                Some(((job, schedule), parse_time(&cursor.last)?))
            })
            .collect();
        let mut schedules: BTreeMap<String, BTreeMap<String, LiveSchedule>> = BTreeMap::new();
        for (job, spec) in loaded.schedules {
            let cursor = cursors
                .get(&(job.clone(), spec.id.clone()))
                .copied()
                .unwrap_or(now);
            schedules
                .entry(job)
                .or_default()
                .insert(spec.id.clone(), LiveSchedule::new(spec, cursor));
        }
        let mut runs: BTreeMap<String, BTreeMap<String, Arc<JobRun>>> = BTreeMap::new();
        let mut early = BTreeSet::new();
        let mut retry_at = HashMap::new();
        for run in loaded.runs {
            let not_before = run.retry_not_before.as_deref().and_then(parse_time);
            if let Some(at) = not_before.filter(|at| *at > now)
                && run.status == RunStatus::Initial
            {
                // A retry backing off when the last leader went: it still waits.
                retry_at.insert((run.job_id.clone(), run.id.clone()), at);
            }
            if let Some(at) = run.due_later_than(now) {
                early.insert((at, run.job_id.clone(), run.id.clone()));
            }
            runs.entry(run.job_id.clone())
                .or_default()
                .insert(run.id.clone(), Arc::new(run));
        }
        let jobs: BTreeMap<String, Arc<JobSpec>> = loaded
            .jobs
            .into_iter()
            .map(|j| (j.id.clone(), Arc::new(j)))
            .collect();
        let mut missed: HashMap<String, Vec<MissedRun>> = HashMap::new();
        for (job, m) in loaded.missed {
            missed.entry(job).or_default().push(m);
        }
        Controller {
            config,
            logger,
            store,
            snapshot,
            http_address,
            dependents: dependents_of(&jobs),
            jobs,
            schedules,
            schedules_wake: None,
            runs,
            stats: loaded.stats.into_iter().collect(),
            missed,
            retry_at,
            stopping: HashSet::new(),
            early,
            held_offers: Vec::new(),
            framework_id: loaded.framework_id,
            framework_id_unsaved: false,
            suppressed: false,
            revive_needed: true,
            pending_writes: Vec::new(),
            pending_manual: Vec::new(),
            last_overdue_check: tokio::time::Instant::now(),
            last_publish: tokio::time::Instant::now(),
            publish_every: PUBLISH_EVERY,
            publish_pending: false,
            replies: Vec::new(),
            calls: None,
            accepts: tokio::task::JoinSet::new(),
        }
    }

    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut driver_events: mpsc::Receiver<DriverEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.publish();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                event = driver_events.recv() => match event {
                    Some(event) => self.on_driver_event(event).await,
                    None => break,
                },
                Some(done) = self.accepts.join_next(), if !self.accepts.is_empty() => {
                    self.on_accept_outcome(done);
                }
                _ = tokio::time::sleep(wake) => {}
                _ = crate::until(&mut stop, true) => break,
            }
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
    }

    /// The earliest instant a schedule wants the controller: computed once per
    /// change of `schedules` rather than on every reaction of a burst.
    fn schedules_wake(&mut self) -> Option<DateTime<Utc>> {
        *self.schedules_wake.get_or_insert_with(|| {
            self.schedules
                .values()
                .flat_map(|s| s.values())
                .filter_map(LiveSchedule::attention_at)
                .min()
        })
    }

    /// How long until the next schedule is due (at most a tick).
    fn next_wake(&mut self) -> Duration {
        let now = Utc::now();
        let mut wake = if self.publish_pending {
            self.publish_every
        } else {
            TICK
        };
        for at in self.retry_at.values() {
            wake = wake.min((*at - now).to_std().unwrap_or(Duration::ZERO));
        }
        if let Some(at) = self.schedules_wake() {
            wake = wake.min((at - now).to_std().unwrap_or(Duration::ZERO));
        }
        if let Some((at, _, _)) = self.early.first() {
            wake = wake.min((*at - now).to_std().unwrap_or(Duration::ZERO));
        }
        wake
    }

    async fn react(&mut self) {
        // Runs whose retry delay is over may launch: ask for offers again (offers
        // declined while they waited are filtered for a while).
        let now = Utc::now();
        let before = self.retry_at.len();
        self.retry_at.retain(|_, at| *at > now);
        if self.retry_at.len() < before {
            self.revive_needed = true;
        }
        self.record_manual_runs().await;
        // Deadlines are whole seconds: a look once a second is enough, and spares
        // a scan of every run on each reaction of a burst.
        if self.last_overdue_check.elapsed() >= TICK {
            self.last_overdue_check = tokio::time::Instant::now();
            self.abort_overdue(now);
        }
        self.fire_due().await;
        self.release_early_runs().await;
        self.offer_interest();
        let writes = std::mem::take(&mut self.pending_writes);
        if let Err(e) = self.store.write(writes.clone()).await {
            // Kept, ahead of anything newer, for the next reaction: a run's outcome
            // must not live in memory only. Writing them again is harmless; once
            // this instance no longer leads, the controller stops.
            warn!(self.logger, "cannot record run states; trying again"; "error" => %e, "writes" => writes.len());
            self.pending_writes.splice(0..0, writes);
        }
        // A command's answer waits for a snapshot that shows its effect; otherwise
        // (a storm of task updates) the snapshot is rebuilt at most every
        // PUBLISH_EVERY, since its cost grows with the number of jobs.
        if !self.replies.is_empty() || self.last_publish.elapsed() >= self.publish_every {
            let started = tokio::time::Instant::now();
            self.publish();
            self.last_publish = tokio::time::Instant::now();
            self.publish_every = PUBLISH_EVERY.max(started.elapsed() * PUBLISH_COST_FACTOR);
            self.publish_pending = false;
        } else {
            self.publish_pending = true;
        }
    }

    fn publish(&self) {
        let now = Utc::now();
        let mut schedules = BTreeMap::new();
        for (job, live) in &self.schedules {
            let list: Vec<ScheduleSpec> = live
                .values()
                .map(|l| {
                    let mut spec = l.spec.clone();
                    // A cursor ahead of now is the instant of a run recorded early:
                    // that instant is the next run still.
                    let next = if l.cursor > now {
                        Some(l.cursor)
                    } else {
                        l.next
                    };
                    spec.next_run_at = next.filter(|_| spec.enabled).map(rfc3339);
                    spec
                })
                .collect();
            schedules.insert(job.clone(), list);
        }
        let mut active_runs = BTreeMap::new();
        let mut history = BTreeMap::new();
        for (job, runs) in &self.runs {
            let active: Vec<Arc<JobRun>> = runs
                .values()
                .filter(|r| !r.status.is_finished())
                .cloned()
                .collect();
            if !active.is_empty() {
                active_runs.insert(job.clone(), active);
            }
        }
        for job in self.jobs.keys() {
            let stats = self.stats.get(job).cloned().unwrap_or_default();
            let finished: Vec<&Arc<JobRun>> = self
                .runs
                .get(job)
                .into_iter()
                .flat_map(|r| r.values())
                .filter(|r| r.status.is_finished())
                .collect();
            history.insert(
                job.clone(),
                History {
                    success_count: stats.success_count,
                    failure_count: stats.failure_count,
                    last_success_at: stats.last_success_at,
                    last_failure_at: stats.last_failure_at,
                    successful_finished_runs: finished
                        .iter()
                        .filter(|r| r.status == RunStatus::Success)
                        .map(|r| Arc::clone(r))
                        .collect(),
                    failed_finished_runs: finished
                        .iter()
                        .filter(|r| r.status == RunStatus::Failed)
                        .map(|r| Arc::clone(r))
                        .collect(),
                    missed: self.missed.get(job).cloned().unwrap_or_default(),
                },
            );
        }
        self.snapshot.send_replace(Arc::new(Snapshot {
            jobs: self.jobs.clone(),
            schedules,
            active_runs,
            history,
            is_leader: true,
            leader: Some(self.http_address.clone()),
        }));
    }

    fn reply<T: Send + Sync + 'static>(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<T, CronError>>,
        result: Result<T, CronError>,
    ) {
        self.replies.push(Box::new(move || {
            let _ = reply.send(result);
        }));
    }

    // ------------------------------------------------------------ commands

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::PutJob {
                job,
                schedules,
                create,
                reply,
            } => {
                let result = self.put_job(*job, schedules, create).await;
                self.reply(reply, result);
            }
            Command::DeleteJob {
                id,
                stop_current_runs,
                reply,
            } => {
                let result = self.delete_job(&id, stop_current_runs).await;
                self.reply(reply, result);
            }
            Command::PutSchedule {
                job_id,
                schedule,
                create,
                reply,
            } => {
                let result = self.put_schedule(&job_id, schedule, create).await;
                self.reply(reply, result);
            }
            Command::DeleteSchedule {
                job_id,
                schedule_id,
                reply,
            } => {
                let result = self.delete_schedule(&job_id, &schedule_id).await;
                self.reply(reply, result);
            }
            Command::StartRun { job_id, reply } => match self.manual_run(&job_id) {
                // Recorded with the other runs asked for meanwhile, in one batch.
                Ok(run) => self.pending_manual.push((run, reply)),
                Err(e) => self.reply(reply, Err(e)),
            },
            Command::StopRun {
                job_id,
                run_id,
                reply,
            } => {
                let result = self.stop_run(&job_id, &run_id).await;
                self.reply(reply, result);
            }
        }
    }

    /// Moves job `id` in `dependents` from the parents of `before` to those of
    /// `after` (either absent: created or removed).
    fn index_dependencies(&mut self, id: &str, before: Option<&JobSpec>, after: Option<&JobSpec>) {
        for parent in before.into_iter().flat_map(|j| &j.dependencies) {
            if let Some(children) = self.dependents.get_mut(&parent.id) {
                children.remove(id);
                if children.is_empty() {
                    self.dependents.remove(&parent.id);
                }
            }
        }
        for parent in after.into_iter().flat_map(|j| &j.dependencies) {
            self.dependents
                .entry(parent.id.clone())
                .or_default()
                .insert(id.to_string());
        }
    }

    fn not_found(job: &str) -> CronError {
        CronError::NotFound(format!("Job '{job}' does not exist"))
    }

    async fn put_job(
        &mut self,
        job: JobSpec,
        schedules: Option<Vec<ScheduleSpec>>,
        create: bool,
    ) -> Result<JobSpec, CronError> {
        if create && self.jobs.contains_key(&job.id) {
            return Err(CronError::Conflict(
                "Job with this id already exists".to_string(),
            ));
        }
        // The dependency graph with this job in it must stay acyclic. A job that
        // depends on nothing cannot close a cycle, so only then is it checked
        // (ten thousand jobs created one by one stay linear).
        if !job.dependencies.is_empty() {
            let mut graph: BTreeMap<String, Vec<String>> = self
                .jobs
                .iter()
                .map(|(id, j)| {
                    (
                        id.clone(),
                        j.dependencies.iter().map(|d| d.id.clone()).collect(),
                    )
                })
                .collect();
            graph.insert(
                job.id.clone(),
                job.dependencies.iter().map(|d| d.id.clone()).collect(),
            );
            dag::check(&graph).map_err(|e| CronError::Invalid {
                message: "Object is not valid".into(),
                details: vec![("/dependencies".into(), vec![e.to_string()])],
            })?;
        }
        let now = Utc::now();
        let mut writes = vec![Write::json(job_key(&job.id), &job)?];
        let mut added = Vec::new();
        let mut removed = Vec::new();
        if let Some(schedules) = &schedules {
            // Given schedules replace the job's: the others go.
            let current = self
                .schedules
                .get(&job.id)
                .into_iter()
                .flat_map(|s| s.keys());
            for sid in current {
                if !schedules.iter().any(|spec| spec.id == *sid) {
                    writes.push(Write::Delete(schedule_key(&job.id, sid)));
                    writes.push(Write::Delete(cursor_key(&job.id, sid)));
                    removed.push(sid.clone());
                }
            }
        }
        for spec in schedules.unwrap_or_default() {
            let mut spec = spec;
            spec.next_run_at = None;
            let unchanged = self
                .schedules
                .get(&job.id)
                .and_then(|s| s.get(&spec.id))
                .is_some_and(|live| live.spec == spec);
            if unchanged {
                // Keeps its cursor: an instant due right now is not skipped.
                continue;
            }
            // A new or changed schedule starts from now, as in put_schedule.
            writes.push(Write::json(schedule_key(&job.id, &spec.id), &spec)?);
            writes.push(Write::json(
                cursor_key(&job.id, &spec.id),
                &Cursor { last: rfc3339(now) },
            )?);
            added.push(spec);
        }
        self.store.write(writes).await?;
        self.schedules_wake = None;
        if let Some(live) = self.schedules.get_mut(&job.id) {
            for sid in removed {
                live.remove(&sid);
            }
        }
        for spec in added {
            self.schedules
                .entry(job.id.clone())
                .or_default()
                .insert(spec.id.clone(), LiveSchedule::new(spec, now));
        }
        let replaced = self.jobs.insert(job.id.clone(), Arc::new(job.clone()));
        self.index_dependencies(&job.id, replaced.as_deref(), Some(&job));
        info!(self.logger, "job stored"; "job" => &job.id);
        Ok(job)
    }

    async fn delete_job(
        &mut self,
        id: &str,
        stop_current_runs: bool,
    ) -> Result<JobSpec, CronError> {
        let Some(job) = self.jobs.get(id).cloned() else {
            return Err(Self::not_found(id));
        };
        let active: Vec<Arc<JobRun>> = self
            .runs
            .get(id)
            .into_iter()
            .flat_map(|r| r.values())
            .filter(|r| !r.status.is_finished())
            .cloned()
            .collect();
        if !active.is_empty() && !stop_current_runs {
            return Err(CronError::Conflict(
                "There are active job runs. Override with stopCurrentJobRuns=true".to_string(),
            ));
        }
        let dependents: Vec<&String> = self
            .jobs
            .values()
            .filter(|j| j.dependencies.iter().any(|d| d.id == id))
            .map(|j| &j.id)
            .collect();
        if !dependents.is_empty() {
            return Err(CronError::Conflict(format!(
                "Job '{id}' is a dependency of {dependents:?}"
            )));
        }
        for run in &active {
            self.kill_run_task(run);
        }
        let mut writes = vec![Write::Delete(job_key(id)), Write::Delete(stats_key(id))];
        for sid in self.schedules.get(id).into_iter().flat_map(|s| s.keys()) {
            writes.push(Write::Delete(schedule_key(id, sid)));
            writes.push(Write::Delete(cursor_key(id, sid)));
        }
        for rid in self.runs.get(id).into_iter().flat_map(|r| r.keys()) {
            writes.push(Write::Delete(run_key(id, rid)));
        }
        for m in self.missed.get(id).into_iter().flatten() {
            if let Some(t) = parse_time(&m.scheduled_at) {
                writes.push(Write::Delete(missed_key(
                    id,
                    &m.schedule_id,
                    t.timestamp_millis(),
                )));
            }
        }
        self.store.write(writes).await?;
        let removed = self.jobs.remove(id);
        self.index_dependencies(id, removed.as_deref(), None);
        self.schedules.remove(id);
        self.schedules_wake = None;
        self.runs.remove(id);
        self.stats.remove(id);
        self.missed.remove(id);
        Ok(JobSpec::clone(&job))
    }

    async fn put_schedule(
        &mut self,
        job_id: &str,
        mut spec: ScheduleSpec,
        create: bool,
    ) -> Result<ScheduleSpec, CronError> {
        if !self.jobs.contains_key(job_id) {
            return Err(Self::not_found(job_id));
        }
        let exists = self
            .schedules
            .get(job_id)
            .is_some_and(|s| s.contains_key(&spec.id));
        if create && exists {
            return Err(CronError::Conflict(format!(
                "Schedule with id '{}' already exists",
                spec.id
            )));
        }
        if !create && !exists {
            return Err(CronError::NotFound(format!(
                "Schedule '{}' does not exist",
                spec.id
            )));
        }
        spec.next_run_at = None;
        let now = Utc::now();
        // A changed schedule starts from now: instants before the change were the
        // old schedule's.
        self.store
            .write(vec![
                Write::json(schedule_key(job_id, &spec.id), &spec)?,
                Write::json(cursor_key(job_id, &spec.id), &Cursor { last: rfc3339(now) })?,
            ])
            .await?;
        let live = LiveSchedule::new(spec.clone(), now);
        spec.next_run_at = live.next.filter(|_| spec.enabled).map(rfc3339);
        self.schedules_wake = None;
        self.schedules
            .entry(job_id.to_string())
            .or_default()
            .insert(spec.id.clone(), live);
        Ok(spec)
    }

    async fn delete_schedule(&mut self, job_id: &str, schedule_id: &str) -> Result<(), CronError> {
        let exists = self
            .schedules
            .get(job_id)
            .is_some_and(|s| s.contains_key(schedule_id));
        if !exists {
            return Err(CronError::NotFound(format!(
                "Schedule '{schedule_id}' does not exist"
            )));
        }
        self.store
            .write(vec![
                Write::Delete(schedule_key(job_id, schedule_id)),
                Write::Delete(cursor_key(job_id, schedule_id)),
            ])
            .await?;
        if let Some(s) = self.schedules.get_mut(job_id) {
            s.remove(schedule_id);
        }
        self.schedules_wake = None;
        Ok(())
    }

    fn new_run(job_id: &str, id: String, scheduled_at: DateTime<Utc>, trigger: Trigger) -> JobRun {
        let now = rfc3339(Utc::now());
        JobRun {
            id,
            job_id: job_id.to_string(),
            status: RunStatus::Initial,
            created_at: now,
            completed_at: None,
            tasks: Vec::new(),
            scheduled_at: rfc3339(scheduled_at),
            trigger,
            attempts: 0,
            retry_not_before: None,
        }
    }

    /// A run asked for now (`POST /v1/jobs/{id}/runs`), not recorded yet.
    fn manual_run(&self, job_id: &str) -> Result<JobRun, CronError> {
        if !self.jobs.contains_key(job_id) {
            return Err(Self::not_found(job_id));
        }
        let now = Utc::now();
        // Metronome's form: the second, then five random letters or digits. Ids of
        // one second can still meet (a burst asks for thousands), so draw again
        // until the id is new to the job, recorded or still to be.
        let taken = |id: &str| {
            self.runs.get(job_id).is_some_and(|r| r.contains_key(id))
                || self
                    .pending_manual
                    .iter()
                    .any(|(run, _)| run.job_id == job_id && run.id == id)
        };
        let id = loop {
            let id = format!("{}{}", now.format("%Y%m%d%H%M%S"), random_alphanumeric(5));
            if !taken(&id) {
                break id;
            }
        };
        Ok(Self::new_run(job_id, id, now, Trigger::Manual))
    }

    /// Records the runs asked for since the last reaction, in as few batches as
    /// possible; each is answered once recorded (or with why not).
    async fn record_manual_runs(&mut self) {
        let pending = std::mem::take(&mut self.pending_manual);
        if pending.is_empty() {
            return;
        }
        let writes: Result<Vec<Write>, CronError> = pending
            .iter()
            .map(|(run, _)| Write::json(run_key(&run.job_id, &run.id), run))
            .collect();
        let written = match writes {
            Ok(writes) => self.store.write(writes).await,
            Err(e) => Err(e),
        };
        for (run, reply) in pending {
            match &written {
                Ok(()) => {
                    self.add_run(run.clone());
                    self.reply(reply, Ok(run));
                }
                Err(e) => self.reply(reply, Err(e.clone())),
            }
        }
    }

    fn add_run(&mut self, run: JobRun) {
        self.runs
            .entry(run.job_id.clone())
            .or_default()
            .insert(run.id.clone(), Arc::new(run));
        self.revive_needed = true;
    }

    async fn stop_run(&mut self, job_id: &str, run_id: &str) -> Result<JobRun, CronError> {
        let Some(run) = self.runs.get(job_id).and_then(|r| r.get(run_id)).cloned() else {
            return Err(CronError::NotFound(format!(
                "JobRun '{run_id}' does not exist"
            )));
        };
        if run.status.is_finished() {
            return Ok(JobRun::clone(&run));
        }
        self.stopping
            .insert((job_id.to_string(), run_id.to_string()));
        if run.status == RunStatus::Initial {
            // Not launched: it ends here.
            self.finish_run(job_id, run_id, RunStatus::Failed);
        } else {
            self.kill_run_task(&run);
        }
        Ok(self
            .runs
            .get(job_id)
            .and_then(|r| r.get(run_id))
            .map_or_else(|| JobRun::clone(&run), |now| JobRun::clone(now)))
    }

    // ------------------------------------------------------------ schedules

    /// Handles every instant that came due: each schedule's instants since its
    /// cursor become one run (the latest still within startingDeadlineSeconds) and
    /// missed records (the others), written atomically with the moved cursor.
    async fn fire_due(&mut self) {
        let now = Utc::now();
        if self.schedules_wake().is_none_or(|at| at > now) {
            return;
        }
        let due: Vec<(String, String)> = self
            .schedules
            .iter()
            .flat_map(|(job, s)| {
                s.iter()
                    .filter(|(_, l)| l.attention_at().is_some_and(|at| at <= now))
                    .map(move |(sid, _)| (job.clone(), sid.clone()))
            })
            .collect();
        let mut plans = Vec::new();
        for (job_id, sid) in due {
            match self.plan_due(&job_id, &sid, now) {
                Ok(Some(plan)) => plans.push(plan),
                Ok(None) => {}
                Err(e) => {
                    warn!(self.logger, "cannot plan a due run"; "job" => &job_id, "error" => %e)
                }
            }
        }
        // Many schedules due at once (a burst at midnight) are written together:
        // each schedule's writes stay in one atomic batch, the batches go out at
        // once, and a batch's plans apply only once it is written.
        let mut batches: Vec<Vec<DuePlan>> = Vec::new();
        let mut ops = 0;
        for plan in plans {
            if batches.is_empty() || ops + plan.writes.len() > BATCH_OPS {
                batches.push(Vec::new());
                ops = 0;
            }
            ops += plan.writes.len();
            if let Some(batch) = batches.last_mut() {
                batch.push(plan);
            }
        }
        let mut calls = tokio::task::JoinSet::new();
        for (index, batch) in batches.iter().enumerate() {
            let writes: Vec<Write> = batch
                .iter()
                .flat_map(|p| p.writes.iter().cloned())
                .collect();
            let store = self.store.clone();
            // At most BATCH_OPS writes: one atomic batch.
            calls.spawn(async move { (index, store.write(writes).await) });
        }
        let mut written = vec![false; batches.len()];
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((index, Ok(()))) => written[index] = true,
                Ok((_, Err(e))) => {
                    // Not applied: the cursors did not move, the instants come due again.
                    warn!(self.logger, "cannot record due runs; trying again"; "error" => %e);
                }
                Err(e) => warn!(self.logger, "a state-store write task failed"; "error" => %e),
            }
        }
        for (batch, ok) in batches.into_iter().zip(written) {
            if ok {
                self.apply_due(batch).await;
            }
        }
    }

    /// Applies the plans of a written batch.
    async fn apply_due(&mut self, plans: Vec<DuePlan>) {
        for plan in plans {
            if let Some(live) = self
                .schedules
                .get_mut(&plan.job_id)
                .and_then(|s| s.get_mut(&plan.schedule_id))
            {
                live.cursor = plan.cursor;
                live.next = live.parsed.as_ref().and_then(|p| p.next_after(plan.cursor));
                self.schedules_wake = None;
            }
            self.note_missed(&plan.job_id, plan.missed);
            for run in plan.replace {
                // As a stop on request: a run not launched yet ends here, a
                // launched one is killed and never retried.
                if let Err(e) = self.stop_run(&plan.job_id, &run.id).await {
                    warn!(self.logger, "cannot replace a run"; "job" => &plan.job_id, "run" => &run.id, "error" => %e);
                }
            }
            if let Some(run) = plan.new_run {
                if let Some(at) = run.due_later_than(Utc::now()) {
                    self.early.insert((at, run.job_id.clone(), run.id.clone()));
                }
                self.add_run(run);
            }
        }
    }

    /// What handling a schedule's due instants writes and changes.
    fn plan_due(
        &self,
        job_id: &str,
        sid: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DuePlan>, CronError> {
        let Some(live) = self.schedules.get(job_id).and_then(|s| s.get(sid)) else {
            return Ok(None);
        };
        let Some(parsed) = &live.parsed else {
            return Ok(None);
        };
        let instants = parsed.due_between(live.cursor, now, DUE_LIMIT);
        let Some(&last) = instants.last() else {
            return self.plan_early(job_id, sid, live, now);
        };
        let spec = &live.spec;
        // Validation bounds the deadline; a record from an older version may be
        // out of chrono's range, which means "no deadline".
        let deadline = chrono::TimeDelta::try_seconds(spec.starting_deadline_seconds.max(0))
            .unwrap_or(chrono::TimeDelta::MAX);
        let mut missed = Vec::new();
        let mut new_run = None;
        let mut replace = Vec::new();
        // More instants are due than one wake-up looks at (a long outage): this
        // chunk holds none of the latest, so none of it runs, and it is recorded
        // as one stretch rather than hundreds of records pruned right after.
        let more_due =
            instants.len() == DUE_LIMIT && parsed.next_after(last).is_some_and(|next| next <= now);
        if spec.enabled && more_due {
            missed.push(MissedRun {
                schedule_id: sid.to_string(),
                scheduled_at: rfc3339(instants[0]),
                reason: format!(
                    "{} instants from {} to {} were due while the framework was not running; at most the latest due instant runs",
                    instants.len(),
                    rfc3339(instants[0]),
                    rfc3339(last)
                ),
            });
        } else if spec.enabled {
            // The latest instant still within the deadline runs (at most one
            // catch-up); every other one is recorded, with why.
            let runnable = instants
                .iter()
                .rev()
                .find(|t| now - **t <= deadline)
                .copied();
            let active: Vec<Arc<JobRun>> = self
                .runs
                .get(job_id)
                .into_iter()
                .flat_map(|r| r.values())
                .filter(|r| !r.status.is_finished())
                .cloned()
                .collect();
            let run_id = runnable.map(|t| scheduled_run_id(t, sid));
            for t in &instants {
                if Some(*t) == runnable {
                    continue;
                }
                let reason = if now - *t > deadline {
                    format!(
                        "not started within startingDeadlineSeconds ({}s): the framework was not running",
                        spec.starting_deadline_seconds
                    )
                } else {
                    format!(
                        "coalesced into the catch-up run {}",
                        run_id.clone().unwrap_or_default()
                    )
                };
                missed.push(MissedRun {
                    schedule_id: sid.to_string(),
                    scheduled_at: rfc3339(*t),
                    reason,
                });
            }
            if let (Some(t), Some(id)) = (runnable, run_id) {
                match spec.concurrency_policy.as_str() {
                    "FORBID" if !active.is_empty() => missed.push(MissedRun {
                        schedule_id: sid.to_string(),
                        scheduled_at: rfc3339(t),
                        reason: format!(
                            "concurrencyPolicy FORBID: run {} was still active",
                            active[0].id
                        ),
                    }),
                    policy => {
                        if policy == "REPLACE" {
                            replace = active;
                        }
                        new_run = self.scheduled_run(job_id, sid, t, id);
                    }
                }
            }
        }
        Self::due_plan(job_id, sid, new_run, missed, replace, last).map(Some)
    }

    /// A new run of schedule `sid` for instant `at`, under `id`; `None` when the
    /// run is already known (the same instant always names the same run).
    fn scheduled_run(
        &self,
        job_id: &str,
        sid: &str,
        at: DateTime<Utc>,
        id: String,
    ) -> Option<JobRun> {
        let exists = self.runs.get(job_id).is_some_and(|r| r.contains_key(&id));
        (!exists).then(|| {
            Self::new_run(
                job_id,
                id,
                at,
                Trigger::Schedule {
                    schedule_id: sid.to_string(),
                },
            )
        })
    }

    /// The plan that records `new_run` and `missed` and moves the schedule's
    /// cursor to `cursor`, all in one batch: an instant is handled (run or missed)
    /// exactly when the cursor moves past it.
    fn due_plan(
        job_id: &str,
        sid: &str,
        new_run: Option<JobRun>,
        missed: Vec<MissedRun>,
        replace: Vec<Arc<JobRun>>,
        cursor: DateTime<Utc>,
    ) -> Result<DuePlan, CronError> {
        let mut writes = Vec::new();
        if let Some(run) = &new_run {
            writes.push(Write::json(run_key(job_id, &run.id), run)?);
        }
        for m in &missed {
            let millis = parse_time(&m.scheduled_at).map_or(0, |t| t.timestamp_millis());
            writes.push(Write::json(missed_key(job_id, sid, millis), m)?);
        }
        writes.push(Write::json(
            cursor_key(job_id, sid),
            &Cursor {
                last: rfc3339(cursor),
            },
        )?);
        Ok(DuePlan {
            job_id: job_id.to_string(),
            schedule_id: sid.to_string(),
            writes,
            missed,
            new_run,
            replace,
            cursor,
        })
    }

    /// Nothing due yet: the next instant of an ALLOW schedule, if it comes within
    /// [`EARLY`], gets its run recorded now (with the moved cursor, atomically, as
    /// any due run), to be launched at the instant.
    fn plan_early(
        &self,
        job_id: &str,
        sid: &str,
        live: &LiveSchedule,
        now: DateTime<Utc>,
    ) -> Result<Option<DuePlan>, CronError> {
        let next = live.parsed.as_ref().and_then(|p| p.next_after(live.cursor));
        let Some(at) = next.filter(|at| live.records_early() && *at - EARLY <= now) else {
            return Ok(None);
        };
        let new_run = self.scheduled_run(job_id, sid, at, scheduled_run_id(at, sid));
        Self::due_plan(job_id, sid, new_run, Vec::new(), Vec::new(), at).map(Some)
    }

    /// Early runs whose instant came are due: offers are wanted (again), and the
    /// offers kept for them are used at once. Offers kept for runs that went
    /// (stopped, their job removed) are declined.
    async fn release_early_runs(&mut self) {
        let now = Utc::now();
        let mut released = false;
        while let Some(first) = self.early.first() {
            if first.0 > now {
                break;
            }
            self.early.pop_first();
            released = true;
        }
        // Runs stopped or removed before their instant leave nothing to wait for.
        let runs = &self.runs;
        self.early.retain(|(_, job, run)| {
            runs.get(job)
                .and_then(|r| r.get(run))
                .is_some_and(|r| r.status == RunStatus::Initial)
        });
        if released {
            self.revive_needed = true;
        }
        if !self.held_offers.is_empty() && (released || self.early.is_empty()) {
            let held = std::mem::take(&mut self.held_offers);
            self.on_offers(held).await;
        }
    }

    /// Runs that could not be launched in time fail: a job's `maxLaunchDelay`
    /// (Metronome: "seconds until the job needs to be running"), and for a
    /// scheduled run also its schedule's `startingDeadlineSeconds`.
    fn abort_overdue(&mut self, now: DateTime<Utc>) {
        let mut overdue = Vec::new();
        for (job_id, runs) in &self.runs {
            let Some(job) = self.jobs.get(job_id) else {
                continue;
            };
            for run in runs
                .values()
                .filter(|r| r.status == RunStatus::Initial && r.attempts == 0)
            {
                let Some(created) = parse_time(&run.created_at) else {
                    continue;
                };
                // A run recorded early waits from its instant on.
                let created = parse_time(&run.scheduled_at).map_or(created, |at| at.max(created));
                let mut limit = job.run.max_launch_delay.max(0);
                if let Trigger::Schedule { schedule_id } = &run.trigger
                    && let Some(live) = self.schedules.get(job_id).and_then(|s| s.get(schedule_id))
                {
                    limit = limit.min(live.spec.starting_deadline_seconds.max(0));
                }
                if (now - created).num_seconds() > limit {
                    overdue.push((job_id.clone(), run.id.clone(), limit));
                }
            }
        }
        for (job_id, run_id, limit) in overdue {
            warn!(self.logger, "run not launched in time; failing it"; "job" => &job_id, "run" => &run_id, "limit_seconds" => limit);
            self.finish_run(&job_id, &run_id, RunStatus::Failed);
        }
    }

    fn note_missed(&mut self, job_id: &str, missed: Vec<MissedRun>) {
        if missed.is_empty() {
            return;
        }
        let list = self.missed.entry(job_id.to_string()).or_default();
        list.extend(missed);
        if list.len() > MISSED_KEPT {
            let drop: Vec<MissedRun> = list.drain(..list.len() - MISSED_KEPT).collect();
            for m in drop {
                let millis = parse_time(&m.scheduled_at).map_or(0, |t| t.timestamp_millis());
                self.pending_writes
                    .push(Write::Delete(missed_key(job_id, &m.schedule_id, millis)));
            }
        }
    }

    // ------------------------------------------------------------ driver events

    async fn on_driver_event(&mut self, event: DriverEvent) {
        match event {
            DriverEvent::Subscribed {
                handle,
                framework_id,
            } => {
                if self.framework_id.as_deref() != Some(framework_id.as_str()) {
                    self.framework_id = Some(framework_id);
                    self.framework_id_unsaved = true;
                }
                if self.framework_id_unsaved {
                    self.save_framework_id().await;
                }
                self.calls = Some(CallLane::start(handle.clone()));
                self.suppressed = false;
                self.revive_needed = true;
                self.reconcile(&handle).await;
            }
            DriverEvent::Offers(offers) => self.on_offers(offers).await,
            DriverEvent::Rescinded(offer_id) => {
                self.held_offers
                    .retain(|o| o.id.as_ref() != Some(&offer_id));
            }
            DriverEvent::Update(status) => self.on_update(status).await,
            DriverEvent::Disconnected => self.calls = None,
        }
    }

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

    /// Explicitly the tasks of runs in flight (a launch the master never saw comes
    /// back unknown), then implicitly everything (tasks of no run are killed).
    async fn reconcile(&self, handle: &SchedulerHandle) {
        let tasks: Vec<(pb::TaskId, Option<pb::AgentId>)> = self
            .runs
            .values()
            .flat_map(|r| r.values())
            .filter(|r| matches!(r.status, RunStatus::Starting | RunStatus::Active))
            .filter_map(|r| r.tasks.last())
            .map(|t| {
                (
                    pb::TaskId {
                        value: t.id.clone(),
                    },
                    t.agent_id.clone().map(|value| pb::AgentId { value }),
                )
            })
            .collect();
        for chunk in tasks.chunks(10_000) {
            if let Err(e) = handle.reconcile(chunk.to_vec()).await {
                warn!(self.logger, "explicit reconciliation failed"; "error" => %e);
            }
        }
        if let Err(e) = handle.reconcile(Vec::new()).await {
            warn!(self.logger, "implicit reconciliation failed"; "error" => %e);
        }
    }

    /// The answer to one ACCEPT. A refused one puts its runs back to INITIAL, unless
    /// they moved on meanwhile (an update came, or they were stopped).
    fn on_accept_outcome(&mut self, done: Result<AcceptOutcome, tokio::task::JoinError>) {
        let (task_ids, error) = match done {
            Ok(AcceptOutcome { error: None, .. }) => return,
            Ok(AcceptOutcome {
                task_ids,
                error: Some(error),
            }) => (task_ids, error),
            // Only a panic ends an ACCEPT task without an outcome (the set is
            // aborted only with the controller). Whether the master saw the call
            // is unknown, so its runs stay STARTING: an update, or the next
            // reconciliation, tells.
            Err(e) => {
                warn!(self.logger, "an ACCEPT task failed"; "error" => %e);
                return;
            }
        };
        warn!(self.logger, "launch failed; the runs wait for another offer"; "error" => error);
        for task_id in task_ids {
            if let Some((job, run, attempt)) = parse_task_id(&task_id)
                && let Some(r) = self
                    .runs
                    .get_mut(&job)
                    .and_then(|r| r.get_mut(&run))
                    .map(Arc::make_mut)
                && r.attempts == attempt
                && r.status == RunStatus::Starting
            {
                r.status = RunStatus::Initial;
                self.revive_needed = true;
            }
        }
    }

    fn kill_run_task(&self, run: &JobRun) {
        let (Some(calls), Some(task)) = (&self.calls, run.tasks.last()) else {
            return;
        };
        calls.send(LaneCall::Kill {
            task_id: pb::TaskId {
                value: task.id.clone(),
            },
            agent_id: task.agent_id.clone().map(|value| pb::AgentId { value }),
        });
    }

    async fn on_update(&mut self, status: pb::TaskStatus) {
        let task_id = status.task_id.clone().map(|t| t.value).unwrap_or_default();
        let state = status.state();
        let ended = agora_sdk::is_terminal(state) || state == pb::TaskState::TaskUnknown;
        let parsed = parse_task_id(&task_id);
        let current = parsed.as_ref().and_then(|(job, run, attempt)| {
            let r = self.runs.get(job.as_str())?.get(run.as_str())?;
            (r.attempts == *attempt && !r.status.is_finished()).then(|| (job.clone(), run.clone()))
        });
        let Some((job_id, run_id)) = current else {
            if !ended && let Some(calls) = &self.calls {
                calls.send(LaneCall::Kill {
                    task_id: pb::TaskId { value: task_id },
                    agent_id: status.agent_id.clone(),
                });
            }
            return;
        };
        let now = rfc3339(Utc::now());
        let Some(run) = self
            .runs
            .get_mut(&job_id)
            .and_then(|r| r.get_mut(&run_id))
            .map(Arc::make_mut)
        else {
            return;
        };
        let never_ran = run.status == RunStatus::Starting;
        if let Some(task) = run.tasks.last_mut() {
            task.status = state.as_str_name().to_string();
            if state == pb::TaskState::TaskRunning && task.started_at.is_none() {
                task.started_at = Some(now.clone());
            }
            if ended {
                task.completed_at = Some(now.clone());
                task.exit_code = status.exit_code;
            }
            if let Some(agent) = &status.agent_id {
                task.agent_id = Some(agent.value.clone());
            }
        }
        if state == pb::TaskState::TaskRunning {
            run.status = RunStatus::Active;
        }
        let record = Write::json(run_key(&job_id, &run_id), &*run);
        if !ended {
            if let Ok(record) = record {
                self.pending_writes.push(record);
            }
            return;
        }
        let key = (job_id.clone(), run_id.clone());
        let stopped = self.stopping.remove(&key);
        if state == pb::TaskState::TaskFinished {
            self.finish_run(&job_id, &run_id, RunStatus::Success);
            return;
        }
        let lost_before_start = never_ran
            && matches!(
                state,
                pb::TaskState::TaskDropped | pb::TaskState::TaskUnknown | pb::TaskState::TaskGone
            );
        if lost_before_start && !stopped {
            // Never ran: launch it again, not a failure.
            if let Some(run) = self
                .runs
                .get_mut(&job_id)
                .and_then(|r| r.get_mut(&run_id))
                .map(Arc::make_mut)
            {
                run.status = RunStatus::Initial;
            }
            self.revive_needed = true;
            return;
        }
        let job = self.jobs.get(&job_id);
        let retry = !stopped
            && job.is_some_and(|j| j.run.restart.policy == "ON_FAILURE")
            && self.within_active_deadline(&job_id, &run_id);
        if retry {
            let attempts = self
                .runs
                .get(&job_id)
                .and_then(|r| r.get(&run_id))
                .map_or(1, |r| r.attempts);
            let delay =
                Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(MAX_RETRY_DELAY);
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            self.retry_at.insert(key, at);
            if let Some(run) = self
                .runs
                .get_mut(&job_id)
                .and_then(|r| r.get_mut(&run_id))
                .map(Arc::make_mut)
            {
                run.status = RunStatus::Initial;
                run.retry_not_before = Some(rfc3339(at));
                if let Ok(record) = Write::json(run_key(&job_id, &run_id), &*run) {
                    self.pending_writes.push(record);
                }
            }
            return;
        }
        self.finish_run(&job_id, &run_id, RunStatus::Failed);
    }

    fn within_active_deadline(&self, job_id: &str, run_id: &str) -> bool {
        let Some(job) = self.jobs.get(job_id) else {
            return false;
        };
        let Some(limit) = job.run.restart.active_deadline_seconds else {
            return true;
        };
        let created = self
            .runs
            .get(job_id)
            .and_then(|r| r.get(run_id))
            .and_then(|r| parse_time(&r.created_at));
        created.is_none_or(|c| (Utc::now() - c).num_seconds() < limit)
    }

    /// Ends a run: its record, the job's counters, the history's length, dependents.
    fn finish_run(&mut self, job_id: &str, run_id: &str, outcome: RunStatus) {
        let now = Utc::now();
        let Some(run) = self
            .runs
            .get_mut(job_id)
            .and_then(|r| r.get_mut(run_id))
            .map(Arc::make_mut)
        else {
            return;
        };
        run.status = outcome;
        run.completed_at = Some(rfc3339(now));
        if let Ok(record) = Write::json(run_key(job_id, run_id), &*run) {
            self.pending_writes.push(record);
        }
        self.retry_at
            .remove(&(job_id.to_string(), run_id.to_string()));
        let stats = self.stats.entry(job_id.to_string()).or_default();
        match outcome {
            RunStatus::Success => {
                stats.success_count += 1;
                stats.last_success_at = Some(rfc3339(now));
            }
            _ => {
                stats.failure_count += 1;
                stats.last_failure_at = Some(rfc3339(now));
            }
        }
        if let Ok(record) = Write::json(stats_key(job_id), &*stats) {
            self.pending_writes.push(record);
        }
        // History: the oldest finished runs beyond the limit go.
        if let Some(runs) = self.runs.get_mut(job_id) {
            let mut finished: Vec<(String, String)> = runs
                .values()
                .filter(|r| r.status.is_finished())
                .map(|r| (r.completed_at.clone().unwrap_or_default(), r.id.clone()))
                .collect();
            if finished.len() > self.config.history_count {
                finished.sort();
                let excess = finished.len() - self.config.history_count;
                for (_, id) in finished.into_iter().take(excess) {
                    runs.remove(&id);
                    self.pending_writes
                        .push(Write::Delete(run_key(job_id, &id)));
                }
            }
        }
        self.trigger_dependents(job_id, outcome, run_id);
    }

    /// After a parent ends: a child whose parents all succeeded since its own last
    /// run gets a run; a failed parent is recorded on each child as why it waits.
    fn trigger_dependents(&mut self, parent: &str, outcome: RunStatus, parent_run: &str) {
        // Through the index: a burst of ten thousand runs ending must not scan every
        // job for each.
        let children: Vec<Arc<JobSpec>> = self
            .dependents
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|child| self.jobs.get(child))
            .cloned()
            .collect();
        for child in children {
            if outcome != RunStatus::Success {
                let now = Utc::now();
                let blocked = MissedRun {
                    schedule_id: "dependencies".into(),
                    scheduled_at: rfc3339(now),
                    reason: format!("blocked: parent {parent} failed (run {parent_run})"),
                };
                if let Ok(record) = Write::json(
                    missed_key(&child.id, "dependencies", now.timestamp_millis()),
                    &blocked,
                ) {
                    self.pending_writes.push(record);
                }
                self.note_missed(&child.id, vec![blocked]);
                continue;
            }
            let parents: Vec<String> = child.dependencies.iter().map(|d| d.id.clone()).collect();
            let successes: Vec<Option<DateTime<Utc>>> = parents
                .iter()
                .map(|p| {
                    self.stats
                        .get(p)
                        .and_then(|s| s.last_success_at.as_deref())
                        .and_then(parse_time)
                })
                .collect();
            let own_last = self
                .runs
                .get(&child.id)
                .into_iter()
                .flat_map(|r| r.values())
                .filter_map(|r| parse_time(&r.created_at))
                .max();
            let parent_runs = |id: &str| {
                let stats = self.stats.get(id);
                dag::ParentRuns {
                    last_success: stats
                        .and_then(|s| s.last_success_at.as_deref())
                        .and_then(parse_time),
                    last_failure: stats
                        .and_then(|s| s.last_failure_at.as_deref())
                        .and_then(parse_time),
                }
            };
            if !matches!(
                dag::ready(&parents, &parent_runs, own_last),
                dag::Readiness::Ready
            ) {
                continue;
            }
            let Some(instant) = successes.iter().flatten().max().copied() else {
                continue;
            };
            // One run per set of parent successes, whatever replays it.
            let id = format!("{}-deps", instant.format("%Y%m%d%H%M%S%3f"));
            if self
                .runs
                .get(&child.id)
                .is_some_and(|r| r.contains_key(&id))
            {
                continue;
            }
            let run = Self::new_run(&child.id, id, instant, Trigger::Dependencies);
            if let Ok(record) = Write::json(run_key(&child.id, &run.id), &run) {
                self.pending_writes.push(record);
            }
            self.add_run(run);
        }
    }

    // ------------------------------------------------------------ offers

    fn waiting_runs(&self) -> Vec<(String, String)> {
        let now = Utc::now();
        let mut waiting: Vec<(String, String, String)> = self
            .runs
            .iter()
            .flat_map(|(job, runs)| {
                runs.values()
                    .filter(|r| r.status == RunStatus::Initial && r.due_later_than(now).is_none())
                    .map(move |r| (r.created_at.clone(), job.clone(), r.id.clone()))
            })
            .filter(|(_, job, run)| {
                self.retry_at
                    .get(&(job.clone(), run.clone()))
                    .is_none_or(|at| *at <= now)
            })
            .collect();
        waiting.sort();
        waiting.into_iter().map(|(_, j, r)| (j, r)).collect()
    }

    fn decline(&self, offer_ids: Vec<pb::OfferId>, filters: Option<pb::Filters>) {
        if let Some(calls) = &self.calls {
            calls.send(LaneCall::Decline { offer_ids, filters });
        }
    }

    fn offer_interest(&mut self) {
        let Some(calls) = &self.calls else {
            return;
        };
        let (revive_failed, suppress_failed) = calls.take_failures();
        self.revive_needed |= revive_failed;
        self.suppressed &= !suppress_failed;
        let wants = self
            .runs
            .values()
            .flat_map(|r| r.values())
            .any(|r| r.status == RunStatus::Initial);
        let roles = vec![self.config.role.clone()];
        // Assumed to succeed; a failure reported by the lane asks again.
        if wants && (self.suppressed || self.revive_needed) {
            calls.send(LaneCall::Revive { roles });
            self.suppressed = false;
            self.revive_needed = false;
        } else if !wants && !self.suppressed {
            calls.send(LaneCall::Suppress { roles });
            self.suppressed = true;
        }
    }

    async fn on_offers(&mut self, offers: Vec<pb::Offer>) {
        let Some(driver) = self.calls.as_ref().map(|calls| calls.driver().clone()) else {
            return;
        };
        let refuse = |seconds: f64| {
            Some(pb::Filters {
                refuse_seconds: Some(seconds),
            })
        };
        let waiting = if self.framework_id_unsaved {
            Vec::new()
        } else {
            self.waiting_runs()
        };
        if waiting.is_empty() && !self.early.is_empty() {
            // Kept for the runs about to come due (released by release_early_runs).
            self.held_offers.extend(offers);
            return;
        }
        if waiting.is_empty() {
            // Runs backing off before a retry want offers again soon.
            let seconds = if self.retry_at.is_empty() {
                REFUSE_IDLE
            } else {
                REFUSE_WHILE_WAITING
            };
            let ids: Vec<pb::OfferId> = offers.iter().filter_map(|o| o.id.clone()).collect();
            self.decline(ids, refuse(seconds));
            return;
        }
        let mut rooms: Vec<Option<OfferResources>> =
            offers.iter().map(|o| OfferResources::new(o).ok()).collect();
        let mut tasks: Vec<Vec<pb::TaskInfo>> = vec![Vec::new(); offers.len()];
        let mut launched: Vec<(String, String)> = Vec::new();
        let mut writes = Vec::new();
        let mut next_offer = 0usize;
        for (job_id, run_id) in waiting {
            let Some(job) = self.jobs.get(&job_id).cloned() else {
                continue;
            };
            let Some(run) = self.runs.get(&job_id).and_then(|r| r.get(&run_id)) else {
                continue;
            };
            let run = JobRun::clone(run);
            let attempt = run.attempts + 1;
            let task_id = format!("{job_id}.{run_id}.{attempt}");
            let builder = task_builder(&job, &task_id);
            // Round-robin over the offers, so a burst spreads over the agents.
            let mut placed = None;
            for step in 0..offers.len() {
                let index = (next_offer + step) % offers.len();
                let offer = &offers[index];
                if !constraints_match(&job, offer) {
                    continue;
                }
                let Some(Some(room)) = rooms.get_mut(index) else {
                    continue;
                };
                if let Ok(info) = room.take(&builder) {
                    placed = Some((index, info));
                    break;
                }
            }
            let Some((index, info)) = placed else {
                continue;
            };
            next_offer = index + 1;
            let agent = offers[index].agent_id.as_ref().map(|a| a.value.clone());
            let mut run = run;
            run.attempts = attempt;
            run.status = RunStatus::Starting;
            run.retry_not_before = None;
            run.tasks.push(RunTask {
                id: task_id,
                started_at: None,
                completed_at: None,
                status: "TASK_STAGING".into(),
                exit_code: None,
                agent_id: agent,
            });
            if let Ok(record) = Write::json(run_key(&job_id, &run_id), &run) {
                writes.push(record);
            }
            if let Some(slot) = self.runs.get_mut(&job_id).and_then(|r| r.get_mut(&run_id)) {
                *slot = Arc::new(run);
            }
            tasks[index].push(info);
            launched.push((job_id, run_id));
        }
        // Recorded before launched: a restart knows every task it may have started.
        if let Err(e) = self.store.write(writes).await {
            warn!(self.logger, "cannot record launches; declining the offers"; "error" => %e);
            for (job_id, run_id) in launched {
                if let Some(run) = self
                    .runs
                    .get_mut(&job_id)
                    .and_then(|r| r.get_mut(&run_id))
                    .map(Arc::make_mut)
                {
                    run.status = RunStatus::Initial;
                    run.attempts -= 1;
                    run.tasks.pop();
                }
            }
            let ids: Vec<pb::OfferId> = offers.iter().filter_map(|o| o.id.clone()).collect();
            self.decline(ids, refuse(REFUSE_WHILE_WAITING));
            return;
        }
        let mut declined = Vec::new();
        // One ACCEPT per offer, all in flight at once and none awaited here: a
        // burst over many agents must not wait for the master's answers one after
        // the other, nor hold back the updates of the tasks already running.
        for (offer, tasks) in offers.iter().zip(tasks) {
            let Some(offer_id) = offer.id.clone() else {
                continue;
            };
            if tasks.is_empty() {
                declined.push(offer_id);
                continue;
            }
            let task_ids: Vec<String> = tasks
                .iter()
                .filter_map(|t| t.task_id.as_ref().map(|id| id.value.clone()))
                .collect();
            let operations = tasks
                .chunks(1000)
                .map(|c| pb::Operation {
                    operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                        task_infos: c.to_vec(),
                    })),
                })
                .collect();
            let driver = driver.clone();
            self.accepts.spawn(async move {
                let result = driver
                    .accept(vec![offer_id], operations, refuse(REFUSE_WHILE_WAITING))
                    .await;
                AcceptOutcome {
                    task_ids,
                    error: result.err().map(|e| e.to_string()),
                }
            });
        }
        if !declined.is_empty() {
            self.decline(declined, refuse(REFUSE_WHILE_WAITING));
        }
    }
}

/// The jobs that depend on each job.
fn dependents_of(jobs: &BTreeMap<String, Arc<JobSpec>>) -> HashMap<String, BTreeSet<String>> {
    let mut dependents: HashMap<String, BTreeSet<String>> = HashMap::new();
    for job in jobs.values() {
        for parent in &job.dependencies {
            dependents
                .entry(parent.id.clone())
                .or_default()
                .insert(job.id.clone());
        }
    }
    dependents
}

/// `<job>.<run>.<attempt>` (job ids are dotted; run ids have no dots).
fn parse_task_id(task_id: &str) -> Option<(String, String, u32)> {
    let (rest, attempt) = task_id.rsplit_once('.')?;
    let (job, run) = rest.rsplit_once('.')?;
    Some((job.to_string(), run.to_string(), attempt.parse().ok()?))
}

fn task_builder(job: &JobSpec, task_id: &str) -> TaskBuilder {
    let run = &job.run;
    let mut builder = TaskBuilder::new(task_id)
        .name(job.id.clone())
        .cpus(run.cpus)
        .mem(run.mem)
        .disk(run.disk);
    builder = match (&run.cmd, &run.args) {
        (Some(cmd), _) => builder.shell(cmd.clone()),
        (None, Some(args)) if !args.is_empty() => builder.exec(args[0].clone(), args[1..].to_vec()),
        _ => builder,
    };
    for (name, value) in &run.env {
        builder = builder.env(name, value);
    }
    builder = builder
        .env("METRONOME_JOB_ID", job.id.clone())
        .env("MESOS_TASK_ID", task_id);
    for (key, value) in &job.labels {
        builder = builder.label(key, value);
    }
    if let Some(docker) = &run.docker {
        builder = builder.image(docker.image.clone());
    }
    for artifact in &run.artifacts {
        builder = builder.fetch(pb::command_info::Uri {
            value: artifact.uri.clone(),
            executable: artifact.executable,
            extract: artifact.extract,
            cache: artifact.cache,
            output_file: String::new(),
        });
    }
    for volume in &run.volumes {
        builder = builder.volume(pb::Volume {
            container_path: volume.container_path.clone(),
            host_path: volume.host_path.clone(),
            mode: if volume.mode == "RO" {
                pb::volume::Mode::Ro
            } else {
                pb::volume::Mode::Rw
            } as i32,
        });
    }
    builder
}

/// Metronome's placement constraints: IS/EQ (exact), LIKE/UNLIKE (full-match
/// regular expressions) on `hostname` or an agent attribute.
fn constraints_match(job: &JobSpec, offer: &pb::Offer) -> bool {
    let Some(placement) = &job.run.placement else {
        return true;
    };
    placement.constraints.iter().all(|c| {
        let value: Option<String> = if c.attribute == "hostname" || c.attribute == "@hostname" {
            Some(offer.hostname.clone())
        } else {
            offer
                .attributes
                .iter()
                .find(|a| a.name == c.attribute)
                .map(attribute_text)
        };
        let wanted = c.value.clone().unwrap_or_default();
        match c.operator.as_str() {
            "IS" | "EQ" => value.as_deref() == Some(wanted.as_str()),
            "LIKE" | "UNLIKE" => {
                // Validation refused patterns that do not compile.
                let matches = constraint_pattern(&wanted)
                    .is_ok_and(|re| value.as_deref().is_some_and(|v| re.is_match(v)));
                (c.operator == "LIKE") == matches
            }
            _ => false,
        }
    })
}

/// The id of schedule `sid`'s run for instant `at`: the same instant always names
/// the same run, which is what makes recording it twice recording it once.
fn scheduled_run_id(at: DateTime<Utc>, sid: &str) -> String {
    format!("{}-{sid}", at.format("%Y%m%d%H%M%S"))
}

/// `len` letters and digits drawn from a random UUID (62 symbols each, the bias of
/// a byte taken modulo 62 is of no matter for an id).
fn random_alphanumeric(len: usize) -> String {
    const SYMBOLS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(len)
        .map(|byte| char::from(SYMBOLS[usize::from(*byte) % SYMBOLS.len()]))
        .collect()
}

fn attribute_text(attribute: &pb::Attribute) -> String {
    attribute.text.clone()
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
