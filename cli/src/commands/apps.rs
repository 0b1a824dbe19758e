//! `agora apps`: run an apps instance — long-running services on the cluster, driven
//! through Marathon's REST API (`/v2/apps`, `/v2/deployments`, ...).
//!
//! Several instances with the same `--name` against the same masters form an HA
//! group: one leads, the others answer with the leader's address and take over when
//! its lease lapses. The state lives in the masters' state store, so an instance
//! restarted (or killed and started again) continues where the last one stopped.

use std::net::SocketAddr;
use std::time::Duration;

use agora_apps::{AppsConfig, AppsServer};
use anyhow::Context;
use clap::Args;

use super::parse_duration;

/// The line an apps instance prints once its API answers, followed by its address;
/// scripts and tests read it to find an instance started on port 0.
pub const LISTENING: &str = "apps listening on";

#[derive(Args)]
pub struct AppsArgs {
    /// Master address(es), comma-separated host:port.
    #[arg(
        long,
        env = "AGORA_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    pub master: Vec<String>,
    /// Address to serve the REST API on; port 0 lets the OS choose.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How clients reach this instance, `host` or `host:port` (a host alone takes
    /// the listening port): where standbys send clients, and what the masters show.
    /// Default: the listening address, or this machine's hostname when listening on
    /// every interface (0.0.0.0 or [::]).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Framework name: also the name of its state in the masters' store and of its
    /// leader lease, so instances of one HA group share it.
    #[arg(long, default_value = "apps")]
    pub name: String,
    /// The role the framework subscribes with.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// How long the masters keep the apps' tasks running while no apps instance is
    /// connected.
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// How long a leader's lease lasts without renewal; a standby (or a restarted
    /// instance) takes over after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_lease: Duration,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The configuration `args` describe.
pub fn config(args: &AppsArgs) -> anyhow::Result<AppsConfig> {
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
    let mut config = AppsConfig::new(masters, args.listen);
    config.advertise = super::advertise(args.advertise.as_deref(), args.listen);
    config.name = args.name.clone();
    config.role = args.role.clone();
    config.failover_timeout = args.failover_timeout;
    config.leader_lease = args.leader_lease;
    Ok(config)
}

pub async fn run(args: AppsArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    let config = config(&args)?;
    let masters = config.masters.join(",");
    let server = AppsServer::start(config, logger)
        .await
        .context("the apps instance did not start")?;
    let address = server.local_addr();
    println!("{LISTENING} {address}  (Marathon API: http://{address}/v2/apps; masters {masters})");
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
        apps: AppsArgs,
    }

    #[test]
    fn flags_become_the_configuration() {
        let cli = Cli::try_parse_from([
            "apps",
            "--master",
            "10.0.0.1:5050, 10.0.0.2:5050",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "web-apps",
            "--leader-lease",
            "3s",
        ])
        .expect("valid flags");
        let config = config(&cli.apps).expect("a configuration");
        assert_eq!(config.masters, vec!["10.0.0.1:5050", "10.0.0.2:5050"]);
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.name, "web-apps");
        assert_eq!(config.role, "*");
        assert_eq!(config.leader_lease, Duration::from_secs(3));
        assert_eq!(config.failover_timeout, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn empty_names_are_refused() {
        let cli = Cli::try_parse_from(["apps", "--name", " "]).expect("parses");
        assert!(config(&cli.apps).is_err());
        let cli = Cli::try_parse_from(["apps", "--leader-lease", "0s"]).expect("parses");
        assert!(config(&cli.apps).is_err());
    }
}
