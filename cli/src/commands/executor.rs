//! `agora executor` (hidden): the built-in command executor, started by agents with
//! its instructions in the environment.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    // Before anything is logged: the executor's own output joins its tasks' in the
    // sandbox's rotated stdout/stderr.
    if let Err(e) = agora_agent::sandbox::capture_executor_output_from_env() {
        eprintln!("agora executor: {e}; its own output is not rotated");
    }
    let logger =
        crate::logging::logger(&std::env::var("AGORA_LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    // One thread is plenty for one task, and starts faster.
    let Some(runtime) = crate::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let code = runtime.block_on(agora_agent::command_executor::run_from_env(logger));
    drop(runtime);
    agora_agent::sandbox::finish_executor_output();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
