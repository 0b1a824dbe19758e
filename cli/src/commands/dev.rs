//! `agora dev`: a whole cluster in one process — one master and N agents — with its
//! data under one directory, for trying Agora on a laptop.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use agora_agent::Agent;
use agora_master::{Master, MasterConfig};
use anyhow::Context;
use clap::Args;

use super::master::TimingArgs;

#[derive(Args)]
pub struct DevArgs {
    /// IP to serve everything on.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Master port (gRPC and HTTP).
    #[arg(long, default_value_t = 5050)]
    pub port: u16,
    /// Number of agents.
    #[arg(long, default_value_t = 2)]
    pub agents: u16,
    /// Port of the first agent; the others follow. 0 lets the OS choose each.
    #[arg(long, default_value_t = 5051)]
    pub agent_port: u16,
    /// Resources of each agent (default: detected).
    #[arg(long)]
    pub agent_resources: Option<String>,
    /// Where the master's registry and the agents' work dirs go.
    #[arg(long, default_value = "./.agora-dev")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub timings: TimingArgs,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let logger = crate::logging::logger(&args.log_level);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let master_addr = SocketAddr::new(args.ip, args.port);
    let listener = tokio::net::TcpListener::bind(master_addr)
        .await
        .with_context(|| format!("cannot listen on {master_addr} for the master (is another agora running? use --port)"))?;
    let mut config = MasterConfig::new(args.data_dir.join("master"), logger.clone());
    config.timings = args.timings.core_timings()?;
    let mut master = Master::start(config, listener).await?;
    // The address actually bound (the port may have been 0).
    let master_addr = master.local_addr();

    let executor_command = super::agent::executor_command()?;
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
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for agent {} (use --agent-port)",
                i + 1
            )
        })?;
        let mut config = agora_agent::AgentConfig::new(
            vec![master_addr.to_string()],
            args.data_dir.join(format!("agent-{}", i + 1)),
            executor_command.clone(),
            logger.new(slog::o!("agent" => i + 1)),
        );
        config.advertise_ip = args.ip.to_string();
        config.resources = args.agent_resources.clone();
        config.attributes = format!("agent:{}", i + 1);
        agents.push(Agent::start(config, listener).await?);
    }

    let data_dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
    println!();
    println!("Agora is running: 1 master, {} agents.", args.agents);
    println!("  web UI        http://{master_addr}/");
    println!("  state (JSON)  curl http://{master_addr}/api/v1/state");
    println!("  metrics       curl http://{master_addr}/metrics");
    println!("  from a shell  agora state --master {master_addr}");
    println!(
        "  try a job     cargo run --release -p agora-hello -- --master {master_addr} --tasks 20 --cmd 'echo hello; sleep 1'"
    );
    println!("  data          {}", data_dir.display());
    println!("Ctrl-C stops the master and the agents.");
    println!();

    tokio::select! {
        result = master.wait() => result?,
        _ = super::stop_requested() => {}
    }
    for agent in agents {
        agent.shutdown().await;
    }
    master.shutdown().await;
    Ok(())
}
