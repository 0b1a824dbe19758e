//! What the benchmark binaries (`ha-bench`, `scale-bench`, `container-bench`) share:
//! they run masters and agents as the same binary started again (`agora` is linked
//! in, so no other binary needs to have been built), lift the open-file limit for a
//! thousand connections, read `--flag value` command lines, and turn their outcome
//! into an exit code.

use std::future::Future;
use std::process::ExitCode;

/// Runs a benchmark binary: as `agora` when `run_as_agora` is set in the environment
/// (how the benchmark starts its masters), else parses the flags and runs the
/// benchmark on a multi-threaded runtime. Bad flags exit with 2, a failure with 1.
pub fn main<O, F>(
    name: &str,
    run_as_agora: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<O, String>,
    run: impl FnOnce(O) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), String>>,
{
    if std::env::var_os(run_as_agora).is_some() {
        return agora::main();
    }
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name} failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The next `--flag value` pair of a benchmark's command line; `None` at its end.
/// `--help`/`-h`, and a flag without a value, are errors that show `usage`.
pub fn next_flag(
    args: &mut impl Iterator<Item = String>,
    usage: &str,
) -> Result<Option<(String, String)>, String> {
    let Some(flag) = args.next() else {
        return Ok(None);
    };
    if flag == "--help" || flag == "-h" {
        return Err(usage.into());
    }
    let value = args
        .next()
        .ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
    Ok(Some((flag, value)))
}

/// A thousand agents hold a thousand connections, here and on the masters: lift the
/// soft limit on open files to the hard one (children inherit it).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
