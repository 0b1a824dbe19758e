//! Starting an executor as the leader of a new session with posix_spawn(3), and
//! waiting for it with a pidfd.
//!
//! `std::process::Command` needs a `pre_exec` hook to call setsid(2), and any hook
//! makes it fork(2) the whole agent: every page table is copied, and every page the
//! agent writes afterwards takes a copy-on-write fault, which in a busy agent (or
//! `agora dev`, where the master and every agent share one process) costs more than
//! the executor's own start. glibc's posix_spawn uses `CLONE_VM | CLONE_VFORK`
//! instead and can start a session itself (`POSIX_SPAWN_SETSID`), so nothing is
//! copied. The child is reaped here (waitpid on its pid once its pidfd turns
//! readable), never by tokio, which only reaps children it spawned itself.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Termination;

/// How often a child is polled when the kernel has no pidfds (before Linux 5.3).
pub(crate) const EXIT_POLL: Duration = Duration::from_millis(50);

/// What to start, with everything already resolved by the caller.
pub(super) struct SpawnRequest<'a> {
    /// Looked up in the agent's `PATH` when it has no `/`.
    pub program: &'a OsStr,
    /// `argv`, `argv[0]` included.
    pub argv: &'a [OsString],
    /// Set on top of the agent's own environment (later entries win).
    pub env: &'a [(OsString, OsString)],
    /// The child's working directory.
    pub cwd: &'a Path,
    /// Become the child's stdout and stderr; its stdin is /dev/null.
    pub stdout: &'a File,
    pub stderr: &'a File,
}

/// Starts `request` as the leader of a new session; returns its pid. Blocks only for
/// the spawn itself (the child has exec'd, or failed to, when this returns).
pub(super) fn spawn_session_leader(request: &SpawnRequest<'_>) -> io::Result<u32> {
    let program = c_string(request.program)?;
    let argv = request
        .argv
        .iter()
        .map(|a| c_string(a))
        .collect::<io::Result<Vec<_>>>()?;
    let env = merged_env(request.env)?;
    let cwd = c_string(request.cwd.as_os_str())?;
    // The sources of dup2 must not be 0, 1 or 2 themselves: an fd dup2'd onto
    // itself would keep its close-on-exec flag on some libcs.
    let stdout = dup_above_stdio(request.stdout)?;
    let stderr = dup_above_stdio(request.stderr)?;
    let argv_ptrs = null_terminated(&argv);
    let env_ptrs = null_terminated(&env);

    let mut actions = FileActions::new()?;
    actions.add_open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.add_dup2(stdout.as_raw_fd(), 1)?;
    actions.add_dup2(stderr.as_raw_fd(), 2)?;
    actions.add_chdir(&cwd)?;
    let attributes = SpawnAttributes::new_session()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the strings and the
    // null-terminated arrays are owned by this frame, and the actions and attributes
    // are initialised and destroyed only by their wrappers.
    let rc = unsafe {
        libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attributes.0,
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    u32::try_from(pid).map_err(|_| io::Error::other(format!("posix_spawn returned pid {pid}")))
}

/// Waits for our child `pid` to end and reaps it.
pub(super) async fn wait_for_child(pid: u32) -> Termination {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return unwaitable(io::Error::other("pid out of range"));
    };
    // A pidfd turns readable once the process has ended; then it is a zombie and
    // waitpid returns at once. (Our unreaped child cannot be ESRCH.)
    if let Ok(Some(pidfd)) = pidfd_open(pid) {
        let _ = pidfd.readable().await;
    }
    loop {
        match try_wait(pid) {
            Ok(Some(status)) => {
                return Termination::from_exit_status(std::process::ExitStatus::from_raw(status));
            }
            Ok(None) => tokio::time::sleep(EXIT_POLL).await,
            Err(e) => return unwaitable(e),
        }
    }
}

fn unwaitable(e: io::Error) -> Termination {
    Termination {
        message: format!("could not wait for the executor: {e}"),
        ..Termination::default()
    }
}

/// waitpid(pid, WNOHANG): the raw status once the child has ended.
pub(crate) fn try_wait(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a local integer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match rc {
            0 => return Ok(None),
            rc if rc == pid => return Ok(Some(status)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A pidfd for `pid` registered with tokio: `Ok(None)` where the kernel has no
/// pidfds (or registration fails), `Err` with ESRCH when `pid` is gone.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<Option<AsyncFd<OwnedFd>>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Err(e)
        } else {
            Ok(None)
        };
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: `owned` is a valid open fd that the AsyncFd takes ownership of, so it
    // stays open and unchanged for the AsyncFd's whole life.
    Ok(unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok())
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", text.to_string_lossy()),
        )
    })
}

/// The agent's environment with `overrides` applied, as `NAME=value` strings.
fn merged_env(overrides: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    let mut vars: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (name, value) in overrides {
        vars.insert(name.clone(), value.clone());
    }
    vars.into_iter()
        .map(|(name, value)| {
            let mut entry = name;
            entry.push("=");
            entry.push(value);
            c_string(&entry)
        })
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// A close-on-exec duplicate of `file` numbered 3 or above.
fn dup_above_stdio(file: &File) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only duplicates an fd this frame borrows.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Maps posix_spawn's error-number returns to `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: an all-zero value is a valid argument for init, which overwrites it.
        let mut actions: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `actions` is a valid, writable posix_spawn_file_actions_t.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions) })?;
        Ok(Self(actions))
    }

    fn add_open(&mut self, fd: i32, path: &std::ffi::CStr, flags: i32) -> io::Result<()> {
        // SAFETY: initialised actions; glibc copies the path.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn add_dup2(&mut self, from: i32, to: i32) -> io::Result<()> {
        // SAFETY: initialised actions.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn add_chdir(&mut self, dir: &std::ffi::CStr) -> io::Result<()> {
        // SAFETY: initialised actions; glibc (2.29+) copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and destroyed only here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t` for a new session with default signal handling, destroyed
/// on drop.
struct SpawnAttributes(libc::posix_spawnattr_t);

impl SpawnAttributes {
    /// A new session; no signal blocked; SIGPIPE back to its default (Rust ignores
    /// it in the agent, and an ignored disposition survives exec), as std does.
    fn new_session() -> io::Result<Self> {
        // SAFETY: an all-zero value is a valid argument for init, which overwrites it.
        let mut attributes: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attributes` is a valid, writable posix_spawnattr_t.
        check(unsafe { libc::posix_spawnattr_init(&mut attributes) })?;
        let mut this = Self(attributes);
        // SAFETY: sigset_t values are plain data initialised by sigemptyset.
        let (mut empty, mut default) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: valid, writable sigsets and initialised attributes.
        unsafe {
            libc::sigemptyset(&mut empty);
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut this.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut this.0, &default))?;
        }
        // The flag constants are small (at most 0x80) and fit the c_short field.
        let flags = libc::c_int::from(libc::POSIX_SPAWN_SETSID)
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        // SAFETY: initialised attributes.
        check(unsafe { libc::posix_spawnattr_setflags(&mut this.0, flags as libc::c_short) })?;
        Ok(this)
    }
}

impl Drop for SpawnAttributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new_session` and destroyed only here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-spawn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn run(dir: &Path, program: &str, script: &str) -> io::Result<u32> {
        let out = File::create(dir.join("out")).unwrap();
        let err = File::create(dir.join("err")).unwrap();
        let argv: Vec<OsString> = vec![program.into(), "-c".into(), script.into()];
        spawn_session_leader(&SpawnRequest {
            program: OsStr::new(program),
            argv: &argv,
            env: &[("AGORA_SPAWN_TEST".into(), "yes".into())],
            cwd: dir,
            stdout: &out,
            stderr: &err,
        })
    }

    #[tokio::test]
    async fn the_child_gets_a_clean_start_and_is_reaped() {
        let dir = temp_dir();
        // The test harness ignores SIGPIPE, as every Rust program does; an ignored
        // signal would survive exec.
        let script = "echo $AGORA_SPAWN_TEST; pwd; readlink /proc/$$/fd/0; \
                      grep SigIgn /proc/$$/status; echo oops >&2; exit 3";
        let pid = run(&dir, "sh", script).unwrap();
        let termination = wait_for_child(pid).await;
        assert_eq!(termination.exit_code, Some(3));
        let out = std::fs::read_to_string(dir.join("out")).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "yes");
        assert_eq!(Path::new(lines[1]), dir.canonicalize().unwrap());
        assert_eq!(lines[2], "/dev/null");
        let ignored =
            u64::from_str_radix(lines[3].trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is not ignored"
        );
        assert_eq!(std::fs::read_to_string(dir.join("err")).unwrap(), "oops\n");
        // Reaped: it is no longer our child.
        assert!(try_wait(pid as libc::pid_t).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let dir = temp_dir();
        let e = run(&dir, "/nonexistent/agora-executor", "").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
