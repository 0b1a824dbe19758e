//! `agora agent`: run an agent, or put one under maintenance with the `drain` and
//! `reactivate` subcommands (`agent_drain.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_agent::{Agent, AgentConfig};
use anyhow::Context;
use clap::{Args, Subcommand};

use super::parse_duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCli {
    /// Without a subcommand, `agora agent` runs an agent.
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub run: AgentArgs,
}

/// Maintenance of a registered agent, asked of the masters' leader.
#[derive(Subcommand)]
pub enum AgentCommand {
    /// Drain an agent: no new offers, its frameworks are told, what still runs at
    /// --deadline is killed, then it is DRAINED.
    Drain(super::agent_drain::DrainArgs),
    /// End an agent's maintenance: its resources are offered again.
    Reactivate(super::agent_drain::ReactivateArgs),
}

/// Runs an agent, or one of the maintenance subcommands.
pub async fn main(args: AgentCli) -> anyhow::Result<()> {
    match args.command {
        Some(AgentCommand::Drain(drain)) => super::agent_drain::drain(drain).await,
        Some(AgentCommand::Reactivate(reactivate)) => {
            super::agent_drain::reactivate(reactivate).await
        }
        None => run(args.run).await,
    }
}

/// The flags of a running agent.
#[derive(Args)]
pub struct AgentArgs {
    /// Master address(es), comma-separated host:port.
    #[arg(
        long,
        env = "AGORA_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    pub master: Vec<String>,
    /// Address to serve the agent API (executors, /health, /metrics) on.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Resources, overriding what is detected: 'cpus:4;mem:4096;disk:10000;ports:[31000-32000]'.
    #[arg(long)]
    pub resources: Option<String>,
    /// Attributes offered with this agent's resources: 'rack:r1;zone:a'.
    #[arg(long, default_value = "")]
    pub attributes: String,
    /// Directory for sandboxes and checkpoints; an agent restarted on the same one
    /// re-registers with the same id.
    #[arg(long, default_value = "./agora-agent")]
    pub work_dir: PathBuf,
    /// Hostname reported to the master (default: this machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Address executors use to reach this agent (default: the listen IP).
    #[arg(long)]
    pub advertise_ip: Option<String>,
    /// First status update retry; doubles up to --status-update-retry-max.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub status_update_retry_min: Duration,
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub status_update_retry_max: Duration,
    /// How long a started executor has to subscribe.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub executor_registration_timeout: Duration,
    /// SIGTERM→SIGKILL grace when a task names none.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The command that starts the built-in command executor: this same binary.
pub fn executor_command() -> anyhow::Result<Vec<std::ffi::OsString>> {
    let exe = std::env::current_exe().context("cannot find this binary to start executors with")?;
    Ok(vec![exe.into_os_string(), "executor".into()])
}

/// Builds an agent's configuration from its flags.
pub fn config(args: &AgentArgs, logger: slog::Logger) -> anyhow::Result<AgentConfig> {
    let mut config = AgentConfig::new(
        args.master.clone(),
        args.work_dir.clone(),
        executor_command()?,
        logger,
    );
    if let Some(hostname) = &args.hostname {
        config.hostname = hostname.clone();
    }
    config.advertise_ip = args
        .advertise_ip
        .clone()
        .unwrap_or_else(|| args.listen.ip().to_string());
    config.resources = args.resources.clone();
    config.attributes = args.attributes.clone();
    config.status_update_retry_min = args.status_update_retry_min;
    config.status_update_retry_max = args.status_update_retry_max;
    config.executor_registration_timeout = args.executor_registration_timeout;
    config.default_kill_grace = args.kill_grace;
    Ok(config)
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    let config = config(&args, logger)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let agent = Agent::start(config, listener).await?;
    let failed = tokio::select! {
        _ = super::stop_requested() => false,
        _ = agent.stopped() => true,
    };
    agent.shutdown().await;
    anyhow::ensure!(
        !failed,
        "the agent stopped: its work dir cannot be written durably (see the log); \
         fix the disk and start it again to recover"
    );
    Ok(())
}
