//! The controller: the one owner of the cron framework's state (jobs, schedules,
//! runs, history). It runs as a single task fed by API commands and driver events,
//! and publishes an immutable [`Snapshot`] after every change for the API to read.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::CronError;
use crate::model::{JobSpec, ScheduleSpec};
use crate::state::{History, JobRun};

pub mod actor;
mod calls;

pub use actor::Controller;

/// Everything the API shows, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every job, by id.
    pub jobs: BTreeMap<String, Arc<JobSpec>>,
    /// Each job's schedules, with `next_run_at` filled in.
    pub schedules: BTreeMap<String, Vec<ScheduleSpec>>,
    /// Runs not finished yet, per job.
    pub active_runs: BTreeMap<String, Vec<Arc<JobRun>>>,
    /// Finished runs and counters, per job.
    pub history: BTreeMap<String, History>,
    /// True once this instance leads and has loaded its state.
    pub is_leader: bool,
    /// The leading cron instance's HTTP address, when known.
    pub leader: Option<String>,
}

/// A request from the API to the controller.
pub enum Command {
    /// Create (`create`: 409 if it exists) or replace a job. Schedules given inline
    /// with a created job come in `schedules`.
    PutJob {
        job: Box<JobSpec>,
        schedules: Option<Vec<ScheduleSpec>>,
        create: bool,
        reply: oneshot::Sender<Result<JobSpec, CronError>>,
    },
    /// Delete a job; with active runs only when `stop_current_runs` (else 409).
    DeleteJob {
        id: String,
        stop_current_runs: bool,
        reply: oneshot::Sender<Result<JobSpec, CronError>>,
    },
    /// Create (`create`: 409 if it exists) or replace one schedule of a job.
    PutSchedule {
        job_id: String,
        schedule: ScheduleSpec,
        create: bool,
        reply: oneshot::Sender<Result<ScheduleSpec, CronError>>,
    },
    DeleteSchedule {
        job_id: String,
        schedule_id: String,
        reply: oneshot::Sender<Result<(), CronError>>,
    },
    /// Run the job now (`POST /v1/jobs/{id}/runs`).
    StartRun {
        job_id: String,
        reply: oneshot::Sender<Result<JobRun, CronError>>,
    },
    /// Kill a run's task (`.../actions/stop`).
    StopRun {
        job_id: String,
        run_id: String,
        reply: oneshot::Sender<Result<JobRun, CronError>>,
    },
}

impl Command {
    /// Answers the command with `error` without running it.
    pub fn refuse(self, error: CronError) {
        match self {
            Command::PutJob { reply, .. } | Command::DeleteJob { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::PutSchedule { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::DeleteSchedule { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::StartRun { reply, .. } | Command::StopRun { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The API's way to the controller: cheap to clone.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl ControllerHandle {
    pub fn new(commands: mpsc::Sender<Command>, snapshot: watch::Receiver<Arc<Snapshot>>) -> Self {
        ControllerHandle { commands, snapshot }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CronError>>) -> Command,
    ) -> Result<T, CronError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| CronError::Unavailable("the cron controller has stopped".into()))?;
        answer
            .await
            .map_err(|_| CronError::Unavailable("the cron controller has stopped".into()))?
    }

    pub async fn put_job(
        &self,
        job: JobSpec,
        schedules: Option<Vec<ScheduleSpec>>,
        create: bool,
    ) -> Result<JobSpec, CronError> {
        self.ask(|reply| Command::PutJob {
            job: Box::new(job),
            schedules,
            create,
            reply,
        })
        .await
    }

    pub async fn delete_job(
        &self,
        id: String,
        stop_current_runs: bool,
    ) -> Result<JobSpec, CronError> {
        self.ask(|reply| Command::DeleteJob {
            id,
            stop_current_runs,
            reply,
        })
        .await
    }

    pub async fn put_schedule(
        &self,
        job_id: String,
        schedule: ScheduleSpec,
        create: bool,
    ) -> Result<ScheduleSpec, CronError> {
        self.ask(|reply| Command::PutSchedule {
            job_id,
            schedule,
            create,
            reply,
        })
        .await
    }

    pub async fn delete_schedule(
        &self,
        job_id: String,
        schedule_id: String,
    ) -> Result<(), CronError> {
        self.ask(|reply| Command::DeleteSchedule {
            job_id,
            schedule_id,
            reply,
        })
        .await
    }

    pub async fn start_run(&self, job_id: String) -> Result<JobRun, CronError> {
        self.ask(|reply| Command::StartRun { job_id, reply }).await
    }

    pub async fn stop_run(&self, job_id: String, run_id: String) -> Result<JobRun, CronError> {
        self.ask(|reply| Command::StopRun {
            job_id,
            run_id,
            reply,
        })
        .await
    }
}
