//! The `agora` binary: every Agora process and every operator command.
//!
//! # Layout
//! - [`main`]: parses the command line and runs one subcommand.
//! - `commands/`: one file per subcommand — `dev`, `master`, `agent`, `executor`
//!   (hidden: the built-in command executor the agent starts), the operator views
//!   `state`, `agents`, `frameworks`, `tasks`, `logs`, and the operator commands `quota`,
//!   `weights`, `roles` and `agent drain|reactivate`, and `image import|list` (the
//!   agents' local OCI image store), `apps` (an apps instance: services with
//!   Marathon's REST API) and `app deploy|list|show|scale|restart|rm` (its client),
//!   `cron` (a cron instance: scheduled and batch jobs with Metronome's REST API) and
//!   `job add|run|list|show|history|rm` (its client).
//! - `operator_client`: the gRPC connection the operator views share.
//! - `agent_client`: HTTP GETs of an agent's API (logs, container usage).
//! - `rest_client`: the HTTP client of `app` and `job` (a framework's REST API).
//! - `table`: plain-text tables for the operator views.
//! - `logging`: the slog logger every process uses.

mod agent_client;
mod commands;
mod logging;
mod operator_client;
mod rest_client;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Agora: a Raft-replicated, two-level resource-offer cluster manager.
#[derive(Parser)]
#[command(name = "agora", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster in one process: one master (or a group of 3 or 5 with
    /// `--masters`) and N agents.
    Dev(commands::dev::DevArgs),
    /// Run a master (alone, or one of a raft group with `--id`/`--peers`); `add`,
    /// `remove` and `group` manage the group.
    Master(commands::master::MasterArgs),
    /// Run an agent; `drain` and `reactivate` put one under maintenance and back.
    Agent(commands::agent::AgentCli),
    /// The built-in command executor (started by agents, not by hand).
    #[command(hide = true)]
    Executor,
    /// Show the whole cluster: agents, frameworks and tasks.
    State(commands::state::StateArgs),
    /// List agents with their resources and attributes.
    Agents(operator_client::ViewArgs),
    /// List frameworks.
    Frameworks(operator_client::ViewArgs),
    /// List tasks.
    Tasks(commands::tasks::TasksArgs),
    /// Print a task's stdout (or --stderr), following it with --follow.
    Logs(commands::logs::LogsArgs),
    /// Set, show or remove the quotas of roles.
    Quota(commands::quota::QuotaArgs),
    /// Show role weights, or set them with `set role=weight,...`.
    Weights(commands::weights::WeightsArgs),
    /// List roles with their weight, quota, allocation and share.
    Roles(operator_client::ListArgs),
    /// Import OCI images into the local image store agents run them from, or list it.
    Image(commands::image::ImageArgs),
    /// Run an apps instance: long-running services with Marathon's REST API.
    Apps(commands::apps::AppsArgs),
    /// Deploy, list, show, scale, restart or remove apps (through `--apps`).
    App(commands::app::AppArgs),
    /// Run a cron instance: scheduled and batch jobs with Metronome's REST API.
    Cron(commands::cron::CronArgs),
    /// Add, run, list, show or remove jobs, and show their history (through `--cron`).
    Job(commands::job::JobArgs),
}

/// Builds a runtime, or says why it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Executor = cli.command {
        return commands::executor::run();
    }
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => commands::dev::run(args).await,
            Command::Master(args) => commands::master::run(args).await,
            Command::Agent(args) => commands::agent::main(args).await,
            Command::Executor => Ok(()),
            Command::State(args) => commands::state::run(args).await,
            Command::Agents(args) => commands::agents::run(args).await,
            Command::Frameworks(args) => commands::frameworks::run(args).await,
            Command::Tasks(args) => commands::tasks::run(args).await,
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Quota(args) => commands::quota::run(args).await,
            Command::Weights(args) => commands::weights::run(args).await,
            Command::Roles(args) => commands::roles::run(args).await,
            Command::Image(args) => commands::image::run(args).await,
            Command::Apps(args) => commands::apps::run(args).await,
            Command::App(args) => commands::app::run(args).await,
            Command::Cron(args) => commands::cron::run(args).await,
            Command::Job(args) => commands::job::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
