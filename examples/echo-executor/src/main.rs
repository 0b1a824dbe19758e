//! `agora-echo-executor [--master HOST:PORT] [--tasks N] [--cmd CMD]` runs the
//! scheduler; `agora-echo-executor executor` is what the agent starts (see the
//! library's documentation).

use std::process::ExitCode;

use agora_echo_executor::EchoOptions;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the executor (the agent starts this; it reads the agent's environment).
    Executor {
        /// Log debug details to stderr (the sandbox's `stderr` file).
        #[arg(long, short)]
        verbose: bool,
    },
}

/// Launches tasks on the echo executor and waits for them.
#[derive(Args)]
struct SchedulerArgs {
    /// Master address (host:port); several, comma-separated, to find the leader among.
    #[arg(
        long = "master",
        value_delimiter = ',',
        default_value = "127.0.0.1:5050"
    )]
    masters: Vec<String>,
    /// Number of tasks, all on one executor.
    #[arg(long, default_value_t = 3)]
    tasks: usize,
    /// Shell command each task runs.
    #[arg(long, default_value = "echo hello from $AGORA_TASK_ID; sleep 1")]
    cmd: String,
    /// Message sent to the executor, which echoes it back.
    #[arg(long, default_value = "hello, executor")]
    message: String,
    /// Cpus per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, in MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Log the driver's connection details.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Executor { verbose }) = cli.command {
        let code = runtime.block_on(agora_echo_executor::run_executor(agora_sdk::stderr_logger(
            verbose,
        )));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let args = cli.scheduler;
    let executor_command = match std::env::current_exe() {
        Ok(exe) => vec![exe.to_string_lossy().into_owned(), "executor".to_string()],
        Err(e) => {
            eprintln!("cannot find this binary to start the executor with: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = EchoOptions {
        masters: args.masters,
        tasks: args.tasks,
        cmd: args.cmd,
        executor_command,
        message: args.message,
        cpus: args.cpus,
        mem: args.mem,
    };
    match runtime.block_on(agora_echo_executor::run_scheduler(
        opts,
        agora_sdk::stderr_logger(args.verbose),
    )) {
        Ok(report) => {
            println!("all {} tasks finished", report.finished);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
