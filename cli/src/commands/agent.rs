//! `agora agent`: run an agent, or put one under maintenance with the `drain` and
//! `reactivate` subcommands (`agent_drain.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_agent::{Agent, AgentConfig, RecoverMode};
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
    /// Directory holding the `agora-executor` binary (`cargo build --release -p
    /// agora-agent`), which costs less memory per executor than the default: this
    /// binary run as `agora executor`.
    #[arg(long)]
    pub launcher_dir: Option<PathBuf>,
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
    /// How long executors still running have to re-subscribe after the agent
    /// restarted before their tasks are failed (Mesos: 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub executor_reregistration_timeout: Duration,
    /// SIGTERM→SIGKILL grace when a task names none.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// What to do with executors a previous agent process on this work dir left
    /// running: 'reconnect' reattaches to them; 'cleanup' shuts them down (their
    /// tasks end KILLED), e.g. before an incompatible upgrade.
    #[arg(long, default_value = "reconnect", value_parser = parse_recover_mode)]
    pub recover: RecoverMode,
    /// Containerizers, comma-separated: 'process', 'oci'. The first runs tasks that
    /// name no image; with 'oci', tasks may name an image and run as containers.
    #[arg(long, default_value = "process", value_delimiter = ',')]
    pub containerizers: Vec<String>,
    /// The OCI runtime binary (runc, crun, youki): a path, or a name looked up on PATH.
    #[arg(long, default_value = "runc")]
    pub oci_runtime: PathBuf,
    /// The image store tasks' images are resolved from (`agora image import`).
    #[arg(long, default_value = agora_agent::config::DEFAULT_IMAGE_STORE)]
    pub image_store: PathBuf,
    /// Host directories task volumes may be taken from, comma-separated (default:
    /// none, so host volumes are refused; the sandbox is always allowed).
    #[arg(long, value_delimiter = ',')]
    pub allowed_volume_paths: Vec<PathBuf>,
    /// Most processes (and threads) a container may have.
    #[arg(long, default_value_t = agora_agent::command_executor::env::DEFAULT_PIDS_LIMIT)]
    pub container_pids_limit: u64,
    /// Largest a task's stdout or stderr file grows before it is rotated: bytes, or
    /// with a unit (10MB = 10 MiB; B, KB, MB, GB).
    #[arg(long, default_value = "10MB", value_parser = parse_bytes)]
    pub container_log_max_size: u64,
    /// Rotated stdout/stderr files kept per task (stdout.1 .. stdout.N).
    #[arg(long, default_value_t = agora_agent::sandbox::rotation::DEFAULT_MAX_FILES)]
    pub container_log_max_files: u32,
    /// How long the sandbox of a finished executor is kept on an empty disk; less as
    /// the disk fills (see --gc-disk-headroom).
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub gc_delay: Duration,
    /// How often the work dir's disk is measured and old sandboxes removed.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub disk_watch_interval: Duration,
    /// Fraction of the disk to keep free: sandboxes older than
    /// gc-delay * max(0, 1 - headroom - disk usage) are removed.
    #[arg(long, default_value_t = 0.1)]
    pub gc_disk_headroom: f64,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Parses `1048576`, `512KB`, `10MB`, `1GB` (units of 1024, as Mesos' byte flags).
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    let input = input.trim();
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{input}' is not a size (try 10MB, 512KB or a number of bytes)"))?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        other => {
            return Err(format!(
                "'{input}': unknown unit '{other}' (use B, KB, MB or GB)"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("'{input}' is too large"))
}

fn parse_recover_mode(text: &str) -> Result<RecoverMode, String> {
    text.parse()
}

/// The built-in executor's own binary: a fraction of this one's size, so each of the
/// agent's executors costs less memory (about 4 MiB RSS against 7.5).
pub const EXECUTOR_BINARY: &str = "agora-executor";

/// The command that starts the built-in executor: `agora-executor` from
/// `launcher_dir` (Mesos' `--launcher_dir`), else this same binary as
/// `agora executor`.
pub fn executor_command(
    launcher_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    if let Some(dir) = launcher_dir {
        let executor = dir.join(EXECUTOR_BINARY);
        anyhow::ensure!(
            executor.is_file(),
            "--launcher-dir {}: there is no {EXECUTOR_BINARY} in it",
            dir.display()
        );
        return Ok(vec![executor.into_os_string()]);
    }
    // Never picked up implicitly from next to this binary: a stale one left by an
    // older build would run tasks with older code than the agent's.
    let exe = std::env::current_exe().context("cannot find this binary to start executors with")?;
    Ok(vec![exe.into_os_string(), "executor".into()])
}

/// Builds an agent's configuration from its flags.
pub fn config(args: &AgentArgs, logger: slog::Logger) -> anyhow::Result<AgentConfig> {
    let mut config = AgentConfig::new(
        args.master.clone(),
        args.work_dir.clone(),
        executor_command(args.launcher_dir.as_deref())?,
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
    config.executor_reregistration_timeout = args.executor_reregistration_timeout;
    config.default_kill_grace = args.kill_grace;
    config.container_log = agora_agent::sandbox::RotationPolicy::new(
        args.container_log_max_size,
        args.container_log_max_files,
    )
    .map_err(|e| anyhow::anyhow!("--container-log-max-size/--container-log-max-files: {e}"))?;
    config.gc = agora_agent::gc::GcSettings {
        policy: agora_agent::gc::GcPolicy {
            delay: args.gc_delay,
            disk_headroom: args.gc_disk_headroom,
        },
        interval: args.disk_watch_interval,
    };
    config
        .gc
        .validate()
        .map_err(|e| anyhow::anyhow!("--gc-disk-headroom/--disk-watch-interval: {e}"))?;
    config.containerizers = args.containerizers.clone();
    config.oci_runtime = args.oci_runtime.clone();
    config.image_store = args.image_store.clone();
    config.allowed_volume_paths = args.allowed_volume_paths.clone();
    config.container_pids_limit = args.container_pids_limit;
    config
        .apply_containerizers()
        .context("cannot set up the containerizers")?;
    config.recover = args.recover;
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

#[cfg(test)]
mod tests {
    use super::{EXECUTOR_BINARY, executor_command, parse_bytes};

    #[test]
    fn the_launcher_dir_names_the_executor_binary() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let error = executor_command(Some(dir.path())).expect_err("no binary there yet");
        assert!(error.to_string().contains(EXECUTOR_BINARY), "{error}");
        std::fs::write(dir.path().join(EXECUTOR_BINARY), b"").expect("write");
        let command = executor_command(Some(dir.path())).expect("found");
        assert_eq!(
            command,
            vec![dir.path().join(EXECUTOR_BINARY).into_os_string()]
        );
        let fallback = executor_command(None).expect("this binary");
        assert_eq!(fallback.len(), 2);
        assert_eq!(fallback[1], "executor");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1KB"), Ok(1024));
        assert_eq!(parse_bytes("10MB"), Ok(10 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("5PB").is_err());
        assert!(parse_bytes("99999999999999GB").is_err());
    }
}
