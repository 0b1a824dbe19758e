//! `agora-hello`, the SDK's first tutorial: launch N shell tasks across whatever the
//! cluster offers, print every status update, and succeed once all have FINISHED.
//!
//! Read it top to bottom: the options, the report, then the scheduler itself, whose
//! callbacks are the whole framework. The driver does the rest (finding the leader,
//! reconnecting, acknowledging updates once `update` returns).
//!
//! # Layout
//! - `lib.rs` (this file): [`HelloOptions`], [`HelloReport`], the `Hello` scheduler
//!   and [`run`], so tests can run hello in-process.
//! - `main.rs`: command-line flags, then `run`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_sdk::proto::{self, TaskState};
use agora_sdk::{
    DriverConfig, OfferResources, Scheduler, SchedulerDriver, SchedulerHandle, TaskBuilder,
    is_terminal, slog,
};
use anyhow::{Context, bail};

/// What to launch, and where.
#[derive(Debug, Clone)]
pub struct HelloOptions {
    /// Masters as `host:port`; the driver finds the leader among them.
    pub masters: Vec<String>,
    /// How many tasks to run; at least 1.
    pub tasks: usize,
    /// Shell command every task runs.
    pub cmd: String,
    /// Cpus per task; above zero.
    pub cpus: f64,
    /// Memory per task in MB; above zero.
    pub mem: f64,
    /// How long a declined offer stays away; short, so leftovers come back quickly.
    pub refuse_seconds: f64,
    /// Image from the agents' image store to run every task in (oci agents only).
    pub image: Option<String>,
}

impl Default for HelloOptions {
    fn default() -> Self {
        HelloOptions {
            masters: vec!["127.0.0.1:5050".into()],
            tasks: 20,
            cmd: "echo hello; sleep 1".into(),
            cpus: 0.1,
            mem: 32.0,
            refuse_seconds: 1.0,
            image: None,
        }
    }
}

/// The outcome of a successful run.
#[derive(Debug, Clone)]
pub struct HelloReport {
    /// Tasks that reached TASK_FINISHED (all of them).
    pub finished: usize,
    /// Per task, from the ACCEPT that launched it to its TASK_RUNNING; sorted.
    pub accept_to_running: Vec<Duration>,
}

impl HelloReport {
    /// The `p`th percentile (nearest rank) of accept→RUNNING latency.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.accept_to_running.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.accept_to_running
            .get(rank.clamp(1, n.max(1)) - 1)
            .copied()
    }
}

/// The framework: its state lives here, and only the driver calls it, one callback
/// at a time, so no locks are needed.
#[derive(Default)]
struct Hello {
    opts: HelloOptions,
    /// Tasks launched so far; task ids are `hello-0` .. `hello-{launched - 1}`.
    launched: usize,
    /// When each launched task's ACCEPT was sent; removed at its first RUNNING.
    accepted_at: HashMap<String, Instant>,
    /// accept→RUNNING latency of each task seen RUNNING, in arrival order.
    accept_to_running: Vec<Duration>,
    /// A set, because updates are delivered at least once.
    finished: HashSet<String>,
    /// Why the run failed, once a task ended otherwise than FINISHED.
    failure: Option<String>,
    /// True once SUPPRESS was accepted: no more offers are wanted.
    suppressed: bool,
}

impl Scheduler for Hello {
    async fn subscribed(&mut self, driver: &SchedulerHandle, info: proto::event::Subscribed) {
        let id = info.framework_id.map(|id| id.value).unwrap_or_default();
        println!("subscribed as framework {id}");
        // After a reconnection, ask for the state of every task: updates sent while
        // we were away are not lost, but reconciling is how a framework makes sure.
        let _ = driver.reconcile(Vec::new()).await;
    }

    async fn offers(&mut self, driver: &SchedulerHandle, offers: Vec<proto::Offer>) {
        for offer in offers {
            let Ok(mut room) = OfferResources::new(&offer) else {
                continue; // malformed: the master rescinds it in time
            };
            // Pack as many of the remaining tasks as fit into this offer.
            let (mut tasks, mut ids) = (Vec::new(), Vec::new());
            while self.launched + tasks.len() < self.opts.tasks {
                let id = format!("hello-{}", self.launched + tasks.len());
                let mut task = TaskBuilder::new(&id)
                    .shell(&self.opts.cmd)
                    .cpus(self.opts.cpus)
                    .mem(self.opts.mem);
                if let Some(image) = &self.opts.image {
                    task = task.image(image);
                }
                match room.take(&task) {
                    Ok(info) => (tasks.push(info), ids.push(id)),
                    Err(_) => break,
                };
            }
            let offer_id = room.offer_id().clone();
            // What we do not use comes back after refuse_seconds (the master's
            // default would hold it for 5 s).
            let filters = proto::Filters {
                refuse_seconds: Some(self.opts.refuse_seconds),
            };
            if tasks.is_empty() {
                let _ = driver.decline(vec![offer_id], Some(filters)).await;
                continue;
            }
            let sent_at = Instant::now();
            match driver.launch(offer_id, tasks, Some(filters)).await {
                Ok(()) => {
                    self.launched += ids.len();
                    self.accepted_at
                        .extend(ids.into_iter().map(|id| (id, sent_at)));
                }
                // The same task ids are tried again on the next offer.
                Err(e) => println!("launch on {} failed, retrying: {e}", room.hostname()),
            }
        }
        if self.launched == self.opts.tasks && !self.suppressed {
            // Nothing left to launch: stop receiving offers other frameworks can use.
            self.suppressed = driver.suppress(Vec::new()).await.is_ok();
        }
    }

    async fn update(&mut self, driver: &SchedulerHandle, status: proto::TaskStatus) {
        let task = status.task_id.clone().unwrap_or_default().value;
        let agent = status.agent_id.clone().unwrap_or_default().value;
        let state = status.state();
        println!(
            "{task:<12} {:<16} agent={agent} {}",
            state.as_str_name(),
            status.message
        );
        match state {
            TaskState::TaskRunning => {
                if let Some(sent_at) = self.accepted_at.remove(&task) {
                    self.accept_to_running.push(sent_at.elapsed());
                }
            }
            TaskState::TaskFinished => {
                self.finished.insert(task);
            }
            state if is_terminal(state) => {
                let reason = status.reason().as_str_name();
                self.failure = Some(format!(
                    "task {task} ended {} ({reason}): {}",
                    state.as_str_name(),
                    status.message
                ));
                driver.stop();
            }
            _ => {}
        }
        if self.finished.len() == self.opts.tasks && driver.teardown().await.is_err() {
            // Teardown removes the framework at once; if the master cannot be told,
            // stopping is enough: it forgets us after the failover timeout (0 s).
            driver.stop();
        }
    }

    async fn disconnected(&mut self, _driver: &SchedulerHandle) {
        println!("lost the master; reconnecting");
    }
}

/// Subscribes a framework named "hello", runs `opts.tasks` tasks to completion and
/// reports accept→RUNNING latency. Fails, naming the task and why, if any task ends
/// otherwise than FINISHED.
pub async fn run(opts: HelloOptions, logger: slog::Logger) -> anyhow::Result<HelloReport> {
    if opts.tasks == 0 || opts.cmd.trim().is_empty() {
        bail!("need at least one task and a non-empty command");
    }
    if !(opts.cpus > 0.0 && opts.mem > 0.0) {
        bail!("cpus and mem must be above zero");
    }
    let info = proto::FrameworkInfo {
        name: "hello".into(),
        ..Default::default()
    };
    let driver = SchedulerDriver::new(DriverConfig::new(opts.masters.clone(), info, logger))
        .context("bad configuration")?;
    let mut hello = Hello {
        opts,
        ..Default::default()
    };
    let result = driver.run(&mut hello).await;
    if let Some(failure) = hello.failure {
        bail!(failure);
    }
    result?;
    if hello.finished.len() < hello.opts.tasks {
        bail!(
            "stopped with {} of {} tasks finished",
            hello.finished.len(),
            hello.opts.tasks
        );
    }
    hello.accept_to_running.sort();
    Ok(HelloReport {
        finished: hello.finished.len(),
        accept_to_running: hello.accept_to_running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let report = HelloReport {
            finished: 4,
            accept_to_running: [10, 20, 30, 40].map(Duration::from_millis).to_vec(),
        };
        assert_eq!(report.percentile(50.0), Some(Duration::from_millis(20)));
        assert_eq!(report.percentile(99.0), Some(Duration::from_millis(40)));
        let empty = HelloReport {
            finished: 0,
            accept_to_running: Vec::new(),
        };
        assert_eq!(empty.percentile(50.0), None);
    }
}
