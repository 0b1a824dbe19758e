//! The few facts the agent reads from Linux' /proc: a process' session and start time.

use std::path::Path;

/// When `pid` started (clock ticks since boot), if it is alive.
pub fn start_time(pid: u32) -> Option<u64> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces
    // or parentheses, so fields are counted from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // After ')': state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every live process whose session is `session`.
///
/// Asks getsid(2) about each pid listed in /proc rather than reading each
/// `/proc/<pid>/stat`: one cheap syscall per process instead of an open, a
/// formatted read and a close, which matters because every container that ends is
/// swept this way while the agent launches others.
pub fn session_members(session: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            // SAFETY: getsid only reads the session of `pid`; a gone pid yields -1.
            let sid = unsafe { libc::getsid(pid) };
            (sid == session).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        // SAFETY: getsid has no preconditions.
        let sid = unsafe { libc::getsid(0) };
        assert!(session_members(sid).contains(&(me as i32)));
    }
}
