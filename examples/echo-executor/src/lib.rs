//! `agora-echo-executor`: the SDK's custom-executor example, an executor and the
//! scheduler that uses it in one binary.
//!
//! - `agora-echo-executor executor` is the executor, started by an agent for the
//!   tasks that name it (see [`EchoExecutor`]): it runs each task's `data` as a
//!   shell command, reports TASK_RUNNING / TASK_FINISHED / TASK_FAILED, and answers
//!   framework messages with `echo: <message>`.
//! - `agora-echo-executor --master HOST:PORT --tasks 3 --cmd 'echo hi; sleep 2'` is
//!   the scheduler (see [`run_scheduler`]): it launches the tasks with an
//!   `ExecutorInfo` of type CUSTOM whose command is this same binary's `executor`
//!   subcommand, so all of them go to one executor on one agent; it sends the
//!   executor a message, prints the answer and every status update, and tears the
//!   framework down once all tasks finished.
//!
//! Try it against `agora dev` (the agents run on this machine, so they can start
//! this binary by its path):
//!
//! ```text
//! cargo run --release -p agora -- dev &
//! cargo build --release -p agora-echo-executor
//! target/release/agora-echo-executor --master 127.0.0.1:5050 --tasks 3 --cmd 'echo hello; sleep 2'
//! ```
//!
//! # Layout
//! - `executor.rs`: [`EchoExecutor`], an [`agora_sdk::executor::Executor`].
//! - `scheduler.rs`: [`EchoOptions`], [`run_scheduler`].
//! - `main.rs`: flags; `executor` runs [`run_executor`].

mod executor;
mod scheduler;

pub use executor::EchoExecutor;
pub use scheduler::{EXECUTOR_ID, EchoOptions, EchoReport, executor_info, run_scheduler};

use agora_sdk::executor::ExecutorDriver;

/// Runs the echo executor from the environment its agent set; the process' exit
/// code: 0 once stopped with every update delivered, 1 otherwise.
pub async fn run_executor(logger: agora_sdk::slog::Logger) -> i32 {
    let driver = match ExecutorDriver::from_env(logger.clone()) {
        Ok(driver) => driver,
        Err(e) => {
            agora_sdk::slog::error!(logger, "cannot start the echo executor"; "error" => %e);
            return 2;
        }
    };
    let mut executor = EchoExecutor::default();
    match driver.run(&mut executor).await {
        Ok(()) => 0,
        Err(e) => {
            agora_sdk::slog::error!(logger, "the echo executor stopped"; "error" => %e);
            1
        }
    }
}
