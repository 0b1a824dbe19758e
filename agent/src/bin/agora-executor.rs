//! `agora-executor`: Agora's built-in command executor (its `mesos-executor`). The
//! agent starts one per command task; it is not meant to be run by hand.

use slog::Drain;

fn main() {
    // Before anything is logged: the executor's own output joins its tasks' in the
    // sandbox's rotated stdout/stderr.
    if let Err(e) = agora_agent::sandbox::capture_executor_output_from_env() {
        eprintln!("agora-executor: {e}; its own output is not rotated");
    }
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let logger = slog::Logger::root(
        drain,
        slog::o!("executor" => std::env::var("AGORA_EXECUTOR_ID").unwrap_or_default()),
    );
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(agora_agent::command_executor::run_from_env(logger)),
        Err(e) => {
            eprintln!("agora-executor: cannot start a tokio runtime: {e}");
            1
        }
    };
    agora_agent::sandbox::finish_executor_output();
    std::process::exit(code);
}
