//! What the agent offers: cpus, mem, disk and ports detected on the machine the way
//! Mesos does it, with operator overrides replacing detected values per name.

use std::ffi::CString;
use std::path::Path;

use agora_core::Resources;
use agora_core::resources::ResourceError;

/// Mesos' default port range.
pub const DEFAULT_PORTS: &str = "[31000-32000]";

const GB_IN_MB: f64 = 1024.0;

/// Detects `cpus`, `mem`, `disk` (MB) and `ports`, then applies `overrides`. A value
/// that cannot be detected is left out unless the overrides give it.
pub fn detect(work_dir: &Path, overrides: Option<&str>) -> Result<Resources, ResourceError> {
    let mut detected = format!("ports:{DEFAULT_PORTS}");
    if let Ok(cpus) = std::thread::available_parallelism() {
        detected.push_str(&format!(";cpus:{}", cpus.get()));
    }
    if let Some(total) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total_mb(&text))
    {
        detected.push_str(&format!(";mem:{}", mem_to_offer(total)));
    }
    if let Some(total) = disk_total_mb(work_dir) {
        detected.push_str(&format!(";disk:{}", disk_to_offer(total)));
    }
    with_overrides(&Resources::parse(&detected)?, overrides)
}

/// `detected`, with every resource named in `overrides` replaced by the override.
pub fn with_overrides(
    detected: &Resources,
    overrides: Option<&str>,
) -> Result<Resources, ResourceError> {
    let Some(overrides) = overrides else {
        return Ok(detected.clone());
    };
    let overrides = Resources::parse(overrides)?;
    let overridden: Vec<String> = overrides.iter().map(|(k, _)| k.name.clone()).collect();
    let mut merged = overrides.to_proto();
    merged.extend(
        detected
            .to_proto()
            .into_iter()
            .filter(|r| !overridden.contains(&r.name)),
    );
    Resources::from_proto(&merged)
}

/// `MemTotal` of /proc/meminfo, in MB.
pub fn mem_total_mb(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).floor())
}

/// Mesos leaves 1 GB to the system on machines with at least 2 GB, else half.
pub fn mem_to_offer(total_mb: f64) -> f64 {
    if total_mb >= 2.0 * GB_IN_MB {
        total_mb - GB_IN_MB
    } else {
        (total_mb / 2.0).floor()
    }
}

/// Mesos leaves 5 GB of the work dir's disk to the system when it has at least
/// 10 GB, else half.
pub fn disk_to_offer(total_mb: f64) -> f64 {
    if total_mb >= 10.0 * GB_IN_MB {
        total_mb - 5.0 * GB_IN_MB
    } else {
        (total_mb / 2.0).floor()
    }
}

/// Size of the filesystem holding `path` (or its nearest existing ancestor), in MB.
fn disk_total_mb(path: &Path) -> Option<f64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value for it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let bytes = stat.f_blocks as f64 * stat.f_frsize as f64;
    Some((bytes / (1024.0 * 1024.0)).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_rules_for_memory_and_disk() {
        assert_eq!(mem_to_offer(16384.0), 15360.0);
        assert_eq!(mem_to_offer(1024.0), 512.0);
        assert_eq!(disk_to_offer(102_400.0), 97_280.0);
        assert_eq!(disk_to_offer(4096.0), 2048.0);
        assert_eq!(
            mem_total_mb("MemTotal:       16384000 kB\nMemFree: 1 kB\n"),
            Some(16000.0)
        );
        assert_eq!(mem_total_mb("nothing"), None);
    }

    #[test]
    fn overrides_replace_detected_values_by_name() {
        let detected = Resources::parse("cpus:8;mem:1000;disk:500;ports:[31000-32000]").unwrap();
        let merged = with_overrides(&detected, Some("cpus:2;ports:[5000-5001];gpus:1")).unwrap();
        assert_eq!(merged.cpus(), 2.0);
        assert_eq!(merged.mem(), 1000.0);
        assert_eq!(merged.disk(), 500.0);
        assert_eq!(merged.scalar("gpus"), 1.0);
        assert_eq!(merged.ranges("ports").count(), 2);
        assert!(with_overrides(&detected, Some("cpus:lots")).is_err());
    }

    #[test]
    fn detection_finds_this_machine() {
        let found = detect(&std::env::temp_dir(), None).unwrap();
        assert!(found.cpus() >= 1.0);
        assert!(found.mem() > 0.0);
        assert!(found.disk() > 0.0);
        assert_eq!(found.ranges("ports").count(), 1001);
    }
}
