//! Garbage collection of finished sandboxes, as Mesos does it: every
//! `disk_watch_interval` the agent measures the work dir's filesystem and removes
//! the sandboxes of finished executor runs older than
//!
//! ```text
//! gc_delay * max(0, 1 - gc_disk_headroom - disk usage)
//! ```
//!
//! so a sandbox lives `gc_delay` on an empty disk and less the fuller the disk is.
//! Candidates are removed oldest first, and the disk usage is recomputed after each
//! removal from the sizes freed, so under pressure only as many go as bring the
//! usage back under `1 - gc_disk_headroom`.
//!
//! A run is finished once its checkpoints are gone from `meta/` (the actor removes
//! them when the executor has exited and its tasks' last updates were
//! acknowledged). A sandbox whose run is still checkpointed is never removed, so a
//! live executor keeps its sandbox whatever the disk says. The checkpoints
//! themselves belong to the actor and are not touched here.
//!
//! A run's age counts from its sandbox's last change (the run directory or its
//! `stdout`/`stderr`, which the executor writes until it ends; Mesos uses the
//! directory's mtime) or from when this agent process first saw it finished,
//! whichever is later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slog::{Logger, info, warn};
use tokio::sync::watch;

use crate::meta;
use crate::metrics::Metrics;
use crate::sandbox::runs;

/// When sandboxes go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcPolicy {
    /// Age at which a finished sandbox goes on an empty disk (Mesos: 1 week).
    pub delay: Duration,
    /// Fraction of the disk kept free: 0.0..=1.0 (Mesos: 0.1).
    pub disk_headroom: f64,
}

/// The work dir's filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    /// At most `total_bytes`.
    pub used_bytes: u64,
}

impl DiskUsage {
    fn fraction(&self, used: u64) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        used as f64 / self.total_bytes as f64
    }
}

/// A finished run's sandbox, as the plan sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub age: Duration,
    /// Disk space it holds.
    pub bytes: u64,
}

/// Mesos' maximum sandbox age at disk usage `usage` (0.0..=1.0).
pub fn max_age(policy: &GcPolicy, usage: f64) -> Duration {
    let factor = (1.0 - policy.disk_headroom - usage).clamp(0.0, 1.0);
    policy.delay.mul_f64(factor)
}

/// Which candidates to remove, as indices into `candidates`, oldest first (see the
/// module documentation).
pub fn plan(candidates: &[Candidate], disk: DiskUsage, policy: &GcPolicy) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|a, b| candidates[*b].age.cmp(&candidates[*a].age));
    let mut used = disk.used_bytes;
    let mut remove = Vec::new();
    for index in order {
        let candidate = &candidates[index];
        // The limit only grows as space is freed and the rest are younger: the
        // first candidate kept ends the plan.
        if candidate.age < max_age(policy, disk.fraction(used)) {
            break;
        }
        used = used.saturating_sub(candidate.bytes);
        remove.push(index);
    }
    remove
}

/// statvfs(3) of the filesystem holding `path`.
fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = stat.f_frsize as u64;
    let total = stat.f_blocks as u64 * unit;
    let free = stat.f_bfree as u64 * unit;
    Ok(DiskUsage {
        total_bytes: total,
        used_bytes: total.saturating_sub(free),
    })
}

/// Disk space under `dir` (allocated blocks; links are not followed).
fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += metadata.blocks() * 512;
        if metadata.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
    }
    total
}

/// Newest modification time of the run directory and its output files.
fn last_change(dir: &Path) -> Option<SystemTime> {
    ["", "stdout", "stderr"]
        .iter()
        .filter_map(|name| {
            std::fs::symlink_metadata(dir.join(name))
                .ok()?
                .modified()
                .ok()
        })
        .max()
}

/// Settings of the collection loop.
#[derive(Clone, Debug, PartialEq)]
pub struct GcSettings {
    pub policy: GcPolicy,
    /// How often the disk is measured and sandboxes collected (Mesos: 1 min).
    /// Positive.
    pub interval: Duration,
}

impl Default for GcSettings {
    /// Mesos' defaults.
    fn default() -> Self {
        Self {
            policy: GcPolicy {
                delay: Duration::from_secs(7 * 24 * 3600),
                disk_headroom: 0.1,
            },
            interval: Duration::from_secs(60),
        }
    }
}

impl GcSettings {
    /// Why these settings are unusable, if they are.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            return Err("the disk watch interval must be positive".into());
        }
        let headroom = self.policy.disk_headroom;
        if !(0.0..=1.0).contains(&headroom) {
            return Err(format!(
                "the gc disk headroom must be between 0.0 and 1.0, not {headroom}"
            ));
        }
        Ok(())
    }
}

/// The collector of one agent's work dir.
pub(crate) struct GarbageCollector {
    /// Absolute; sandboxes are `work_dir/frameworks/...`.
    work_dir: PathBuf,
    settings: GcSettings,
    metrics: Arc<Metrics>,
    logger: Logger,
    /// When this process first saw each finished sandbox; entries go with their
    /// sandbox.
    first_seen: HashMap<PathBuf, SystemTime>,
}

impl GarbageCollector {
    pub(crate) fn new(
        work_dir: PathBuf,
        settings: GcSettings,
        metrics: Arc<Metrics>,
        logger: Logger,
    ) -> Self {
        Self {
            work_dir,
            settings,
            metrics,
            logger,
            first_seen: HashMap::new(),
        }
    }

    /// Collects every interval until `shutdown`.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                changed = shutdown.wait_for(|stop| *stop) => {
                    let _ = changed;
                    return;
                }
            }
            let logger = self.logger.clone();
            let collected = tokio::task::spawn_blocking(move || {
                self.collect_once(SystemTime::now());
                self
            })
            .await;
            match collected {
                Ok(collector) => self = collector,
                Err(e) => {
                    // A panic in a collection pass stops collecting, never the agent.
                    slog::error!(logger, "sandbox garbage collection stopped"; "error" => %e);
                    return;
                }
            }
        }
    }

    /// One pass: measure, plan, remove. Blocking.
    pub(crate) fn collect_once(&mut self, now: SystemTime) {
        let disk = match disk_usage(&self.work_dir) {
            Ok(disk) => disk,
            Err(e) => {
                warn!(self.logger, "cannot measure the work dir's disk; collecting by age only"; "error" => %e);
                DiskUsage {
                    total_bytes: 0,
                    used_bytes: 0,
                }
            }
        };
        let finished: Vec<runs::SandboxDir> = runs::sandboxes(&self.work_dir)
            .into_iter()
            .filter(|sandbox| !runs::is_checkpointed(&self.work_dir, sandbox))
            .collect();
        // A container root its executor left mounted (it died with the agent down) is
        // no part of the sandbox: measuring or removing through it would walk the
        // image and fail with EBUSY on every pass. Nothing runs in a finished run.
        for sandbox in &finished {
            for mount in crate::oci::bundle::mounts_under(&sandbox.container_id) {
                if let Err(e) = crate::oci::bundle::unmount(&mount) {
                    warn!(self.logger, "cannot unmount a finished container's root";
                        "path" => %mount.display(), "error" => %e);
                }
            }
        }
        self.first_seen
            .retain(|dir, _| finished.iter().any(|s| &s.dir == dir));
        let candidates: Vec<Candidate> = finished
            .iter()
            .map(|sandbox| {
                let seen = *self.first_seen.entry(sandbox.dir.clone()).or_insert(now);
                let changed = last_change(&sandbox.dir).unwrap_or(now);
                let since = seen.max(changed);
                Candidate {
                    age: now.duration_since(since).unwrap_or_default(),
                    bytes: tree_bytes(&sandbox.dir),
                }
            })
            .collect();
        for index in plan(&candidates, disk, &self.settings.policy) {
            let sandbox = &finished[index];
            // Checked again just before: the agent may have reused the run.
            if runs::is_checkpointed(&self.work_dir, sandbox) {
                continue;
            }
            match meta::remove_tree(&sandbox.dir, &self.work_dir.join("frameworks")) {
                Ok(()) => {
                    self.first_seen.remove(&sandbox.dir);
                    self.metrics.sandboxes_collected.inc();
                    info!(self.logger, "sandbox garbage-collected";
                        "framework_id" => &sandbox.framework_id,
                        "executor_id" => &sandbox.executor_id,
                        "container_id" => &sandbox.container_id,
                        "age" => ?candidates[index].age,
                        "bytes" => candidates[index].bytes,
                        "disk_usage" => format!("{:.3}", disk.fraction(disk.used_bytes)));
                }
                Err(e) => {
                    warn!(self.logger, "cannot remove a sandbox";
                        "dir" => %sandbox.dir.display(), "error" => %e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn policy() -> GcPolicy {
        GcPolicy {
            delay: 7 * DAY,
            disk_headroom: 0.1,
        }
    }

    fn runs(ages_in_days: &[u32]) -> Vec<Candidate> {
        ages_in_days
            .iter()
            .map(|days| Candidate {
                age: DAY * *days,
                bytes: 10,
            })
            .collect()
    }

    fn disk(used: u64) -> DiskUsage {
        DiskUsage {
            total_bytes: 100,
            used_bytes: used,
        }
    }

    #[test]
    fn the_maximum_age_shrinks_as_the_disk_fills() {
        let p = policy();
        assert_eq!(max_age(&p, 0.0), p.delay.mul_f64(0.9));
        assert_eq!(max_age(&p, 0.5), p.delay.mul_f64(0.4));
        assert_eq!(max_age(&p, 0.9), Duration::ZERO);
        assert_eq!(max_age(&p, 1.0), Duration::ZERO);
    }

    #[test]
    fn on_an_empty_disk_only_old_runs_go() {
        // Max age on an empty disk: 7 d * 0.9 = 6.3 d.
        let candidates = runs(&[1, 10, 3, 7]);
        assert_eq!(plan(&candidates, disk(0), &policy()), vec![1, 3]);
        assert!(plan(&runs(&[1, 2]), disk(0), &policy()).is_empty());
    }

    #[test]
    fn under_pressure_the_oldest_go_first_until_usage_is_under_the_threshold() {
        // 95% used: over 1 - headroom, so the max age is 0 until 5 points are freed;
        // each run frees 10. After the oldest goes the usage is 85%: the max age is
        // 7 d * 0.05 = 8.4 h, and the 1-day-old run is older, so it goes too (75%:
        // max age 1.05 d); the half-day-old one stays.
        let mut candidates = runs(&[2, 1, 1]);
        candidates[2].age = DAY / 2;
        assert_eq!(plan(&candidates, disk(95), &policy()), vec![0, 1]);
    }

    #[test]
    fn nothing_to_collect_is_fine() {
        assert!(plan(&[], disk(100), &policy()).is_empty());
        let zero = DiskUsage {
            total_bytes: 0,
            used_bytes: 0,
        };
        assert_eq!(plan(&runs(&[8]), zero, &policy()), vec![0]);
    }

    #[test]
    fn finished_sandboxes_go_and_checkpointed_ones_stay() {
        let work = tempfile::tempdir().unwrap();
        let sandbox = |run: &str| {
            work.path()
                .join(format!("frameworks/f/executors/e/runs/{run}"))
        };
        for run in ["done", "live"] {
            std::fs::create_dir_all(sandbox(run)).unwrap();
            std::fs::write(sandbox(run).join("stdout"), "output").unwrap();
        }
        std::fs::create_dir_all(meta::executor_run_meta_dir(work.path(), "f", "e", "live"))
            .unwrap();
        let settings = GcSettings {
            policy: GcPolicy {
                delay: Duration::from_secs(60),
                disk_headroom: 0.0,
            },
            interval: Duration::from_secs(1),
        };
        let mut collector = GarbageCollector::new(
            work.path().to_path_buf(),
            settings,
            Arc::new(Metrics::new()),
            Logger::root(slog::Discard, slog::o!()),
        );
        let now = SystemTime::now();
        collector.collect_once(now);
        assert!(sandbox("done").exists(), "too young on first sight");
        collector.collect_once(now + Duration::from_secs(3600));
        assert!(!sandbox("done").exists(), "an hour later it is collected");
        assert!(
            sandbox("live").exists(),
            "a checkpointed run keeps its sandbox"
        );
        assert_eq!(collector.metrics.sandboxes_collected.get(), 1);
    }

    #[test]
    fn a_container_root_left_mounted_is_unmounted_and_its_sandbox_collected() {
        let work = tempfile::tempdir().unwrap();
        let run = uuid::Uuid::new_v4().to_string();
        let sandbox = work
            .path()
            .join(format!("frameworks/f/executors/e/runs/{run}"));
        let rootfs = sandbox.join(".container/0/rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&rootfs)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("skipped: cannot mount a tmpfs here (not root?)");
            return;
        }
        std::fs::write(rootfs.join("inside"), "image file").unwrap();
        let mut collector = GarbageCollector::new(
            work.path().to_path_buf(),
            GcSettings {
                policy: GcPolicy {
                    delay: Duration::from_secs(60),
                    disk_headroom: 0.0,
                },
                interval: Duration::from_secs(1),
            },
            Arc::new(Metrics::new()),
            Logger::root(slog::Discard, slog::o!()),
        );
        let now = SystemTime::now();
        collector.collect_once(now);
        let still_mounted = crate::oci::bundle::mounts_under(&run);
        // Unmount by hand before failing, so a broken collector leaves no mount.
        for mount in &still_mounted {
            let _ = crate::oci::bundle::unmount(mount);
        }
        assert!(still_mounted.is_empty(), "unmounted: {still_mounted:?}");
        collector.collect_once(now + Duration::from_secs(3600));
        assert!(!sandbox.exists(), "collected once unmounted");
    }
}
