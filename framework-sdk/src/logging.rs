//! A ready-made terminal logger, so a framework needs no logging setup of its own.

use std::sync::Mutex;

use slog::Drain;

/// A logger writing human-readable lines to stderr: `info` and above, or `debug` and
/// above when `verbose`.
pub fn stderr_logger(verbose: bool) -> slog::Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build();
    let level = if verbose {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    // A mutex keeps the drain synchronous: a framework's log volume is small, and
    // nothing is lost when the process exits right after logging.
    let drain = slog::LevelFilter::new(Mutex::new(drain), level).fuse();
    slog::Logger::root(drain, slog::o!())
}

/// A logger that drops everything (tests, embedding).
pub fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
