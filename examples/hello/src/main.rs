//! `agora-hello --master 127.0.0.1:5050 --tasks 20 --cmd 'echo hello; sleep 1'`
//!
//! Exits 0 once every task has FINISHED, and 1 (saying which task and why) otherwise.

use std::process::ExitCode;

use agora_hello::HelloOptions;
use clap::Parser;

/// Launches N shell tasks on an Agora cluster and waits for all of them to finish.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Master address (host:port); several, comma-separated, to find the leader among.
    #[arg(
        long = "master",
        visible_alias = "masters",
        value_delimiter = ',',
        default_value = "127.0.0.1:5050"
    )]
    masters: Vec<String>,
    /// Number of tasks to run.
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// Shell command each task runs.
    #[arg(long, default_value = "echo hello; sleep 1")]
    cmd: String,
    /// Cpus per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, in MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Runs every task in this image from the agents' image store (`agora image
    /// import`); needs agents with the oci containerizer.
    #[arg(long)]
    image: Option<String>,
    /// Seconds a declined offer is not offered again.
    #[arg(long, default_value_t = 1.0)]
    refuse_seconds: f64,
    /// Log the driver's connection details.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let opts = HelloOptions {
        masters: args.masters,
        tasks: args.tasks,
        cmd: args.cmd,
        cpus: args.cpus,
        mem: args.mem,
        refuse_seconds: args.refuse_seconds,
        image: args.image,
    };
    match agora_hello::run(opts, agora_sdk::stderr_logger(args.verbose)).await {
        Ok(report) => {
            let ms = |p| {
                report
                    .percentile(p)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            println!(
                "all {} tasks finished; accept→RUNNING latency p50 {:.1} ms, p99 {:.1} ms ({} samples)",
                report.finished,
                ms(50.0),
                ms(99.0),
                report.accept_to_running.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hello failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
