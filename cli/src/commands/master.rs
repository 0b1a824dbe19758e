//! `agora master`: run a master.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_master::{CoreTimings, Master, MasterConfig};
use anyhow::Context;
use clap::Args;

use super::parse_duration;

#[derive(Args)]
pub struct MasterArgs {
    /// Address to serve gRPC and HTTP on.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Directory for the registry.
    #[arg(long, default_value = "./agora-master")]
    pub data_dir: PathBuf,
    /// Hostname reported to frameworks and agents.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Address others should use to reach this master (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub timings: TimingArgs,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The master's timing flags (Mesos' defaults).
#[derive(Args, Clone)]
pub struct TimingArgs {
    /// How often agents are pinged.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub agent_ping_interval: Duration,
    /// Unanswered pings after which an agent is unreachable.
    #[arg(long, default_value_t = 5)]
    pub max_missed_pings: u32,
    /// How long agents known from the registry have to come back after a master start.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub agent_reregister_timeout: Duration,
    /// How often frameworks get a HEARTBEAT.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Rescind offers not answered within this (default: never, as Mesos).
    #[arg(long, value_parser = parse_duration)]
    pub offer_timeout: Option<Duration>,
}

impl TimingArgs {
    pub fn core_timings(&self) -> anyhow::Result<CoreTimings> {
        anyhow::ensure!(
            !self.agent_ping_interval.is_zero(),
            "--agent-ping-interval must be positive"
        );
        anyhow::ensure!(
            !self.heartbeat_interval.is_zero(),
            "--heartbeat-interval must be positive"
        );
        anyhow::ensure!(
            self.max_missed_pings > 0,
            "--max-missed-pings must be at least 1"
        );
        Ok(CoreTimings {
            agent_ping_interval: self.agent_ping_interval,
            max_missed_pings: self.max_missed_pings,
            agent_reregister_timeout: self.agent_reregister_timeout,
            framework_heartbeat_interval: self.heartbeat_interval,
            offer_timeout: self.offer_timeout.filter(|t| !t.is_zero()),
            ..CoreTimings::default()
        })
    }
}

pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = MasterConfig::new(args.data_dir, logger);
    config.hostname = args.hostname;
    config.advertise_address = args.advertise;
    config.timings = args.timings.core_timings()?;
    let mut master = Master::start(config, listener).await?;
    tokio::select! {
        result = master.wait() => result?,
        _ = super::stop_requested() => master.shutdown().await,
    }
    Ok(())
}
