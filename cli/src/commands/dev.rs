//! `agora dev`: a whole cluster in one process — one master (or a group of 3 or 5),
//! N agents, an apps instance (Marathon's REST API, on `--apps-port`) and a cron
//! instance (Metronome's REST API, on `--cron-port`) — with its data under one
//! directory, for trying Agora on a laptop.
//!
//! With `--masters 3` the masters serve on `--port`, `--port`+10, `--port`+20 (or
//! each on a port the OS picks, with `--port 0`) and keep their raft data in
//! `<data-dir>/master-<id>`; a lone master keeps `<data-dir>/master`, as before
//! groups. A group records its members' addresses in its log, so the group's layout
//! is written to `<data-dir>/master-group` and a later run must match it (with
//! `--port 0` it reuses the recorded ports): masters started at other addresses would
//! never reach each other, and a group grown by new empty data dirs would bootstrap
//! a second, conflicting group.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_agent::Agent;
use agora_master::{Master, MasterConfig, MasterError, MasterHandle};
use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::master::{Peers, RaftTimingArgs, TimingArgs, parse_peers};

/// Ports between consecutive masters: room for a master's neighbours (the first
/// agent's default port is the first master's + 1).
const MASTER_PORT_STEP: u16 = 10;
/// The group's layout, under the data dir: one line, `1=host:port,2=host:port,...`.
const GROUP_FILE: &str = "master-group";
/// How long the banner waits to name the first leader: an election takes about a
/// second with the default raft timings.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct DevArgs {
    /// IP to serve everything on.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port of the first master (gRPC and HTTP); the others follow 10 apart
    /// (5050, 5060, 5070). 0 lets the OS choose each.
    #[arg(long, default_value_t = 5050)]
    pub port: u16,
    /// Number of masters, replicating with raft: 1, 3 or 5.
    #[arg(long, default_value_t = 1, value_parser = parse_master_count)]
    pub masters: u8,
    /// Number of agents.
    #[arg(long, default_value_t = 2)]
    pub agents: u16,
    /// Port of the first agent; the others follow. 0 lets the OS choose each.
    #[arg(long, default_value_t = 5051)]
    pub agent_port: u16,
    /// Resources of each agent (default: detected).
    #[arg(long)]
    pub agent_resources: Option<String>,
    /// Port of the apps instance (Marathon's REST API: /v2/apps, ...). 0 lets the
    /// OS choose.
    #[arg(long, default_value_t = 8080)]
    pub apps_port: u16,
    /// Run no apps instance.
    #[arg(long)]
    pub no_apps: bool,
    /// Port of the cron instance (Metronome's REST API: /v1/jobs, ...). 0 lets the
    /// OS choose.
    #[arg(long, default_value_t = 9000)]
    pub cron_port: u16,
    /// Run no cron instance.
    #[arg(long)]
    pub no_cron: bool,
    /// Where the masters' raft data and the agents' work dirs go.
    #[arg(long, default_value = "./.agora-dev")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub timings: TimingArgs,
    #[command(flatten)]
    pub raft: RaftTimingArgs,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// `--masters`: an odd group size; an even one tolerates no more failures than one
/// fewer masters, and more than 5 only slows every write down.
fn parse_master_count(input: &str) -> Result<u8, String> {
    match input.trim().parse::<u8>() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err(format!(
            "{input:?}: run 1, 3 or 5 masters (an even number tolerates no more failures than one fewer)"
        )),
    }
}

/// One master to start: its raft id, the listener it serves on, where its data goes.
struct PlannedMaster {
    id: u64,
    listener: TcpListener,
    data_dir: PathBuf,
}

/// The masters' listeners and the group they form (empty for a lone master, which
/// is a group of one at whatever address it bound).
async fn bind_masters(args: &DevArgs) -> anyhow::Result<(Vec<PlannedMaster>, Peers)> {
    if args.masters == 1 {
        let addr = SocketAddr::new(args.ip, args.port);
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for the master (is another agora running? use --port)")
        })?;
        let master = PlannedMaster {
            id: 1,
            listener,
            data_dir: args.data_dir.join("master"),
        };
        return Ok((vec![master], Peers(BTreeMap::new())));
    }
    let count = u64::from(args.masters);
    let group_file = args.data_dir.join(GROUP_FILE);
    let recorded = read_group_file(&group_file)?;
    let ports: Vec<u16> = match &recorded {
        Some(recorded) => recorded_ports(recorded, args, &group_file)?,
        None => {
            if let Some(stale) = (1..=5u64)
                .map(|id| args.data_dir.join(format!("master-{id}")))
                .find(|dir| dir.exists())
            {
                anyhow::bail!(
                    "{} exists but {} does not: the group's layout is unknown; use a fresh --data-dir",
                    stale.display(),
                    group_file.display()
                );
            }
            planned_ports(args.port, args.masters)?
        }
    };
    let advertise_ip = reachable(args.ip);
    let mut masters = Vec::new();
    let mut peers = BTreeMap::new();
    for (id, port) in (1..=count).zip(ports) {
        let addr = SocketAddr::new(args.ip, port);
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for master {id} (is another agora running? use --port)"
            )
        })?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("cannot tell which port master {id} bound"))?;
        peers.insert(id, SocketAddr::new(advertise_ip, bound.port()).to_string());
        masters.push(PlannedMaster {
            id,
            listener,
            data_dir: args.data_dir.join(format!("master-{id}")),
        });
    }
    let peers = Peers(peers);
    if let Some(recorded) = &recorded {
        anyhow::ensure!(
            recorded == &peers,
            "{} holds a group of masters at {}, not at {}; run with the --ip it was \
             created with, or use a fresh --data-dir",
            args.data_dir.display(),
            recorded.flag(),
            peers.flag()
        );
    }
    if recorded.is_none() {
        std::fs::write(&group_file, format!("{}\n", peers.flag()))
            .with_context(|| format!("cannot write {}", group_file.display()))?;
    }
    Ok((masters, peers))
}

/// The ports of a fresh group: `first`, `first`+10, ... or all 0 (the OS picks).
fn planned_ports(first: u16, masters: u8) -> anyhow::Result<Vec<u16>> {
    (0..u16::from(masters))
        .map(|i| {
            if first == 0 {
                return Ok(0);
            }
            i.checked_mul(MASTER_PORT_STEP)
                .and_then(|offset| first.checked_add(offset))
                .with_context(|| format!("master ports from {first} run past 65535 (use --port)"))
        })
        .collect()
}

/// The ports of the group recorded in `group_file`, if it matches this run's flags.
fn recorded_ports(recorded: &Peers, args: &DevArgs, group_file: &Path) -> anyhow::Result<Vec<u16>> {
    let count = u64::from(args.masters);
    let describe = || {
        format!(
            "{} holds a group of {} masters ({})",
            args.data_dir.display(),
            recorded.0.len(),
            recorded.flag()
        )
    };
    anyhow::ensure!(
        recorded.0.keys().copied().eq(1..=count),
        "{}; run with --masters {}, or use a fresh --data-dir",
        describe(),
        recorded.0.len()
    );
    let mut ports = Vec::new();
    for address in recorded.0.values() {
        let addr: SocketAddr = address
            .parse()
            .with_context(|| format!("{}: {address} is not ip:port", group_file.display()))?;
        ports.push(addr.port());
    }
    if args.port != 0 {
        let planned = planned_ports(args.port, args.masters)?;
        anyhow::ensure!(
            planned == ports,
            "{}; run with --port {} (or --port 0 to reuse its ports), or use a fresh --data-dir",
            describe(),
            ports.first().copied().unwrap_or_default()
        );
    }
    Ok(ports)
}

fn read_group_file(path: &Path) -> anyhow::Result<Option<Peers>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_peers(text.trim()).map(Some).map_err(|e| {
            anyhow::anyhow!("{} is damaged: {e}; use a fresh --data-dir", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The address others use for a listener on `ip`: a wildcard listener is reached
/// over loopback in a one-machine cluster.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Starts every planned master; on a failure, stops the ones already started.
async fn start_masters(
    args: &DevArgs,
    planned: Vec<PlannedMaster>,
    peers: &Peers,
    logger: &slog::Logger,
) -> anyhow::Result<Vec<(u64, MasterHandle)>> {
    let core_timings = args.timings.core_timings()?;
    let raft_timings = args.raft.raft_timings()?;
    let mut started = Vec::new();
    for PlannedMaster {
        id,
        listener,
        data_dir,
    } in planned
    {
        let master_logger = if peers.0.is_empty() {
            logger.clone()
        } else {
            logger.new(slog::o!("master" => id))
        };
        let mut config = MasterConfig::new(data_dir, master_logger);
        config.timings = core_timings.clone();
        config.raft_timings = raft_timings.clone();
        config.raft_id = id;
        config.peers = peers.0.clone();
        config.advertise_address = peers.0.get(&id).cloned();
        match Master::start(config, listener).await {
            Ok(master) => started.push((id, master)),
            Err(e) => {
                for (_, master) in started {
                    master.shutdown().await;
                }
                return Err(e).with_context(|| format!("master {id} did not start"));
            }
        }
    }
    Ok(started)
}

/// The address of every master, in id order.
fn addresses(masters: &[(u64, MasterHandle)], peers: &Peers) -> Vec<String> {
    masters
        .iter()
        .map(|(id, master)| {
            peers
                .0
                .get(id)
                .cloned()
                .unwrap_or_else(|| master.local_addr().to_string())
        })
        .collect()
}

/// Waits (briefly) for the group's first leader, to name it in the banner.
async fn first_leader(masters: &[(u64, MasterHandle)]) -> Option<(u64, String)> {
    let (_, master) = masters.first()?;
    let mut leadership = master.replica().leadership();
    let elected = tokio::time::timeout(
        ELECTION_WAIT,
        leadership.wait_for(|l| l.leader_id != 0 || l.stopped.is_some()),
    )
    .await
    .ok()?
    .ok()?
    .clone();
    (elected.leader_id != 0).then(|| {
        (
            elected.leader_id,
            elected.leader_address.unwrap_or_default(),
        )
    })
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let (planned, peers) = bind_masters(&args).await?;
    let started_at = Instant::now();
    let masters = start_masters(&args, planned, &peers, &logger).await?;
    let master_addrs = addresses(&masters, &peers);
    let master_list = master_addrs.join(",");
    // Agents started before a group has a leader only log refusals until it has one.
    let leader = if peers.0.is_empty() {
        None
    } else {
        first_leader(&masters)
            .await
            .map(|(id, address)| (id, address, started_at.elapsed()))
    };

    let executor_command = super::agent::executor_command(None)?;
    let data_dir_images = std::path::absolute(args.data_dir.join("images"))
        .context("cannot resolve the image store directory")?;
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let port = if args.agent_port == 0 {
            0
        } else {
            args.agent_port
                .checked_add(i)
                .context("agent ports run past 65535")?
        };
        let addr = SocketAddr::new(args.ip, port);
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for agent {} (use --agent-port)",
                i + 1
            )
        })?;
        let mut config = agora_agent::AgentConfig::new(
            master_addrs.clone(),
            args.data_dir.join(format!("agent-{}", i + 1)),
            executor_command.clone(),
            logger.new(slog::o!("agent" => i + 1)),
        );
        config.advertise_ip = args.ip.to_string();
        config.resources = args.agent_resources.clone();
        // One image store for every agent, so one import serves them all; the oci
        // containerizer where a runtime is installed and containers can be made (root).
        config.image_store = data_dir_images.clone();
        if agora_agent::oci::runtime::running_as_root()
            && agora_agent::oci::runtime::resolve_binary(&config.oci_runtime).is_ok()
        {
            config.containerizers = vec!["process".into(), "oci".into()];
        }
        config
            .apply_containerizers()
            .context("cannot set up the containerizers")?;
        config.attributes = format!("agent:{}", i + 1);
        agents.push(Agent::start(config, listener).await?);
    }
    let apps = start_apps(&args, &master_addrs, &logger).await?;
    let apps_url = apps
        .as_ref()
        .map(|apps| format!("http://{}", reachable_addr(apps.local_addr())));
    let cron = match start_cron(&args, &master_addrs, &logger).await {
        Ok(cron) => cron,
        Err(e) => {
            if let Some(apps) = apps {
                apps.shutdown().await;
            }
            return Err(e);
        }
    };
    let cron_url = cron
        .as_ref()
        .map(|cron| format!("http://{}", reachable_addr(cron.local_addr())));
    let frameworks = Frameworks {
        apps: apps_url.as_deref(),
        cron: cron_url.as_deref(),
    };

    let data_dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
    if peers.0.is_empty() {
        print_banner(&args, &master_list, &frameworks, &data_dir);
    } else {
        print_group_banner(&args, &peers, &master_list, leader, &frameworks, &data_dir);
    }

    let outcome = run_until_stopped(masters, &logger).await;
    // The frameworks first: stopped after the agents, they would see their tasks lost.
    if let Some(cron) = cron {
        cron.shutdown().await;
    }
    if let Some(apps) = apps {
        apps.shutdown().await;
    }
    for agent in agents {
        agent.shutdown().await;
    }
    outcome.finish().await
}

/// Starts the apps instance against the masters, unless `--no-apps`.
async fn start_apps(
    args: &DevArgs,
    masters: &[String],
    logger: &slog::Logger,
) -> anyhow::Result<Option<agora_apps::AppsServer>> {
    if args.no_apps {
        return Ok(None);
    }
    let listen = SocketAddr::new(args.ip, args.apps_port);
    let config = agora_apps::AppsConfig::new(masters.to_vec(), listen);
    let apps = agora_apps::AppsServer::start(config, logger.new(slog::o!("apps" => 1)))
        .await
        .with_context(|| {
            format!("the apps instance did not start on {listen} (use --apps-port, or --no-apps)")
        })?;
    Ok(Some(apps))
}

/// Starts the cron instance against the masters, unless `--no-cron`.
async fn start_cron(
    args: &DevArgs,
    masters: &[String],
    logger: &slog::Logger,
) -> anyhow::Result<Option<agora_cron::CronServer>> {
    if args.no_cron {
        return Ok(None);
    }
    let listen = SocketAddr::new(args.ip, args.cron_port);
    let config = agora_cron::CronConfig::new(masters.to_vec(), listen);
    let cron = agora_cron::CronServer::start(config, logger.new(slog::o!("cron" => 1)))
        .await
        .with_context(|| {
            format!("the cron instance did not start on {listen} (use --cron-port, or --no-cron)")
        })?;
    Ok(Some(cron))
}

/// `addr` as others reach it: a wildcard listener over loopback.
fn reachable_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(reachable(addr.ip()), addr.port())
}

/// The base URLs of the frameworks `agora dev` runs beside the cluster.
struct Frameworks<'a> {
    apps: Option<&'a str>,
    cron: Option<&'a str>,
}

/// The banner's lines about the apps and cron instances.
fn print_framework_lines(frameworks: &Frameworks) {
    if let Some(apps) = frameworks.apps {
        println!("  apps API      {apps}/v2/apps  (Marathon's REST API)");
        println!(
            "  an app        agora app deploy app.json --apps {apps}   (then: agora app list)"
        );
    }
    if let Some(cron) = frameworks.cron {
        println!("  cron API      {cron}/v1/jobs  (Metronome's REST API)");
        println!(
            "  a job         agora job add job.json --cron {cron}   (then: agora job run <id>, agora job list)"
        );
    }
}

/// What Ctrl-C stops besides the masters and agents.
fn framework_names(frameworks: &Frameworks) -> &'static str {
    match (frameworks.apps.is_some(), frameworks.cron.is_some()) {
        (true, true) => ", the agents and the apps and cron instances",
        (true, false) => ", the agents and the apps instance",
        (false, true) => ", the agents and the cron instance",
        (false, false) => " and the agents",
    }
}

/// How the masters' run ended, and the masters still to stop.
struct Outcome {
    /// Why the cluster stopped by itself (every master stopped); `None` after Ctrl-C.
    failure: Option<anyhow::Error>,
    /// Flipped to true to make every still running master shut down.
    stop: watch::Sender<bool>,
    /// One task per master: it ends when its master stopped by itself or shut down.
    running: JoinSet<(u64, Option<Result<(), MasterError>>)>,
}

impl Outcome {
    /// Stops every master still running and returns the failure, if any.
    async fn finish(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        while self.running.join_next().await.is_some() {}
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs until Ctrl-C, or until every master has stopped by itself. A master of a
/// group that stops by itself (removed with `agora master remove`, say) leaves the
/// others running: that is how a failover is tried in one process.
async fn run_until_stopped(masters: Vec<(u64, MasterHandle)>, logger: &slog::Logger) -> Outcome {
    let lone = masters.len() == 1;
    let (stop, stop_rx) = watch::channel(false);
    let mut running = JoinSet::new();
    for (id, mut master) in masters {
        let mut stop_rx = stop_rx.clone();
        running.spawn(async move {
            tokio::select! {
                // A master that stopped by itself has stopped its tasks already;
                // `shutdown` is only for a running one.
                result = master.wait() => (id, Some(result)),
                // (The guard `wait_for` returns is dropped at once: it is not Send.)
                _ = async { stop_rx.wait_for(|stop| *stop).await.is_ok() } => {
                    master.shutdown().await;
                    (id, None)
                }
            }
        });
    }
    let stop_requested = super::stop_requested();
    tokio::pin!(stop_requested);
    let failure = loop {
        tokio::select! {
            _ = &mut stop_requested => break None,
            joined = running.join_next() => match joined {
                None => break Some(anyhow::anyhow!("every master stopped (see the log)")),
                Some(Ok((id, Some(result)))) => {
                    let reason = match result {
                        Ok(()) => "its server ended".to_string(),
                        Err(e) => e.to_string(),
                    };
                    if lone {
                        break Some(anyhow::anyhow!("the master stopped: {reason}"));
                    }
                    slog::warn!(logger, "master stopped; the others carry on"; "id" => id, "reason" => reason);
                }
                Some(Ok((_, None))) => {}
                Some(Err(e)) => {
                    slog::error!(logger, "a master's task failed"; "error" => %e);
                }
            },
        }
    };
    Outcome {
        failure,
        stop,
        running,
    }
}

fn print_banner(args: &DevArgs, master: &str, frameworks: &Frameworks, data_dir: &Path) {
    println!();
    println!("Agora is running: 1 master, {} agents.", args.agents);
    println!("  web UI        http://{master}/");
    println!("  state (JSON)  curl http://{master}/api/v1/state");
    println!("  metrics       curl http://{master}/metrics");
    println!("  from a shell  agora state --master {master}");
    println!(
        "  try a job     cargo run --release -p agora-hello -- --master {master} --tasks 20 --cmd 'echo hello; sleep 1'"
    );
    print_framework_lines(frameworks);
    println!("  data          {}", data_dir.display());
    println!("  a group       agora dev --masters 3 runs three replicating masters");
    println!("Ctrl-C stops the master{}.", framework_names(frameworks));
    println!();
}

fn print_group_banner(
    args: &DevArgs,
    peers: &Peers,
    masters: &str,
    leader: Option<(u64, String, Duration)>,
    frameworks: &Frameworks,
    data_dir: &Path,
) {
    let first = peers.0.values().next().cloned().unwrap_or_default();
    println!();
    println!(
        "Agora is running: {} masters, {} agents.",
        peers.0.len(),
        args.agents
    );
    for (id, address) in &peers.0 {
        println!("  master {id}      {address}  (health: curl http://{address}/health)");
    }
    let ui = match &leader {
        Some((id, address, elected_in)) => {
            println!(
                "  leader        master {id} at {address} (elected within {:.1} s)",
                elected_in.as_secs_f64()
            );
            address.clone()
        }
        None => {
            println!(
                "  leader        none yet: see `agora master group --master {masters}` in a moment"
            );
            first
        }
    };
    println!("  web UI        http://{ui}/");
    println!("  state (JSON)  curl http://{ui}/api/v1/state");
    println!("  metrics       curl http://{ui}/metrics");
    println!("  from a shell  agora state --master {masters}");
    println!("  the group     agora master group --master {masters}");
    println!(
        "  try a job     cargo run --release -p agora-hello -- --master {masters} --tasks 20 --cmd 'echo hello; sleep 1'"
    );
    let leader_id = leader
        .as_ref()
        .map(|(id, _, _)| id.to_string())
        .unwrap_or_else(|| "<leader id>".into());
    println!("  a failover    Ctrl-C stops all the masters at once. To see a new leader elected,");
    println!(
        "                remove the leader from the group (it stops; agents and frameworks follow):"
    );
    println!("                  agora master remove --id {leader_id} --master {masters}");
    println!("                To kill -9 a master, run each in its own process instead:");
    println!(
        "                  agora master --id 1 --peers {} --data-dir ./master-1   (and --id 2, 3, ...)",
        peers.flag()
    );
    print_framework_lines(frameworks);
    println!("  data          {}", data_dir.display());
    println!("Ctrl-C stops the masters{}.", framework_names(frameworks));
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_come_in_odd_numbers() {
        assert_eq!(parse_master_count("1"), Ok(1));
        assert_eq!(parse_master_count("3"), Ok(3));
        assert_eq!(parse_master_count("5"), Ok(5));
        for bad in ["0", "2", "4", "7", "x", "-1"] {
            assert!(parse_master_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn master_ports_step_by_ten() {
        assert_eq!(planned_ports(5050, 3).unwrap(), vec![5050, 5060, 5070]);
        assert_eq!(planned_ports(0, 3).unwrap(), vec![0, 0, 0]);
        assert!(planned_ports(65530, 3).is_err());
    }

    #[test]
    fn wildcard_listeners_are_reached_over_loopback() {
        assert_eq!(
            reachable("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(reachable(ip), ip);
    }
}
