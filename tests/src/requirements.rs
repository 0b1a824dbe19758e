//! What tests need from the machine beyond the workspace (an OCI runtime, root, a
//! static busybox), and the one way a test goes without it: under CI (env `CI` set),
//! which installs all of it, a missing piece is a broken setup and fails the test;
//! elsewhere the test says why it is skipped and passes.

use std::path::{Path, PathBuf};

/// `found`, or `None` after printing `skipped: <reason>` for the calling test to
/// return on; under CI a missing requirement panics instead.
pub fn required<T>(found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{reason}, and CI must run this test")
        }
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

/// runc's path when it is installed and we are root (containers need both), or
/// `None` when the calling test is skipped (see [`required`]).
pub fn require_runc() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    required(
        match agora_agent::oci::runtime::resolve_binary(Path::new("runc")) {
            Ok(path) if root => Ok(path),
            Ok(_) => Err("containers need root".to_string()),
            Err(_) => Err("runc not installed".to_string()),
        },
    )
}
