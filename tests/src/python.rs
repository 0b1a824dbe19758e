//! Marathon's Python client (PyPI `marathon`) and Metronome's (PyPI
//! `dcos-metronome`), each in a virtualenv, and the scenario scripts in
//! `tests/python/` that drive an apps or cron instance with them, the way their
//! users' tools do.
//!
//! A virtualenv is made once and kept under the target dir
//! (`target/python-venv-marathon`, `target/python-venv-metronome`); test processes
//! that need it at the same time
//! take turns on a lock file, and a half-made one (a process killed while pip ran)
//! is made again. Without `python3` or its `venv` module, or when pip cannot install
//! the client, a test is skipped — and fails under CI (see [`crate::requirements`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::requirements::required;

/// The client the scripts are written against.
pub const MARATHON_CLIENT: &str = "marathon==0.13.0";
/// The virtualenv's directory under the target dir.
const VENV_DIR: &str = "python-venv-marathon";
/// The Metronome client the `metronome_*` scripts are written against, and the
/// protobuf it needs: newer protobufs refuse its generated code.
pub const METRONOME_CLIENT: [&str; 2] = ["dcos-metronome==0.3.0", "protobuf==3.20.3"];
/// Its virtualenv's directory under the target dir.
const METRONOME_VENV_DIR: &str = "python-venv-metronome";
/// Written into the virtualenv last, naming what was installed: a virtualenv without
/// it was left half-made.
const READY_MARKER: &str = ".agora-ready";
/// The longest one scenario script may run; each of its waits has its own, shorter
/// deadline, so this only stops a script that hangs.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// The virtualenv's python with the Marathon client installed, or `None` after
/// printing why the calling test is skipped; expands in the calling test crate, where
/// Cargo names its target dir.
#[macro_export]
macro_rules! marathon_python {
    () => {
        $crate::python::require_marathon_client(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))
    };
}

/// The virtualenv's python, made under the parent of `target_tmp` (Cargo's
/// `CARGO_TARGET_TMPDIR`, `target/tmp`) if need be; `None` when the calling test is
/// skipped (see [`required`]). Blocks while another process makes it.
pub fn require_marathon_client(target_tmp: &Path) -> Option<PathBuf> {
    let target_dir = target_tmp.parent().unwrap_or(target_tmp);
    required(client_venv(target_dir, VENV_DIR, &[MARATHON_CLIENT]))
}

/// The virtualenv's python with the Metronome client installed, or `None` after
/// printing why the calling test is skipped; see [`marathon_python!`].
#[macro_export]
macro_rules! metronome_python {
    () => {
        $crate::python::require_metronome_client(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))
    };
}

/// [`require_marathon_client`] for the Metronome client.
pub fn require_metronome_client(target_tmp: &Path) -> Option<PathBuf> {
    let target_dir = target_tmp.parent().unwrap_or(target_tmp);
    required(client_venv(
        target_dir,
        METRONOME_VENV_DIR,
        &METRONOME_CLIENT,
    ))
}

/// The python of the virtualenv `dir` under `target_dir` with `packages` installed,
/// made if need be.
fn client_venv(target_dir: &Path, dir: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let venv = target_dir.join(dir);
    let python = venv.join("bin").join("python");
    let installed = packages.join(" ");
    let ready =
        || std::fs::read_to_string(venv.join(READY_MARKER)).is_ok_and(|m| m.trim() == installed);
    if ready() {
        return Ok(python);
    }
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map_err(|_| "python3 not installed".to_string())?;
    std::fs::create_dir_all(target_dir)
        .map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;
    let lock_path = target_dir.join(format!("{dir}.lock"));
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; the lock is released when
    // `lock` is closed, also when the process dies.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    if ready() {
        return Ok(python);
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove the half-made {}: {e}", venv.display()))?;
    }
    run(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
        "python3 -m venv (install python3-venv)",
    )?;
    run(
        std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        &format!("pip install {installed}"),
    )?;
    let mut marker = File::create(venv.join(READY_MARKER))
        .map_err(|e| format!("cannot write {}: {e}", venv.display()))?;
    writeln!(marker, "{installed}").map_err(|e| format!("cannot write the marker: {e}"))?;
    drop(lock);
    Ok(python)
}

fn run(command: &mut std::process::Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{what} cannot run: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

/// The path of a scenario script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs the scenario script `name` with `args` under `python`; `Err` holds its
/// exit status and everything it printed.
pub async fn run_script(python: &Path, name: &str, args: &[&str]) -> Result<(), String> {
    let child = tokio::process::Command::new(python)
        .arg(script(name))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{name} cannot run: {e}"))?;
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{name} ran longer than {SCRIPT_TIMEOUT:?}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    let printed = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        println!("{name}: passed\n{printed}");
        Ok(())
    } else {
        Err(format!("{name} failed ({}):\n{printed}", output.status))
    }
}

/// [`run_script`], failing the test with the script's output when it fails.
pub async fn assert_script(python: &Path, name: &str, args: &[&str]) {
    if let Err(failure) = run_script(python, name, args).await {
        panic!("{failure}");
    }
}
