//! The few facts the agent reads from Linux' /proc: a process' session and start time.

use std::path::Path;

/// Fields of /proc/<pid>/stat after the command name.
struct Stat {
    session: i32,
    /// Clock ticks since boot at which the process started.
    start_time: u64,
}

fn read_stat(proc_dir: &Path) -> Option<Stat> {
    let text = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces
    // or parentheses, so fields are counted from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    Some(Stat {
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// When `pid` started (clock ticks since boot), if it is alive.
pub fn start_time(pid: u32) -> Option<u64> {
    read_stat(&Path::new("/proc").join(pid.to_string())).map(|s| s.start_time)
}

/// Every live process whose session is `session`.
pub fn session_members(session: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = read_stat(&e.path())?;
            (stat.session == session).then_some(pid)
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
