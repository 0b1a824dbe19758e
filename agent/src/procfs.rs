//! The few facts the agent reads from Linux' /proc: a process' session and start time.

use std::path::Path;

/// When `pid` started (clock ticks since boot), if it is alive. A zombie is not: an
/// executor orphaned by a dead agent may wait unreaped (where pid 1 does not reap),
/// and it will never re-subscribe.
pub fn start_time(pid: u32) -> Option<u64> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces
    // or parentheses, so fields are counted from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
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
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        // Unreaped until `wait`: poll its state until it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while start_time(pid).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::yield_now();
        }
        assert!(
            Path::new("/proc").join(pid.to_string()).exists(),
            "still a zombie, yet not alive"
        );
        let mut child = child;
        let _ = child.wait();
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        // SAFETY: getsid has no preconditions.
        let sid = unsafe { libc::getsid(0) };
        assert!(session_members(sid).contains(&(me as i32)));
    }
}
