//! The echo executor of `examples/echo-executor`, built with the tests so that they
//! can start it by path: what `agora-echo-executor executor` runs.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let verbose = std::env::var_os("AGORA_TEST_LOG").is_some();
    let code = runtime.block_on(agora_echo_executor::run_executor(agora_sdk::stderr_logger(
        verbose,
    )));
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
