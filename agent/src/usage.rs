//! What each live container uses: cpu time and resident memory, with the limits its
//! resources imply — the agent's `GET /api/v1/containers` (shaped like Mesos'
//! `/containers`) and the per-container gauges on `/metrics`.
//!
//! A container is an executor run. Its host processes are the members of the
//! executor's session (the process containerizer starts every executor as a session
//! leader, and plain-process tasks stay in that session), read from /proc in one
//! pass over all processes however many containers there are. Tasks the executor
//! runs under an OCI runtime live in their own cgroups (`oci::cgroup_path`), read
//! from the cgroup filesystem; their processes are left out of the session sums so
//! nothing is counted twice.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use agora_proto as pb;
use serde::Serialize;

use crate::oci;
use crate::oci::cgroups::{self, CgroupVersion};
use crate::sandbox::runs::{self, CheckpointedRun};

/// Cumulative usage of a set of processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// User-mode cpu time, children that were waited for included.
    pub cpus_user_time_secs: f64,
    /// Kernel-mode cpu time, likewise.
    pub cpus_system_time_secs: f64,
    /// Resident memory now.
    pub mem_rss_bytes: u64,
    /// Processes counted (host processes plus those of OCI task cgroups).
    pub processes: u32,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.cpus_user_time_secs += other.cpus_user_time_secs;
        self.cpus_system_time_secs += other.cpus_system_time_secs;
        self.mem_rss_bytes += other.mem_rss_bytes;
        self.processes += other.processes;
    }
}

/// Mesos' `ResourceStatistics`, the part Agora measures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Statistics {
    /// Seconds since the epoch when measured.
    pub timestamp: f64,
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub mem_rss_bytes: u64,
    /// Processes measured.
    pub processes: u32,
    /// `cpus` of the container's tasks (plus a custom executor's own); absent when
    /// none were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_limit: Option<f64>,
    /// `mem` (MB) of the same, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit_bytes: Option<u64>,
}

/// One entry of `GET /api/v1/containers`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerStatus {
    pub framework_id: String,
    pub executor_id: String,
    pub executor_name: String,
    pub container_id: String,
    /// Tasks the agent tracks in this container.
    pub task_ids: Vec<String>,
    /// The executor's process (its session id).
    pub executor_pid: u32,
    pub statistics: Statistics,
}

/// Clock ticks per second and bytes per page, for /proc figures.
fn clock() -> (f64, u64) {
    // SAFETY: sysconf only reads configuration values.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (
        if ticks > 0 { ticks as f64 } else { 100.0 },
        if page > 0 { page as u64 } else { 4096 },
    )
}

/// `(utime + cutime, stime + cstime, rss pages)` from the text of /proc/<pid>/stat.
fn parse_stat(text: &str) -> Option<(u64, u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: count from the
    // last ')'. After it: state(3) ... utime(14) stime(15) cutime(16) cstime(17)
    // ... rss(24).
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let signed =
        |n: usize| -> Option<u64> { Some(fields.get(n - 3)?.parse::<i64>().ok()?.max(0) as u64) };
    Some((
        field(14)? + signed(16)?,
        field(15)? + signed(17)?,
        signed(24)?,
    ))
}

/// Whether a process lives in an OCI task cgroup (it is measured there).
fn in_task_cgroup(pid: i32) -> bool {
    let marker = format!("/{}/", oci::CGROUP_PARENT);
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| text.lines().any(|line| line.contains(&marker)))
}

/// Usage of the processes of each session in `sessions`, by session id, in one
/// pass over /proc. Processes of OCI task cgroups are skipped when
/// `skip_task_cgroups` holds their session.
fn session_usage(sessions: &HashSet<i32>, skip_task_cgroups: &HashSet<i32>) -> HashMap<i32, Usage> {
    let mut usage: HashMap<i32, Usage> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    let (ticks, page) = clock();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: getsid only reads the session of `pid`; a gone pid yields -1.
        let session = unsafe { libc::getsid(pid) };
        if !sessions.contains(&session) {
            continue;
        }
        if skip_task_cgroups.contains(&session) && in_task_cgroup(pid) {
            continue;
        }
        let Some((user, system, rss)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            continue;
        };
        let total = usage.entry(session).or_default();
        total.add(&Usage {
            cpus_user_time_secs: user as f64 / ticks,
            cpus_system_time_secs: system as f64 / ticks,
            mem_rss_bytes: rss * page,
            processes: 1,
        });
    }
    usage
}

/// Where the cgroups of OCI tasks live in the hierarchy of `controller`.
fn task_cgroups_root(version: CgroupVersion, controller: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    match version {
        CgroupVersion::V2 => root.join(oci::CGROUP_PARENT),
        CgroupVersion::V1 => root.join(controller).join(oci::CGROUP_PARENT),
    }
}

/// `(user, system)` seconds of a cgroup: v1 `cpuacct.stat` (clock ticks), v2
/// `cpu.stat` (µs).
fn cgroup_cpu_split(version: CgroupVersion, dir: &Path, ticks: f64) -> Option<(f64, f64)> {
    let keyed = |text: &str, key: &str| -> Option<f64> {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
    };
    match version {
        CgroupVersion::V1 => {
            let text = std::fs::read_to_string(dir.join("cpuacct.stat")).ok()?;
            Some((
                keyed(&text, "user")? / ticks,
                keyed(&text, "system")? / ticks,
            ))
        }
        CgroupVersion::V2 => {
            let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
            Some((
                keyed(&text, "user_usec")? / 1e6,
                keyed(&text, "system_usec")? / 1e6,
            ))
        }
    }
}

/// Usage of every OCI task cgroup of executor run `container_id`; `None` when it
/// has none (its tasks are plain processes).
fn oci_usage(version: CgroupVersion, container_id: &str) -> Option<Usage> {
    let prefix = oci::runtime_container_prefix(container_id);
    let listing = std::fs::read_dir(task_cgroups_root(version, "memory")).ok()?;
    let (ticks, _) = clock();
    let mut found = false;
    let mut usage = Usage::default();
    for entry in listing.filter_map(Result::ok) {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !name.starts_with(&prefix) {
            continue;
        }
        found = true;
        let path = oci::cgroup_path(&name);
        if let Ok(memory) = cgroups::memory(version, &path) {
            usage.mem_rss_bytes += memory.rss;
        }
        let cpu_dir = task_cgroups_root(version, "cpuacct").join(&name);
        match cgroup_cpu_split(version, &cpu_dir, ticks) {
            Some((user, system)) => {
                usage.cpus_user_time_secs += user;
                usage.cpus_system_time_secs += system;
            }
            // No split available: count the total as user time.
            None => {
                if let Ok(ns) = cgroups::cpu_usage_ns(version, &path) {
                    usage.cpus_user_time_secs += ns as f64 / 1e9;
                }
            }
        }
        let procs_dir = task_cgroups_root(version, "pids").join(&name);
        if let Ok(procs) = std::fs::read_to_string(procs_dir.join("cgroup.procs")) {
            usage.processes += procs.lines().count() as u32;
        }
    }
    found.then_some(usage)
}

/// Sum of the scalar resource `name`.
fn scalar(resources: &[pb::Resource], name: &str) -> Option<f64> {
    let values: Vec<f64> = resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| match r.value {
            Some(pb::resource::Value::Scalar(value)) => Some(value),
            _ => None,
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The resources a run's limits come from: its tasks', plus a custom or default
/// executor's own (the command executor's `ExecutorInfo` repeats its task's).
fn limit_resources(run: &CheckpointedRun) -> Vec<pb::Resource> {
    let mut resources: Vec<pb::Resource> = run
        .tasks
        .iter()
        .filter_map(|(_, info)| info.as_ref())
        .flat_map(|info| info.resources.iter().cloned())
        .collect();
    if let Some(info) = run.checkpoint.as_ref().and_then(|c| c.info.as_ref()) {
        let command_executor = info.r#type == pb::executor_info::Type::Unknown as i32;
        if !command_executor || resources.is_empty() {
            resources.extend(info.resources.iter().cloned());
        }
    }
    resources
}

/// Every live container of the agent with `work_dir`, measured now. Blocking (reads
/// /proc and the cgroup filesystem).
pub fn containers(work_dir: &Path) -> Vec<ContainerStatus> {
    let live: Vec<(CheckpointedRun, u32)> = runs::checkpointed_runs(work_dir)
        .into_iter()
        .filter_map(|run| {
            let pid = run.live_pid()?;
            Some((run, pid))
        })
        .collect();
    let version = cgroups::version();
    let oci: HashMap<String, Usage> = live
        .iter()
        .filter_map(|(run, _)| {
            Some((
                run.container_id.clone(),
                oci_usage(version, &run.container_id)?,
            ))
        })
        .collect();
    let sessions: HashSet<i32> = live.iter().map(|(_, pid)| *pid as i32).collect();
    let with_oci: HashSet<i32> = live
        .iter()
        .filter(|(run, _)| oci.contains_key(&run.container_id))
        .map(|(_, pid)| *pid as i32)
        .collect();
    let by_session = session_usage(&sessions, &with_oci);
    let timestamp = agora_core::time::now_secs();
    let mut containers: Vec<ContainerStatus> = live
        .into_iter()
        .map(|(run, pid)| {
            let mut usage = by_session.get(&(pid as i32)).copied().unwrap_or_default();
            if let Some(oci) = oci.get(&run.container_id) {
                usage.add(oci);
            }
            let resources = limit_resources(&run);
            let executor_name = run
                .checkpoint
                .as_ref()
                .and_then(|c| c.info.as_ref())
                .map(|i| i.name.clone())
                .unwrap_or_default();
            ContainerStatus {
                statistics: Statistics {
                    timestamp,
                    cpus_user_time_secs: usage.cpus_user_time_secs,
                    cpus_system_time_secs: usage.cpus_system_time_secs,
                    mem_rss_bytes: usage.mem_rss_bytes,
                    processes: usage.processes,
                    cpus_limit: scalar(&resources, "cpus"),
                    mem_limit_bytes: scalar(&resources, "mem")
                        .map(|mb| (mb * 1024.0 * 1024.0) as u64),
                },
                task_ids: run.tasks.iter().map(|(id, _)| id.clone()).collect(),
                framework_id: run.framework_id,
                executor_id: run.executor_id,
                executor_name,
                container_id: run.container_id,
                executor_pid: pid,
            }
        })
        .collect();
    containers.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    containers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_from_the_last_parenthesis() {
        // pid (comm with ") spaces") state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime prio nice threads
        // itrealvalue starttime vsize rss ...
        let line = "42 (a) b (c) R 1 42 42 0 -1 0 0 0 0 0 7 3 5 -1 20 0 1 0 100 1000 9 0";
        assert_eq!(parse_stat(line), Some((12, 3, 9)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_measured_in_its_session() {
        // SAFETY: getsid has no preconditions.
        let session = unsafe { libc::getsid(0) };
        let usage = session_usage(&HashSet::from([session]), &HashSet::new());
        let mine = usage.get(&session).copied().unwrap_or_default();
        assert!(mine.processes >= 1);
        assert!(mine.mem_rss_bytes > 0);
    }

    #[test]
    fn limits_come_from_the_tasks_of_a_command_executor() {
        let cpus = |value: f64| pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(value)),
            ..Default::default()
        };
        let task = pb::TaskInfo {
            resources: vec![cpus(0.5)],
            ..Default::default()
        };
        let mut run = CheckpointedRun {
            framework_id: "f".into(),
            executor_id: "e".into(),
            container_id: "c".into(),
            checkpoint: Some(crate::meta::ExecutorCheckpoint {
                info: Some(pb::ExecutorInfo {
                    resources: vec![cpus(0.5)],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            forked: None,
            tasks: vec![("t".into(), Some(task))],
        };
        assert_eq!(scalar(&limit_resources(&run), "cpus"), Some(0.5));
        assert_eq!(scalar(&limit_resources(&run), "mem"), None);
        if let Some(info) = run.checkpoint.as_mut().and_then(|c| c.info.as_mut()) {
            info.r#type = pb::executor_info::Type::Default as i32;
        }
        assert_eq!(scalar(&limit_resources(&run), "cpus"), Some(1.0));
    }
}
