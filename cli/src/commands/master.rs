//! `agora master`: run a master (alone, or as one of a raft group of masters), or
//! manage the group with the `add`, `remove` and `group` subcommands
//! (`master_group.rs`).
//!
//! A group is named by `--peers 1=host:port,2=host:port,3=host:port` and each master
//! by its `--id` in it. The flags are checked before anything starts: a typo in a peer
//! list would otherwise show up as a group that never elects a leader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_master::replication::RaftTimings;
use agora_master::{CoreTimings, Master, MasterConfig};
use anyhow::Context;
use clap::{Args, Subcommand};

use super::master_group::{AddArgs, GroupArgs, RemoveArgs};
use super::parse_duration;

/// Where a master listens when neither `--listen` nor `--peers` says.
const DEFAULT_LISTEN: &str = "127.0.0.1:5050";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    /// Without a subcommand, `agora master` runs a master.
    #[command(subcommand)]
    pub command: Option<MasterCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Membership of the master group, asked of the running masters.
#[derive(Subcommand)]
pub enum MasterCommand {
    /// Add a master to the group (the leader proposes it); then start it with --join.
    Add(AddArgs),
    /// Remove a master from the group (the leader proposes it); it stops by itself.
    Remove(RemoveArgs),
    /// Show the group: its members, their roles, and who leads.
    Group(GroupArgs),
}

/// The flags of a running master.
#[derive(Args)]
pub struct RunArgs {
    /// Address to serve gRPC and HTTP on [default: this master's address in --peers,
    /// else 127.0.0.1:5050].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the raft log, snapshots and hard state.
    #[arg(long, default_value = "./agora-master")]
    pub data_dir: PathBuf,
    /// Hostname reported to frameworks and agents.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Address others should use to reach this master [default: its address in
    /// --peers, else the listen address].
    #[arg(long)]
    pub advertise: Option<String>,
    /// This master's raft id in the group (not 0).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// Every master of the group, this one included: 1=host:port,2=host:port,...
    /// [default: a group of one, this master].
    #[arg(long, value_parser = parse_peers)]
    pub peers: Option<Peers>,
    /// Join an existing group (after `agora master add`) instead of forming one; the
    /// data dir must be new. --peers then names the group's masters to contact.
    #[arg(long)]
    pub join: bool,
    #[command(flatten)]
    pub timings: TimingArgs,
    #[command(flatten)]
    pub raft: RaftTimingArgs,
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

/// The raft flags; the defaults are [`RaftTimings::default`]'s (a test holds them
/// equal). Every master of a group should use the same values.
#[derive(Args, Clone)]
pub struct RaftTimingArgs {
    /// How often raft ticks.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub raft_tick: Duration,
    /// Ticks without hearing a leader before a master stands for election (raft
    /// randomises it between 1x and 2x): with the defaults, 0.5-1 s.
    #[arg(long, default_value_t = 10)]
    pub raft_election_ticks: usize,
    /// Ticks between the leader's heartbeats; fewer than --raft-election-ticks.
    #[arg(long, default_value_t = 2)]
    pub raft_heartbeat_ticks: usize,
    /// Snapshot the replicated state (and compact the log) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub raft_snapshot_every: u64,
}

/// Bounds that keep a typo from producing a group that can never elect (an election
/// timeout of hours) or that snapshots on every entry by accident of a zero.
const MAX_RAFT_TICK: Duration = Duration::from_secs(10);
const MAX_RAFT_ELECTION_TICKS: usize = 10_000;

impl RaftTimingArgs {
    pub fn raft_timings(&self) -> anyhow::Result<RaftTimings> {
        anyhow::ensure!(
            self.raft_tick >= Duration::from_millis(1) && self.raft_tick <= MAX_RAFT_TICK,
            "--raft-tick must be between 1ms and {}s",
            MAX_RAFT_TICK.as_secs()
        );
        anyhow::ensure!(
            self.raft_heartbeat_ticks >= 1,
            "--raft-heartbeat-ticks must be at least 1"
        );
        anyhow::ensure!(
            self.raft_election_ticks > self.raft_heartbeat_ticks,
            "--raft-election-ticks ({}) must be more than --raft-heartbeat-ticks ({}): \
             followers would stand for election between two heartbeats",
            self.raft_election_ticks,
            self.raft_heartbeat_ticks
        );
        anyhow::ensure!(
            self.raft_election_ticks <= MAX_RAFT_ELECTION_TICKS,
            "--raft-election-ticks must be at most {MAX_RAFT_ELECTION_TICKS}"
        );
        anyhow::ensure!(
            self.raft_snapshot_every >= 1,
            "--raft-snapshot-every must be at least 1"
        );
        Ok(RaftTimings {
            tick: self.raft_tick,
            election_ticks: self.raft_election_ticks,
            heartbeat_ticks: self.raft_heartbeat_ticks,
            snapshot_every: self.raft_snapshot_every,
            ..RaftTimings::default()
        })
    }
}

/// The masters of a group by raft id: ids are not 0, addresses are `host:port` and
/// no two members share an id or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

impl Peers {
    /// `1=host:port,2=host:port`, as `--peers` takes it.
    pub fn flag(&self) -> String {
        self.0
            .iter()
            .map(|(id, address)| format!("{id}={address}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parses `--peers 1=127.0.0.1:5050,2=127.0.0.1:5060,3=127.0.0.1:5070`.
pub fn parse_peers(input: &str) -> Result<Peers, String> {
    let mut peers: BTreeMap<u64, String> = BTreeMap::new();
    for entry in input.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!(
                "{input:?} has an empty entry (expected id=host:port[,id=host:port...])"
            ));
        }
        let (id, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{entry:?}: the id {:?} is not a number", id.trim()))?;
        if id == 0 {
            return Err(format!("{entry:?}: raft ids start at 1"));
        }
        let address = address.trim();
        check_address(address).map_err(|why| format!("{entry:?}: {why}"))?;
        if let Some((other, _)) = peers.iter().find(|(_, a)| a.as_str() == address) {
            return Err(format!(
                "{address} is named twice (masters {other} and {id}); each master needs its own address"
            ));
        }
        if peers.insert(id, address.to_string()).is_some() {
            return Err(format!("master id {id} appears twice"));
        }
    }
    Ok(Peers(peers))
}

/// Checks that `address` is `host:port` as the masters accept it: at most 255 bytes,
/// a host, a port that is not 0, IPv6 hosts in brackets.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() || address.len() > 255 {
        return Err(format!("{address:?} is not host:port (1 to 255 bytes)"));
    }
    if address
        .chars()
        .any(|c| c.is_whitespace() || c == ',' || c == '=' || c == '/')
    {
        return Err(format!("{address:?} is not host:port"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} has no port (expected host:port)"));
    };
    if host.is_empty() {
        return Err(format!("{address:?} has no host (expected host:port)"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{address:?}: write an IPv6 host in brackets, e.g. [::1]:5050"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!(
            "{address:?}: port 0 is no address others can reach"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{address:?}: {port:?} is not a port (1-65535)")),
    }
}

/// Where and as what a master runs, worked out from its flags.
#[derive(Debug, PartialEq)]
pub struct Placement {
    /// What to bind: an IP:port, or a host:port from --peers resolved at bind time.
    pub listen: String,
    /// The address in the group's records and the frameworks' and agents' view;
    /// `None` lets the master use the address it bound.
    pub advertise: Option<String>,
    /// The group, this master included unless it joins; empty for a group of one.
    pub peers: BTreeMap<u64, String>,
}

/// Checks the group flags against each other: the own id among the peers (unless
/// joining), --advertise agreeing with the peers' record, and an address others can
/// reach whenever there are others.
pub fn placement(args: &RunArgs) -> anyhow::Result<Placement> {
    let peers = args.peers.clone().map(|p| p.0).unwrap_or_default();
    let own = peers.get(&args.id).cloned();
    if !args.join && !peers.is_empty() && own.is_none() {
        anyhow::bail!(
            "--id {} is not among --peers (ids {}); add it, or pass --join to join an existing group",
            args.id,
            peers
                .keys()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(advertise) = &args.advertise {
        check_address(advertise).map_err(|why| anyhow::anyhow!("--advertise: {why}"))?;
    }
    let advertise = match (&args.advertise, &own) {
        (Some(advertise), Some(own)) if advertise != own => anyhow::bail!(
            "--advertise {advertise} differs from master {}'s address in --peers ({own}); \
             the group reaches each master at its --peers address",
            args.id
        ),
        (Some(advertise), _) => Some(advertise.clone()),
        (None, own) => own.clone(),
    };
    let listen = match (args.listen, &own) {
        (Some(listen), _) => listen.to_string(),
        (None, Some(own)) => own.clone(),
        (None, None) => DEFAULT_LISTEN.to_string(),
    };
    let grouped = !peers.is_empty() || args.join;
    if grouped
        && advertise.is_none()
        && let Ok(listen) = listen.parse::<SocketAddr>()
        && (listen.ip().is_unspecified() || listen.port() == 0)
    {
        anyhow::bail!(
            "--listen {listen} is no address the other masters can reach; add --advertise host:port"
        );
    }
    Ok(Placement {
        listen,
        advertise,
        peers,
    })
}

pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    match args.command {
        Some(MasterCommand::Add(add)) => super::master_group::add(add).await,
        Some(MasterCommand::Remove(remove)) => super::master_group::remove(remove).await,
        Some(MasterCommand::Group(group)) => super::master_group::group(group).await,
        None => serve(args.run).await,
    }
}

/// Runs one master until it is asked to stop, or stops by itself (its disk failed, or
/// it was removed from the group).
async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let placement = placement(&args)?;
    let core_timings = args.timings.core_timings()?;
    let raft_timings = args.raft.raft_timings()?;
    let logger = crate::logging::logger(&args.log_level);
    if placement.peers.len() > 1 && placement.peers.len() % 2 == 0 {
        slog::warn!(logger, "an even number of masters tolerates no more failures than one fewer";
            "masters" => placement.peers.len());
    }
    let listener = tokio::net::TcpListener::bind(placement.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", placement.listen))?;
    let mut config = MasterConfig::new(args.data_dir, logger);
    config.hostname = args.hostname;
    config.advertise_address = placement.advertise;
    config.timings = core_timings;
    config.raft_id = args.id;
    config.peers = placement.peers;
    config.join = args.join;
    config.raft_timings = raft_timings;
    let mut master = Master::start(config, listener).await?;
    tokio::select! {
        // A master that stopped by itself has stopped its tasks; `shutdown` is only
        // for one still running.
        result = master.wait() => result?,
        _ = super::stop_requested() => master.shutdown().await,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Just `agora master`, to parse its flags as the binary does.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        master: MasterArgs,
    }

    fn parse(args: &[&str]) -> Result<MasterArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("master").chain(args.iter().copied()))
            .map(|cli| cli.master)
    }

    fn peers(list: &[(u64, &str)]) -> BTreeMap<u64, String> {
        list.iter().map(|(id, a)| (*id, a.to_string())).collect()
    }

    #[test]
    fn peer_lists_are_parsed_strictly() {
        assert_eq!(
            parse_peers("1=127.0.0.1:5050, 2=127.0.0.1:5060,3=host-c:5070"),
            Ok(Peers(peers(&[
                (1, "127.0.0.1:5050"),
                (2, "127.0.0.1:5060"),
                (3, "host-c:5070")
            ])))
        );
        assert_eq!(
            parse_peers("1=[::1]:5050").map(|p| p.flag()),
            Ok("1=[::1]:5050".to_string())
        );
        for (bad, says) in [
            ("", "empty entry"),
            ("1=a:1,,2=b:2", "empty entry"),
            ("127.0.0.1:5050", "not id=host:port"),
            ("x=a:1", "not a number"),
            ("0=a:1", "start at 1"),
            ("-1=a:1", "not a number"),
            ("1=a:1,1=b:2", "appears twice"),
            ("1=a:1,2=a:1", "named twice"),
            ("1=a", "no port"),
            ("1=:5050", "no host"),
            ("1=a:0", "port 0"),
            ("1=a:70000", "not a port"),
            ("1=a:http", "not a port"),
            ("1=::1:5050", "brackets"),
            ("1=a b:1", "not host:port"),
        ] {
            match parse_peers(bad) {
                Ok(p) => panic!("{bad:?} parsed as {p:?}"),
                Err(e) => assert!(e.contains(says), "{bad:?}: {e}"),
            }
        }
    }

    #[test]
    fn the_own_id_must_be_a_peer_unless_joining() {
        let args = parse(&["--id", "4", "--peers", "1=a:1,2=b:2,3=c:3"]).unwrap();
        let e = placement(&args.run).unwrap_err().to_string();
        assert!(
            e.contains("--id 4 is not among --peers (ids 1, 2, 3)"),
            "{e}"
        );

        let args = parse(&[
            "--id",
            "4",
            "--join",
            "--peers",
            "1=a:1",
            "--advertise",
            "d:4",
        ])
        .unwrap();
        let placement = placement(&args.run).unwrap();
        assert_eq!(placement.advertise.as_deref(), Some("d:4"));
        assert_eq!(placement.peers, peers(&[(1, "a:1")]));
    }

    #[test]
    fn a_peer_listens_and_advertises_at_its_peers_address() {
        let args = parse(&["--id", "2", "--peers", "1=127.0.0.1:5050,2=127.0.0.1:5060"]).unwrap();
        let placement = placement(&args.run).unwrap();
        assert_eq!(placement.listen, "127.0.0.1:5060");
        assert_eq!(placement.advertise.as_deref(), Some("127.0.0.1:5060"));

        let args = parse(&[
            "--id",
            "2",
            "--peers",
            "1=a:1,2=b:2",
            "--listen",
            "0.0.0.0:2",
        ])
        .unwrap();
        let placed = super::placement(&args.run).unwrap();
        assert_eq!(placed.listen, "0.0.0.0:2");
        assert_eq!(placed.advertise.as_deref(), Some("b:2"));

        let args = parse(&["--id", "2", "--peers", "1=a:1,2=b:2", "--advertise", "c:3"]).unwrap();
        let e = super::placement(&args.run).unwrap_err().to_string();
        assert!(e.contains("differs from master 2's address"), "{e}");
    }

    #[test]
    fn a_lone_master_keeps_its_old_defaults() {
        let args = parse(&[]).unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.run.id, 1);
        let placement = placement(&args.run).unwrap();
        assert_eq!(
            placement,
            Placement {
                listen: "127.0.0.1:5050".into(),
                advertise: None,
                peers: BTreeMap::new(),
            }
        );
        // Alone, an unspecified listen address stays allowed, as before groups.
        let args = parse(&["--listen", "0.0.0.0:5050"]).unwrap();
        assert!(super::placement(&args.run).is_ok());
        let args = parse(&["--listen", "0.0.0.0:5050", "--join"]).unwrap();
        assert!(super::placement(&args.run).is_err());
    }

    #[test]
    fn subcommands_and_run_flags_do_not_mix() {
        assert!(matches!(
            parse(&["add", "--id", "4", "--address", "a:4"])
                .unwrap()
                .command,
            Some(MasterCommand::Add(_))
        ));
        assert!(matches!(
            parse(&["group", "--master", "a:1,b:2"]).unwrap().command,
            Some(MasterCommand::Group(_))
        ));
        assert!(parse(&["--listen", "127.0.0.1:5050", "group"]).is_err());
        assert!(parse(&["--id", "0"]).is_err());
        assert!(parse(&["--peers", "1=a:1,1=b:2"]).is_err());
    }

    #[test]
    fn raft_flags_default_to_the_masters_defaults() {
        let args = parse(&[]).unwrap();
        let flags = args.run.raft.raft_timings().unwrap();
        let defaults = RaftTimings::default();
        assert_eq!(flags.tick, defaults.tick);
        assert_eq!(flags.election_ticks, defaults.election_ticks);
        assert_eq!(flags.heartbeat_ticks, defaults.heartbeat_ticks);
        assert_eq!(flags.snapshot_every, defaults.snapshot_every);
        assert_eq!(flags.request_timeout, defaults.request_timeout);

        let args = parse(&["--raft-election-ticks", "3", "--raft-heartbeat-ticks", "3"]).unwrap();
        assert!(args.run.raft.raft_timings().is_err());
        let args = parse(&["--raft-tick", "0ms"]).unwrap();
        assert!(args.run.raft.raft_timings().is_err());
        let args = parse(&["--raft-snapshot-every", "0"]).unwrap();
        assert!(args.run.raft.raft_timings().is_err());
        let args = parse(&["--raft-tick", "10ms", "--raft-election-ticks", "20"]).unwrap();
        let timings = args.run.raft.raft_timings().unwrap();
        assert_eq!(timings.tick, Duration::from_millis(10));
        assert_eq!(timings.election_ticks, 20);
    }
}
