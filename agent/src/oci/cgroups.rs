//! A container's cgroup read back from `/sys/fs/cgroup`: how often the kernel
//! OOM-killed in it, its cpu time, its memory, and the limits the runtime set.
//! cgroup v2 (one unified hierarchy, `cgroup.controllers` at the root) and v1 (one
//! hierarchy per controller) are both read; a path is what
//! [`super::cgroup_path`] gives the runtime.

use std::io;
use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup layout the machine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`/sys/fs/cgroup/memory`, ...).
    V1,
    /// The unified hierarchy.
    V2,
}

/// The machine's layout: v2 when the root has `cgroup.controllers`.
pub fn version() -> CgroupVersion {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// The limits a container's cgroup enforces, as the kernel reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// v1 `cpu.shares`; on v2 the `cpu.weight` converted back the way runc converts
    /// shares to a weight is not invertible, so v2 reports the weight in
    /// `cpu_weight` instead and leaves this `None`.
    pub cpu_shares: Option<u64>,
    /// v2 `cpu.weight`.
    pub cpu_weight: Option<u64>,
    /// CFS quota per period in µs; `None` = unlimited.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    /// Bytes; `None` = unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// `None` = unlimited.
    pub pids_max: Option<u64>,
}

/// The directory of `controller` for `path` (v2 ignores the controller).
fn dir(version: CgroupVersion, controller: &str, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    match version {
        CgroupVersion::V2 => Path::new(CGROUP_ROOT).join(relative),
        CgroupVersion::V1 => Path::new(CGROUP_ROOT).join(controller).join(relative),
    }
}

fn read(path: PathBuf) -> io::Result<String> {
    std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn parse_number(text: &str, path: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: '{}' is not a number", text.trim()),
        )
    })
}

/// The value of `key` in a flat-keyed file (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A limit file's value: `max` (v2) or a huge number (v1, "unlimited") is `None`.
fn limit(text: &str, path: &str) -> io::Result<Option<u64>> {
    let text = text.trim();
    if text == "max" || text == "-1" {
        return Ok(None);
    }
    let value = parse_number(text, path)?;
    // v1 reports "no limit" as the largest page-aligned i64.
    Ok((value < (i64::MAX as u64) / 2).then_some(value))
}

/// How many processes the kernel OOM-killed in the cgroup.
pub fn oom_kills(version: CgroupVersion, path: &str) -> io::Result<u64> {
    let (file, key) = match version {
        CgroupVersion::V2 => ("memory.events", "oom_kill"),
        CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
    };
    let text = read(dir(version, "memory", path).join(file))?;
    Ok(keyed(&text, key).unwrap_or(0))
}

/// Cpu time used by the cgroup, in nanoseconds.
pub fn cpu_usage_ns(version: CgroupVersion, path: &str) -> io::Result<u64> {
    match version {
        CgroupVersion::V2 => {
            let text = read(dir(version, "cpu", path).join("cpu.stat"))?;
            Ok(keyed(&text, "usage_usec").unwrap_or(0) * 1000)
        }
        CgroupVersion::V1 => parse_number(
            &read(dir(version, "cpuacct", path).join("cpuacct.usage"))?,
            "cpuacct.usage",
        ),
    }
}

/// Memory use of a cgroup, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub rss: u64,
    /// Everything charged, page cache included.
    pub usage: u64,
}

pub fn memory(version: CgroupVersion, path: &str) -> io::Result<MemoryUsage> {
    let memory_dir = dir(version, "memory", path);
    let stat = read(memory_dir.join("memory.stat"))?;
    let (rss_key, usage_file) = match version {
        CgroupVersion::V2 => ("anon", "memory.current"),
        CgroupVersion::V1 => ("rss", "memory.usage_in_bytes"),
    };
    Ok(MemoryUsage {
        rss: keyed(&stat, rss_key).unwrap_or(0),
        usage: parse_number(&read(memory_dir.join(usage_file))?, usage_file)?,
    })
}

/// The limits set on the cgroup.
pub fn limits(version: CgroupVersion, path: &str) -> io::Result<CgroupLimits> {
    let cpu = dir(version, "cpu", path);
    let memory = dir(version, "memory", path);
    let pids = dir(version, "pids", path);
    let pids_max = limit(&read(pids.join("pids.max"))?, "pids.max")?;
    match version {
        CgroupVersion::V2 => {
            let cpu_max = read(cpu.join("cpu.max"))?;
            let mut fields = cpu_max.split_whitespace();
            let quota = limit(fields.next().unwrap_or("max"), "cpu.max")?;
            let period = fields
                .next()
                .map(|p| parse_number(p, "cpu.max"))
                .transpose()?;
            Ok(CgroupLimits {
                cpu_shares: None,
                cpu_weight: Some(parse_number(&read(cpu.join("cpu.weight"))?, "cpu.weight")?),
                cpu_quota_us: quota,
                cpu_period_us: period,
                memory_limit_bytes: limit(&read(memory.join("memory.max"))?, "memory.max")?,
                pids_max,
            })
        }
        CgroupVersion::V1 => Ok(CgroupLimits {
            cpu_shares: Some(parse_number(&read(cpu.join("cpu.shares"))?, "cpu.shares")?),
            cpu_weight: None,
            cpu_quota_us: limit(&read(cpu.join("cpu.cfs_quota_us"))?, "cpu.cfs_quota_us")?,
            cpu_period_us: Some(parse_number(
                &read(cpu.join("cpu.cfs_period_us"))?,
                "cpu.cfs_period_us",
            )?),
            memory_limit_bytes: limit(
                &read(memory.join("memory.limit_in_bytes"))?,
                "memory.limit_in_bytes",
            )?,
            pids_max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_and_limits_are_parsed() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(oom_control, "oom_kill"), Some(2));
        assert_eq!(keyed(oom_control, "missing"), None);
        assert_eq!(limit("max\n", "f").unwrap(), None);
        assert_eq!(limit("9223372036854771712\n", "f").unwrap(), None);
        assert_eq!(limit("33554432\n", "f").unwrap(), Some(33554432));
        assert!(limit("lots", "f").is_err());
    }
}
