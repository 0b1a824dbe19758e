//! The process logger: human-readable lines on stderr, written off the hot path.

use slog::{Drain, Logger, o};

/// A logger at `level` ("error", "warn", "info", "debug").
pub fn logger(level: &str) -> Logger {
    let level = match level {
        "error" => slog::Level::Error,
        "warn" => slog::Level::Warning,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        _ => slog::Level::Info,
    };
    let decorator = slog_term::TermDecorator::new().stderr().build();
    // A closed stderr must not take the process down: write errors are ignored.
    let drain = slog_term::CompactFormat::new(decorator)
        .build()
        .ignore_res();
    let drain = slog_async::Async::new(drain)
        .chan_size(4096)
        .build()
        .ignore_res();
    Logger::root(drain.filter_level(level).fuse(), o!())
}
