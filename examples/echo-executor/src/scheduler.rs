//! The scheduler half: launches N tasks on one agent, all on one echo executor
//! (`ExecutorInfo` type CUSTOM whose command is this binary's `executor`
//! subcommand), sends the executor a framework message once a task runs, waits
//! for the reply and for every task to finish, then tears the framework down (which
//! shuts the executor down).

use agora_sdk::proto::{self, TaskState};
use agora_sdk::{
    DriverConfig, OfferResources, Scheduler, SchedulerDriver, SchedulerHandle, TaskBuilder,
    is_terminal, slog,
};
use anyhow::{Context, bail};

/// The executor id every task names: they all go to one executor per agent.
pub const EXECUTOR_ID: &str = "echo-executor";

/// What to launch.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Masters as `host:port`.
    pub masters: Vec<String>,
    /// How many tasks; at least 1.
    pub tasks: usize,
    /// Shell command each task runs (sent as the task's `data`).
    pub cmd: String,
    /// Program and arguments that start the executor on the agent (argv[0] first).
    pub executor_command: Vec<String>,
    /// Sent to the executor once a task runs; it answers `echo: <message>`.
    pub message: String,
    /// Cpus per task; above zero.
    pub cpus: f64,
    /// Memory per task, in MB; above zero.
    pub mem: f64,
}

/// How a run went.
#[derive(Debug, Clone, Default)]
pub struct EchoReport {
    /// Tasks that reached TASK_FINISHED (all of them).
    pub finished: usize,
    /// The executor's answers to the framework message.
    pub replies: Vec<String>,
}

/// The executor every task names.
pub fn executor_info(command: &[String]) -> proto::ExecutorInfo {
    proto::ExecutorInfo {
        r#type: proto::executor_info::Type::Custom as i32,
        executor_id: Some(proto::ExecutorId {
            value: EXECUTOR_ID.into(),
        }),
        name: "echo executor".into(),
        command: Some(proto::CommandInfo {
            shell: false,
            value: command.first().cloned().unwrap_or_default(),
            arguments: command.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The scheduler's state across callbacks.
struct Echo {
    /// What to launch, as asked.
    opts: EchoOptions,
    /// The tasks were launched (on the first offer that fits them all).
    launched: bool,
    /// Set at the first TASK_RUNNING; the message goes out then.
    messaged: bool,
    /// What the run saw so far.
    report: EchoReport,
    /// The first task that did not finish, and why.
    failure: Option<String>,
    /// Tasks that ended (any terminal state).
    ended: usize,
}

impl Echo {
    fn done(&self) -> bool {
        self.ended == self.opts.tasks && (!self.report.replies.is_empty() || self.failure.is_some())
    }
}

impl Scheduler for Echo {
    async fn offers(&mut self, driver: &SchedulerHandle, offers: Vec<proto::Offer>) {
        for offer in offers {
            let Some(offer_id) = offer.id.clone() else {
                continue;
            };
            if !self.launched
                && let Ok(mut room) = OfferResources::new(&offer)
            {
                let executor = executor_info(&self.opts.executor_command);
                let tasks: Result<Vec<proto::TaskInfo>, _> = (0..self.opts.tasks)
                    .map(|i| {
                        let builder = TaskBuilder::new(format!("echo-{i}"))
                            .shell("unused")
                            .cpus(self.opts.cpus)
                            .mem(self.opts.mem);
                        room.take(&builder).map(|mut task| {
                            task.command = None;
                            task.executor = Some(executor.clone());
                            task.data = self.opts.cmd.clone().into_bytes();
                            task
                        })
                    })
                    .collect();
                if let Ok(tasks) = tasks {
                    let launch = proto::Operation {
                        operation: Some(proto::operation::Operation::Launch(
                            proto::operation::Launch { task_infos: tasks },
                        )),
                    };
                    self.launched = driver
                        .accept(vec![offer_id], vec![launch], None)
                        .await
                        .is_ok();
                    continue;
                }
            }
            let _ = driver.decline(vec![offer_id], None).await;
        }
    }

    async fn update(&mut self, driver: &SchedulerHandle, status: proto::TaskStatus) {
        let task = status
            .task_id
            .as_ref()
            .map_or("?", |t| t.value.as_str())
            .to_string();
        println!(
            "{task}: {} {}",
            status.state().as_str_name(),
            status.message
        );
        if status.state() == TaskState::TaskRunning && !self.messaged {
            self.messaged = true;
            let executor = proto::ExecutorId {
                value: EXECUTOR_ID.into(),
            };
            let sent = match status.agent_id.clone() {
                Some(agent) => driver
                    .message(agent, executor, self.opts.message.clone().into_bytes())
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("the update names no agent".to_string()),
            };
            // No reply can come: say so rather than wait for one for ever.
            if let Err(e) = sent {
                self.failure
                    .get_or_insert(format!("cannot message the executor: {e}"));
            }
        }
        if is_terminal(status.state()) {
            self.ended += 1;
            if status.state() == TaskState::TaskFinished {
                self.report.finished += 1;
            } else if self.failure.is_none() {
                self.failure = Some(format!(
                    "{task} ended {}: {}",
                    status.state().as_str_name(),
                    status.message
                ));
            }
        }
        if self.done() {
            let _ = driver.teardown().await;
        }
    }

    async fn message(&mut self, driver: &SchedulerHandle, message: proto::event::Message) {
        let reply = String::from_utf8_lossy(&message.data).to_string();
        println!("the executor answered: {reply}");
        self.report.replies.push(reply);
        if self.done() {
            let _ = driver.teardown().await;
        }
    }

    async fn error(&mut self, driver: &SchedulerHandle, message: String) {
        self.failure.get_or_insert(message);
        driver.stop();
    }
}

/// Runs the scheduler until every task ended and the executor answered.
pub async fn run_scheduler(opts: EchoOptions, logger: slog::Logger) -> anyhow::Result<EchoReport> {
    if opts.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    if opts.executor_command.is_empty() {
        bail!("the executor command is empty");
    }
    let info = proto::FrameworkInfo {
        name: "echo".into(),
        user: "root".into(),
        ..Default::default()
    };
    let config = DriverConfig::new(opts.masters.clone(), info, logger);
    let driver = SchedulerDriver::new(config).context("invalid driver configuration")?;
    let mut echo = Echo {
        opts,
        launched: false,
        messaged: false,
        report: EchoReport::default(),
        failure: None,
        ended: 0,
    };
    driver
        .run(&mut echo)
        .await
        .context("the scheduler driver failed")?;
    if let Some(failure) = echo.failure {
        bail!(failure);
    }
    Ok(echo.report)
}
