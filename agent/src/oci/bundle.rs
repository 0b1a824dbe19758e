//! One task's OCI bundle: the runtime configuration (`config.json`, built with the
//! `oci-spec` crate) and its root filesystem.
//!
//! The root filesystem is either an image's layers under an overlay mount (lower =
//! the store's unpacked layers, shared and never written; upper and work in the
//! bundle), or, when the task names no image, the host's: an empty directory whose
//! top-level entries are the host's directories bind-mounted read-only (and its
//! symlinks copied), so the container sees the host's programs but writes only to
//! its sandbox, a private `/tmp` and its volumes. `/` itself cannot be the root:
//! the runtime pivots into the root, and `/` cannot be pivoted into itself.
//!
//! Namespaces: pid, mount, uts, ipc; the host network (so `/sys` is a read-only bind,
//! a new sysfs needs its own network namespace). Cgroup limits: cpu shares
//! `cpus * 1024`, quota `cpus * 100 ms` per 100 ms, memory `mem` MiB with swap equal
//! to it (no swap on top), a pids limit.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use agora_proto as pb;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// Where the sandbox appears inside image containers (Mesos' path).
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";
/// CFS period the quota is given per.
pub const CPU_PERIOD_US: u64 = 100_000;
/// PATH for image tasks whose image names none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The sandbox subdirectory holding the bundles (`<n>/`: `config.json`, the root
/// filesystem, an overlay's upper and work directories). Hidden inside every
/// container under an empty read-only tmpfs: the runtime reads `config.json` again
/// for every `exec` (COMMAND health checks), so a task that could write it would
/// choose the capabilities and user of the next exec.
pub const BUNDLES_DIR: &str = ".container";

/// Why a bundle cannot be made; each names what the task asked for.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "volume host path '{0}' is not allowed: it is neither inside the sandbox nor under an allowed volume path ({1})"
    )]
    VolumeNotAllowed(String, String),
    #[error("volume '{path}': {reason}")]
    InvalidVolume { path: String, reason: String },
    #[error("user '{0}' is not in the container's /etc/passwd")]
    UnknownUser(String),
    #[error("invalid runtime configuration: {0}")]
    Spec(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}

/// The cgroup limits a task asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskLimits {
    /// `cpus`; `None` = no cpu limit.
    pub cpus: Option<f64>,
    /// `mem` in MiB; `None` = no memory limit.
    pub mem_mb: Option<f64>,
    /// At least 1.
    pub pids: u64,
}

impl TaskLimits {
    /// The limits from a task's resources (scalars of the same name are summed).
    pub fn from_resources(resources: &[pb::Resource], pids: u64) -> Self {
        let scalar = |name: &str| {
            let values: Vec<f64> = resources
                .iter()
                .filter(|r| r.name == name)
                .filter_map(|r| match r.value {
                    Some(pb::resource::Value::Scalar(v)) if v.is_finite() && v > 0.0 => Some(v),
                    _ => None,
                })
                .collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        Self {
            cpus: scalar("cpus"),
            mem_mb: scalar("mem"),
            pids: pids.max(1),
        }
    }

    pub fn cpu_shares(&self) -> Option<u64> {
        // The kernel's minimum share is 2.
        self.cpus.map(|c| ((c * 1024.0).round() as u64).max(2))
    }

    pub fn cpu_quota_us(&self) -> Option<i64> {
        // The kernel's minimum quota is 1 ms.
        self.cpus
            .map(|c| ((c * CPU_PERIOD_US as f64).round() as i64).max(1000))
    }

    pub fn memory_bytes(&self) -> Option<i64> {
        // Below 4 MiB the runtime cannot even start the container's init.
        self.mem_mb
            .map(|m| ((m * 1024.0 * 1024.0).round() as i64).max(4 << 20))
    }
}

/// The ports a task was given, in the order of its `ports` ranges.
pub fn task_ports(resources: &[pb::Resource]) -> Vec<u64> {
    resources
        .iter()
        .filter(|r| r.name == "ports")
        .filter_map(|r| match &r.value {
            Some(pb::resource::Value::Ranges(ranges)) => Some(ranges),
            _ => None,
        })
        .flat_map(|ranges| ranges.range.iter())
        // Ranges were validated by the master; the cap keeps a bogus one harmless.
        .flat_map(|range| range.begin..=range.end.min(range.begin.saturating_add(65_535)))
        .collect()
}

/// `PORT0..N` and `PORTS` for `ports`.
pub fn port_env(ports: &[u64]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("PORT{i}"), p.to_string()))
        .collect();
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u64::to_string).collect();
        env.push(("PORTS".into(), list.join(",")));
    }
    env
}

/// A host directory or file mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// Canonical, checked against the allowlist.
    pub host_path: PathBuf,
    /// Absolute, without `..`.
    pub container_path: PathBuf,
    pub read_only: bool,
}

/// Checks a task's volumes: a host path must be inside the sandbox (relative paths
/// are taken from it) or under one of `allowed`; the container path absolute
/// (relative ones are taken from `container_sandbox`). Unspecified mode = read-only.
pub fn check_volumes(
    volumes: &[pb::Volume],
    allowed: &[PathBuf],
    sandbox: &Path,
    container_sandbox: &Path,
) -> Result<Vec<VolumeMount>, BundleError> {
    let sandbox = sandbox.canonicalize().map_err(io_error(format!(
        "resolving the sandbox {}",
        sandbox.display()
    )))?;
    let allowed: Vec<PathBuf> = allowed
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    volumes
        .iter()
        .map(|volume| {
            let invalid = |reason: &str| BundleError::InvalidVolume {
                path: volume.host_path.clone(),
                reason: reason.to_string(),
            };
            if volume.host_path.is_empty() {
                return Err(invalid("a volume needs a host path"));
            }
            let container_path = Path::new(&volume.container_path);
            if volume.container_path.is_empty()
                || container_path
                    .components()
                    .any(|c| matches!(c, Component::ParentDir))
            {
                return Err(invalid("the container path must be given, without '..'"));
            }
            let container_path = if container_path.is_absolute() {
                container_path.to_path_buf()
            } else {
                container_sandbox.join(container_path)
            };
            let host_path = sandbox.join(&volume.host_path);
            // Symlinks are resolved first, so none leads out of an allowed place.
            let host_path = host_path
                .canonicalize()
                .map_err(|e| invalid(&format!("the host path cannot be resolved: {e}")))?;
            // The bundles must stay out of the container's reach (see [`BUNDLES_DIR`]),
            // through the sandbox or through any directory above it.
            if host_path.starts_with(sandbox.join(BUNDLES_DIR)) || sandbox.starts_with(&host_path)
            {
                return Err(invalid(
                    "the host path holds the container's own runtime files; name a directory inside the sandbox",
                ));
            }
            let permitted =
                host_path.starts_with(&sandbox) || allowed.iter().any(|a| host_path.starts_with(a));
            if !permitted {
                let list: Vec<String> = allowed.iter().map(|a| a.display().to_string()).collect();
                return Err(BundleError::VolumeNotAllowed(
                    volume.host_path.clone(),
                    if list.is_empty() {
                        "none are allowed on this agent".into()
                    } else {
                        list.join(", ")
                    },
                ));
            }
            Ok(VolumeMount {
                host_path,
                container_path,
                read_only: volume.mode != pb::volume::Mode::Rw as i32,
            })
        })
        .collect()
}

/// `uid[:gid]`, or a name looked up in `passwd` (the container's `/etc/passwd`).
pub fn lookup_user(passwd: &Path, user: &str) -> Result<(u32, u32), BundleError> {
    if let Some((uid, gid)) = user.split_once(':')
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        return Ok((uid, gid));
    }
    if let Ok(uid) = user.parse::<u32>() {
        return Ok((uid, uid));
    }
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4 && fields[0] == user)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| BundleError::UnknownUser(user.to_string()))
}

/// Prepares `rootfs` as the host's root seen read-only: copies the host's
/// top-level symlinks into it and returns the read-only binds of its top-level
/// directories. Left out: what the runtime provides (`/proc`, `/dev`, `/sys`),
/// `/tmp` (private) and `/mnt` (holds the sandbox mount point, which a read-only
/// bind would not let the runtime create).
pub fn prepare_host_rootfs(rootfs: &Path) -> Result<Vec<Mount>, BundleError> {
    std::fs::create_dir_all(rootfs).map_err(io_error(format!("creating {}", rootfs.display())))?;
    let entries = std::fs::read_dir("/").map_err(io_error("listing /"))?;
    let mut mounts = Vec::new();
    let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name();
        if matches!(
            name.as_bytes(),
            b"proc" | b"dev" | b"sys" | b"tmp" | b"mnt" | b"lost+found"
        ) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let host = Path::new("/").join(&name);
        if kind.is_symlink() {
            let target = std::fs::read_link(&host)
                .map_err(io_error(format!("reading {}", host.display())))?;
            let link = rootfs.join(&name);
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(format!("creating {}", link.display()))(e)),
            }
        } else if kind.is_dir() {
            mounts.push(bind(&host, &host, true, true)?);
        }
    }
    Ok(mounts)
}

fn bind(
    source: &Path,
    destination: &Path,
    read_only: bool,
    recursive: bool,
) -> Result<Mount, BundleError> {
    let mut options = vec![
        if recursive { "rbind" } else { "bind" }.to_string(),
        if read_only { "ro" } else { "rw" }.to_string(),
    ];
    if read_only {
        options.extend(["nosuid".to_string(), "nodev".to_string()]);
        if recursive {
            // `ro` alone leaves the submounts (a host's /boot/efi, /var/lib/...)
            // writable; `rro` makes every one read-only (Linux 5.12's mount_setattr).
            options.push("rro".to_string());
        }
    }
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(|e| BundleError::Spec(e.to_string()))
}

fn special(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, BundleError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| BundleError::Spec(e.to_string()))
}

/// The root filesystem of a bundle.
#[derive(Clone, Debug)]
pub enum RootfsKind {
    /// The host's, read-only; the binds from [`prepare_host_rootfs`].
    Host { binds: Vec<Mount> },
    /// An image's overlay, mounted at the bundle's rootfs directory.
    Image,
}

/// Everything a task's `config.json` says.
#[derive(Clone, Debug)]
pub struct BundleConfig {
    /// Absolute; exists.
    pub rootfs: PathBuf,
    pub rootfs_kind: RootfsKind,
    /// The executor's sandbox on the host; mounted writable at the same path (host
    /// rootfs) and at [`CONTAINER_SANDBOX`].
    pub sandbox: PathBuf,
    /// Not empty; `args[0]` is the program.
    pub args: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    /// Absolute.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub limits: TaskLimits,
    /// From [`super::cgroup_path`].
    pub cgroups_path: String,
    /// Checked by [`check_volumes`].
    pub volumes: Vec<VolumeMount>,
}

/// The runtime configuration for `config`.
pub fn spec(config: &BundleConfig) -> Result<Spec, BundleError> {
    let spec_error = |e: oci_spec::OciSpecError| BundleError::Spec(e.to_string());
    let mut mounts = vec![
        special("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        special(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        special(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        special(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        special(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        // Not recursive: the host's submounts of /sys (cgroup hierarchies, debugfs,
        // efivarfs, ...) stay out. The container's own cgroups are mounted read-only
        // by the runtime instead, as Docker does.
        bind(Path::new("/sys"), Path::new("/sys"), true, false)?,
        special(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];
    match &config.rootfs_kind {
        RootfsKind::Host { binds } => {
            mounts.extend(binds.iter().cloned());
            mounts.push(special(
                "/tmp",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777"],
            )?);
            mounts.push(bind(&config.sandbox, &config.sandbox, false, false)?);
        }
        RootfsKind::Image => {
            // The host's name resolution, as the container shares its network.
            for file in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(file).is_file() {
                    mounts.push(bind(Path::new(file), Path::new(file), true, false)?);
                }
            }
        }
    }
    mounts.push(bind(
        &config.sandbox,
        Path::new(CONTAINER_SANDBOX),
        false,
        false,
    )?);
    let mut sandbox_paths = vec![PathBuf::from(CONTAINER_SANDBOX)];
    if matches!(config.rootfs_kind, RootfsKind::Host { .. }) {
        sandbox_paths.push(config.sandbox.clone());
    }
    for sandbox in sandbox_paths {
        let bundles = sandbox.join(BUNDLES_DIR);
        mounts.push(special(
            &bundles.display().to_string(),
            "tmpfs",
            "tmpfs",
            &["ro", "nosuid", "nodev", "noexec", "size=4k", "mode=555"],
        )?);
    }
    for volume in &config.volumes {
        mounts.push(bind(
            &volume.host_path,
            &volume.container_path,
            volume.read_only,
            true,
        )?);
    }

    let limits = &config.limits;
    let mut cpu = LinuxCpuBuilder::default();
    if let (Some(shares), Some(quota)) = (limits.cpu_shares(), limits.cpu_quota_us()) {
        cpu = cpu.shares(shares).quota(quota).period(CPU_PERIOD_US);
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(bytes) = limits.memory_bytes() {
        memory = memory.limit(bytes).swap(bytes);
    }
    let resources = LinuxResourcesBuilder::default()
        .cpu(cpu.build().map_err(spec_error)?)
        .memory(memory.build().map_err(spec_error)?)
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(limits.pids).unwrap_or(i64::MAX))
                .build()
                .map_err(spec_error)?,
        )
        .build()
        .map_err(spec_error)?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ]
    .into_iter()
    .map(|typ| {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .build()
            .map_err(spec_error)
    })
    .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(&config.cgroups_path))
        // The runtime's default (rslave) would let mounts made on the host later
        // (other tasks' image overlays under the work dir) appear in this
        // container, writable.
        .rootfs_propagation("rprivate")
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()
        .map_err(spec_error)?;

    // The task keeps the executor's open-file limit (the runtime's default of 1024
    // is too low for servers).
    let (soft, hard) = nofile_limit();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(config.args.clone())
        .env(config.env.clone())
        .cwd(&config.cwd)
        .user(
            UserBuilder::default()
                .uid(config.uid)
                .gid(config.gid)
                .build()
                .map_err(spec_error)?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(spec_error)?,
        ])
        .no_new_privileges(true)
        .build()
        .map_err(spec_error)?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(&config.rootfs)
                // An image's overlay is the task's to write; the host's is not.
                .readonly(matches!(config.rootfs_kind, RootfsKind::Host { .. }))
                .build()
                .map_err(spec_error)?,
        )
        .hostname(config.hostname.clone())
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .build()
        .map_err(spec_error)
}

fn nofile_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes into the local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (limit.rlim_cur, limit.rlim_max)
}

/// Writes `spec` as `bundle/config.json`.
pub fn write(bundle: &Path, spec: &Spec) -> Result<(), BundleError> {
    let path = bundle.join("config.json");
    spec.save(&path)
        .map_err(|e| BundleError::Spec(format!("writing {}: {e}", path.display())))
}

/// Mounts an overlay of `layers` (lowest first) at `target`, writes going to
/// `upper` (with `work` as overlayfs' scratch directory); creates the three.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), BundleError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    }
    if layers.is_empty() {
        return Err(BundleError::Spec("the image has no layers".into()));
    }
    // overlayfs lists the top layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    let c = |text: &[u8]| {
        CString::new(text).map_err(|_| BundleError::Spec("a path contains a NUL byte".into()))
    };
    let (source, fstype, target_c, data) = (
        c(b"overlay")?,
        c(b"overlay")?,
        c(target.as_os_str().as_bytes())?,
        c(options.as_bytes())?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string owned by this frame.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io_error(format!(
            "mounting the image's overlay at {}",
            target.display()
        ))(io::Error::last_os_error()));
    }
    Ok(())
}

/// Lazily unmounts `target`; one that is not mounted is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point; ENOENT: gone.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(e);
        }
    }
    Ok(())
}

/// Mount points (from `/proc/self/mountinfo`) with `marker` as one of their path
/// components, deepest first: what a dead executor run left mounted.
pub fn mounts_under(marker: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.components().any(|c| c.as_os_str() == marker))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(value) = u8::from_str_radix(digits, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(name: &str, value: f64) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            value: Some(pb::resource::Value::Scalar(value)),
            ..Default::default()
        }
    }

    #[test]
    fn limits_follow_the_resources() {
        let limits = TaskLimits::from_resources(&[scalar("cpus", 0.5), scalar("mem", 32.0)], 64);
        assert_eq!(limits.cpu_shares(), Some(512));
        assert_eq!(limits.cpu_quota_us(), Some(50_000));
        assert_eq!(limits.memory_bytes(), Some(32 << 20));
        let none = TaskLimits::from_resources(&[], 0);
        assert_eq!(
            (none.cpu_shares(), none.memory_bytes(), none.pids),
            (None, None, 1)
        );
    }

    #[test]
    fn ports_become_port_variables() {
        let ports = pb::Resource {
            name: "ports".into(),
            value: Some(pb::resource::Value::Ranges(pb::Ranges {
                range: vec![
                    pb::Range {
                        begin: 31000,
                        end: 31001,
                    },
                    pb::Range {
                        begin: 31005,
                        end: 31005,
                    },
                ],
            })),
            ..Default::default()
        };
        let env = port_env(&task_ports(&[ports, scalar("cpus", 1.0)]));
        let expected: Vec<(String, String)> = [
            ("PORT0", "31000"),
            ("PORT1", "31001"),
            ("PORT2", "31005"),
            ("PORTS", "31000,31001,31005"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn volumes_outside_the_allowlist_are_refused() {
        let sandbox = tempfile::tempdir().unwrap();
        let allowed = tempfile::tempdir().unwrap();
        std::fs::create_dir(sandbox.path().join("data")).unwrap();
        let volume = |host: &str, mode: pb::volume::Mode| pb::Volume {
            host_path: host.into(),
            container_path: "/data".into(),
            mode: mode as i32,
        };
        let ok = check_volumes(
            &[
                volume("data", pb::volume::Mode::Rw),
                volume(&allowed.path().display().to_string(), pb::volume::Mode::Ro),
            ],
            &[allowed.path().to_path_buf()],
            sandbox.path(),
            Path::new(CONTAINER_SANDBOX),
        )
        .unwrap();
        assert!(!ok[0].read_only && ok[1].read_only);
        let e = check_volumes(
            &[volume("/etc", pb::volume::Mode::Ro)],
            &[allowed.path().to_path_buf()],
            sandbox.path(),
            Path::new(CONTAINER_SANDBOX),
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::VolumeNotAllowed(..)), "{e}");
        assert!(e.to_string().contains("/etc"), "{e}");
        // A symlink in the sandbox cannot lead outside it.
        std::os::unix::fs::symlink("/etc", sandbox.path().join("escape")).unwrap();
        let e = check_volumes(
            &[volume("escape", pb::volume::Mode::Ro)],
            &[],
            sandbox.path(),
            Path::new(CONTAINER_SANDBOX),
        )
        .unwrap_err();
        assert!(e.to_string().contains("none are allowed"), "{e}");
    }

    #[test]
    fn volumes_cannot_reach_the_bundles() {
        let sandbox = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sandbox.path().join(BUNDLES_DIR).join("0")).unwrap();
        let parent = sandbox.path().parent().unwrap().to_path_buf();
        for host in [
            BUNDLES_DIR.to_string(),
            format!("{BUNDLES_DIR}/0"),
            ".".to_string(),
            parent.display().to_string(),
        ] {
            let volume = pb::Volume {
                host_path: host.clone(),
                container_path: "/data".into(),
                mode: pb::volume::Mode::Rw as i32,
            };
            let e = check_volumes(
                &[volume],
                std::slice::from_ref(&parent),
                sandbox.path(),
                Path::new(CONTAINER_SANDBOX),
            )
            .unwrap_err();
            assert!(e.to_string().contains("runtime files"), "{host}: {e}");
        }
    }

    #[test]
    fn the_host_stays_read_only_and_the_bundles_hidden() {
        let config = BundleConfig {
            rootfs: PathBuf::from("/bundle/rootfs"),
            rootfs_kind: RootfsKind::Host {
                binds: vec![bind(Path::new("/usr"), Path::new("/usr"), true, true).unwrap()],
            },
            sandbox: PathBuf::from("/work/sandbox"),
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: "/work/sandbox".into(),
            uid: 0,
            gid: 0,
            hostname: "h".into(),
            limits: TaskLimits::default(),
            cgroups_path: "/agora/x".into(),
            volumes: Vec::new(),
        };
        let spec = spec(&config).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let options = |destination: &str| -> Vec<String> {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(destination))
                .unwrap_or_else(|| panic!("no mount at {destination}"))
                .options()
                .clone()
                .unwrap_or_default()
        };
        // Submounts of a read-only bind are read-only too; /sys takes none of the
        // host's, and the cgroups are the runtime's read-only ones.
        assert!(options("/usr").contains(&"rro".to_string()));
        assert!(options("/sys").contains(&"bind".to_string()));
        assert!(options("/sys/fs/cgroup").contains(&"ro".to_string()));
        for bundles in ["/work/sandbox/.container", "/mnt/mesos/sandbox/.container"] {
            assert!(options(bundles).contains(&"ro".to_string()), "{bundles}");
            let cover = mounts
                .iter()
                .position(|m| m.destination() == Path::new(bundles));
            let sandbox = mounts
                .iter()
                .position(|m| m.destination() == Path::new(bundles).parent().unwrap());
            assert!(
                cover > sandbox,
                "{bundles} is covered after its sandbox is mounted"
            );
        }
        let linux = spec.linux().clone().unwrap();
        assert_eq!(linux.rootfs_propagation().as_deref(), Some("rprivate"));
    }

    #[test]
    fn users_are_numeric_or_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n",
        )
        .unwrap();
        assert_eq!(lookup_user(&passwd, "nobody").unwrap(), (65534, 65533));
        assert_eq!(lookup_user(&passwd, "1000").unwrap(), (1000, 1000));
        assert_eq!(lookup_user(&passwd, "7:8").unwrap(), (7, 8));
        assert!(lookup_user(&passwd, "ghost").is_err());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
    }
}
