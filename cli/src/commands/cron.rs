//! `agora cron`: run a cron instance — scheduled and batch jobs on the cluster,
//! driven through Metronome's REST API (`/v1/jobs`, `/v1/jobs/{id}/runs`, ...).
//!
//! Several instances with the same `--name` against the same masters form an HA
//! group: one leads, the others answer with the leader's address and take over when
//! its lease lapses. Jobs, schedules and runs live in the masters' state store, so an
//! instance restarted (or killed and started again) neither skips nor repeats a run.

use std::net::SocketAddr;
use std::time::Duration;

use agora_cron::{CronConfig, CronServer};
use anyhow::Context;
use clap::Args;

use super::parse_duration;

/// The line a cron instance prints once its API answers, followed by its address;
/// scripts and tests read it to find an instance started on port 0.
pub const LISTENING: &str = "cron listening on";

#[derive(Args)]
pub struct CronArgs {
    /// Master address(es), comma-separated host:port.
    #[arg(
        long,
        env = "AGORA_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    pub master: Vec<String>,
    /// Address to serve the REST API on; port 0 lets the OS choose.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// How clients reach this instance, `host` or `host:port` (a host alone takes
    /// the listening port): where standbys send clients, and what the masters show.
    /// Default: the listening address, or this machine's hostname when listening on
    /// every interface (0.0.0.0 or [::]).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Framework name: also the name of its state in the masters' store and of its
    /// leader lease, so instances of one HA group share it.
    #[arg(long, default_value = "cron")]
    pub name: String,
    /// The role the framework subscribes with.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// How long the masters keep the jobs' running tasks while no cron instance is
    /// connected.
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// How long a leader's lease lasts without renewal; a standby (or a restarted
    /// instance) takes over after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_lease: Duration,
    /// Finished runs kept per job (older ones only count in the totals).
    #[arg(long, default_value_t = 1000)]
    pub history_count: usize,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The configuration `args` describe.
pub fn config(args: &CronArgs) -> anyhow::Result<CronConfig> {
    let masters: Vec<String> = args
        .master
        .iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    anyhow::ensure!(!masters.is_empty(), "--master names no master");
    anyhow::ensure!(!args.name.trim().is_empty(), "--name must not be empty");
    anyhow::ensure!(!args.role.trim().is_empty(), "--role must not be empty");
    anyhow::ensure!(
        !args.leader_lease.is_zero(),
        "--leader-lease must be positive"
    );
    anyhow::ensure!(args.history_count > 0, "--history-count must be positive");
    let mut config = CronConfig::new(masters, args.listen);
    config.advertise = super::advertise(args.advertise.as_deref(), args.listen);
    config.name = args.name.clone();
    config.role = args.role.clone();
    config.failover_timeout = args.failover_timeout;
    config.leader_lease = args.leader_lease;
    config.history_count = args.history_count;
    Ok(config)
}

pub async fn run(args: CronArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    let config = config(&args)?;
    let masters = config.masters.join(",");
    let server = CronServer::start(config, logger)
        .await
        .context("the cron instance did not start")?;
    let address = server.local_addr();
    println!("{LISTENING} {address}  (Metronome API: http://{address}/v1/jobs; masters {masters})");
    super::stop_requested().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cron: CronArgs,
    }

    #[test]
    fn flags_become_the_configuration() {
        let cli = Cli::try_parse_from([
            "cron",
            "--master",
            "10.0.0.1:5050, 10.0.0.2:5050",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "nightly",
            "--leader-lease",
            "3s",
        ])
        .expect("valid flags");
        let config = config(&cli.cron).expect("a configuration");
        assert_eq!(config.masters, vec!["10.0.0.1:5050", "10.0.0.2:5050"]);
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.name, "nightly");
        assert_eq!(config.role, "*");
        assert_eq!(config.leader_lease, Duration::from_secs(3));
        assert_eq!(config.failover_timeout, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.history_count, 1000);
    }

    #[test]
    fn the_defaults_serve_on_port_9000() {
        let cli = Cli::try_parse_from(["cron"]).expect("parses");
        let config = config(&cli.cron).expect("a configuration");
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.name, "cron");
        assert_eq!(config.leader_lease, Duration::from_secs(10));
    }

    #[test]
    fn empty_names_are_refused() {
        let cli = Cli::try_parse_from(["cron", "--name", " "]).expect("parses");
        assert!(config(&cli.cron).is_err());
        let cli = Cli::try_parse_from(["cron", "--leader-lease", "0s"]).expect("parses");
        assert!(config(&cli.cron).is_err());
        let cli = Cli::try_parse_from(["cron", "--history-count", "0"]).expect("parses");
        assert!(config(&cli.cron).is_err());
    }
}
