//! `agora executor` (hidden): the built-in command executor, started by agents with
//! its instructions in the environment.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    let logger =
        crate::logging::logger(&std::env::var("AGORA_LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(agora_agent::command_executor::run_from_env(logger));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
